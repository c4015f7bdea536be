//! ufw's state as it was before a confirmed apply (`vakt apply --confirm`), kept so that the
//! revert can put it back: every file ufw or vakt's firewall resource may change, byte for
//! byte with its mode and owner (or its absence), and whether ufw was enabled.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::host::Host;

/// What a firewall apply can change. ufw itself: `ufw allow|insert|delete` rewrite the rules
/// files, `ufw default` /etc/default/ufw, `ufw enable|disable` ufw.conf. vakt: its block in the
/// after files, keeping the previous ones as `*.vakt-prev`. ufw loads the before files and its
/// sysctl.conf with them, so they are kept too: what is restored is everything ufw reads.
/// vakt writes no sshd state; sshd's side of access is this firewall.
pub const FILES: &[&str] = &[
    "/etc/ufw/ufw.conf",
    "/etc/default/ufw",
    "/etc/ufw/user.rules",
    "/etc/ufw/user6.rules",
    "/etc/ufw/before.rules",
    "/etc/ufw/before6.rules",
    "/etc/ufw/after.rules",
    "/etc/ufw/after6.rules",
    "/etc/ufw/after.rules.vakt-prev",
    "/etc/ufw/after6.rules.vakt-prev",
    "/etc/ufw/sysctl.conf",
];

const UFW_TIMEOUT: Duration = Duration::from_secs(120);

/// One kept file: where it lives on the host, and whether it existed (with its mode and owner).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub path: PathBuf,
    pub existed: bool,
    #[serde(default)]
    pub mode: u32,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
}

/// ufw's state before the apply; the files' content lies under `files/` of the pending
/// directory, at their host paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub ufw_enabled: bool,
    pub files: Vec<Kept>,
    /// DOCKER-USER per family on a live host: (IPv6, its rules as `iptables-save` prints
    /// them; `None` when there was no such chain). ufw loads that chain only through vakt's
    /// block in after.rules and never flushes it, so `ufw reload` alone would leave the
    /// change's rules there.
    #[serde(default)]
    pub docker_user: Vec<(bool, Option<Vec<String>>)>,
    /// ufw's chains per family as the kernel held them (IPv6, the table), which the revert
    /// loads back in one step when the chains are the same ones.
    #[serde(default)]
    pub ufw_tables: Vec<(bool, UfwTable)>,
}

/// ufw's part of one family's filter table, as `iptables-save -t filter` prints it: the
/// built-in chains' policies (`ufw default`), ufw's chains, their rules, and the built-in
/// chains' jumps into them (the same for every enabled ufw of one configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UfwTable {
    pub policies: Vec<String>,
    pub chains: Vec<String>,
    pub rules: Vec<String>,
    pub hooks: Vec<String>,
}

