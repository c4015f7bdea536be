//! Issue 27: `vakt apply` converges the firewall and nginx while Docker restarts, and that
//! leaves the host exactly as `vakt apply --serial` does: the same files, the same netfilter
//! rules (the engine's own chains included) and the same engine state. Where the firewall
//! governs Docker's published ports, Docker waits for it. Two fresh hosts of real components, one
//! applied each way: ufw and netfilter in a private network namespace, a private dockerd
//! restarted by a `systemctl` stand-in (there is no systemd here), the real nginx for
//! `nginx -t`, and a swarm initialised through the engine.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use common::dockerd::DockerSandbox;
use common::*;

fn ready() -> bool {
    require("root", is_root())
        && require(
            "ufw, iptables, sshd, nginx, dockerd, docker and curl",
            ["ufw", "iptables-save", "sshd", "nginx", "dockerd", "docker", "curl"].iter().all(|p| has(p)),
        )
}

/// What one apply left: files, rules, the engine, and when ufw was enabled and nginx's file
/// written against when Docker's restart began and brought the engine back.
struct EndState {
    files: BTreeMap<&'static str, String>,
    rules: String,
    engine: String,
    ufw_enabled_after_docker_began: bool,
    nginx_written_before_docker_was_back: bool,
}

const FILES: &[&str] = &[
    "etc/ufw/user.rules",
    "etc/ufw/user6.rules",
    "etc/ufw/ufw.conf",
    "etc/default/ufw",
    "etc/docker/daemon.json",
    "etc/nginx/nginx.conf",
];

