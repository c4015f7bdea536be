//! Issue 13, "done when": one host carrying all of an operator's existing state at once (a held
//! package, fail2ban's bans and a rate-limited SSH rule, SSH socket-activated on another port, a
//! second nginx site beside Debian's placeholder, a stopped Docker whose data root holds overlay2
//! data), built with the real dpkg/apt-mark, ufw, sshd, nginx and dockerd. `vakt check` must
//! report each fact truthfully and `vakt apply` must change only what vakt owns.
//!
//! vakt runs as the host's live system (no `--root`) inside a private network namespace and a
//! private mount namespace where the sandbox's files lie over the live paths: /etc/ufw,
//! /etc/default/ufw, /etc/ssh, systemd's unit directories, /run and /etc/docker are bind mounts
//! of the sandbox tree; /var/lib is an overlay whose writes land in the sandbox, with a copy of
//! this machine's dpkg database over /var/lib/dpkg and the stopped engine's data root over
//! /var/lib/docker. `systemctl`, `apt-get` and `apt-cache` are recording stand-ins that do
//! nothing: whatever vakt tried is on record and nothing reaches this machine.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::dockerd::DockerSandbox;
use common::netns::UfwSandbox;
use common::*;

fn ready() -> bool {
    require("root", is_root())
        && require(
            "ufw, iptables, sshd, nginx, curl, dockerd, docker, dpkg-query and apt-mark",
            ["ufw", "iptables-save", "ip", "sshd", "nginx", "curl", "dockerd", "docker", "dpkg-query", "apt-mark"]
                .iter()
                .all(|p| has(p)),
        )
}

fn sh(script: &str) {
    let out = Command::new("sh").args(["-ec", script]).output().expect("sh runs");
    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
}

/// Records its argv in `$VAKT_TEST_TREE/NAME.argv` and fails: vakt must not need it here, and
/// nothing it would have done (start Docker, install a package) reaches this machine.
const STANDIN: &str = "#!/bin/sh\necho \"$*\" >>\"$VAKT_TEST_TREE/$(basename \"$0\").argv\"\necho \"$(basename \"$0\") is a recording stand-in in this test\" >&2\nexit 1\n";

/// A loopback HTTP upstream standing in for the OpenFaaS gateway: every request gets 200 and
/// the body `gateway`.
fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer(stream));
        }
    });
    port
}

fn answer(stream: TcpStream) {
    let Ok(clone) = stream.try_clone() else { return };
    let mut reader = BufReader::new(clone);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            let reply = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ngateway";
            if out.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
    }
}

/// The nginx master this test started; stopped on drop, whatever happened.
struct NginxMaster {
    pid_file: PathBuf,
}

impl Drop for NginxMaster {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pid_file)
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
            let started = Instant::now();
            while Path::new(&format!("/proc/{pid}")).exists() && started.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The sandboxed host. Fields drop in order: nginx first, then the namespaces and trees.
struct Existing {
    _nginx: NginxMaster,
    fw: UfwSandbox,
    /// The engine, stopped; its data directory is the host's /var/lib/docker.
    engine: DockerSandbox,
    nginx_port: u16,
    upstream_port: u16,
}

impl Existing {
    fn t(&self, rel: &str) -> PathBuf {
        self.fw.file(rel)
    }

    fn data_root(&self) -> PathBuf {
        self.engine.file("data")
    }

