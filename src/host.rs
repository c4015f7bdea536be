//! The machine vakt works on: every host path resolved under `--root`, every command run
//! through one logged runner, and the Docker endpoint handed out from one place.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine_api::InfoMemo;
use crate::memo::Memo;
use crate::runner::Runner;

const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// What a resource's changes can make stale among a run's shared observations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touches {
    /// Anything (packages installed, the engine restarted, a swarm joined).
    Everything,
    /// The kernel's netfilter tables only (ufw's rules): the engine's `/info` stays true.
    Netfilter,
    /// None of them (a file of a service's own, as nginx's).
    Nothing,
}

/// An observation several resources share and a run starts before they observe, so that the
/// processes and the engine it waits on start first, not behind the run's own work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shared {
    /// `iptables-save` (false) or `ip6tables-save` (true).
    Netfilter(bool),
    /// The engine's `/info`, at this socket.
    EngineInfo(PathBuf),
}

#[derive(Debug)]
pub struct Host {
    root: PathBuf,
    pub runner: Runner,
    docker_host_env: Option<String>,
    /// `$CREDENTIALS_DIRECTORY`: where systemd puts the unit's credentials (`LoadCredential=`).
    credentials_dir_env: Option<PathBuf>,
    /// The engine's `/info` answers of this run, shared by the audits that read them.
    pub engine_info: Arc<InfoMemo>,
    /// `iptables-save` and `ip6tables-save` of this run, shared likewise.
    tables: Memo<Result<String, String>>,
}

pub use crate::rooted::under;

impl Host {
    pub fn new(root: impl Into<PathBuf>) -> Host {
        Host {
            root: root.into(),
            runner: Runner::default(),
            docker_host_env: std::env::var("DOCKER_HOST").ok(),
            credentials_dir_env: std::env::var_os("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()).map(PathBuf::from),
            engine_info: Arc::default(),
            tables: Memo::default(),
        }
    }

    /// Drops what observations remembered (the engine's `/info`, the saved tables): a run
    /// starts with none, and whatever changed the host makes them stale.
    pub fn forget_observations(&self) {
        self.forget(Touches::Everything);
    }

    /// Drops what a change of `touched` may have made stale, and every failed answer.
    pub fn forget(&self, touched: Touches) {
        match touched {
            Touches::Everything => {
                self.engine_info.forget();
                self.tables.forget();
            }
            Touches::Netfilter => self.tables.forget(),
            Touches::Nothing => {}
        }
        self.engine_info.forget_failures(Result::is_err);
        self.tables.forget_failures(Result::is_err);
    }

    /// The kernel's netfilter tables of one family, every table, as `iptables-save` (or
    /// `ip6tables-save`) prints them: read once per run and shared by the firewall and the
    /// exposure audit (each save is a process that costs milliseconds of CPU), and on the
    /// running system kept between runs while the ruleset stays the same
    /// ([`crate::netfilter::kept`]). The chains' packet counters in it are not live.
    pub fn netfilter_save(&self, v6: bool) -> Result<String, String> {
        let tool = if v6 { "ip6tables-save" } else { "iptables-save" };
        self.tables.get(tool, || {
            crate::netfilter::kept::save(self.is_live(), v6, tool, || {
                self.runner
                    .run_ok(&[tool], std::time::Duration::from_secs(10))
                    .map(|o| o.stdout)
                    .map_err(|e| format!("{e:#}"))
            })
        })
    }

    /// The engine's `/info` as a shared read: on the running system, where the socket is
    /// known (`profile_host`, else `DOCKER_HOST`, else the default).
    pub fn engine_read(&self, profile_host: Option<&Path>) -> Option<Shared> {
        self.docker_socket(profile_host).ok().filter(|_| self.is_live()).map(Shared::EngineInfo)
    }

    /// Takes `shared` into its memo (the engine's facts, the saved tables). A failure is kept
    /// like an answer, and the resource that reads it reports it.
    pub fn read_shared(&self, shared: &Shared) {
        match shared {
            Shared::Netfilter(v6) => drop(self.netfilter_save(*v6)),
            Shared::EngineInfo(socket) => drop(crate::engine_api::Engine::observe(socket, &self.engine_info)),
        }
    }

    /// Whether this is the running system (`--root /`): only then do CPUID, service restarts
    /// and the kernel's own view apply.
    pub fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }

