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
    let docker_user = if host.is_live() {
        let ipv6 =
            host.read_opt("/etc/default/ufw").and_then(|d| super::setting(&d, "IPV6")).is_none_or(|v| v == "yes");
        super::read_netfilter(host, ipv6)
            .map_err(|e| anyhow::anyhow!("{e}; the revert could not put DOCKER-USER back"))?
            .into_iter()
            .map(|(v6, nf)| (v6, nf.docker_user))
            .collect()
    } else {
        Vec::new()
    };
    Ok(Snapshot { ufw_enabled: ufw_enabled(host), files, docker_user })
}

/// Puts DOCKER-USER back per family where it differs: the chain removed when there was none,
/// else loaded as it was (`iptables-restore --noflush`: declaring the chain flushes it, the
/// rest of the table stays). Returns what it did, or the errors.
fn put_back_docker_user(host: &Host, store: &Path, snap: &Snapshot) -> (Vec<String>, Vec<String>) {
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    if snap.docker_user.is_empty() {
        return (done, failed);
    }
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
                let file = store.join(format!("docker-user.{}.rules", if *v6 { "v6" } else { "v4" }));
                let text = format!(
                    "*filter\n:DOCKER-USER - [0:0]\n{}COMMIT\n",
                    rules.iter().map(|r| format!("{r}\n")).collect::<String>()
                );
                crate::fsutil::write_atomic(&file, text.as_bytes(), false).and_then(|()| {
                    let file = file.to_string_lossy();
                    host.runner
                        .run_ok(&[&format!("{tool}-restore"), "--noflush", &file], UFW_TIMEOUT)
                        .map(|_| format!("loaded DOCKER-USER ({family}) as it was: {} rules", rules.len()))
                })
            }
        };
        match result {
            Ok(line) => done.push(line),
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    (done, failed)
}

/// Puts every kept file back where it differs (content, mode or owner) and removes the ones
/// that did not exist. Returns what it changed; a file it could not put back is an error in
/// the list, and the others are still put back.
fn put_back(host: &Host, store: &Path, snap: &Snapshot) -> (Vec<String>, Vec<String>) {
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
            Ok(Some(line)) => done.push(line),
            Ok(None) => {}
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    (done, failed)
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
    let (mut done, mut failed) = put_back(host, store, snap);
    let switch: Option<&[&str]> = match (snap.ufw_enabled, enabled_now) {
        (true, false) => Some(&["ufw", "reload"]),
        (true, true) if !done.is_empty() => Some(&["ufw", "reload"]),
        (false, true) => Some(&["ufw", "disable"]),
        _ => None,
    };
    if let Some(argv) = switch {
        match host.runner.run_ok(argv, UFW_TIMEOUT) {
            Ok(_) => done.push(format!("ran `{}`", argv.join(" "))),
            Err(e) => failed.push(format!("`{}` failed: {e:#}", argv.join(" "))),
        }
        let (again, still) = put_back(host, store, snap);
        if !again.is_empty() {
            tracing::debug!("after {}: {}", argv.join(" "), again.join("; "));
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
    fn an_unreadable_file_refuses_the_snapshot() {
        let root = tree(&[("/etc/ufw/ufw.conf", "ENABLED=yes\n")]);
        std::fs::create_dir_all(root.path().join("etc/ufw/user.rules")).expect("a directory");
        let store = tempfile::tempdir().expect("store");
        let e = take(&Host::new(root.path()), store.path()).expect_err("a directory where a file belongs");
        assert!(format!("{e:#}").contains("failed to keep") && format!("{e:#}").contains("user.rules"), "{e:#}");
    }
}
