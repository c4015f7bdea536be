//! A private dockerd for system tests: its own network namespace (swarm's port 2377 and the
//! bridges stay off the host), data root, exec root, socket and pid file, configured from the
//! sandbox's `etc/docker/daemon.json`. There is no systemd here, so a `systemctl` stand-in on
//! PATH restarts this private daemon when vakt runs `systemctl restart docker`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{Run, run};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub struct DockerSandbox {
    pub netns: String,
    pub dir: tempfile::TempDir,
    /// Whether the engine writes the namespace's netfilter tables (its chains, DOCKER-USER).
    iptables: bool,
}

const STANDIN: &str = r#"#!/bin/sh
# systemctl stand-in for tests: `systemctl restart docker` restarts the sandbox's dockerd, `reload`
# signals it as docker.service's ExecReload does. Each
# call's argv is appended to systemctl.argv, and the times (ns) each restart began and brought
# the engine back to restart.began and restarted.at. After a failed start the unit counts as failed with
# its start limit hit (docker.service restarts itself until it is), and every restart is refused
# until `systemctl reset-failed docker`, as systemd does.
set -u
T="$VAKT_TEST_SANDBOX"
echo "$*" >>"$T/systemctl.argv"
case "$1 $2" in
  "reset-failed docker") rm -f "$T/start-limit-hit"; exit 0 ;;
  # docker.service's ExecReload: SIGHUP to the daemon, which re-reads daemon.json.
  "reload docker") kill -HUP "$(cat "$T/docker.pid")"; exit $? ;;
  "restart docker") ;;
  *) echo "stand-in handles only 'restart docker', 'reload docker' and 'reset-failed docker'" >&2; exit 1 ;;
esac
date +%s%N >>"$T/restart.began"
if [ -f "$T/start-limit-hit" ]; then
  echo "Job for docker.service failed because start of the service was attempted too often." >&2; exit 1
fi
if [ -f "$T/docker.pid" ]; then
  pid=$(cat "$T/docker.pid"); kill "$pid" 2>/dev/null
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fi
"$T/bin/start-dockerd" || { touch "$T/start-limit-hit"; exit 1; }
# A test may make the restart last longer, as a loaded engine's does: the engine is back and
# has written its netfilter rules, the restart has not returned yet.
sleep "${VAKT_TEST_RESTART_DELAY:-0}"
date +%s%N >>"$T/restarted.at"
"#;

/// Starts the sandbox's dockerd in the current network namespace and waits for its socket;
/// `PRIVATE_DOCKERD` is replaced by the repository's `tests/common/private-dockerd.sh`, which
/// keeps /run and /etc (dockerd writes /etc/docker/key.json) private to the engine.
const START: &str = r#"#!/bin/sh
set -u
T="$VAKT_TEST_SANDBOX"
rm -f "$T/docker.sock"
"PRIVATE_DOCKERD" "$T" >>"$T/dockerd.log" 2>&1 &
child=$!
for i in $(seq 1 150); do
  if [ -S "$T/docker.sock" ] && curl -sf --unix-socket "$T/docker.sock" http://d/_ping >/dev/null 2>&1; then exit 0; fi
  if ! kill -0 $child 2>/dev/null; then
    echo "dockerd failed to start:" >&2; tail -n 3 "$T/dockerd.log" >&2; exit 1
  fi
  sleep 0.2
done
echo "dockerd did not answer within 30s" >&2; tail -n 3 "$T/dockerd.log" >&2; exit 1
"#;

fn sh(script: &str) {
    let out = Command::new("sh").args(["-ec", script]).output().expect("sh runs");
    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
}

impl DockerSandbox {
    /// Starts a private engine with `daemon_json` (None: no file) in a fresh namespace whose
    /// uplink `vkup0` has 10.231.N.2/24 and the default route.
    pub fn start(daemon_json: Option<&str>) -> DockerSandbox {
        Self::start_with(daemon_json, false)
    }

    /// [`DockerSandbox::start`], with the engine writing the namespace's netfilter tables as
    /// on a real host (each start and restart).
    pub fn start_with_iptables(daemon_json: Option<&str>) -> DockerSandbox {
        Self::start_with(daemon_json, true)
    }

