//! The `host` resource (read-only): hypervisor, container and storage verdicts from several
//! signals each, with the evidence, judged against the profile's `[host]` requirements.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::probe::{self, Class, Outcome, Threshold};
use super::{Finding, Plan, Resource, Status};
use crate::host::Host;
use crate::profile::{HostReq, Hypervisor, Requirement, StorageKind};

/// The report header: what machine this is.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub kernel: Option<String>,
    pub cpus: usize,
    pub memory_mib: Option<u64>,
}

impl Machine {
    pub fn read(host: &Host) -> Machine {
        let os = host.read_opt("/etc/os-release").and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim_matches('"').to_string())
        });
        let cpus =
            host.read_opt("/proc/cpuinfo").map_or(0, |t| t.lines().filter(|l| l.starts_with("processor")).count());
        let memory_mib = host.read_opt("/proc/meminfo").and_then(|t| {
            let kb = t.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
            kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|k| k / 1024)
        });
        Machine {
            hostname: host.read_opt("/proc/sys/kernel/hostname"),
            os,
            kernel: host.read_opt("/proc/sys/kernel/osrelease"),
            cpus,
            memory_mib,
        }
    }
}

/// A verdict with the signals that led to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection<T> {
    pub verdict: T,
    pub evidence: Vec<String>,
}

/// What one storage path sits on.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageVerdict {
    pub path: PathBuf,
    pub verdict: StorageKind,
    pub evidence: Vec<String>,
    /// The latency probe of each disk whose transport hides its backing, when it was asked for.
    pub probes: Vec<(String, Outcome)>,
}

#[derive(Debug)]
pub struct Observed {
    /// An image prepared offline (`--root` without a captured /proc): nothing to judge yet.
    image: bool,
    hypervisor: Detection<Hypervisor>,
    /// The container technology (`systemd-detect-virt --container`'s name), if in one.
    container: Detection<Option<String>>,
    storage: Vec<StorageVerdict>,
}

pub struct HostVerdicts<'p> {
    req: &'p HostReq,
}

impl<'p> HostVerdicts<'p> {
    pub fn new(req: &'p HostReq) -> Self {
        HostVerdicts { req }
    }

    fn verdicts(&self, host: &Host, probing: Probing) -> Observed {
        // The probe only runs where it can decide the requirement: NVMe (or SSD) wanted, on a
        // disk whose transport hides what backs it. One probe per disk per run.
        let wants_flash = matches!(self.req.storage, Requirement::Exactly(w) if w.is_flash());
        let mut probes = match (wants_flash, self.req.probe) {
            (true, Some(threshold)) => Some(Probes { probing, threshold, done: Vec::new() }),
            _ => None,
        };
        let storage = self.req.storage_paths.iter().map(|p| storage(host, p, probes.as_mut())).collect();
        // A fixture tree carries a captured /proc; an image's /proc is an empty mount point.
        let image = !host.is_live() && !host.path("/proc/cpuinfo").exists();
        Observed { image, hypervisor: hypervisor(host), container: container(host), storage }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probing {
    Measure,
    NotDuringApply,
}

/// The latency probes of one run: each disk is probed once.
pub struct Probes {
    probing: Probing,
    threshold: Threshold,
    done: Vec<(String, Outcome)>,
}

impl Probes {
    fn of(&mut self, host: &Host, disk: &str, written: Option<&probe::Written>) -> Outcome {
        if let Some((_, outcome)) = self.done.iter().find(|(name, _)| name == disk) {
            return outcome.clone();
        }
        let outcome = match self.probing {
            // The rotational flag of these transports says nothing about the backing.
            Probing::Measure => probe::run(host, disk, false, written, |f| self.threshold.judge(f) == Class::NvmeClass),
            Probing::NotDuringApply => {
                Outcome::NotRun("not during apply, whose own writes would skew it; `vakt check` measures".into())
            }
        };
        self.done.push((disk.to_string(), outcome.clone()));
        outcome
    }
}

impl Resource for HostVerdicts<'_> {
    type Observed = Observed;
    type Action = ();

    fn id(&self) -> &'static str {
        "host"
    }

