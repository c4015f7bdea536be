//! The systemd units pass `systemd-analyze verify`, the watchdog unit is sandboxed to an
//! exposure of at most 2.0, and the audit's textfile export works.

mod common;

use common::*;

/// The units with ExecStart pointing at the built binary, so that verify can check it exists.
fn staged_units() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(repo("systemd")).expect("systemd/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "conf") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("unit").replace("/usr/bin/vakt", env!("CARGO_BIN_EXE_vakt"));
        std::fs::write(dir.path().join(path.file_name().expect("name")), text).expect("write");
    }
    dir
}

/// `systemd-analyze verify` passes `units` with no warning.
fn verifies(units: &[impl AsRef<std::ffi::OsStr>]) {
    let out = run(std::process::Command::new("systemd-analyze").arg("verify").args(units));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.trim().is_empty(), "no warnings: {}", out.stderr);
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if !require("systemd-analyze", has("systemd-analyze")) {
        return;
    }
    let dir = staged_units();
    let units: Vec<String> = ["vakt.service", "vakt-provision.service", "vakt-check.service", "vakt-check.timer"]
        .iter()
        .map(|u| dir.path().join(u).display().to_string())
        .collect();
    verifies(&units);
}

/// Issue 15: the commented credential example is a working line once enabled.
#[test]
fn the_join_token_credential_example_verifies() {
    if !require("systemd-analyze", has("systemd-analyze")) {
        return;
    }
    let dir = staged_units();
    let unit = dir.path().join("vakt-provision.service");
    let text = std::fs::read_to_string(&unit).expect("unit");
    let example = "#LoadCredential=swarm-join-token:/etc/vakt/swarm-join-token\n";
    assert!(text.contains(example), "the unit carries the example:\n{text}");
    std::fs::write(&unit, text.replace(example, &example[1..])).expect("write");
    verifies(&[unit]);
}

/// `systemd-analyze security` of vakt.service in `dir`: the exposure score and the whole report.
fn exposure(dir: &std::path::Path) -> (f64, String) {
    let unit = dir.join("vakt.service");
    let out = run(std::process::Command::new("systemd-analyze").args(["security", "--offline=yes"]).arg(&unit));
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{}{}", out.stdout, out.stderr))
        .to_string();
    let score: f64 =
        line.split(':').nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok()).expect("score");
    assert!(line.contains("OK") || line.contains("SAFE"), "{line}");
    (score, out.stdout)
}

#[test]
fn watchdog_unit_is_rated_ok_or_better() {
    if !require("systemd-analyze", has("systemd-analyze")) {
        return;
    }
    let (score, report) = exposure(staged_units().path());
    assert!(score <= 2.0, "{report}");
}

/// Issue 25: the shipped drop-in that lets the watchdog read its disks for `latency_every`
/// verifies, takes effect (device nodes, the disk group), and keeps the unit rated OK.
#[test]
fn the_disk_latency_drop_in_verifies_and_keeps_the_sandbox() {
    if !require("systemd-analyze", has("systemd-analyze")) {
        return;
    }
    let dir = staged_units();
    let drop_in = dir.path().join("vakt.service.d");
    std::fs::create_dir(&drop_in).expect("mkdir");
    std::fs::copy(repo("systemd/disk-latency.conf"), drop_in.join("disk-latency.conf")).expect("copy");
    verifies(&[dir.path().join("vakt.service")]);
    let (score, report) = exposure(dir.path());
    let (base, _) = exposure(staged_units().path());
    assert!(score > base && score <= 2.0, "{base} -> {score}: {report}");
    for widened in
        ["block-virtblk:r", "block-blkext:r", "block-device-mapper:r", "Service runs with supplementary groups"]
    {
        assert!(report.contains(widened), "{widened}: {report}");
    }
    assert!(!report.contains(":rw"), "read access only: {report}");
}

#[test]
fn units_carry_the_promised_settings() {
    let read = |u: &str| std::fs::read_to_string(repo(&format!("systemd/{u}"))).expect("unit");
    let watch = read("vakt.service");
    for line in ["Type=notify", "WatchdogSec=", "Restart=on-failure"] {
        assert!(watch.contains(line), "vakt.service lacks {line}");
    }
    let provision = read("vakt-provision.service");
    for line in [
        "Type=oneshot",
        "RemainAfterExit=yes",
        "After=network-online.target docker.service",
        "ConditionPathExists=!/var/lib/vakt/provisioned",
        "ExecStartPost=/usr/bin/touch /var/lib/vakt/provisioned",
        "Not sandboxed",
    ] {
        assert!(provision.contains(line), "vakt-provision.service lacks {line}");
    }
}

#[test]
fn check_writes_a_textfile_for_node_exporter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("vakt.prom");
    let out = run(vakt()
        .arg("--root")
        .arg(repo("tests/fixtures/hosts/kvm-nvme"))
        .args(["check", "--only", "host", "--textfile"])
        .arg(&file));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&file).expect("textfile");
    assert!(text.contains("vakt_check_ok{resource=\"host\",id=\"host.hypervisor\",status=\"ok\"} 1"), "{text}");
}
