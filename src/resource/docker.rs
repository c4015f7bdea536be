//! The `docker` resource: the keys of `/etc/docker/daemon.json` the profile owns, written
//! atomically; Docker reloaded or restarted only as far as a change needs (`reload`), what it
//! runs verified through the Engine API, and the previous file restored when Docker does not
//! come back right or refuses the new one.

mod daemon_json;
mod data_root;
mod reload;

pub use daemon_json::{merge, parse_daemon_json, render, rewrite};

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use serde_json::{Map, Value};

use super::{Finding, Plan, Resource, Status};
use crate::engine_api::{Engine, EngineFacts, SwarmState};
use crate::fsutil;
use crate::host::{Host, Shared};
use crate::profile::Docker as Wanted;
use reload::Takes;

const DAEMON_JSON: &str = "/etc/docker/daemon.json";
/// dockerd's data root when daemon.json names none.
const DEFAULT_DATA_ROOT: &str = "/var/lib/docker";

#[derive(Debug)]
pub enum FileState {
    Missing,
    Present { text: String, map: Map<String, Value> },
    Invalid(String),
}

#[derive(Debug)]
pub struct Observed {
    path: PathBuf,
    file: FileState,
    /// The Engine API socket, or why the configured endpoint cannot be used.
    socket: Result<PathBuf, String>,
    engine: Result<EngineFacts, String>,
    /// Only when the engine does not answer: its data root (under the host root) and what
    /// each storage driver holds there.
    on_disk: Option<(PathBuf, Result<data_root::ByDriver, String>)>,
    /// Flags of dockerd's `ExecStart` (from the unit files), e.g. `--storage-driver`.
    exec_flags: Vec<String>,
    /// A restart that an earlier, interrupted apply still owed.
    restart_pending: bool,
    /// Preparing an image offline (`--root`): its Docker is not running here; the file is
    /// written and the engine judged at the first boot.
    offline: bool,
}

#[derive(Debug)]
pub enum Action {
    Write(String),
    Reload,
    Restart,
}

impl Action {
    /// What this action asks of the running engine.
    fn takes(&self) -> Takes {
        match self {
            Action::Write(_) => Takes::Nothing,
            Action::Reload => Takes::Reload,
            Action::Restart => Takes::Restart,
        }
    }
}

pub struct Docker<'p> {
    want: &'p Wanted,
    swarm_init: bool,
}

impl<'p> Docker<'p> {
    pub fn new(want: &'p Wanted, swarm_init: bool) -> Self {
        Docker { want, swarm_init }
    }
}

/// The data root daemon.json names (`data-root`, or the older `graph`), else dockerd's default.
fn data_root_of(existing: &Map<String, Value>) -> &str {
    ["data-root", "graph"]
        .iter()
        .find_map(|k| existing.get(*k).and_then(Value::as_str).filter(|p| p.starts_with('/')))
        .unwrap_or(DEFAULT_DATA_ROOT)
}

/// The refusal of a driver switch judged from the data root on disk, for when the engine
/// cannot be asked: dockerd keeps the driver daemon.json names, and with none it picks a
/// driver that already holds data, so data under any other driver is at risk. An unreadable
/// data root is a refusal that could not be verified (unknown), not evidence of an empty one.
fn offline_switch_refusal(
    want: &str,
    configured: Option<&str>,
    root: &Path,
    held: &Result<data_root::ByDriver, String>,
) -> Option<(Status, String)> {
    if configured == Some(want) {
        return None;
    }
    let held = match held {
        Ok(h) => h,
        Err(e) => {
            return Some((
                Status::Unknown,
                format!(
                    "Docker is not answering and its data root cannot be read ({e}), so vakt cannot tell whether switching to {want} would hide images or containers; start Docker, or set allow_driver_switch = true to do it anyway"
                ),
            ));
        }
    };
    let at_risk: Vec<String> = held
        .iter()
        .filter(|(driver, _)| driver.as_str() != want && configured.is_none_or(|c| c == driver.as_str()))
        .map(|(driver, h)| {
            let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
            format!("{} and {} on {driver}", plural(h.images, "image"), plural(h.containers, "container"))
        })
        .collect();
    (!at_risk.is_empty()).then(|| {
        let said = format!(
            "Docker is not answering and its data root {} holds {}; switching to {want} would hide them. Start Docker, or set allow_driver_switch = true to do it anyway",
            root.display(),
            at_risk.join(", ")
        );
        (Status::Failed, said)
    })
}