    fn observe(&self, host: &Host) -> anyhow::Result<Observed> {
        Ok(self.verdicts(host, Probing::Measure))
    }

    /// Provisioning keeps the disk busy (packages, a Docker restart): no latency figures
    /// then. The storage verdict of a hidden transport stays unknown in apply, which does not
    /// count it in the exit code; `check` (vakt-check.service) measures.
    fn observe_to_converge(&self, host: &Host) -> anyhow::Result<Observed> {
        Ok(self.verdicts(host, Probing::NotDuringApply))
    }

    fn plan(&self, o: &Observed) -> Plan<()> {
        let mut plan = Plan::default();
        if o.image {
            for (id, title) in
                [("host.hypervisor", "hypervisor"), ("host.container", "container"), ("host.storage", "storage")]
            {
                plan.pass(Finding::deferred(id, title, "judge the running host (vakt check)"));
            }
            return plan;
        }
        let hv = &o.hypervisor;
        let status = match &self.req.hypervisor {
            Requirement::Any => Status::Ok,
            Requirement::Exactly(want) if *want == hv.verdict => Status::Ok,
            Requirement::Exactly(_) if hv.verdict == Hypervisor::Vm => Status::Unknown,
            Requirement::Exactly(_) => Status::Drift,
        };
        let want = self.req.hypervisor;
        let mut f = Finding::new("host.hypervisor", format!("hypervisor is {} (required: {want})", hv.verdict), status);
        f.evidence = hv.evidence.clone();
        plan.pass(f);

        let ct = &o.container;
        let status = if self.req.forbid_container && ct.verdict.is_some() { Status::Drift } else { Status::Ok };
        let rule = if self.req.forbid_container { "forbidden" } else { "allowed" };
        let name = ct.verdict.as_deref().unwrap_or("none");
        let mut f = Finding::new("host.container", format!("container: {name} (containers {rule})"), status);
        f.evidence = ct.evidence.clone();
        plan.pass(f);

        for s in &o.storage {
            plan.pass(storage_finding(&self.req.storage, self.req.probe.as_ref(), s));
        }
        plan
    }

    fn reports_facts(&self) -> bool {
        true
    }
}

/// The finding for one storage path. A transport that hides its backing (virtio, Xen) meets
/// `nvme` or `ssd` when the latency probe measured NVMe-class figures on every disk under the
/// path; measured slower is drift; a probe that did not run or could not decide leaves it
/// unknown, never a pass.
fn storage_finding(want: &Requirement<StorageKind>, threshold: Option<&Threshold>, s: &StorageVerdict) -> Finding {
    let hidden = s.verdict.hides_backing();
    let classes: Vec<Class> = s
        .probes
        .iter()
        .map(|(_, o)| match (o, threshold) {
            (Outcome::Measured(f), Some(t)) => t.judge(f),
            _ => Class::Undecided,
        })
        .collect();
    let measured = if !hidden || classes.is_empty() {
        None
    } else if classes.contains(&Class::Slower) {
        Some(Class::Slower)
    } else if classes.iter().all(|c| *c == Class::NvmeClass) {
        Some(Class::NvmeClass)
    } else {
        Some(Class::Undecided)
    };
    let status = match (want, s.verdict) {
        (Requirement::Any, _) => Status::Ok,
        (Requirement::Exactly(want), got) if *want == got => Status::Ok,
        (Requirement::Exactly(StorageKind::Ssd), StorageKind::Nvme) => Status::Ok,
        (Requirement::Exactly(want), _) if hidden && want.is_flash() => match measured {
            Some(Class::NvmeClass) => Status::Ok,
            // Slower than NVMe-class says nothing about whether a SATA SSD backs it.
            Some(Class::Slower) if *want == StorageKind::Nvme => Status::Drift,
            _ => Status::Unknown,
        },
        // The disk's backing is invisible from inside a guest: could not verify.
        (Requirement::Exactly(_), got) if got.hides_backing() || got == StorageKind::Unknown => Status::Unknown,
        _ => Status::Drift,
    };
    let want = match want {
        Requirement::Any => "any",
        Requirement::Exactly(w) => w.as_str(),
    };
    let class = match measured {
        Some(Class::NvmeClass) => ", NVMe-class by measured latency",
        Some(Class::Slower) => ", slower than NVMe-class by measured latency",
        Some(Class::Undecided) => ", latency unknown",
        None => "",
    };
    let mut f = Finding::new(
        format!("host.storage:{}", s.path.display()),
        format!("{} is on {} storage{class} (required: {want})", s.path.display(), s.verdict),
        status,
    );
    f.evidence = s.evidence.clone();
    for ((disk, outcome), class) in s.probes.iter().zip(&classes) {
        f.evidence.push(match (outcome, threshold) {
            (Outcome::Measured(figures), Some(t)) => {
                let verdict = match class {
                    Class::NvmeClass => "NVMe-class",
                    Class::Slower => "slower than NVMe-class",
                    Class::Undecided => "too few reads of written blocks to decide",
                };
                format!("latency probe {disk}: {figures} → {verdict} (NVMe-class: p50 ≤ {} µs)", t.p50.as_micros())
            }
            (Outcome::Measured(figures), None) => format!("latency probe {disk}: {figures}"),
            (Outcome::NotRun(why), _) => format!("latency probe {disk}: did not run: {why}"),
        });
    }
    f
}

