//! The profile: loaded from a file or a built-in, layered with drop-ins, validated into types
//! that cannot express an invalid state. Code past this module never re-validates.

mod locate;
pub mod raw;
pub mod units;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use ipnet::IpNet;

use crate::error::Invalid;
use raw::{RawPort, RawProfile};
pub use units::Size;

/// The shipped profiles, embedded so that `check` works on a machine with no setup at all.
pub const BUILTINS: &[(&str, &str)] = &[
    (
        "openfaas-swarm",
        include_str!("../../profiles/openfaas-swarm.toml"),
    ),
    ("hardened", include_str!("../../profiles/hardened.toml")),
    ("watch-only", include_str!("../../profiles/watch-only.toml")),
];

pub const DEFAULT_BUILTIN: &str = "openfaas-swarm";
const SYSTEM_PROFILE: &str = "/etc/vakt/profile.toml";
const SYSTEM_DROPINS: &str = "/etc/vakt/profile.d";

#[derive(Debug, Clone)]
pub struct Profile {
    /// Where it came from: a path or `builtin:NAME`, shown in reports and rendered headers.
    pub source: String,
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

#[derive(Debug, Clone)]
pub struct HostReq {
    /// A `systemd-detect-virt` name (`kvm`, `qemu`, `xen`, `vmware`, `microsoft`, `none`, ...).
    pub hypervisor: Requirement<String>,
    pub forbid_container: bool,
    pub storage: Requirement<String>,
    pub storage_paths: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Packages {
    pub install: Vec<String>,
    pub update: bool,
    pub lock_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Policy {
    Allow,
    Deny,
    Reject,
    Disabled,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Allow => "allow",
            Policy::Deny => "deny",
            Policy::Reject => "reject",
            Policy::Disabled => "disabled",
        }
    }

    pub fn parse(text: &str) -> Option<Policy> {
        match text {
            "allow" | "accept" | "ACCEPT" => Some(Policy::Allow),
            "deny" | "drop" | "DROP" => Some(Policy::Deny),
            "reject" | "REJECT" => Some(Policy::Reject),
            "disabled" => Some(Policy::Disabled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Both,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Both => "any",
        }
    }
}

/// One `[[firewall.allow]]` entry: an inclusive port range, a protocol, a source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub ports: (u16, u16),
    pub proto: Proto,
    /// `None` is "any" (both address families).
    pub from: Option<IpNet>,
    pub comment: Option<String>,
}

impl Rule {
    pub fn port_text(&self) -> String {
        match self.ports {
            (a, b) if a == b => a.to_string(),
            (a, b) => format!("{a}:{b}"),
        }
    }