/// The effective `ExecStart` flags of docker.service from its unit file and drop-ins.
fn exec_flags(host: &Host) -> Vec<String> {
    let mut files: Vec<PathBuf> = [
        "/lib/systemd/system/docker.service",
        "/usr/lib/systemd/system/docker.service",
        "/etc/systemd/system/docker.service",
    ]
    .iter()
    .map(|p| host.path(p))
    .filter(|p| p.exists())
    .collect();
    if let Ok(d) = std::fs::read_dir(host.path("/etc/systemd/system/docker.service.d")) {
        let mut dropins: Vec<PathBuf> =
            d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "conf")).collect();
        dropins.sort();
        files.extend(dropins);
    }
    let mut exec = String::new();
    for f in files {
        for line in crate::fsutil::read_text(f).unwrap_or_default().lines() {
            if let Some(v) = line.trim().strip_prefix("ExecStart=") {
                // An empty ExecStart= resets the list, as systemd does.
                exec = v.to_string();
            }
        }
    }
    exec.split_whitespace()
        .filter(|w| w.starts_with('-'))
        .map(|w| w.split('=').next().unwrap_or(w).to_string())
        .collect()
}

/// The dockerd flags that set the same thing as a daemon.json key.
fn flags_for(key: &str) -> Vec<String> {
    let mut flags = vec![format!("--{key}")];
    match key {
        "storage-driver" => flags.push("-s".into()),
        "hosts" => flags.extend(["-H".into(), "--host".into()]),
        "debug" => flags.push("-D".into()),
        "group" => flags.push("-G".into()),
        "data-root" => flags.push("-g".into()),
        k if k.ends_with('s') => flags.push(format!("--{}", k.trim_end_matches('s'))),
        _ => {}
    }
    if key == "insecure-registries" {
        flags.push("--insecure-registry".into());
    }
    flags
}

