//! `[watch.workload]` with real components: Debian's `prometheus` scraping a stand-in gateway
//! (a small HTTP server here that serves `gateway_function_invocation_total` and
//! `gateway_service_count` at a rate the test sets), and `vakt watch` asking that Prometheus.
//! The host's I/O trouble is real: writers with O_DIRECT to a loop device, throttled through
//! the block I/O cgroup controller (v1 `blkio.throttle.write_bps_device`), raise the kernel's
//! I/O pressure. A source that fails (stopped, a huge answer, a stall) is a stand-in server too.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// How a stand-in server answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// The gateway's metrics, the counter growing at `rate` per second.
    Gateway { rate: f64 },
    /// A Prometheus that answers with 50 MB.
    Huge,
    /// A Prometheus that never answers.
    Stall,
}

struct Stub {
    port: u16,
    mode: Arc<Mutex<(Mode, f64, Instant)>>,
}

impl Stub {
    fn start(mode: Mode) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mode = Arc::new(Mutex::new((mode, 0.0, Instant::now())));
        let shared = mode.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        Stub { port, mode }
    }

    fn set_rate(&self, rate: f64) {
        let mut m = self.mode.lock().expect("lock");
        let (total, at) = (m.1 + current_rate(m.0) * m.2.elapsed().as_secs_f64(), Instant::now());
        *m = (Mode::Gateway { rate }, total, at);
    }
}

fn current_rate(mode: Mode) -> f64 {
    if let Mode::Gateway { rate } = mode { rate } else { 0.0 }
}

