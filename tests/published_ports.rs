//! Issue 14, proven with packets: Docker-published ports reach the world whatever ufw says,
//! until `published_ports = "profile"` makes the profile govern them. A private dockerd with
//! iptables on, a `-p` container from a local busybox image, nginx on the host proxying 80 to
//! the published port, and a second network namespace as "the internet" behind a veth pair.
//! `vakt check`'s exposure findings are held to the probes: a port is listed exactly when it
//! answered from outside, named by what publishes it (Engine API) or the process holding it.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::UfwSandbox;
use common::*;

const HOST_IP: &str = "198.51.100.1";
const NET_IP: &str = "198.51.100.2";
/// The same link's IPv6 addresses: the host's UDP echo is judged for each family.
const HOST_IP6: &str = "2001:db8:64::1";
const NET_IP6: &str = "2001:db8:64::2";
const IMAGE: &str = "vakt-busybox:test";
/// What every container and task of the image runs: busybox's web server on port 80.
const SERVE: [&str; 7] = ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"];
/// A UDP service on the host: an echo server on an unconnected socket bound to `::`, which
/// hears both families (perl is essential on Debian; busybox's nc here has no UDP).
const UDP_PORT: u16 = 5300;
const UDP_ECHO: &str = "use IO::Socket::IP; my $s = IO::Socket::IP->new(LocalHost => '::', LocalPort => 5300, \
    Proto => 'udp', V6Only => 0) or die \"bind: $!\"; \
    while (1) { my $peer = $s->recv(my $m, 64); $s->send($m, 0, $peer) if defined $peer }";

fn ready() -> bool {
    require("root", is_root())
        && require(
            "ufw, iptables, dockerd, nginx, curl and busybox-static",
            ["ufw", "iptables-save", "dockerd", "docker", "nginx", "curl", "perl"].iter().all(|p| has(p))
                && Path::new("/bin/busybox").exists(),
        )
}

