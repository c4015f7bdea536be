//! Issue 27: a first apply writes ufw's rule files at once (resource/firewall/rules_file.rs)
//! instead of running one ufw process per rule; this proves the files, ufw's own reading of
//! them and the kernel's tables equal what the ufw commands leave. Generated cases (rule
//! lists of allow, limit, deny and reject; tcp, udp and both; single ports and ranges;
//! IPv4 and IPv6 networks and single hosts; comments; every ufw log level; each default
//! policy; IPv6 on and off; ufw enabled after or left disabled) go twice through a fresh ufw in a network namespace: once as the
//! ufw commands plus `ufw --force enable`, once as `vakt apply`, which must take the one-write
//! way (no `ufw allow` runs).
//!
//! Deterministic from its seed: `VAKT_UFW_SEED` and `VAKT_UFW_CASES` (default 12). Seeds that
//! once differed are listed in `tests/fixtures/ufw-files-seeds.txt` and run first.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use common::netns::UfwSandbox;
use common::*;

const DEFAULT_SEED: u64 = 0x7566_772d_6669_6c65;
const NETS4: [&str; 6] = ["0.0.0.0/0", "10.0.0.0/8", "10.9.8.0/24", "10.9.8.7", "192.0.2.0/24", "198.51.100.0/25"];
const NETS6: [&str; 5] = ["::/0", "2001:db8::/32", "2001:db8:9::/48", "2001:db8:9::7", "fd00::/8"];
const COMMENTS: [&str; 4] = ["ssh", "web server", "gateway (OpenFaaS)", "swarm: managers, 2377"];

/// One profile rule: action, proto, port, from, comment.
type RuleSpec = (&'static str, &'static str, String, Option<&'static str>, Option<&'static str>);

#[derive(Debug)]
struct Case {
    seed: u64,
    loglevel: &'static str,
    ipv6: bool,
    /// Whether ufw is enabled after the rules: a disabled ufw keeps the files exactly as
    /// written (`enable` rewrites them from their tuples and loads their iptables lines).
    enable: bool,
    /// incoming, outgoing, routed, as ufw's commands name them.
    policies: [&'static str; 3],
    /// (action, proto, port, from, comment); when ufw is enabled the first is SSH from
    /// anywhere, so that the lockout guard lets every list through.
    rules: Vec<RuleSpec>,
}

fn generate(seed: u64) -> Case {
    let mut rng = Rng(seed);
    let loglevel = *rng.pick(&["off", "low", "low", "medium", "high", "full"]);
    let ipv6 = !rng.next().is_multiple_of(4);
    let enable = !rng.next().is_multiple_of(3);
    let policies = [
        *rng.pick(&["deny", "deny", "reject", "allow"]),
        *rng.pick(&["allow", "allow", "deny", "reject"]),
        *rng.pick(&["deny", "allow", "reject"]),
    ];
    // With ufw left disabled the guard has nothing to judge: half those lists have no rule
    // for every family (ufw then leaves the other family's file as it is).
    let ssh = enable || rng.next().is_multiple_of(2);
    let mut rules = Vec::new();
    let mut traffic: BTreeSet<(String, &str, Option<&str>)> = BTreeSet::new();
    if ssh {
        rules.push(("allow", "tcp", "22".to_string(), None, Some("ssh")));
        traffic.insert(("22".to_string(), "tcp", None));
    }
    for _ in 0..1 + rng.next() % 6 {
        let (action, port, proto) = rule_shape(
            &mut rng,
            &["allow", "allow", "limit", "deny", "reject"],
            &[80u16, 443, 2377, 4789, 7946, 8080],
            &["1000:2000", "6000:6007", "30000:32767"],
        );
        let from = match rng.next() % 3 {
            0 => None,
            1 => Some(*rng.pick(&NETS4)),
            _ if ipv6 => Some(*rng.pick(&NETS6)),
            _ => None,
        };
        let comment = rng.next().is_multiple_of(3).then(|| *rng.pick(&COMMENTS));
        if traffic.insert((port.clone(), proto, from)) {
            rules.push((action, proto, port, from, comment));
        }
    }
    Case { seed, loglevel, ipv6, enable, policies, rules }
}

/// ufw as the case wants it before any rule: log level, IPv6 and the default policies.
fn prepare(sb: &UfwSandbox, case: &Case) {
    let file = |p: &str| sb.file(p);
    let conf = std::fs::read_to_string(file("/etc/ufw/ufw.conf")).expect("ufw.conf");
    let conf: String =
        conf.lines().filter(|l| !l.starts_with("LOGLEVEL=")).map(|l| format!("{l}\n")).collect::<String>()
            + &format!("LOGLEVEL={}\n", case.loglevel);
    std::fs::write(file("/etc/ufw/ufw.conf"), conf).expect("ufw.conf");
    let word = |p: &str| match p {
        "allow" => "ACCEPT",
        "reject" => "REJECT",
        _ => "DROP",
    };
    let defaults = std::fs::read_to_string(file("/etc/default/ufw")).expect("defaults");
    let defaults: String = defaults
        .lines()
        .map(|l| match l.split('=').next() {
            Some("IPV6") => format!("IPV6={}", if case.ipv6 { "yes" } else { "no" }),
            Some("DEFAULT_INPUT_POLICY") => format!("DEFAULT_INPUT_POLICY=\"{}\"", word(case.policies[0])),
            Some("DEFAULT_OUTPUT_POLICY") => format!("DEFAULT_OUTPUT_POLICY=\"{}\"", word(case.policies[1])),
            Some("DEFAULT_FORWARD_POLICY") => format!("DEFAULT_FORWARD_POLICY=\"{}\"", word(case.policies[2])),
            _ => l.to_string(),
        })
        .map(|l| l + "\n")
        .collect();
    std::fs::write(file("/etc/default/ufw"), defaults).expect("defaults");
}

fn profile(case: &Case) -> String {
    let [incoming, outgoing, routed] = case.policies;
    let mut t = format!(
        "[firewall]\nenabled = {}\nincoming = \"{incoming}\"\noutgoing = \"{outgoing}\"\nrouted = \"{routed}\"\n",
        case.enable
    );
    for (action, proto, port, from, comment) in &case.rules {
        t.push_str(&format!(
            "[[firewall.rule]]\naction = \"{action}\"\nproto = \"{proto}\"\nport = \"{port}\"\nfrom = \"{}\"\n",
            from.unwrap_or("any")
        ));
        if let Some(c) = comment {
            t.push_str(&format!("comment = \"{c}\"\n"));
        }
    }
    t
}

/// What an operator would type, rule by rule, then `enable`.
fn commands(case: &Case) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (action, proto, port, from, comment) in &case.rules {
        let mut argv = vec!["ufw".to_string(), action.to_string()];
        if *proto != "both" {
            argv.extend(["proto".into(), proto.to_string()]);
        }
        argv.extend([
            "from".into(),
            from.unwrap_or("any").into(),
            "to".into(),
            "any".into(),
            "port".into(),
            port.clone(),
        ]);
        if let Some(c) = comment {
            argv.extend(["comment".into(), c.to_string()]);
        }
        out.push(argv);
    }
    if case.enable {
        out.push(["ufw", "--force", "enable"].map(String::from).to_vec());
    }
    out
}

