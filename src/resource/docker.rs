//! The `docker` resource: the keys of `/etc/docker/daemon.json` the profile owns, written
//! atomically, Docker restarted only on a change, the driver verified through the Engine API,
//! and the previous file restored when Docker does not come back right.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use serde_json::{Map, Value};

use super::{Finding, Plan, Resource, Status};
use crate::engine_api::{Engine, EngineFacts};
use crate::fsutil;
use crate::host::Host;
use crate::profile::Docker as Wanted;

const DAEMON_JSON: &str = "/etc/docker/daemon.json";

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
    engine: Result<EngineFacts, String>,
    /// Flags of dockerd's `ExecStart` (from the unit files), e.g. `--storage-driver`.
    exec_flags: Vec<String>,
    /// A restart that an earlier, interrupted apply still owed.
    restart_pending: bool,
}

#[derive(Debug)]
pub enum Action {
    Write(String),
    Restart,
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

/// Parses daemon.json text; empty counts as `{}`. The error says where the JSON is broken.
pub fn parse_daemon_json(text: &str) -> Result<Map<String, Value>, String> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the top level is not a JSON object".into()),
        Err(e) => Err(format!("invalid JSON at line {} column {}: {e}", e.line(), e.column())),
    }
}

/// The existing keys with the owned ones set: unowned keys keep their values.
pub fn merge(existing: &Map<String, Value>, owned: &Map<String, Value>) -> Map<String, Value> {
    let mut merged = existing.clone();
    for (k, v) in owned {
        merged.insert(k.clone(), v.clone());
    }
    merged
}

