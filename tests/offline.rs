//! Preparing an image offline (`vakt --root IMAGE apply`): the shipped profile
//! converges what lives in the image's files, defers what needs the running system to the
//! first boot, and runs nothing that acts on this machine. Stand-ins first on PATH record any
//! call of a command that would (systemctl, apt-get, kill, sysctl, docker, modprobe); the run
//! happens inside a private network namespace, whose netfilter must stay empty.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Commands that act on a running system; none may run while an image is prepared.
const LIVE: &[&str] =
    &["systemctl", "apt-get", "apt-cache", "kill", "sysctl", "docker", "dockerd", "modprobe", "udevadm"];

fn ready() -> bool {
    require("root", is_root())
        && require(
            "ufw, nginx, dpkg-query and iptables",
            has("ufw") && has("nginx") && has("dpkg-query") && has("iptables-save"),
        )
}

fn sh(script: &str) {
    let out = Command::new("sh").args(["-ec", script]).output().expect("sh runs");
    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
}

/// An image tree: ufw and nginx as packaged, an sshd_config, and a dpkg database where only
/// ufw is installed (docker.io and nginx are what the first boot installs).
fn image(dir: &Path) {
    let r = dir.display();
    sh(&format!(
        "mkdir -p {r}/etc/default {r}/etc/ssh {r}/var/lib/dpkg/info {r}/proc {r}/sys {r}/run {r}/lib
         cp -a /etc/ufw {r}/etc/ufw; cp /etc/default/ufw {r}/etc/default/ufw; cp -a /lib/ufw {r}/lib/ufw
         for f in user.rules user6.rules ufw.conf; do cp /usr/share/ufw/$f {r}/etc/ufw/$f; done
         cp -a /etc/nginx {r}/etc/nginx
         printf 'Port 22\\n' > {r}/etc/ssh/sshd_config
         dpkg-query --status ufw > {r}/var/lib/dpkg/status
         touch {r}/var/lib/dpkg/available"
    ));
}

#[test]
fn the_shipped_profile_prepares_an_image_without_touching_this_machine() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("image");
    image(&img);
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let log = dir.path().join("live-commands.log");
    for name in LIVE {
        let script = format!("#!/bin/sh\necho \"{name} $*\" >> {}\nexit 1\n", log.display());
        let p = bin.join(name);
        std::fs::write(&p, script).expect("stand-in");
        sh(&format!("chmod 755 {}", p.display()));
    }
    // The shipped profile, with only the hypervisor left open (this is no KVM guest).
    let shipped = std::fs::read_to_string(repo("profiles/openfaas-swarm.toml")).expect("profile");
    let profile = dir.path().join("profile.toml");
    std::fs::write(&profile, shipped.replace("hypervisor = \"kvm\"", "hypervisor = \"any\"")).expect("profile");

    let netns = format!("vakt-offline-{}", std::process::id());
    sh(&format!("ip netns add {netns}"));
    let apply = run(Command::new("ip")
        .args(["netns", "exec", &netns, env!("CARGO_BIN_EXE_vakt"), "--root"])
        .arg(&img)
        .args(["apply", "--format", "json", "-p"])
        .arg(&profile)
        .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
        .env_remove("DOCKER_HOST")
        .env("NO_COLOR", "1"));
    let netfilter = run(Command::new("ip").args(["netns", "exec", &netns, "iptables-save"]));
    sh(&format!("ip netns del {netns}"));

    assert_eq!(apply.code, 0, "everything that can converge offline did:\n{}{}", apply.stdout, apply.stderr);
    assert!(
        !log.exists(),
        "commands that act on this machine ran: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(!netfilter.stdout.contains("ufw-"), "ufw loaded rules into a kernel:\n{}", netfilter.stdout);

    let report = json(&apply);
    // What lives in files is done, in the image.
    for changed in ["firewall.rule.22/tcp", "firewall.rule.2377/tcp", "docker.daemon.storage-driver", "nginx.config"] {
        assert_eq!(status_of(&report, changed), "changed", "{changed}:\n{}", apply.stdout);
    }
    // The gateway is a published port: the shipped profile opens it for containers, through
    // vakt's block in the image's after.rules, not as a ufw host rule.
    assert!(!std::fs::read_to_string(img.join("etc/ufw/user.rules")).expect("rules").contains("allow tcp 8080 "));
    let after = std::fs::read_to_string(img.join("etc/ufw/after.rules")).expect("after.rules");
    assert!(
        after.contains("# BEGIN vakt published-ports") && after.contains("--ctorigdstport 8080 -j RETURN"),
        "{after}"
    );
    assert!(
        after.starts_with(&std::fs::read_to_string("/usr/share/ufw/after.rules").expect("stock")),
        "ufw's own part kept"
    );
    assert!(std::fs::read_to_string(img.join("etc/docker/daemon.json")).expect("json").contains("overlay2"));
    assert!(std::fs::read_to_string(img.join("etc/nginx/nginx.conf")).expect("conf").contains("Managed by vakt"));
    assert!(
        std::fs::read_to_string(img.join("etc/sysctl.d/60-vakt.conf"))
            .expect("sysctl")
            .contains("net.ipv4.ip_forward = 1")
    );
    // What needs the running system waits for the first boot, and says what it will do.
    for deferred in [
        "packages.docker.io",
        "packages.nginx",
        "firewall.enabled",
        "docker.engine.driver",
        "swarm.node",
        "tuning.sysctl.net.ipv4.ip_forward",
        "host.hypervisor",
    ] {
        assert_eq!(status_of(&report, deferred), "skipped", "{deferred}:\n{}", apply.stdout);
    }
    assert!(
        apply.stdout.contains("the first boot does: apt-get install -y --no-install-recommends docker.io nginx"),
        "{}",
        apply.stdout
    );
    assert_eq!(status_of(&report, "packages.ufw"), "ok");
    // A second offline run finds the image converged.
    let again = run(vakt().arg("--root").arg(&img).args(["apply", "--format", "json", "-p"]).arg(&profile));
    assert!(ids_with(&json(&again), "changed").is_empty(), "{}", again.stdout);
}