impl Docker<'_> {
    /// What stops any change: a key dockerd also gets as a flag, live-restore under a swarm,
    /// a storage driver switch under existing data, a daemon.json change where Docker cannot be
    /// checked afterwards. Each with its status: failed, or unknown where vakt cannot tell.
    fn guard(
        &self,
        o: &Observed,
        existing: &Map<String, Value>,
        merged: &Map<String, Value>,
        needs_write: bool,
    ) -> Vec<(Status, String)> {
        let shown = o.path.display();
        let mut refusals: Vec<(Status, String)> = Vec::new();
        for key in self.want.daemon.keys() {
            if let Some(flag) = flags_for(key).into_iter().find(|f| o.exec_flags.contains(f)) {
                refusals.push((Status::Failed, format!(
                    "`{key}` is also given as {flag} in docker.service's ExecStart: dockerd refuses to start when both are set; remove the flag (systemctl edit docker) or the key"
                )));
            }
        }
        let in_swarm = o.engine.as_ref().is_ok_and(|f| f.swarm.state == SwarmState::Active);
        if (self.swarm_init || in_swarm) && merged.get("live-restore") == Some(&Value::Bool(true)) {
            // dockerd refuses swarm mode with live-restore (moby/moby#29299); a reload takes it
            // on a node already in a swarm, and the next start fails.
            let why = if self.swarm_init { "the profile inits a swarm" } else { "this node is in a swarm" };
            refusals.push((Status::Failed, format!("{shown} has live-restore = true and {why}: dockerd will not run swarm mode with it; remove live-restore")));
        }
        if let Ok(facts) = &o.engine
            && facts.driver != self.want.storage_driver
            && (facts.images > 0 || facts.containers > 0)
            && !self.want.allow_driver_switch
        {
            refusals.push((Status::Failed, format!(
                "Docker runs on {} with {} images and {} containers; switching to {} would hide them. Set allow_driver_switch = true to do it anyway",
                facts.driver, facts.images, facts.containers, self.want.storage_driver
            )));
        }
        if let (Err(_), Some((root, held))) = (&o.engine, &o.on_disk)
            && !self.want.allow_driver_switch
            && let Some(refusal) = offline_switch_refusal(
                &self.want.storage_driver,
                existing.get("storage-driver").and_then(Value::as_str),
                root,
                held,
            )
        {
            refusals.push(refusal);
        }
        if let Err(reason) = &o.socket
            && needs_write
            && self.want.restart
            && !o.offline
        {
            refusals.push((Status::Failed, format!(
                "{reason}; vakt changes daemon.json and restarts Docker only where it can check through the Engine API that Docker came back"
            )));
        }
        // Failures first, as the report lists them.
        refusals.sort_by_key(|(status, _)| *status != Status::Failed);
        refusals
    }

    /// What writing daemon.json means here, as each finding states it.
    fn write_change(&self, o: &Observed, takes: Takes) -> String {
        let shown = o.path.display();
        let verb = if matches!(o.file, FileState::Missing) { "create" } else { "write" };
        match takes {
            _ if o.offline => format!("{verb} {shown} (Docker reads it when it starts at the first boot)"),
            _ if o.engine.is_err() => {
                format!(
                    "{verb} {shown} (Docker is not answering; vakt does not start it, it reads the file when it starts)"
                )
            }
            Takes::Restart if self.want.restart => format!("{verb} {shown} and restart docker"),
            Takes::Reload if self.want.restart => format!("{verb} {shown} and reload docker"),
            Takes::Restart => format!("{verb} {shown} (restart docker yourself: restart = false)"),
            Takes::Reload => format!("{verb} {shown} (reload docker yourself: restart = false)"),
            Takes::Nothing => format!("{verb} {shown}"),
        }
    }

    /// One finding per key the profile owns.
    fn plan_keys(&self, existing: &Map<String, Value>, change: &str, plan: &mut Plan<Action>) {
        for (key, value) in &self.want.daemon {
            let id = format!("docker.daemon.{key}");
            let title = format!("daemon.json {key} = {value}");
            match existing.get(key) {
                Some(v) if v == value => plan.pass(Finding::ok(id, title)),
                Some(v) => plan.pass(Finding::drift(id, title, change).with_evidence(format!("now {v}"))),
                None => plan.pass(Finding::drift(id, title, change).with_evidence("not set")),
            }
        }
    }

    /// The rewrite of daemon.json (the operator's keys kept), its diff on the first drift.
    fn plan_write(&self, o: &Observed, existing: &Map<String, Value>, plan: &mut Plan<Action>) {
        let shown = o.path.display();
        let old = match &o.file {
            FileState::Present { text, .. } => text.clone(),
            _ => String::new(),
        };
        let rendered = rewrite(&old, existing, &self.want.daemon);
        let diff = similar::TextDiff::from_lines(&old, &rendered)
            .unified_diff()
            .header(&format!("{shown}"), &format!("{shown} (vakt)"))
            .to_string();
        if let Some(first) = plan.findings.iter_mut().find(|f| f.status == Status::Drift) {
            first.diff = Some(diff);
        }
        plan.actions.push(Action::Write(rendered));
    }

    /// The running engine's driver, and the restart that brings it to the file's; where the
    /// new file takes no reload or restart of its own, the owned keys a reload changes as the
    /// engine runs them.
    fn plan_engine(
        &self,
        o: &Observed,
        needs_write: bool,
        takes: Takes,
        write_change: String,
        plan: &mut Plan<Action>,
    ) {
        let id = "docker.engine.driver";
        let title = format!("Docker runs on {}", self.want.storage_driver);
        match &o.engine {
            _ if o.offline => {
                plan.pass(Finding::deferred(id, title, "start Docker and check its driver through the Engine API"))
            }
            Err(reason) if needs_write && self.want.restart => plan.pass(
                Finding::unknown(id, title, reason.clone())
                    .with_evidence("vakt neither starts nor restarts a Docker that is not answering"),
            ),
            Err(reason) => plan.pass(Finding::unknown(id, title, reason.clone())),
            Ok(facts) if facts.driver == self.want.storage_driver => {
                plan.pass(Finding::ok(id, title));
                if o.restart_pending && self.want.restart && !needs_write {
                    let f = Finding::drift("docker.restart", "Docker runs the daemon.json on disk", "restart docker")
                        .with_evidence("an earlier restart was interrupted");
                    plan.fix(f, Action::Restart);
                } else if takes == Takes::Nothing
                    && let Some(differs) = reload::differs(&self.want.daemon, &facts.reloadable)
                {
                    let title = "Docker runs daemon.json's labels, debug and live-restore";
                    match self.want.restart {
                        true => plan.fix(
                            Finding::drift("docker.reload", title, "reload docker").with_evidence(differs),
                            Action::Reload,
                        ),
                        false => plan.pass(
                            Finding::drift("docker.reload", title, "reload docker yourself (restart = false)")
                                .with_evidence(differs),
                        ),
                    }
                }
            }
            Ok(facts) if needs_write && self.want.restart => {
                plan.pass(
                    Finding::drift(id, title, write_change)
                        .with_evidence(format!("engine {} runs on {}", facts.version, facts.driver)),
                );
            }
            Ok(facts) if self.want.restart => {
                let f = Finding::drift(id, title, "restart docker")
                    .with_evidence(format!("engine runs on {}", facts.driver));
                plan.fix(f, Action::Restart);
            }
            Ok(facts) => plan.pass(
                Finding::drift(id, title, "restart docker yourself (restart = false)")
                    .with_evidence(format!("engine runs on {}", facts.driver)),
            ),
        }
    }
}

