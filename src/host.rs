//! The machine vakt works on: every host path resolved under `--root`, every command run
//! through one logged runner, and the Docker endpoint handed out from one place.

use std::io;
use std::path::{Path, PathBuf};

use crate::runner::Runner;

const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

#[derive(Debug)]
pub struct Host {
    root: PathBuf,
    pub runner: Runner,
    docker_host_env: Option<String>,
}

/// `path` (absolute, as on the live host) resolved under `root`.
pub fn under(root: &Path, path: impl AsRef<Path>) -> PathBuf {
    let path = path.as_ref();
    root.join(path.strip_prefix("/").unwrap_or(path))
}

impl Host {
    pub fn new(root: impl Into<PathBuf>) -> Host {
        Host { root: root.into(), runner: Runner::default(), docker_host_env: std::env::var("DOCKER_HOST").ok() }
    }

    /// Whether this is the running system (`--root /`): only then do CPUID, service restarts
    /// and the kernel's own view apply.
    pub fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }

    pub fn path(&self, path: impl AsRef<Path>) -> PathBuf {
        under(&self.root, path)
    }

    /// Reads a host file; the error names the resolved path.
    pub fn read(&self, path: impl AsRef<Path>) -> io::Result<String> {
        let full = self.path(path);
        std::fs::read_to_string(&full)
            .map_err(|e| io::Error::new(e.kind(), format!("failed to read {}: {e}", full.display())))
    }

    /// Reads a host file if it exists, trimmed; absent or unreadable is `None`.
    pub fn read_opt(&self, path: impl AsRef<Path>) -> Option<String> {
        std::fs::read_to_string(self.path(path)).ok().map(|s| s.trim().to_string())
    }

    /// The Engine API socket: the profile's `[docker] host`, else `DOCKER_HOST`, else the
    /// default socket under the root.
    pub fn docker_socket(&self, profile_host: Option<&str>) -> PathBuf {
        match profile_host.or(self.docker_host_env.as_deref()) {
            Some(endpoint) => PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint)),
            None => self.path(DEFAULT_DOCKER_SOCKET),
        }
    }

    /// Whether Docker is present: its bridge exists or its default socket does.
    pub fn runs_docker(&self) -> bool {
        self.path("/sys/class/net/docker0").exists() || self.docker_socket(None).exists()
    }

    /// Whether systemd manages this machine (and so `systemctl` is the way to restart services).
    pub fn has_systemd(&self) -> bool {
        self.path("/run/systemd/system").is_dir()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_under_the_root() {
        assert_eq!(under(Path::new("/tmp/r"), "/etc/ufw/user.rules"), PathBuf::from("/tmp/r/etc/ufw/user.rules"));
        assert_eq!(under(Path::new("/"), "/proc/stat"), PathBuf::from("/proc/stat"));
    }
}
