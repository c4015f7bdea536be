//! Reads of host files that cannot hang or swallow memory, file writes that are atomic and
//! keep the previous version, and the apply lock.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The most vakt reads of one host file: far above any configuration, rules file or kernel
/// table it reads, far below what would hurt a small VPS.
pub const READ_LIMIT: u64 = 64 << 20;

/// Reads a host file, which a local user may have replaced with something hostile: opened
/// without blocking (a FIFO would otherwise hang the open until a writer came) and without
/// taking a controlling terminal, refused unless it is a regular file (naming what it is),
/// and refused when larger than [`READ_LIMIT`].
pub fn read_file(path: impl AsRef<Path>) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind};
    let path = path.as_ref();
    let mut file = fs::OpenOptions::new().read(true).custom_flags(libc_flags()).open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_dir() {
            "a directory"
        } else {
            "not a file"
        };
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{} is {what}, not a regular file; vakt reads only regular files there", path.display()),
        ));
    }
    read_bounded(&mut file, &meta)?.ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidData,
            format!("{} is larger than {} MiB; vakt does not read it", path.display(), READ_LIMIT >> 20),
        )
    })
}

/// The whole of an opened regular file, or `None` when it holds more than [`READ_LIMIT`].
fn read_bounded(file: &mut File, meta: &fs::Metadata) -> std::io::Result<Option<Vec<u8>>> {
    // Room for the size it has now (a file of /proc says 0), so that it is read in one call,
    // not in growing steps; what it has grown to meanwhile is read all the same.
    let mut out = Vec::with_capacity(usize::try_from(meta.len().min(READ_LIMIT) + 1).unwrap_or(0));
    file.take(READ_LIMIT + 1).read_to_end(&mut out)?;
    Ok((out.len() as u64 <= READ_LIMIT).then_some(out))
}

/// Whether `dir` is a directory of this user's that no one else may write to, not reached
/// through a link: where vakt keeps what it learnt between runs (`/run/vakt`), so that what it
/// reads back there is its own.
pub fn is_own_dir(dir: &Path) -> bool {
    let own = fs::symlink_metadata(dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == nix::unistd::geteuid().as_raw() && m.mode() & 0o022 == 0);
    if !own {
        tracing::debug!("{} is not a directory only this user may write to; nothing is kept there", dir.display());
    }
    own
}

/// A file vakt kept for itself, as [`read_file`] reads one, and only if no one else can have
/// written it: in an [own directory](is_own_dir), not reached through a link, this user's and
/// writable by it alone.
pub fn read_own(path: &Path) -> Option<Vec<u8>> {
    if !path.parent().is_some_and(is_own_dir) {
        return None;
    }
    let flags = libc_flags() | nix::fcntl::OFlag::O_NOFOLLOW.bits();
    let mut file = fs::OpenOptions::new().read(true).custom_flags(flags).open(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o022 != 0 {
        tracing::debug!("{} is not a file only this user may have written; it is not used", path.display());
        return None;
    }
    read_bounded(&mut file, &meta).ok().flatten()
}

/// Makes `dir` (0755, parents too) where vakt keeps what it learnt between runs, and says
/// whether it is [its own](is_own_dir): only then is anything written there.
pub fn make_own_dir(dir: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    Ok(is_own_dir(dir))
}

/// What a cache keyed on a file can tell of it without reading it: its identity, size and
/// times (links followed), or `absent`. Any write, rename over it or chmod changes it.
pub fn stamp(path: impl AsRef<Path>) -> String {
    match fs::metadata(path) {
        Ok(m) => format!(
            "{} {} {} {}.{} {}.{}",
            m.mode(),
            m.ino(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        ),
        Err(_) => "absent".to_string(),
    }
}

/// [`read_file`] as UTF-8 text.
pub fn read_text(path: impl AsRef<Path>) -> std::io::Result<String> {
    let path = path.as_ref();
    String::from_utf8(read_file(path)?).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is not UTF-8 text", path.display()))
    })
}

/// `O_NONBLOCK | O_NOCTTY`.
fn libc_flags() -> i32 {
    (nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY).bits()
}

/// Replaces `path` with `content` atomically: a temp file in the same directory, fsync,
/// rename, fsync the directory. The new file takes the mode and owner of the one it replaces
/// (0644 for a new file). With `keep_previous`, the old content is first kept, just as
/// atomically, as `<path>.vakt-prev`.
///
/// A symbolic link at `path` is written through only when it points to a regular file in the
/// same directory (Debian's alternatives-style `after.rules -> after.rules.local`); a link
/// anywhere else (`daemon.json -> /etc/passwd`), to something other than a regular file, or
/// dangling is refused, naming the link, and nothing is written.
pub fn write_atomic(path: &Path, content: &[u8], keep_previous: bool) -> anyhow::Result<()> {
    let target = link_target(path)?;
    let path = target.as_deref().unwrap_or(path);
    let dir = path.parent().with_context(|| format!("{} has no parent directory", path.display()))?;
    let old = fs::metadata(path).ok();
    if keep_previous && old.is_some() {
        let previous = fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
        let backup = backup_path(path);
        replace(dir, &backup, &previous, old.as_ref())?;
        crate::failpoint::hit("write-after-backup");
    }
    replace(dir, path, content, old.as_ref())
}

