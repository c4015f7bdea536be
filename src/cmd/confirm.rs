//! `vakt confirm` and the dead man's switch behind `vakt apply --confirm`: ufw's state kept
//! before the apply, a transient systemd timer that reverts it (it outlives the SSH session
//! and the apply itself), and the command that keeps the change or reverts it now.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::cli::{Cli, ConfirmArgs};
use crate::error::{Invalid, exit};
use crate::host::Host;
use crate::resource::firewall::snapshot::{self, Snapshot};

/// Where pending changes are kept: on disk, so that after a reboot (which takes the transient
/// timer with it) the next apply still sees the change nobody confirmed, and says so.
const STORE: &str = "/var/lib/vakt/confirm";
const MANIFEST: &str = "manifest.json";
/// One line: what happened to the last pending change (`vakt confirm` repeats it).
const LAST: &str = "last";
const SYSTEMD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the revert waits for an apply that holds the lock.
const REVERT_LOCK_WAIT: Duration = Duration::from_secs(24 * 3600);
/// The bounds of `--confirm`: under 10 s leaves no time to confirm from a new session; over an
/// hour leaves a lockout in place too long.
const WINDOW: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(3600));

/// A change waiting for `vakt confirm`, as `manifest.json` in its directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub version: u32,
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    pub deadline: u64,
    pub window_ms: u64,
    /// The revert timers armed for it (unit names without `.timer`).
    pub units: Vec<String>,
    pub snapshot: Snapshot,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// (year, month, day, hour, minute, second) in UTC.
fn civil(secs: u64) -> (i64, u64, u64, u64, u64, u64) {
    // Howard Hinnant's days-to-civil: http://howardhinnant.github.io/date_algorithms.html
    let z = i64::try_from(secs / 86_400).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let s = secs % 86_400;
    (y, m.unsigned_abs(), d.unsigned_abs(), s / 3600, s / 60 % 60, s % 60)
}

/// `14:03:27 UTC`.
fn clock(secs: u64) -> String {
    let (_, _, _, h, m, s) = civil(secs);
    format!("{h:02}:{m:02}:{s:02} UTC")
}

/// The id of a change made at `secs`: `20261126-140327`, which also names its timer.
fn stamp(secs: u64) -> String {
    let (y, mo, d, h, m, s) = civil(secs);
    format!("{y:04}{mo:02}{d:02}-{h:02}{m:02}{s:02}")
}

fn store(host: &Host) -> PathBuf {
    host.path(STORE)
}

impl Pending {
    fn dir(&self, host: &Host) -> PathBuf {
        store(host).join(&self.id)
    }

    fn save(&self, host: &Host) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self).context("failed to encode the pending change")?;
        crate::fsutil::write_atomic(&self.dir(host).join(MANIFEST), text.as_bytes(), false)
    }

    /// The change waiting for a confirmation, if any: the oldest directory with a manifest
    /// (one whose manifest is missing was never armed and is ignored).
    pub fn find(host: &Host) -> anyhow::Result<Option<Pending>> {
        let dir = store(host);
        let entries = match std::fs::read_dir(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            other => other.with_context(|| format!("failed to list {}", dir.display()))?,
        };
        let mut manifests: Vec<PathBuf> =
            entries.flatten().map(|e| e.path().join(MANIFEST)).filter(|m| m.is_file()).collect();
        manifests.sort();
        let Some(path) = manifests.first() else { return Ok(None) };
        let text = crate::fsutil::read_text(path).with_context(|| format!("failed to read {}", path.display()))?;
        let pending = serde_json::from_str(&text).with_context(|| {
            format!("{} is not a pending change vakt can read; remove its directory", path.display())
        })?;
        Ok(Some(pending))
    }

    fn describe(&self) -> String {
        format!(
            "{} (applied at {}, reverted at {} unless `vakt confirm` runs)",
            self.id,
            clock(self.created),
            clock(self.deadline)
        )
    }
}

/// `--confirm DURATION`, bounded.
pub fn parse_window(text: &str) -> anyhow::Result<Duration> {
    let d = crate::profile::units::parse_duration(text).map_err(|e| Invalid(format!("--confirm: {e}")))?;
    if d < WINDOW.0 || d > WINDOW.1 {
        return Err(Invalid(format!("--confirm {text}: the window is 10s to 1h")).into());
    }
    Ok(d)
}

/// Whether `--confirm` can guard this apply: the running system (its systemd arms the revert),
/// and a profile whose firewall the apply changes.
pub fn usable(host: &Host, manages_firewall: bool, only: &[String]) -> anyhow::Result<()> {
    if !host.is_live() {
        return Err(Invalid(
            "--confirm guards the running system's firewall with a systemd timer; with --root there is nothing live to revert"
                .into(),
        )
        .into());
    }
    if !manages_firewall || !(only.is_empty() || only.iter().any(|r| r == "firewall")) {
        return Err(Invalid(
            "--confirm reverts the firewall (ufw's files and rules), and this apply does not change it: the profile has no [firewall], or --only leaves it out"
                .into(),
        )
        .into());
    }
    Ok(())
}

