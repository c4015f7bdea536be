//! Hostile input: profile values that would reach a file, an argv or a clock, the
//! profile file and `--root` themselves, and output that a reader closes or cannot take. Each
//! test drives the built binary as an operator (or an attacker with a profile) would.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

fn write_profile(dir: &Path, body: &str) -> String {
    let p = dir.join("p.toml");
    std::fs::write(&p, body).expect("write");
    p.display().to_string()
}

/// `vakt profile validate` refuses `body` with exit 2, naming `key` and saying `says`.
fn refused(body: &str, key: &str, says: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write_profile(dir.path(), body);
    let out = run(vakt().args(["profile", "validate", &p]));
    assert_eq!(out.code, 2, "accepted: {body:?}\n{}", out.stdout);
    assert!(out.stderr.contains(key) && out.stderr.contains(says), "{body:?}: {}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "one line, nothing from the file quoted: {}", out.stderr);
    assert!(!out.stderr.contains('\x1b'), "control characters are escaped: {:?}", out.stderr);
}

#[test]
fn values_that_would_inject_into_files_or_argv_are_refused_at_the_profile() {
    // A newline in a sysctl value used to become a second line of sysctl.d (core_pattern!).
    refused(
        "[tuning.sysctl]\n\"vm.swappiness\" = \"10\\nkernel.core_pattern = |/srv/x\"\n",
        "tuning.sysctl",
        "one line",
    );
    refused("[tuning.sysctl]\n\"vm..swappiness\" = 1\n", "tuning.sysctl", "not a sysctl name");
    refused("[tuning.sysctl]\n\"vm.swap piness\" = 1\n", "tuning.sysctl", "not a sysctl name");
    refused("[tuning.sysctl]\n\"-vm.swappiness\" = 1\n", "tuning.sysctl", "not a sysctl name");
    refused("[tuning.sysctl]\n\"vm.swappiness\" = \"1\\u001b[2J\"\n", "tuning.sysctl", "control characters");
    // A comment that ufw would parse as one of its own options.
    refused(
        "[firewall]\n[[firewall.allow]]\nport = 22\ncomment = \"--datadir=/x\"\n",
        "firewall.allow[0].comment",
        "option",
    );
    // A comment ufw's parser takes for a word of the rule (`ufw ... comment log` fails).
    refused(
        "[firewall]\n[[firewall.allow]]\nport = 22\ncomment = \"log\"\n",
        "firewall.allow[0].comment",
        "word of the rule",
    );
    // nginx values that must be one word.
    refused("[nginx]\nlisten = \"80; worker_rlimit_nofile 4242\"\n", "nginx.listen", "not a port");
    refused("[nginx]\nserver_name = \"a #b\"\n", "nginx.server_name", "one nginx word");
    refused("[nginx]\nupstream = [\"127.0.0.1:8080 backup\"]\n", "nginx.upstream", "HOST:PORT");
    refused("[nginx]\nerror_log = \"/var/log/x.log;\\nuser root\"\n", "nginx.error_log", "one nginx word");
    refused("[nginx]\nclient_max_body_size = \"50 m\"\n", "nginx.client_max_body_size", "not a size");
    // Paths: absolute and normalised.
    refused("[nginx]\nconfig = \"/../../../srv/x/nginx.conf\"\n", "nginx.config", "not normalised");
    refused("[nginx]\nconfig = \"etc/nginx.conf\"\n", "nginx.config", "not an absolute path");
    refused("[nginx]\npid = \"/run//nginx.pid\"\n", "nginx.pid", "not normalised");
    refused("[host]\nstorage_paths = [\"/var/lib/docker/..\"]\n", "host.storage_paths", "not normalised");
    refused("[docker]\nhost = \"tcp://10.0.0.1:2375\"\n", "docker.host", "only unix sockets");
    // Docker refuses to start (or reload) with these; vakt says so before writing daemon.json.
    refused("[docker.daemon]\nlabels = [\"vakt-bench\"]\n", "docker.daemon.labels", "not key=value");
    refused("[docker.daemon]\nlabels = [\"a=1\", \"a=2\"]\n", "docker.daemon.labels", "set twice");
    refused("[docker.daemon]\nlabels = [\"com.docker.x=1\"]\n", "docker.daemon.labels", "reserved namespace");
    refused("[docker.daemon]\nlabels = [\"COM.Docker.x=1\"]\n", "docker.daemon.labels", "reserved namespace");
    refused("[docker.daemon]\nlabels = [\"a=\\u001b[2J\"]\n", "docker.daemon.labels", "no control characters");
    refused("[docker.daemon]\nlabels = \"a=1\"\n", "docker.daemon.labels", "a list of");
    refused("[docker.daemon]\ndebug = \"yes\"\n", "docker.daemon.debug", "true or false");
}

#[test]
fn numbers_that_overflow_or_make_no_sense_are_refused_with_the_range() {
    // Both used to wrap in release builds: to `client_max_body_size 0;` and to 384ms.
    refused("[nginx]\nclient_max_body_size = \"17179869184g\"\n", "nginx.client_max_body_size", "too large");
    refused("[nginx]\nproxy_read_timeout = \"18446744073709552s\"\n", "nginx.proxy_read_timeout", "too long");
    refused("[nginx]\nproxy_read_timeout = \"30d\"\n", "nginx.proxy_read_timeout", "use 1s to 7d");
    refused("[nginx]\nclient_body_buffer_size = \"0\"\n", "nginx.client_body_buffer_size", "use 1 to 1g");
    refused("[watch]\ncheck_every = \"0s\"\n", "watch.check_every", "use 1s to 30d");
    refused("[watch]\ninterval = \"0s\"\n", "watch.interval", "use 100ms to 1h");
    refused("[watch]\ninterval = \"100ms\"\nwindow = \"100000d\"\n", "watch.window", "out of range");
    refused("[docker]\nrestart_timeout = \"0s\"\n", "docker.restart_timeout", "use 1s to 10m");
    refused("[nginx]\nworker_processes = \"99999\"\n", "nginx.worker_processes", "1 to 1024");
    refused("[firewall]\n[[firewall.allow]]\nport = 70000\n", "p.toml:3:8", "not a port; use 1 to 65535");
    refused("[firewall]\n[[firewall.allow]]\nport = \"22x\"\n", "firewall.allow[0].port", "not a port (1-65535)");
    let w = |kv: &str| format!("[watch]\n[watch.workload]\n{kv}\n");
    refused(&w("timeout = \"20s\"\nevery = \"10s\""), "watch.workload.timeout", "not shorter than every");
    refused(&w("max_body = \"1g\""), "watch.workload.max_body", "use 1024 to 16m");
    refused(&w("fall = 0.0"), "watch.workload.fall", "above 0 and at most 100");
    refused(&w("baseline = \"1s\""), "watch.workload.baseline", "out of range");
    refused(&w("rate_query = \"up\\nx\""), "watch.workload.rate_query", "one line");
    refused("[watch]\nlatency_every = \"1s\"\n", "watch.latency_every", "use 1m to 1d");
    refused("[watch]\nlatency_warn = \"18446744073709552s\"\n", "watch.latency_warn", "too long");
}

/// A Prometheus URL is checked where it is read, and its password is never shown.
#[test]
fn a_prometheus_url_is_plain_http_and_its_password_stays_hidden() {
    let w = |url: &str| format!("[watch]\n[watch.workload]\nprometheus = \"{url}\"\n");
    refused(&w("https://prom.example:9090"), "watch.workload.prometheus", "not an http:// URL");
    refused(&w("http://prom.example:99999"), "watch.workload.prometheus", "the port is 1 to 65535");
    refused(&w("http://prom.example:9090/api?x=1"), "watch.workload.prometheus", "no query");
    for url in ["http://admin:hunter2@bad host:9090", "https://admin:hunter2@prom.example"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = run(vakt().args(["profile", "validate", &write_profile(dir.path(), &w(url))]));
        assert_eq!(out.code, 2, "{url}");
        assert!(out.stderr.contains("***@") && !out.stderr.contains("hunter2"), "{}", out.stderr);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write_profile(dir.path(), &w("http://admin:hunter2@127.0.0.1:9090/prometheus"));
    let valid = run(vakt().args(["profile", "validate", &p]));
    assert_eq!(valid.code, 0, "{}", valid.stderr);
    let shown = run(vakt().args(["profile", "show", "-p", &p]));
    assert!(shown.stdout.contains("prometheus = \"http://***@127.0.0.1:9090/prometheus\""), "{}", shown.stdout);
    assert!(!shown.stdout.contains("hunter2"), "{}", shown.stdout);
}

#[test]
fn duplicates_are_profile_errors() {
    refused(
        "[firewall]\n[[firewall.allow]]\nport = 22\n[[firewall.allow]]\nport = 22\ncomment = \"again\"\n",
        "firewall.allow[1].port",
        "same traffic as firewall.allow[0]",
    );
    refused("[packages]\ninstall = [\"ufw\", \"ufw\"]\n", "packages.install", "listed twice");
    refused("[nginx]\nupstream = [\"127.0.0.1:8080\", \"127.0.0.1:8080\"]\n", "nginx.upstream", "listed twice");
}

#[test]
fn the_profile_path_never_reaches_the_rendered_file() {
    // A path with a newline used to become a live nginx directive in the header comment.
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = dir.path().join("d\nworker_rlimit_nofile 4242;\n#");
    std::fs::create_dir_all(&sub).expect("mkdir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc/nginx")).expect("root");
    let p = sub.join("p.toml");
    std::fs::write(&p, "[nginx]\n").expect("profile");
    let out = run(vakt().arg("--root").arg(&root).args(["check", "--only", "nginx", "--diff", "-p"]).arg(&p));
    assert!(!out.stdout.contains("\nworker_rlimit_nofile"), "{}", out.stdout);
    assert!(out.stdout.contains("d\\nworker_rlimit_nofile"), "the path is shown escaped: {}", out.stdout);
}

#[test]
fn the_profile_file_must_be_a_bounded_regular_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(vakt().args(["profile", "validate", "/dev/zero"]));
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("not a regular file"), "{}", out.stderr);

    let fifo = dir.path().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let started = std::time::Instant::now();
    let out = run(vakt().args(["check", "-p"]).arg(&fifo));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("not a regular file"), "{}", out.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "a FIFO must not hang");

    let big = dir.path().join("big.toml");
    std::fs::write(&big, format!("# {}\n", "x".repeat(2 << 20))).expect("big");
    let out = run(vakt().args(["profile", "validate"]).arg(&big));
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("too large"), "{}", out.stderr);
}

