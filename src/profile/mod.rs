//! The profile: loaded from a file or a built-in, layered with drop-ins, validated into types
//! that cannot express an invalid state. Code past this module never re-validates.

mod locate;
pub mod raw;
pub mod units;
mod validate;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use ipnet::IpNet;

use crate::error::Invalid;
use crate::words::Word;
use raw::RawProfile;
pub use units::{Size, Span};
use validate::validate;

/// The shipped profiles, embedded so that `check` works on a machine with no setup at all.
pub const BUILTINS: &[(&str, &str)] = &[
    ("openfaas-swarm", include_str!("../../profiles/openfaas-swarm.toml")),
    ("hardened", include_str!("../../profiles/hardened.toml")),
    ("watch-only", include_str!("../../profiles/watch-only.toml")),
];

pub const DEFAULT_BUILTIN: &str = "openfaas-swarm";
const SYSTEM_PROFILE: &str = "/etc/vakt/profile.toml";
const SYSTEM_DROPINS: &str = "/etc/vakt/profile.d";

/// The median latency at or under which a disk counts as NVMe-class. Only the median is
/// judged: in a guest, the tail at queue depth 1 follows the vCPU's scheduling (measured: the
/// p90 of one emulated disk went from 0.3 to 8 ms with the host's load while its p50 stayed
/// at 150-300 µs); p90 and p99 are reported. docs/profile.md says how the default was chosen. The storage probe judges by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    pub p50: Duration,
}

/// Where a profile was read from, as a later vakt run (certbot's deploy hook) names it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `/etc/vakt/profile.toml` and its drop-ins: found again without `-p`.
    System,
    /// `-p FILE`, the file's absolute path as vakt opened it.
    File(PathBuf),
    /// `-p builtin:NAME`, or the built-in fallback.
    Builtin(String),
}

#[derive(Debug, Clone)]
pub struct Profile {
    /// Where it came from: a path or `builtin:NAME`, shown in reports and rendered headers.
    pub source: String,
    pub origin: Origin,
    pub host: Option<HostReq>,
    pub packages: Option<Packages>,
    pub firewall: Option<Firewall>,
    pub docker: Option<Docker>,
    pub swarm: Option<Swarm>,
    pub nginx: Option<Nginx>,
    pub tuning: Option<Tuning>,
    pub watch: Option<Watch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement<T> {
    Any,
    Exactly(T),
}

/// `"any"`, or a word of `T` a profile may ask for.
impl<'de, T: Word> serde::Deserialize<'de> for Requirement<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "any" {
            return Ok(Requirement::Any);
        }
        T::from_word(&text).filter(|w| w.wanted()).map(Requirement::Exactly).ok_or_else(|| {
            let wanted = T::WORDS.iter().copied().filter(|w| T::from_word(w).is_some_and(Word::wanted));
            serde::de::Error::custom(crate::words::unknown(&text, std::iter::once("any").chain(wanted)))
        })
    }
}

impl<T: Word> serde::Serialize for Requirement<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Requirement::Any => "any",
            Requirement::Exactly(w) => w.as_str(),
        })
    }
}

impl<T: Word> std::fmt::Display for Requirement<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Requirement::Any => "any",
            Requirement::Exactly(w) => w.as_str(),
        })
    }
}

crate::words! {
    /// A hypervisor, named as `systemd-detect-virt --vm` names it.
    pub enum Hypervisor {
        None = "none",
        Kvm = "kvm",
        Qemu = "qemu",
        Xen = "xen",
        Vmware = "vmware",
        Microsoft = "microsoft",
        Oracle = "oracle",
        Amazon = "amazon",
        Bochs = "bochs",
        Parallels = "parallels",
        Bhyve = "bhyve",
        /// A hypervisor that does not say which it is (only the CPU's flag is set).
        Vm = "vm",
    }
    wanted(None, Kvm, Qemu, Xen, Vmware, Microsoft, Oracle, Amazon, Bochs, Parallels, Bhyve)
}

crate::words! {
    /// Whether the host may itself be a container.
    pub enum Containers {
        Forbid = "forbid",
        Allow = "allow",
    }
}

crate::words! {
    /// What a storage path sits on: wanted by the profile, observed on the host.
    pub enum StorageKind {
        Nvme = "nvme",
        /// A SATA, SAS, MMC or USB disk that is not rotational.
        Ssd = "ssd",
        /// A virtio disk: its backing cannot be seen from inside the guest.
        Virtio = "virtio",
        /// A Xen virtual disk, as hidden as virtio.
        Xen = "xen",
        Scsi = "scsi",
        Rotational = "rotational",
        /// Disks of different kinds under one path (LVM or md across them).
        Mixed = "mixed",
        /// A filesystem on no block device (tmpfs, overlay).
        Virtual = "virtual",
        Unknown = "unknown",
    }
    wanted(Nvme, Ssd, Virtio, Scsi, Rotational)
}

impl StorageKind {
    /// A transport that hides what backs it: only a measurement can judge it.
    pub fn hides_backing(self) -> bool {
        matches!(self, StorageKind::Virtio | StorageKind::Xen)
    }

    /// Flash a latency probe can prove.
    pub fn is_flash(self) -> bool {
        matches!(self, StorageKind::Nvme | StorageKind::Ssd)
    }
}

#[derive(Debug, Clone)]
pub struct HostReq {
    pub hypervisor: Requirement<Hypervisor>,
    pub forbid_container: bool,
    pub storage: Requirement<StorageKind>,
    pub storage_paths: Vec<PathBuf>,
    /// The latency probe's NVMe-class threshold; `None` when `latency_probe = false`.
    pub probe: Option<Threshold>,
}

#[derive(Debug, Clone)]
pub struct Packages {
    pub install: Vec<String>,
    pub update: bool,
    pub lock_timeout: Duration,
}

crate::words! {
    /// A ufw default policy; `disabled` is for routed traffic only.
    pub enum Policy {
        Allow = "allow",
        Deny = "deny",
        Reject = "reject",
        Disabled = "disabled",
    }
}