/// Where a write to `path` goes when `path` is a symbolic link vakt may follow; see
/// [`write_atomic`].
fn link_target(path: &Path) -> anyhow::Result<Option<std::path::PathBuf>> {
    let is_link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link {
        return Ok(None);
    }
    let refuse = |why: String| {
        anyhow::anyhow!(
            "{} is a symbolic link {why}; vakt writes through a link only to a regular file in the same directory: replace the link with the file itself",
            path.display()
        )
    };
    let target = fs::canonicalize(path).map_err(|e| refuse(format!("that does not resolve ({e})")))?;
    let dir = path.parent().and_then(|d| fs::canonicalize(d).ok());
    if target.parent() != dir.as_deref() {
        return Err(refuse(format!("to {}, outside its directory", target.display())));
    }
    if !fs::metadata(&target).is_ok_and(|m| m.is_file()) {
        return Err(refuse(format!("to {}, which is not a regular file", target.display())));
    }
    Ok(Some(target))
}

pub fn backup_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".vakt-prev");
    path.with_file_name(name)
}

fn replace(dir: &Path, path: &Path, content: &[u8], like: Option<&fs::Metadata>) -> anyhow::Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".vakt-")
        .tempfile_in(dir)
        .with_context(|| format!("failed to create a temporary file in {}", dir.display()))?;
    crate::failpoint::hit("write-before-temp");
    let written = tmp
        .write_all(content)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("failed to write a temporary file in {} (disk full or read-only?)", dir.display()));
    written?;
    let mode = like.map_or(0o644, |m| m.mode() & 0o7777);
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode))
        .with_context(|| format!("failed to set the mode of {}", tmp.path().display()))?;
    if let Some(m) = like {
        // Only root can give a file away; as another user the file stays ours.
        let _ = std::os::unix::fs::chown(tmp.path(), Some(m.uid()), Some(m.gid()));
    }
    crate::failpoint::hit("write-before-rename");
    tmp.persist(path).with_context(|| format!("failed to rename a temporary file onto {}", path.display()))?;
    crate::failpoint::hit("write-after-rename");
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("failed to sync directory {}", dir.display()))?;
    Ok(())
}

/// A service restart or reload that must still happen: set before a managed file is
/// replaced, cleared once the service runs on it. If vakt dies in between, the next run sees
/// the marker and restarts the service, though the file already matches. It lives in /run,
/// so a reboot (which restarts everything anyway) clears it.
pub struct Pending {
    path: std::path::PathBuf,
}

impl Pending {
    /// The marker for `service` under the host's root (`/run/vakt/SERVICE.pending`).
    pub fn new(root: &Path, service: &str) -> Pending {
        Pending { path: crate::rooted::under(root, format!("/run/vakt/{service}.pending")) }
    }

    pub fn is_set(&self) -> bool {
        self.path.exists()
    }

    pub fn set(&self) -> anyhow::Result<()> {
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
        }
        File::create(&self.path).with_context(|| format!("failed to create {}", self.path.display()))?;
        Ok(())
    }

    pub fn clear(&self) -> anyhow::Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("failed to remove {}", self.path.display()))
            }
            _ => Ok(()),
        }
    }
}

/// Held for the whole of `vakt apply`, so that two runs never interleave; released on drop.
#[derive(Debug)]
pub struct ApplyLock {
    _guard: nix::fcntl::Flock<File>,
}

const LOCK_WAIT: Duration = Duration::from_secs(300);

/// Takes `/run/vakt.lock` (under the root); waits for another apply, with a message, up to a bound.
pub fn lock_apply(root: &Path) -> anyhow::Result<ApplyLock> {
    lock_apply_within(root, LOCK_WAIT)
}

/// [`lock_apply`] with another bound: the firewall's revert waits out an apply however long
/// it runs (packages, a Docker restart), since giving up would leave the change in place.
pub fn lock_apply_within(root: &Path, bound: Duration) -> anyhow::Result<ApplyLock> {
    lock_with_bound(&crate::rooted::under(root, "/run/vakt.lock"), bound)
}