impl UfwTable {
    /// Takes one line of `iptables-save` output, if it is ufw's.
    pub fn take(&mut self, line: &str) {
        let is_ufw = |chain: &str| chain.starts_with("ufw-") || chain.starts_with("ufw6-");
        let built_in = |chain: &str| matches!(chain, "INPUT" | "FORWARD" | "OUTPUT");
        if let Some(decl) = line.strip_prefix(':') {
            let mut words = decl.split(' ');
            let (Some(chain), Some(policy)) = (words.next(), words.next()) else { return };
            if built_in(chain) {
                self.policies.push(format!(":{chain} {policy}"));
            } else if is_ufw(chain) {
                self.chains.push(chain.to_string());
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule.split(' ').next().unwrap_or_default();
            if is_ufw(chain) {
                self.rules.push(line.to_string());
            } else if built_in(chain) && rule.split(' ').skip_while(|w| *w != "-j").nth(1).is_some_and(is_ufw) {
                self.hooks.push(line.to_string());
            }
        }
    }

    /// Whether `self` can be loaded over `now` in place: ufw's chains are the same ones, and
    /// the built-in chains jump into them the same way, so loading its chains (which flushes
    /// each) and the policies leaves the table as it was, Docker's rules untouched.
    pub fn loads_over(&self, now: &UfwTable) -> bool {
        !self.chains.is_empty() && self.chains == now.chains && self.hooks == now.hooks
    }

    /// The table as `iptables-restore --noflush` input.
    pub fn restore_text(&self) -> String {
        let mut text = String::from("*filter\n");
        for policy in &self.policies {
            text += &format!("{policy} [0:0]\n");
        }
        for chain in &self.chains {
            text += &format!(":{chain} - [0:0]\n");
        }
        for rule in &self.rules {
            text += rule;
            text.push('\n');
        }
        text + "COMMIT\n"
    }
}

/// Where the content of the host file `path` is kept in `store`.
fn kept_at(store: &Path, path: &Path) -> PathBuf {
    store.join("files").join(path.strip_prefix("/").unwrap_or(path))
}

fn ufw_enabled(host: &Host) -> bool {
    host.read_opt("/etc/ufw/ufw.conf").and_then(|c| super::setting(&c, "ENABLED")).is_some_and(|v| v == "yes")
}

/// Copies ufw's files into `store` (a fresh directory only root can read: the rules say what
/// the host admits). A file that cannot be read, other than one that is absent, refuses the
/// snapshot: a revert that could not put it back would be no guard.
pub fn take(host: &Host, store: &Path) -> anyhow::Result<Snapshot> {
    let mut files = Vec::new();
    for path in FILES {
        let full = host.path(path);
        let content = match crate::fsutil::read_file(&full) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            other => Some(other.with_context(|| format!("failed to keep {} for the revert", full.display()))?),
        };
        let Some(content) = content else {
            files.push(Kept { path: path.into(), existed: false, mode: 0, uid: 0, gid: 0 });
            continue;
        };
        let meta = std::fs::metadata(&full).with_context(|| format!("failed to stat {}", full.display()))?;
        let at = kept_at(store, Path::new(path));
        if let Some(dir) = at.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
        }
        crate::fsutil::write_atomic(&at, &content, false)?;
        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("failed to set the mode of {}", at.display()))?;
        files.push(Kept {
            path: path.into(),
            existed: true,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        });
    }
    let netfilter = if host.is_live() {
        let ipv6 =
            host.read_opt("/etc/default/ufw").and_then(|d| super::setting(&d, "IPV6")).is_none_or(|v| v == "yes");
        super::read_netfilter(host, ipv6)
            .map_err(|e| anyhow::anyhow!("{e}; the revert could not put DOCKER-USER back"))?
    } else {
        Vec::new()
    };
    let docker_user = netfilter.iter().map(|(v6, nf)| (*v6, nf.docker_user.clone())).collect();
    // Every family read, ufw's chains loaded or not: a family with none is one the revert
    // leaves to `ufw reload`.
    let ufw_tables = netfilter.into_iter().map(|(v6, nf)| (v6, nf.ufw)).collect();
    Ok(Snapshot { ufw_enabled: ufw_enabled(host), files, docker_user, ufw_tables })
}