impl Policy {
    /// A policy as ufw's files and iptables write it.
    pub fn from_ufw(text: &str) -> Option<Policy> {
        match text {
            "allow" | "accept" | "ACCEPT" => Some(Policy::Allow),
            "deny" | "drop" | "DROP" => Some(Policy::Deny),
            "reject" | "REJECT" => Some(Policy::Reject),
            "disabled" => Some(Policy::Disabled),
            _ => None,
        }
    }
}

crate::words! {
    pub enum Proto {
        Tcp = "tcp",
        Udp = "udp",
        #[serde(alias = "both")]
        Both = "any",
    }
}

crate::words! {
    /// What a firewall rule does with the traffic it matches (ufw's words).
    pub enum Action {
        Allow = "allow",
        /// Allow, but deny an address that opens 6 or more connections in 30 s (ufw's `limit`).
        Limit = "limit",
        Deny = "deny",
        Reject = "reject",
    }
}

impl Action {
    /// Whether traffic the rule matches gets in (rate-limited or not).
    pub fn admits(self) -> bool {
        matches!(self, Action::Allow | Action::Limit)
    }
}

/// One `[[firewall.allow]]` or `[[firewall.rule]]` entry: an action, an inclusive port range,
/// a protocol, a source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub action: Action,
    pub ports: (u16, u16),
    pub proto: Proto,
    /// `None` is "any" (both address families).
    pub from: Option<IpNet>,
    pub comment: Option<String>,
    pub target: Target,
}

crate::words! {
    /// What a firewall rule guards: the host itself (ufw's rules) or the ports Docker publishes
    /// (routed to containers; see [`Published`]).
    pub enum Target {
        Host = "host",
        /// A Docker-published port, named as clients connect to it (`-p 8080:80` is 8080).
        Containers = "containers",
    }
}

crate::words! {
    /// Who decides which Docker-published ports the outside reaches.
    pub enum Published {
        /// Docker's own rules: every published port is open to the world, whatever ufw says.
        Docker = "docker",
        /// The profile's `target = "containers"` rules, through a vakt block in ufw's after.rules
        /// that sends Docker's `DOCKER-USER` chain through them and ufw's route rules.
        Profile = "profile",
    }
}

impl Rule {
    pub fn port_text(&self) -> String {
        match self.ports {
            (a, b) if a == b => a.to_string(),
            (a, b) => format!("{a}:{b}"),
        }
    }

    /// Whether both rules admit the same traffic (comments aside): listing both is a mistake.
    pub fn same_traffic(&self, other: &Rule) -> bool {
        (self.ports, self.proto, self.from, self.target) == (other.ports, other.proto, other.from, other.target)
    }

    pub fn covers(&self, port: u16, proto: Proto) -> bool {
        (self.ports.0..=self.ports.1).contains(&port) && (self.proto == Proto::Both || self.proto == proto)
    }
}

#[derive(Debug, Clone)]
pub struct Firewall {
    pub enabled: bool,
    pub incoming: Policy,
    pub outgoing: Policy,
    pub routed: Policy,
    pub prune: bool,
    /// Networks the operator connects from; a rule limited to one of them keeps SSH open.
    pub admin: Vec<IpNet>,
    pub published: Published,
    /// `[[firewall.allow]]` then `[[firewall.rule]]`, in profile order.
    pub rules: Vec<Rule>,
}

impl Firewall {
    /// The rules for the host itself (what ufw's own rules carry).
    pub fn host_rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(|r| r.target == Target::Host)
    }
}

#[derive(Debug, Clone)]
pub struct Docker {
    pub storage_driver: String,
    pub restart: bool,
    pub allow_driver_switch: bool,
    /// The Engine API's unix socket (`[docker] host`), absolute.
    pub host: Option<PathBuf>,
    pub restart_timeout: Duration,
    /// Keys vakt owns in daemon.json, `storage-driver` included.
    pub daemon: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advertise {
    Auto,
    Ip(IpAddr),
    Interface(String),
}

crate::words! {
    /// What this node is in its swarm.
    pub enum Role {
        /// The first manager: `swarm init` when the node is in no swarm.
        Init = "init",
        /// Joins an existing swarm as a manager.
        Manager = "manager",
        /// Joins an existing swarm as a worker.
        Worker = "worker",
    }
}

impl Role {
    /// Whether the node manages the swarm (listens on the management port).
    pub fn is_manager(self) -> bool {
        matches!(self, Role::Init | Role::Manager)
    }
}

/// The swarm's node-to-node ports (Docker's "Use overlay networks" guide): gossip (tcp and
/// udp) and the VXLAN data plane (udp), between all nodes.
pub const SWARM_GOSSIP_PORT: u16 = 7946;
pub const SWARM_VXLAN_PORT: u16 = 4789;

/// The systemd credential the join token is read from when `token_file` is not given.
pub const TOKEN_CREDENTIAL: &str = "swarm-join-token";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `$CREDENTIALS_DIRECTORY/NAME` (`LoadCredential=` on the unit).
    Credential(String),
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Swarm {
    /// `None`: the node is left out of any swarm vakt would make (`init = false`, no `role`).
    pub role: Option<Role>,
    pub advertise_addr: Advertise,
    pub listen_addr: SocketAddr,
    /// Managers to join through, `HOST:PORT`; empty for `init`.
    pub join: Vec<String>,
    pub token: TokenSource,
    /// The nodes' networks; the swarm ports are opened to them (with `[firewall]`).
    pub peers: Vec<IpNet>,
}

impl Swarm {
    /// Whether the node is meant to be in a swarm (dockerd's swarm-mode constraints apply).
    pub fn in_swarm(&self) -> bool {
        self.role.is_some()
    }
}

/// nginx's `listen`: a port on every address, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Port(u16),
    Addr(SocketAddr),
}

impl Listen {
    pub fn port(self) -> u16 {
        match self {
            Listen::Port(p) => p,
            Listen::Addr(a) => a.port(),
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Port(p) => write!(f, "{p}"),
            Listen::Addr(a) => write!(f, "{a}"),
        }
    }
}