/// Refuses any apply while a change waits for its confirmation: a second change would make
/// the revert's "previous state" ambiguous.
pub fn refuse_if_pending(host: &Host) -> anyhow::Result<()> {
    let Some(p) = Pending::find(host)? else { return Ok(()) };
    let late = if now() > p.deadline + 60 {
        format!(
            "; its deadline passed {}s ago and its revert never ran (a reboot takes the timer with it): run `vakt confirm` to keep the change or `vakt confirm --revert` to put the previous firewall back",
            now() - p.deadline
        )
    } else {
        "; run `vakt confirm` to keep it, or wait for the revert, then apply again".into()
    };
    Err(Invalid(format!("a firewall change is pending confirmation: {}{late}", p.describe())).into())
}

/// The revert armed before the apply; [`Guard::rearm`] starts the window again from the
/// apply's end.
#[derive(Debug)]
pub struct Guard {
    pending: Pending,
    window: Duration,
}

/// Keeps ufw's state and arms its revert, before anything changes: if the apply then dies
/// half-way, the timer still reverts. Without systemd nothing is changed and the apply is
/// refused.
pub fn arm(host: &Host, window: Duration) -> anyhow::Result<Guard> {
    let created = now();
    let id = stamp(created);
    let dir = store(host).join(&id);
    // A directory without a manifest is a snapshot that was never armed.
    let _ = std::fs::remove_dir_all(&dir);
    create_private_dir(&dir)?;
    let armed = (|| {
        let snapshot = snapshot::take(host, &dir)?;
        let pending = Pending {
            version: 1,
            id: id.clone(),
            created,
            deadline: created + window.as_secs(),
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            units: vec![format!("vakt-revert-{id}-during-apply")],
            snapshot,
        };
        pending.save(host)?;
        start_timer(host, &pending.units[0], window, &id).map_err(|e| {
            Invalid(format!(
                "--confirm needs systemd to arm the revert timer, and it could not: {e:#}; nothing was changed"
            ))
        })?;
        Ok(pending)
    })();
    match armed {
        Ok(pending) => Ok(Guard { pending, window }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("failed to create {}", parent.display()))?;
    }
    std::fs::DirBuilder::new().mode(0o700).create(dir).with_context(|| format!("failed to create {}", dir.display()))
}

impl Guard {
    /// After the apply: a new timer for the whole window from now, then the one armed before
    /// the apply is stopped (the revert never goes unguarded). If the new timer cannot be
    /// armed, the first one stays and its deadline holds. Returns the line for the operator.
    pub fn rearm(mut self, host: &Host) -> String {
        let p = &mut self.pending;
        let unit = format!("vakt-revert-{}", p.id);
        let mut note = String::new();
        match start_timer(host, &unit, self.window, &p.id) {
            Ok(()) => {
                let first = std::mem::replace(&mut p.units, vec![unit.clone()]);
                p.deadline = now() + self.window.as_secs();
                if let Err(e) = p.save(host) {
                    note = format!(" (warning: {e:#})");
                }
                for old in first {
                    let _ = stop_timer(host, &old);
                }
            }
            Err(e) => note = format!(" (could not re-arm from the apply's end, the first deadline stays: {e:#})"),
        }
        format!(
            "firewall change {} will be reverted at {} unless `vakt confirm` runs (revert timer {}){note}\n",
            p.id,
            clock(p.deadline),
            p.units.join(", ")
        )
    }
}

/// A transient timer and service (`systemd-run --on-active`): systemd runs the revert however
/// the apply and the operator's session end.
fn start_timer(host: &Host, unit: &str, window: Duration, id: &str) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("failed to find vakt's own executable")?;
    let exe = exe.to_str().context("vakt's executable path is not UTF-8")?;
    let on_active = format!("--on-active={}ms", window.as_millis());
    let unit_arg = format!("--unit={unit}");
    let description = format!("--description=vakt: revert firewall change {id} unless confirmed");
    let argv = [
        "systemd-run",
        &unit_arg,
        &description,
        &on_active,
        "--timer-property=AccuracySec=1s",
        exe,
        "confirm",
        "--revert",
        id,
        "--timer",
    ];
    host.runner.run_ok(&argv, SYSTEMD_TIMEOUT)?;
    Ok(())
}

/// Stops a revert timer; `false` when it was not loaded (it fired, or a reboot took it).
fn stop_timer(host: &Host, unit: &str) -> anyhow::Result<bool> {
    let timer = format!("{unit}.timer");
    let active = host.runner.run(&["systemctl", "is-active", "--quiet", &timer], &[], SYSTEMD_TIMEOUT)?;
    if !active.success {
        return Ok(false);
    }
    host.runner.run_ok(&["systemctl", "stop", &timer], SYSTEMD_TIMEOUT)?;
    Ok(true)
}