    pub fn covers(&self, port: u16, proto: Proto) -> bool {
        (self.ports.0..=self.ports.1).contains(&port)
            && (self.proto == Proto::Both || self.proto == proto)
    }
}

#[derive(Debug, Clone)]
pub struct Firewall {
    pub enabled: bool,
    pub incoming: Policy,
    pub outgoing: Policy,
    pub routed: Policy,
    pub prune: bool,
    pub allow: Vec<Rule>,
}

#[derive(Debug, Clone)]
pub struct Docker {
    pub storage_driver: String,
    pub restart: bool,
    pub allow_driver_switch: bool,
    pub host: Option<String>,
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

#[derive(Debug, Clone)]
pub struct Swarm {
    pub init: bool,
    pub advertise_addr: Advertise,
    pub listen_addr: SocketAddr,
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
    pub listen: String,
    pub server_name: String,
    pub upstream: Vec<String>,
    pub upstream_keepalive: u32,
    pub keepalive_timeout: Duration,
    pub keepalive_requests: u32,
    pub sendfile: bool,
    pub tcp_nopush: bool,
    pub tcp_nodelay: bool,
    pub client_body_buffer_size: Size,
    pub client_max_body_size: Size,
    pub proxy_http_version: String,
    pub proxy_clear_connection: bool,
    pub proxy_read_timeout: Duration,
    pub proxy_send_timeout: Duration,
    pub longest_invocation: Duration,
}

#[derive(Debug, Clone)]
pub struct Tuning {
    pub io_scheduler: Option<String>,
    pub sysctl: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Watch {
    pub interval: Duration,
    pub window: Duration,
    pub steal_warn: f64,
    pub steal_clear: f64,
    pub iowait_warn: f64,
    pub iowait_clear: f64,
    pub metrics: Option<SocketAddr>,
    pub check_every: Option<Duration>,
}

/// One profile document with the name it is reported under.
struct Document {
    name: String,
    text: String,
}

/// Loads the profile `spec` names: `builtin:NAME`, a path, or (when `None`) the system profile
/// under `root` with its drop-ins, falling back to the built-in default only when `fallback`.
pub fn load(spec: Option<&str>, root: &Path, fallback: bool) -> anyhow::Result<Profile> {
    from_documents(&documents(spec, root, fallback)?)
}

/// Parses and validates profile text; `name` is used in messages.
pub fn parse(name: &str, text: &str) -> anyhow::Result<Profile> {
    from_documents(&[Document {
        name: name.into(),
        text: text.into(),
    }])
}

/// The effective profile, defaults filled in, as TOML.
pub fn show(spec: Option<&str>, root: &Path) -> anyhow::Result<String> {
    let docs = documents(spec, root, true)?;
    let profile = from_documents(&docs)?;
    let body = toml::to_string_pretty(&merged_raw(&docs)?)
        .context("failed to print the profile as TOML")?;
    Ok(format!(
        "# effective profile from {}\n{body}",
        profile.source
    ))
}

fn documents(spec: Option<&str>, root: &Path, fallback: bool) -> anyhow::Result<Vec<Document>> {
    if let Some(spec) = spec {
        return Ok(vec![match spec.strip_prefix("builtin:") {
            Some(name) => builtin(name)?,
            None => read_document(Path::new(spec))?,
        }]);
    }
    let system = crate::host::under(root, SYSTEM_PROFILE);
    if system.exists() {
        let mut docs = vec![read_document(&system)?];
        docs.extend(dropins(&crate::host::under(root, SYSTEM_DROPINS))?);
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
        Some((n, text)) => Ok(Document {
            name: format!("builtin:{n}"),
            text: (*text).into(),
        }),
        None => {
            let names: Vec<&str> = BUILTINS.iter().map(|(n, _)| *n).collect();
            Err(Invalid(format!(
                "no built-in profile `{name}`; built-ins are: {}",
                names.join(", ")
            ))
            .into())
        }
    }
}

fn read_document(path: &Path) -> anyhow::Result<Document> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Invalid(format!("failed to read profile {}: {e}", path.display())))?;
    refuse_unsafe_ownership(path)?;
    Ok(Document {
        name: path.display().to_string(),
        text,
    })
}

/// A profile that others can write would let them run commands as root through vakt.
fn refuse_unsafe_ownership(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let meta = std::fs::metadata(path)
        .with_context(|| format!("failed to stat profile {}", path.display()))?;
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
    let source = docs
        .iter()
        .map(|d| d.name.as_str())
        .collect::<Vec<_>>()
        .join(" + ");
    validate(raw, &source).map_err(|e| {
        // Point at the last document that sets the key: later documents win.
        let place = docs
            .iter()
            .rev()
            .find_map(|d| {
                locate::key_position(&d.text, &e.section, e.nth, &e.key)
                    .map(|(l, c)| format!("{}:{l}:{c}", d.name))
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
        merge(&mut merged, table);
    }
    RawProfile::deserialize_table(merged)
}

impl RawProfile {
    fn deserialize_table(table: toml::Table) -> anyhow::Result<RawProfile> {
        serde::Deserialize::deserialize(table)
            .map_err(|e: toml::de::Error| Invalid(e.message().to_string()).into())
    }
}

fn check_document(doc: &Document) -> anyhow::Result<toml::Table> {
    let as_raw: Result<RawProfile, toml::de::Error> = toml::from_str(&doc.text);
    if let Err(e) = as_raw {
        let (line, col) = e
            .span()
            .map_or((1, 1), |s| locate::line_col(&doc.text, s.start));
        let message = e.message();
        let hint = unknown_key_hint(message).unwrap_or_default();
        let code = doc.text.lines().nth(line - 1).unwrap_or("").trim_end();
        return Err(Invalid(format!(
            "invalid profile {}:{line}:{col}: {}{hint}\n  {line} | {code}",
            doc.name,
            message.lines().next().unwrap_or(message),
        ))
        .into());
    }
    toml::from_str(&doc.text)
        .map_err(|e: toml::de::Error| Invalid(format!("invalid profile {}: {e}", doc.name)).into())
}

/// From serde's "unknown field `x`, expected one of `a`, `b`", a "did you mean" hint.
fn unknown_key_hint(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let names: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let unknown = rest.split('`').next()?;
    match locate::closest(unknown, names.iter().copied()) {
        Some(best) => Some(format!("; did you mean `{best}`?")),
        None => Some(format!("; valid keys here: {}", names.join(", "))),
    }
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// A semantic error: which key, and why. Turned into a message with file and line by the caller.
struct KeyError {
    section: String,
    nth: Option<usize>,
    key: String,
    message: String,
}

fn err(section: &str, key: &str, message: impl Into<String>) -> KeyError {
    KeyError {
        section: section.into(),
        nth: None,
        key: key.into(),
        message: message.into(),
    }
}

fn duration(section: &str, key: &str, text: &str) -> Result<Duration, KeyError> {
    units::parse_duration(text).map_err(|m| err(section, key, m))
}

fn size(section: &str, key: &str, text: &str) -> Result<Size, KeyError> {
    Size::parse(text).map_err(|m| err(section, key, m))
}

fn one_of<'a>(
    section: &str,
    key: &str,
    value: &'a str,
    allowed: &[&str],
) -> Result<&'a str, KeyError> {
    if allowed.contains(&value) {
        Ok(value)
    } else {
        let hint = locate::closest(value, allowed.iter().copied())
            .map(|c| format!(" (did you mean `{c}`?)"));
        Err(err(
            section,
            key,
            format!(
                "`{value}` is not one of {}{}",
                allowed.join(", "),
                hint.unwrap_or_default()
            ),
        ))
    }
}

const HYPERVISORS: &[&str] = &[
    "any",
    "none",
    "kvm",
    "qemu",
    "xen",
    "vmware",
    "microsoft",
    "oracle",
    "amazon",
];
const STORAGE: &[&str] = &["any", "nvme", "virtio", "ssd", "scsi", "rotational"];

fn validate(raw: RawProfile, source: &str) -> Result<Profile, KeyError> {
    let requirement = |v: &str| {
        if v == "any" {
            Requirement::Any
        } else {
            Requirement::Exactly(v.to_string())
        }
    };
    let host = match raw.host {
        None => None,
        Some(h) => Some(HostReq {
            hypervisor: requirement(one_of("host", "hypervisor", &h.hypervisor, HYPERVISORS)?),
            forbid_container: one_of("host", "container", &h.container, &["forbid", "allow"])?
                == "forbid",
            storage: requirement(one_of("host", "storage", &h.storage, STORAGE)?),
            storage_paths: absolute_paths("host", "storage_paths", &h.storage_paths)?,
        }),
    };
    let packages = match raw.packages {
        None => None,
        Some(p) => {
            if let Some(bad) = p.install.iter().find(|n| !valid_package_name(n)) {
                return Err(err(
                    "packages",
                    "install",
                    format!("`{bad}` is not a Debian package name"),
                ));
            }
            Some(Packages {
                install: p.install,
                update: p.update,
                lock_timeout: duration("packages", "lock_timeout", &p.lock_timeout)?,
            })
        }
    };
    let firewall = match raw.firewall {
        None => None,
        Some(f) => Some(validate_firewall(f)?),
    };
    let swarm = match raw.swarm {
        None => None,
        Some(s) => Some(Swarm {
            init: s.init,
            advertise_addr: match s.advertise_addr.as_str() {
                "auto" => Advertise::Auto,
                text => match text.parse::<IpAddr>() {
                    Ok(ip) => Advertise::Ip(ip),
                    Err(_) if valid_interface_name(text) => Advertise::Interface(text.into()),
                    Err(_) => {
                        return Err(err(
                            "swarm",
                            "advertise_addr",
                            "give \"auto\", an IP address or an interface name",
                        ));
                    }
                },
            },
            listen_addr: s.listen_addr.parse().map_err(|_| {
                err(
                    "swarm",
                    "listen_addr",
                    format!("`{}` is not ADDRESS:PORT", s.listen_addr),
                )
            })?,
        }),
    };
    let docker = match raw.docker {
        None => None,
        Some(d) => Some(validate_docker(d, swarm.as_ref())?),
    };
    let nginx = match raw.nginx {
        None => None,
        Some(n) => Some(validate_nginx(n)?),
    };
    let tuning = match raw.tuning {
        None => None,
        Some(t) => Some(validate_tuning(t)?),
    };
    let watch = match raw.watch {
        None => None,
        Some(w) => Some(validate_watch(w)?),
    };
    Ok(Profile {
        source: source.into(),
        host,
        packages,
        firewall,
        docker,
        swarm,
        nginx,
        tuning,
        watch,
    })
}

fn absolute_paths(section: &str, key: &str, paths: &[String]) -> Result<Vec<PathBuf>, KeyError> {
    paths
        .iter()
        .map(|p| {
            if p.starts_with('/') {
                Ok(PathBuf::from(p))
            } else {
                Err(err(section, key, format!("`{p}` is not an absolute path")))
            }
        })
        .collect()
}

fn valid_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
}

fn validate_firewall(f: raw::RawFirewall) -> Result<Firewall, KeyError> {
    let policy = |key: &str, value: &str, allowed: &[&str]| -> Result<Policy, KeyError> {
        one_of("firewall", key, value, allowed).map(|v| Policy::parse(v).unwrap_or(Policy::Deny))
    };
    let mut allow = Vec::new();
    for (i, r) in f.allow.into_iter().enumerate() {
        let at = |key: &str, message: String| KeyError {
            section: "firewall.allow".into(),
            nth: Some(i),
            key: key.into(),
            message,
        };
        let ports = match &r.port {
            RawPort::Number(0) => return Err(at("port", "port 0 is not a port".into())),
            RawPort::Number(p) => (*p, *p),
            RawPort::Text(t) => parse_port_range(t).ok_or_else(|| {
                at(
                    "port",
                    format!("`{t}` is not a port or a range like \"6000:6007\""),
                )
            })?,
        };
        let proto = match r.proto.as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "both" | "any" => Proto::Both,
            other => {
                return Err(at(
                    "proto",
                    format!("`{other}` is not one of tcp, udp, both"),
                ));
            }
        };
        if ports.0 != ports.1 && proto == Proto::Both {
            return Err(at(
                "proto",
                "ufw needs a port range to be tcp or udp, not both".into(),
            ));
        }
        let from = match r.from.as_str() {
            "any" => None,
            text => Some(parse_cidr(text).ok_or_else(|| {
                at(
                    "from",
                    format!("`{text}` is not a CIDR like \"10.0.0.0/8\" or \"any\""),
                )
            })?),
        };
        if let Some(c) = &r.comment
            && (c.contains('\'') || c.contains('\n'))
        {
            return Err(at(
                "comment",
                "a ufw comment cannot hold quotes or newlines".into(),
            ));
        }
        allow.push(Rule {
            ports,
            proto,
            from,
            comment: r.comment,
        });
    }
    Ok(Firewall {
        enabled: f.enabled,
        incoming: policy("incoming", &f.incoming, &["allow", "deny", "reject"])?,
        outgoing: policy("outgoing", &f.outgoing, &["allow", "deny", "reject"])?,
        routed: policy(
            "routed",
            &f.routed,
            &["allow", "deny", "reject", "disabled"],
        )?,
        prune: f.prune,
        allow,
    })
}

fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let (a, b) = text.split_once(':').unwrap_or((text, text));
    let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a > 0 && a <= b).then_some((a, b))
}