/// Hypervisor from CPUID (live host only), `/sys/hypervisor/type`, DMI and the cpuinfo flag.
/// Names follow `systemd-detect-virt --vm`.
pub fn hypervisor(host: &Host) -> Detection<Hypervisor> {
    let mut evidence = Vec::new();
    let mut votes: Vec<Hypervisor> = Vec::new();
    if host.is_live()
        && let Some(vendor) = cpuid_vendor()
    {
        let name = match vendor.as_str() {
            "KVMKVMKVM" => Hypervisor::Kvm,
            "TCGTCGTCGTCG" => Hypervisor::Qemu,
            "Microsoft Hv" => Hypervisor::Microsoft,
            "VMwareVMware" => Hypervisor::Vmware,
            "XenVMMXenVMM" => Hypervisor::Xen,
            "bhyve bhyve " => Hypervisor::Bhyve,
            _ => Hypervisor::Vm,
        };
        evidence.push(format!("CPUID 0x40000000 vendor {vendor:?} → {name}"));
        votes.push(name);
    }
    if let Some(t) = host.read_opt("/sys/hypervisor/type") {
        evidence.push(format!("/sys/hypervisor/type = {t}"));
        if t == "xen" {
            votes.push(Hypervisor::Xen);
        }
    }
    let dmi = ["sys_vendor", "product_name", "bios_vendor"]
        .iter()
        .filter_map(|f| host.read_opt(format!("/sys/class/dmi/id/{f}")).map(|v| (*f, v)))
        .collect::<Vec<_>>();
    for (field, value) in &dmi {
        evidence.push(format!("DMI {field} = {value}"));
    }
    if let Some(name) = dmi.iter().find_map(|(_, v)| dmi_vendor(v)) {
        votes.push(name);
    }
    let flag = host
        .read_opt("/proc/cpuinfo")
        .is_some_and(|t| t.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|w| w == "hypervisor")));
    evidence.push(format!("/proc/cpuinfo hypervisor flag {}", if flag { "set" } else { "not set" }));

    let verdict = match votes.first() {
        Some(first) => *first,
        None if flag => Hypervisor::Vm,
        None => Hypervisor::None,
    };
    if votes.iter().any(|v| *v != verdict) {
        let names: Vec<&str> = votes.iter().map(|v| v.as_str()).collect();
        evidence.push(format!("signals disagree ({}); CPUID, then /sys/hypervisor, then DMI decide", names.join(", ")));
    }
    Detection { verdict, evidence }
}

fn dmi_vendor(value: &str) -> Option<Hypervisor> {
    use Hypervisor::*;
    const TABLE: &[(&str, Hypervisor)] = &[
        ("KVM", Kvm),
        ("OpenStack", Kvm),
        ("KubeVirt", Kvm),
        ("Amazon EC2", Amazon),
        ("QEMU", Qemu),
        ("VMware", Vmware),
        ("VMW", Vmware),
        ("innotek GmbH", Oracle),
        ("VirtualBox", Oracle),
        ("Xen", Xen),
        ("Bochs", Bochs),
        ("Parallels", Parallels),
        ("BHYVE", Bhyve),
        ("Hyper-V", Microsoft),
        ("Virtual Machine", Microsoft),
    ];
    TABLE.iter().find(|(prefix, _)| value.starts_with(prefix)).map(|(_, name)| *name)
}

