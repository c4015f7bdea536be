//! The `tuning` resource: sysctl values (read, compare, write only on a difference, persisted
//! in /etc/sysctl.d/60-vakt.conf) and the `none` I/O scheduler for NVMe devices (persisted
//! with a udev rule).

use std::path::PathBuf;

use anyhow::Context;

use super::{Finding, Plan, Resource, Status};
use crate::fsutil;
use crate::host::Host;
use crate::profile::{IoScheduler, Tuning as Wanted};

const SYSCTL_FILE: &str = "/etc/sysctl.d/60-vakt.conf";
const UDEV_RULE: &str = "/etc/udev/rules.d/60-vakt-scheduler.rules";

#[derive(Debug)]
pub struct Observed {
    /// key → current value (None: no such sysctl on this kernel).
    sysctl: Vec<(String, Option<String>)>,
    /// NVMe disk → (current scheduler, available ones).
    nvme: Vec<(String, String, Vec<String>)>,
    files: Vec<(PathBuf, Option<String>)>,
    docker_present: bool,
    /// Preparing an image offline: the kernel's values are set at its boot, from the files.
    offline: bool,
}

#[derive(Debug)]
pub enum Action {
    Sysctl(String, String),
    Scheduler(String, IoScheduler),
    File(PathBuf, String),
}

pub struct Tuning<'p> {
    want: &'p Wanted,
}

impl<'p> Tuning<'p> {
    pub fn new(want: &'p Wanted) -> Self {
        Tuning { want }
    }

    fn sysctl_file(&self) -> Option<String> {
        sysctl_file(self.want)
    }

    fn udev_rule(&self) -> Option<String> {
        let s = self.want.io_scheduler.as_ref()?;
        Some(format!(
            "# Managed by vakt: NVMe devices do their own queueing; the kernel scheduler only adds latency.\nACTION==\"add|change\", KERNEL==\"nvme[0-9]*n[0-9]*\", ATTR{{queue/scheduler}}=\"{s}\"\n"
        ))
    }
}

/// The sysctl.d file: a header and one `key = value` line per setting (the profile's
/// validation keeps both to one line of their own characters).
pub fn sysctl_file(want: &Wanted) -> Option<String> {
    if want.sysctl.is_empty() {
        return None;
    }
    let mut text =
        String::from("# Managed by vakt from the profile's [tuning.sysctl]; changes here are overwritten.\n");
    for (k, v) in &want.sysctl {
        text.push_str(&format!("{k} = {v}\n"));
    }
    Some(text)
}

fn proc_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

