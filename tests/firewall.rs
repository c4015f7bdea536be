//! The firewall resource against the real ufw and netfilter, in private namespaces.

mod common;

use common::netns::{ARTICLE, UfwSandbox};
use common::*;

fn ready() -> bool {
    require("root", is_root()) && require("ufw and iptables", has("ufw") && has("iptables-save") && has("ip"))
}

fn profile(sandbox: &UfwSandbox, body: &str) -> String {
    let path = sandbox.file("profile.toml");
    std::fs::write(&path, body).expect("write profile");
    path.display().to_string()
}

/// check (drift) → apply (changed) → apply (nothing run) → check (pass); returns apply's changes.
/// How a rule written with the others into ufw's files is reported.
const ONE_WRITE: &str = " (written into ufw's rule files, as ufw writes them, and loaded once)";

fn quartet(sb: &UfwSandbox, profile: &str) -> Vec<String> {
    let check = sb.vakt(&["check", "-p", profile, "--only", "firewall", "--format", "json"]);
    assert_eq!(check.code, 1, "first check finds drift:\n{}{}", check.stdout, check.stderr);
    let planned = commands(&json(&check), "drift");

    let apply = sb.vakt(&["apply", "-p", profile, "--only", "firewall", "--format", "json"]);
    assert_eq!(apply.code, 0, "apply converges:\n{}{}", apply.stdout, apply.stderr);
    let done = commands(&json(&apply), "changed");
    assert_eq!(planned, done, "check cannot lie: its plan is what apply did");

    let again = sb.vakt(&["apply", "-p", profile, "--only", "firewall", "--format", "json"]);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    let report = json(&again);
    assert!(commands(&report, "changed").is_empty(), "second apply changes nothing");
    // Observation may read (`sshd -T`); nothing may change ufw.
    let ran = ran(&report, "ufw");
    assert!(ran.is_empty(), "no ufw command runs on a converged host: {ran:?}");

    let last = sb.vakt(&["check", "-p", profile, "--only", "firewall"]);
    assert_eq!(last.code, 0, "final check passes:\n{}", last.stdout);
    done
}

/// The change commands of the findings with `status`.
fn commands(report: &serde_json::Value, status: &str) -> Vec<String> {
    changes(report, status).into_iter().map(|(_, c)| c).filter(|c| !c.is_empty()).collect()
}

fn ufw_status(sb: &UfwSandbox) -> String {
    run(&mut sb.command(&["ufw", "status", "verbose"])).stdout
}

#[test]
fn fresh_ufw_gets_the_articles_rules() {
    if !ready() {
        return;
    }
    let sb = UfwSandbox::new();
    let p = profile(&sb, ARTICLE);
    let done = quartet(&sb, &p);
    assert!(done.contains(&"ufw --force enable".to_string()), "{done:?}");
    // A fresh ufw gets its rules in one write of each rule file (issue 27); the findings say so.
    assert!(done.contains(&format!("ufw allow proto tcp from any to any port 2377{ONE_WRITE}")), "{done:?}");
    let status = ufw_status(&sb);
    assert!(status.contains("Status: active"), "{status}");
    for port in ["22/tcp", "80/tcp", "8080/tcp", "2377/tcp", "22/tcp (v6)"] {
        assert!(status.contains(port), "{port} missing from:\n{status}");
    }
    let rules = sb.iptables_save();
    assert!(
        rules.contains("-A ufw-user-input -p tcp -m tcp --dport 2377 -j ACCEPT")
            || rules.contains("--dport 2377 -j ACCEPT"),
        "{rules}"
    );
}