#[cfg(target_arch = "x86_64")]
fn cpuid_vendor() -> Option<String> {
    use std::arch::x86_64::__cpuid;
    // Leaf 1 ECX bit 31 is set by every hypervisor; leaf 0x40000000 then names it.
    if __cpuid(1).ecx & (1 << 31) == 0 {
        return None;
    }
    let leaf = __cpuid(0x4000_0000);
    let bytes: Vec<u8> = [leaf.ebx, leaf.ecx, leaf.edx].iter().flat_map(|r| r.to_le_bytes()).collect();
    let text = String::from_utf8_lossy(&bytes).trim_end_matches('\0').to_string();
    Some(text)
}

#[cfg(not(target_arch = "x86_64"))]
fn cpuid_vendor() -> Option<String> {
    None
}

/// Container from the OpenVZ files, systemd's marker, PID 1's environment, runtime marker
/// files and cgroup paths. Names follow `systemd-detect-virt --container`.
pub fn container(host: &Host) -> Detection<Option<String>> {
    let mut evidence = Vec::new();
    let found = |name: &str, evidence: Vec<String>| Detection { verdict: Some(name.to_string()), evidence };
    if host.path("/proc/vz").exists() && !host.path("/proc/bc").exists() {
        evidence.push("/proc/vz exists and /proc/bc does not (OpenVZ guest)".into());
        if host.path("/proc/user_beancounters").exists() {
            evidence.push("/proc/user_beancounters exists".into());
        }
        return found("openvz", evidence);
    }
    if let Some(name) = host.read_opt("/run/systemd/container").filter(|n| !n.is_empty()) {
        evidence.push(format!("/run/systemd/container = {name}"));
        return found(&name, evidence);
    }
    if let Some(env) = host.read_opt("/proc/1/environ")
        && let Some(name) = env.split('\0').find_map(|kv| kv.strip_prefix("container="))
    {
        evidence.push(format!("container={name} in PID 1's environment"));
        return found(name, evidence);
    }
    for (marker, name) in [("/run/.containerenv", "podman"), ("/.dockerenv", "docker")] {
        if host.path(marker).exists() {
            evidence.push(format!("{marker} exists"));
            return found(name, evidence);
        }
    }
    if let Some(cgroup) = host.read_opt("/proc/1/cgroup") {
        for (needle, name) in [("/docker/", "docker"), ("/lxc/", "lxc"), ("/kubepods", "container-other")] {
            if let Some(line) = cgroup.lines().find(|l| l.contains(needle)) {
                evidence.push(format!("/proc/1/cgroup: {line}"));
                return found(name, evidence);
            }
        }
    }
    evidence.push(
        "no container marker found (OpenVZ files, /run/systemd/container, PID 1 environment, runtime markers, cgroups)"
            .into(),
    );
    Detection { verdict: None, evidence }
}