impl Resource for Docker<'_> {
    type Observed = Observed;
    type Action = Action;

    fn id(&self) -> &'static str {
        "docker"
    }

    fn shared_reads(&self, host: &Host) -> Vec<Shared> {
        host.engine_read(self.want.host.as_deref()).into_iter().collect()
    }

    fn unknown_fails_apply(&self) -> bool {
        true
    }

    fn observe(&self, host: &Host) -> anyhow::Result<Observed> {
        let path = host.path(DAEMON_JSON);
        let file = match crate::fsutil::read_text(&path) {
            Ok(text) => match parse_daemon_json(&text) {
                Ok(map) => FileState::Present { text, map },
                Err(e) => FileState::Invalid(e),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileState::Missing,
            Err(e) => return Err(anyhow!("failed to read {}: {e}", path.display())),
        };
        let offline = !host.is_live();
        let socket = host.docker_socket(self.want.host.as_deref());
        let engine = if offline {
            Err("an image prepared offline: its Docker runs at the first boot".to_string())
        } else {
            socket.clone().and_then(|s| Engine::observe(&s, &host.engine_info))
        };
        let on_disk = match (&engine, &file) {
            (Err(_), FileState::Present { map, .. }) => Some(data_root_of(map)),
            (Err(_), FileState::Missing) => Some(DEFAULT_DATA_ROOT),
            _ => None,
        }
        .map(|root| {
            let root = host.path(root);
            let held = data_root::scan(&root).map_err(|e| e.to_string());
            (root, held)
        });
        let restart_pending = fsutil::Pending::new(host.root(), "docker-restart").is_set();
        let path = host.file_path(DAEMON_JSON);
        Ok(Observed { path, file, socket, engine, on_disk, exec_flags: exec_flags(host), restart_pending, offline })
    }

    fn plan(&self, o: &Observed) -> Plan<Action> {
        let mut plan = Plan::default();
        let existing = match &o.file {
            FileState::Invalid(e) => {
                let msg = format!("{}: {e}; fix or remove the file, vakt will not overwrite it", o.path.display());
                plan.pass(Finding::new("docker.daemon-json", msg, Status::Failed));
                return plan;
            }
            FileState::Missing => Map::new(),
            FileState::Present { map, .. } => map.clone(),
        };
        let merged = merge(&existing, &self.want.daemon);
        let needs_write = merged != existing || matches!(o.file, FileState::Missing);
        let guard = self.guard(o, &existing, &merged, needs_write);
        if !guard.is_empty() {
            for (status, why) in guard {
                plan.pass(Finding::new("docker.guard", why, status));
            }
            return plan;
        }
        let takes = match &o.engine {
            _ if o.offline || !needs_write => Takes::Nothing,
            // A restart an interrupted apply still owes comes with the new file.
            Ok(_) if o.restart_pending => Takes::Restart,
            // A driver to switch: the file may already name it, the engine still runs another.
            Ok(facts) if facts.driver != self.want.storage_driver => Takes::Restart,
            Ok(facts) => reload::takes(&existing, &merged, &facts.driver),
            Err(_) => Takes::Nothing,
        };
        let write_change = self.write_change(o, takes);
        self.plan_keys(&existing, &write_change, &mut plan);
        if needs_write {
            self.plan_write(o, &existing, &mut plan);
            match takes {
                _ if !self.want.restart => {}
                Takes::Restart => plan.actions.push(Action::Restart),
                Takes::Reload => plan.actions.push(Action::Reload),
                Takes::Nothing => {}
            }
        }
        self.plan_engine(o, needs_write, takes, write_change, &mut plan);
        plan
    }

    fn apply(&self, host: &Host, o: &Observed, actions: Vec<Action>) -> anyhow::Result<()> {
        let pending = fsutil::Pending::new(host.root(), "docker-restart");
        let takes = actions.iter().map(Action::takes).max().unwrap_or(Takes::Nothing);
        let mut wrote = false;
        for action in actions {
            if let Action::Write(content) = action {
                if let Some(dir) = o.path.parent() {
                    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
                }
                // A restart is owed until it is done: a rerun after a crash restarts Docker.
                // A reload needs no marker: the file then differs from what the engine runs,
                // and the next run sees that (docker.reload).
                if takes == Takes::Restart {
                    pending.set()?;
                }
                fsutil::write_atomic(&o.path, content.as_bytes(), true)?;
                wrote = true;
            }
        }
        let previous = match &o.file {
            FileState::Present { text, .. } => Some(text.as_str()),
            _ => None,
        };
        let socket = match takes {
            Takes::Nothing => return Ok(()),
            _ => o.socket.clone().map_err(anyhow::Error::msg)?,
        };
        let (failure, restored) = match takes {
            Takes::Restart => {
                crate::failpoint::hit("docker-restart");
                let Err(failure) = restart_and_verify(host, &socket, self.want) else { return pending.clear() };
                let restored =
                    restore(host, &o.path, previous, &socket, self.want, takes).and_then(|()| pending.clear());
                (failure, restored.map(|()| "the previous daemon.json was restored and Docker restarted"))
            }
            _ => {
                crate::failpoint::hit("docker-reload");
                let Err(failure) = reload_and_verify(host, &socket, &self.want.daemon) else { return Ok(()) };
                if !wrote {
                    bail!("{failure:#}; nothing was written");
                }
                let restored = restore(host, &o.path, previous, &socket, self.want, takes);
                (failure, restored.map(|()| "the previous daemon.json was restored and Docker told to reload it"))
            }
        };
        match restored {
            Ok(how) => bail!("{failure:#}; {how}"),
            Err(e) => bail!("{failure:#}; restoring the previous daemon.json failed too: {e:#}"),
        }
    }
}

