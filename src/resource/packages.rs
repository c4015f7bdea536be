//! The `packages` resource: Debian packages observed with dpkg-query and installed with
//! apt-get, non-interactively, waiting a bounded time for the dpkg lock.

use std::time::Duration;

use anyhow::bail;

use super::{Finding, Plan, Resource, Status};
use crate::host::Host;
use crate::profile::Packages as Wanted;

#[derive(Debug)]
pub struct Observed {
    /// Preparing an image offline: apt-get would install on this machine, not in the image.
    offline: bool,
    /// Each wanted package, in profile order, with what dpkg's database says about it.
    states: Vec<(String, State)>,
}

#[derive(Debug)]
pub struct Install(Vec<String>);

pub struct Packages<'p> {
    want: &'p Wanted,
}

impl<'p> Packages<'p> {
    pub fn new(want: &'p Wanted) -> Self {
        Packages { want }
    }
}

/// One package in dpkg's database, judged by the package status (second letter of
/// `${db:Status-Abbrev}`, dpkg-query(1)) and the error flag (third letter). The first letter,
/// the selection (install, hold, deinstall, purge), never decides whether the files are there:
/// a held package (`hi`) is installed, and treating it as missing made every apply run apt-get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Installed {
        held: bool,
    },
    /// Not installed, or only its configuration files are left (`c`).
    Missing,
    /// An installation or removal stopped half way (an interrupted first boot): apt-get would
    /// refuse or fail again until it is finished; `fix` is the command that finishes it.
    Interrupted {
        abbrev: String,
        what: &'static str,
        fix: String,
    },
}

fn state(name: &str, abbrev: &str) -> State {
    let letters: Vec<char> = abbrev.chars().collect();
    let (selection, status, error) =
        (letters.first().copied(), letters.get(1).copied(), letters.get(2).copied().unwrap_or(' '));
    let abbrev = abbrev.trim_end().to_string();
    let finish = "dpkg --configure -a".to_string();
    let reinstall = format!("dpkg --configure -a; apt-get install --reinstall {name}");
    let broken = |what, fix| State::Interrupted { abbrev: abbrev.clone(), what, fix };
    if error == 'R' {
        return broken("its installation failed and it must be reinstalled", reinstall);
    }
    match status {
        Some('i') => State::Installed { held: selection == Some('h') },
        Some('n' | 'c') | None => State::Missing,
        Some('U') => broken("unpacked but not configured", finish),
        Some('F') => broken("half-configured", finish),
        Some('W') => broken("waiting for another package's triggers", finish),
        Some('t') => broken("its triggers have not run", finish),
        Some('H') => broken("half-installed", reinstall),
        Some(_) => broken("in a state dpkg-query(1) does not document", finish),
    }
}

/// Each package's state from `${Package}\t${db:Status-Abbrev}` lines. A package with several
/// architectures has a line each: an interrupted one decides, then an installed one.
pub fn states(output: &str) -> Vec<(String, State)> {
    let mut out: Vec<(String, State)> = Vec::new();
    for (name, abbrev) in output.lines().filter_map(|l| l.split_once('\t')) {
        let name = name.split(':').next().unwrap_or(name);
        let new = state(name, abbrev);
        let rank = |s: &State| match s {
            State::Missing => 0,
            State::Installed { .. } => 1,
            State::Interrupted { .. } => 2,
        };
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, old)) if rank(&new) > rank(old) => *old = new,
            Some(_) => {}
            None => out.push((name.to_string(), new)),
        }
    }
    out
}

fn admindir(host: &Host) -> String {
    host.path("/var/lib/dpkg").display().to_string()
}