/// The storage under `path`: its mount from mountinfo, then `/sys/dev/block` through
/// partitions, device-mapper and md down to the disks. With `probes`, each disk whose
/// transport hides its backing is probed for latency (once: `probes` keeps every result of
/// this run).
pub fn storage(host: &Host, path: &Path, probes: Option<&mut Probes>) -> StorageVerdict {
    let mut evidence = Vec::new();
    let verdict = |verdict: StorageKind, evidence: Vec<String>| StorageVerdict {
        path: path.into(),
        verdict,
        evidence,
        probes: Vec::new(),
    };
    let Some(mountinfo) = host.read_opt("/proc/self/mountinfo") else {
        return verdict(StorageKind::Unknown, vec!["/proc/self/mountinfo is not readable".into()]);
    };
    if !host.path(path).exists() {
        evidence.push(format!("{} does not exist yet: judged by the filesystem that would hold it", path.display()));
    }
    let (mount, skipped) = mount_of(&mountinfo, path);
    if skipped > 0 {
        evidence.push(format!("/proc/self/mountinfo: {skipped} malformed line(s) skipped"));
    }
    let Some(mount) = mount else {
        evidence.push(format!("no mount holds {}", path.display()));
        return verdict(StorageKind::Unknown, evidence);
    };
    evidence.push(format!("mounted at {} from {} ({}, device {})", mount.point, mount.source, mount.fstype, mount.dev));
    let mut dev_dir = resolve_link(host, &host.path(format!("/sys/dev/block/{}", mount.dev)));
    if dev_dir.is_none() && mount.source.starts_with("/dev/") {
        // Filesystems with anonymous device numbers (btrfs) still name their block device.
        let name = mount.source.trim_start_matches("/dev/").replace('/', "!");
        dev_dir = resolve_link(host, &host.path(format!("/sys/class/block/{name}")));
    }
    let Some(dev_dir) = dev_dir else {
        evidence.push(format!("{} is not a block device filesystem", mount.fstype));
        return verdict(StorageKind::Virtual, evidence);
    };
    let mut disks = Vec::new();
    walk_to_disks(host, &dev_dir, &mut disks, &mut evidence, 0);
    if disks.is_empty() {
        return verdict(StorageKind::Unknown, evidence);
    }
    let mut kinds = Vec::new();
    let mut probed = Vec::new();
    // Blocks of files under the path, on the filesystem's own device, when one disk holds it:
    // on a freshly formatted disk, random blocks are almost all unwritten.
    let hidden = disks.iter().any(|d| disk_info(d).kind().hides_backing());
    let written = match (&probes, dev_dir.file_name()) {
        (Some(p), Some(name)) if hidden && disks.len() == 1 && p.probing == Probing::Measure => {
            let under = if host.path(path).exists() { host.path(path) } else { host.path(&mount.point) };
            probe::written_under(&under, format!("/dev/{}", name.to_string_lossy()))
        }
        _ => None,
    };
    let mut cache = probes;
    for disk in &disks {
        let info = disk_info(disk);
        evidence.push(info.describe());
        kinds.push(info.kind());
        if let Some(probes) = cache.as_deref_mut()
            && info.kind().hides_backing()
        {
            probed.push((info.name.clone(), probes.of(host, &info.name, written.as_ref())));
        }
    }
    kinds.sort();
    kinds.dedup();
    let overall = if kinds.len() == 1 {
        kinds[0]
    } else if kinds.contains(&StorageKind::Rotational) {
        StorageKind::Rotational
    } else {
        StorageKind::Mixed
    };
    StorageVerdict { probes: probed, ..verdict(overall, evidence) }
}

/// The read latency of each disk that holds `path` (the watchdog's periodic measurement), by
/// the probe's own bounds: never a rotational or a busy disk. One disk holding the path is
/// read at blocks of files under it. Disks named in `done` are left out.
pub fn latency(host: &Host, path: &Path, done: &[String]) -> Vec<(String, Outcome)> {
    let Some(mountinfo) = host.read_opt("/proc/self/mountinfo") else { return Vec::new() };
    let (Some(mount), _) = mount_of(&mountinfo, path) else { return Vec::new() };
    let Some(dev_dir) = resolve_link(host, &host.path(format!("/sys/dev/block/{}", mount.dev))) else {
        return Vec::new();
    };
    let mut disks = Vec::new();
    walk_to_disks(host, &dev_dir, &mut disks, &mut Vec::new(), 0);
    let written = match dev_dir.file_name() {
        Some(name) if disks.len() == 1 => {
            let under = if host.path(path).exists() { host.path(path) } else { host.path(&mount.point) };
            probe::written_under(&under, format!("/dev/{}", name.to_string_lossy()))
        }
        _ => None,
    };
    disks
        .iter()
        .map(|d| disk_info(d))
        .filter(|info| !done.contains(&info.name))
        .map(|info| {
            let rotational = info.rotational == Some(true) && !info.kind().hides_backing();
            let outcome =
                probe::run(host, &info.name, rotational, written.as_ref(), |f| f.samples >= probe::MIN_SAMPLES);
            (info.name, outcome)
        })
        .collect()
}