/// One upstream server of the gateway: a DNS name or an IP address, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone)]
pub struct Nginx {
    pub config: PathBuf,
    pub user: String,
    pub worker_processes: String,
    pub pid: PathBuf,
    pub error_log: String,
    pub access_log: String,
    pub mime_types: String,
    pub listen: Listen,
    pub server_name: String,
    pub upstream: Vec<Upstream>,
    pub upstream_keepalive: u32,
    pub keepalive_timeout: Span,
    pub keepalive_requests: u32,
    pub sendfile: bool,
    pub tcp_nopush: bool,
    pub tcp_nodelay: bool,
    pub client_body_buffer_size: Size,
    pub client_max_body_size: Size,
    pub proxy_http_version: HttpVersion,
    pub proxy_clear_connection: bool,
    pub proxy_read_timeout: Span,
    pub proxy_send_timeout: Span,
    pub longest_invocation: Span,
    /// Keep nginx's include points for other sites (`conf.d/*.conf`, `sites-enabled/*`).
    pub include_sites: bool,
    /// Remove the link to Debian's placeholder site (`sites-enabled/default`), which would
    /// claim the default server in front of the gateway.
    pub disable_default_site: bool,
    pub tls: Option<NginxTls>,
}

crate::words! {
    /// The HTTP version nginx speaks to the gateway.
    pub enum HttpVersion {
        V1_0 = "1.0",
        V1_1 = "1.1",
    }
}

crate::words! {
    /// What becomes of Debian's placeholder site.
    pub enum DefaultSite {
        Disable = "disable",
        Keep = "keep",
    }
}

crate::words! {
    /// A block I/O scheduler, or `keep` to leave the disks' own.
    pub enum IoScheduler {
        None = "none",
        MqDeadline = "mq-deadline",
        Kyber = "kyber",
        Bfq = "bfq",
        Keep = "keep",
    }
}

/// HTTPS for the gateway: a certificate from ACME through certbot (webroot mode).
#[derive(Debug, Clone)]
pub struct NginxTls {
    /// DNS names, lowercase; the first one names certbot's lineage (`live/NAME/`).
    pub domains: Vec<String>,
    pub email: String,
    /// An `https://` URL without whitespace or control characters.
    pub acme_directory: String,
    pub listen: Listen,
    pub redirect_http: bool,
    /// `Strict-Transport-Security` max-age, when HSTS is asked for.
    pub hsts: Option<Duration>,
    /// A certificate with less left than this is drift (certbot's timer renews at 30 days).
    pub expiry_warn: Duration,
    pub webroot: PathBuf,
    pub certbot_config_dir: PathBuf,
    pub certbot_work_dir: PathBuf,
    pub certbot_logs_dir: PathBuf,
}

impl NginxTls {
    /// certbot's name for the certificate (its `--cert-name`).
    pub fn cert_name(&self) -> &str {
        &self.domains[0]
    }

    pub fn live_dir(&self) -> PathBuf {
        self.certbot_config_dir.join("live").join(self.cert_name())
    }
}

#[derive(Debug, Clone)]
pub struct Tuning {
    /// `None` leaves the schedulers as they are.
    pub io_scheduler: Option<IoScheduler>,
    pub sysctl: BTreeMap<String, String>,
}

/// A period bounded at `MIN_MS..=MAX_MS` milliseconds: only [`Period::new`] makes one, so a
/// timer made from it never gets zero (tokio's `interval` panics on it) nor a typo's week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Period<const MIN_MS: u64, const MAX_MS: u64>(Duration);

impl<const MIN_MS: u64, const MAX_MS: u64> Period<MIN_MS, MAX_MS> {
    pub const MIN: Duration = Duration::from_millis(MIN_MS);
    pub const MAX: Duration = Duration::from_millis(MAX_MS);

    pub fn new(d: Duration) -> Option<Self> {
        (Self::MIN..=Self::MAX).contains(&d).then_some(Period(d))
    }
}

impl<const MIN_MS: u64, const MAX_MS: u64> std::ops::Deref for Period<MIN_MS, MAX_MS> {
    type Target = Duration;
    fn deref(&self) -> &Duration {
        &self.0
    }
}

/// The watchdog's sampling interval: 100 ms to an hour.
pub type Interval = Period<100, 3_600_000>;
/// How often the watchdog audits the host: the audit runs commands with 30 s timeouts, so
/// more often than a second is a typo; at most 30 days.
pub type CheckEvery = Period<1_000, 2_592_000_000>;

/// How many intervals the watchdog's window holds: 1 to [`Samples::MAX`]. Its ring grows with
/// the samples taken, 24 bytes each (the watchdog's window test holds it to that): at most
/// 2.4 MB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Samples(usize);

impl Samples {
    pub const MAX: usize = 100_000;

    /// The samples of a window at an interval, when the window holds at least one and at most
    /// [`Samples::MAX`].
    pub fn of(window: Duration, interval: Interval) -> Option<Samples> {
        let n = window.as_nanos() / interval.as_nanos();
        usize::try_from(n).ok().filter(|n| (1..=Self::MAX).contains(n)).map(Samples)
    }

    pub fn get(self) -> usize {
        self.0
    }
}

#[derive(Debug, Clone)]
pub struct Watch {
    pub interval: Interval,
    /// At least one interval long: [`Watch::samples`] of them.
    pub window: Duration,
    pub samples: Samples,
    pub steal_warn: f64,
    pub steal_clear: f64,
    pub iowait_warn: f64,
    pub iowait_clear: f64,
    pub metrics: Option<SocketAddr>,
    pub check_every: Option<CheckEvery>,
    /// Off unless set: the storage probe reads for about a second each time.
    pub latency_every: Option<LatencyEvery>,
    pub latency_warn: Duration,
    pub workload: Option<Workload>,
}

/// How often the watchdog measures disk latency: a minute to a day (each probe reads for up to
/// a second, and never on a busy disk).
pub type LatencyEvery = Period<60_000, 86_400_000>;

/// How often the watchdog asks for the workload's figures: a second to an hour.
pub type WorkloadEvery = Period<1_000, 3_600_000>;

/// `[watch.workload]`: the gateway's invocation rate and service count, read from Prometheus
/// beside the host's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub prometheus: PromUrl,
    pub rate_query: String,
    pub services_query: String,
    pub every: WorkloadEvery,
    /// Below `every`: one question is over before the next is asked.
    pub timeout: Duration,
    pub max_body: usize,
    /// A fall of at least this share (0 to 1) of the baseline rate counts.
    pub fall: f64,
    /// How many answers the baseline is made of (1 to [`Workload::MAX_BASELINE`]).
    pub baseline: usize,
    /// I/O pressure (`some` avg10, percent) that counts as the host's fault.
    pub io_pressure_warn: f64,
}

