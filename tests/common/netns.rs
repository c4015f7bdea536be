//! A private network namespace with throwaway ufw state, for system tests against the real
//! ufw and netfilter. Nothing of the host's own firewall or /etc/ufw is touched: vakt and ufw
//! run inside `ip netns exec` plus a private mount namespace where /etc/ufw, /etc/default/ufw,
//! /etc/ssh, systemd's unit directories and /run are bind mounts of a temporary tree. vakt runs
//! there as on a live host (`--root /`): `--root` elsewhere means an image prepared offline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Run, run};

/// The article's firewall: SSH, HTTP, the gateway and swarm management, from anywhere.
pub const ARTICLE: &str = "[firewall]
[[firewall.allow]]
port = 22
comment = \"ssh\"
[[firewall.allow]]
port = 80
[[firewall.allow]]
port = 8080
[[firewall.allow]]
port = 2377
";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub struct UfwSandbox {
    pub netns: String,
    pub dir: tempfile::TempDir,
}

fn sh(script: &str) {
    let out = Command::new("sh").args(["-ec", script]).output().expect("sh runs");
    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
}

/// A shell script that gives the tree at `root` ufw as packaged (disabled, no rules, IPv6 on),
/// an sshd_config on port 22 with the machine's host keys (for `sshd -T`), and empty unit
/// directories: what vakt's firewall resource reads on a live host.
pub fn fresh_ufw_tree(root: &str) -> String {
    format!(
        "mkdir -p {root}/etc/default {root}/run/sshd {root}/etc/ssh {root}/etc/systemd/system {root}/lib/systemd/system
         cp -a /etc/ufw {root}/etc/ufw
         for f in user.rules user6.rules ufw.conf; do cp /usr/share/ufw/$f {root}/etc/ufw/$f; done
         cp /etc/default/ufw {root}/etc/default/ufw
         sed -i -e 's/^IPV6=.*/IPV6=yes/' -e 's/^DEFAULT_INPUT_POLICY=.*/DEFAULT_INPUT_POLICY=\"DROP\"/' \
             -e 's/^DEFAULT_OUTPUT_POLICY=.*/DEFAULT_OUTPUT_POLICY=\"ACCEPT\"/' \
             -e 's/^DEFAULT_FORWARD_POLICY=.*/DEFAULT_FORWARD_POLICY=\"DROP\"/' {root}/etc/default/ufw
         printf 'Port 22\\n' > {root}/etc/ssh/sshd_config
         for k in /etc/ssh/ssh_host_*_key; do if [ -f \"$k\" ]; then cp -p \"$k\" {root}/etc/ssh/; fi; done"
    )
}

impl UfwSandbox {
    /// A fresh ufw (as packaged: disabled, no rules) in a new network namespace.
    pub fn new() -> UfwSandbox {
        let netns = format!("vakt-fw-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().display().to_string();
        sh(&format!(
            "{}
             cp -a /lib/ufw {root}/lib/ufw
             ip netns add {netns}
             ip netns exec {netns} ip link set lo up",
            fresh_ufw_tree(&root)
        ));
        UfwSandbox { netns, dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel.trim_start_matches('/'))
    }

    /// `argv` inside the namespace, with the sandbox's ufw state mounted over the host paths (and
    /// its /var/lib over the machine's, when the tree has one: vakt's own state then stays in it).
    pub fn command(&self, argv: &[&str]) -> Command {
        let root = self.root().display().to_string();
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, "unshare", "-m", "--propagation", "private", "sh", "-ec"])
            .arg(format!(
                "for d in etc/ufw etc/default/ufw etc/ssh etc/systemd/system lib/systemd/system run; do \
                 mount --bind {root}/$d /$d; done; \
                 if [ -d {root}/var/lib ]; then mount --bind {root}/var/lib /var/lib; fi; exec \"$@\""
            ))
            .arg("sandbox")
            .args(argv)
            .env_remove("SSH_CONNECTION")
            .env("NO_COLOR", "1");
        c
    }

    /// vakt on the sandbox as its live host.
    pub fn vakt(&self, args: &[&str]) -> Run {
        let mut argv = vec![env!("CARGO_BIN_EXE_vakt")];
        argv.extend_from_slice(args);
        run(&mut self.command(&argv))
    }

    /// vakt preparing the sandbox tree offline, as an image (`--root`), still inside the
    /// namespace so that anything that did reach netfilter would be seen and contained.
    pub fn vakt_offline(&self, args: &[&str]) -> Run {
        let root = self.root().display().to_string();
        let mut argv = vec![env!("CARGO_BIN_EXE_vakt"), "--root", &root];
        argv.extend_from_slice(args);
        run(&mut self.command(&argv))
    }

    pub fn iptables_save(&self) -> String {
        let mut all = String::new();
        for tool in ["iptables-save", "ip6tables-save"] {
            let out = run(&mut self.command(&[tool]));
            all.extend(out.stdout.lines().filter(|l| !l.starts_with('#')).map(|l| format!("{l}\n")));
        }
        all
    }
}

impl Drop for UfwSandbox {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
    }
}
