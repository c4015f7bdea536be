//! `sshd -T`'s ports kept between runs: sshd takes about 18 ms of CPU to start and dump its
//! configuration, the dearest process of a converged audit, and answers the same while its
//! configuration is the same. The answer is kept in `/run/vakt/sshd-ports` (memory, gone at
//! boot) under a stamp of everything it came from: each configuration file and directory
//! sshd reads and the sshd binary, by inode, size, mtime and ctime. Any edit, rename, new
//! drop-in or upgrade changes the stamp, and sshd is asked again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::host::Host;

const KEPT: &str = "/run/vakt/sshd-ports";

/// The stamp of `paths` (as on the host) and of `binary`: one line each, absent ones too.
pub fn stamp(host: &Host, paths: &[PathBuf], binary: Option<&Path>) -> String {
    let line = |p: &Path, full: PathBuf| format!("{} {}\n", p.display(), crate::fsutil::stamp(full));
    let mut out: String = paths.iter().map(|p| line(p, host.path(p))).collect();
    match binary {
        Some(b) => out += &line(b, b.to_path_buf()),
        None => out += "sshd not found\n",
    }
    out
}

/// The ports kept under `stamp`, if the stamp is the same and the file is whole (it ends in
/// the newline it was written with: a file cut short could name another port).
pub fn read(host: &Host, stamp: &str) -> Option<BTreeSet<u16>> {
    let text = String::from_utf8(crate::fsutil::read_own(&host.path(KEPT))?).ok()?;
    let (kept, ports) = text.split_once("--\n")?;
    let ports = ports.strip_suffix('\n').filter(|p| !p.contains('\n'))?;
    if kept != stamp {
        return None;
    }
    let ports: Option<BTreeSet<u16>> = ports.split_whitespace().map(|p| p.parse().ok()).collect();
    ports.filter(|p| !p.is_empty())
}

/// Keeps `ports` under `stamp`; where /run/vakt cannot be written (a sandbox, no root) the
/// next run asks sshd again.
pub fn write(host: &Host, stamp: &str, ports: &BTreeSet<u16>) {
    let path = host.path(KEPT);
    let text = format!("{stamp}--\n{}\n", ports.iter().map(u16::to_string).collect::<Vec<_>>().join(" "));
    let own = path.parent().map_or(Ok(true), crate::fsutil::make_own_dir).map_err(anyhow::Error::from);
    let written = own.and_then(|own| match own {
        true => crate::fsutil::write_atomic(&path, text.as_bytes(), false),
        false => Ok(()),
    });
    if let Err(e) = written {
        tracing::debug!("could not keep sshd -T's ports in {}: {e:#}", path.display());
    }
}

/// Where `sshd` is found on PATH: the file the runner runs.
pub fn binary() -> Option<PathBuf> {
    crate::runner::find_on_path("sshd")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_answer_holds_only_while_the_stamp_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = Host::new(dir.path());
        std::fs::create_dir_all(dir.path().join("etc/ssh")).expect("mkdir");
        std::fs::write(dir.path().join("etc/ssh/sshd_config"), "Port 2222\n").expect("config");
        let files = [PathBuf::from("/etc/ssh/sshd_config"), PathBuf::from("/etc/ssh/sshd_config.d")];
        let before = stamp(&host, &files, None);
        assert!(read(&host, &before).is_none(), "nothing kept yet");
        write(&host, &before, &[2222].into());
        assert_eq!(read(&host, &before), Some([2222].into()));
        // An edit of the same size still moves ctime/mtime; a new drop-in directory appears.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(dir.path().join("etc/ssh/sshd_config"), "Port 2223\n").expect("config");
        let edited = stamp(&host, &files, None);
        assert_ne!(edited, before);
        assert!(read(&host, &edited).is_none(), "an edited configuration is asked again");
        std::fs::create_dir(dir.path().join("etc/ssh/sshd_config.d")).expect("mkdir");
        assert_ne!(stamp(&host, &files, None), edited);
        // A damaged file keeps nothing.
        std::fs::write(dir.path().join("run/vakt/sshd-ports"), format!("{edited}--\nx\n")).expect("write");
        assert!(read(&host, &edited).is_none());
        // Cut short, it could name another port (2222 22 cut to 2222 2): nothing is read.
        let file = dir.path().join("run/vakt/sshd-ports");
        write(&host, &edited, &[22, 2222].into());
        let whole = std::fs::read(&file).expect("kept");
        assert_eq!(read(&host, &edited), Some([22, 2222].into()));
        for cut in 1..=3 {
            std::fs::write(&file, &whole[..whole.len() - cut]).expect("cut");
            assert_eq!(read(&host, &edited), None, "{cut} bytes cut off");
        }
        // Whole, but reached through a link: not used.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, &whole).expect("write");
        std::fs::remove_file(&file).expect("rm");
        std::os::unix::fs::symlink(&elsewhere, &file).expect("symlink");
        assert_eq!(read(&host, &edited), None, "through a link");
    }
}