fn lock_with_bound(path: &Path, bound: Duration) -> anyhow::Result<ApplyLock> {
    use nix::fcntl::{Flock, FlockArg};
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    }
    let started = Instant::now();
    let mut told = false;
    let mut file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("failed to open the apply lock {}", path.display()))?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(guard) => {
                crate::failpoint::hit("apply-locked");
                return Ok(ApplyLock { _guard: guard });
            }
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                if !told {
                    eprintln!(
                        "vakt: another `vakt apply` holds {}; waiting up to {}s",
                        path.display(),
                        bound.as_secs()
                    );
                    told = true;
                }
                if started.elapsed() > bound {
                    bail!(
                        "another `vakt apply` still holds {} after {}s; try again later",
                        path.display(),
                        bound.as_secs()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
                file = f;
            }
            Err((_, e)) => bail!("failed to lock {}: {e}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_follow_a_link_only_to_a_file_beside_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let passwd = outside.path().join("passwd");
        fs::write(&passwd, "root:x:0:0\n").expect("passwd");
        let link = dir.path().join("after.rules");
        std::os::unix::fs::symlink(&passwd, &link).expect("link");
        let e = write_atomic(&link, b"vakt", true).expect_err("outside its directory");
        assert!(
            e.to_string().contains("after.rules is a symbolic link to")
                && e.to_string().contains("outside its directory"),
            "{e}"
        );
        assert_eq!(fs::read(&passwd).expect("passwd"), b"root:x:0:0\n", "the target is untouched");
        assert!(fs::symlink_metadata(&link).expect("link").file_type().is_symlink(), "the link stays");
        assert!(!backup_path(&link).exists());

        // A link to a file in the same directory is written through, and stays a link.
        fs::remove_file(&link).expect("rm");
        let local = dir.path().join("after.rules.local");
        fs::write(&local, "old").expect("local");
        std::os::unix::fs::symlink("after.rules.local", &link).expect("link");
        write_atomic(&link, b"new", true).expect("beside it");
        assert_eq!(fs::read(&local).expect("local"), b"new");
        assert!(fs::symlink_metadata(&link).expect("link").file_type().is_symlink());
        assert_eq!(fs::read(backup_path(&local)).expect("backup"), b"old");

        // Dangling, or to a directory: refused.
        fs::remove_file(&link).expect("rm");
        std::os::unix::fs::symlink("gone", &link).expect("link");
        assert!(write_atomic(&link, b"x", false).expect_err("dangling").to_string().contains("does not resolve"));
        fs::remove_file(&link).expect("rm");
        fs::create_dir(dir.path().join("d")).expect("dir");
        std::os::unix::fs::symlink("d", &link).expect("link");
        assert!(write_atomic(&link, b"x", false).expect_err("dir").to_string().contains("not a regular file"));
    }

    #[test]
    fn reads_refuse_fifos_devices_and_huge_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("after.rules");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR).expect("mkfifo");
        let e = read_text(&fifo).expect_err("a FIFO");
        assert!(e.to_string().contains("after.rules is a FIFO, not a regular file"), "{e}");
        let e = read_file("/dev/zero").expect_err("a device");
        assert!(e.to_string().contains("is a device"), "{e}");
        let e = read_file(dir.path()).expect_err("a directory");
        assert!(e.to_string().contains("is a directory"), "{e}");
        let big = dir.path().join("big");
        File::create(&big).expect("create").set_len(READ_LIMIT + 1).expect("sparse");
        let e = read_file(&big).expect_err("too large");
        assert!(e.to_string().contains("larger than 64 MiB"), "{e}");
        fs::write(&big, "ok").expect("write");
        assert_eq!(read_text(&big).expect("regular"), "ok");
    }

    #[test]
    fn atomic_write_keeps_previous_and_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("daemon.json");
        write_atomic(&path, b"old", true).expect("first write");
        assert_eq!(fs::metadata(&path).expect("meta").mode() & 0o777, 0o644);
        assert!(!backup_path(&path).exists(), "nothing to keep on the first write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        write_atomic(&path, b"new", true).expect("second write");
        assert_eq!(fs::read(&path).expect("read"), b"new");
        assert_eq!(fs::read(backup_path(&path)).expect("backup"), b"old");
        assert_eq!(fs::metadata(&path).expect("meta").mode() & 0o777, 0o600);
        let leftovers = fs::read_dir(dir.path())
            .expect("ls")
            .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().starts_with(".vakt-")))
            .count();
        assert_eq!(leftovers, 0, "no temporary file left behind");
    }

    #[test]
    fn second_lock_waits_then_gives_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run/vakt.lock");
        let first = lock_with_bound(&path, Duration::from_secs(1)).expect("first lock");
        let e = lock_with_bound(&path, Duration::from_millis(300)).expect_err("second waits then fails");
        assert!(e.to_string().contains("still holds"), "{e}");
        drop(first);
        lock_with_bound(&path, Duration::from_millis(300)).expect("free again");
    }
}