fn sh(script: &str) -> String {
    let out = Command::new("sh").args(["-ec", script]).output().expect("sh runs");
    assert!(
        out.status.success(),
        "{script}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The host (the ufw sandbox's namespace, with dockerd and nginx in it) and the internet.
struct Lab {
    sb: UfwSandbox,
    internet: String,
    httpd: Option<Child>,
    udp_echo: Option<Child>,
}

impl Lab {
    fn new() -> Lab {
        let sb = UfwSandbox::new();
        // Unique per lab: the tests of this file run in parallel.
        let internet = format!("vakt-inet-{}", sb.netns.trim_start_matches("vakt-fw-"));
        let t = sb.root().display().to_string();
        let host = &sb.netns;
        sh(&format!(
            "ip netns add {internet}
             ip -n {internet} link set lo up
             ip -n {host} link add vkwan0 type veth peer name vkwan1 netns {internet}
             ip -n {host} addr add {HOST_IP}/24 dev vkwan0; ip -n {host} link set vkwan0 up
             ip -n {internet} addr add {NET_IP}/24 dev vkwan1; ip -n {internet} link set vkwan1 up
             ip -n {host} route add default via {NET_IP}
             ip -n {host} addr add {HOST_IP6}/64 dev vkwan0 nodad
             ip -n {internet} addr add {NET_IP6}/64 dev vkwan1 nodad
             mkdir -p {t}/etc/docker {t}/www {t}/image/bin {t}/image/www {t}/nginx
             echo '{{}}' > {t}/etc/docker/daemon.json
             echo 'the internet' > {t}/www/index.html
             echo 'container says hi' > {t}/image/www/index.html
             cp /bin/busybox {t}/image/bin/busybox"
        ));
        // "The internet" serves a page, for the containers' way out.
        let httpd = Command::new("nsenter")
            .args([&format!("--net=/run/netns/{internet}"), "/bin/busybox", "httpd", "-f", "-p", "8000", "-h"])
            .arg(format!("{t}/www"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("busybox httpd starts");
        let mut lab = Lab { sb, internet, httpd: Some(httpd), udp_echo: None };
        let echo = lab.host(&["perl", "-e", UDP_ECHO]).stdout(Stdio::null()).spawn().expect("perl starts");
        lab.udp_echo = Some(echo);
        lab.start_dockerd();
        let import = format!("tar -C {t}/image -c . | docker import - {IMAGE}");
        let out = run(&mut lab.host(&["sh", "-ec", &import]));
        assert_eq!(out.code, 0, "docker import: {}", out.stderr);
        lab.start_nginx();
        lab
    }

    fn t(&self) -> String {
        self.sb.root().display().to_string()
    }

    /// `argv` in the host namespace (nsenter: dockerd needs the real /sys), with the CLI
    /// pointed at the private engine.
    fn host(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.sb.netns))
            .args(argv)
            .env("DOCKER_HOST", format!("unix://{}/docker.sock", self.t()))
            .env("VAKT_TEST_SANDBOX", self.sb.root())
            .env("VAKT_DOCKERD_IPTABLES", "true");
        c
    }

    fn docker(&self, args: &[&str]) -> Run {
        let mut argv = vec!["docker"];
        argv.extend_from_slice(args);
        run(&mut self.host(&argv))
    }

    fn start_dockerd(&self) {
        let t = self.t();
        let helper = repo("tests/common/private-dockerd.sh").display().to_string();
        let script = format!(
            "rm -f {t}/docker.sock; {helper} {t} >>{t}/dockerd.log 2>&1 &
             for i in $(seq 1 150); do
               if curl -sf --unix-socket {t}/docker.sock http://d/_ping >/dev/null 2>&1; then exit 0; fi
               sleep 0.2
             done
             tail -n 5 {t}/dockerd.log >&2; exit 1"
        );
        let out = run(self.host(&["sh", "-ec", &script]).stdout(Stdio::null()));
        assert_eq!(out.code, 0, "private dockerd (iptables on) starts: {}", out.stderr);
    }

    fn stop_dockerd(&self) {
        if let Ok(pid) = std::fs::read_to_string(self.sb.file("docker.pid")) {
            let pid = pid.trim().to_string();
            let _ = Command::new("kill").arg(&pid).status();
            let started = Instant::now();
            while Path::new(&format!("/proc/{pid}")).exists() && started.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn start_nginx(&self) {
        let t = self.t();
        let conf = format!(
            "worker_processes 1;\npid {t}/nginx/nginx.pid;\nerror_log {t}/nginx/error.log;\nevents {{}}\n\
             http {{\n  access_log off;\n  client_body_temp_path {t}/nginx/body;\n  proxy_temp_path {t}/nginx/proxy;\n\
               fastcgi_temp_path {t}/nginx/fcgi;\n  uwsgi_temp_path {t}/nginx/uwsgi;\n  scgi_temp_path {t}/nginx/scgi;\n\
               server {{\n    listen 80;\n    location / {{ proxy_pass http://127.0.0.1:8080; }}\n  }}\n}}\n"
        );
        std::fs::write(self.sb.file("nginx/nginx.conf"), conf).expect("nginx.conf");
        let out = run(&mut self.host(&[
            "nginx",
            "-e",
            &format!("{t}/nginx/error.log"),
            "-c",
            &format!("{t}/nginx/nginx.conf"),
        ]));
        assert_eq!(out.code, 0, "nginx starts: {}", out.stderr);
    }

    /// An HTTP GET from "the internet"; the body, or None when nothing answered in time.
    fn outside_get(&self, port: u16) -> Option<String> {
        let out = run(Command::new("nsenter").args([
            &format!("--net=/run/netns/{}", self.internet),
            "curl",
            "-sf",
            "--connect-timeout",
            "1",
            "-m",
            "3",
            &format!("http://{HOST_IP}:{port}/"),
        ]));
        (out.code == 0).then(|| out.stdout.trim().to_string())
    }

    /// A datagram from "the internet" to the host's UDP echo at `addr`; the answer, or None.
    fn outside_udp(&self, addr: &str) -> Option<String> {
        let probe = format!(
            "use IO::Socket::IP; my $s = IO::Socket::IP->new(PeerHost => '{addr}', PeerPort => {UDP_PORT}, \
             Proto => 'udp') or die; $s->send('ping'); my $r = ''; eval {{ local $SIG{{ALRM}} = sub {{ die }}; \
             alarm 1; $s->recv($r, 64); alarm 0 }}; print $r"
        );
        let out =
            run(Command::new("nsenter").args([&format!("--net=/run/netns/{}", self.internet), "perl", "-e", &probe]));
        (out.code == 0 && !out.stdout.is_empty()).then_some(out.stdout)
    }

    fn host_get(&self, url: &str) -> Option<String> {
        let out = run(&mut self.host(&["curl", "-sf", "--connect-timeout", "1", "-m", "3", url]));
        (out.code == 0).then(|| out.stdout.trim().to_string())
    }

    /// An HTTP GET from the container `web` (busybox's nc: its static wget crashes in a bare
    /// image); the body, or None.
    fn container_get(&self, ip: &str, port: u16) -> Option<String> {
        let get = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {ip} {port}");
        let out = self.docker(&["exec", "web", "busybox", "sh", "-c", &get]);
        let body = out.stdout.rsplit("\r\n\r\n").next().unwrap_or("").trim().to_string();
        (out.code == 0 && out.stdout.starts_with("HTTP/1.")).then_some(body)
    }

    fn ip_of(&self, container: &str) -> String {
        let out = self.docker(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", container]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout.trim().to_string()
    }

    /// vakt as the host's, with the CLI's way to the private engine.
    fn vakt(&self, args: &[&str]) -> Run {
        let mut argv = vec![env!("CARGO_BIN_EXE_vakt")];
        argv.extend_from_slice(args);
        run(self.sb.command(&argv).env("DOCKER_HOST", format!("unix://{}/docker.sock", self.t())))
    }

    fn profile(&self, name: &str, body: &str) -> String {
        let path = self.sb.file(&format!("{name}.toml"));
        std::fs::write(&path, body).expect("profile");
        path.display().to_string()
    }

    /// Every probe at once: (port 80, 8080, 9090) from outside, the host's own view of 8080,
    /// a container's way out and its way to another container's published port.
    fn probes(&self) -> Probes {
        Probes {
            nginx: self.outside_get(80),
            gateway: self.outside_get(8080),
            service: self.outside_get(8081),
            service_local: self.host_get("http://127.0.0.1:8081/"),
            other: self.outside_get(9090),
            udp: self.outside_udp(HOST_IP),
            udp6: self.outside_udp(HOST_IP6),
            host_local: self.host_get("http://127.0.0.1:8080/"),
            host_own_ip: self.host_get(&format!("http://{HOST_IP}:8080/")),
            container_out: self.container_get(NET_IP, 8000),
            container_to_container: self.container_get(&self.ip_of("other"), 80),
            container_to_published: self.container_get(HOST_IP, 9090),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.docker(&["rm", "-f", "web", "other"]);
        if let Ok(pid) = std::fs::read_to_string(self.sb.file("nginx/nginx.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        self.stop_dockerd();
        for mut child in [self.httpd.take(), self.udp_echo.take()].into_iter().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.internet]).status();
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Probes {
    nginx: Option<String>,
    gateway: Option<String>,
    /// A swarm service published in host mode on 8081 (this kernel has no IPVS for the
    /// routing mesh).
    service: Option<String>,
    /// The host's own view of that service: it is up whatever the outside sees.
    service_local: Option<String>,
    other: Option<String>,
    /// The host's UDP echo on 5300, from outside, over IPv4 and over IPv6.
    udp: Option<String>,
    udp6: Option<String>,
    host_local: Option<String>,
    host_own_ip: Option<String>,
    container_out: Option<String>,
    container_to_container: Option<String>,
    /// Another container's published port through the host's address: Docker does not DNAT
    /// what comes from its bridge, so docker-proxy answers it through INPUT, where ufw's host
    /// rules decide (unchanged by vakt's block).
    container_to_published: Option<String>,
}

const HI: &str = "container says hi";

fn answers() -> Option<String> {
    Some(HI.to_string())
}

/// The profile's host: ssh and nginx for the host; `gateway` adds the published 8080 for
/// containers and the host's UDP echo.
fn profile_text(published: &str, gateway: bool) -> String {
    let mut p = format!(
        "[firewall]\npublished_ports = \"{published}\"\n[[firewall.allow]]\nport = 22\n[[firewall.allow]]\nport = 80\n"
    );
    if gateway {
        p.push_str("[[firewall.allow]]\nport = 8080\ntarget = \"containers\"\ncomment = \"gateway\"\n");
        p.push_str(&format!("[[firewall.allow]]\nport = {UDP_PORT}\nproto = \"udp\"\ncomment = \"echo\"\n"));
    }
    p
}

fn apply(lab: &Lab, profile: &str) -> Run {
    let out = lab.vakt(&["apply", "-p", profile, "--only", "firewall", "--format", "json"]);
    assert_eq!(out.code, 0, "apply converges:\n{}{}", out.stdout, out.stderr);
    out
}

/// What `vakt check` says the outside reaches.
struct Exposed {
    /// (port finding, status), in the report's order.
    ports: Vec<(String, String)>,
    /// Each port finding's title.
    titles: Vec<(String, String)>,
    /// Each port finding's evidence, a line each.
    evidence: Vec<(String, Vec<String>)>,
    elapsed_ms: u64,
}

impl Exposed {
    fn title(&self, id: &str) -> &str {
        self.titles.iter().find(|(i, _)| i == id).map_or("", |(_, t)| t.as_str())
    }

    /// Whether a line of the finding's evidence contains `text`.
    fn says(&self, id: &str, text: &str) -> bool {
        self.evidence.iter().filter(|(i, _)| i == id).flat_map(|(_, e)| e).any(|line| line.contains(text))
    }

    /// The report agrees with the probes, port by port: listed exactly when it answered.
    fn agrees_with(&self, probes: &Probes) {
        let answered = [
            ("exposure.tcp.80", &probes.nginx),
            ("exposure.tcp.8080", &probes.gateway),
            ("exposure.tcp.8081", &probes.service),
            ("exposure.tcp.9090", &probes.other),
            ("exposure.udp.5300", &probes.udp.clone().or(probes.udp6.clone())),
        ];
        for (id, probe) in answered {
            let listed = self.ports.iter().any(|(i, _)| i == id);
            assert_eq!(listed, probe.is_some(), "{id}: report {:?}, probes {probes:?}", self.titles);
        }
    }
}

fn exposure(lab: &Lab, profile: &str) -> Exposed {
    let out = lab.vakt(&["check", "-p", profile, "--only", "firewall,exposure", "--format", "json"]);
    let report = json(&out);
    let port = |id: &str| id.starts_with("exposure.tcp.") || id.starts_with("exposure.udp.");
    let titles = findings(&report)
        .iter()
        .map(|f| (f["id"].as_str().unwrap_or("").to_string(), f["title"].as_str().unwrap_or("").to_string()))
        .filter(|(id, _)| port(id))
        .collect();
    let evidence = findings(&report)
        .iter()
        .map(|f| {
            let lines = f["evidence"].as_array().into_iter().flatten().filter_map(|e| e.as_str().map(String::from));
            (f["id"].as_str().unwrap_or("").to_string(), lines.collect())
        })
        .filter(|(id, _)| port(id))
        .collect();
    let ports = statuses(&report).into_iter().filter(|(id, _)| port(id)).collect();
    Exposed { ports, titles, evidence, elapsed_ms: report["elapsed_ms"].as_u64().unwrap_or(u64::MAX) }
}

/// Port findings as `("tcp/80", "ok")` pairs.
fn seen(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(p, s)| (format!("exposure.{}", p.replace('/', ".")), s.to_string())).collect()
}

fn check(lab: &Lab, profile: &str) -> serde_json::Value {
    let out = lab.vakt(&["check", "-p", profile, "--only", "firewall", "--format", "json"]);
    let report = json(&out);
    assert_eq!(out.code, 0, "check passes on the converged host: {:?}", statuses(&report));
    report
}

#[test]
fn published_ports_obey_the_profile_by_packets() {
    if !ready() {
        return;
    }
    let lab = Lab::new();
    for (name, port) in [("web", "8080:80"), ("other", "9090:80")] {
        let out = lab.docker(
            &["run", "-d", "--name", name, "--restart", "always", "--stop-signal", "KILL", "-p", port, IMAGE]
                .into_iter()
                .chain(SERVE)
                .collect::<Vec<_>>(),
        );
        assert_eq!(out.code, 0, "docker run {name}: {}", out.stderr);
    }

    // A profile that makes this node a manager has the engine's services asked for with its
    // containers, before `/info` says whether it is one: here it is in no swarm yet, the engine
    // refuses, and the containers are named all the same.
    let as_manager = lab.profile(
        "as-manager",
        &format!("{}[swarm]\ninit = true\nadvertise_addr = \"{HOST_IP}\"\n", profile_text("docker", false)),
    );
    let early = exposure(&lab, &as_manager);
    assert!(
        early.title("exposure.tcp.8080").starts_with("tcp/8080 reachable from anywhere via container web (-p 8080:80)"),
        "{:?}",
        early.titles
    );

    let init = lab.docker(&["swarm", "init", "--advertise-addr", HOST_IP]);
    assert_eq!(init.code, 0, "swarm init: {}", init.stderr);
    let svc = lab.docker(
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "svc",
            "--no-resolve-image",
            "--stop-signal",
            "KILL",
            "--publish",
            "mode=host,published=8081,target=80",
            IMAGE,
        ]
        .into_iter()
        .chain(SERVE)
        .collect::<Vec<_>>(),
    );
    assert_eq!(svc.code, 0, "service create: {}", svc.stderr);
    let started = Instant::now();
    while lab.host_get("http://127.0.0.1:8081/").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the service never answered: {}",
            lab.docker(&["service", "ps", "--no-trunc", "svc"]).stdout
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Before vakt, ufw is not loaded: the host's UDP echo answers the world, and the profile
    // does not allow it. The report names every published port's publisher and its mode.
    let docker_decides = lab.profile("docker-decides", &profile_text("docker", false));
    let unfiltered = lab.probes();
    assert_eq!(unfiltered.udp.as_deref(), Some("ping"), "{unfiltered:?}");
    assert_eq!(unfiltered.udp6.as_deref(), Some("ping"), "over IPv6 too: {unfiltered:?}");
    let report = exposure(&lab, &docker_decides);
    report.agrees_with(&unfiltered);
    let status = |r: &Exposed, id: &str| r.ports.iter().find(|(i, _)| i == id).map(|(_, s)| s.clone());
    assert_eq!(status(&report, "exposure.udp.5300").as_deref(), Some("drift"));
    assert!(
        report.title("exposure.udp.5300").starts_with("udp/5300 reachable from anywhere via perl (pid "),
        "{}",
        report.title("exposure.udp.5300")
    );
    // One finding for the port, with a path for each family that reaches it.
    assert!(
        report.says("exposure.udp.5300", "[::]:5300 (IPv6): ufw's IPv6 rules are not loaded"),
        "{:?}",
        report.evidence
    );
    assert!(
        report
            .says("exposure.udp.5300", "[::]:5300 (IPv4, unless the socket is IPv6-only): ufw's rules are not loaded"),
        "{:?}",
        report.evidence
    );

    // The problem, reproduced: ufw on, 8080 and 9090 not allowed, yet both answer the world.
    let before = apply(&lab, &docker_decides);
    assert!(
        before.stderr.contains("bypass ufw") || before.stdout.contains("bypass ufw"),
        "the warning stays while Docker decides"
    );
    let open = lab.probes();
    assert_eq!(open.nginx, answers(), "{open:?}");
    assert_eq!(open.gateway, answers(), "published 8080 reaches the world although ufw denies it: {open:?}");
    assert_eq!(open.other, answers(), "{open:?}");
    assert_eq!(open.service, answers(), "the service's host-mode port too: {open:?}");
    assert_eq!(open.container_out.as_deref(), Some("the internet"), "{open:?}");
    assert_eq!(open.container_to_container, answers(), "{open:?}");
    assert_eq!(open.udp, None, "ufw drops what the profile does not allow: {open:?}");
    assert_eq!(open.udp6, None, "over IPv6 too (ufw's IPv6 rules are loaded): {open:?}");
    // check agrees with the probes: what answered is listed, the published ports as drift,
    // each named by the engine with its publish mode.
    let report = exposure(&lab, &docker_decides);
    report.agrees_with(&open);
    assert_eq!(
        report.ports,
        seen(&[("tcp/80", "ok"), ("tcp/8080", "drift"), ("tcp/8081", "drift"), ("tcp/9090", "drift")])
    );
    let named = [
        ("exposure.tcp.8080", "tcp/8080 reachable from anywhere via container web (-p 8080:80); not allowed"),
        ("exposure.tcp.9090", "tcp/9090 reachable from anywhere via container other (-p 9090:80); not allowed"),
        ("exposure.tcp.8081", "tcp/8081 reachable from anywhere via service svc in host mode; not allowed"),
        ("exposure.tcp.80", "tcp/80 reachable from anywhere via nginx (pid "),
    ];
    for (id, title) in named {
        assert!(report.title(id).starts_with(title), "{id}: {}", report.title(id));
    }
    // The manager's services asked with its containers: the same report.
    let speculated = exposure(&lab, &as_manager);
    assert_eq!((&speculated.ports, &speculated.titles), (&report.ports, &report.titles));

    // The profile decides: only 80 (through nginx, to the container) answers from outside.
    let closed = Probes {
        nginx: answers(),
        gateway: None,
        service: None,
        service_local: answers(),
        other: None,
        udp: None,
        udp6: None,
        host_local: answers(),
        host_own_ip: answers(),
        container_out: Some("the internet".into()),
        container_to_container: answers(),
        container_to_published: open.container_to_published.clone(),
    };
    let governed = lab.profile("governed", &profile_text("profile", false));
    let planned = lab.vakt(&["check", "-p", &governed, "--only", "firewall", "--format", "json"]);
    assert_eq!(planned.code, 1, "check finds the missing block: {}", planned.stdout);
    let out = apply(&lab, &governed);
    let done = changes(&json(&out), "changed");
    assert_eq!(changes(&json(&planned), "drift"), done, "check cannot lie: its plan is what apply did");
    assert!(
        done.iter().any(|(id, c)| id == "firewall.published-ports.after.rules" && c.starts_with("write vakt's block")),
        "{done:?}"
    );
    assert!(done.iter().any(|(_, c)| c == "ufw reload"), "{done:?}");
    assert!(!out.stderr.contains("bypass ufw"), "no bypass warning once the profile decides: {}", out.stderr);
    let after_rules = std::fs::read_to_string(lab.sb.file("etc/ufw/after.rules")).expect("after.rules");
    assert!(after_rules.contains("# BEGIN vakt published-ports") && after_rules.contains("-j ufw-user-forward"));
    assert!(lab.sb.file("etc/ufw/after.rules.vakt-prev").exists(), "the previous after.rules is kept");
    assert_eq!(lab.probes(), closed);
    let report = check(&lab, &governed);
    assert_eq!(status_of(&report, "firewall.published-ports.live"), "ok");
    assert_eq!(status_of(&report, "firewall.loaded"), "ok");
    let report = exposure(&lab, &governed);
    report.agrees_with(&closed);
    assert_eq!(report.ports, seen(&[("tcp/80", "ok")]), "only nginx is reachable");
    eprintln!("converged check of firewall and exposure: {} ms", report.elapsed_ms);

    // A rule for containers opens the published port it names, and only that one (both
    // containers listen on 80 inside).
    let gateway = lab.profile("gateway", &profile_text("profile", true));
    apply(&lab, &gateway);
    let with_gateway =
        Probes { gateway: answers(), udp: Some("ping".into()), udp6: Some("ping".into()), ..closed.clone() };
    assert_eq!(lab.probes(), with_gateway);
    check(&lab, &gateway);
    let report = exposure(&lab, &gateway);
    report.agrees_with(&with_gateway);
    assert_eq!(report.ports, seen(&[("tcp/80", "ok"), ("tcp/8080", "ok"), ("udp/5300", "ok")]));
    // ufw added the allow for both families; the report names each family's rule.
    assert!(
        report.says("exposure.udp.5300", "(IPv6): ufw rule: allow 5300/udp from anywhere (v6)"),
        "{:?}",
        report.evidence
    );
    assert!(
        report.says("exposure.udp.5300", "IPv6-only): ufw rule: allow 5300/udp from anywhere;"),
        "{:?}",
        report.evidence
    );
    assert!(
        report
            .title("exposure.tcp.8080")
            .starts_with("tcp/8080 reachable from anywhere via container web (-p 8080:80); allowed by the profile"),
        "{}",
        report.title("exposure.tcp.8080")
    );

    // Both chains re-created, in both orders: the result is the same.
    let ufw_reload = run(&mut lab.sb.command(&["ufw", "reload"]));
    assert_eq!(ufw_reload.code, 0, "{}", ufw_reload.stderr);
    assert_eq!(lab.probes(), with_gateway, "after ufw reload");
    lab.stop_dockerd();
    lab.start_dockerd();
    wait_for(&lab, &with_gateway, "after a Docker restart");
    let ufw_reload = run(&mut lab.sb.command(&["ufw", "reload"]));
    assert_eq!(ufw_reload.code, 0, "{}", ufw_reload.stderr);
    assert_eq!(lab.probes(), with_gateway, "after a Docker restart, then ufw reload");
    check(&lab, &gateway);

    // ufw disabled: the kernel loses ufw's rules; apply loads them and the block again.
    let disable = run(&mut lab.sb.command(&["ufw", "disable"]));
    assert_eq!(disable.code, 0, "{}", disable.stderr);
    apply(&lab, &gateway);
    assert_eq!(lab.probes(), with_gateway, "after ufw disable + vakt apply");

    // ufw.conf says enabled but nothing is loaded (ufw failed at boot, or was stopped behind
    // its back): check says so, apply reloads.
    let stop = run(&mut lab.sb.command(&["/lib/ufw/ufw-init", "force-stop"]));
    assert_eq!(stop.code, 0, "{}", stop.stderr);
    let lost = lab.vakt(&["check", "-p", &gateway, "--only", "firewall", "--format", "json"]);
    assert_eq!(lost.code, 1, "{}", lost.stdout);
    assert_eq!(status_of(&json(&lost), "firewall.enabled"), "ok", "ufw.conf still says enabled");
    assert_eq!(status_of(&json(&lost), "firewall.loaded"), "drift");
    let out = apply(&lab, &gateway);
    assert!(
        changes(&json(&out), "changed").iter().any(|(id, c)| id == "firewall.loaded" && c == "ufw reload"),
        "{}",
        out.stdout
    );
    assert_eq!(lab.probes(), with_gateway, "after ufw lost its rules + vakt apply");
    check(&lab, &gateway);

    // Back to Docker deciding: the block leaves the files and the kernel.
    let out = apply(&lab, &docker_decides);
    let after_rules = std::fs::read_to_string(lab.sb.file("etc/ufw/after.rules")).expect("after.rules");
    assert!(!after_rules.contains("vakt"), "{after_rules}\n{}", out.stdout);
    let save = lab.sb.iptables_save();
    assert!(!save.contains("--comment vakt"), "{}\n{save}", out.stdout);
    assert_eq!(lab.outside_get(9090), answers(), "Docker decides again");
}

/// Containers take a moment to come back after the engine restarts.
fn wait_for(lab: &Lab, want: &Probes, when: &str) {
    let started = Instant::now();
    loop {
        let got = lab.probes();
        if got == *want {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{when}: {got:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Issue 21: the firewall model predicts what reaches a Docker-published port, with generated
/// `target = "containers"` rule lists (allow, deny, reject; nested networks and single hosts;
/// single ports and ranges; the routed policy allow or deny), against the real dockerd, ufw and
/// vakt's DOCKER-USER block, by packets from several source addresses. Deterministic from
/// `VAKT_FW_SEED`; `VAKT_FW_CONTAINER_LISTS` lists (default 10).
#[test]
fn generated_container_rules_are_predicted_by_the_model() {
    use vakt::profile::{Policy, Proto, Target};
    use vakt::resource::firewall::model;
    if !ready() {
        return;
    }
    let lab = Lab::new();
    let run_web = lab.docker(
        &["run", "-d", "--name", "web", "--stop-signal", "KILL", "-p", "8080:80", IMAGE]
            .into_iter()
            .chain(SERVE)
            .collect::<Vec<_>>(),
    );
    assert_eq!(run_web.code, 0, "docker run: {}", run_web.stderr);
    let sources = [NET_IP, "10.9.8.7", "10.9.8.200", "10.9.1.1", "192.0.2.5"];
    for src in &sources[1..] {
        sh(&format!("ip -n {} addr add {src}/32 dev vkwan1", lab.internet));
    }
    let reaches = |src: &str| {
        let out = run(Command::new("nsenter").args([
            &format!("--net=/run/netns/{}", lab.internet),
            "curl",
            "-sf",
            "--interface",
            src,
            "--connect-timeout",
            "1",
            "-m",
            "3",
            &format!("http://{HOST_IP}:8080/"),
        ]));
        out.code == 0 && out.stdout.trim() == HI
    };
    let mut seed: u64 = std::env::var("VAKT_FW_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0x6661_6b65_2d64_6f63);
    let mut next = move || {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let lists: u64 = std::env::var("VAKT_FW_CONTAINER_LISTS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let nets = ["any", "10.9.8.0/24", "10.9.0.0/16", "10.9.8.7", "192.0.2.0/24", "198.51.100.0/24"];
    let (mut packets, mut reached, mut disagreements) = (0, 0, Vec::new());
    for n in 0..lists {
        let routed = ["deny", "allow"][(next() % 2) as usize];
        let mut body = format!(
            "[firewall]\npublished_ports = \"profile\"\nrouted = \"{routed}\"\n[[firewall.allow]]\nport = 22\n"
        );
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1 + next() % 4 {
            let action = ["allow", "allow", "deny", "reject"][(next() % 4) as usize];
            let port = ["8080", "8000:8100", "9000:9100"][(next() % 3) as usize];
            let from = nets[(next() % nets.len() as u64) as usize];
            if seen.insert((port, from)) {
                body.push_str(&format!(
                    "[[firewall.rule]]\naction = \"{action}\"\nport = \"{port}\"\nproto = \"tcp\"\nfrom = \"{from}\"\ntarget = \"containers\"\n"
                ));
            }
        }
        let p = lab.profile(&format!("gen{n}"), &body);
        let out = lab.vakt(&["apply", "-p", &p, "--only", "firewall"]);
        assert_eq!(out.code, 0, "list {n}:\n{body}\n{}{}", out.stdout, out.stderr);
        let want = vakt::profile::parse("gen", &body).expect("valid").firewall.expect("firewall");
        let rules: Vec<model::UfwRule> = want
            .rules
            .iter()
            .filter(|r| r.target == Target::Containers)
            .map(|r| model::from_profile(r, false))
            .collect();
        let policy = if want.routed == Policy::Allow { Policy::Allow } else { Policy::Deny };
        for src in sources {
            let packet = model::Packet { src: src.parse().expect("src"), dst: None, dport: 8080, proto: Proto::Tcp };
            let predicted = model::evaluate(&rules, policy, &packet).admits;
            let got = reaches(src);
            packets += 1;
            reached += usize::from(got);
            if predicted != got {
                disagreements.push(format!("list {n}: {src} → 8080: kernel {got}, model {predicted}\n{body}"));
            }
        }
    }
    println!(
        "containers: {lists} rule lists, {packets} connections ({reached} reached), {} disagreements",
        disagreements.len()
    );
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}