impl Workload {
    pub const MAX_BASELINE: usize = 10_000;
}

/// A Prometheus server's address as vakt dials it: plain HTTP to a host and port, with
/// optional basic-auth credentials that are never shown ([`PromUrl::shown`]).
#[derive(Clone, PartialEq, Eq)]
pub struct PromUrl {
    pub host: String,
    pub port: u16,
    /// A path prefix (`/prometheus`), empty or starting with `/`, without a trailing one.
    pub prefix: String,
    /// `user:password`, as written.
    pub credentials: Option<String>,
}

impl PromUrl {
    /// The URL as messages show it: credentials replaced by `***`.
    pub fn shown(&self) -> String {
        let auth = if self.credentials.is_some() { "***@" } else { "" };
        format!("http://{auth}{}:{}{}", self.host, self.port, self.prefix)
    }
}

impl std::fmt::Debug for PromUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

/// One profile document with the name it is reported under.
struct Document {
    name: String,
    text: String,
}

/// Loads the profile `spec` names: `builtin:NAME`, a path, or (when `None`) the system profile
/// under `root` with its drop-ins, falling back to the built-in default only when `fallback`.
pub fn load(spec: Option<&str>, root: &Path, fallback: bool) -> anyhow::Result<Profile> {
    let docs = documents(spec, root, fallback)?;
    let mut profile = from_documents(&docs)?;
    profile.origin = match spec {
        Some(spec) => match spec.strip_prefix("builtin:") {
            Some(name) => Origin::Builtin(name.into()),
            None => Origin::File(std::fs::canonicalize(spec).unwrap_or_else(|_| PathBuf::from(spec))),
        },
        None if docs.first().is_some_and(|d| d.name.starts_with("builtin:")) => Origin::Builtin(DEFAULT_BUILTIN.into()),
        None => Origin::System,
    };
    Ok(profile)
}

/// Parses and validates profile text; `name` is used in messages.
pub fn parse(name: &str, text: &str) -> anyhow::Result<Profile> {
    from_documents(&[Document { name: name.into(), text: text.into() }])
}

/// The effective profile, defaults filled in, as TOML.
pub fn show(spec: Option<&str>, root: &Path) -> anyhow::Result<String> {
    let docs = documents(spec, root, true)?;
    let profile = from_documents(&docs)?;
    let mut raw = merged_raw(&docs)?;
    // A Prometheus password is never printed.
    if let (Some(w), Some(shown)) = (
        raw.watch.as_mut().and_then(|w| w.workload.as_mut()),
        profile.watch.as_ref().and_then(|w| w.workload.as_ref()).map(|w| w.prometheus.shown()),
    ) {
        w.prometheus = shown;
    }
    let body = toml::to_string_pretty(&raw).context("failed to print the profile as TOML")?;
    Ok(format!("# effective profile from {}\n{body}", profile.source))
}

fn documents(spec: Option<&str>, root: &Path, fallback: bool) -> anyhow::Result<Vec<Document>> {
    if let Some(spec) = spec {
        return Ok(vec![match spec.strip_prefix("builtin:") {
            Some(name) => builtin(name)?,
            None => read_document(Path::new(spec))?,
        }]);
    }
    let system = crate::rooted::under(root, SYSTEM_PROFILE);
    // A dangling symlink is a broken profile, not an absent one: never fall back silently.
    let link = root.join(SYSTEM_PROFILE.trim_start_matches('/'));
    if link.symlink_metadata().is_ok() || system.exists() {
        let mut docs = vec![read_document(&system)?];
        docs.extend(dropins(&crate::rooted::under(root, SYSTEM_DROPINS))?);
        Ok(docs)
    } else if fallback {
        Ok(vec![builtin(DEFAULT_BUILTIN)?])
    } else {
        Err(Invalid(format!(
            "no profile: {} does not exist; pass one with `-p FILE` or `-p builtin:{DEFAULT_BUILTIN}` \
             (vakt apply never falls back to a built-in profile on its own)",
            system.display()
        ))
        .into())
    }
}

fn builtin(name: &str) -> anyhow::Result<Document> {
    match BUILTINS.iter().find(|(n, _)| *n == name) {
        Some((n, text)) => Ok(Document { name: format!("builtin:{n}"), text: (*text).into() }),
        None => {
            let names: Vec<&str> = BUILTINS.iter().map(|(n, _)| *n).collect();
            Err(Invalid(format!("no built-in profile `{name}`; built-ins are: {}", names.join(", "))).into())
        }
    }
}

/// The largest profile vakt reads; real ones are a few KiB.
pub const MAX_PROFILE_BYTES: u64 = 1 << 20;

/// Reads one profile file: a regular file (not a FIFO or a device, which could block or never
/// end) of at most `MAX_PROFILE_BYTES`, in UTF-8, owned safely.
fn read_document(path: &Path) -> anyhow::Result<Document> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let shown = path.display();
    let invalid = |why: String| anyhow::Error::from(Invalid(format!("failed to read profile {shown}: {why}")));
    // O_NONBLOCK: opening a FIFO must not wait for a writer; the type is checked right after.
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| invalid(e.to_string()))?;
    let meta = file.metadata().map_err(|e| invalid(e.to_string()))?;
    if !meta.is_file() {
        return Err(invalid("not a regular file; give the path of a .toml file".into()));
    }
    if meta.len() > MAX_PROFILE_BYTES {
        return Err(invalid(format!("{} bytes is too large for a profile (at most {MAX_PROFILE_BYTES})", meta.len())));
    }
    refuse_unsafe_ownership(path, &meta)?;
    let mut bytes = Vec::new();
    file.take(MAX_PROFILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| invalid(e.to_string()))?;
    if bytes.len() as u64 > MAX_PROFILE_BYTES {
        return Err(invalid(format!("it grew past {MAX_PROFILE_BYTES} bytes while being read")));
    }
    let text = String::from_utf8(bytes).map_err(|_| invalid("not UTF-8 text".into()))?;
    Ok(Document { name: validate::escape_controls(&path.display().to_string()), text })
}