/// Puts DOCKER-USER back per family where it differs: the chain removed when there was none,
/// else loaded as it was (`iptables-restore --noflush`: declaring the chain flushes it, the
/// rest of the table stays). Returns what it did, or the errors.
fn put_back_docker_user(host: &Host, store: &Path, snap: &Snapshot) -> (Vec<String>, Vec<String>) {
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    if snap.docker_user.is_empty() {
        return (done, failed);
    }
    // The tables as they are now, after the revert's own loads.
    host.forget_observations();
    let now = match super::read_netfilter(host, snap.docker_user.iter().any(|(v6, _)| *v6)) {
        Ok(now) => now,
        Err(e) => return (done, vec![e]),
    };
    for (v6, was) in &snap.docker_user {
        let is = now.iter().find(|(f, _)| f == v6).and_then(|(_, nf)| nf.docker_user.clone());
        if is == *was {
            continue;
        }
        let family = super::family(*v6);
        let tool = if *v6 { "ip6tables" } else { "iptables" };
        let result = match was {
            None => host
                .runner
                .run_ok(&[tool, "-F", "DOCKER-USER"], UFW_TIMEOUT)
                .and_then(|_| host.runner.run_ok(&[tool, "-X", "DOCKER-USER"], UFW_TIMEOUT))
                .map(|_| format!("removed DOCKER-USER ({family}), which did not exist before")),
            Some(rules) => {
                let text = format!(
                    "*filter\n:DOCKER-USER - [0:0]\n{}COMMIT\n",
                    rules.iter().map(|r| format!("{r}\n")).collect::<String>()
                );
                load_noflush(host, store, "docker-user", *v6, &text)
                    .map(|()| format!("loaded DOCKER-USER ({family}) as it was: {} rules", rules.len()))
            }
        };
        match result {
            Ok(line) => done.push(line),
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    (done, failed)
}

/// Loads `text` (`iptables-restore` input) into one family's tables without flushing the
/// rest: the chains it declares are flushed and refilled, the others stay. The input is kept
/// in `store` as `NAME.v4.rules` or `NAME.v6.rules`.
fn load_noflush(host: &Host, store: &Path, name: &str, v6: bool, text: &str) -> anyhow::Result<()> {
    let file = store.join(format!("{name}.{}.rules", if v6 { "v6" } else { "v4" }));
    crate::fsutil::write_atomic(&file, text.as_bytes(), false)?;
    let tool = if v6 { "ip6tables-restore" } else { "iptables-restore" };
    host.runner.run_ok(&[tool, "--noflush", &file.to_string_lossy()], UFW_TIMEOUT)?;
    Ok(())
}

/// Puts every kept file back where it differs (content, mode or owner) and removes the ones
/// that did not exist. Returns what it changed; a file it could not put back is an error in
/// the list, and the others are still put back.
fn put_back<'s>(host: &Host, store: &Path, snap: &'s Snapshot) -> (Vec<(&'s Path, String)>, Vec<String>) {
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    for kept in &snap.files {
        let full = host.file_path(&kept.path);
        let result = if kept.existed {
            put_file(&full, &kept_at(store, &kept.path), kept)
                .map(|changed| changed.then(|| format!("restored {}", full.display())))
        } else {
            match std::fs::remove_file(&full) {
                Ok(()) => Ok(Some(format!("removed {} (it did not exist before)", full.display()))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(anyhow::anyhow!("failed to remove {}: {e}", full.display())),
            }
        };
        match result {
            Ok(Some(line)) => done.push((kept.path.as_path(), line)),
            Ok(None) => {}
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    (done, failed)
}

/// Loads ufw's chains back as the snapshot found them, one `iptables-restore --noflush` per
/// family, when that is the whole of what `ufw reload` would do: ufw is enabled, in each
/// family its chains and the jumps into them are the same ones (a family whose chains came or
/// went is not), and its sysctl.conf is as it was. One atomic load takes a fraction of a
/// second where `ufw reload` runs its many commands (seconds on a slow host, while the
/// operator waits for access). The load is judged by the tables it leaves: an error means
/// `ufw reload` must follow. Returns what it did, or `None` when only `ufw reload` will do.
fn load_ufw_tables(host: &Host, store: &Path, snap: &Snapshot) -> Option<anyhow::Result<Vec<String>>> {
    let loads: Vec<&(bool, UfwTable)> = snap.ufw_tables.iter().filter(|(_, t)| !t.chains.is_empty()).collect();
    if loads.is_empty() {
        return None;
    }
    let saved = |v6: bool| loads.iter().find(|(f, _)| *f == v6).map(|(_, t)| t);
    host.forget_observations();
    let now = super::read_netfilter(host, true).ok()?;
    let fits = now.iter().all(|(v6, nf)| match saved(*v6) {
        Some(was) => was.loads_over(&nf.ufw),
        None => !nf.ufw_loaded,
    });
    if !fits {
        return None;
    }
    let load = |(v6, was): &(bool, UfwTable)| -> anyhow::Result<String> {
        load_noflush(host, store, "ufw", *v6, &was.restore_text())?;
        Ok(format!(
            "loaded ufw's chains ({}) as they were: {} rules in {} chains",
            super::family(*v6),
            was.rules.len(),
            was.chains.len()
        ))
    };
    let done = match loads.iter().map(|l| load(l)).collect::<anyhow::Result<Vec<String>>>() {
        Ok(done) => done,
        Err(e) => return Some(Err(e)),
    };
    host.forget_observations();
    let after = match super::read_netfilter(host, true) {
        Ok(after) => after,
        Err(e) => return Some(Err(anyhow::anyhow!("{e}, after loading ufw's saved chains"))),
    };
    let same = loads.iter().all(|(v6, was)| {
        after.iter().any(|(f, nf)| {
            f == v6 && nf.ufw.rules == was.rules && nf.ufw.policies == was.policies && nf.ufw.chains == was.chains
        })
    });
    if !same {
        return Some(Err(anyhow::anyhow!("after loading ufw's saved chains the tables still differ from them")));
    }
    Some(Ok(done))
}

/// Writes the kept content to `full` when it, its mode or its owner differ; returns whether
/// something changed.
fn put_file(full: &Path, from: &Path, kept: &Kept) -> anyhow::Result<bool> {
    let want =
        crate::fsutil::read_file(from).with_context(|| format!("failed to read the kept copy {}", from.display()))?;
    let same_content = crate::fsutil::read_file(full).is_ok_and(|now| now == want);
    if !same_content {
        write_back(full, &want)?;
    }
    let meta = std::fs::metadata(full).with_context(|| format!("failed to stat {}", full.display()))?;
    let same_mode = meta.mode() & 0o7777 == kept.mode;
    let same_owner = (meta.uid(), meta.gid()) == (kept.uid, kept.gid);
    if !same_mode {
        std::fs::set_permissions(full, std::fs::Permissions::from_mode(kept.mode))
            .with_context(|| format!("failed to set the mode of {}", full.display()))?;
    }
    if !same_owner {
        std::os::unix::fs::chown(full, Some(kept.uid), Some(kept.gid))
            .with_context(|| format!("failed to set the owner of {}", full.display()))?;
    }
    Ok(!(same_content && same_mode && same_owner))
}

/// Writes `content` to `full` atomically; a file that is itself a mount point (a bind mount,
/// as containers and the test sandboxes make) cannot be renamed onto (EBUSY) and is written
/// in place instead, as ufw itself writes its files.
fn write_back(full: &Path, content: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let Err(e) = crate::fsutil::write_atomic(full, content, false) else { return Ok(()) };
    let busy = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error)
            == Some(nix::errno::Errno::EBUSY as i32)
            || c.downcast_ref::<tempfile::PersistError>().and_then(|p| p.error.raw_os_error())
                == Some(nix::errno::Errno::EBUSY as i32)
    });
    if !busy {
        return Err(e);
    }
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(full)
        .and_then(|mut f| f.write_all(content).and_then(|()| f.sync_all()))
        .with_context(|| format!("failed to write {} in place", full.display()))
}

/// Puts ufw back as the snapshot found it: the files, then netfilter through ufw as ufw itself
/// would load them (`ufw reload` when it was enabled, `ufw disable` when it was not and now
/// is), then the files once more, since ufw rewrites ufw.conf as it switches. Nothing is
/// reloaded when nothing differed: a needless reload drops connections. Returns what it did.
pub fn restore(host: &Host, store: &Path, snap: &Snapshot) -> anyhow::Result<Vec<String>> {
    let enabled_now = ufw_enabled(host);
    let (files, mut failed) = put_back(host, store, snap);
    let sysctl_changed = files.iter().any(|(path, _)| path.ends_with("sysctl.conf"));
    let mut done: Vec<String> = files.into_iter().map(|(_, line)| line).collect();
    let mut switch: Option<&[&str]> = match (snap.ufw_enabled, enabled_now) {
        (true, false) => Some(&["ufw", "reload"]),
        (true, true) if !done.is_empty() => Some(&["ufw", "reload"]),
        (false, true) => Some(&["ufw", "disable"]),
        _ => None,
    };
    if switch == Some(&["ufw", "reload"]) && enabled_now && !sysctl_changed {
        match load_ufw_tables(host, store, snap) {
            Some(Ok(loaded)) => {
                done.extend(loaded);
                switch = None;
            }
            Some(Err(e)) => tracing::warn!("loading ufw's chains failed ({e:#}); running `ufw reload` instead"),
            None => {}
        }
    }
    if let Some(argv) = switch {
        match host.runner.run_ok(argv, UFW_TIMEOUT) {
            Ok(_) => done.push(format!("ran `{}`", argv.join(" "))),
            Err(e) => failed.push(format!("`{}` failed: {e:#}", argv.join(" "))),
        }
        let (again, still) = put_back(host, store, snap);
        for (_, line) in again {
            tracing::debug!("after {}: {line}", argv.join(" "));
        }
        failed.extend(still);
    }
    let (chain, chain_failed) = put_back_docker_user(host, store, snap);
    done.extend(chain);
    failed.extend(chain_failed);
    if !failed.is_empty() {
        anyhow::bail!(
            "the revert is incomplete: {}; done: {}",
            failed.join("; "),
            if done.is_empty() { "nothing".into() } else { done.join("; ") }
        );
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        for (path, text) in files {
            let p = root.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        root
    }

    #[test]
    fn files_come_back_byte_for_byte_and_new_ones_go() {
        let root = tree(&[
            ("/etc/ufw/ufw.conf", "ENABLED=no\n"),
            ("/etc/default/ufw", "IPV6=yes\n"),
            ("/etc/ufw/user.rules", "*filter\n### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\nCOMMIT\n"),
        ]);
        let user = root.path().join("etc/ufw/user.rules");
        std::fs::set_permissions(&user, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let host = Host::new(root.path());
        let store = tempfile::tempdir().expect("store");
        let snap = take(&host, store.path()).expect("snapshot");
        assert!(!snap.ufw_enabled);
        let kept: Vec<&Path> = snap.files.iter().filter(|k| k.existed).map(|k| k.path.as_path()).collect();
        assert_eq!(
            kept,
            [Path::new("/etc/ufw/ufw.conf"), Path::new("/etc/default/ufw"), Path::new("/etc/ufw/user.rules")]
        );

        // What an apply does: a rule file rewritten with another mode, a new after.rules and its backup.
        std::fs::write(&user, "*filter\nCOMMIT\n").expect("write");
        std::fs::set_permissions(&user, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::fs::write(root.path().join("etc/ufw/after.rules"), "vakt block\n").expect("write");
        let done = restore(&host, store.path(), &snap).expect("restore");
        assert_eq!(
            std::fs::read_to_string(&user).expect("read"),
            "*filter\n### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\nCOMMIT\n"
        );
        assert_eq!(std::fs::metadata(&user).expect("meta").mode() & 0o777, 0o640);
        assert!(!root.path().join("etc/ufw/after.rules").exists());
        assert_eq!(done.len(), 2, "{done:?}");
        assert!(done.iter().any(|l| l.contains("removed") && l.contains("after.rules")), "{done:?}");
        // ufw was disabled and still is: nothing to switch, nothing ran.
        assert!(host.runner.commands().is_empty());

        // A second restore finds nothing to do.
        assert!(restore(&host, store.path(), &snap).expect("again").is_empty());
    }

    #[test]
    fn ufw_part_of_a_table_is_what_loads_back() {
        let save = "*filter\n:INPUT DROP [3:120]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [9:540]\n\
                    :DOCKER-USER - [0:0]\n:ufw-user-input - [0:0]\n:ufw-before-input - [0:0]\n\
                    -A INPUT -j ufw-before-input\n-A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-FORWARD\n\
                    -A DOCKER-USER -j RETURN\n-A ufw-before-input -j ufw-user-input\n\
                    -A ufw-user-input -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n";
        let mut table = UfwTable::default();
        save.lines().for_each(|l| table.take(l));
        assert_eq!(table.policies, [":INPUT DROP", ":FORWARD DROP", ":OUTPUT ACCEPT"]);
        assert_eq!(table.chains, ["ufw-user-input", "ufw-before-input"]);
        assert_eq!(table.hooks, ["-A INPUT -j ufw-before-input"]);
        assert_eq!(table.rules.len(), 2);
        assert_eq!(
            table.restore_text(),
            "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             :ufw-user-input - [0:0]\n:ufw-before-input - [0:0]\n\
             -A ufw-before-input -j ufw-user-input\n-A ufw-user-input -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n"
        );
        // Docker's chains and rules are not ufw's, and stay as they are.
        assert!(!table.restore_text().contains("DOCKER"));
        assert!(table.loads_over(&table.clone()));
        let mut other = table.clone();
        other.hooks.clear();
        assert!(!table.loads_over(&other), "ufw's jumps differ: only `ufw reload` knows them");
        assert!(!UfwTable::default().loads_over(&UfwTable::default()), "nothing saved: nothing to load");
    }

    #[test]
    fn an_unreadable_file_refuses_the_snapshot() {
        let root = tree(&[("/etc/ufw/ufw.conf", "ENABLED=yes\n")]);
        std::fs::create_dir_all(root.path().join("etc/ufw/user.rules")).expect("a directory");
        let store = tempfile::tempdir().expect("store");
        let e = take(&Host::new(root.path()), store.path()).expect_err("a directory where a file belongs");
        assert!(format!("{e:#}").contains("failed to keep") && format!("{e:#}").contains("user.rules"), "{e:#}");
    }
}