fn serve(mut stream: std::net::TcpStream, shared: &Mutex<(Mode, f64, Instant)>) {
    let mut buf = [0u8; 4096];
    let _ = stream.read(&mut buf);
    let (mode, total, at) = *shared.lock().expect("lock");
    match mode {
        Mode::Gateway { rate } => {
            let count = total + rate * at.elapsed().as_secs_f64();
            let body = format!(
                "# TYPE gateway_function_invocation_total counter\ngateway_function_invocation_total{{code=\"200\",function_name=\"figlet\"}} {count:.0}\n# TYPE gateway_service_count gauge\ngateway_service_count{{function_name=\"figlet\"}} 4\n"
            );
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        Mode::Huge => {
            let size = 50 << 20;
            let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n");
            let chunk = vec![b' '; 1 << 20];
            for _ in 0..50 {
                if stream.write_all(&chunk).is_err() {
                    return;
                }
            }
        }
        Mode::Stall => std::thread::sleep(Duration::from_secs(30)),
    }
}

/// Debian's prometheus, scraping the stand-in gateway every second, on a port of its own.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(gateway: u16) -> Prometheus {
        let dir = tempfile::tempdir().expect("tmp");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: gateway\n    static_configs:\n      - targets: ['127.0.0.1:{gateway}']\n"),
        )
        .expect("config");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        let p = Prometheus { child, port, _dir: dir };
        let started = Instant::now();
        while !http(port, "/-/ready").contains("Ready") {
            assert!(started.elapsed() < Duration::from_secs(30), "prometheus is not ready after 30 s");
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http(port: u16, path: &str) -> String {
    run(Command::new("curl").args(["-s", "--max-time", "5"]).arg(format!("http://127.0.0.1:{port}{path}"))).stdout
}

/// `vakt watch` with its stderr lines collected; killed when dropped.
struct Watch {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    metrics: u16,
    _dir: tempfile::TempDir,
}

impl Watch {
    fn start(prometheus: u16, watch: &str, workload: &str) -> Watch {
        let dir = tempfile::tempdir().expect("tmp");
        let metrics = free_port();
        let profile = dir.path().join("watch.toml");
        std::fs::write(
            &profile,
            format!(
                "[watch]\ninterval = \"1s\"\nwindow = \"5s\"\nmetrics = \"127.0.0.1:{metrics}\"\n{watch}\n[watch.workload]\nprometheus = \"http://127.0.0.1:{prometheus}\"\nrate_query = 'sum(rate(gateway_function_invocation_total{{code=\"200\"}}[5s]))'\nevery = \"1s\"\ntimeout = \"500ms\"\nbaseline = \"15s\"\nfall = 50.0\n{workload}"
            ),
        )
        .expect("profile");
        let mut child = vakt()
            .args(["watch", "-p"])
            .arg(&profile)
            .env("VAKT_LOG", "warn,vakt=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vakt watch starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("lock").push(line);
            }
        });
        Watch { child, lines, metrics, _dir: dir }
    }

    fn wait_for(&self, what: &str, limit: Duration) -> Option<String> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(l) = self.lines.lock().expect("lock").iter().find(|l| l.contains(what)) {
                return Some(l.clone());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }

    fn said(&self, what: &str) -> bool {
        self.lines.lock().expect("lock").iter().any(|l| l.contains(what))
    }

    fn metrics(&self) -> String {
        http(self.metrics, "/metrics")
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The host's figures are the whole machine's: one test at a time may load or judge them.
static HOST: Mutex<()> = Mutex::new(());

fn ready() -> bool {
    require("prometheus (tests/run.sh installs it)", has("prometheus")) && require("curl", has("curl"))
}

/// Traffic falls with the host calm: a quiet event, no alarm.
#[test]
fn less_traffic_on_a_calm_host_is_quiet() {
    if !ready() {
        return;
    }
    let gateway = Stub::start(Mode::Gateway { rate: 40.0 });
    let prometheus = Prometheus::start(gateway.port);
    let _host = HOST.lock().unwrap_or_else(|e| e.into_inner());
    // Thresholds no calm host reaches keep this machine's own background load from counting.
    let calm = "iowait_warn = 90.0\niowait_clear = 80.0\nsteal_warn = 90.0\nsteal_clear = 80.0\n";
    let watch = Watch::start(prometheus.port, calm, "io_pressure_warn = 90.0\n");
    watch.wait_for("workload", Duration::from_secs(5));
    // The baseline: the rate steady for a while (the query's 5 s range filled first).
    std::thread::sleep(Duration::from_secs(20));
    let before = watch.metrics();
    let rate = metric(&before, "vakt_workload_invocation_rate").expect("the rate is exported");
    assert!((30.0..=50.0).contains(&rate), "the rate follows the gateway: {rate}\n{before}");
    gateway.set_rate(4.0);
    let quiet = watch.wait_for("quiet:", Duration::from_secs(30)).expect("a quiet event");
    eprintln!("{quiet}");
    assert!(quiet.contains("less traffic") && quiet.contains("host calm"), "{quiet}");
    assert!(!watch.said("bottleneck:"), "no bottleneck on a calm host");
    let after = watch.metrics();
    assert_eq!(metric(&after, "vakt_alarm_active{kind=\"bottleneck\"}"), Some(0.0), "{after}");
    assert_eq!(metric(&after, "vakt_workload_falls_total{verdict=\"quiet\"}"), Some(1.0), "{after}");
}

/// A loop device whose writers a blkio cgroup throttles: the kernel's I/O pressure rises.
struct ThrottledWriters {
    loop_dev: String,
    cgroup: std::path::PathBuf,
    writers: Vec<Child>,
    _image: tempfile::NamedTempFile,
}

impl ThrottledWriters {
    fn start() -> Option<ThrottledWriters> {
        let cgroup_root = std::path::Path::new("/sys/fs/cgroup/blkio");
        if !cgroup_root.join("blkio.throttle.write_bps_device").exists() {
            return None;
        }
        let image = tempfile::NamedTempFile::new_in("/var/tmp").expect("image");
        image.as_file().set_len(256 << 20).expect("size");
        let out = run(Command::new("losetup").args(["-f", "--show"]).arg(image.path()));
        let loop_dev = out.stdout.trim().to_string();
        assert!(loop_dev.starts_with("/dev/loop"), "losetup: {}", out.stderr);
        let majmin = run(Command::new("lsblk").args(["-dno", "MAJ:MIN", &loop_dev])).stdout.trim().to_string();
        let cgroup = cgroup_root.join(format!("vakt-test-{}", std::process::id()));
        std::fs::create_dir_all(&cgroup).expect("cgroup");
        std::fs::write(cgroup.join("blkio.throttle.write_bps_device"), format!("{majmin} 131072")).expect("throttle");
        let writers = (0..4)
            .map(|i| {
                Command::new("sh")
                    .arg("-c")
                    .arg(format!(
                        "echo $$ > {}/cgroup.procs && exec dd if=/dev/zero of={loop_dev} bs=64k oflag=direct seek={} count=100000",
                        cgroup.display(),
                        i * 1000
                    ))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("writer")
            })
            .collect();
        Some(ThrottledWriters { loop_dev, cgroup, writers, _image: image })
    }
}

impl Drop for ThrottledWriters {
    fn drop(&mut self) {
        for w in &mut self.writers {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = Command::new("losetup").args(["-d", &self.loop_dev]).status();
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

/// Traffic falls while throttled writers hold the disk: the bottleneck alarm, naming the host
/// signal that moved; it clears when the traffic is back.
#[test]
fn a_fall_while_the_disk_is_throttled_is_a_bottleneck() {
    if !ready() || !require("root and losetup", nix::unistd::geteuid().is_root() && has("losetup")) {
        return;
    }
    if !std::path::Path::new("/proc/pressure/io").exists() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "this kernel has no /proc/pressure/io");
        return;
    }
    let gateway = Stub::start(Mode::Gateway { rate: 40.0 });
    let prometheus = Prometheus::start(gateway.port);
    let _host = HOST.lock().unwrap_or_else(|e| e.into_inner());
    let watch = Watch::start(prometheus.port, "", "io_pressure_warn = 10.0\n");
    std::thread::sleep(Duration::from_secs(20));
    let writers = ThrottledWriters::start();
    let Some(writers) = writers else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "no blkio throttling (cgroup v1) on this machine");
        return;
    };
    // The pressure's 10 s average climbs first; then the traffic falls.
    std::thread::sleep(Duration::from_secs(10));
    gateway.set_rate(6.0);
    let alarm = watch.wait_for("bottleneck:", Duration::from_secs(30));
    let pressure = std::fs::read_to_string("/proc/pressure/io").unwrap_or_default();
    let alarm = alarm.unwrap_or_else(|| panic!("no bottleneck alarm; io pressure now {pressure}"));
    eprintln!("{alarm}");
    assert!(alarm.contains("invocations fell") && alarm.contains("rose to"), "names the host signal: {alarm}");
    let m = watch.metrics();
    assert_eq!(metric(&m, "vakt_alarm_active{kind=\"bottleneck\"}"), Some(1.0), "{m}");
    assert!(!watch.said("quiet:"), "not quiet while the disk is throttled");
    drop(writers);
    gateway.set_rate(40.0);
    let cleared = watch.wait_for("bottleneck over", Duration::from_secs(40)).expect("the alarm clears");
    eprintln!("{cleared}");
    assert!(cleared.contains("back") || cleared.contains("calm"), "{cleared}");
}