/// A profile that others can write would let them run commands as root through vakt.
fn refuse_unsafe_ownership(path: &Path, meta: &std::fs::Metadata) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(Invalid(format!(
            "refusing profile {}: vakt runs as root and the file is {}; run `chown root: {0} && chmod go-w {0}`",
            path.display(),
            if meta.uid() != 0 { "not owned by root" } else { "writable by group or others" },
        ))
        .into());
    }
    Ok(())
}

fn dropins(dir: &Path) -> anyhow::Result<Vec<Document>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    paths.iter().map(|p| read_document(p)).collect()
}

fn from_documents(docs: &[Document]) -> anyhow::Result<Profile> {
    let raw = merged_raw(docs)?;
    let source = docs.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(" + ");
    validate(raw, &source).map_err(|e| {
        // Point at the last document that sets the key: later documents win.
        let place = docs
            .iter()
            .rev()
            .find_map(|d| {
                locate::key_position(&d.text, &e.section, e.nth, &e.key).map(|(l, c)| format!("{}:{l}:{c}", d.name))
            })
            .unwrap_or_else(|| source.clone());
        let key = match e.nth {
            Some(n) => format!("{}[{n}].{}", e.section, e.key),
            None => format!("{}.{}", e.section, e.key),
        };
        Invalid(format!("invalid profile {place}: `{key}`: {}", e.message)).into()
    })
}

/// Each document is checked on its own (so errors name its file and line), then merged per key.
fn merged_raw(docs: &[Document]) -> anyhow::Result<RawProfile> {
    let mut merged = toml::Table::new();
    for doc in docs {
        let table = check_document(doc)?;
        for replaced in merge(&mut merged, table, "") {
            tracing::warn!(
                "{}: `{replaced}` replaces the whole list of the files before it (lists are not appended; repeat the entries you keep)",
                doc.name
            );
        }
    }
    RawProfile::deserialize_table(merged)
}

impl RawProfile {
    fn deserialize_table(table: toml::Table) -> anyhow::Result<RawProfile> {
        serde::Deserialize::deserialize(table).map_err(|e: toml::de::Error| Invalid(e.message().to_string()).into())
    }
}

fn check_document(doc: &Document) -> anyhow::Result<toml::Table> {
    let as_raw: Result<RawProfile, toml::de::Error> = toml::from_str(&doc.text);
    if let Err(e) = as_raw {
        let (line, col) = e.span().map_or((1, 1), |s| locate::line_col(&doc.text, s.start));
        let message = e.message();
        let first = message.lines().next().unwrap_or(message);
        let key = e.span().map(|s| locate::key_at(&doc.text, s.start));
        let text = unknown_key_message(first)
            .or_else(|| unknown_word_message(first, key.flatten()))
            .unwrap_or_else(|| first.to_string());
        // Only the message, which quotes the offending token: never a line of the file, which
        // may be any file the invoker can name.
        let text = validate::escape_controls(&text);
        return Err(Invalid(format!("invalid profile {}:{line}:{col}: {text}", doc.name)).into());
    }
    toml::from_str(&doc.text).map_err(|e: toml::de::Error| {
        Invalid(format!("invalid profile {}: {}", doc.name, validate::escape_controls(e.message()))).into()
    })
}

/// Rewrites serde's "unknown field `x`, expected one of `a`, `b`" as "unknown key `x`; did
/// you mean `a`?" (or the list of valid keys when none is close).
fn unknown_key_message(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let parts: Vec<&str> = rest.split('`').collect();
    let unknown = parts.first()?;
    let names: Vec<&str> = parts.iter().skip(2).step_by(2).copied().collect();
    Some(match locate::closest(unknown, names.iter().copied()) {
        Some(best) => format!("unknown key `{unknown}`; did you mean `{best}`?"),
        None => format!("unknown key `{unknown}`; valid keys here: {}", names.join(", ")),
    })
}

/// Rewrites serde's "unknown variant `x`, expected one of `a`, `b`" (or "expected `a` or `b`")
/// as "`key`: "x" is not one of a, b (did you mean `a`?)".
fn unknown_word_message(message: &str, key: Option<&str>) -> Option<String> {
    let rest = message.strip_prefix("unknown variant `")?;
    let parts: Vec<&str> = rest.split('`').collect();
    let unknown = parts.first()?;
    let words: Vec<&str> = parts.iter().skip(2).step_by(2).copied().collect();
    let hint = locate::closest(unknown, words.iter().copied()).map(|c| format!(" (did you mean `{c}`?)"));
    let key = key.map(|k| format!("`{k}`: ")).unwrap_or_default();
    Some(format!("{key}{} is not one of {}{}", validate::quoted(unknown), words.join(", "), hint.unwrap_or_default()))
}

