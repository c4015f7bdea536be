//! The one way vakt runs commands: argv logged, output captured, a timeout enforced, and a
//! record kept so that a report can list exactly what ran.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};

#[derive(Debug, Default)]
pub struct Runner {
    log: Mutex<Vec<String>>,
    /// Show a live line on the terminal for a command that runs longer than a second.
    progress: AtomicBool,
    /// Held while a live line is on the terminal: one at a time, even when observations run
    /// concurrently (a second slow command waits without a line of its own).
    live_line: Mutex<()>,
    /// The live line on the terminal, if any: what other threads print goes above it.
    shown: Mutex<Option<indicatif::ProgressBar>>,
}

/// How long a command runs before the live line appears.
const LIVE_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Output {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// A command that could not be started because it is not installed.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` was not found on PATH; install it (Debian package `{1}`) or fix PATH")]
pub struct Missing(pub String, pub &'static str);

/// Whether `program` is an executable file in a directory of PATH, as a spawn would find it.
pub fn on_path(program: &str) -> bool {
    find_on_path(program).is_some()
}

/// The executable file a spawn of `program` would run: the first in PATH's directories.
pub fn find_on_path(program: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| {
        std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

impl Runner {
    /// Turns the live line on (an operator at a terminal) or off (journald, pipes, JSON).
    pub fn show_progress(&self, on: bool) {
        self.progress.store(on, Ordering::Relaxed);
    }

    /// Waits for the command's result up to `timeout`; past a second, with progress on, a
    /// live line on stderr says what runs and for how long, cleared when it ends.
    fn wait<T>(&self, rx: &mpsc::Receiver<T>, argv: &[&str], timeout: Duration) -> Result<T, mpsc::RecvTimeoutError> {
        if !self.progress.load(Ordering::Relaxed) || timeout <= LIVE_AFTER {
            return rx.recv_timeout(timeout);
        }
        match rx.recv_timeout(LIVE_AFTER) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            done => return done,
        }
        let _shown = match self.live_line.try_lock() {
            Ok(held) => held,
            // A thread panicked while it showed the line: the line is free again.
            Err(std::sync::TryLockError::Poisoned(held)) => held.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return rx.recv_timeout(timeout - LIVE_AFTER),
        };
        let (what, tool) = live_text(argv);
        let style = indicatif::ProgressStyle::with_template("{spinner} {msg} ({prefix}, {elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
        let line = indicatif::ProgressBar::new_spinner()
            .with_style(style)
            .with_prefix(tool)
            .with_message(what)
            .with_elapsed(LIVE_AFTER);
        line.enable_steady_tick(Duration::from_millis(250));
        *self.shown.lock().unwrap_or_else(PoisonError::into_inner) = Some(line.clone());
        let result = rx.recv_timeout(timeout - LIVE_AFTER);
        self.shown.lock().unwrap_or_else(PoisonError::into_inner).take();
        line.finish_and_clear();
        result
    }

    /// Runs `print` (output for the terminal) with the live line, if one is shown, cleared
    /// meanwhile and drawn again below what it printed.
    pub fn above_live_line<T>(&self, print: impl FnOnce() -> T) -> T {
        let shown = self.shown.lock().unwrap_or_else(PoisonError::into_inner);
        match shown.as_ref() {
            Some(line) => line.suspend(print),
            None => print(),
        }
    }

    /// Runs `argv` with `env` added, killing it after `timeout`. A non-zero exit is not an
    /// error here; see [`Runner::run_ok`].
    pub fn run(&self, argv: &[&str], env: &[(&str, &str)], timeout: Duration) -> anyhow::Result<Output> {
        let line = argv.join(" ");
        tracing::debug!(target: "vakt::run", "run: {line}");
        if let Ok(mut log) = self.log.lock() {
            log.push(line.clone());
        }
        let (program, args) = argv.split_first().context("empty command")?;
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that a timeout can end everything it started: apt-get
            // leaves dpkg and its maintainer scripts behind, and they would keep the dpkg lock.
            // It also keeps a terminal's Ctrl-C from interrupting dpkg halfway.
            .process_group(0)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Missing(program.to_string(), package_of(program)).into());
            }
            Err(e) => return Err(e).with_context(|| format!("failed to start `{line}`")),
        };
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(child.wait_with_output()));
        let out = match self.wait(&rx, argv, timeout) {
            Ok(out) => out.with_context(|| format!("failed to wait for `{line}`"))?,
            Err(_) => {
                if let Ok(pid) = i32::try_from(pid) {
                    // The group's id is the child's pid (process_group(0) above).
                    let _ =
                        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
                // Reap the child; with the whole group gone its pipes close at once.
                let _ = rx.recv_timeout(Duration::from_secs(5));
                bail!("`{line}` did not finish within {} and was killed with everything it started", shown(timeout));
            }
        };
        Ok(Output {
            success: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs `argv` and fails, with the command's own error output, unless it exits 0.
    pub fn run_ok(&self, argv: &[&str], timeout: Duration) -> anyhow::Result<Output> {
        let out = self.run(argv, &[], timeout)?;
        if !out.success {
            let said = if out.stderr.trim().is_empty() { out.stdout.trim() } else { out.stderr.trim() };
            let said = crate::escape::controls(said);
            bail!("`{}` failed ({}): {said}", argv.join(" "), exit_text(out.code));
        }
        Ok(out)
    }

    /// Every command run so far, in order.
    pub fn commands(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// What a long command does, as the live line says it, and the tool doing it:
/// `("installing docker.io nginx ufw", "apt-get")`.
fn live_text(argv: &[&str]) -> (String, String) {
    let tool = argv.first().map_or("", |p| p.rsplit('/').next().unwrap_or(p)).to_string();
    let words: Vec<&str> = argv.iter().skip(1).copied().filter(|w| !w.starts_with('-')).collect();
    let after = |verb: &str| words.iter().position(|w| *w == verb).map(|i| words[i + 1..].join(" "));
    let what = match tool.as_str() {
        "apt-get" => {
            after("install").map(|p| format!("installing {p}")).unwrap_or_else(|| "updating the package lists".into())
        }
        "systemctl" => match words.first() {
            Some(verb) => format!("{}ing {}", verb.trim_end_matches('e'), words[1..].join(" ")),
            None => "systemctl".into(),
        },
        "certbot" => "obtaining a certificate".into(),
        "nginx" => "validating the nginx config".into(),
        _ => format!("running {}", argv.join(" ")),
    };
    (crate::escape::controls(&what), tool)
}

fn shown(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

fn exit_text(code: Option<i32>) -> String {
    code.map_or_else(|| "killed by a signal".into(), |c| format!("exit {c}"))
}

fn package_of(program: &str) -> &'static str {
    match program {
        "ufw" => "ufw",
        "nginx" => "nginx",
        "dpkg-query" => "dpkg",
        "apt-get" => "apt",
        "systemctl" | "journalctl" => "systemd",
        "iptables" | "ip6tables" => "iptables",
        _ => "providing it",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_logs_argv() {
        let runner = Runner::default();
        let out =
            runner.run(&["sh", "-c", "echo hi; echo err >&2; exit 3"], &[], Duration::from_secs(5)).expect("runs");
        assert_eq!(
            (out.success, out.code, out.stdout.as_str(), out.stderr.as_str()),
            (false, Some(3), "hi\n", "err\n")
        );
        assert_eq!(runner.commands(), vec!["sh -c echo hi; echo err >&2; exit 3"]);
        let e = runner.run_ok(&["sh", "-c", "echo broken >&2; exit 1"], Duration::from_secs(5)).expect_err("fails");
        assert!(e.to_string().contains("broken") && e.to_string().contains("exit 1"), "{e}");
    }

    #[test]
    fn kills_on_timeout_and_names_missing_programs() {
        let runner = Runner::default();
        let e = runner.run(&["sleep", "5"], &[], Duration::from_millis(100)).expect_err("times out");
        assert!(e.to_string().contains("did not finish"), "{e}");
        let e = runner.run(&["ufw-not-here"], &[], Duration::from_secs(1)).expect_err("missing");
        assert!(e.to_string().contains("was not found on PATH"), "{e}");
    }

    /// A timeout ends what the command started too, as apt-get's dpkg children: left alive,
    /// they would keep the dpkg lock.
    #[test]
    fn a_timeout_kills_the_grandchildren_too() {
        let dir = tempfile::tempdir().expect("tmp");
        let pidfile = dir.path().join("grandchild.pid");
        let script = format!("sleep 60 >/dev/null 2>&1 & echo $! > {}; wait", pidfile.display());
        let runner = Runner::default();
        let e = runner.run(&["sh", "-c", &script], &[], Duration::from_millis(300)).expect_err("times out");
        assert!(e.to_string().contains("did not finish within 300ms"), "{e}");
        let pid = std::fs::read_to_string(&pidfile).expect("the grandchild started");
        let stat = format!("/proc/{}/stat", pid.trim());
        let started = std::time::Instant::now();
        // Gone, or a zombie waiting for whoever inherited it: either way no longer running.
        let alive = || {
            std::fs::read_to_string(&stat)
                .is_ok_and(|s| s.rsplit(") ").next().is_some_and(|rest| !rest.starts_with('Z')))
        };
        while alive() && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!alive(), "the grandchild {} outlived the timeout", pid.trim());
    }
}