#[test]
fn one_rule_missing_and_a_policy_changed() {
    if !ready() {
        return;
    }
    let sb = UfwSandbox::new();
    let p = profile(&sb, ARTICLE);
    for cmd in [
        &["ufw", "allow", "22/tcp"][..],
        &["ufw", "allow", "80/tcp"],
        &["ufw", "allow", "8080/tcp"],
        &["ufw", "default", "allow", "outgoing"],
        &["ufw", "default", "reject", "incoming"],
        &["ufw", "--force", "enable"],
    ] {
        assert_eq!(run(&mut sb.command(cmd)).code, 0, "{cmd:?}");
    }
    // Outgoing was already allow: only the missing rule and the incoming policy change.
    let done = quartet(&sb, &p);
    assert_eq!(done, vec!["ufw allow proto tcp from any to any port 2377", "ufw default deny incoming"]);
}

#[test]
fn extra_rules_pruned_or_left_alone() {
    if !ready() {
        return;
    }
    let sb = UfwSandbox::new();
    let kept = profile(&sb, ARTICLE);
    sb.vakt(&["apply", "-p", &kept]);
    assert_eq!(
        run(&mut sb.command(&["ufw", "allow", "from", "192.0.2.0/24", "to", "any", "port", "5432", "proto", "tcp"]))
            .code,
        0
    );

    let check = sb.vakt(&["check", "-p", &kept, "--only", "firewall", "--format", "json"]);
    assert_eq!(check.code, 0, "prune = false: an extra rule is not drift\n{}", check.stdout);
    let warnings = json(&check)["resources"][0]["warnings"].to_string();
    assert!(warnings.contains("5432/tcp from 192.0.2.0/24") && warnings.contains("prune = false"), "{warnings}");

    let pruned = profile(&sb, &ARTICLE.replace("[firewall]", "[firewall]\nprune = true"));
    let done = quartet(&sb, &pruned);
    assert_eq!(done, vec!["ufw delete allow proto tcp from 192.0.2.0/24 to any port 5432"]);
    assert!(!ufw_status(&sb).contains("5432"));
}

#[test]
fn disabled_ufw_is_enabled_without_touching_rules() {
    if !ready() {
        return;
    }
    let sb = UfwSandbox::new();
    let p = profile(&sb, ARTICLE);
    sb.vakt(&["apply", "-p", &p]);
    assert_eq!(run(&mut sb.command(&["ufw", "disable"])).code, 0);
    let done = quartet(&sb, &p);
    assert_eq!(done, vec!["ufw --force enable"]);
}

#[test]
fn ipv6_disabled_manages_ipv4_only() {
    if !ready() {
        return;
    }
    let sb = UfwSandbox::new();
    let defaults = sb.file("/etc/default/ufw");
    let text = std::fs::read_to_string(&defaults).expect("read").replace("IPV6=yes", "IPV6=no");
    std::fs::write(&defaults, text).expect("write");
    let p = profile(&sb, ARTICLE);
    quartet(&sb, &p);
    let v6 = std::fs::read_to_string(sb.file("/etc/ufw/user6.rules")).expect("user6.rules");
    assert!(!v6.contains("### tuple ###"), "no IPv6 rules written:\n{v6}");
    assert!(ufw_status(&sb).contains("8080/tcp"));
}

#[test]
fn lockout_guard_refuses_and_changes_nothing() {
    if !ready() {
        return;
    }
    // A profile without 22, and a host whose sshd listens on 2222 with a profile that opens 22.
    let cases = [
        (ARTICLE.replace("port = 22\n", "port = 443\n"), "Port 22\n", "22/tcp"),
        (ARTICLE.to_string(), "Port 2222\n", "2222/tcp"),
    ];
    for (body, sshd, blocked) in cases {
        let sb = UfwSandbox::new();
        std::fs::write(sb.file("/etc/ssh/sshd_config"), sshd).expect("sshd_config");
        let p = profile(&sb, &body);
        let before = (sb.iptables_save(), std::fs::read(sb.file("/etc/ufw/user.rules")).expect("rules"));

        let check = sb.vakt(&["check", "-p", &p, "--only", "firewall"]);
        let apply = sb.vakt(&["apply", "-p", &p, "--only", "firewall"]);
        for out in [&check, &apply] {
            assert_eq!(out.code, 1, "{}", out.stdout);
            assert!(
                out.stdout.contains("refusing to change the firewall") && out.stdout.contains(blocked),
                "{}",
                out.stdout
            );
            assert!(out.stdout.contains("[[firewall.allow]]"), "the message says what to add:\n{}", out.stdout);
        }
        let after = (sb.iptables_save(), std::fs::read(sb.file("/etc/ufw/user.rules")).expect("rules"));
        assert!(before == after, "nothing changed");
        assert!(ufw_status(&sb).contains("inactive"));
    }
}

