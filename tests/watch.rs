//! `vakt watch` against the real kernel, a real systemd notify socket protocol, a standalone
//! journald, node_exporter as a peer, and promtool as the judge of the metrics text.

mod common;

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn profile(dir: &std::path::Path, body: &str) -> String {
    let p = dir.join("watch.toml");
    std::fs::write(&p, body).expect("profile");
    p.display().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

fn spawn_watch(args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut c = vakt();
    c.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().expect("vakt watch starts")
}

fn term(child: &mut Child) -> i32 {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    child.wait().map(|s| s.code().unwrap_or(-1)).unwrap_or(-1)
}

/// Receives notify datagrams until `until` returns true or `limit` passes.
fn collect(sock: &UnixDatagram, limit: Duration, mut until: impl FnMut(&[String]) -> bool) -> Vec<String> {
    let mut got = Vec::new();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    while started.elapsed() < limit {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            if until(&got) {
                break;
            }
        }
    }
    got
}

fn http_get(port: u16, path: &str) -> String {
    let out = run(Command::new("curl").args(["-s", "--max-time", "5"]).arg(format!("http://127.0.0.1:{port}{path}")));
    out.stdout
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn systemd_protocol_ready_status_watchdog_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    let p = profile(dir.path(), "[watch]\ninterval = \"200ms\"\nwindow = \"1s\"\n");
    let mut child = spawn_watch(
        &["watch", "-p", &p],
        &[("NOTIFY_SOCKET", sock_path.to_str().expect("utf8")), ("WATCHDOG_USEC", "1000000")],
    );
    let got = collect(&sock, Duration::from_secs(10), |g| g.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3);
    let code = term(&mut child);
    let after = collect(&sock, Duration::from_secs(2), |g| g.iter().any(|m| m.contains("STOPPING=1")));
    let ready = got.iter().position(|m| m.contains("READY=1")).expect("READY=1 sent");
    let first_status = got.iter().position(|m| m.contains("STATUS=")).expect("STATUS= sent");
    assert!(first_status <= ready, "the first status comes with or before READY: {got:?}");
    assert!(got.iter().any(|m| m.contains("STATUS=steal ") && m.contains("iowait ")), "{got:?}");
    assert!(got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3, "periodic pings: {got:?}");
    assert!(after.iter().any(|m| m.contains("STOPPING=1")), "STOPPING on SIGTERM: {after:?}");
    assert_eq!(code, 0, "clean exit");
}