/// A CIDR, or a bare address meaning the host route; the network is normalised (10.1.2.3/8 → 10.0.0.0/8).
fn parse_cidr(text: &str) -> Option<IpNet> {
    let net = text
        .parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .ok()?;
    Some(net.trunc())
}

fn validate_docker(d: raw::RawDocker, swarm: Option<&Swarm>) -> Result<Docker, KeyError> {
    if d.storage_driver.is_empty() {
        return Err(err(
            "docker",
            "storage_driver",
            "must name a driver, e.g. \"overlay2\"",
        ));
    }
    let mut daemon = serde_json::Map::new();
    for (key, value) in d.daemon {
        if key == "storage-driver" {
            return Err(err(
                "docker.daemon",
                &key,
                "set the driver with `docker.storage_driver`, not here",
            ));
        }
        let json =
            serde_json::to_value(&value).map_err(|e| err("docker.daemon", &key, e.to_string()))?;
        daemon.insert(key, json);
    }
    if swarm.is_some_and(|s| s.init)
        && daemon.get("live-restore") == Some(&serde_json::Value::Bool(true))
    {
        // dockerd refuses to start with live-restore in swarm mode (moby/moby#29299).
        return Err(err(
            "docker.daemon",
            "live-restore",
            "live-restore = true conflicts with [swarm] init: dockerd will not start in swarm mode with it",
        ));
    }
    daemon.insert(
        "storage-driver".into(),
        serde_json::Value::String(d.storage_driver.clone()),
    );
    if let Some(h) = &d.host
        && !(h.starts_with("unix://") || h.starts_with('/'))
    {
        return Err(err(
            "docker",
            "host",
            format!("`{h}`: only unix:// endpoints are supported"),
        ));
    }
    Ok(Docker {
        storage_driver: d.storage_driver,
        restart: d.restart,
        allow_driver_switch: d.allow_driver_switch,
        host: d.host,
        restart_timeout: duration("docker", "restart_timeout", &d.restart_timeout)?,
        daemon,
    })
}