#[test]
fn errors_in_files_that_are_not_profiles_quote_no_line_of_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("shadow");
    std::fs::write(&secret, "root:$6$s3cr3th4sh:19000:0:99999:7:::\n").expect("secret");
    let out = run(vakt().args(["profile", "validate"]).arg(&secret));
    assert_eq!(out.code, 2);
    assert!(!out.stderr.contains("s3cr3t"), "{}", out.stderr);
}

#[test]
fn a_dangling_system_profile_is_an_error_not_a_fallback() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(root.path().join("etc/vakt")).expect("mkdir");
    std::os::unix::fs::symlink("/etc/vakt/gone.toml", root.path().join("etc/vakt/profile.toml")).expect("link");
    let out = run(vakt().arg("--root").arg(root.path()).args(["check", "--only", "host"]));
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stderr.contains("gone.toml"), "names the missing target: {}", out.stderr);
    assert!(!out.stdout.contains("builtin:"), "no silent fallback: {}", out.stdout);
}

#[test]
fn a_root_that_is_not_a_directory_is_an_invalid_invocation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("file");
    std::fs::write(&file, "").expect("file");
    for root in [dir.path().join("absent"), file] {
        let out = run(vakt().arg("--root").arg(&root).arg("check"));
        assert_eq!(out.code, 2, "{}", out.stdout);
        assert!(out.stderr.contains("--root"), "{}", out.stderr);
        assert!(out.stdout.is_empty(), "no audit of an empty tree: {}", out.stdout);
    }
}