/// A fresh host (ufw as packaged, an engine on overlay2 outside any swarm, no nginx.conf),
/// applied with `extra` arguments and `firewall` added to the article's [firewall].
fn apply(extra: &[&str], firewall: &str) -> EndState {
    let sb = DockerSandbox::start_with_iptables(Some("{\"storage-driver\": \"overlay2\"}\n"));
    let t = sb.root().display().to_string();
    let out = std::process::Command::new("sh")
        .args([
            "-ec",
            &format!("{}\nmkdir -p {t}/etc/nginx\ncp /etc/nginx/mime.types {t}/etc/nginx/", netns::fresh_ufw_tree(&t)),
        ])
        .output()
        .expect("sh runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // log-opts is a key dockerd reads only when it starts: the apply restarts Docker.
    let profile = format!(
        "{article}\n[docker]\nstorage_driver = \"overlay2\"\nhost = \"unix://{t}/docker.sock\"\n\
         [docker.daemon]\nlabels = [\"vakt-overlap=1\"]\nlog-opts = {{ max-size = \"10m\" }}\n\n[swarm]\nadvertise_addr = \"vkup0\"\n\n\
         [nginx]\nlisten = \"127.0.0.1:18080\"\nconfig = \"{t}/etc/nginx/nginx.conf\"\npid = \"{t}/nginx.pid\"\n\
         error_log = \"{t}/nginx-error.log\"\naccess_log = \"{t}/nginx-access.log\"\n",
        article = netns::ARTICLE.replacen("[firewall]\n", &format!("[firewall]\n{firewall}"), 1)
    );
    std::fs::write(sb.file("profile.toml"), profile).expect("profile");

    // vakt as the namespace's live host, with the sandbox's ufw, ssh, unit, docker and /run
    // directories over the machine's.
    let script = format!(
        "for d in etc/ufw etc/default/ufw etc/ssh etc/systemd/system lib/systemd/system etc/docker run; do \
         mount --bind {t}/$d /$d; done; exec \"$@\""
    );
    let profile_path = format!("{t}/profile.toml");
    let mut argv = vec!["unshare", "-m", "--propagation", "private", "sh", "-ec", &script, "sandbox"];
    argv.extend([env!("CARGO_BIN_EXE_vakt"), "apply", "--format", "json", "-p", &profile_path]);
    argv.extend_from_slice(extra);
    let mut cmd = sb.command(&argv);
    // Docker's restart takes 2 s more than the engine needs: on a loaded machine ufw's load
    // (dozens of iptables processes) and nginx still end well before it.
    cmd.env_remove("SSH_CONNECTION").env("VAKT_TEST_RESTART_DELAY", "2");
    let out = run(&mut cmd);
    let report = json(&out);
    assert_eq!(out.code, 0, "apply {extra:?} converges: {}\n{}", out.stdout, out.stderr);
    for id in ["firewall.enabled", "docker.daemon.labels", "swarm.node", "nginx.config"] {
        assert!(ids_with(&report, "changed").iter().any(|i| i.starts_with(id)), "{id} changed: {}", out.stdout);
    }
    let restarts = std::fs::read_to_string(sb.file("systemctl.argv")).unwrap_or_default();
    assert_eq!(restarts, "restart docker\n", "Docker restarted once");

    let ip = sb.advertise_ip();
    let plain = |text: String| text.replace(&t, "<root>").replace(&ip, "<ip>");
    let files = FILES.iter().map(|f| (*f, plain(std::fs::read_to_string(sb.file(f)).unwrap_or_default()))).collect();
    let mut rules = String::new();
    for tool in ["iptables-save", "ip6tables-save"] {
        let out = run(&mut sb.command(&[tool]));
        // Without the comment lines (a timestamp) and the packet counters.
        for line in out.stdout.lines().filter(|l| !l.starts_with('#')) {
            let line = match line.split_once(" [") {
                Some((chain, _)) if line.starts_with(':') => chain.to_string(),
                _ => line.to_string(),
            };
            rules.push_str(&plain(line));
            rules.push('\n');
        }
    }
    let engine = sb
        .docker(&[
            "info",
            "--format",
            "{{.Driver}} {{json .Labels}} {{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Swarm.Managers}} {{.Swarm.Nodes}}",
        ])
        .stdout;
    let at = |f: &str| -> u128 { std::fs::read_to_string(sb.file(f)).expect(f).trim().parse().expect("ns") };
    let (began, back) = (at("restart.began"), at("restarted.at"));
    let written = |f: &str| {
        let m = std::fs::metadata(sb.file(f)).expect(f);
        m.mtime() as u128 * 1_000_000_000 + m.mtime_nsec() as u128
    };
    EndState {
        files,
        rules,
        engine: plain(engine),
        // ufw rewrites ufw.conf (ENABLED=yes) as it enables.
        ufw_enabled_after_docker_began: written("etc/ufw/ufw.conf") > began,
        nginx_written_before_docker_was_back: written("etc/nginx/nginx.conf") < back,
    }
}

#[test]
fn the_overlapped_apply_leaves_what_the_serial_one_leaves() {
    if !ready() {
        return;
    }
    let overlapped = apply(&[], "");
    let serial = apply(&["--serial"], "");
    assert!(overlapped.ufw_enabled_after_docker_began, "ufw was enabled while Docker restarted");
    assert!(overlapped.nginx_written_before_docker_was_back, "nginx converged while Docker restarted");
    assert!(!serial.ufw_enabled_after_docker_began, "--serial: Docker waited for the firewall");
    assert!(!serial.nginx_written_before_docker_was_back, "--serial: nginx waited for Docker and swarm");
    for f in FILES {
        assert!(!serial.files[f].is_empty(), "{f} written");
        assert_eq!(overlapped.files[f], serial.files[f], "{f}");
    }
    assert!(serial.rules.contains("-A ufw-user-input -p tcp -m tcp --dport 8080 -j ACCEPT"), "{}", serial.rules);
    assert!(serial.rules.contains(":DOCKER-USER"), "{}", serial.rules);
    assert_eq!(overlapped.rules, serial.rules);
    assert_eq!(serial.engine.trim(), "overlay2 [\"vakt-overlap=1\"] active true 1 1");
    assert_eq!(overlapped.engine, serial.engine);
}

/// With `published_ports = "profile"`, ufw's load fills DOCKER-USER: Docker restarts only
/// after it, and nginx still converges meanwhile.
#[test]
fn docker_waits_for_a_firewall_that_governs_published_ports() {
    if !ready() {
        return;
    }
    let governed = apply(&[], "published_ports = \"profile\"\n");
    assert!(!governed.ufw_enabled_after_docker_began, "Docker waited for the firewall");
    assert!(governed.nginx_written_before_docker_was_back, "nginx converged while Docker restarted");
    assert!(governed.rules.contains("-A DOCKER-USER -m comment --comment vakt -j RETURN"), "{}", governed.rules);
}