    fn start_with(daemon_json: Option<&str>, iptables: bool) -> DockerSandbox {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let netns = format!("vakt-dk-{}-{n}", std::process::id());
        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path().display().to_string();
        std::fs::create_dir_all(dir.path().join("etc/docker")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("bin")).expect("mkdir");
        let conf = dir.path().join("etc/docker/daemon.json");
        // dockerd's --config-file must exist; an absent file is simulated by an empty object
        // until the test removes it.
        std::fs::write(&conf, daemon_json.unwrap_or("{}")).expect("daemon.json");
        let helper = super::repo("tests/common/private-dockerd.sh");
        let start = START.replace("PRIVATE_DOCKERD", &helper.display().to_string());
        for (name, body) in [("systemctl", STANDIN), ("start-dockerd", start.as_str())] {
            let p = dir.path().join("bin").join(name);
            std::fs::write(&p, body).expect("script");
            sh(&format!("chmod 755 {}", p.display()));
        }
        sh(&format!(
            "ip netns add {netns}
             ip -n {netns} link set lo up
             ip -n {netns} link add vkup0 type veth peer name vkup1
             ip -n {netns} addr add 10.231.{o}.2/24 dev vkup0
             ip -n {netns} link set vkup0 up; ip -n {netns} link set vkup1 up
             ip -n {netns} route add default via 10.231.{o}.1 dev vkup0",
            o = n % 250
        ));
        let sb = DockerSandbox { netns, dir, iptables };
        let out = run(&mut sb.command(&[&format!("{t}/bin/start-dockerd")]));
        assert_eq!(out.code, 0, "private dockerd starts: {}", out.stderr);
        if daemon_json.is_none() {
            std::fs::remove_file(&conf).expect("rm daemon.json");
        }
        sb
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel.trim_start_matches('/'))
    }

    pub fn socket(&self) -> PathBuf {
        self.file("docker.sock")
    }

    pub fn advertise_ip(&self) -> String {
        let n: usize = self.netns.rsplit('-').next().and_then(|x| x.parse().ok()).unwrap_or(0);
        format!("10.231.{}.2", n % 250)
    }

    /// `argv` inside the sandbox's network namespace, with the stand-in first on PATH.
    pub fn command(&self, argv: &[&str]) -> Command {
        // nsenter, not `ip netns exec`: the latter remounts /sys and hides the cgroup mounts
        // dockerd needs.
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.netns))
            .args(argv)
            .env("VAKT_TEST_SANDBOX", self.root())
            .env("PATH", format!("{}:{}", self.file("bin").display(), std::env::var("PATH").unwrap_or_default()))
            .env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .env("NO_COLOR", "1");
        if self.iptables {
            c.env("VAKT_DOCKERD_IPTABLES", "true");
        }
        c
    }

    /// vakt on the sandbox as its live host, in a private mount namespace where the sandbox's
    /// /etc/docker, /run and (when the test wrote one) unit directory lie over the machine's.
    /// `--root` elsewhere means an image prepared offline, where nothing is restarted.
    pub fn live_command(&self, args: &[&str]) -> Command {
        let root = self.root().display().to_string();
        let script = format!(
            "mkdir -p {root}/etc/docker {root}/run; mount --bind {root}/etc/docker /etc/docker; \
             mount --bind {root}/run /run; \
             if [ -d {root}/lib/systemd/system ]; then mount --bind {root}/lib/systemd/system /lib/systemd/system; fi; \
             exec \"$@\""
        );
        let mut argv = vec!["unshare", "-m", "--propagation", "private", "sh", "-ec", &script, "sandbox"];
        argv.push(env!("CARGO_BIN_EXE_vakt"));
        argv.extend_from_slice(args);
        self.command(&argv)
    }

    pub fn vakt(&self, args: &[&str]) -> Run {
        run(&mut self.live_command(args))
    }

    /// vakt preparing the sandbox tree as an image, offline (`--root`).
    pub fn vakt_offline(&self, args: &[&str]) -> Run {
        let root = self.root().display().to_string();
        let mut argv = vec![env!("CARGO_BIN_EXE_vakt"), "--root", &root];
        argv.extend_from_slice(args);
        run(&mut self.command(&argv))
    }

    /// vakt on the namespace's live view (`--root /`), for what only the kernel knows.
    pub fn vakt_live(&self, args: &[&str]) -> Run {
        let mut argv = vec![env!("CARGO_BIN_EXE_vakt")];
        argv.extend_from_slice(args);
        run(&mut self.command(&argv))
    }

    pub fn docker(&self, args: &[&str]) -> Run {
        let mut argv = vec!["docker"];
        argv.extend_from_slice(args);
        run(&mut self.command(&argv))
    }

    pub fn driver(&self) -> String {
        self.docker(&["info", "--format", "{{.Driver}}"]).stdout.trim().to_string()
    }

    pub fn wait_running(&self) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if self.docker(&["version"]).code == 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }
}

impl Drop for DockerSandbox {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.file("docker.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
            for _ in 0..100 {
                if !Path::new(&format!("/proc/{}", pid.trim())).exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
    }
}
