//! A multi-node swarm for system tests: private dockerds, each in its own network namespace,
//! joined by a bridge in a hub namespace, plus an outsider namespace on the same bridge but
//! outside the peer network. Each node keeps private ufw state (as `netns::UfwSandbox` does)
//! so that vakt can apply its firewall for real. Everything is removed by `Drop`, also when a
//! test fails half way.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::dockerd::DockerSandbox;
use super::{Run, run};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The bridge's network; nodes get .1, .2, ... of `PEERS`, the outsider sits outside it.
pub const PEERS: &str = "10.77.0.0/24";
pub const OUTSIDER_IP: &str = "10.77.1.9";

pub struct SwarmNode {
    pub sb: DockerSandbox,
    pub ip: String,
}

pub struct SwarmNet {
    pub nodes: Vec<SwarmNode>,
    hub: String,
    pub outsider: String,
}

fn sh(script: &str) {
    let out = Command::new("sh").args(["-ec", script]).output().expect("sh runs");
    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
}

impl SwarmNet {
    /// `count` engines started side by side, wired to one bridge, each with ufw state as
    /// packaged (disabled, no rules) and an sshd_config on port 22 for the SSH guard.
    pub fn start(count: usize) -> SwarmNet {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let hub = format!("vakt-sw-{}-{n}", std::process::id());
        let outsider = format!("{hub}-out");
        // The namespaces exist before anything can fail, so that Drop removes them.
        let mut net = SwarmNet { nodes: Vec::new(), hub: hub.clone(), outsider: outsider.clone() };
        sh(&format!(
            "ip netns add {hub}; ip -n {hub} link set lo up
             ip -n {hub} link add br0 type bridge; ip -n {hub} link set br0 up
             ip netns add {outsider}; ip -n {outsider} link set lo up"
        ));
        let engines: Vec<DockerSandbox> = std::thread::scope(|s| {
            let started: Vec<_> = (0..count)
                .map(|_| s.spawn(|| DockerSandbox::start(Some("{\"storage-driver\": \"overlay2\"}\n"))))
                .collect();
            started.into_iter().map(|h| h.join().expect("a private dockerd starts")).collect()
        });
        for (i, sb) in engines.into_iter().enumerate() {
            let ip = format!("10.77.0.{}", i + 1);
            let root = sb.root().display().to_string();
            let ns = sb.netns.clone();
            net.nodes.push(SwarmNode { sb, ip: ip.clone() });
            // The bridge link becomes the default route, so advertise_addr = "auto" picks it.
            sh(&format!(
                "ip link add sw0 netns {ns} type veth peer name p{i} netns {hub}
                 ip -n {hub} link set p{i} master br0 up
                 ip -n {ns} addr add {ip}/16 dev sw0; ip -n {ns} link set sw0 up
                 ip -n {ns} route replace default via 10.77.0.254 dev sw0
                 {}",
                super::netns::fresh_ufw_tree(&root)
            ));
        }
        sh(&format!(
            "ip link add sw0 netns {outsider} type veth peer name pout netns {hub}
             ip -n {hub} link set pout master br0 up
             ip -n {outsider} addr add {OUTSIDER_IP}/16 dev sw0; ip -n {outsider} link set sw0 up"
        ));
        net
    }

    /// `argv` in the outsider's network namespace.
    pub fn outside(&self, argv: &[&str]) -> Run {
        run(Command::new("nsenter").arg(format!("--net=/run/netns/{}", self.outsider)).args(argv))
    }
}

impl Drop for SwarmNet {
    fn drop(&mut self) {
        // Containers first: a dockerd stopped with running containers leaves their shims and
        // processes behind. Then the engines (DockerSandbox's own Drop), the bridge and the
        // outsider.
        for node in &self.nodes {
            let _ = node.exec(&[
                "timeout",
                "30",
                "sh",
                "-c",
                "docker swarm leave --force >/dev/null 2>&1; docker ps -aq | xargs -r docker rm -f >/dev/null 2>&1",
            ]);
        }
        self.nodes.clear();
        for ns in [&self.outsider, &self.hub] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl SwarmNode {
    /// vakt as this node's live host: the node's /etc/docker, ufw state, sshd_config, unit
    /// directories and /run lie over the machine's in a private mount namespace.
    pub fn vakt_command(&self, args: &[&str]) -> Command {
        let root = self.sb.root().display().to_string();
        let script = format!(
            "mkdir -p {root}/run; for d in etc/docker etc/ufw etc/default/ufw etc/ssh etc/systemd/system \
             lib/systemd/system run; do mount --bind {root}/$d /$d; done; exec \"$@\""
        );
        let mut argv = vec!["unshare", "-m", "--propagation", "private", "sh", "-ec", &script, "sandbox"];
        argv.push(env!("CARGO_BIN_EXE_vakt"));
        argv.extend_from_slice(args);
        let mut c = self.sb.command(&argv);
        c.env_remove("SSH_CONNECTION").env_remove("CREDENTIALS_DIRECTORY");
        c
    }

    /// `argv` in the node's network namespace (iptables, bash's /dev/tcp, ...).
    pub fn exec(&self, argv: &[&str]) -> Run {
        run(&mut self.sb.command(argv))
    }

    pub fn docker(&self, args: &[&str]) -> Run {
        self.sb.docker(args)
    }
}

/// A proxy in front of an engine's socket that records the request line of every API call
/// (`GET /info HTTP/1.1`): what vakt asked the engine to do.
pub struct RecordingProxy {
    pub socket: PathBuf,
    requests: Arc<Mutex<Vec<String>>>,
}

impl RecordingProxy {
    pub fn start(socket: PathBuf, engine: &Path) -> RecordingProxy {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        super::proxy::forward(&socket, engine.to_path_buf(), move |line| {
            seen.lock().expect("lock").push(line.to_string());
        });
        RecordingProxy { socket, requests }
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}
