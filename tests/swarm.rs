//! Issue 15: vakt provisions a multi-node swarm. Three private dockerds in their own network
//! namespaces on one bridge: A initialises, B joins as a manager and C as a worker, each by
//! `vakt apply` with its own profile and the token as a systemd credential.

mod common;

use std::time::{Duration, Instant};

use common::swarmnet::{OUTSIDER_IP, PEERS, RecordingProxy, SwarmNet, SwarmNode};
use common::*;

fn ready() -> bool {
    require("root", is_root())
        && require("dockerd, docker and curl", has("dockerd") && has("docker") && has("curl"))
        && require("ufw and iptables", has("ufw") && has("iptables"))
        && require("bash and busybox (busybox-static)", has("bash") && has("busybox"))
}

fn profile(node: &SwarmNode, swarm: &str) -> String {
    let path = node.sb.file("profile.toml");
    let body = format!(
        "[firewall]\n[[firewall.allow]]\nport = 22\ncomment = \"ssh\"\n\n[swarm]\n{swarm}peers = [\"{PEERS}\"]\n"
    );
    std::fs::write(&path, body).expect("write profile");
    path.display().to_string()
}

/// The join token as systemd hands it to vakt-provision.service: a file named after the
/// credential in a private directory, `$CREDENTIALS_DIRECTORY`.
fn credentials(node: &SwarmNode, token: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let dir = node.sb.file("credentials");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let file = dir.join("swarm-join-token");
    let _ = std::fs::remove_file(&file);
    std::fs::write(&file, format!("{token}\n")).expect("write credential");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    dir.display().to_string()
}

/// Every output of every run, for the secrecy check.
#[derive(Default)]
struct Transcript(Vec<String>);

impl Transcript {
    fn keep(&mut self, what: &str, r: &Run) {
        self.0.push(format!("== {what}\n{}\n{}", r.stdout, r.stderr));
    }
}

fn apply(node: &SwarmNode, p: &str, creds: Option<&str>, log: &mut Transcript, what: &str) -> (Run, Duration) {
    let mut cmd = node.vakt_command(&["-vv", "apply", "-p", p, "--format", "json"]);
    // The most verbose logging there is: the token must not reach it either.
    cmd.env("VAKT_LOG", "trace");
    if let Some(dir) = creds {
        cmd.env("CREDENTIALS_DIRECTORY", dir);
    }
    let started = Instant::now();
    let out = run(&mut cmd);
    let took = started.elapsed();
    log.keep(what, &out);
    (out, took)
}