impl Resource for Packages<'_> {
    type Observed = Observed;
    type Action = Install;

    fn id(&self) -> &'static str {
        "packages"
    }

    fn observe(&self, host: &Host) -> anyhow::Result<Observed> {
        if self.want.install.is_empty() {
            return Ok(Observed { offline: !host.is_live(), states: Vec::new() });
        }
        let admin = format!("--admindir={}", admindir(host));
        let mut argv = vec!["dpkg-query", &admin, "-W", "-f=${Package}\\t${db:Status-Abbrev}\\n"];
        argv.extend(self.want.install.iter().map(String::as_str));
        // dpkg-query exits 1 when a name is unknown; its stdout still lists the known ones.
        let out = host.runner.run(&argv, &[], Duration::from_secs(30))?;
        if !out.success && out.stdout.is_empty() && !out.stderr.contains("no packages found") {
            bail!("dpkg-query failed: {}", out.stderr.trim());
        }
        let known = states(&out.stdout);
        let states = self
            .want
            .install
            .iter()
            .map(|name| {
                let found = known.iter().find(|(n, _)| n == name).map(|(_, s)| s.clone());
                (name.clone(), found.unwrap_or(State::Missing))
            })
            .collect();
        Ok(Observed { offline: !host.is_live(), states })
    }

    fn plan(&self, o: &Observed) -> Plan<Install> {
        let mut plan = Plan::default();
        let missing: Vec<String> =
            o.states.iter().filter(|(_, s)| *s == State::Missing).map(|(n, _)| n.clone()).collect();
        // apt-get cannot install anything until an interrupted dpkg run is finished: an install
        // now would fail on every apply, so report the command that finishes it instead.
        let interrupted = o.states.iter().any(|(_, s)| matches!(s, State::Interrupted { .. }));
        let command = format!("apt-get install -y --no-install-recommends {}", missing.join(" "));
        for (name, s) in &o.states {
            let id = format!("packages.{name}");
            let title = format!("{name} installed");
            plan.pass(match s {
                State::Installed { held: false } => Finding::ok(id, title),
                State::Installed { held: true } => Finding::ok(id, title)
                    .with_evidence("held (apt-mark hold): apt leaves its version alone; vakt only needs it installed"),
                State::Interrupted { abbrev, what, fix } => Finding::new(id, title, Status::Failed)
                    .with_evidence(format!("dpkg status `{abbrev}`: {what}; an installation was interrupted"))
                    .with_evidence(format!("run `{fix}` as root to finish it, then run vakt again")),
                State::Missing if interrupted => Finding::new(id, title, Status::Failed)
                    .with_evidence("not installed")
                    .with_evidence("vakt installs it once the interrupted installation above is finished"),
                State::Missing if o.offline => Finding::deferred(id, title, command.clone()),
                State::Missing => Finding::drift(id, title, command.clone()).with_evidence("not installed"),
            });
        }
        if !missing.is_empty() && !interrupted && !o.offline {
            plan.actions.push(Install(missing));
        }
        plan
    }

    fn apply(&self, host: &Host, _o: &Observed, actions: Vec<Install>) -> anyhow::Result<()> {
        let env = [("DEBIAN_FRONTEND", "noninteractive")];
        let lock = format!("DPkg::Lock::Timeout={}", self.want.lock_timeout.as_secs());
        let long = Duration::from_secs(1800);
        for Install(names) in actions {
            if self.want.update {
                // Only when something is missing, and at most once: one Install action per run.
                let out = host.runner.run(&["apt-get", "-o", &lock, "update"], &env, long)?;
                if !out.success {
                    bail!("apt-get update failed: {}", out.stderr.trim());
                }
            }
            for name in &names {
                let policy = host.runner.run(&["apt-cache", "policy", name], &env, Duration::from_secs(60))?;
                if !policy.stdout.contains("Candidate:") || policy.stdout.contains("Candidate: (none)") {
                    bail!(
                        "package `{name}` is not available from the configured apt sources; check its name in [packages] install"
                    );
                }
            }
            let mut argv = vec!["apt-get", "-o", &lock, "install", "-y", "--no-install-recommends"];
            argv.extend(names.iter().map(String::as_str));
            let out = host.runner.run(&argv, &env, long)?;
            if !out.success {
                bail!("`{}` failed: {}", argv.join(" "), out.stderr.trim());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interrupted(abbrev: &str, what: &'static str, fix: &str) -> State {
        State::Interrupted { abbrev: abbrev.into(), what, fix: fix.into() }
    }

    #[test]
    fn installed_whatever_the_selection_and_interrupted_states_named() {
        let out = "ufw\tii \nnginx\trc \ndocker.io:amd64\thi \nvim\tun \ncurl\tiF \njq\tiU \nz\tiHR\nt\tit \n";
        let finish = "dpkg --configure -a";
        assert_eq!(
            states(out),
            vec![
                ("ufw".to_string(), State::Installed { held: false }),
                ("nginx".to_string(), State::Missing),
                ("docker.io".to_string(), State::Installed { held: true }),
                ("vim".to_string(), State::Missing),
                ("curl".to_string(), interrupted("iF", "half-configured", finish)),
                ("jq".to_string(), interrupted("iU", "unpacked but not configured", finish)),
                (
                    "z".to_string(),
                    interrupted(
                        "iHR",
                        "its installation failed and it must be reinstalled",
                        "dpkg --configure -a; apt-get install --reinstall z"
                    )
                ),
                ("t".to_string(), interrupted("it", "its triggers have not run", finish)),
            ]
        );
    }

    #[test]
    fn a_removal_marked_package_still_installed_counts_and_one_architecture_installed_is_enough() {
        assert_eq!(
            states("ufw\tri \nlibx:i386\tun \nlibx:amd64\tpi \n"),
            vec![
                ("ufw".to_string(), State::Installed { held: false }),
                ("libx".to_string(), State::Installed { held: false })
            ]
        );
    }

    #[test]
    fn a_hold_is_ok_and_an_interrupted_install_stops_every_install() {
        let want = Wanted {
            install: vec!["docker.io".into(), "nginx".into(), "ufw".into()],
            update: true,
            lock_timeout: Duration::from_secs(1),
        };
        let r = Packages::new(&want);
        let held = Observed {
            offline: false,
            states: vec![
                ("docker.io".into(), State::Installed { held: true }),
                ("nginx".into(), State::Missing),
                ("ufw".into(), State::Installed { held: false }),
            ],
        };
        let plan = r.plan(&held);
        let status: Vec<Status> = plan.findings.iter().map(|f| f.status).collect();
        assert_eq!(status, [Status::Ok, Status::Drift, Status::Ok]);
        assert!(plan.findings[0].evidence[0].starts_with("held"), "{:?}", plan.findings[0]);
        assert!(matches!(plan.actions.as_slice(), [Install(names)] if names == &["nginx"]));

        let broken = Observed {
            offline: false,
            states: vec![
                ("docker.io".into(), state("docker.io", "iF ")),
                ("nginx".into(), State::Missing),
                ("ufw".into(), State::Installed { held: false }),
            ],
        };
        let plan = r.plan(&broken);
        let status: Vec<Status> = plan.findings.iter().map(|f| f.status).collect();
        assert_eq!(status, [Status::Failed, Status::Failed, Status::Ok]);
        assert!(plan.actions.is_empty(), "no apt-get while dpkg is interrupted");
        assert_eq!(
            plan.findings[0].evidence,
            [
                "dpkg status `iF`: half-configured; an installation was interrupted",
                "run `dpkg --configure -a` as root to finish it, then run vakt again"
            ]
        );
        assert!(plan.findings.iter().all(|f| f.change.is_none()), "nothing for apply to run");
    }
}