/// An unreachable, huge or stalled source: the workload part says so, no alarm is raised, and
/// the sampler's status and `/metrics` go on.
#[test]
fn a_failing_source_raises_nothing_and_stops_nothing() {
    if !require("curl", has("curl")) {
        return;
    }
    let huge = Stub::start(Mode::Huge);
    let stall = Stub::start(Mode::Stall);
    let closed = free_port();
    for (port, says) in
        [(closed, "cannot connect"), (huge.port, "over 65536 bytes"), (stall.port, "did not answer within 500ms")]
    {
        let watch = Watch::start(port, "", "");
        let failed =
            watch.wait_for("cannot read the workload's figures", Duration::from_secs(10)).expect("the failure is said");
        eprintln!("{failed}");
        assert!(failed.contains(says), "{failed}");
        // Samples go on: three seconds later the metrics have moved on and still answer.
        let first = metric(&watch.metrics(), "vakt_samples_total").expect("metrics answer");
        std::thread::sleep(Duration::from_secs(3));
        let m = watch.metrics();
        assert!(metric(&m, "vakt_samples_total").expect("metrics answer") >= first + 2.0, "{m}");
        assert_eq!(metric(&m, "vakt_workload_up"), Some(0.0), "{m}");
        assert!(metric(&m, "vakt_workload_errors_total").expect("errors") >= 1.0, "{m}");
        assert_eq!(metric(&m, "vakt_alarm_active{kind=\"bottleneck\"}"), Some(0.0), "{m}");
        assert!(!watch.said("bottleneck:") && !watch.said("quiet:"), "no judgement without figures");
    }
}