#[test]
fn a_closed_pipe_ends_quietly_and_a_full_disk_is_one_error() {
    let root = tempfile::tempdir().expect("tempdir");
    for args in [&["profile", "show"][..], &["check", "--only", "host"][..]] {
        // The reader reads nothing and goes away: no panic, no SIGABRT, no message.
        let mut child = vakt()
            .arg("--root")
            .arg(root.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.code().is_some(), "{args:?} died by a signal: {:?}", out.status);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let full = std::fs::File::options().write(true).open("/dev/full").expect("/dev/full");
    let out = Command::new(env!("CARGO_BIN_EXE_vakt")).args(["profile", "show"]).stdout(full).output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("failed to write to standard output") && !stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn machine_formats_carry_a_profile_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write_profile(dir.path(), "[watch]\ninterval = \"soon\"\n");
    let out = run(vakt().args(["check", "--format", "json", "-p", &p]));
    assert_eq!(out.code, 2);
    let doc = json(&out);
    assert!(doc["error"].as_str().is_some_and(|e| e.contains("watch.interval")), "{doc}");
    let out = run(vakt().args(["check", "--format", "prometheus", "-p", &p]));
    assert_eq!(out.code, 2);
    assert!(out.stdout.contains("vakt_check_up 0"), "{}", out.stdout);
    let out = run(vakt().args(["check", "--format", "junit", "-p", &p]));
    assert!(out.stdout.contains("<error message=") && out.stdout.contains("watch.interval"), "{}", out.stdout);
}

#[test]
fn a_dropin_that_replaces_a_list_is_warned_about() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(root.path().join("etc/vakt/profile.d")).expect("mkdir");
    std::fs::write(
        root.path().join("etc/vakt/profile.toml"),
        "[firewall]\n[[firewall.allow]]\nport = 22\n[[firewall.allow]]\nport = 2377\n",
    )
    .expect("profile");
    std::fs::write(root.path().join("etc/vakt/profile.d/50-web.toml"), "[[firewall.allow]]\nport = 443\n")
        .expect("dropin");
    let out = run(vakt().arg("--root").arg(root.path()).args(["profile", "show"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("50-web.toml") && out.stderr.contains("`firewall.allow` replaces the whole list"),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("2377"), "documented: the list is replaced\n{}", out.stdout);
}

/// Issue 22: a FIFO where vakt expects a file used to hang `check` forever (the open waits
/// for a writer). Every host file is opened without blocking and refused unless regular.
#[test]
fn a_fifo_where_a_file_belongs_is_refused_not_waited_on() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    for dir in ["etc/ufw", "etc/default", "etc/ssh"] {
        std::fs::create_dir_all(root.join(dir)).expect("mkdir");
    }
    std::fs::write(root.join("etc/ufw/ufw.conf"), "ENABLED=no\n").expect("ufw.conf");
    std::fs::write(root.join("etc/default/ufw"), "IPV6=yes\nDEFAULT_INPUT_POLICY=\"DROP\"\n").expect("defaults");
    std::fs::write(root.join("etc/ufw/user.rules"), "*filter\nCOMMIT\n").expect("user.rules");
    std::fs::write(root.join("etc/ufw/user6.rules"), "*filter\nCOMMIT\n").expect("user6.rules");
    let fifo = root.join("etc/ufw/after.rules");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let p = write_profile(root, "[firewall]\npublished_ports = \"profile\"\n[[firewall.allow]]\nport = 22\n");
    let mut child = vakt()
        .args(["--root", &root.display().to_string(), "check", "-p", &p, "--only", "firewall"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vakt starts");
    let began = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if began.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            panic!("check hung on the FIFO at {}", fifo.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("after.rules is a FIFO, not a regular file"), "{text}");
}

/// Issue 22: a file vakt writes that is a link out of its directory (`daemon.json ->
/// ../secrets.json`) used to be followed: the target was rewritten with vakt's keys. It is
/// refused, naming the link, and the target is left as it was.
#[test]
fn a_link_out_of_its_directory_is_never_written_through() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    std::fs::create_dir_all(root.join("etc/docker")).expect("mkdir");
    std::fs::write(root.join("etc/secrets.json"), "{\"token\": \"s3cret\"}\n").expect("target");
    std::os::unix::fs::symlink("../secrets.json", root.join("etc/docker/daemon.json")).expect("link");
    let p = write_profile(root, "[docker]\nstorage_driver = \"overlay2\"\n");
    let out = run(vakt().args(["--root", &root.display().to_string(), "apply", "-p", &p, "--only", "docker"]));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("daemon.json is a symbolic link to") && out.stdout.contains("outside its directory"),
        "{}",
        out.stdout
    );
    assert_eq!(std::fs::read_to_string(root.join("etc/secrets.json")).expect("target"), "{\"token\": \"s3cret\"}\n");
    assert!(!root.join("etc/secrets.json.vakt-prev").exists());
    // A link to a file beside it is the operator's layout: written through, the link kept.
    std::fs::remove_file(root.join("etc/docker/daemon.json")).expect("rm");
    std::fs::write(root.join("etc/docker/daemon.local.json"), "{}\n").expect("local");
    std::os::unix::fs::symlink("daemon.local.json", root.join("etc/docker/daemon.json")).expect("link");
    let out = run(vakt().args(["--root", &root.display().to_string(), "apply", "-p", &p, "--only", "docker"]));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let local = std::fs::read_to_string(root.join("etc/docker/daemon.local.json")).expect("local");
    assert!(local.contains("\"storage-driver\": \"overlay2\""), "{local}");
    assert!(std::fs::symlink_metadata(root.join("etc/docker/daemon.json")).expect("link").file_type().is_symlink());
}

/// Issue 22: a local user names a listening process `x\nwould run: ok` (prctl); the newline
/// used to split the exposure title and forge an indented line in root's report. A real
/// listener in a private network namespace, the real /proc.
#[test]
fn a_process_name_cannot_forge_a_line_of_the_report() {
    if !(require("root", is_root())
        && require("ufw, iptables and python3", has("ufw") && has("iptables-save") && has("python3")))
    {
        return;
    }
    let sb = common::netns::UfwSandbox::new();
    let listen = "import ctypes, socket, sys, time\n\
        ctypes.CDLL(None).prctl(15, b'x\\nwould run: ok', 0, 0, 0)\n\
        s = socket.socket(); s.bind(('0.0.0.0', 5999)); s.listen()\n\
        print('ready', flush=True); time.sleep(120)\n";
    let mut child = Command::new("ip")
        .args(["netns", "exec", &sb.netns, "python3", "-c", listen])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    let mut ready = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut ready).expect("ready");
    let p = sb.file("p.toml");
    std::fs::write(&p, "[firewall]\n[[firewall.allow]]\nport = 22\n").expect("profile");
    let p = p.display().to_string();
    let text = sb.vakt(&["check", "-p", &p, "--only", "exposure", "-v"]);
    let json = sb.vakt(&["check", "-p", &p, "--only", "exposure", "--format", "json"]);
    let junit = sb.vakt(&["check", "-p", &p, "--only", "exposure", "--format", "junit"]);
    let prom = sb.vakt(&["check", "-p", &p, "--only", "exposure", "--format", "prometheus"]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.stdout.contains("via x\\nwould run: ok (pid"), "{}", text.stdout);
    assert!(!text.stdout.lines().any(|l| l.trim_start().starts_with("would run: ok")), "forged line:\n{}", text.stdout);
    let report = common::json(&json);
    let title = common::findings(&report)
        .into_iter()
        .find(|f| f["id"] == "exposure.tcp.5999")
        .map(|f| f["title"].as_str().unwrap_or("").to_string())
        .expect("the listener is reported");
    assert!(title.contains("x\\nwould run: ok (pid") && !title.contains('\n'), "{title:?}");
    for out in [&junit.stdout, &prom.stdout] {
        assert!(!out.lines().any(|l| l.trim_start().starts_with("would run: ok")), "forged line:\n{out}");
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
    }
}