#[test]
fn real_packets_reach_allowed_ports_only() {
    if !ready() || !require("python3", has("python3")) {
        return;
    }
    let sb = UfwSandbox::new();
    let client = format!("{}-c", sb.netns);
    let setup = format!(
        "ip netns add {client}
         ip link add vkfw0 netns {ns} type veth peer name vkfw1 netns {client}
         ip -n {ns} addr add 10.213.0.1/24 dev vkfw0; ip -n {ns} link set vkfw0 up
         ip -n {client} addr add 10.213.0.2/24 dev vkfw1; ip -n {client} link set vkfw1 up; ip -n {client} link set lo up",
        ns = sb.netns
    );
    assert!(std::process::Command::new("sh").args(["-ec", &setup]).status().expect("sh").success());
    let p = profile(&sb, ARTICLE);
    assert_eq!(sb.vakt(&["apply", "-p", &p]).code, 0);

    let server = "import socket,time\nss=[]\nfor p in (80,9000):\n s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0',p)); s.listen(); ss.append(s)\ntime.sleep(20)\n";
    let mut listener = sb.command(&["python3", "-c", server]).spawn().expect("listener");
    std::thread::sleep(std::time::Duration::from_millis(700));
    let probe = |port: u16| {
        let code = format!(
            "import socket\ns=socket.socket(); s.settimeout(2)\ntry:\n s.connect(('10.213.0.1',{port})); print('open')\nexcept Exception as e: print('closed', e)\n"
        );
        run(std::process::Command::new("ip").args(["netns", "exec", &client, "python3", "-c", &code])).stdout
    };
    let allowed = probe(80);
    let denied = probe(9000);
    let _ = listener.kill();
    let _ = listener.wait();
    let _ = std::process::Command::new("ip").args(["netns", "del", &client]).status();
    assert!(allowed.starts_with("open"), "port 80 is allowed: {allowed}");
    assert!(denied.starts_with("closed"), "port 9000 is denied: {denied}");
}