    /// `argv` on the sandboxed host as its live system.
    fn command(&self, argv: &[&str]) -> Command {
        let t = self.fw.root().display().to_string();
        let data = self.data_root().display().to_string();
        let script = format!(
            "for d in etc/ufw etc/default/ufw etc/ssh etc/systemd/system lib/systemd/system run etc/docker; do \
               mount --bind {t}/$d /$d; done
             mount -t overlay overlay -o lowerdir=/var/lib,upperdir={t}/varlib/upper,workdir={t}/varlib/work /var/lib
             mkdir -p /var/lib/docker
             mount --bind {data} /var/lib/docker
             mount --bind {t}/var/lib/dpkg /var/lib/dpkg
             exec \"$@\""
        );
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.fw.netns, "unshare", "-m", "--propagation", "private", "sh", "-ec", &script])
            .arg("sandbox")
            .args(argv)
            .env_remove("SSH_CONNECTION")
            .env_remove("DOCKER_HOST")
            .env("VAKT_TEST_TREE", self.fw.root())
            .env("PATH", format!("{t}/bin:{}", std::env::var("PATH").unwrap_or_default()))
            .env("NO_COLOR", "1");
        c
    }

    fn ok(&self, argv: &[&str]) -> String {
        let out = run(&mut self.command(argv));
        assert_eq!(out.code, 0, "{argv:?}: {}{}", out.stdout, out.stderr);
        out.stdout
    }

    fn vakt(&self, args: &[&str]) -> Run {
        let mut argv = vec![env!("CARGO_BIN_EXE_vakt")];
        argv.extend_from_slice(args);
        run(&mut self.command(&argv))
    }

    fn profile(&self, name: &str, body: &str) -> String {
        let p = self.t(name);
        std::fs::write(&p, body).expect("profile");
        p.display().to_string()
    }

    fn ufw_status(&self) -> String {
        self.ok(&["ufw", "status", "verbose"])
    }

    fn dpkg_abbrev(&self, package: &str) -> String {
        self.ok(&["dpkg-query", "-W", "-f=${db:Status-Abbrev}", package]).trim_end().to_string()
    }

    /// (status code, body) of a request to nginx with `host` as the Host header.
    fn get(&self, host: &str) -> (String, String) {
        let out = run(Command::new("curl")
            .args(["-s", "--max-time", "10", "-w", "\n%{http_code}", "-H", &format!("Host: {host}")])
            .arg(format!("http://127.0.0.1:{}/", self.nginx_port)));
        let (body, code) = out.stdout.rsplit_once('\n').unwrap_or(("", ""));
        (code.to_string(), body.to_string())
    }

    /// The stand-ins' records: which of them vakt ran, with what.
    fn standins_ran(&self) -> Vec<String> {
        ["systemctl", "apt-get", "apt-cache"]
            .iter()
            .filter_map(|n| std::fs::read_to_string(self.t(&format!("{n}.argv"))).ok().map(|a| format!("{n} {a}")))
            .collect()
    }
}

/// Every entry under `dir` with its type, mode, size and modification time.
fn listing(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let path = e.path();
        let meta = std::fs::symlink_metadata(&path).expect("metadata");
        out.push(format!("{} {:o} {} {}.{}", path.display(), meta.mode(), meta.len(), meta.mtime(), meta.mtime_nsec()));
        if meta.is_dir() {
            out.extend(listing(&path));
        }
    }
    out.sort();
    out
}

/// A stopped engine whose data root holds one image and one container on overlay2.
fn stopped_engine_with_overlay2_data() -> DockerSandbox {
    let engine = DockerSandbox::start(Some("{\"storage-driver\": \"overlay2\"}\n"));
    assert_eq!(engine.driver(), "overlay2", "the private engine runs overlay2");
    let made = run(&mut engine.command(&[
        "sh",
        "-c",
        "tar -cf - -T /dev/null | docker import - vakt-test/empty:1 && docker create --name kept vakt-test/empty:1 /none",
    ]));
    assert_eq!(made.code, 0, "{}", made.stderr);
    // Stopped as `systemctl stop docker` would: SIGTERM, and wait for it to exit.
    let pid = std::fs::read_to_string(engine.file("docker.pid")).expect("dockerd's pid");
    let pid = pid.trim().to_string();
    assert_eq!(run(Command::new("kill").arg(&pid)).code, 0);
    let started = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "dockerd stops");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A pid file left behind would name a process that is gone; the sandbox's drop must not
    // signal whatever reuses its number.
    let _ = std::fs::remove_file(engine.file("docker.pid"));
    assert!(engine.file("data/image/overlay2/imagedb/content/sha256").read_dir().is_ok_and(|mut d| d.next().is_some()));
    engine
}

const DAEMON_JSON: &str = "{\n    \"log-level\": \"warn\",\n    \"log-opts\": {\"max-size\": \"10m\"}\n}\n";