pub struct Mount {
    pub point: String,
    pub dev: String,
    pub fstype: String,
    pub source: String,
}

/// The mount holding `path` (the longest mount-point prefix in a mountinfo table), and how
/// many malformed lines were skipped on the way: one bad line does not lose the table.
pub fn mount_of(mountinfo: &str, path: &Path) -> (Option<Mount>, usize) {
    let mut best: Option<Mount> = None;
    let mut skipped = 0;
    for line in mountinfo.lines().filter(|l| !l.trim().is_empty()) {
        let Some(mount) = parse_mount(line) else {
            skipped += 1;
            continue;
        };
        if path.starts_with(&mount.point) && best.as_ref().is_none_or(|b| mount.point.len() >= b.point.len()) {
            best = Some(mount);
        }
    }
    (best, skipped)
}

/// One mountinfo line (proc(5)): `ID PARENT MAJ:MIN ROOT POINT OPTS [TAGS...] - FSTYPE SOURCE SUPER`.
fn parse_mount(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let f: Vec<&str> = left.split(' ').collect();
    let r: Vec<&str> = right.split(' ').collect();
    let (dev, point, fstype, source) = (f.get(2)?, f.get(4)?, r.first()?, r.get(1)?);
    if f.len() < 6 || !dev.contains(':') || !point.starts_with('/') {
        return None;
    }
    Some(Mount { point: unescape(point)?, dev: dev.to_string(), fstype: unescape(fstype)?, source: unescape(source)? })
}

/// Decodes the kernel's octal escapes (`\\040` space, `\\011` tab, `\\012` newline, `\\134`
/// backslash, and any other `\\ooo`); `None` for a malformed escape.
fn unescape(field: &str) -> Option<String> {
    if !field.contains('\\') {
        return Some(field.to_string());
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let octal = bytes.get(i + 1..i + 4)?;
            if !octal.iter().all(|b| (b'0'..=b'7').contains(b)) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(octal).ok()?, 8).ok()?);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Follows a sysfs symlink to the device directory it names, inside the root.
fn resolve_link(host: &Host, link: &Path) -> Option<PathBuf> {
    host.resolve(link)
}