fn last(host: &Host) -> String {
    host.read_opt(Path::new(STORE).join(LAST)).map(|l| format!(" (last: {l})")).unwrap_or_default()
}

fn finish(host: &Host, p: &Pending, outcome: &str) -> anyhow::Result<()> {
    let dir = p.dir(host);
    std::fs::remove_dir_all(&dir).with_context(|| format!("failed to remove {}", dir.display()))?;
    let line = format!("firewall change {} {outcome} at {}\n", p.id, clock(now()));
    crate::fsutil::write_atomic(&store(host).join(LAST), line.as_bytes(), false)
}

pub fn run(cli: &Cli, args: &ConfirmArgs) -> anyhow::Result<u8> {
    let host = Host::new(&cli.root);
    if !host.is_live() {
        return Err(
            Invalid("vakt confirm acts on the running system's revert timer; --root is not supported".into()).into()
        );
    }
    match &args.revert {
        None => keep(&host),
        Some(id) => revert(&host, Some(id.as_str()).filter(|i| !i.is_empty()), args.timer),
    }
}

/// `vakt confirm`: the pending change stays; its revert timers are stopped.
fn keep(host: &Host) -> anyhow::Result<u8> {
    let _lock = crate::fsutil::lock_apply(host.root())?;
    let Some(p) = Pending::find(host)? else {
        super::emit(&format!("nothing to confirm: no firewall change is pending{}\n", last(host)))?;
        return Ok(exit::OK);
    };
    let mut stopped = Vec::new();
    for unit in &p.units {
        if stop_timer(host, unit)
            .with_context(|| format!("failed to stop the revert timer {unit}; nothing was confirmed"))?
        {
            stopped.push(unit.as_str());
        }
    }
    finish(host, &p, "confirmed")?;
    let timers = if stopped.is_empty() {
        "no revert timer was still armed".to_string()
    } else {
        format!("revert timer {} cancelled", stopped.join(", "))
    };
    super::emit(&format!("confirmed: firewall change of {} kept ({timers})\n", clock(p.created)))?;
    Ok(exit::OK)
}

/// `vakt confirm --revert [ID]`, and the revert timer's own run (`--timer`, which acts only
/// once the deadline has come: an apply that outlasted its window re-armed it from its end).
fn revert(host: &Host, id: Option<&str>, timer: bool) -> anyhow::Result<u8> {
    let _lock = crate::fsutil::lock_apply_within(host.root(), REVERT_LOCK_WAIT)?;
    let pending = Pending::find(host)?;
    let Some(p) = pending.filter(|p| id.is_none_or(|id| id == p.id)) else {
        let what = id
            .map(|id| format!("firewall change {id} is not pending"))
            .unwrap_or("no firewall change is pending".into());
        super::emit(&format!("nothing to revert: {what}{}\n", last(host)))?;
        return Ok(exit::OK);
    };
    if timer && now() + 2 < p.deadline {
        super::emit(&format!(
            "not yet: firewall change {} is reverted at {}, by timer {}\n",
            p.id,
            clock(p.deadline),
            p.units.join(", ")
        ))?;
        return Ok(exit::OK);
    }
    let done = snapshot::restore(host, &p.dir(host), &p.snapshot).with_context(|| {
        format!(
            "reverting firewall change {}: run `vakt confirm --revert {}` again, or `vakt confirm` to keep what is there now",
            p.id, p.id
        )
    })?;
    for unit in &p.units {
        // The timer that started this run is stopped too: harmless, and none is left behind.
        let _ = stop_timer(host, unit);
    }
    finish(host, &p, "reverted")?;
    let what = if done.is_empty() { "nothing differed".to_string() } else { done.join("; ") };
    super::emit(&format!("reverted: firewall change of {} undone ({what})\n", clock(p.created)))?;
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_and_clocks_are_utc() {
        // 2026-11-25 14:03:27 UTC.
        assert_eq!(stamp(1_795_615_407), "20261125-140327");
        assert_eq!(clock(1_795_615_407), "14:03:27 UTC");
        assert_eq!(stamp(0), "19700101-000000");
        assert_eq!(stamp(951_782_400), "20000229-000000");
    }

    #[test]
    fn the_window_is_bounded() {
        assert_eq!(parse_window("30s").expect("30s"), Duration::from_secs(30));
        assert_eq!(parse_window("1h").expect("1h"), Duration::from_secs(3600));
        for bad in ["5s", "2h", "soon"] {
            let e = parse_window(bad).expect_err(bad);
            assert!(e.downcast_ref::<Invalid>().is_some(), "{bad}: {e}");
        }
    }
}