fn validate_nginx(n: raw::RawNginx) -> Result<Nginx, KeyError> {
    let directive = |key: &str, v: &str| -> Result<(), KeyError> {
        if v.is_empty() || v.contains([';', '{', '}', '\n', '"', '\'']) {
            Err(err(
                "nginx",
                key,
                format!("`{v}` cannot be written into nginx.conf safely"),
            ))
        } else {
            Ok(())
        }
    };
    for (key, value) in [
        ("user", &n.user),
        ("worker_processes", &n.worker_processes),
        ("pid", &n.pid),
        ("error_log", &n.error_log),
        ("access_log", &n.access_log),
        ("mime_types", &n.mime_types),
        ("listen", &n.listen),
        ("server_name", &n.server_name),
        ("proxy_http_version", &n.proxy_http_version),
    ] {
        directive(key, value)?;
    }
    if n.upstream.is_empty() {
        return Err(err(
            "nginx",
            "upstream",
            "list at least one upstream server, e.g. [\"127.0.0.1:8080\"]",
        ));
    }
    for u in &n.upstream {
        directive("upstream", u)?;
    }
    if !n.config.starts_with('/') {
        return Err(err("nginx", "config", "must be an absolute path"));
    }
    Ok(Nginx {
        config: PathBuf::from(&n.config),
        pid: PathBuf::from(&n.pid),
        keepalive_timeout: duration("nginx", "keepalive_timeout", &n.keepalive_timeout)?,
        client_body_buffer_size: size(
            "nginx",
            "client_body_buffer_size",
            &n.client_body_buffer_size,
        )?,
        client_max_body_size: size("nginx", "client_max_body_size", &n.client_max_body_size)?,
        proxy_read_timeout: duration("nginx", "proxy_read_timeout", &n.proxy_read_timeout)?,
        proxy_send_timeout: duration("nginx", "proxy_send_timeout", &n.proxy_send_timeout)?,
        longest_invocation: duration("nginx", "longest_invocation", &n.longest_invocation)?,
        user: n.user,
        worker_processes: n.worker_processes,
        error_log: n.error_log,
        access_log: n.access_log,
        mime_types: n.mime_types,
        listen: n.listen,
        server_name: n.server_name,
        upstream: n.upstream,
        upstream_keepalive: n.upstream_keepalive,
        keepalive_requests: n.keepalive_requests,
        sendfile: n.sendfile,
        tcp_nopush: n.tcp_nopush,
        tcp_nodelay: n.tcp_nodelay,
        proxy_http_version: n.proxy_http_version,
        proxy_clear_connection: n.proxy_clear_connection,
    })
}

