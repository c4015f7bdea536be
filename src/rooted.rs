//! Host paths under a root prefix (`--root`), resolved the way `chroot` would see them. A
//! leaf: the profile finds `/etc/vakt` with it, and `Host` resolves every other path.

use std::path::{Path, PathBuf};

/// `path` (absolute, as on the live host) resolved under `root` the way `chroot` would see it:
/// `..` stops at the root and symlinks (absolute or relative) are followed inside the root,
/// so nothing under a prepared image can point vakt at the build host's own files.
pub fn under(root: &Path, path: impl AsRef<Path>) -> PathBuf {
    let path = path.as_ref();
    if root == Path::new("/") {
        return path.to_path_buf();
    }
    let mut inside = PathBuf::new();
    let mut todo: std::collections::VecDeque<std::ffi::OsString> =
        path.components().filter_map(|c| normal(c).map(Into::into)).collect();
    // More hops than the kernel's own limit (40): a longer chain fails with ELOOP there too.
    let mut hops = 0;
    while let Some(part) = todo.pop_front() {
        if part == ".." {
            inside.pop();
            continue;
        }
        let next = inside.join(&part);
        let full = root.join(&next);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                let Some(target) = std::fs::read_link(&full).ok().filter(|_| hops <= 64) else {
                    // A path no file can have (it holds a NUL): every open of it fails, where
                    // the kernel would follow the link out of the root.
                    return root.join("symlink-loop\0");
                };
                if target.is_absolute() {
                    inside.clear();
                }
                for c in target.components().rev().filter_map(normal) {
                    todo.push_front(c.into());
                }
            }
            _ => inside = next,
        }
    }
    root.join(inside)
}

/// A path component as a name to walk (`..` kept, `/` and `.` dropped).
fn normal(c: std::path::Component<'_>) -> Option<&std::ffi::OsStr> {
    match c {
        std::path::Component::Normal(n) => Some(n),
        std::path::Component::ParentDir => Some("..".as_ref()),
        _ => None,
    }
}