#[test]
fn a_stalled_sampler_stops_the_watchdog_pings() {
    if !require("mkfifo", has("mkfifo")) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("proc")).expect("mkdir");
    let fifo = root.join("proc/stat");
    assert!(Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());
    // Two reads are served, then /proc/stat blocks like a hung kernel interface.
    let writer_fifo = fifo.clone();
    std::thread::spawn(move || {
        for n in [100, 200] {
            if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&writer_fifo) {
                let _ = writeln!(f, "cpu0 {n} 0 {n} {n} 0 0 0 0 0 0");
            }
            // Let the reader see end-of-file and close before the next open.
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind");
    let p = profile(dir.path(), "[watch]\ninterval = \"200ms\"\nwindow = \"1s\"\n");
    let mut child = spawn_watch(
        &["--root", root.to_str().expect("utf8"), "watch", "-p", &p],
        &[("NOTIFY_SOCKET", sock_path.to_str().expect("utf8")), ("WATCHDOG_USEC", "400000")],
    );
    let before = collect(&sock, Duration::from_secs(5), |g| g.iter().any(|m| m.contains("READY=1")));
    assert!(before.iter().any(|m| m.contains("READY=1")), "{before:?}");
    // Let the ping that the last sample earned go out, then listen while the sampler hangs.
    std::thread::sleep(Duration::from_millis(500));
    let _ = collect(&sock, Duration::from_millis(300), |_| false);
    let stalled = collect(&sock, Duration::from_secs(3), |_| false);
    let alive = child.try_wait().expect("wait").is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(alive, "the process is still running (systemd would kill it)");
    assert!(!stalled.iter().any(|m| m.contains("WATCHDOG=1")), "no pings while stalled: {stalled:?}");
}

/// (steal, iowait, total) ticks summed over the cpuN lines of /proc/stat.
fn proc_stat_ticks() -> (u64, u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let mut t = (0, 0, 0);
    for l in text.lines().filter(|l| l.starts_with("cpu") && !l.starts_with("cpu ")) {
        let f: Vec<u64> = l.split_whitespace().skip(1).take(8).map(|w| w.parse().unwrap_or(0)).collect();
        t.0 += f.get(7).copied().unwrap_or(0);
        t.1 += f.get(4).copied().unwrap_or(0);
        t.2 += f.iter().sum::<u64>();
    }
    t
}

#[test]
fn figures_agree_with_proc_stat_and_node_exporter() {
    if !require("curl and prometheus-node-exporter", has("curl") && has("prometheus-node-exporter")) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (vport, nport) = (free_port(), free_port());
    let mut node = Command::new("prometheus-node-exporter")
        .args([
            format!("--web.listen-address=127.0.0.1:{nport}").as_str(),
            "--collector.disable-defaults",
            "--collector.cpu",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node_exporter starts");
    // Give the CPUs some I/O wait and work to measure, bounded in time.
    let load = Command::new("sh")
        .args(["-c", &format!("end=$(($(date +%s)+6)); while [ $(date +%s) -lt $end ]; do dd if=/dev/zero of={}/io bs=1M count=32 oflag=direct 2>/dev/null; done", dir.path().display())])
        .spawn()
        .expect("load");
    let p = profile(
        dir.path(),
        &format!("[watch]\ninterval = \"200ms\"\nwindow = \"3s\"\nmetrics = \"127.0.0.1:{vport}\"\n"),
    );
    let mut watch = spawn_watch(&["watch", "-p", &p], &[]);
    std::thread::sleep(Duration::from_millis(700));

    let node_cpu = |text: &str| -> (f64, f64, f64) {
        let mut t = (0.0, 0.0, 0.0);
        for l in text.lines().filter(|l| l.starts_with("node_cpu_seconds_total{")) {
            let v: f64 = l.rsplit(' ').next().and_then(|x| x.parse().ok()).unwrap_or(0.0);
            t.2 += v;
            if l.contains("mode=\"steal\"") {
                t.0 += v;
            }
            if l.contains("mode=\"iowait\"") {
                t.1 += v;
            }
        }
        t
    };
    // The window is 3 s: let vakt's window fill exactly over the span the others measure.
    let stat0 = proc_stat_ticks();
    let node0 = node_cpu(&http_get(nport, "/metrics"));
    std::thread::sleep(Duration::from_millis(3000));
    let stat1 = proc_stat_ticks();
    let node1 = node_cpu(&http_get(nport, "/metrics"));
    let ours = http_get(vport, "/metrics");
    let _ = node.kill();
    let _ = node.wait();
    let _ = term(&mut watch);
    let mut load = load;
    let _ = load.kill();
    let _ = load.wait();

    let vakt_steal = metric(&ours, "vakt_cpu_steal_window_ratio").expect("steal metric") * 100.0;
    let vakt_iowait = metric(&ours, "vakt_cpu_iowait_window_ratio").expect("iowait metric") * 100.0;
    let total = (stat1.2 - stat0.2) as f64;
    let stat_steal = (stat1.0 - stat0.0) as f64 * 100.0 / total;
    let stat_iowait = (stat1.1 - stat0.1) as f64 * 100.0 / total;
    let ntotal = node1.2 - node0.2;
    let node_steal = (node1.0 - node0.0) * 100.0 / ntotal;
    let node_iowait = (node1.1 - node0.1) * 100.0 / ntotal;
    let report = format!(
        "vakt steal {vakt_steal:.2} iowait {vakt_iowait:.2}; /proc/stat {stat_steal:.2} {stat_iowait:.2}; node_exporter {node_steal:.2} {node_iowait:.2}"
    );
    for (a, b) in
        [(vakt_steal, stat_steal), (vakt_iowait, stat_iowait), (vakt_steal, node_steal), (vakt_iowait, node_iowait)]
    {
        assert!((a - b).abs() <= 1.0, "within 1 pp: {report}");
    }
    eprintln!("{report}");
}

#[test]
fn metrics_pass_promtool() {
    if !require("curl and promtool", has("curl") && has("promtool")) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let p = profile(
        dir.path(),
        &format!(
            "[watch]\ninterval = \"200ms\"\nwindow = \"1s\"\nmetrics = \"127.0.0.1:{port}\"\ncheck_every = \"1s\"\n[host]\nhypervisor = \"any\"\ncontainer = \"allow\"\nstorage = \"any\"\n"
        ),
    );
    let mut watch = spawn_watch(&["watch", "-p", &p], &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let text = http_get(port, "/metrics");
    let _ = term(&mut watch);
    for name in
        ["vakt_cpu_steal_ratio", "vakt_cpu_iowait_ratio", "vakt_samples_total", "vakt_check_last_run_timestamp_seconds"]
    {
        assert!(metric(&text, name).is_some(), "{name} missing:\n{text}");
    }
    assert!(text.contains("vakt_alarm_active{kind=\"steal\"} 0"), "{text}");
    assert!(text.contains("vakt_check_findings{state=\"ok\"}"), "{text}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    promtool.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = promtool.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn journald_receives_structured_events() {
    if !require(
        "root and systemd-journald",
        is_root() && std::path::Path::new("/lib/systemd/systemd-journald").exists() && has("journalctl"),
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let p = profile(dir.path(), "[watch]\ninterval = \"200ms\"\nwindow = \"1s\"\n");
    // A private /run: the standalone journald and vakt meet on its socket; the host's /run
    // is not touched.
    let script = format!(
        "mount -t tmpfs tmpfs /run
         /lib/systemd/systemd-journald & jpid=$!
         for i in $(seq 1 50); do [ -S /run/systemd/journal/socket ] && break; sleep 0.1; done
         timeout -s TERM 2 {bin} -v watch -p {p}; echo \"rc=$?\" >&2
         sleep 0.3
         journalctl -o json --no-pager -t vakt -t vakt::watch _EXE={bin}
         kill $jpid",
        bin = env!("CARGO_BIN_EXE_vakt")
    );
    let out = run(Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]));
    let events: Vec<serde_json::Value> = out.stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let with_id = |id: &str| events.iter().filter(|e| e["MESSAGE_ID"] == id).cloned().collect::<Vec<_>>();
    let samples = with_id("8b0e3c7a52f44f6f9a1d6c0e4b2a7d11");
    assert!(samples.len() >= 3, "sample events in the journal ({} events): {}", events.len(), out.stderr);
    for field in
        ["VAKT_STEAL_PCT", "VAKT_IOWAIT_PCT", "VAKT_WORST_STEAL_CPU", "VAKT_PSI_IO_SOME_AVG10", "VAKT_INTERVAL_MS"]
    {
        assert!(samples[0].get(field).is_some(), "{field} missing: {}", samples[0]);
    }
    assert_eq!(samples[0]["VAKT_INTERVAL_MS"], "200");
    assert_eq!(with_id("8b0e3c7a52f44f6f9a1d6c0e4b2a7d10").len(), 1, "one start event");
    assert_eq!(with_id("8b0e3c7a52f44f6f9a1d6c0e4b2a7d1b").len(), 1, "one stop event");
}

#[test]
fn sighup_with_an_invalid_profile_keeps_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = profile(dir.path(), "[watch]\ninterval = \"200ms\"\nwindow = \"1s\"\n");
    let mut child = spawn_watch(&["watch", "-p", &p], &[]);
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(&p, "[watch]\ninterval = \"soon\"\n").expect("break the profile");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().expect("wait").is_none(), "still running on the old profile");
    let code = term(&mut child);
    let mut err = String::new();
    use std::io::Read;
    child.stderr.take().expect("stderr").read_to_string(&mut err).expect("read");
    assert_eq!(code, 0);
    assert!(err.contains("reload failed, keeping the running profile") && err.contains("interval"), "{err}");
}