/// Merges `from` into `into` per key (tables recursively; anything else, lists included, is
/// replaced). Returns the dotted names of the lists a later document replaced.
fn merge(into: &mut toml::Table, from: toml::Table, prefix: &str) -> Vec<String> {
    let mut replaced = Vec::new();
    for (key, value) in from {
        let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => replaced.extend(merge(a, b, &name)),
            (old, value) => {
                if matches!((&old, &value), (Some(toml::Value::Array(_)), toml::Value::Array(_))) {
                    replaced.push(name);
                }
                into.insert(key, value);
            }
        }
    }
    replaced
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_and_windows_are_bounded_where_they_are_made() {
        let ms = Duration::from_millis;
        assert_eq!(Interval::new(Duration::ZERO), None);
        assert_eq!(Interval::new(ms(99)), None);
        assert_eq!(Interval::new(ms(3_600_001)), None);
        let i = Interval::new(ms(100)).expect("the shortest");
        assert_eq!(Samples::of(ms(99), i), None, "less than one interval");
        assert_eq!(Samples::of(ms(100) * 100_000, i).map(Samples::get), Some(Samples::MAX));
        assert_eq!(Samples::of(ms(100) * 100_001, i), None);
        assert_eq!(Samples::of(Duration::MAX, i), None, "no overflow");
        assert_eq!(CheckEvery::new(ms(999)), None);
        let e =
            parse("t", "[watch]\ninterval = \"100ms\"\nwindow = \"3h\"\n").map(|_| ()).expect_err("too many samples");
        assert!(e.to_string().contains("`watch.window`"), "{e}");
    }

    fn invalid(text: &str) -> String {
        format!("{:#}", parse("test.toml", text).expect_err("profile should be refused"))
    }

    #[test]
    fn every_builtin_is_valid() {
        for (name, text) in BUILTINS {
            parse(name, text).unwrap_or_else(|e| panic!("builtin {name}: {e:#}"));
        }
    }

    #[test]
    fn unknown_key_names_file_line_and_suggestion() {
        let m = invalid("[watch]\ninterval = \"5s\"\nstel_warn = 3\n");
        assert!(m.contains("test.toml:3:1"), "{m}");
        assert!(m.contains("stel_warn") && m.contains("did you mean `steal_warn`"), "{m}");
    }

    #[test]
    fn semantic_errors_name_key_and_line() {
        let m = invalid("[watch]\nsteal_warn = 5.0\nsteal_clear = 7.0\n");
        assert!(m.contains("test.toml:3:1") && m.contains("watch.steal_clear"), "{m}");
        let m = invalid("[[firewall.allow]]\nport = 22\n[[firewall.allow]]\nport = 80\nfrom = \"10.0.0.300/8\"\n");
        assert!(m.contains("test.toml:5:1") && m.contains("firewall.allow[1].from"), "{m}");
        let m = invalid("[nginx]\nproxy_read_timeout = \"5 minutes\"\n");
        assert!(m.contains("test.toml:2:1") && m.contains("unknown unit"), "{m}");
        let m = invalid("[host]\nhypervisor = \"kvn\"\n");
        assert!(m.contains("did you mean `kvm`"), "{m}");
    }

    #[test]
    fn tls_values_that_would_reach_certbots_argv_are_refused_by_key() {
        let base = "[nginx.tls]\ndomains = [\"gw.example.com\"]\nemail = \"ops@example.com\"\n";
        for (extra, key, why) in [
            ("acme_directory = \"http://acme.example/dir\"\n", "nginx.tls.acme_directory", "https:// URL"),
            ("acme_directory = \"https://a.example/d --server x\"\n", "nginx.tls.acme_directory", "https:// URL"),
            ("acme_directory = \"https://a.example/\\u0007\"\n", "nginx.tls.acme_directory", "https:// URL"),
            ("acme_directory = \"--staging\"\n", "nginx.tls.acme_directory", "https:// URL"),
            ("domains = [\"-d.example.com\"]\n", "nginx.tls.domains", "DNS name"),
            ("domains = [\"*.example.com\"]\n", "nginx.tls.domains", "DNS name"),
            ("domains = [\"10.0.0.1/x\"]\n", "nginx.tls.domains", "DNS name"),
            ("domains = []\n", "nginx.tls.domains", "list the names"),
            ("email = \"-ops@example.com\"\n", "nginx.tls.email", "plain address"),
            ("email = \"Ops <ops@example.com>\"\n", "nginx.tls.email", "plain address"),
            ("webroot = \"/var/www/a b\"\n", "nginx.tls.webroot", "one nginx word"),
            ("tls_listen = \"443\"\n", "tls_listen", "unknown key"),
        ] {
            let text = format!("{base}{extra}").replacen(
                "domains = [\"gw.example.com\"]\n",
                "",
                usize::from(extra.starts_with("domains")),
            );
            let text =
                if extra.starts_with("email") { text.replacen("email = \"ops@example.com\"\n", "", 1) } else { text };
            let m = invalid(&text);
            assert!(m.contains(key) && m.contains(why), "{extra}: {m}");
        }
        let p = parse("t", &format!("{base}acme_directory = \"https://127.0.0.1:14000/dir\"\n")).expect("valid");
        let t = p.nginx.expect("nginx").tls.expect("tls");
        assert_eq!((t.cert_name(), t.listen.port(), t.redirect_http, t.hsts), ("gw.example.com", 443, true, None));
    }

    #[test]
    fn the_latency_probe_bounds_are_checked() {
        let m = invalid("[host]\nnvme_p50_us = 0\n");
        assert!(m.contains("host.nvme_p50_us") && m.contains("use 1 to 1000000"), "{m}");
        // Issue 22: every wrong kind of value is named with its key and range.
        for bad in ["-1", "1.5", "\"500\"", "nan", "true", "9223372036854775807"] {
            let m = invalid(&format!("[host]\nnvme_p50_us = {bad}\n"));
            assert!(m.contains("host.nvme_p50_us") && m.contains("use 1 to 1000000"), "{bad}: {m}");
        }
        // Beyond TOML's integers: the TOML reader refuses it at its line and column.
        let m = invalid("[host]\nnvme_p50_us = 18446744073709551616\n");
        assert!(m.contains(":2:15"), "{m}");
        let m = invalid("[host]\nlatency_probe = false\nnvme_p50_us = 1000001\n");
        assert!(m.contains("host.nvme_p50_us"), "checked even when the probe is off: {m}");
        let p = parse("t", "[host]\nlatency_probe = false\n").expect("probe off");
        assert!(p.host.and_then(|h| h.probe).is_none());
        let p = parse("t", "[host]\n").expect("defaults");
        let t = p.host.and_then(|h| h.probe).expect("on by default");
        assert_eq!(t.p50.as_micros(), 500);
    }

    #[test]
    fn wrong_type_names_line() {
        let m = invalid("[firewall]\nenabled = \"yes\"\n");
        assert!(m.contains("test.toml:2:11"), "{m}");
    }

    #[test]
    fn live_restore_with_swarm_is_refused() {
        let m = invalid("[swarm]\ninit = true\n[docker.daemon]\nlive-restore = true\n");
        assert!(m.contains("live-restore") && m.contains("swarm"), "{m}");
    }

    #[test]
    fn swarm_roles_default_from_init_and_joins_need_managers() {
        let role = |text: &str| parse("t", text).expect("valid").swarm.expect("swarm").role;
        assert_eq!(role("[swarm]\n"), Some(Role::Init), "init = true alone behaves as before");
        assert_eq!(role("[swarm]\ninit = false\n"), None);
        let worker =
            parse("t", "[swarm]\nrole = \"worker\"\njoin = [\"10.0.0.1\", \"mgr.example:2377\"]\n").expect("valid");
        let s = worker.swarm.expect("swarm");
        assert_eq!(
            (s.role, s.join.clone()),
            (Some(Role::Worker), vec!["10.0.0.1:2377".into(), "mgr.example:2377".into()])
        );
        assert_eq!(s.token, TokenSource::Credential("swarm-join-token".into()));
        let m = invalid("[swarm]\nrole = \"manager\"\n");
        assert!(m.contains("swarm.join") && m.contains("at least one manager"), "{m}");
        let m = invalid("[swarm]\njoin = [\"10.0.0.1\"]\n");
        assert!(m.contains("test.toml:2:1") && m.contains("only a manager or worker joins"), "{m}");
        let m = invalid("[swarm]\nrole = \"wroker\"\njoin = [\"10.0.0.1\"]\n");
        assert!(m.contains("did you mean `worker`"), "{m}");
        let m = invalid("[swarm]\ninit = false\nrole = \"init\"\n");
        assert!(m.contains("contradicts init = false"), "{m}");
        let m = invalid("[swarm]\nrole = \"worker\"\njoin = [\"10.0.0.1:0\"]\n");
        assert!(m.contains("not a manager address"), "{m}");
        let m = invalid("[swarm]\nrole = \"worker\"\njoin = [\"10.0.0.1\"]\ntoken_file = \"etc/token\"\n");
        assert!(m.contains("swarm.token_file") && m.contains("absolute"), "{m}");
        let m = invalid("[swarm]\npeers = [\"10.0.0.0/33\"]\n");
        assert!(m.contains("swarm.peers") && m.contains("not a CIDR"), "{m}");
    }

    /// Issue 23: values nginx or certbot would refuse later are refused here, naming the key.
    #[test]
    fn tls_values_certbot_and_nginx_would_refuse_are_refused() {
        let tls =
            |extra: &str| format!("[nginx.tls]\ndomains = [\"gw.example.com\"]\nemail = \"ops@example.com\"\n{extra}");
        let m = invalid("[nginx.tls]\ndomains = [\"192.0.2.10\"]\nemail = \"ops@example.com\"\n");
        assert!(m.contains("nginx.tls.domains") && m.contains("IP address"), "{m}");
        let many: Vec<String> = (0..101).map(|i| format!("\"n{i}.example.com\"")).collect();
        let m = invalid(&format!("[nginx.tls]\ndomains = [{}]\nemail = \"ops@example.com\"\n", many.join(", ")));
        assert!(m.contains("nginx.tls.domains") && m.contains("at most 100"), "{m}");
        for email in ["a..b.@example.com", "a.@example.com", "a..b@example.com"] {
            let m = invalid(&tls("").replace("ops@example.com", email));
            assert!(m.contains("nginx.tls.email"), "{email}: {m}");
        }
        for age in ["999ms", "0s", "1500ms"] {
            let m = invalid(&tls(&format!("hsts = true\nhsts_max_age = \"{age}\"\n")));
            assert!(m.contains("nginx.tls.hsts_max_age"), "{age}: {m}");
        }
        let m = invalid(&tls("acme_directory = \"https://user:hunter2@acme.example.com/dir\"\n"));
        assert!(m.contains("nginx.tls.acme_directory") && m.contains("credentials") && !m.contains("hunter2"), "{m}");
        let m = invalid(&format!("[nginx]\nlisten = \"443\"\n{}", tls("")));
        assert!(m.contains("nginx.tls.listen") && m.contains("[nginx] listen too"), "{m}");
        assert!(parse("t", &tls("hsts = true\nhsts_max_age = \"90d\"\n")).is_ok());
    }

    /// Issue 21: values that name the world or another host under another spelling.
    #[test]
    fn addresses_are_refused_in_every_ambiguous_form() {
        // A leading zero: inet_aton reads 010 as 8, the profile's parser read it as 10.
        for (text, key) in [
            ("[swarm]\npeers = [\"010.0.0.0/8\"]\n", "swarm.peers"),
            ("[swarm]\npeers = [\"010.0.0.1\"]\n", "swarm.peers"),
            ("[firewall]\nadmin = [\"10.09.8.0/24\"]\n", "firewall.admin"),
            ("[firewall]\n[[firewall.allow]]\nport = 22\nfrom = \"192.168.001.0/24\"\n", "firewall.allow"),
            ("[swarm]\nadvertise_addr = \"010.0.0.1\"\n", "swarm.advertise_addr"),
            ("[swarm]\nlisten_addr = \"010.0.0.1:2377\"\n", "swarm.listen_addr"),
            ("[swarm]\nrole = \"worker\"\njoin = [\"010.0.0.1:2377\"]\n", "swarm.join"),
        ] {
            let m = invalid(text);
            assert!(m.contains(key) && m.contains("leading zero"), "{text}: {m}");
        }
        let m = invalid("[swarm]\nlisten_addr = \"0.0.0.0:0\"\n");
        assert!(m.contains("swarm.listen_addr") && m.contains("port 0"), "{m}");
        for unspecified in ["0.0.0.0", "::"] {
            let m = invalid(&format!("[swarm]\nadvertise_addr = \"{unspecified}\"\n"));
            assert!(m.contains("swarm.advertise_addr") && m.contains("Docker refuses"), "{m}");
        }
        let m = invalid("[firewall]\n[swarm]\ninit = false\npeers = [\"10.0.0.0/24\"]\n");
        assert!(m.contains("swarm.peers") && m.contains("in no swarm"), "{m}");
        // A bare address is its host network, as ufw stores it.
        let p = parse("t", "[firewall]\n[[firewall.allow]]\nport = 22\nfrom = \"10.0.1.7\"\n").expect("valid");
        assert_eq!(p.firewall.expect("firewall").rules[0].from, Some("10.0.1.7/32".parse().expect("net")));
    }

    #[test]
    fn swarm_peers_become_firewall_rules_only_with_a_firewall() {
        let base = "[firewall]\n[[firewall.allow]]\nport = 22\n[[firewall.allow]]\nport = 7946\nproto = \"both\"\nfrom = \"10.0.0.0/24\"\n";
        let rules = |text: &str| -> Vec<String> {
            parse("t", text)
                .expect("valid")
                .firewall
                .expect("firewall")
                .rules
                .iter()
                .map(|r| {
                    format!(
                        "{} {}/{} {}",
                        r.action.as_str(),
                        r.port_text(),
                        r.proto.as_str(),
                        r.from.map_or("any".into(), |f| f.to_string())
                    )
                })
                .collect()
        };
        let manager = rules(&format!("{base}[swarm]\npeers = [\"10.0.0.0/24\", \"10.0.1.7\"]\n"));
        assert_eq!(
            manager,
            [
                "allow 22/tcp any",
                "allow 7946/any 10.0.0.0/24",
                "allow 2377/tcp 10.0.0.0/24",
                "allow 4789/udp 10.0.0.0/24",
                "allow 2377/tcp 10.0.1.7/32",
                "allow 7946/any 10.0.1.7/32",
                "allow 4789/udp 10.0.1.7/32",
            ],
            "the profile's own rule for the same traffic is kept, not doubled"
        );
        let worker =
            rules(&format!("{base}[swarm]\nrole = \"worker\"\njoin = [\"10.0.0.1\"]\npeers = [\"10.0.1.0/24\"]\n"));
        assert!(!worker.iter().any(|r| r.starts_with("allow 2377")), "a worker has no management port: {worker:?}");
        let none = parse("t", "[swarm]\npeers = [\"10.0.0.0/24\"]\n").expect("valid");
        assert!(none.firewall.is_none());
    }

    #[test]
    fn cidr_is_normalised_and_ranges_parse() {
        let p = parse(
            "t",
            "[firewall]\n[[firewall.allow]]\nport = \"6000:6007\"\nproto = \"udp\"\nfrom = \"10.1.2.3/8\"\n",
        )
        .expect("valid");
        let rule = &p.firewall.expect("firewall").rules[0];
        assert_eq!(rule.ports, (6000, 6007));
        assert_eq!(rule.from, Some("10.0.0.0/8".parse().expect("cidr")));
    }

    #[test]
    fn container_rules_need_the_profile_to_govern_published_ports() {
        let m = invalid(
            "[firewall]\n[[firewall.allow]]\nport = 22\n[[firewall.allow]]\nport = 8080\ntarget = \"containers\"\n",
        );
        assert!(m.contains("firewall.allow[1].target") && m.contains("published_ports = \"profile\""), "{m}");
        let m = invalid("[firewall]\npublished_ports = \"ufw\"\n");
        assert!(m.contains("published_ports"), "{m}");
        let m = invalid("[firewall]\n[[firewall.allow]]\nport = 22\ntarget = \"container\"\n");
        assert!(m.contains("target") && m.contains("containers"), "{m}");
        let p = parse(
            "t",
            "[firewall]\npublished_ports = \"profile\"\n[[firewall.allow]]\nport = 8080\n[[firewall.allow]]\nport = 8080\ntarget = \"containers\"\n",
        )
        .expect("the same port for the host and for containers is two rules");
        assert_eq!(p.firewall.expect("firewall").host_rules().count(), 1);
    }

    /// Every key of the schema, as (section, key), from the serialized defaults.
    fn schema_keys() -> Vec<(String, String)> {
        let docker = raw::RawDocker { host: Some("unix:///var/run/docker.sock".into()), ..Default::default() };
        let watch = raw::RawWatch {
            metrics: Some("127.0.0.1:9477".into()),
            check_every: Some("15m".into()),
            ..Default::default()
        };
        let mut firewall = raw::RawFirewall::default();
        firewall.allow.push(raw::RawRule {
            action: Some(Action::Allow),
            port: raw::RawPort::Number(22),
            proto: Proto::Tcp,
            from: "any".into(),
            comment: Some("ssh".into()),
            target: Some(Target::Host),
        });
        firewall.rule.push(raw::RawRule {
            action: Some(Action::Limit),
            port: raw::RawPort::Number(22),
            proto: Proto::Tcp,
            from: "any".into(),
            comment: None,
            target: None,
        });
        let all = RawProfile {
            host: Some(Default::default()),
            packages: Some(Default::default()),
            firewall: Some(firewall),
            docker: Some(docker),
            swarm: Some(raw::RawSwarm {
                role: Some(Role::Worker),
                token_file: Some("/etc/vakt/swarm-join-token".into()),
                ..Default::default()
            }),
            nginx: Some(Default::default()),
            tuning: Some(Default::default()),
            watch: Some(watch),
        };
        let value = toml::Value::try_from(&all).expect("serializes");
        let mut keys = Vec::new();
        for (section, table) in value.as_table().expect("table") {
            for (key, v) in table.as_table().expect("section") {
                keys.push((section.clone(), key.clone()));
                if let Some(rules) = v.as_array() {
                    for rule_key in rules.iter().filter_map(|r| r.as_table()).flat_map(|t| t.keys()) {
                        keys.push((format!("{section}.{key}"), rule_key.clone()));
                    }
                }
            }
        }
        keys
    }

    #[test]
    fn every_schema_key_is_documented() {
        let docs = include_str!("../../docs/profile.md");
        let keys = schema_keys();
        assert!(keys.len() > 50, "the schema walk found {} keys", keys.len());
        for (section, key) in keys {
            let heading = if section.contains('.') { format!("### [[{section}]]") } else { format!("## [{section}]") };
            let start = docs.find(&heading).unwrap_or_else(|| panic!("docs/profile.md has no {heading}"));
            let block = &docs[start..];
            let end = block[heading.len()..].find("\n## ").map_or(block.len(), |e| e + heading.len());
            assert!(
                block[..end].contains(&format!("| `{key}` |")),
                "docs/profile.md does not document `{key}` under {heading}"
            );
        }
    }

    #[test]
    fn dropins_override_per_key() {
        let docs = [
            Document { name: "a".into(), text: "[watch]\ninterval = \"5s\"\nsteal_warn = 20.0\n".into() },
            Document { name: "b".into(), text: "[watch]\nsteal_warn = 30.0\n".into() },
        ];
        let watch = from_documents(&docs).expect("valid").watch.expect("watch");
        assert_eq!(watch.steal_warn, 30.0);
        assert_eq!(*watch.interval, Duration::from_secs(5));
    }
}