    /// The root every host path resolves under (`/` on the running system).
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, path: impl AsRef<Path>) -> PathBuf {
        under(&self.root, path)
    }

    /// Where vakt writes the host file `path`: its directory resolved under the root as
    /// [`Host::path`] does, its own name not followed, so that a link there is judged by the
    /// rule for written files (`fsutil::write_atomic`), not silently followed.
    pub fn file_path(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        match (path.parent(), path.file_name()) {
            (Some(dir), Some(name)) => self.path(dir).join(name),
            _ => self.path(path),
        }
    }

    /// A path already under the root (from a directory listing), with every symlink in it
    /// followed inside the root; `None` when it leads nowhere.
    pub fn resolve(&self, full: &Path) -> Option<PathBuf> {
        if self.is_live() {
            return std::fs::canonicalize(full).ok();
        }
        let resolved = under(&self.root, full.strip_prefix(&self.root).ok()?);
        resolved.exists().then_some(resolved)
    }

    /// Reads a host file; the error names the resolved path.
    pub fn read(&self, path: impl AsRef<Path>) -> io::Result<String> {
        let full = self.path(path);
        crate::fsutil::read_text(&full)
            .map_err(|e| io::Error::new(e.kind(), format!("failed to read {}: {e}", full.display())))
    }

    /// Reads a host file if it exists, trimmed; absent or unreadable is `None`.
    pub fn read_opt(&self, path: impl AsRef<Path>) -> Option<String> {
        crate::fsutil::read_text(self.path(path)).ok().map(|s| s.trim().to_string())
    }

    /// The Engine API socket: the profile's `[docker] host`, else `DOCKER_HOST`, else the
    /// default socket under the root. Only unix sockets are supported.
    pub fn docker_socket(&self, profile_host: Option<&Path>) -> Result<PathBuf, String> {
        if let Some(path) = profile_host {
            return Ok(path.to_path_buf());
        }
        match self.docker_host_env.as_deref().filter(|e| !e.is_empty()) {
            None => Ok(self.path(DEFAULT_DOCKER_SOCKET)),
            Some(e) => match e.strip_prefix("unix://") {
                Some(path) if path.starts_with('/') => Ok(PathBuf::from(path)),
                _ => Err(format!(
                    "DOCKER_HOST={e}: vakt talks to the engine over a unix socket only (unix:///PATH); unset \
                     DOCKER_HOST or set [docker] host"
                )),
            },
        }
    }

    /// The directory of the running unit's systemd credentials, when there is one. It is the
    /// service's own, never under `--root`.
    pub fn credentials_dir(&self) -> Option<&Path> {
        self.credentials_dir_env.as_deref()
    }

    /// Whether Docker is present: its bridge exists or its default socket does.
    pub fn runs_docker(&self) -> bool {
        self.path("/sys/class/net/docker0").exists() || self.path(DEFAULT_DOCKER_SOCKET).exists()
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
    fn a_change_forgets_only_what_it_touches() {
        let host = Host::new("/nonexistent");
        let asked = std::cell::Cell::new(0);
        let both = || {
            let _ = host.tables.get("iptables-save", || {
                asked.set(asked.get() + 1);
                Ok("*filter\nCOMMIT\n".to_string())
            });
            let _ = host.engine_info.get("docker.sock", || {
                asked.set(asked.get() + 1);
                Ok(bollard::models::SystemInfo::default())
            });
        };
        both();
        host.forget(Touches::Nothing);
        both();
        assert_eq!(asked.get(), 2, "nothing forgotten");
        host.forget(Touches::Netfilter);
        both();
        assert_eq!(asked.get(), 3, "the tables asked again, the engine not");
        host.forget(Touches::Everything);
        both();
        assert_eq!(asked.get(), 5);
    }

    #[test]
    fn a_failed_answer_is_asked_again_after_any_change() {
        let host = Host::new("/nonexistent");
        let asked = std::cell::Cell::new(0);
        let info = |answer: Result<(), String>| {
            let _ = host.engine_info.get("docker.sock", || {
                asked.set(asked.get() + 1);
                answer.map(|()| bollard::models::SystemInfo::default())
            });
        };
        info(Err("did not answer /info within 5s".into()));
        host.forget(Touches::Nothing);
        info(Ok(()));
        assert_eq!(asked.get(), 2, "the engine busy at the run's start is asked again");
        host.forget(Touches::Nothing);
        info(Ok(()));
        assert_eq!(asked.get(), 2, "an answer stays");
    }

    #[test]
    fn paths_resolve_under_the_root() {
        assert_eq!(under(Path::new("/tmp/r"), "/etc/ufw/user.rules"), PathBuf::from("/tmp/r/etc/ufw/user.rules"));
        assert_eq!(under(Path::new("/"), "/proc/stat"), PathBuf::from("/proc/stat"));
        assert_eq!(under(Path::new("/tmp/r"), "/../../etc/shadow"), PathBuf::from("/tmp/r/etc/shadow"));
    }

    #[test]
    fn symlinks_never_lead_out_of_the_root() {
        let root = tempfile::tempdir().expect("tmp");
        let r = root.path();
        std::fs::create_dir_all(r.join("etc/nginx")).expect("mkdir");
        std::fs::create_dir_all(r.join("srv")).expect("mkdir");
        // Absolute, relative-escaping and chained links all stay inside.
        std::os::unix::fs::symlink("/srv", r.join("etc/nginx/sites")).expect("link");
        std::os::unix::fs::symlink("../../../../../../etc", r.join("srv/up")).expect("link");
        std::os::unix::fs::symlink("/etc/nginx/sites/up/passwd", r.join("etc/pw")).expect("link");
        assert_eq!(under(r, "/etc/nginx/sites/x.conf"), r.join("srv/x.conf"));
        assert_eq!(under(r, "/srv/up/shadow"), r.join("etc/shadow"));
        assert_eq!(under(r, "/etc/pw"), r.join("etc/passwd"));
        // A loop, which the kernel would follow to the build host's /loop, opens nothing.
        std::os::unix::fs::symlink("/loop", r.join("loop")).expect("link");
        assert!(std::fs::read(under(r, "/loop/x")).is_err());
    }
}
