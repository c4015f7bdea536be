//! Helpers shared by the integration tests: running the built binary and reading its output.
#![allow(dead_code)]

pub mod dockerd;
pub mod netns;
pub mod proxy;
pub mod swarmnet;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn vakt() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vakt"));
    c.env_remove("DOCKER_HOST").env("NO_COLOR", "1");
    c
}

/// vakt run as the live host of `tree`: in a private mount namespace where the tree's
/// /etc/docker and /run lie over the machine's (needs root). `--root` would make it an image
/// prepared offline, where vakt neither talks to an engine nor restarts one.
pub fn vakt_live_in(tree: &Path) -> Command {
    let t = tree.display();
    let script = format!(
        "mkdir -p {t}/etc/docker {t}/run; mount --bind {t}/etc/docker /etc/docker; mount --bind {t}/run /run; exec \"$@\""
    );
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-ec", &script, "sandbox", env!("CARGO_BIN_EXE_vakt")])
        .env_remove("DOCKER_HOST")
        .env("NO_COLOR", "1");
    c
}

pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Run {
    let Output { status, stdout, stderr } = cmd.output().expect("vakt runs");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

pub fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", run.stdout, run.stderr))
}

/// Every finding of a JSON report.
pub fn findings(report: &serde_json::Value) -> Vec<serde_json::Value> {
    report["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["findings"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn text(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

/// Every finding of a JSON report as (id, status).
pub fn statuses(report: &serde_json::Value) -> Vec<(String, String)> {
    findings(report).iter().map(|f| (text(&f["id"]), text(&f["status"]))).collect()
}

/// The ids of the findings with `status`.
pub fn ids_with(report: &serde_json::Value, status: &str) -> Vec<String> {
    statuses(report).into_iter().filter(|(_, s)| s == status).map(|(i, _)| i).collect()
}

/// Writes `text` to `root/rel`, creating the directories on the way.
pub fn write_file(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

/// (id, change) of the findings with `status`: what check plans, or what apply did.
pub fn changes(report: &serde_json::Value, status: &str) -> Vec<(String, String)> {
    findings(report).iter().filter(|f| f["status"] == status).map(|f| (text(&f["id"]), text(&f["change"]))).collect()
}

/// The evidence lines of the finding `id`, one per line.
pub fn evidence(report: &serde_json::Value, id: &str) -> String {
    let f = findings(report).into_iter().find(|f| f["id"] == id).unwrap_or_else(|| panic!("no finding {id}"));
    f["evidence"]
        .as_array()
        .map(|e| e.iter().filter_map(|l| l.as_str()).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

pub fn status_of(report: &serde_json::Value, id: &str) -> String {
    statuses(report).into_iter().find(|(i, _)| i == id).map(|(_, s)| s).unwrap_or_else(|| panic!("no finding {id}"))
}

/// Whether system tests must run: under CI a missing prerequisite is a failure, not a skip.
pub fn require(what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is required under CI=true; run the tests through ./tests/run.sh, which installs it");
    }
    eprintln!("skipping: {what} is not available (allowed only outside CI)");
    false
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A loopback TCP port nothing listens on, never one given to another test: the kernel may
/// hand a just-closed ephemeral port out again, to this binary or to one running beside it
/// (tests/run.sh runs several at once), and two servers on one port fail to start. Each port
/// given is claimed with a lock on a file named after it, held until this process ends.
pub fn free_port() -> u16 {
    static CLAIMS: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("vakt-test-ports");
    std::fs::create_dir_all(&dir).expect("port claims directory");
    let mut claims = CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let claim = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
            .expect("port claim");
        // A second open of the same file, even in this process, cannot take the lock again.
        if claim.try_lock().is_ok() {
            claims.push(claim);
            return port;
        }
    }
}

pub fn has(program: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {program}")]).output().is_ok_and(|o| o.status.success())
}

/// SplitMix64: generated test cases are a pure function of their seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// A generated test's seeds: first those kept in the fixture file `kept` (one hex seed per
/// line, `#` comments: cases that once failed), then `count` drawn from `base`. The
/// environment variables `{var}_SEED` (hex) and `{var}_CASES` replace `base` and `count`.
pub fn seeds(kept: &str, var: &str, base: u64, count: u64) -> Vec<u64> {
    let kept = std::fs::read_to_string(repo(kept)).unwrap_or_default();
    let mut out: Vec<u64> = kept
        .lines()
        .filter_map(|l| l.split('#').next())
        .filter_map(|l| u64::from_str_radix(l.trim().trim_start_matches("0x"), 16).ok())
        .collect();
    let base = std::env::var(format!("{var}_SEED"))
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(base);
    let n: u64 = std::env::var(format!("{var}_CASES")).ok().and_then(|s| s.parse().ok()).unwrap_or(count);
    let mut rng = Rng(base);
    out.extend((0..n).map(|_| rng.next()));
    out
}

/// A random ufw rule's action, port and protocol, drawn in that order from `actions`, `ports`
/// and (one time in four) `ranges`: `limit` is tcp only, as ufw rate-limits tcp, and a range
/// is tcp or udp, as ufw needs one protocol for a range.
pub fn rule_shape(
    rng: &mut Rng,
    actions: &[&'static str],
    ports: &[u16],
    ranges: &[&'static str],
) -> (&'static str, String, &'static str) {
    let action = *rng.pick(actions);
    let port = if rng.next().is_multiple_of(4) { rng.pick(ranges).to_string() } else { rng.pick(ports).to_string() };
    let proto = match action {
        "limit" => "tcp",
        _ if port.contains(':') => *rng.pick(&["tcp", "udp"]),
        _ => *rng.pick(&["tcp", "udp", "both"]),
    };
    (action, port, proto)
}

/// The commands a run's JSON report says it ran that start with `prefix`.
pub fn ran(report: &serde_json::Value, prefix: &str) -> Vec<String> {
    report["commands"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.as_str().map(String::from))
        .filter(|c| c.starts_with(prefix))
        .collect()
}