fn walk_to_disks(host: &Host, dir: &Path, disks: &mut Vec<PathBuf>, evidence: &mut Vec<String>, depth: u8) {
    let name = file_name(dir);
    if depth > 8 {
        evidence.push(format!("stopped at {name}: device stack too deep"));
        return;
    }
    let slaves: Vec<PathBuf> = std::fs::read_dir(dir.join("slaves"))
        .map(|entries| entries.filter_map(|e| e.ok()).filter_map(|e| resolve_link(host, &e.path())).collect())
        .unwrap_or_default();
    if !slaves.is_empty() {
        let layer = if let Ok(dm) = crate::fsutil::read_text(dir.join("dm/name")) {
            format!("device-mapper {}", dm.trim())
        } else if let Ok(level) = crate::fsutil::read_text(dir.join("md/level")) {
            format!("md {}", level.trim())
        } else {
            "stacked device".into()
        };
        let names: Vec<String> = slaves.iter().map(|s| file_name(s)).collect();
        evidence.push(format!("{name} is {layer} over {}", names.join(", ")));
        for slave in slaves {
            walk_to_disks(host, &slave, disks, evidence, depth + 1);
        }
    } else if dir.join("partition").exists() {
        let Some(parent) = dir.parent() else { return };
        evidence.push(format!("{name} is a partition of {}", file_name(parent)));
        walk_to_disks(host, parent, disks, evidence, depth + 1);
    } else if !disks.contains(&dir.to_path_buf()) {
        disks.push(dir.to_path_buf());
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

struct DiskInfo {
    name: String,
    transport: &'static str,
    model: Option<String>,
    rotational: Option<bool>,
    scheduler: Option<String>,
}

impl DiskInfo {
    fn kind(&self) -> StorageKind {
        match self.transport {
            "nvme" => StorageKind::Nvme,
            // virtio reports rotational=1 whatever backs it; the flag means nothing there.
            "virtio" | "virtio-scsi" => StorageKind::Virtio,
            "xen" => StorageKind::Xen,
            _ if self.rotational == Some(true) => StorageKind::Rotational,
            "sata" | "scsi" | "mmc" | "usb" => StorageKind::Ssd,
            _ => StorageKind::Unknown,
        }
    }

    fn describe(&self) -> String {
        let rot = match self.rotational {
            _ if self.kind() == StorageKind::Virtio => "backing not visible from inside the guest",
            Some(true) => "rotational",
            Some(false) => "non-rotational",
            None => "rotational unknown",
        };
        format!(
            "disk {}: transport {}, model {}, {rot}, scheduler {}",
            self.name,
            self.transport,
            self.model.as_deref().unwrap_or("unknown"),
            self.scheduler.as_deref().unwrap_or("unknown"),
        )
    }
}

fn disk_info(dir: &Path) -> DiskInfo {
    let read = |rel: &str| crate::fsutil::read_text(dir.join(rel)).ok().map(|s| s.trim().to_string());
    let name = file_name(dir);
    let path = dir.to_string_lossy();
    let transport = if name.starts_with("nvme") {
        "nvme"
    } else if name.starts_with("vd") {
        "virtio"
    } else if name.starts_with("xvd") {
        "xen"
    } else if name.starts_with("mmcblk") {
        "mmc"
    } else if name.starts_with("sd") && path.contains("/virtio") {
        "virtio-scsi"
    } else if name.starts_with("sd") && path.contains("/usb") {
        "usb"
    } else if name.starts_with("sd") && path.contains("/ata") {
        "sata"
    } else if name.starts_with("sd") {
        "scsi"
    } else {
        "other"
    };
    let scheduler = read("queue/scheduler").map(|s| {
        s.split_whitespace().find(|w| w.starts_with('[')).map_or(s.clone(), |w| w.trim_matches(['[', ']']).to_string())
    });
    DiskInfo {
        name,
        transport,
        model: read("device/model").filter(|m| !m.is_empty()),
        rotational: read("queue/rotational").map(|r| r == "1"),
        scheduler,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "22 1 259:2 / / rw - ext4 /dev/nvme0n1p2 rw\n\
        30 22 0:40 / /var/lib/docker rw - btrfs /dev/vdb rw\n\
        31 22 0:41 / /var/lib/docker/tmp rw - tmpfs tmpfs rw\n";

    #[test]
    fn longest_mount_prefix_wins() {
        assert_eq!(mount_of(MOUNTINFO, Path::new("/etc")).0.map(|m| m.dev), Some("259:2".into()));
        assert_eq!(
            mount_of(MOUNTINFO, Path::new("/var/lib/docker/overlay2")).0.map(|m| m.source),
            Some("/dev/vdb".into())
        );
        assert_eq!(mount_of(MOUNTINFO, Path::new("/var/lib/dockerx")).0.map(|m| m.point), Some("/".into()));
    }

    #[test]
    fn a_malformed_line_is_skipped_and_every_octal_escape_decoded() {
        let table = "22 1 259:2 / / rw - ext4 /dev/nvme0n1p2 rw\n\
            garbage without a separator\n\
            40 22 0:50 / /srv/with\\040space\\011tab\\134x rw shared:1 - ext4 /dev/vdc rw\n\
            41 22 0:51 / /srv/bad\\04 rw - ext4 /dev/vdd rw\n";
        let (mount, skipped) = mount_of(table, Path::new("/srv/with space\ttab\\x/data"));
        assert_eq!(skipped, 2, "the separator-less line and the broken escape");
        assert_eq!(mount.map(|m| m.source), Some("/dev/vdc".into()));
        assert_eq!(mount_of(table, Path::new("/etc")).0.map(|m| m.dev), Some("259:2".into()), "the table is kept");
    }

    #[test]
    fn dmi_names_follow_systemd() {
        assert_eq!(dmi_vendor("QEMU"), Some(Hypervisor::Qemu));
        assert_eq!(dmi_vendor("KVM"), Some(Hypervisor::Kvm));
        assert_eq!(dmi_vendor("Dell Inc."), None);
    }
}