pub fn render(map: &Map<String, Value>) -> String {
    serde_json::to_string_pretty(map).map(|s| s + "\n").unwrap_or_default()
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
        for line in std::fs::read_to_string(f).unwrap_or_default().lines() {
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

impl Resource for Docker<'_> {
    type Observed = Observed;
    type Action = Action;

    fn id(&self) -> &'static str {
        "docker"
    }

    fn unknown_fails_apply(&self) -> bool {
        true
    }

    fn observe(&self, host: &Host) -> anyhow::Result<Observed> {
        let path = host.path(DAEMON_JSON);
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => match parse_daemon_json(&text) {
                Ok(map) => FileState::Present { text, map },
                Err(e) => FileState::Invalid(e),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileState::Missing,
            Err(e) => return Err(anyhow!("failed to read {}: {e}", path.display())),
        };
        let engine = host.docker_socket(self.want.host.as_deref()).and_then(|s| Engine::observe(&s));
        let restart_pending = fsutil::Pending::new(host, "docker-restart").is_set();
        Ok(Observed { path, file, engine, exec_flags: exec_flags(host), restart_pending })
    }

    fn plan(&self, o: &Observed) -> Plan<Action> {
        let mut plan = Plan::default();
        let shown = o.path.display();
        let existing = match &o.file {
            FileState::Invalid(e) => {
                let msg = format!("{shown}: {e}; fix or remove the file, vakt will not overwrite it");
                plan.pass(Finding::new("docker.daemon-json", msg, Status::Failed));
                return plan;
            }
            FileState::Missing => Map::new(),
            FileState::Present { map, .. } => map.clone(),
        };
        let merged = merge(&existing, &self.want.daemon);
        let rendered = render(&merged);

        let mut refusals = Vec::new();
        for key in self.want.daemon.keys() {
            if let Some(flag) = flags_for(key).into_iter().find(|f| o.exec_flags.contains(f)) {
                refusals.push(format!(
                    "`{key}` is also given as {flag} in docker.service's ExecStart: dockerd refuses to start when both are set; remove the flag (systemctl edit docker) or the key"
                ));
            }
        }
        if self.swarm_init && merged.get("live-restore") == Some(&Value::Bool(true)) {
            // dockerd refuses swarm mode with live-restore (moby/moby#29299).
            refusals.push(format!("{shown} has live-restore = true and the profile inits a swarm: dockerd will not run swarm mode with it; remove live-restore"));
        }
        let engine_driver = o.engine.as_ref().ok().map(|f| f.driver.clone());
        if let Ok(facts) = &o.engine
            && facts.driver != self.want.storage_driver
            && (facts.images > 0 || facts.containers > 0)
            && !self.want.allow_driver_switch
        {
            refusals.push(format!(
                "Docker runs on {} with {} images and {} containers; switching to {} would hide them. Set allow_driver_switch = true to do it anyway",
                facts.driver, facts.images, facts.containers, self.want.storage_driver
            ));
        }
        if !refusals.is_empty() {
            for r in refusals {
                plan.pass(Finding::new("docker.guard", r, Status::Failed));
            }
            return plan;
        }

        let write_change = match (&o.file, self.want.restart) {
            (FileState::Missing, true) => format!("create {shown} and restart docker"),
            (FileState::Missing, false) => format!("create {shown}"),
            (_, true) => format!("write {shown} and restart docker"),
            (_, false) => format!("write {shown}"),
        };
        let needs_write = merged != existing || matches!(o.file, FileState::Missing);
        for (key, value) in &self.want.daemon {
            let id = format!("docker.daemon.{key}");
            let title = format!("daemon.json {key} = {value}");
            match existing.get(key) {
                Some(v) if v == value => plan.pass(Finding::ok(id, title)),
                Some(v) => plan.pass(Finding::drift(id, title, write_change.clone()).with_evidence(format!("now {v}"))),
                None => plan.pass(Finding::drift(id, title, write_change.clone()).with_evidence("not set")),
            }
        }
        if needs_write {
            let old = match &o.file {
                FileState::Present { text, .. } => text.clone(),
                _ => String::new(),
            };
            let diff = similar::TextDiff::from_lines(&old, &rendered)
                .unified_diff()
                .header(&format!("{shown}"), &format!("{shown} (vakt)"))
                .to_string();
            if let Some(first) = plan.findings.iter_mut().find(|f| f.status == Status::Drift) {
                first.diff = Some(diff);
            }
            plan.actions.push(Action::Write(rendered));
        }

        let id = "docker.engine.driver";
        let title = format!("Docker runs on {}", self.want.storage_driver);
        match (&o.engine, engine_driver) {
            (Err(reason), _) => plan.pass(Finding::unknown(id, title, reason.clone())),
            (Ok(_), Some(d)) if d == self.want.storage_driver => {
                plan.pass(Finding::ok(id, title));
                if o.restart_pending && self.want.restart && !needs_write {
                    let f = Finding::drift("docker.restart", "Docker runs the daemon.json on disk", "restart docker")
                        .with_evidence("an earlier restart was interrupted");
                    plan.fix(f, Action::Restart);
                }
            }
            (Ok(facts), _) if needs_write && self.want.restart => {
                plan.pass(
                    Finding::drift(id, title, write_change)
                        .with_evidence(format!("engine {} runs on {}", facts.version, facts.driver)),
                );
            }
            (Ok(facts), _) if self.want.restart => {
                let f = Finding::drift(id, title, "restart docker")
                    .with_evidence(format!("engine runs on {}", facts.driver));
                plan.fix(f, Action::Restart);
            }
            (Ok(facts), _) => plan.pass(
                Finding::drift(id, title, "restart docker yourself (restart = false)")
                    .with_evidence(format!("engine runs on {}", facts.driver)),
            ),
        }
        plan
    }

    fn apply(&self, host: &Host, o: &Observed, actions: Vec<Action>) -> anyhow::Result<()> {
        let pending = fsutil::Pending::new(host, "docker-restart");
        let mut restart = false;
        for action in actions {
            match action {
                Action::Write(content) => {
                    if let Some(dir) = o.path.parent() {
                        std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
                    }
                    if self.want.restart {
                        pending.set()?;
                    }
                    fsutil::write_atomic(&o.path, content.as_bytes(), true)?;
                    restart |= self.want.restart;
                }
                Action::Restart => restart = true,
            }
        }
        if !restart {
            return Ok(());
        }
        let socket = host.docker_socket(self.want.host.as_deref()).map_err(anyhow::Error::msg)?;
        match restart_and_verify(host, &socket, self.want) {
            Ok(()) => pending.clear(),
            Err(failure) => {
                let previous = match &o.file {
                    FileState::Present { text, .. } => Some(text.as_str()),
                    _ => None,
                };
                let restored = restore(host, &o.path, previous, &socket, self.want).and_then(|()| pending.clear());
                let how = match restored {
                    Ok(()) => "the previous daemon.json was restored and Docker restarted".to_string(),
                    Err(e) => format!("restoring the previous daemon.json failed too: {e:#}"),
                };
                bail!("{failure:#}; {how}")
            }
        }
    }
}