fn validate_tuning(t: raw::RawTuning) -> Result<Tuning, KeyError> {
    let mut sysctl = BTreeMap::new();
    for (key, value) in t.sysctl {
        let valid = !key.is_empty()
            && !key.contains("..")
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !valid {
            return Err(err(
                "tuning.sysctl",
                &key,
                "is not a sysctl name like \"vm.swappiness\"",
            ));
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => u8::from(b).to_string(),
            _ => return Err(err("tuning.sysctl", &key, "must be a string or an integer")),
        };
        sysctl.insert(key, text);
    }
    if let Some(s) = &t.io_scheduler {
        one_of(
            "tuning",
            "io_scheduler",
            s,
            &["none", "mq-deadline", "kyber", "bfq"],
        )?;
    }
    Ok(Tuning {
        io_scheduler: t.io_scheduler,
        sysctl,
    })
}

fn validate_watch(w: raw::RawWatch) -> Result<Watch, KeyError> {
    let interval = duration("watch", "interval", &w.interval)?;
    if interval < Duration::from_millis(100) {
        return Err(err("watch", "interval", "must be at least 100ms"));
    }
    let window = duration("watch", "window", &w.window)?;
    if window < interval {
        return Err(err(
            "watch",
            "window",
            format!("must be at least the interval ({})", w.interval),
        ));
    }
    for (key, v) in [
        ("steal_warn", w.steal_warn),
        ("steal_clear", w.steal_clear),
        ("iowait_warn", w.iowait_warn),
        ("iowait_clear", w.iowait_clear),
    ] {
        if !(0.0..=100.0).contains(&v) {
            return Err(err(
                "watch",
                key,
                format!("{v} is not a percentage between 0 and 100"),
            ));
        }
    }
    if w.steal_clear >= w.steal_warn {
        return Err(err(
            "watch",
            "steal_clear",
            format!(
                "must be below steal_warn ({}) for the alarm to clear",
                w.steal_warn
            ),
        ));
    }
    if w.iowait_clear >= w.iowait_warn {
        return Err(err(
            "watch",
            "iowait_clear",
            format!(
                "must be below iowait_warn ({}) for the alarm to clear",
                w.iowait_warn
            ),
        ));
    }
    let metrics = match &w.metrics {
        None => None,
        Some(m) => Some(m.parse().map_err(|_| {
            err(
                "watch",
                "metrics",
                format!("`{m}` is not ADDRESS:PORT like \"127.0.0.1:9477\""),
            )
        })?),
    };
    let check_every = match &w.check_every {
        None => None,
        Some(c) => Some(duration("watch", "check_every", c)?),
    };
    Ok(Watch {
        interval,
        window,
        steal_warn: w.steal_warn,
        steal_clear: w.steal_clear,
        iowait_warn: w.iowait_warn,
        iowait_clear: w.iowait_clear,
        metrics,
        check_every,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(text: &str) -> String {
        format!(
            "{:#}",
            parse("test.toml", text).expect_err("profile should be refused")
        )
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
        assert!(
            m.contains("stel_warn") && m.contains("did you mean `steal_warn`"),
            "{m}"
        );
    }

    #[test]
    fn semantic_errors_name_key_and_line() {
        let m = invalid("[watch]\nsteal_warn = 5.0\nsteal_clear = 7.0\n");
        assert!(
            m.contains("test.toml:3:1") && m.contains("watch.steal_clear"),
            "{m}"
        );
        let m = invalid(
            "[[firewall.allow]]\nport = 22\n[[firewall.allow]]\nport = 80\nfrom = \"10.0.0.300/8\"\n",
        );
        assert!(
            m.contains("test.toml:5:1") && m.contains("firewall.allow[1].from"),
            "{m}"
        );
        let m = invalid("[nginx]\nproxy_read_timeout = \"5 minutes\"\n");
        assert!(
            m.contains("test.toml:2:1") && m.contains("unknown unit"),
            "{m}"
        );
        let m = invalid("[host]\nhypervisor = \"kvn\"\n");
        assert!(m.contains("did you mean `kvm`"), "{m}");
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
    fn cidr_is_normalised_and_ranges_parse() {
        let p = parse("t", "[firewall]\n[[firewall.allow]]\nport = \"6000:6007\"\nproto = \"udp\"\nfrom = \"10.1.2.3/8\"\n").expect("valid");
        let rule = &p.firewall.expect("firewall").allow[0];
        assert_eq!(rule.ports, (6000, 6007));
        assert_eq!(rule.from, Some("10.0.0.0/8".parse().expect("cidr")));
    }

    #[test]
    fn dropins_override_per_key() {
        let docs = [
            Document {
                name: "a".into(),
                text: "[watch]\ninterval = \"5s\"\nsteal_warn = 20.0\n".into(),
            },
            Document {
                name: "b".into(),
                text: "[watch]\nsteal_warn = 30.0\n".into(),
            },
        ];
        let watch = from_documents(&docs).expect("valid").watch.expect("watch");
        assert_eq!(watch.steal_warn, 30.0);
        assert_eq!(watch.interval, Duration::from_secs(5));
    }
}