#[test]
fn comments_reach_ufw_as_comments_never_as_options() {
    if !ready() {
        return;
    }
    let sb = UfwSandbox::new();
    let rules_file = sb.file("etc/ufw/user.rules");
    let before = std::fs::read(&rules_file).expect("user.rules");
    // ufw scans its whole command line for `--datadir=`/`--rootdir=`: such a comment is an option.
    let bad = profile(&sb, "[firewall]\n[[firewall.allow]]\nport = 22\ncomment = \"--datadir=/tmp/vakt-x\"\n");
    let out = sb.vakt(&["apply", "-p", &bad, "--only", "firewall"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("firewall.allow[0].comment") && out.stderr.contains("option"), "{}", out.stderr);
    assert_eq!(std::fs::read(&rules_file).expect("user.rules"), before, "ufw never ran");

    // What is legal reaches ufw whole, as one comment, and reads back as the same rule.
    let odd = "ssh # admins; ticket 42 -- keep";
    let good = profile(&sb, &format!("[firewall]\n[[firewall.allow]]\nport = 22\ncomment = \"{odd}\"\n"));
    let out = sb.vakt(&["apply", "-p", &good, "--only", "firewall"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let hex: String = odd.bytes().map(|b| format!("{b:02x}")).collect();
    let rules = std::fs::read_to_string(&rules_file).expect("user.rules");
    assert!(rules.contains(&format!("comment={hex}")), "ufw stored the comment whole:\n{rules}");
    assert!(ufw_status(&sb).contains(odd), "{}", ufw_status(&sb));
    assert_eq!(sb.vakt(&["check", "-p", &good, "--only", "firewall"]).code, 0);
}

/// The state an ordinary public server carries: fail2ban's ban inserted first, a rate-limited
/// SSH rule, an operator's block, and a logging rule.
fn existing_state(sb: &UfwSandbox) {
    for argv in [
        &["ufw", "allow", "22/tcp"][..],
        &["ufw", "--force", "enable"],
        &["ufw", "insert", "1", "deny", "from", "198.51.100.7"],
        &["ufw", "limit", "2222/tcp"],
        &["ufw", "deny", "proto", "tcp", "from", "203.0.113.0/24", "to", "any", "port", "3306"],
        &["ufw", "allow", "log", "8443/tcp"],
    ] {
        let out = run(&mut sb.command(argv));
        assert_eq!(out.code, 0, "{argv:?}: {}{}", out.stdout, out.stderr);
    }
}

#[test]
fn prune_deletes_allow_rules_only_and_handles_logging_rules() {
    if !ready() {
        return;
    }
    let sb = UfwSandbox::new();
    existing_state(&sb);
    let p = profile(&sb, "[firewall]\nprune = true\n[[firewall.allow]]\nport = 22\n[[firewall.allow]]\nport = 80\n");
    let apply = sb.vakt(&["apply", "-p", &p, "--only", "firewall", "--format", "json"]);
    assert_eq!(apply.code, 0, "the apply goes through the logging rule to the end:\n{}{}", apply.stdout, apply.stderr);
    let status = ufw_status(&sb);
    for kept in ["198.51.100.7", "2222/tcp                   LIMIT IN", "3306/tcp                   DENY IN"] {
        assert!(status.contains(kept), "{kept} must survive prune:\n{status}");
    }
    assert!(!status.contains("8443"), "the extra allow (with logging) is pruned:\n{status}");
    assert!(status.contains("80/tcp"), "{status}");
    let report = json(&apply);
    let warnings = report["resources"][0]["warnings"].to_string();
    assert!(warnings.contains("never deletes a rule that blocks"), "the blocks are reported: {warnings}");
    let again = sb.vakt(&["apply", "-p", &p, "--only", "firewall", "--format", "json"]);
    assert!(!json(&again)["commands"].to_string().contains("\"ufw"), "{}", again.stdout);
}

#[test]
fn limit_and_deny_rules_from_the_profile_reach_ufw() {
    if !ready() {
        return;
    }
    let sb = UfwSandbox::new();
    let p = profile(
        &sb,
        "[firewall]\n[[firewall.rule]]\naction = \"limit\"\nport = 22\ncomment = \"ssh\"\n\
         [[firewall.rule]]\naction = \"deny\"\nport = 3306\nfrom = \"203.0.113.0/24\"\n",
    );
    let done = quartet(&sb, &p);
    assert!(done.contains(&format!("ufw limit proto tcp from any to any port 22 comment ssh{ONE_WRITE}")), "{done:?}");
    let status = ufw_status(&sb);
    assert!(status.contains("22/tcp                     LIMIT IN    Anywhere"), "{status}");
    assert!(status.contains("3306/tcp                   DENY IN     203.0.113.0/24"), "{status}");
    assert!(sb.iptables_save().contains("ufw-user-limit"), "rate limiting is in netfilter");
}

#[test]
fn a_cidr_rule_keeps_ssh_only_when_it_admits_the_admin_network() {
    if !ready() {
        return;
    }
    let sb = UfwSandbox::new();
    let limited = "[firewall]\n[[firewall.allow]]\nport = 22\nfrom = \"10.9.0.0/16\"\n";
    let p = profile(&sb, limited);
    let out = sb.vakt(&["apply", "-p", &p, "--only", "firewall"]);
    assert_eq!(out.code, 1, "no session, no admin network: refused\n{}", out.stdout);
    assert!(out.stdout.contains("refusing to change the firewall"), "{}", out.stdout);
    assert!(ufw_status(&sb).contains("inactive"));
    let p = profile(&sb, &limited.replace("[firewall]\n", "[firewall]\nadmin = [\"10.9.8.0/24\"]\n"));
    let out = sb.vakt(&["apply", "-p", &p, "--only", "firewall"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(ufw_status(&sb).contains("Status: active"));
}

#[test]
fn socket_activated_ssh_on_another_port_is_guarded() {
    if !ready() {
        return;
    }
    // Ubuntu's socket activation: sshd_config says nothing, ssh.socket's drop-in moves SSH.
    let sb = UfwSandbox::new();
    std::fs::write(sb.file("/etc/ssh/sshd_config"), "PermitRootLogin no\n").expect("sshd_config");
    for (path, text) in [
        ("lib/systemd/system/ssh.socket", "[Socket]\nListenStream=22\nAccept=no\n"),
        ("etc/systemd/system/ssh.socket.d/listen.conf", "[Socket]\nListenStream=\nListenStream=2200\n"),
    ] {
        std::fs::create_dir_all(sb.file(path).parent().expect("dir")).expect("mkdir");
        std::fs::write(sb.file(path), text).expect("unit");
    }
    std::fs::create_dir_all(sb.file("etc/systemd/system/sockets.target.wants")).expect("mkdir");
    std::os::unix::fs::symlink(
        "/lib/systemd/system/ssh.socket",
        sb.file("etc/systemd/system/sockets.target.wants/ssh.socket"),
    )
    .expect("enable");
    let p = profile(&sb, ARTICLE);
    let out = sb.vakt(&["apply", "-p", &p, "--only", "firewall"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("2200/tcp") && out.stdout.contains("socket activation"), "{}", out.stdout);
    assert!(ufw_status(&sb).contains("inactive"), "nothing changed");
}

#[test]
fn an_image_prepared_offline_gets_its_rules_and_is_enabled_at_first_boot() {
    if !ready() {
        return;
    }
    let sb = UfwSandbox::new();
    let p = profile(&sb, ARTICLE);
    let offline = sb.vakt_offline(&["apply", "-p", &p, "--only", "firewall", "--format", "json"]);
    assert_eq!(offline.code, 0, "converged what it can offline:\n{}{}", offline.stdout, offline.stderr);
    let report = json(&offline);
    assert_eq!(status_of(&report, "firewall.enabled"), "skipped", "enabling waits for the first boot");
    assert!(report.to_string().contains("deferred to the first boot"), "{report}");
    // ufw's rule files are written into the image at once (issue 27): no ufw process at all.
    let ran = report["commands"].to_string();
    assert!(!ran.contains("ufw"), "no ufw process ran: {ran}");
    let rules = std::fs::read_to_string(sb.file("etc/ufw/user.rules")).expect("user.rules");
    for port in ["22", "80", "8080", "2377"] {
        assert!(rules.contains(&format!("### tuple ### allow tcp {port} ")), "{port} in the image:\n{rules}");
    }
    assert!(!sb.iptables_save().contains("ufw-"), "nothing reached netfilter:\n{}", sb.iptables_save());

    // The first boot finishes only the deferred part.
    let boot = sb.vakt(&["apply", "-p", &p, "--only", "firewall", "--format", "json"]);
    assert_eq!(boot.code, 0, "{}", boot.stdout);
    assert_eq!(commands(&json(&boot), "changed"), vec!["ufw --force enable"]);
    assert!(ufw_status(&sb).contains("Status: active"));
}

#[test]
fn the_sshd_config_reader_agrees_with_sshd_itself() {
    if !ready() || !require("sshd", has("sshd")) {
        return;
    }
    let sb = UfwSandbox::new();
    let cases = [
        ("Port 2222\n", ""),
        ("Include /etc/ssh/sshd_config.d/*.conf\nPort 22\n", "Port 2200\n"),
        ("Include sshd_config.d/*.conf\n", "ListenAddress 127.0.0.1:2201\nListenAddress [::1]:2202\n"),
        ("Port 2203\nPort 2204\nListenAddress 0.0.0.0\n", ""),
        ("Port 2205\nMatch User backup\n  AllowTcpForwarding no\n", ""),
        ("port=2206 # the equals form\n", ""),
    ];
    for (main, dropin) in cases {
        std::fs::write(sb.file("etc/ssh/sshd_config"), main).expect("sshd_config");
        std::fs::create_dir_all(sb.file("etc/ssh/sshd_config.d")).expect("mkdir");
        std::fs::write(sb.file("etc/ssh/sshd_config.d/50-test.conf"), dropin).expect("dropin");
        let dump = run(&mut sb.command(&["sshd", "-T"]));
        assert_eq!(dump.code, 0, "sshd -T: {}", dump.stderr);
        let mut theirs: Vec<u16> = dump
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("listenaddress "))
            .filter_map(|a| a.rsplit(':').next()?.parse().ok())
            .collect();
        theirs.sort();
        theirs.dedup();
        // vakt's own reader: offline (--root), where sshd -T does not apply.
        // A profile the guard refuses: its evidence names the ports it read.
        let p = profile(&sb, "[firewall]\n[[firewall.allow]]\nport = 9\n");
        let out = sb.vakt_offline(&["check", "-p", &p, "--only", "firewall", "--format", "json"]);
        let evidence =
            out.stdout.lines().find(|l| l.contains("/etc/ssh/sshd_config: port")).unwrap_or_default().to_string();
        let ours: Vec<u16> = evidence
            .rsplit("port ")
            .next()
            .unwrap_or("")
            .trim_end_matches([',', '"'])
            .split(", ")
            .filter_map(|p| p.trim_matches('"').parse().ok())
            .collect();
        assert_eq!(ours, theirs, "{main:?} + {dropin:?}: sshd -T says {theirs:?}\n{evidence}");
    }
}

/// Issue 27: sshd -T's answer is kept while its configuration is unchanged (sshd costs
/// about 18 ms of CPU a run); an edit, a new drop-in or a changed Include is asked again.
#[test]
fn sshd_is_asked_again_only_when_its_configuration_changes() {
    if !ready() || !require("sshd", has("sshd")) {
        return;
    }
    let sb = UfwSandbox::new();
    // A profile the guard refuses: its evidence names where the ports came from.
    let p = profile(&sb, "[firewall]\n[[firewall.allow]]\nport = 9\n");
    let source = || {
        let out = sb.vakt(&["check", "-p", &p, "--only", "firewall", "--format", "json"]);
        out.stdout.lines().find(|l| l.contains("sshd -T")).unwrap_or_default().trim().to_string()
    };
    assert!(source().contains("sshd -T: port 22"), "asked first: {}", source());
    let kept = source();
    assert!(kept.contains("sshd -T (kept: its configuration is unchanged): port 22"), "{kept}");
    std::fs::write(sb.file("etc/ssh/sshd_config"), "Include /etc/ssh/sshd_config.d/*.conf\nPort 22\n")
        .expect("sshd_config");
    assert!(source().contains("sshd -T: port 22"), "an edit is asked again");
    std::fs::create_dir_all(sb.file("etc/ssh/sshd_config.d")).expect("mkdir");
    std::fs::write(sb.file("etc/ssh/sshd_config.d/50-port.conf"), "Port 2222\n").expect("drop-in");
    let with_dropin = source();
    assert!(with_dropin.contains("sshd -T: port 22, 2222"), "a new drop-in is asked again: {with_dropin}");
    assert!(source().contains("(kept: its configuration is unchanged): port 22, 2222"));
    // An Include with a glob above the file name is not followed as sshd follows it here: its
    // answer is never kept.
    std::fs::write(sb.file("etc/ssh/sshd_config"), "Include /etc/ssh/sshd_*.d/*.conf\n").expect("sshd_config");
    for _ in 0..2 {
        let asked = source();
        assert!(asked.contains("sshd -T: port 2222") && !asked.contains("kept"), "{asked}");
    }
    // A byte that is not UTF-8 (a Latin-1 comment), which sshd reads past: the Include after
    // it is sshd's all the same, so the answer is never kept, and a new drop-in counts at once.
    std::fs::write(sb.file("etc/ssh/sshd_config"), b"# Gr\xfc\xdfe\nInclude /etc/ssh/sshd_config.d/*.conf\n")
        .expect("sshd_config");
    for _ in 0..2 {
        let asked = source();
        assert!(asked.contains("sshd -T: port 2222") && !asked.contains("kept"), "{asked}");
    }
    std::fs::write(sb.file("etc/ssh/sshd_config.d/60-more.conf"), "Port 2223\n").expect("drop-in");
    assert!(source().contains("sshd -T: port 2222, 2223"), "a drop-in after a Latin-1 comment: {}", source());
}

#[test]
fn an_allow_never_silently_replaces_an_operators_limit() {
    if !ready() {
        return;
    }
    // ufw keeps one rule per traffic: `ufw allow 22/tcp` over `ufw limit 22/tcp` says "Rule
    // updated" and the rate limit is gone. vakt refuses and says how to keep it.
    let sb = UfwSandbox::new();
    let out = run(&mut sb.command(&["ufw", "limit", "22/tcp"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let p = profile(&sb, "[firewall]\n[[firewall.allow]]\nport = 22\n");
    let apply = sb.vakt(&["apply", "-p", &p, "--only", "firewall"]);
    assert_eq!(apply.code, 1, "{}", apply.stdout);
    assert!(apply.stdout.contains("ufw would replace an existing limit rule"), "{}", apply.stdout);
    assert!(ufw_status(&sb).contains("22/tcp                     LIMIT IN"), "{}", ufw_status(&sb));
    let keep = profile(&sb, "[firewall]\n[[firewall.rule]]\naction = \"limit\"\nport = 22\n");
    assert_eq!(sb.vakt(&["apply", "-p", &keep, "--only", "firewall"]).code, 0);
}

/// Issue 21: `peers = ["10.0.1.7"]` with prune: ufw stores the host without a mask; the first
/// apply used to report its rules failed and the second pruned them.
#[test]
fn a_peer_given_as_one_host_is_kept_across_applies() {
    if !ready() {
        return;
    }
    let sb = UfwSandbox::new();
    let p = profile(&sb, "[firewall]\nprune = true\n[[firewall.allow]]\nport = 22\n[swarm]\npeers = [\"10.0.1.7\"]\n");
    let done = quartet(&sb, &p);
    assert!(
        done.iter().any(|c| *c
            == format!(
                "ufw allow proto tcp from 10.0.1.7 to any port 2377 comment 'swarm management from peers'{ONE_WRITE}"
            )),
        "{done:?}"
    );
    let rules = std::fs::read_to_string(sb.file("/etc/ufw/user.rules")).expect("user.rules");
    assert!(rules.contains("### tuple ### allow tcp 2377 0.0.0.0/0 any 10.0.1.7 in"), "{rules}");
    assert!(rules.contains("### tuple ### allow udp 4789 0.0.0.0/0 any 10.0.1.7 in"), "{rules}");
}

/// Issue 21: a rule the profile lists before one already in ufw is inserted before it, so the
/// first match is the profile's: the admin network's allow lands above the wider deny.
#[test]
fn a_rule_is_inserted_where_the_profile_lists_it() {
    if !ready() {
        return;
    }
    let sb = UfwSandbox::new();
    let first = "[firewall]\nadmin = [\"10.9.8.0/24\"]\n[[firewall.rule]]\naction = \"deny\"\nport = 22\nproto = \"tcp\"\nfrom = \"10.9.0.0/16\"\n\
        [[firewall.rule]]\naction = \"allow\"\nport = 22\nproto = \"tcp\"\n";
    // The admin network is not let in by this order: refused, nothing changes.
    let p = profile(&sb, first);
    let out = sb.vakt(&["apply", "-p", &p, "--only", "firewall"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("is blocked by ufw rule `deny 22/tcp from 10.9.0.0/16`"), "{}", out.stdout);
    assert!(ufw_status(&sb).contains("inactive"));
    // The operator put the deny and the allow in place by hand; the profile then lists the
    // admin network's allow first.
    for cmd in [
        ["ufw", "deny", "proto", "tcp", "from", "10.9.0.0/16", "to", "any", "port", "22"],
        ["ufw", "allow", "proto", "tcp", "from", "any", "to", "any", "port", "22"],
    ] {
        assert_eq!(run(&mut sb.command(&cmd)).code, 0);
    }
    let p = profile(&sb, &first.replace("[[firewall.rule]]\naction = \"deny\"", "[[firewall.rule]]\naction = \"allow\"\nport = 22\nproto = \"tcp\"\nfrom = \"10.9.8.0/24\"\n[[firewall.rule]]\naction = \"deny\""));
    let done = quartet(&sb, &p);
    assert_eq!(done[0], "ufw insert 1 allow proto tcp from 10.9.8.0/24 to any port 22");
    let rules = std::fs::read_to_string(sb.file("/etc/ufw/user.rules")).expect("user.rules");
    let order: Vec<&str> = rules.lines().filter(|l| l.starts_with("### tuple ###")).collect();
    assert_eq!(
        order,
        [
            "### tuple ### allow tcp 22 0.0.0.0/0 any 10.9.8.0/24 in",
            "### tuple ### deny tcp 22 0.0.0.0/0 any 10.9.0.0/16 in",
            "### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in",
        ]
    );
}

/// Issue 21: a second, older vakt block in after.rules flushes DOCKER-USER after the real one
/// when ufw loads the file; it is drift, and apply leaves exactly one block, loaded.
#[test]
fn a_stale_second_block_in_after_rules_is_drift_and_goes() {
    if !ready() {
        return;
    }
    let sb = UfwSandbox::new();
    let governed = "[firewall]\npublished_ports = \"profile\"\n[[firewall.allow]]\nport = 22\n\
        [[firewall.allow]]\nport = 8080\ntarget = \"containers\"\nfrom = \"10.0.0.0/8\"\n";
    let p = profile(&sb, governed);
    assert_eq!(sb.vakt(&["apply", "-p", &p, "--only", "firewall"]).code, 0);
    let after = sb.file("/etc/ufw/after.rules");
    let good = std::fs::read_to_string(&after).expect("after.rules");
    // An older block (every published port open) left at the end, as a bad merge would.
    let begin = good.find("# BEGIN vakt published-ports").expect("block");
    let stale = good[begin..].replace(" -s 10.0.0.0/8", "").replace("--ctorigdstport 8080", "--ctorigdstport 1:65535");
    std::fs::write(&after, format!("{good}\n{stale}")).expect("write");
    assert_eq!(run(&mut sb.command(&["ufw", "reload"])).code, 0);
    assert!(!sb.iptables_save().contains("-s 10.0.0.0/8"), "the stale block won in the kernel");

    let check = sb.vakt(&["check", "-p", &p, "--only", "firewall", "--format", "json"]);
    assert_eq!(check.code, 1, "{}", check.stdout);
    assert_eq!(status_of(&json(&check), "firewall.published-ports.after.rules"), "drift", "{}", check.stdout);
    assert!(evidence(&json(&check), "firewall.published-ports.after.rules").contains("2 vakt blocks"));
    let apply = sb.vakt(&["apply", "-p", &p, "--only", "firewall"]);
    assert_eq!(apply.code, 0, "{}", apply.stdout);
    let text = std::fs::read_to_string(&after).expect("after.rules");
    assert_eq!(text.matches("# BEGIN vakt published-ports").count(), 1, "{text}");
    assert_eq!(text, good, "exactly the block the profile renders, where it stood");
    assert!(sb.iptables_save().contains("-A DOCKER-USER -s 10.0.0.0/8"), "the profile's block is loaded again");
    assert_eq!(sb.vakt(&["check", "-p", &p, "--only", "firewall"]).code, 0);
}