/// Builds the host. Each step is done with the real tool an operator (or fail2ban) uses.
fn build() -> Existing {
    let fw = UfwSandbox::new();
    let t = fw.root().display().to_string();
    let engine = stopped_engine_with_overlay2_data();
    let (nginx_port, upstream_port) = (free_port(), upstream());

    // The tree: this machine's dpkg database and systemd units copied, stand-ins on PATH, the
    // operator's daemon.json (no storage-driver: dockerd picks the driver that holds data).
    sh(&format!(
        "mkdir -p {t}/var/lib {t}/varlib/upper {t}/varlib/work {t}/bin {t}/etc/docker {t}/log
         cp -a /var/lib/dpkg {t}/var/lib/dpkg
         for u in docker.service docker.socket nginx.service ssh.service ssh.socket; do
           if [ -f /lib/systemd/system/$u ]; then cp /lib/systemd/system/$u {t}/lib/systemd/system/; fi
         done"
    ));
    for name in ["systemctl", "apt-get", "apt-cache"] {
        write_file(fw.root(), &format!("bin/{name}"), STANDIN);
        sh(&format!("chmod 755 {t}/bin/{name}"));
    }
    write_file(fw.root(), "etc/docker/daemon.json", DAEMON_JSON);

    // SSH socket-activated on 2222: sshd_config names no port, ssh.socket is enabled and a
    // drop-in moves it (Ubuntu's way since 22.10).
    write_file(fw.root(), "etc/ssh/sshd_config", "PermitRootLogin prohibit-password\nPasswordAuthentication no\n");
    if !fw.file("lib/systemd/system/ssh.socket").exists() {
        write_file(fw.root(), "lib/systemd/system/ssh.socket", "[Socket]\nListenStream=22\nAccept=no\n");
    }
    write_file(
        fw.root(),
        "etc/systemd/system/ssh.socket.d/listen.conf",
        "[Socket]\nListenStream=\nListenStream=2222\n",
    );
    std::fs::create_dir_all(fw.file("etc/systemd/system/sockets.target.wants")).expect("mkdir");
    std::os::unix::fs::symlink(
        "/lib/systemd/system/ssh.socket",
        fw.file("etc/systemd/system/sockets.target.wants/ssh.socket"),
    )
    .expect("enable ssh.socket");

    // nginx as Debian installs it, moved into the tree and onto a loopback port: the stock
    // nginx.conf, the placeholder site linked in sites-enabled, and the operator's own site.
    sh(&format!(
        "cp -a /etc/nginx {t}/etc/nginx
         sed -i -e 's#/etc/nginx#{t}/etc/nginx#g' -e 's#/run/nginx.pid#{t}/nginx.pid#' -e 's#/var/log/nginx#{t}/log#g' \
             {t}/etc/nginx/nginx.conf
         sed -i -e 's/listen 80 default_server;/listen 127.0.0.1:{nginx_port} default_server;/' -e '/listen \\[::\\]:80/d' \
             {t}/etc/nginx/sites-available/default
         grep -q 'listen 127.0.0.1:{nginx_port} default_server;' {t}/etc/nginx/sites-available/default
         rm -f {t}/etc/nginx/sites-enabled/*
         ln -s {t}/etc/nginx/sites-available/default {t}/etc/nginx/sites-enabled/default
         printf 'server {{\\n    listen 127.0.0.1:{nginx_port};\\n    server_name other.test;\\n    return 418;\\n}}\\n' \
             > {t}/etc/nginx/sites-available/other.test
         ln -s {t}/etc/nginx/sites-available/other.test {t}/etc/nginx/sites-enabled/other.test"
    ));
    let started = run(Command::new("nginx")
        .args(["-e", &format!("{t}/log/early.log"), "-c"])
        .arg(fw.file("etc/nginx/nginx.conf")));
    let nginx = NginxMaster { pid_file: fw.file("nginx.pid") };
    assert_eq!(started.code, 0, "the operator's nginx starts: {}", started.stderr);

    let host = Existing { _nginx: nginx, fw, engine, nginx_port, upstream_port };

    // docker.io held with the real apt-mark, on the copy (the cache files are not written).
    host.ok(&[
        "apt-mark",
        "-o",
        "Dir::Cache::pkgcache=",
        "-o",
        "Dir::Cache::srcpkgcache=",
        "-o",
        "DPkg::Options::=--log=/dev/null",
        "hold",
        "docker.io",
    ]);

    // ufw enabled with an operator's rate-limited SSH, fail2ban's ban inserted first, an
    // operator's block, and an allow rule the profile will not list.
    for argv in [
        &["ufw", "--force", "enable"][..],
        &["ufw", "limit", "22/tcp"],
        &["ufw", "deny", "proto", "tcp", "from", "203.0.113.0/24", "to", "any", "port", "3306"],
        &["ufw", "allow", "8443/tcp"],
        &["ufw", "insert", "1", "deny", "from", "198.51.100.7"],
    ] {
        host.ok(argv);
    }
    host
}

fn warnings(report: &serde_json::Value, resource: &str) -> String {
    let r = report["resources"].as_array().into_iter().flatten().find(|r| r["id"] == resource).expect("resource");
    r["warnings"].to_string()
}

fn ran(report: &serde_json::Value) -> Vec<String> {
    report["commands"].as_array().into_iter().flatten().filter_map(|c| c.as_str().map(String::from)).collect()
}

/// The full profile: the held package, the firewall with the SSH socket's port, Docker on
/// overlay2 and the gateway on the sandbox's nginx.
fn full_profile(host: &Existing) -> String {
    let t = host.fw.root().display();
    let body = format!(
        "[packages]\ninstall = [\"docker.io\", \"nginx\", \"ufw\"]\nupdate = false\n\n\
         [firewall]\nprune = true\n\
         [[firewall.allow]]\nport = 2222\ncomment = \"ssh (ssh.socket)\"\n\
         [[firewall.allow]]\nport = 80\n\
         [[firewall.rule]]\naction = \"limit\"\nport = 22\ncomment = \"ssh\"\n\n\
         [docker]\nstorage_driver = \"overlay2\"\nrestart_timeout = \"5s\"\n\n\
         [nginx]\nconfig = \"{t}/etc/nginx/nginx.conf\"\npid = \"{t}/nginx.pid\"\nerror_log = \"{t}/log/error.log\"\n\
         access_log = \"{t}/log/access.log\"\nlisten = \"127.0.0.1:{}\"\nupstream = [\"127.0.0.1:{}\"]\n",
        host.nginx_port, host.upstream_port
    );
    host.profile("full.toml", &body)
}

#[test]
fn check_tells_the_truth_about_existing_state_and_apply_damages_none_of_it() {
    if !ready() {
        return;
    }
    let began = Instant::now();
    let host = build();
    let t = host.fw.root().display().to_string();
    let data_before = listing(&host.data_root());
    assert!(!data_before.is_empty());
    let status_before = host.ufw_status();
    assert_eq!(host.get("other.test").0, "418", "the operator's site answers its name");
    let (code, body) = host.get("anything.test");
    assert!(code == "200" && body.contains("Welcome to nginx"), "Debian's placeholder answers: {code} {body}");
    let p = full_profile(&host);

    // check: every fact as it is.
    let check = host.vakt(&["check", "-p", &p, "--format", "json"]);
    assert_eq!(check.code, 1, "drift: {}{}", check.stdout, check.stderr);
    let report = json(&check);
    assert_eq!(status_of(&report, "packages.docker.io"), "ok");
    assert!(evidence(&report, "packages.docker.io").starts_with("held (apt-mark hold)"), "{}", check.stdout);
    // The firewall: the limit rule the profile lists is in place; the bans and the block are
    // kept (warnings), never planned for deletion; only the unlisted allow rule is pruned.
    assert_eq!(status_of(&report, "firewall.rule.22/tcp:limit"), "ok");
    let fw_warnings = warnings(&report, "firewall");
    for kept in ["deny any/any from 198.51.100.7", "deny 3306/tcp from 203.0.113.0/24"] {
        assert!(
            fw_warnings.contains(&format!("kept (vakt never deletes a rule that blocks): {kept}")),
            "{kept}: {fw_warnings}"
        );
    }
    let planned = changes(&report, "drift");
    let mut planned_fw: Vec<&str> =
        planned.iter().filter(|(id, _)| id.starts_with("firewall.")).map(|(_, c)| c.as_str()).collect();
    // One `ufw delete ... from any` removes the rule for IPv4 and IPv6: two findings, one command.
    planned_fw.dedup();
    assert_eq!(
        planned_fw,
        // The profile lists 2222 and 80 before the limit on 22 that ufw already holds, but no
        // rule from there on meets their traffic with another action: appended, they judge
        // every packet as they would in the profile's place, one command for both families.
        [
            "ufw allow proto tcp from any to any port 2222 comment 'ssh (ssh.socket)'",
            "ufw allow proto tcp from any to any port 80",
            "ufw delete allow proto tcp from any to any port 8443",
        ],
        "{}",
        check.stdout
    );
    assert!(
        !ids_with(&report, "failed").iter().any(|id| id == "firewall.ssh-guard"),
        "the guard passes: {}",
        check.stdout
    );
    // nginx: the placeholder link is drift, the operator's site is nobody's business.
    let placeholder = format!("{t}/etc/nginx/sites-enabled/default");
    let nginx_planned: Vec<(String, String)> =
        planned.iter().filter(|(id, _)| id.starts_with("nginx.")).cloned().collect();
    assert_eq!(
        nginx_planned,
        [
            (
                "nginx.default-site".to_string(),
                format!("remove the link {placeholder} (its file stays in sites-available)")
            ),
            ("nginx.config".to_string(), format!("write {t}/etc/nginx/nginx.conf and reload nginx")),
        ]
    );
    assert!(!check.stdout.contains("other.test"), "nothing touches the other site: {}", check.stdout);
    // Docker: stopped; its driver cannot be verified, and nothing would start it.
    assert_eq!(status_of(&report, "docker.engine.driver"), "unknown");
    assert!(evidence(&report, "docker.engine.driver").contains("docker.sock"), "{}", check.stdout);
    let docker_planned: Vec<&(String, String)> = planned.iter().filter(|(id, _)| id.starts_with("docker.")).collect();
    assert_eq!(docker_planned.len(), 1, "{docker_planned:?}");
    assert_eq!(docker_planned[0].0, "docker.daemon.storage-driver");
    assert!(!docker_planned[0].1.contains("restart"), "a stopped Docker is not started: {docker_planned:?}");
    assert!(host.standins_ran().is_empty(), "check ran {:?}", host.standins_ran());

    // apply: only what vakt owns changes.
    let apply = host.vakt(&["apply", "-p", &p, "--format", "json"]);
    let done = json(&apply);
    // The one thing apply cannot do is verify a stopped Docker's driver: a failure to converge.
    assert_eq!(apply.code, 1, "{}{}", apply.stdout, apply.stderr);
    assert_eq!(ids_with(&done, "failed"), ["docker.engine.driver"], "{}", apply.stdout);
    assert_eq!(
        changes(&done, "changed").into_iter().map(|(id, _)| id).collect::<Vec<_>>(),
        planned.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        "check cannot lie: {}",
        apply.stdout
    );
    let commands = ran(&done);
    assert!(!commands.iter().any(|c| c.contains("apt-get") || c.contains("systemctl")), "{commands:?}");
    assert!(host.standins_ran().is_empty(), "apply ran {:?}", host.standins_ran());

    // The held package: still held, still installed.
    assert_eq!(host.dpkg_abbrev("docker.io"), "hi");
    // The firewall: bans, the block and the rate limit are all there, in front of vakt's rules.
    let status = host.ufw_status();
    for kept in [
        "Anywhere                   DENY IN     198.51.100.7",
        "22/tcp                     LIMIT IN    Anywhere",
        "3306/tcp                   DENY IN     203.0.113.0/24",
        "2222/tcp                   ALLOW IN    Anywhere                   # ssh (ssh.socket)",
        "22/tcp (v6)                LIMIT IN    Anywhere (v6)",
    ] {
        assert!(status.contains(kept), "{kept} missing after apply:\n{status}\nbefore:\n{status_before}");
    }
    assert!(!status.contains("8443"), "the unlisted allow rule is pruned:\n{status}");
    let first = status.lines().find(|l| l.contains("IN")).unwrap_or_default();
    assert!(first.contains("198.51.100.7"), "fail2ban's ban stays first:\n{status}");
    // nginx: the other site answers its name, the gateway answers every other name, and the
    // placeholder's file is still there for `ln -s`.
    assert_eq!(host.get("other.test").0, "418", "the operator's site still answers its name");
    assert_eq!(host.get("anything.test"), ("200".to_string(), "gateway".to_string()), "the gateway is the default");
    assert!(Path::new(&placeholder).symlink_metadata().is_err(), "the placeholder link is gone");
    let available = std::fs::read_to_string(host.t("etc/nginx/sites-available/default")).expect("placeholder kept");
    assert!(available.contains("index.nginx-debian.html"), "{available}");
    assert!(host.t("etc/nginx/sites-enabled/other.test").exists());
    // Docker: the data root untouched, the operator's keys kept in their order.
    assert_eq!(listing(&host.data_root()), data_before, "the data root is as dockerd left it");
    assert_eq!(
        std::fs::read_to_string(host.t("etc/docker/daemon.json")).expect("daemon.json"),
        "{\n    \"log-level\": \"warn\",\n    \"log-opts\": {\"max-size\": \"10m\"},\n    \"storage-driver\": \"overlay2\"\n}\n"
    );
    assert!(!host.t("run/vakt/docker-restart.pending").exists(), "no restart is owed to a stopped Docker");

    // Converged: a second check finds nothing but the stopped engine it cannot ask.
    let again = host.vakt(&["check", "-p", &p, "--format", "json"]);
    assert_eq!(again.code, 3, "{}", again.stdout);
    assert_eq!(ids_with(&json(&again), "unknown"), ["docker.engine.driver"]);
    assert!(ids_with(&json(&again), "drift").is_empty(), "{}", again.stdout);

    // The SSH guard: a profile without the socket's port may not prune its rule.
    let no_socket = host.profile(
        "no-socket.toml",
        &std::fs::read_to_string(&p)
            .expect("profile")
            .replace("[[firewall.allow]]\nport = 2222\ncomment = \"ssh (ssh.socket)\"\n", ""),
    );
    for command in ["check", "apply"] {
        let out = host.vakt(&[command, "-p", &no_socket, "--only", "firewall", "--format", "json"]);
        assert_eq!(out.code, 1, "{command}: {}", out.stdout);
        let report = json(&out);
        assert_eq!(status_of(&report, "firewall.ssh-guard"), "failed", "{command}: {}", out.stdout);
        let said = findings(&report).into_iter().find(|f| f["id"] == "firewall.ssh-guard").expect("guard");
        assert!(said["title"].as_str().unwrap_or("").contains("2222/tcp (IPv4), 2222/tcp (IPv6)"), "{said}");
        let seen = evidence(&report, "firewall.ssh-guard");
        assert!(seen.contains("/lib/systemd/system/ssh.socket (socket activation): port 2222"), "{seen}");
        assert!(!ran(&report).iter().any(|c| c.starts_with("ufw ")), "{command} ran ufw: {:?}", ran(&report));
    }
    assert_eq!(host.ufw_status(), status, "the refused apply changed nothing");

    // Docker asked for another driver: refused from the data root, nothing written or started.
    let daemon_json = std::fs::read(host.t("etc/docker/daemon.json")).expect("daemon.json");
    let vfs = host.profile("vfs.toml", "[docker]\nstorage_driver = \"vfs\"\nrestart_timeout = \"5s\"\n");
    let refused = "Docker is not answering and its data root /var/lib/docker holds 1 image and 1 container on overlay2; switching to vfs would hide them";
    for command in ["check", "apply"] {
        let out = host.vakt(&[command, "-p", &vfs, "--only", "docker", "--format", "json"]);
        assert_eq!(out.code, 1, "{command}: {}", out.stdout);
        let report = json(&out);
        assert_eq!(ids_with(&report, "failed"), ["docker.guard"], "{command}: {}", out.stdout);
        let guard = findings(&report).into_iter().find(|f| f["id"] == "docker.guard").expect("guard");
        assert!(guard["title"].as_str().unwrap_or("").starts_with(refused), "{command}: {guard}");
    }
    assert_eq!(std::fs::read(host.t("etc/docker/daemon.json")).expect("daemon.json"), daemon_json);
    let backup = std::fs::read_to_string(host.t("etc/docker/daemon.json.vakt-prev")).expect("backup");
    assert_eq!(backup, DAEMON_JSON, "the operator's file, as it was before the first apply");
    assert_eq!(listing(&host.data_root()), data_before);
    assert!(host.standins_ran().is_empty(), "{:?}", host.standins_ran());
    eprintln!("existing state: built, checked and applied in {:.1}s", began.elapsed().as_secs_f64());
}