fn swarm_of(report: &serde_json::Value) -> serde_json::Value {
    report["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["id"] == "swarm")
        .cloned()
        .unwrap_or_else(|| panic!("no swarm resource in {report}"))
}

fn info(node: &SwarmNode, field: &str) -> String {
    node.docker(&["info", "--format", &format!("{{{{.Swarm.{field}}}}}")]).stdout.trim().to_string()
}

/// Waits for `done` up to `limit`, polling.
fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A root file system of one static busybox, imported as an image on each node: no registry
/// is reachable here.
fn import_busybox(net: &SwarmNet) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("tmp")).expect("mkdir");
    let busybox = run(std::process::Command::new("sh").args(["-c", "command -v busybox"])).stdout;
    std::fs::copy(busybox.trim(), bin.join("busybox")).expect("copy busybox");
    let tar = dir.path().join("rootfs.tar");
    let out =
        run(std::process::Command::new("tar").arg("-C").arg(dir.path()).arg("-cf").arg(&tar).args(["bin", "tmp"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    for node in &net.nodes {
        let import = node.exec(&["sh", "-c", &format!("docker import {} vakt-test/busybox:1", tar.display())]);
        assert_eq!(import.code, 0, "{}", import.stderr);
    }
}

/// Whether a TCP connection from the outsider to `ip:port` opens (`true`), is refused or times
/// out (the firewall drops it silently: `None`).
fn outsider_tcp(net: &SwarmNet, ip: &str, port: u16) -> Option<bool> {
    let probe = format!("timeout 3 bash -c '</dev/tcp/{ip}/{port}' 2>/dev/null; echo $?");
    let code = net.outside(&["sh", "-c", &probe]).stdout.trim().to_string();
    match code.as_str() {
        "0" => Some(true),
        "124" => None,
        _ => Some(false),
    }
}

/// Packets from `source` to the swarm's udp ports that fell through every rule to the
/// node's default policy (drop): a counting rule after ufw's chains.
fn dropped_udp(node: &SwarmNode, source: &str) -> u64 {
    let out = node.exec(&["iptables", "-L", "INPUT", "-v", "-x", "-n"]);
    out.stdout
        .lines()
        .find(|l| l.contains(source) && l.contains("vakt-test-policy"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counting rule for {source}:\n{}", out.stdout))
}

#[test]
fn three_nodes_join_through_vakt_with_the_token_as_a_credential() {
    if !ready() {
        return;
    }
    let started = Instant::now();
    let net = SwarmNet::start(3);
    let (a, b, c) = (&net.nodes[0], &net.nodes[1], &net.nodes[2]);
    let mut log = Transcript::default();
    eprintln!("three engines up in {:?}", started.elapsed());

    // A initialises.
    let pa = profile(a, "role = \"init\"\n");
    let (out, took_a) = apply(a, &pa, None, &mut log, "apply A");
    assert_eq!(out.code, 0, "A initialises:\n{}{}", out.stdout, out.stderr);
    assert_eq!(status_of(&json(&out), "swarm.node"), "changed");
    assert_eq!(info(a, "LocalNodeState"), "active");
    let cluster = info(a, "Cluster.ID");
    let manager_token = a.docker(&["swarm", "join-token", "-q", "manager"]).stdout.trim().to_string();
    let worker_token = a.docker(&["swarm", "join-token", "-q", "worker"]).stdout.trim().to_string();
    assert!(manager_token.starts_with("SWMTKN-") && worker_token.starts_with("SWMTKN-"));

    // B joins as a manager.
    let pb = profile(b, &format!("role = \"manager\"\njoin = [\"{}:2377\"]\n", a.ip));
    let creds_b = credentials(b, &manager_token);
    let (out, took_b) = apply(b, &pb, Some(&creds_b), &mut log, "apply B");
    assert_eq!(out.code, 0, "B joins as a manager:\n{}{}", out.stdout, out.stderr);
    assert_eq!(status_of(&json(&out), "swarm.node"), "changed");
    assert_eq!(swarm_of(&json(&out))["facts"]["role"], "manager", "{}", out.stdout);

    // C, with a wrong token first: a clear failure, and the node stays out of the swarm.
    let pc = profile(c, &format!("role = \"worker\"\njoin = [\"{}:2377\"]\n", a.ip));
    let last = worker_token.chars().last().expect("token");
    let wrong = format!("{}{}", &worker_token[..worker_token.len() - 1], if last == 'a' { 'b' } else { 'a' });
    let creds_c = credentials(c, &wrong);
    let (out, took_wrong) = apply(c, &pc, Some(&creds_c), &mut log, "apply C, wrong token");
    assert_eq!(out.code, 1, "a wrong token fails:\n{}{}", out.stdout, out.stderr);
    let swarm = swarm_of(&json(&out));
    let error = swarm["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("swarm join as worker through {}:2377 failed", a.ip))
            && error.contains("the node was left as it was")
            && error.contains(&format!("credential swarm-join-token ({creds_c}/swarm-join-token)"))
            && error.contains("docker swarm join-token -q worker"),
        "the message says what failed and what to check:\n{error}"
    );
    assert!(!error.contains(&wrong), "the wrong token is not shown either");
    assert_eq!(info(c, "LocalNodeState"), "inactive", "the node is as it was");
    assert_eq!(a.docker(&["node", "ls", "-q"]).stdout.lines().count(), 2, "and the swarm did not grow");

    let creds_c = credentials(c, &worker_token);
    let (out, took_c) = apply(c, &pc, Some(&creds_c), &mut log, "apply C");
    assert_eq!(out.code, 0, "C joins as a worker:\n{}{}", out.stdout, out.stderr);
    assert_eq!(status_of(&json(&out), "swarm.node"), "changed");
    // C's firewall was applied by the run with the wrong token; its second run only joins.
    eprintln!(
        "apply (join included): A {took_a:?}, B {took_b:?}, C {took_c:?} (C with the wrong token: {took_wrong:?})"
    );

    // A's view: three nodes with the right roles.
    let id = |n: &SwarmNode| info(n, "NodeID");
    let (ida, idb, idc) = (id(a), id(b), id(c));
    let ls = a.docker(&["node", "ls", "--format", "{{.ID}} {{.Status}} {{.ManagerStatus}}"]).stdout;
    let role_of = |id: &str| {
        ls.lines()
            .find(|l| l.split_whitespace().next().is_some_and(|col| id.starts_with(col)))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| panic!("node {id} is not listed on A:\n{ls}"))
    };
    assert_eq!(ls.lines().count(), 3, "{ls}");
    assert_eq!(role_of(&ida), "Ready Leader", "{ls}");
    assert_eq!(role_of(&idb), "Ready Reachable", "{ls}");
    assert_eq!(role_of(&idc), "Ready", "a worker:\n{ls}");

    // A second apply on every node changes nothing and asks the engine for nothing but reads.
    for (name, node, p) in [("A", a, &pa), ("B", b, &pb), ("C", c, &pc)] {
        let proxy = RecordingProxy::start(node.sb.file("recording.sock"), &node.sb.socket());
        let mut cmd = node.vakt_command(&["apply", "-p", p, "--format", "json"]);
        cmd.env("DOCKER_HOST", format!("unix://{}", proxy.socket.display()));
        let out = run(&mut cmd);
        log.keep(&format!("second apply {name}"), &out);
        assert_eq!(out.code, 0, "second apply on {name}:\n{}{}", out.stdout, out.stderr);
        let report = json(&out);
        assert!(changes(&report, "changed").is_empty(), "{name}: nothing changed:\n{}", out.stdout);
        // Observation may read (`sshd -T`); nothing may change ufw.
        let ran: Vec<&str> = report["commands"].as_array().into_iter().flatten().filter_map(|c| c.as_str()).collect();
        assert!(!ran.iter().any(|c| c.starts_with("ufw")), "{name}: no ufw command ran: {ran:?}");
        let requests = proxy.requests();
        assert!(!requests.is_empty(), "{name}: the engine was asked through the proxy");
        let writes: Vec<&String> =
            requests.iter().filter(|r| !r.starts_with("GET ") && !r.starts_with("HEAD ")).collect();
        assert!(writes.is_empty(), "{name}: state-changing API calls on a converged node: {writes:?}");
    }

    // The facts, in JSON and Prometheus (valid for promtool).
    let check = run(&mut a.vakt_command(&["check", "-p", &pa, "--format", "json"]));
    log.keep("check A", &check);
    let report = json(&check);
    let swarm = swarm_of(&report);
    assert_eq!(
        swarm["facts"],
        serde_json::json!({"role": "manager", "cluster_id": cluster, "managers": 2, "nodes": 3})
    );
    assert!(
        swarm["warnings"]
            .as_array()
            .expect("warnings")
            .iter()
            .any(|w| w.as_str().unwrap_or("").contains("2 managers: an even count")),
        "{swarm}"
    );
    let quorum = findings(&report).into_iter().find(|f| f["id"] == "swarm.quorum").expect("quorum finding");
    assert_eq!(quorum["title"], "2 managers, all reachable: the swarm survives 0 manager failures");
    let prom = run(&mut a.vakt_command(&["check", "-p", &pa, "--format", "prometheus"]));
    log.keep("check A prometheus", &prom);
    assert!(prom.stdout.contains("\nvakt_swarm_managers 2\n"), "{}", prom.stdout);
    assert!(
        prom.stdout.contains(&format!("vakt_swarm_info{{role=\"manager\",cluster_id=\"{cluster}\"}} 1")),
        "{}",
        prom.stdout
    );
    if require("promtool", has("promtool")) {
        let path = a.sb.file("metrics.prom");
        std::fs::write(&path, &prom.stdout).expect("write");
        let lint = run(std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&path).expect("open")));
        assert_eq!(lint.code, 0, "promtool: {}{}", lint.stdout, lint.stderr);
    }
    let worker = run(&mut c.vakt_command(&["check", "-p", &pc, "--format", "json"]));
    log.keep("check C", &worker);
    let facts = swarm_of(&json(&worker))["facts"].clone();
    assert_eq!(facts, serde_json::json!({"role": "worker"}), "a worker sees neither the cluster id nor the managers");

    // A service with a task on every node answers across the overlay network.
    import_busybox(&net);
    let created = a.exec(&["sh", "-ec", "docker network create -d overlay --attachable vnet >/dev/null
        docker service create -d --name web --network vnet --endpoint-mode dnsrr --replicas 3 --replicas-max-per-node 1 \
          --publish mode=host,target=8080,published=8080 --no-resolve-image vakt-test/busybox:1 \
          /bin/busybox sh -c 'mkdir -p /tmp/www && /bin/busybox hostname > /tmp/www/index.html && exec /bin/busybox httpd -f -p 8080 -h /tmp/www'"]);
    assert_eq!(created.code, 0, "{}{}", created.stdout, created.stderr);
    let task = |n: &SwarmNode| {
        n.docker(&["ps", "-q", "--filter", "label=com.docker.swarm.service.name=web"]).stdout.trim().to_string()
    };
    wait_for(Duration::from_secs(45), "a web task running on every node", || {
        net.nodes.iter().all(|n| !task(n).is_empty())
    });
    let mut answers = Vec::new();
    let mut hostnames = Vec::new();
    for n in &net.nodes {
        let cid = task(n);
        let ip = n
            .docker(&["inspect", "-f", "{{(index .NetworkSettings.Networks \"vnet\").IPAddress}}", &cid])
            .stdout
            .trim()
            .to_string();
        hostnames.push(n.docker(&["inspect", "-f", "{{.Config.Hostname}}", &cid]).stdout.trim().to_string());
        // From A's task, over the overlay, to this node's task.
        let from_a = task(a);
        let url = format!("http://{ip}:8080/index.html");
        let fetch = || a.docker(&["exec", &from_a, "/bin/busybox", "wget", "-q", "-O", "-", &url]);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = fetch();
        while got.code != 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(300));
            got = fetch();
        }
        assert_eq!(got.code, 0, "{url} from A's task over the overlay: {}{}", got.stdout, got.stderr);
        let got = got.stdout.trim().to_string();
        answers.push(got);
    }
    assert_eq!(answers, hostnames, "each node's task answered across the overlay");
    let by_name = a.docker(&["exec", &task(a), "/bin/busybox", "nslookup", "tasks.web"]).stdout;
    assert_eq!(by_name.matches("Address").count() - 1, 3, "dnsrr names the three tasks:\n{by_name}");

    // The peers rule: the outsider reaches the nodes (ICMP, and a refused port 22) but
    // not the swarm's ports; a peer does.
    for n in &net.nodes {
        assert_eq!(
            net.outside(&["busybox", "ping", "-c", "1", "-W", "2", &n.ip]).code,
            0,
            "the outsider reaches {}",
            n.ip
        );
        assert_eq!(outsider_tcp(&net, &n.ip, 22), Some(false), "an allowed port answers (refused: no sshd)");
        // Dropped connections wait for the probe's timeout: probe the ports side by side.
        let net = &net;
        std::thread::scope(|s| {
            let probes = [2377, 7946].map(|port| (port, s.spawn(move || outsider_tcp(net, &n.ip, port))));
            for (port, probe) in probes {
                assert_eq!(probe.join().expect("probe"), None, "{}:{port}/tcp is closed to the outsider", n.ip);
            }
        });
        for source in [OUTSIDER_IP, &net.nodes[0].ip, &net.nodes[1].ip] {
            if source == n.ip {
                continue;
            }
            let rule = format!(
                "iptables -A INPUT -s {source} -p udp -m multiport --dports 4789,7946 -m comment --comment vakt-test-policy"
            );
            assert_eq!(n.exec(&["sh", "-c", &rule]).code, 0);
        }
        let send = format!("for p in 4789 7946 4789 7946; do echo probe > /dev/udp/{}/$p; done", n.ip);
        assert_eq!(net.outside(&["bash", "-c", &send]).code, 0);
    }
    let b_to_a = b.exec(&["timeout", "3", "bash", "-c", &format!("</dev/tcp/{}/2377", a.ip)]);
    assert_eq!(b_to_a.code, 0, "a peer reaches A's management port");
    std::thread::sleep(Duration::from_secs(2));
    for n in &net.nodes {
        assert_eq!(dropped_udp(n, OUTSIDER_IP), 4, "{}: the outsider's udp to 4789 and 7946 is dropped", n.ip);
        let peer = if n.ip == net.nodes[0].ip { &net.nodes[1].ip } else { &net.nodes[0].ip };
        assert_eq!(dropped_udp(n, peer), 0, "{}: a peer's gossip and VXLAN pass", n.ip);
    }
    let ls = a.docker(&["node", "ls", "--format", "{{.Status}} {{.Availability}}"]).stdout;
    assert_eq!(ls.lines().filter(|l| *l == "Ready Active").count(), 3, "the swarm stays healthy:\n{ls}");
    let again = run(&mut a.vakt_command(&["check", "-p", &pa, "--only", "swarm"]));
    log.keep("final check A", &again);
    assert!(again.stdout.contains("ok       swarm.quorum"), "{}", again.stdout);
    assert!(
        again.stdout.contains(&format!(
            "facts    swarm                        role manager, cluster id {cluster}, managers 2, nodes 3"
        )),
        "{}",
        again.stdout
    );

    // The token never appears in any output, report or log of the runs.
    let all = log.0.join("\n");
    for secret in [&manager_token, &worker_token, &wrong] {
        // Where it leaked, with the token itself masked: the test output is a log too.
        let leaks: Vec<String> = log
            .0
            .iter()
            .filter(|run| run.contains(secret.as_str()))
            .flat_map(|run| {
                let header = run.lines().next().unwrap_or("").to_string();
                run.lines()
                    .filter(|l| l.contains(secret.as_str()))
                    .map(move |l| format!("{header}: {}", l.replace(secret.as_str(), "<TOKEN>")))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(leaks.is_empty(), "a join token leaked:\n{}", leaks.join("\n"));
    }
    assert!(!all.contains("SWMTKN"), "something like a join token leaked:\n{all}");
    assert!(
        all.contains("engine API: swarm join as manager") && all.contains("engine API: swarm join as worker"),
        "the transcript holds the runs' debug logs"
    );
    eprintln!("three-node test took {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(120), "the budget is 2 minutes: {:?}", started.elapsed());
}

/// A token file others can read is refused like a world-writable profile: the node is left
/// out of the swarm, the message says how to fix the file, and the content is never shown.
#[test]
fn a_token_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    if !require("root", is_root())
        || !require("dockerd, docker and curl", has("dockerd") && has("docker") && has("curl"))
    {
        return;
    }
    let sb = common::dockerd::DockerSandbox::start(Some("{\"storage-driver\": \"overlay2\"}\n"));
    let token = sb.file("swarm-join-token");
    let secret = "SWMTKN-1-0000000000000000000000000000000000000000000000000-aaaaaaaaaaaaaaaaaaaaaaaaa";
    std::fs::write(&token, secret).expect("write");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let p = sb.file("profile.toml");
    std::fs::write(
        &p,
        format!(
            "[swarm]\nrole = \"worker\"\njoin = [\"192.0.2.1\"]\nadvertise_addr = \"{}\"\ntoken_file = \"{}\"\n",
            sb.advertise_ip(),
            token.display()
        ),
    )
    .expect("profile");
    let p = p.display().to_string();
    for verb in ["check", "apply"] {
        let out = sb.vakt(&[verb, "-p", &p, "--only", "swarm"]);
        assert_eq!(out.code, 1, "{verb}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stdout.contains("failed   swarm.node                   swarm worker (not in a swarm yet): cannot join"),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout.contains(&format!(
                "refusing the join token {0}: others may access it (mode 0644); a join token is a secret: `chown root: {0} && chmod 600 {0}`",
                token.display()
            )),
            "{}",
            out.stdout
        );
        assert!(!out.stdout.contains("SWMTKN") && !out.stderr.contains("SWMTKN"), "{}{}", out.stdout, out.stderr);
    }
    assert_eq!(sb.docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]).stdout.trim(), "inactive");
    // Without a token file, the credential is looked for; outside systemd there is none.
    std::fs::write(sb.file("profile.toml"), "[swarm]\nrole = \"worker\"\njoin = [\"192.0.2.1\"]\n").expect("profile");
    let out = run(sb.live_command(&["check", "-p", &p, "--only", "swarm"]).env_remove("CREDENTIALS_DIRECTORY"));
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("$CREDENTIALS_DIRECTORY is not set")
            && out.stdout.contains("LoadCredential=swarm-join-token:"),
        "{}",
        out.stdout
    );
}