fn restart_docker(host: &Host) -> anyhow::Result<()> {
    crate::failpoint::hit("docker-restart");
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
    let engine = Engine::wait_ready(socket, want.restart_timeout, || {
        if tty {
            eprint!(".");
        }
    })?;
    let facts = engine.facts()?;
    if facts.driver != want.storage_driver {
        bail!("Docker came back on storage driver {} instead of {}", facts.driver, want.storage_driver);
    }
    Ok(())
}

fn restore(host: &Host, path: &Path, previous: Option<&str>, socket: &Path, want: &Wanted) -> anyhow::Result<()> {
    match previous {
        Some(text) => fsutil::write_atomic(path, text.as_bytes(), false)?,
        None => std::fs::remove_file(path).with_context(|| format!("failed to remove {}", path.display()))?,
    }
    restart_docker(host)?;
    Engine::wait_ready(socket, want.restart_timeout, || {}).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unowned_keys_survive_the_merge() {
        let existing =
            parse_daemon_json(r#"{"log-driver": "journald", "storage-driver": "vfs", "x": [1, {"y": null}]}"#)
                .expect("json");
        let owned = json!({"storage-driver": "overlay2"}).as_object().cloned().expect("map");
        let merged = merge(&existing, &owned);
        assert_eq!(merged["log-driver"], "journald");
        assert_eq!(merged["x"], json!([1, {"y": null}]));
        assert_eq!(merged["storage-driver"], "overlay2");
    }

    #[test]
    fn broken_json_says_where() {
        assert!(parse_daemon_json("  \n").expect("empty is {}").is_empty());
        let e = parse_daemon_json("{\n  \"a\": 1,\n  \"b\": \n}").unwrap_err();
        assert!(e.contains("line 4 column 1"), "{e}");
        assert!(parse_daemon_json("[1]").unwrap_err().contains("not a JSON object"));
    }

    #[test]
    fn flags_map_to_their_keys() {
        assert!(flags_for("storage-driver").contains(&"-s".to_string()));
        assert!(flags_for("hosts").contains(&"-H".to_string()));
        assert!(flags_for("insecure-registries").contains(&"--insecure-registry".to_string()));
        assert!(flags_for("labels").contains(&"--label".to_string()));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z0-9 ./-]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z-]{1,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn map() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::btree_map("[a-z-]{1,10}", json_value(), 0..8).prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        #[test]
        fn unowned_keys_always_survive(existing in map(), owned in map()) {
            let merged = merge(&existing, &owned);
            for (k, v) in &existing {
                if !owned.contains_key(k) {
                    prop_assert_eq!(merged.get(k), Some(v));
                }
            }
            for (k, v) in &owned {
                prop_assert_eq!(merged.get(k), Some(v));
            }
            prop_assert_eq!(merged.len(), existing.keys().chain(owned.keys()).collect::<std::collections::BTreeSet<_>>().len());
            // What is written parses back to the same map.
            prop_assert_eq!(parse_daemon_json(&render(&merged)).ok(), Some(merged));
        }
    }
}
