//! The command line: exit codes, profile errors, output formats, driven through the binary.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;

fn write_profile(dir: &std::path::Path, body: &str) -> String {
    let p = dir.join("p.toml");
    std::fs::write(&p, body).expect("write");
    p.display().to_string()
}

#[test]
fn version_and_help_document_exit_codes() {
    let v = run(vakt().arg("--version"));
    assert_eq!(v.code, 0);
    assert!(v.stdout.starts_with("vakt "), "{}", v.stdout);
    let h = run(vakt().arg("--help"));
    for line in ["0  compliant", "1  drift found", "2  invalid invocation", "3  something could not be verified"] {
        assert!(h.stdout.contains(line), "{line} missing from --help");
    }
}

#[test]
fn apply_without_a_profile_says_how_to_pass_one() {
    let root = tempfile::tempdir().expect("tempdir");
    let out = run(vakt().arg("--root").arg(root.path()).arg("apply"));
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("-p builtin:openfaas-swarm") && out.stderr.contains("never falls back"),
        "{}",
        out.stderr
    );
}

#[test]
fn shipped_profiles_validate() {
    for name in ["openfaas-swarm", "hardened", "watch-only"] {
        let file = repo(&format!("profiles/{name}.toml"));
        let out = run(vakt().args(["profile", "validate"]).arg(&file));
        assert_eq!(out.code, 0, "{name}: {}", out.stderr);
        assert!(out.stdout.contains("valid"), "{}", out.stdout);
        let builtin = run(vakt().args(["profile", "validate", &format!("builtin:{name}")]));
        assert_eq!(builtin.code, 0, "{}", builtin.stderr);
    }
}

#[test]
fn each_class_of_profile_mistake_is_exit_2_with_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("[docker]\nstorage_drvier = \"overlay2\"\n", "p.toml:2:1", "did you mean `storage_driver`"),
        ("[firewall]\nprune = \"yes\"\n", "p.toml:2:9", "invalid type"),
        ("[watch]\ninterval = \"5 seconds\"\n", "p.toml:2:1", "watch.interval"),
        ("[firewall]\n[[firewall.allow]]\nport = 22\nfrom = \"10.0.0/33\"\n", "p.toml:4:1", "firewall.allow[0].from"),
        ("[watch]\niowait_warn = 5.0\niowait_clear = 9.0\n", "p.toml:3:1", "must be below iowait_warn"),
        ("[swarm]\nlisten_addr = \"everywhere\"\n", "p.toml:2:1", "swarm.listen_addr"),
    ];
    for (body, place, says) in cases {
        let p = write_profile(dir.path(), body);
        let out = run(vakt().args(["profile", "validate", &p]));
        assert_eq!(out.code, 2, "{body}");
        assert!(out.stderr.contains(place) && out.stderr.contains(says), "{body}: {}", out.stderr);
        let check = run(vakt().args(["check", "-p", &p]));
        assert_eq!(check.code, 2, "check refuses it too");
    }
}

#[test]
fn unknown_resource_and_format_are_invalid_invocations() {
    let out = run(vakt().args(["check", "--only", "fierwall"]));
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("unknown resource `fierwall`"), "{}", out.stderr);
    assert_eq!(run(vakt().args(["check", "--format", "yaml"])).code, 2);
}

#[test]
fn profile_show_prints_a_valid_effective_profile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(vakt().args(["profile", "show", "-p", "builtin:watch-only"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("steal_warn = 10.0"), "{}", out.stdout);
    let p = write_profile(dir.path(), &out.stdout);
    assert_eq!(run(vakt().args(["profile", "validate", &p])).code, 0);
}

#[test]
fn dropins_layer_over_the_system_profile() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(root.path().join("etc/vakt/profile.d")).expect("mkdir");
    std::fs::write(root.path().join("etc/vakt/profile.toml"), "[watch]\nsteal_warn = 20.0\n").expect("base");
    std::fs::write(root.path().join("etc/vakt/profile.d/50-site.toml"), "[watch]\nsteal_warn = 30.0\n")
        .expect("dropin");
    let out = run(vakt().arg("--root").arg(root.path()).args(["profile", "show"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("steal_warn = 30.0"), "{}", out.stdout);
}

#[test]
fn a_profile_others_can_write_is_refused_as_root() {
    if !require("root", is_root()) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write_profile(dir.path(), "[watch]\n");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = run(vakt().args(["check", "-p", &p]));
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("writable by group or others") && out.stderr.contains("chmod go-w"), "{}", out.stderr);
}

#[test]
fn output_formats() {
    let fixture = repo("tests/fixtures/hosts/kvm-nvme");
    let base =
        |fmt: &str| run(vakt().arg("--root").arg(&fixture).args(["check", "--only", "host,firewall", "--format", fmt]));
    let json = json(&base("json"));
    assert_eq!(json["schema"], 1);
    // vakt's own peak memory: a few MiB, never the commands it ran.
    let peak = json["peak_rss_kib"].as_u64().expect("peak_rss_kib");
    assert!((1000..64 * 1024).contains(&peak), "peak RSS {peak} KiB");
    // Its own CPU: some, and no more than the run's wall time allows on this machine's cores
    // (its commands left out; the process started before the run's clock).
    let cpu = json["cpu_us"].as_u64().expect("cpu_us");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let wall_us = (json["elapsed_ms"].as_u64().expect("elapsed_ms") + 1000) * 1000;
    assert!(cpu > 0 && cpu <= wall_us * cores, "cpu {cpu} us, wall under {wall_us} us, {cores} cores");
    assert_eq!(json["summary"]["ok"], 4);
    assert_eq!(status_of(&json, "firewall"), "unknown", "no ufw in the fixture: could not verify");
    let junit = base("junit").stdout;
    assert!(
        junit.starts_with("<?xml") && junit.contains("<testsuite name=\"host\" tests=\"4\" failures=\"0\""),
        "{junit}"
    );
    assert!(junit.contains("<error message=\"firewall could not be observed\">"), "{junit}");
    let prom = base("prometheus").stdout;
    assert!(prom.contains("vakt_check_ok{resource=\"host\",id=\"host.hypervisor\",status=\"ok\"} 1"), "{prom}");
    assert!(prom.contains("vakt_check_findings{status=\"unknown\"} 1"), "{prom}");
    let text = run(vakt().arg("--root").arg(&fixture).args(["--color", "always", "check", "--only", "host"]));
    assert!(text.stdout.contains("\x1b[32mok"), "colour when asked");
    assert!(
        text.stdout.lines().last().is_some_and(|l| l.starts_with("summary: 4 ok") && l.ends_with(" ms")),
        "{}",
        text.stdout
    );
    let plain = run(vakt().arg("--root").arg(&fixture).args(["check", "--only", "host"]));
    assert!(!plain.stdout.contains('\x1b'), "no colour on a pipe");
}

#[test]
fn check_on_a_bare_machine_uses_the_builtin_and_skips_absent_sections() {
    let fixture = repo("tests/fixtures/hosts/kvm-nvme");
    let out = run(vakt().arg("--root").arg(&fixture).args(["check", "-p", "builtin:watch-only", "--format", "json"]));
    let report = json(&out);
    assert_eq!(status_of(&report, "firewall"), "skipped");
    assert_eq!(status_of(&report, "docker"), "skipped");
    assert_eq!(out.code, 0, "skipped is not drift: {}", out.stdout);
}
