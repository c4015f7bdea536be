//! The `packages` resource: Debian packages observed with dpkg-query and installed with
//! apt-get, non-interactively, waiting a bounded time for the dpkg lock.

use std::time::Duration;

use anyhow::bail;

use super::{Finding, Plan, Resource};
use crate::host::Host;
use crate::profile::Packages as Wanted;

#[derive(Debug)]
pub struct Observed {
    missing: Vec<String>,
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

/// Names that dpkg-query reports as installed (`ii`), from `${Package}\t${db:Status-Abbrev}` lines.
pub fn installed(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| {
            let (name, status) = l.split_once('\t')?;
            status.starts_with("ii").then(|| name.split(':').next().unwrap_or(name).to_string())
        })
        .collect()
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
            return Ok(Observed { missing: Vec::new() });
        }
        let admin = format!("--admindir={}", admindir(host));
        let mut argv = vec!["dpkg-query", &admin, "-W", "-f=${Package}\\t${db:Status-Abbrev}\\n"];
        argv.extend(self.want.install.iter().map(String::as_str));
        // dpkg-query exits 1 when a name is unknown; its stdout still lists the known ones.
        let out = host.runner.run(&argv, &[], Duration::from_secs(30))?;
        if !out.success && out.stdout.is_empty() && !out.stderr.contains("no packages found") {
            bail!("dpkg-query failed: {}", out.stderr.trim());
        }
        let have = installed(&out.stdout);
        Ok(Observed { missing: self.want.install.iter().filter(|p| !have.contains(p)).cloned().collect() })
    }

    fn plan(&self, o: &Observed) -> Plan<Install> {
        let mut plan = Plan::default();
        let command = format!("apt-get install -y --no-install-recommends {}", o.missing.join(" "));
        for name in &self.want.install {
            let id = format!("packages.{name}");
            if o.missing.contains(name) {
                plan.pass(
                    Finding::drift(id, format!("{name} installed"), command.clone()).with_evidence("not installed"),
                );
            } else {
                plan.pass(Finding::ok(id, format!("{name} installed")));
            }
        }
        if !o.missing.is_empty() {
            plan.actions.push(Install(o.missing.clone()));
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

    #[test]
    fn only_fully_installed_packages_count() {
        let out = "ufw\tii \nnginx\trc \ndocker.io:amd64\tii \nvim\tun \n";
        assert_eq!(installed(out), vec!["ufw", "docker.io"]);
    }
}
