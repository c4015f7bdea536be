//! Fault injection through the real components: a Docker socket that is missing, dead or
//! slow; nginx, ufw, dpkg-query missing from PATH; /etc/docker read-only; a full disk for the
//! temp file. Each gives a clear finding or error, and the host stays consistent.

mod common;

use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use common::netns::UfwSandbox;
use common::*;

const DOCKER: &str = "[docker]\nrestart = false\n";
const OLD_JSON: &str = "{\"log-level\": \"warn\"}\n";

fn tree_with_daemon_json() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("etc/docker")).expect("mkdir");
    std::fs::write(dir.path().join("etc/docker/daemon.json"), OLD_JSON).expect("daemon.json");
    std::fs::write(dir.path().join("p.toml"), DOCKER).expect("profile");
    dir
}

fn check_docker(root: &std::path::Path, socket: &std::path::Path) -> (Run, Duration) {
    let started = Instant::now();
    let out = run(vakt_live_in(root)
        .args(["check", "--only", "docker,swarm", "-p"])
        .arg(root.join("p.toml"))
        .env("DOCKER_HOST", format!("unix://{}", socket.display())));
    (out, started.elapsed())
}

#[test]
fn docker_socket_present_but_dead() {
    if !require("root", is_root()) {
        return;
    }
    let dir = tree_with_daemon_json();
    std::fs::write(dir.path().join("p.toml"), format!("{DOCKER}[swarm]\n")).expect("profile");
    let sock = dir.path().join("dead.sock");
    drop(UnixListener::bind(&sock).expect("bind"));
    let (out, _) = check_docker(dir.path(), &sock);
    assert_eq!(out.code, 1, "the file part still reports drift:\n{}", out.stdout);
    assert!(out.stdout.contains("unknown  docker.engine.driver"), "{}", out.stdout);
    assert!(out.stdout.contains("unknown  swarm.node"), "{}", out.stdout);
    assert!(out.stdout.contains("dead.sock failed to answer /info"), "{}", out.stdout);
}

#[test]
fn docker_socket_answering_slowly_times_out() {
    if !require("root", is_root()) {
        return;
    }
    let dir = tree_with_daemon_json();
    let sock = dir.path().join("slow.sock");
    let listener = UnixListener::bind(&sock).expect("bind");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s); // accept, never answer
        }
    });
    let (out, took) = check_docker(dir.path(), &sock);
    assert!(out.stdout.contains("slow.sock did not answer /info within 5s"), "{}", out.stdout);
    assert!(took < Duration::from_secs(20), "a timeout, not a hang: {took:?}");
}

/// Issue 13: a TCP endpoint is named as unsupported, in a finding, never taken for a path.
#[test]
fn a_tcp_docker_host_is_named_in_the_findings() {
    if !require("root", is_root()) {
        return;
    }
    let dir = tree_with_daemon_json();
    std::fs::write(dir.path().join("p.toml"), format!("{DOCKER}[swarm]\n")).expect("profile");
    let out = run(vakt_live_in(dir.path())
        .args(["check", "--only", "docker,swarm", "-p"])
        .arg(dir.path().join("p.toml"))
        .env("DOCKER_HOST", "tcp://192.0.2.1:2375"));
    assert_eq!(out.code, 1, "the file part still reports drift:\n{}", out.stdout);
    let said = "DOCKER_HOST=tcp://192.0.2.1:2375: vakt talks to the engine over a unix socket only (unix:///PATH)";
    for id in ["docker.engine.driver", "swarm.node"] {
        let line = out.stdout.lines().find(|l| l.contains(id)).unwrap_or_else(|| panic!("no {id}:\n{}", out.stdout));
        assert!(line.starts_with("unknown"), "{line}");
    }
    assert_eq!(out.stdout.matches(said).count(), 2, "{}", out.stdout);
}

#[test]
fn docker_unreachable_is_a_clear_failure_in_apply_and_the_file_part_still_works() {
    if !require("root", is_root()) {
        return;
    }
    let dir = tree_with_daemon_json();
    let missing = dir.path().join("missing.sock");
    std::fs::write(dir.path().join("p.toml"), "[docker]\nrestart = false\n[swarm]\n").expect("profile");
    let out = run(vakt_live_in(dir.path())
        .args(["apply", "-p"])
        .arg(dir.path().join("p.toml"))
        .env("DOCKER_HOST", format!("unix://{}", missing.display())));
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("changed  docker.daemon.storage-driver"), "{}", out.stdout);
    assert!(out.stdout.contains("missing.sock does not exist"), "{}", out.stdout);
    let written = std::fs::read_to_string(dir.path().join("etc/docker/daemon.json")).expect("file");
    assert!(written.contains("\"log-level\": \"warn\"") && written.contains("overlay2"), "{written}");
}