/// Both rule files (text and mode), ufw's own reading of them, and the kernel's tables (with
/// ufw disabled, only its chains: ufw's capability probe leaves an empty filter table behind).
fn state(sb: &UfwSandbox, enabled: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for f in ["/etc/ufw/user.rules", "/etc/ufw/user6.rules"] {
        let path = sb.file(f);
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0);
        out.push((format!("{f} (mode {mode:o})"), std::fs::read_to_string(&path).unwrap_or_default()));
    }
    out.push(("ufw status verbose".into(), run(&mut sb.command(&["ufw", "status", "verbose"])).stdout));
    let tables = sb.iptables_save();
    let tables = if enabled { tables } else { tables.lines().filter(|l| l.contains("ufw")).collect() };
    out.push(("iptables-save, ip6tables-save".into(), tables));
    out
}

fn first_difference(a: &str, b: &str) -> String {
    a.lines()
        .zip(b.lines())
        .enumerate()
        .find(|(_, (x, y))| x != y)
        .map_or_else(|| "one is longer".into(), |(i, (x, y))| format!("line {}: ufw `{x}`, vakt `{y}`", i + 1))
}

#[test]
fn the_one_write_equals_what_the_ufw_commands_leave() {
    if !require("root", is_root()) || !require("ufw and iptables", has("ufw") && has("iptables-save")) {
        return;
    }
    let mut failed = Vec::new();
    let cases: Vec<Case> =
        seeds("tests/fixtures/ufw-files-seeds.txt", "VAKT_UFW", DEFAULT_SEED, 12).into_iter().map(generate).collect();
    for case in &cases {
        let by_ufw = UfwSandbox::new();
        prepare(&by_ufw, case);
        for argv in commands(case) {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let out = run(&mut by_ufw.command(&argv));
            assert_eq!(out.code, 0, "{argv:?}: {}{}", out.stdout, out.stderr);
        }

        let by_vakt = UfwSandbox::new();
        prepare(&by_vakt, case);
        let p = by_vakt.root().join("profile.toml");
        std::fs::write(&p, profile(case)).expect("profile");
        let apply = by_vakt.vakt(&["apply", "-p", &p.display().to_string(), "--only", "firewall", "--format", "json"]);
        assert_eq!(apply.code, 0, "{case:?}\n{}{}", apply.stdout, apply.stderr);
        let ran = ran(&json(&apply), "ufw");
        let load: &[&str] = if case.enable { &["ufw --force enable"] } else { &[] };
        assert_eq!(ran, load, "{case:?}: at most one load, no ufw process per rule");

        for ((what, want), (_, got)) in state(&by_ufw, case.enable).iter().zip(state(&by_vakt, case.enable)) {
            if *want != got {
                failed.push(format!(
                    "seed {:x} ({case:?}): {what} differs: {}",
                    case.seed,
                    first_difference(want, &got)
                ));
            }
        }
    }
    assert!(failed.is_empty(), "{} of {} cases differ:\n{}", failed.len(), cases.len(), failed.join("\n"));
    eprintln!("{} cases: the one write equals the ufw commands", cases.len());
}