/// How long a reloaded engine is given to show the new values: dockerd applies them as soon
/// as it has the signal, well within this.
const RELOAD_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

/// The unit's own way to tell a service to re-read its configuration: docker.service's
/// ExecReload sends dockerd SIGHUP.
fn reload_docker(host: &Host) -> anyhow::Result<()> {
    host.runner.run_ok(&["systemctl", "reload", "docker"], std::time::Duration::from_secs(30)).map(|_| ())
}

/// Reloads Docker and waits until `/info` shows the owned reloadable values. dockerd reports a
/// refused file only in its log and keeps its old values, so not showing them in time is the
/// refusal.
fn reload_and_verify(host: &Host, socket: &Path, owned: &Map<String, Value>) -> anyhow::Result<()> {
    reload_docker(host)?;
    let engine = Engine::connect(socket)?;
    let started = std::time::Instant::now();
    loop {
        match reload::differs(owned, &engine.facts()?.reloadable) {
            None => return Ok(()),
            Some(differs) if started.elapsed() >= RELOAD_BOUND => bail!(
                "Docker did not take the new daemon.json on reload ({differs} {}s after the signal); dockerd logs why (journalctl -u docker)",
                RELOAD_BOUND.as_secs()
            ),
            Some(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

fn restart_docker(host: &Host) -> anyhow::Result<()> {
    let out = host.runner.run(&["systemctl", "restart", "docker"], &[], std::time::Duration::from_secs(120))?;
    if out.success {
        return Ok(());
    }
    let mut said = out.stderr.trim().to_string();
    if host.has_systemd()
        && let Ok(log) = host.runner.run(
            &["journalctl", "-u", "docker", "-n", "15", "--no-pager", "-o", "cat"],
            &[],
            std::time::Duration::from_secs(10),
        )
    {
        said = format!("{said}\n{}", log.stdout.trim());
    }
    Err(anyhow!("systemctl restart docker failed: {said}"))
}

fn restart_and_verify(host: &Host, socket: &Path, want: &Wanted) -> anyhow::Result<()> {
    restart_docker(host)?;
    let tty = std::io::stderr().is_terminal();
    let facts = Engine::wait_ready(socket, want.restart_timeout, || {
        if tty {
            host.runner.above_live_line(|| eprint!("."));
        }
    })?;
    if facts.driver != want.storage_driver {
        bail!("Docker came back on storage driver {} instead of {}", facts.driver, want.storage_driver);
    }
    Ok(())
}

/// The previous file back, and Docker made to run it the way it was made to run the new one.
fn restore(
    host: &Host,
    path: &Path,
    previous: Option<&str>,
    socket: &Path,
    want: &Wanted,
    takes: Takes,
) -> anyhow::Result<()> {
    match previous {
        Some(text) => fsutil::write_atomic(path, text.as_bytes(), false)?,
        None => std::fs::remove_file(path).with_context(|| format!("failed to remove {}", path.display()))?,
    }
    if takes == Takes::Reload {
        return reload_docker(host);
    }
    // A failed restart leaves docker.service failed, and once systemd's own restarts of it
    // have used up its start limit, systemd refuses every start until the failure is reset:
    // the restoring restart would be refused. A failure here is only logged; the
    // restart that follows says what is wrong.
    if let Err(e) = host.runner.run_ok(&["systemctl", "reset-failed", "docker"], std::time::Duration::from_secs(30)) {
        tracing::warn!("{e:#}");
    }
    restart_docker(host)?;
    Engine::wait_ready(socket, want.restart_timeout, || {}).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_map_to_their_keys() {
        assert!(flags_for("storage-driver").contains(&"-s".to_string()));
        assert!(flags_for("hosts").contains(&"-H".to_string()));
        assert!(flags_for("insecure-registries").contains(&"--insecure-registry".to_string()));
        assert!(flags_for("labels").contains(&"--label".to_string()));
    }
}

#[cfg(test)]
mod offline_guard {
    use super::data_root::{ByDriver, Held, UNKNOWN_DRIVER};
    use super::*;

    fn held(entries: &[(&str, usize, usize)]) -> Result<ByDriver, String> {
        Ok(entries
            .iter()
            .map(|(d, images, containers)| (d.to_string(), Held { images: *images, containers: *containers }))
            .collect())
    }

    #[test]
    fn data_under_the_driver_dockerd_would_leave_is_at_risk() {
        let root = Path::new("/var/lib/docker");
        let vfs = held(&[("vfs", 2, 1)]);
        let (status, said) = offline_switch_refusal("overlay2", Some("vfs"), root, &vfs).expect("refused");
        assert_eq!(status, Status::Failed);
        assert!(said.contains("/var/lib/docker holds 2 images and 1 container on vfs"), "{said}");
        // No driver named: dockerd would pick one that holds data.
        assert!(offline_switch_refusal("overlay2", None, root, &vfs).is_some());
        assert!(offline_switch_refusal("overlay2", None, root, &held(&[(UNKNOWN_DRIVER, 0, 1)])).is_some());
        // Already on the wanted driver, or data only under a driver not in use: nothing hides.
        assert_eq!(offline_switch_refusal("overlay2", Some("overlay2"), root, &vfs), None);
        assert_eq!(offline_switch_refusal("overlay2", Some("btrfs"), root, &vfs), None);
        assert_eq!(offline_switch_refusal("overlay2", None, root, &held(&[("overlay2", 3, 3)])), None);
        // An unreadable data root is no evidence of an empty one: could not verify.
        let (status, said) =
            offline_switch_refusal("overlay2", None, root, &Err("permission denied".into())).expect("refused");
        assert_eq!(status, Status::Unknown);
        assert!(said.contains("cannot tell"), "{said}");
    }
}

#[cfg(test)]
mod stopped_engine {
    use super::data_root::{ByDriver, Held};
    use super::*;

    /// A live host whose Docker does not answer, with an operator's daemon.json at `path`
    /// naming no driver and a data root holding overlay2 data.
    fn observed(path: PathBuf) -> Observed {
        let text = "{\"log-level\": \"warn\"}\n".to_string();
        let map = parse_daemon_json(&text).expect("json");
        let held: ByDriver = [("overlay2".to_string(), Held { images: 1, containers: 1 })].into();
        Observed {
            path,
            file: FileState::Present { text, map },
            socket: Ok(PathBuf::from("/var/run/docker.sock")),
            engine: Err("/var/run/docker.sock does not exist".into()),
            on_disk: Some((PathBuf::from("/var/lib/docker"), Ok(held))),
            exec_flags: Vec::new(),
            restart_pending: false,
            offline: false,
        }
    }

    #[test]
    fn a_docker_that_does_not_answer_gets_its_file_and_is_not_started() {
        let want = crate::profile::parse("t", "[docker]\n").expect("valid").docker.expect("docker");
        let dir = tempfile::tempdir().expect("tmp");
        let o = observed(dir.path().join("daemon.json"));
        let plan = Docker::new(&want, false).plan(&o);
        let write = plan.findings.iter().find(|f| f.id == "docker.daemon.storage-driver").expect("drift");
        let change = write.change.as_deref().unwrap_or("");
        assert!(change.contains("vakt does not start it") && !change.contains("restart docker"), "{change}");
        let engine = plan.findings.iter().find(|f| f.id == "docker.engine.driver").expect("engine");
        assert_eq!(engine.status, Status::Unknown);
        assert!(matches!(plan.actions.as_slice(), [Action::Write(_)]), "{:?}", plan.actions);

        let host = Host::new(dir.path());
        Docker::new(&want, false).apply(&host, &o, plan.actions).expect("written");
        assert!(host.runner.commands().is_empty(), "nothing ran: {:?}", host.runner.commands());
        let written = std::fs::read_to_string(dir.path().join("daemon.json")).expect("written");
        assert!(written.contains("\"storage-driver\": \"overlay2\""), "{written}");
        assert!(!fsutil::Pending::new(host.root(), "docker-restart").is_set(), "no restart owed to a stopped Docker");
    }
}

#[cfg(test)]
mod running_engine {
    use super::*;
    use crate::engine_api::{EngineFacts, Reloadable, SwarmFacts, SwarmState};

    /// A live host whose engine runs overlay2 with `labels`, its daemon.json `file`.
    fn observed(file: &str, labels: &[&str]) -> Observed {
        let map = parse_daemon_json(file).expect("json");
        let swarm = SwarmFacts {
            state: SwarmState::Inactive,
            manager: false,
            node_addr: None,
            node_id: None,
            cluster_id: None,
            remote_managers: Vec::new(),
            error: None,
        };
        let reloadable = Reloadable {
            labels: Some(labels.iter().map(|l| l.to_string()).collect()),
            debug: Some(false),
            live_restore: Some(false),
        };
        Observed {
            path: PathBuf::from("/etc/docker/daemon.json"),
            file: FileState::Present { text: file.to_string(), map },
            socket: Ok(PathBuf::from("/var/run/docker.sock")),
            engine: Ok(EngineFacts {
                version: "20.10".into(),
                driver: "overlay2".into(),
                images: 0,
                containers: 0,
                swarm,
                reloadable,
            }),
            on_disk: None,
            exec_flags: Vec::new(),
            restart_pending: false,
            offline: false,
        }
    }

    fn plan(profile: &str, o: &Observed) -> Plan<Action> {
        let want = crate::profile::parse("t", profile).expect("valid").docker.expect("docker");
        Docker::new(&want, false).plan(o)
    }

    #[test]
    fn a_write_that_takes_nothing_still_reloads_labels_the_engine_does_not_run() {
        // Only the driver the engine runs is added to the file; the labels in it are the
        // profile's, the engine runs others.
        let o = observed("{\"labels\": [\"tier=edge\"]}\n", &["tier=old"]);
        let p = plan("[docker.daemon]\nlabels = [\"tier=edge\"]\n", &o);
        assert!(matches!(p.actions.as_slice(), [Action::Write(_), Action::Reload]), "{:?}", p.actions);
        let reload = p.findings.iter().find(|f| f.id == "docker.reload").expect("finding");
        assert_eq!(reload.status, Status::Drift);
    }

    #[test]
    fn an_owed_restart_is_not_replaced_by_a_reload() {
        let mut o = observed("{\"storage-driver\": \"overlay2\"}\n", &[]);
        o.restart_pending = true;
        let p = plan("[docker.daemon]\nlabels = [\"tier=edge\"]\n", &o);
        assert!(matches!(p.actions.as_slice(), [Action::Write(_), Action::Restart]), "{:?}", p.actions);
        o.restart_pending = false;
        let p = plan("[docker.daemon]\nlabels = [\"tier=edge\"]\n", &o);
        assert!(matches!(p.actions.as_slice(), [Action::Write(_), Action::Reload]), "{:?}", p.actions);
    }

    #[test]
    fn live_restore_is_refused_on_a_node_in_a_swarm() {
        let mut o = observed("{\"storage-driver\": \"overlay2\"}\n", &[]);
        if let Ok(facts) = &mut o.engine {
            facts.swarm.state = SwarmState::Active;
        }
        let p = plan("[docker.daemon]\nlive-restore = true\n", &o);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        let guard = p.findings.iter().find(|f| f.id == "docker.guard").expect("refused");
        assert!(guard.title.contains("this node is in a swarm"), "{}", guard.title);
    }
}