#[test]
fn missing_binaries_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("etc/nginx")).expect("mkdir");
    std::fs::write(dir.path().join("etc/nginx/nginx.conf"), "events {}\n").expect("conf");
    // On the running system (offline, under --root, validation would wait for the first boot).
    let t = dir.path().display();
    let profile = format!(
        "[nginx]\nconfig = \"{t}/etc/nginx/nginx.conf\"\npid = \"{t}/nginx.pid\"\n[packages]\ninstall = [\"ufw\"]\n"
    );
    std::fs::write(dir.path().join("p.toml"), profile).expect("profile");
    let out = run(vakt().args(["apply", "-p"]).arg(dir.path().join("p.toml")).env("PATH", "/nonexistent"));
    assert!(
        out.stdout.contains("`nginx` was not found on PATH; install it (Debian package `nginx`)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("`dpkg-query` was not found on PATH"), "{}", out.stdout);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("etc/nginx/nginx.conf")).expect("conf"),
        "events {}\n",
        "not overwritten without validation"
    );
    assert_ne!(out.code, 0);
}

#[test]
fn ufw_missing_from_path_fails_clearly_and_changes_nothing() {
    if !require("root, ufw and iptables", is_root() && has("ufw") && has("iptables-save")) {
        return;
    }
    let sb = UfwSandbox::new();
    std::fs::write(sb.file("p.toml"), "[firewall]\n[[firewall.allow]]\nport = 22\n").expect("profile");
    let before = sb.iptables_save();
    let root = sb.root().display().to_string();
    let profile = sb.file("p.toml").display().to_string();
    let out = run(&mut sb.command(&[
        "env",
        "PATH=/nonexistent",
        env!("CARGO_BIN_EXE_vakt"),
        "--root",
        &root,
        "apply",
        "-p",
        &profile,
    ]));
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("`ufw` was not found on PATH; install it (Debian package `ufw`)"), "{}", out.stdout);
    assert_eq!(sb.iptables_save(), before);
}

/// Runs `script` then vakt apply (docker only) in a private mount namespace.
fn apply_in_mount_ns(dir: &std::path::Path, script: &str) -> Run {
    let full = format!(
        "{script}\n exec {bin} --root {root} apply --only docker -p {root}/p.toml",
        bin = env!("CARGO_BIN_EXE_vakt"),
        root = dir.display()
    );
    run(std::process::Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-ec", &full]))
}

#[test]
fn read_only_etc_docker_is_an_error_and_the_file_stays() {
    if !require("root", is_root()) {
        return;
    }
    let dir = tree_with_daemon_json();
    let d = dir.path().join("etc/docker").display().to_string();
    let out = apply_in_mount_ns(dir.path(), &format!("mount --bind {d} {d}; mount -o remount,bind,ro {d}"));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("failed to create a temporary file in") && out.stdout.contains("Read-only file system"),
        "{}",
        out.stdout
    );
    assert_eq!(std::fs::read_to_string(dir.path().join("etc/docker/daemon.json")).expect("file"), OLD_JSON);
}

#[test]
fn a_full_disk_for_the_temp_file_leaves_the_old_file() {
    if !require("root", is_root()) {
        return;
    }
    let dir = tree_with_daemon_json();
    let d = dir.path().join("etc/docker").display().to_string();
    // A 64 KiB tmpfs holding the old daemon.json and filler up to the last block.
    let out = apply_in_mount_ns(
        dir.path(),
        &format!(
            "mount -t tmpfs -o size=64k tmpfs {d}; printf '%s' '{}' > {d}/daemon.json; \
             dd if=/dev/zero of={d}/filler bs=4k count=64 2>/dev/null || true",
            OLD_JSON.trim_end()
        ),
    );
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("disk full or read-only") || out.stdout.contains("No space left"), "{}", out.stdout);
    assert!(out.stdout.contains("failed   docker"), "{}", out.stdout);
}