/// A node that ends up with another role than the profile's (a worker token where a manager
/// is wanted), or sits in another swarm, is reported with what a manager must do, in the run
/// itself; vakt neither promotes nor leaves.
#[test]
fn another_role_or_another_swarm_is_reported_never_fixed() {
    if !ready() {
        return;
    }
    let net = SwarmNet::start(2);
    let (a, b) = (&net.nodes[0], &net.nodes[1]);
    let mut log = Transcript::default();
    let pa = a.sb.file("profile.toml").display().to_string();
    std::fs::write(&pa, "[swarm]\nrole = \"init\"\n").expect("profile");
    let (out, _) = apply(a, &pa, None, &mut log, "apply A");
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let worker_token = a.docker(&["swarm", "join-token", "-q", "worker"]).stdout.trim().to_string();

    let pb = b.sb.file("profile.toml").display().to_string();
    std::fs::write(&pb, format!("[swarm]\nrole = \"manager\"\njoin = [\"{}\"]\n", a.ip)).expect("profile");
    let creds = credentials(b, &worker_token);
    let text = |node: &SwarmNode, verb: &str, p: &str, creds: Option<&str>| {
        let mut cmd = node.vakt_command(&[verb, "-p", p, "--only", "swarm"]);
        if let Some(dir) = creds {
            cmd.env("CREDENTIALS_DIRECTORY", dir);
        }
        run(&mut cmd)
    };
    let out = text(b, "apply", &pb, Some(&creds));
    log.keep("apply B with a worker token", &out);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let node = info(b, "NodeID");
    assert_eq!(info(b, "ControlAvailable"), "false", "the token made it a worker");
    for said in [
        "failed   swarm.node                   swarm manager (not in a swarm yet)",
        "after the change: this node is a worker of a swarm; the profile wants a manager",
        &format!("on a manager, run: docker node promote {node}"),
    ] {
        assert!(out.stdout.contains(said), "{said}:\n{}", out.stdout);
    }
    let again = text(b, "check", &pb, None);
    assert_eq!(again.code, 1, "{}", again.stdout);
    assert!(again.stdout.contains(&format!("drift    swarm.node                   this node is a worker of a swarm; the profile wants a manager\n           on a manager, run: docker node promote {node}")), "{}", again.stdout);
    assert_eq!(a.docker(&["node", "inspect", "-f", "{{.Spec.Role}}", &node]).stdout.trim(), "worker", "never promoted");

    // B leaves and starts a swarm of its own: the profile's join names A, which is not among
    // its managers. Reported; B stays in its swarm.
    assert_eq!(b.docker(&["swarm", "leave", "--force"]).code, 0);
    assert_eq!(b.docker(&["swarm", "init", "--advertise-addr", &b.ip]).code, 0);
    let own = info(b, "Cluster.ID");
    std::fs::write(&pb, format!("[swarm]\nrole = \"worker\"\njoin = [\"{}\"]\n", a.ip)).expect("profile");
    let out = text(b, "apply", &pb, Some(&creds));
    log.keep("apply B in another swarm", &out);
    assert_eq!(out.code, 1, "{}", out.stdout);
    for said in [
        "drift    swarm.node                   this node is a manager of another swarm",
        &format!("its managers: {}:2377", b.ip),
        &format!("the profile joins through: {}:2377", a.ip),
        "vakt never leaves a swarm",
    ] {
        assert!(out.stdout.contains(said), "{said}:\n{}", out.stdout);
    }
    assert_eq!(info(b, "Cluster.ID"), own, "B is still in its own swarm");
    let all = log.0.join("\n");
    assert!(!all.contains(&worker_token) && !all.contains("SWMTKN"), "no join token in any output");
}