/// sysctl values compare by their words: "4096\t87380" equals "4096 87380".
fn same(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

/// The bracketed scheduler and the list from a `queue/scheduler` file.
pub fn parse_scheduler(text: &str) -> (String, Vec<String>) {
    let all: Vec<String> = text.split_whitespace().map(|w| w.trim_matches(['[', ']']).to_string()).collect();
    // The kernel brackets the active one; a lone word (a single-scheduler queue) is active too.
    let current = text.split_whitespace().find(|w| w.starts_with('[')).map(|w| w.trim_matches(['[', ']']).to_string());
    let current = current.or_else(|| (all.len() == 1).then(|| all[0].clone()));
    (current.unwrap_or_default(), all)
}

impl Resource for Tuning<'_> {
    type Observed = Observed;
    type Action = Action;

    fn id(&self) -> &'static str {
        "tuning"
    }

    fn observe(&self, host: &Host) -> anyhow::Result<Observed> {
        let sysctl = self.want.sysctl.keys().map(|k| (k.clone(), host.read_opt(proc_path(k)))).collect();
        let mut nvme = Vec::new();
        if self.want.io_scheduler.is_some()
            && let Ok(entries) = std::fs::read_dir(host.path("/sys/block"))
        {
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("nvme"))
                .collect();
            names.sort();
            for name in names {
                // Multipath controller paths (nvme0c0n1) are hidden; their namespace is the device.
                if host.read_opt(format!("/sys/block/{name}/hidden")).as_deref() == Some("1") {
                    continue;
                }
                if let Some(text) = host.read_opt(format!("/sys/block/{name}/queue/scheduler")) {
                    let (current, all) = parse_scheduler(&text);
                    nvme.push((name, current, all));
                }
            }
        }
        let files = [SYSCTL_FILE, UDEV_RULE]
            .iter()
            .map(|f| (host.file_path(f), crate::fsutil::read_text(host.path(f)).ok()))
            .collect();
        let docker_present = host.runs_docker();
        Ok(Observed { sysctl, nvme, files, docker_present, offline: !host.is_live() })
    }

    fn plan(&self, o: &Observed) -> Plan<Action> {
        let mut plan = Plan::default();
        for (key, current) in &o.sysctl {
            let want = &self.want.sysctl[key];
            let id = format!("tuning.sysctl.{key}");
            let title = format!("{key} = {want}");
            match current {
                None if o.offline => plan.pass(Finding::deferred(
                    id,
                    title,
                    format!("systemd-sysctl sets it from {SYSCTL_FILE} at boot"),
                )),
                None => plan.pass(Finding::new(id, format!("{key}: no such sysctl on this kernel"), Status::Failed)),
                Some(cur) if same(cur, want) => plan.pass(Finding::ok(id, title)),
                // Docker's bridge and swarm's overlay networks need forwarding.
                Some(cur) if key == "net.ipv4.ip_forward" && want == "0" && cur != "0" && o.docker_present => plan.pass(Finding::new(
                    id,
                    "refusing to lower net.ipv4.ip_forward on a host that runs Docker: container networking would stop",
                    Status::Failed,
                )),
                Some(cur) => plan.fix(
                    Finding::drift(id, title, format!("write {want} to {}", proc_path(key)))
                        .with_evidence(format!("now {cur}")),
                    Action::Sysctl(key.clone(), want.clone()),
                ),
            }
        }
        if let Some(want) = &self.want.io_scheduler {
            for (disk, current, all) in &o.nvme {
                let id = format!("tuning.scheduler.{disk}");
                let title = format!("{disk} uses the {want} I/O scheduler");
                let named = |text: &String| IoScheduler::from_word(text) == Some(*want);
                if named(current) {
                    plan.pass(Finding::ok(id, title));
                } else if !all.iter().any(named) {
                    plan.pass(Finding::new(
                        id,
                        format!("{disk} does not offer the {want} scheduler (has {})", all.join(", ")),
                        Status::Failed,
                    ));
                } else {
                    let change = format!("write {want} to /sys/block/{disk}/queue/scheduler");
                    plan.fix(
                        Finding::drift(id, title, change).with_evidence(format!("now {current}")),
                        Action::Scheduler(disk.clone(), *want),
                    );
                }
            }
        }
        for ((path, current), wanted) in o.files.iter().zip([self.sysctl_file(), self.udev_rule()]) {
            let Some(wanted) = wanted else { continue };
            let id = format!(
                "tuning.file.{}",
                path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
            );
            let title = format!("{} persists the settings", path.display());
            if current.as_deref() == Some(wanted.as_str()) {
                plan.pass(Finding::ok(id, title));
            } else {
                let mut f = Finding::drift(id, title, format!("write {}", path.display()));
                f.diff = Some(
                    similar::TextDiff::from_lines(current.as_deref().unwrap_or(""), &wanted).unified_diff().to_string(),
                );
                plan.fix(f, Action::File(path.clone(), wanted));
            }
        }
        plan
    }

    fn apply(&self, host: &Host, _o: &Observed, actions: Vec<Action>) -> anyhow::Result<()> {
        for action in actions {
            match action {
                Action::Sysctl(key, value) => {
                    let path = host.path(proc_path(&key));
                    std::fs::write(&path, format!("{value}\n"))
                        .with_context(|| format!("failed to write {}", path.display()))?;
                }
                Action::Scheduler(disk, s) => {
                    let path = host.path(format!("/sys/block/{disk}/queue/scheduler"));
                    std::fs::write(&path, s.as_str()).with_context(|| format!("failed to write {}", path.display()))?;
                }
                Action::File(path, content) => {
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
                    }
                    fsutil::write_atomic(&path, content.as_bytes(), false)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_and_values_parse() {
        assert_eq!(
            parse_scheduler("[none] mq-deadline kyber"),
            ("none".to_string(), vec!["none".into(), "mq-deadline".into(), "kyber".into()])
        );
        assert!(same("4096\t87380  6291456", "4096 87380 6291456"));
        assert!(!same("1", "0"));
    }
}
