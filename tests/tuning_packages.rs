//! The tuning resource against the real kernel (per-network-namespace sysctls, in a private
//! network and mount namespace) and fixture sysfs trees; the packages resource against the
//! real dpkg and apt.

mod common;

use common::*;

#[test]
fn sysctl_quartet_against_the_real_kernel() {
    if !require("root and unshare", is_root() && has("unshare")) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let persist = dir.path().join("sysctl.d");
    std::fs::create_dir_all(&persist).expect("mkdir");
    let profile = dir.path().join("p.toml");
    std::fs::write(&profile, "[tuning]\nio_scheduler = \"keep\"\n[tuning.sysctl]\n\"net.ipv4.ip_forward\" = 1\n\"net.core.somaxconn\" = \"1024\"\n").expect("profile");
    // These sysctls belong to the network namespace: the host's own values are not touched.
    let script = format!(
        "mount --bind {persist} /etc/sysctl.d
         V={bin}; P={profile}
         $V check -p $P --only tuning --format json > {d}/c1.json; echo $? > {d}/c1.rc
         $V apply -p $P --only tuning --format json > {d}/a1.json; echo $? > {d}/a1.rc
         $V apply -p $P --only tuning --format json > {d}/a2.json; echo $? > {d}/a2.rc
         $V check -p $P --only tuning --format json > {d}/c2.json; echo $? > {d}/c2.rc
         cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/core/somaxconn > {d}/values",
        persist = persist.display(),
        bin = env!("CARGO_BIN_EXE_vakt"),
        profile = profile.display(),
        d = dir.path().display()
    );
    let host_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("host value");
    let out =
        run(std::process::Command::new("unshare").args(["-n", "-m", "--propagation", "private", "sh", "-c", &script]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).expect("output");
    let report = |f: &str| -> serde_json::Value { serde_json::from_str(&read(f)).expect("json") };
    assert_eq!(
        (read("c1.rc").trim(), read("a1.rc").trim(), read("a2.rc").trim(), read("c2.rc").trim()),
        ("1", "0", "0", "0")
    );
    assert_eq!(ids_with(&report("c1.json"), "drift"), ids_with(&report("a1.json"), "changed"), "check cannot lie");
    assert!(ids_with(&report("a1.json"), "changed").contains(&"tuning.sysctl.net.ipv4.ip_forward".to_string()));
    assert!(ids_with(&report("a2.json"), "changed").is_empty(), "second apply changes nothing");
    assert_eq!(read("values"), "1\n1024\n", "the kernel has the values");
    let persisted = std::fs::read_to_string(persist.join("60-vakt.conf")).expect("persisted");
    assert!(
        persisted.contains("net.ipv4.ip_forward = 1\n") && persisted.contains("net.core.somaxconn = 1024\n"),
        "{persisted}"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("host value"),
        host_forward,
        "host untouched"
    );
}

/// A fixture /proc/sys and /sys/block tree where writes land in plain files.
fn fixture(docker: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = |rel: &str, text: &str| write_file(dir.path(), rel, text);
    w("proc/sys/net/ipv4/ip_forward", "1\n");
    w("sys/block/nvme0n1/queue/scheduler", "[mq-deadline] none kyber\n");
    w("sys/block/nvme1n1/queue/scheduler", "[none] mq-deadline\n");
    w("sys/block/vda/queue/scheduler", "[mq-deadline] none\n");
    w("sys/block/nvme0c0n1/queue/scheduler", "[mq-deadline] none\n");
    w("sys/block/nvme0c0n1/hidden", "1\n");
    if docker {
        std::fs::create_dir_all(dir.path().join("sys/class/net/docker0")).expect("docker0");
    }
    dir
}

#[test]
fn nvme_schedulers_are_set_and_persisted_with_a_udev_rule() {
    let root = fixture(false);
    let p = root.path().join("p.toml");
    std::fs::write(&p, "[tuning]\nio_scheduler = \"none\"\n").expect("profile");
    let out = run(vakt()
        .arg("--root")
        .arg(root.path())
        .args(["apply", "--only", "tuning", "--format", "json", "-p"])
        .arg(&p));
    assert_eq!(out.code, 0, "{}", out.stdout);
    let changed = ids_with(&json(&out), "changed");
    assert_eq!(changed, vec!["tuning.scheduler.nvme0n1", "tuning.file.60-vakt-scheduler.rules"]);
    assert_eq!(std::fs::read_to_string(root.path().join("sys/block/nvme0n1/queue/scheduler")).expect("sched"), "none");
    assert_eq!(
        std::fs::read_to_string(root.path().join("sys/block/vda/queue/scheduler")).expect("sched"),
        "[mq-deadline] none\n",
        "virtio left alone"
    );
    let rule = std::fs::read_to_string(root.path().join("etc/udev/rules.d/60-vakt-scheduler.rules")).expect("rule");
    assert!(rule.contains("KERNEL==\"nvme[0-9]*n[0-9]*\", ATTR{queue/scheduler}=\"none\""), "{rule}");
}

#[test]
fn ip_forward_is_never_lowered_on_a_docker_host() {
    let root = fixture(true);
    let p = root.path().join("p.toml");
    std::fs::write(&p, "[tuning]\nio_scheduler = \"keep\"\n[tuning.sysctl]\n\"net.ipv4.ip_forward\" = 0\n")
        .expect("profile");
    let out = run(vakt().arg("--root").arg(root.path()).args(["apply", "--only", "tuning", "-p"]).arg(&p));
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("refusing to lower net.ipv4.ip_forward on a host that runs Docker"), "{}", out.stdout);
    assert_eq!(std::fs::read_to_string(root.path().join("proc/sys/net/ipv4/ip_forward")).expect("value"), "1\n");
}

#[test]
fn packages_observed_with_dpkg_and_a_missing_name_is_a_clear_error() {
    if !require("dpkg-query and apt-cache", has("dpkg-query") && has("apt-cache")) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("p.toml");
    std::fs::write(&p, "[packages]\ninstall = [\"dpkg\", \"vakt-no-such-package\"]\nupdate = false\n")
        .expect("profile");
    let check = run(vakt().args(["check", "--only", "packages", "--format", "json", "-p"]).arg(&p));
    assert_eq!(check.code, 1, "{}", check.stdout);
    let report = json(&check);
    assert_eq!(status_of(&report, "packages.dpkg"), "ok");
    assert_eq!(status_of(&report, "packages.vakt-no-such-package"), "drift");
    let apply = run(vakt().args(["apply", "--only", "packages", "-p"]).arg(&p));
    assert_eq!(apply.code, 1, "{}", apply.stdout);
    assert!(apply.stdout.contains("package `vakt-no-such-package` is not available"), "{}", apply.stdout);
}
