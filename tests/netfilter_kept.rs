//! The tables' text kept between runs (src/netfilter/kept.rs) against the real kernel and
//! iptables-nft, in a private network namespace with the article's firewall loaded. Along
//! generated sequences of rule changes, read-only commands and traffic, after every check:
//! - each family's tool ran again exactly when that family's ruleset had changed, and not
//!   for traffic, which moves only counters;
//! - each kept text is what the tool prints at that moment, counters aside;
//! - the audit reads the same as a check with nothing kept.

mod common;

use common::netns::{ARTICLE, UfwSandbox};
use common::*;

fn ready() -> bool {
    require("root", is_root())
        && require("ufw, iptables, ip and curl", ["ufw", "iptables-save", "ip", "curl"].iter().all(|p| has(p)))
}

/// One step of a sequence: what it does, and which families' rulesets it changes.
struct Step {
    script: String,
    v4: bool,
    v6: bool,
}

/// The next step of a sequence; `forward` holds each family's FORWARD policy as set so far.
fn step(rng: &mut Rng, n: u64, forward: &mut [&'static str; 2]) -> Step {
    let port = 1000 + rng.next() % 60000;
    let (tool, v6) = if rng.next().is_multiple_of(3) { ("ip6tables", true) } else { ("iptables", false) };
    let changes = |script: String| Step { script, v4: !v6, v6 };
    let same = |script: String| Step { script, v4: false, v6: false };
    let chain = if v6 { "ufw6-user-input" } else { "ufw-user-input" };
    let lo = if v6 { "[::1]" } else { "127.0.0.1" };
    match rng.next() % 12 {
        // Traffic: a refused connection and a reply, through INPUT and OUTPUT: counters move.
        0 | 1 => same(format!("curl -s -m 1 http://{lo}:{port}/ || true; curl -s -m 1 http://{lo}:22/ || true")),
        2 => same(format!("{tool} -S >/dev/null; {tool}-save >/dev/null")),
        // Changed and changed back: the ruleset is as it was, handles and all.
        3 => same(format!(
            "{tool} -I {chain} -p tcp --dport {port} -j ACCEPT; {tool} -D {chain} -p tcp --dport {port} -j ACCEPT"
        )),
        4 => changes(format!("{tool} -I {chain} -p tcp --dport {port} -j ACCEPT")),
        5 => changes(format!("{tool} -A {chain} -p udp --dport {port} -m comment --comment 'step {n}' -j DROP")),
        // The first rule deleted and inserted back as it was: the same text, a new rule (a new
        // handle) to the kernel.
        6 => changes(format!(
            "r=$({tool} -S {chain} | sed -n 2p); {tool} -D {chain} 1; eval \"{tool} $(printf '%s' \"$r\" | sed 's/^-A \\([^ ]*\\)/-I \\1 1/')\""
        )),
        7 => {
            let policy = *rng.pick(&["ACCEPT", "DROP"]);
            let was = std::mem::replace(&mut forward[usize::from(v6)], policy);
            let script = format!("{tool} -P FORWARD {policy}");
            if was == policy { same(script) } else { changes(script) }
        }
        8 => changes(format!("{tool} -N vakt-step-{n}; {tool} -A vakt-step-{n} -j RETURN")),
        9 => changes(format!(
            "{tool} -t nat -A PREROUTING -p tcp --dport {port} -j DNAT --to-destination {}",
            if v6 { "[fd00::2]:80" } else { "10.9.0.2:80" }
        )),
        10 => changes(format!("{tool} -R {chain} 1 -p tcp --dport {port} -j ACCEPT")),
        // ufw itself, which writes both families.
        _ => Step { script: format!("ufw allow {port}/tcp >/dev/null"), v4: true, v6: true },
    }
}

/// The rules of a save: comments and the chains' counters left out.
fn rules_of(save: &str) -> Vec<String> {
    save.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.strip_prefix(':') {
            Some(_) => l.rsplit_once(" [").map_or(l, |(chain, _)| chain).to_string(),
            None => l.to_string(),
        })
        .collect()
}

/// The text kept for a family, past its stamp and key.
fn kept_text(sb: &UfwSandbox, v6: bool) -> Option<String> {
    let data = std::fs::read(sb.file(if v6 { "run/vakt/netfilter-ipv6" } else { "run/vakt/netfilter-ipv4" })).ok()?;
    let at = data.windows(3).position(|w| w == b"--\n")? + 3;
    let line = data[at..].iter().position(|b| *b == b'\n')? + at;
    let (len, _) = std::str::from_utf8(&data[at..line]).ok()?.split_once(' ')?;
    String::from_utf8(data.get(line + 1 + len.parse::<usize>().ok()?..)?.to_vec()).ok()
}

/// A sandbox with the article's firewall applied, and the profile's path.
fn applied() -> (UfwSandbox, String) {
    let sb = UfwSandbox::new();
    let profile = sb.file("profile.toml");
    std::fs::write(&profile, ARTICLE).expect("profile");
    let profile = profile.display().to_string();
    let applied = sb.vakt(&["apply", "-p", &profile, "--only", "firewall", "-q"]);
    assert_eq!(applied.code, 0, "{}{}", applied.stdout, applied.stderr);
    (sb, profile)
}

fn check(sb: &UfwSandbox, profile: &str) -> (serde_json::Value, Vec<String>) {
    let out = sb.vakt(&["check", "-p", profile, "--only", "firewall", "--format", "json"]);
    assert!(out.code == 0 || out.code == 1, "{}{}", out.stdout, out.stderr);
    let report = json(&out);
    let ran = ran(&report, "ip");
    (report, ran)
}

#[test]
fn a_kept_text_is_what_the_tool_prints_now() {
    if !ready() {
        return;
    }
    for seed in seeds("tests/fixtures/netfilter-kept-seeds.txt", "VAKT_NETFILTER_KEPT", 0x6e66_7461_626c_6573, 3) {
        let (sb, profile) = applied();
        check(&sb, &profile);
        let mut rng = Rng(seed);
        let mut forward = ["DROP"; 2];
        for n in 0..30 {
            let step = step(&mut rng, n, &mut forward);
            let done = run(&mut sb.command(&["sh", "-ec", &step.script]));
            assert_eq!(done.code, 0, "seed {seed:x} step {n}: {}\n{}", step.script, done.stderr);
            let (report, ran) = check(&sb, &profile);
            let context = format!("seed {seed:x} step {n}: {}", step.script);
            let mut expected: Vec<String> = [(step.v4, "iptables-save"), (step.v6, "ip6tables-save")]
                .iter()
                .filter(|(c, _)| *c)
                .map(|(_, t)| t.to_string())
                .collect();
            expected.sort();
            let mut ran = ran;
            ran.sort();
            assert_eq!(ran, expected, "{context}: the tools that ran are not those of the families that changed");
            for (v6, tool) in [(false, "iptables-save"), (true, "ip6tables-save")] {
                let now = run(&mut sb.command(&[tool])).stdout;
                let kept = kept_text(&sb, v6).unwrap_or_else(|| panic!("{context}: nothing kept for {tool}"));
                assert_eq!(
                    rules_of(&kept),
                    rules_of(&now),
                    "{context}: the kept {tool} text is not what it prints now"
                );
            }
            // The same audit with nothing kept.
            for family in ["ipv4", "ipv6"] {
                std::fs::remove_file(sb.file(&format!("run/vakt/netfilter-{family}"))).expect("remove the kept text");
            }
            let (fresh, ran) = check(&sb, &profile);
            assert_eq!(ran.len(), 2, "{context}: {ran:?}");
            assert_eq!(findings(&report), findings(&fresh), "{context}: the audit differs from one with nothing kept");
        }
    }
}

/// The text holds names the tool looks up in files of its own (a `-m devgroup` rule prints the
/// group's name from iproute2's table): a name added there is printed at the next check, not
/// the number the kept text still has.
#[test]
fn a_name_added_to_the_tools_tables_is_printed_at_once() {
    if !ready() || !require("/etc/iproute2/group", std::path::Path::new("/etc/iproute2/group").is_file()) {
        return;
    }
    let (sb, profile) = applied();
    let rule = run(&mut sb.command(&[
        "iptables",
        "-A",
        "ufw-user-input",
        "-m",
        "devgroup",
        "--src-group",
        "5",
        "-j",
        "ACCEPT",
    ]));
    assert_eq!(rule.code, 0, "{}", rule.stderr);
    check(&sb, &profile);
    let (_, again) = check(&sb, &profile);
    assert!(!again.contains(&"iptables-save".to_string()), "the ruleset is unchanged, yet the tool ran: {again:?}");
    assert!(kept_text(&sb, false).is_some_and(|t| t.contains("--src-group 0x5")), "{:?}", kept_text(&sb, false));

    // The same check with the group named, as an operator would add it to the table.
    let group = sb.file("group");
    let table = std::fs::read_to_string("/etc/iproute2/group").expect("the group table");
    std::fs::write(&group, format!("{table}5\ttrusted\n")).expect("named");
    let named = format!("mount --bind {} /etc/iproute2/group; exec \"$0\" \"$@\"", group.display());
    let out = run(&mut sb.command(&[
        "sh",
        "-ec",
        &named,
        env!("CARGO_BIN_EXE_vakt"),
        "check",
        "-p",
        &profile,
        "--only",
        "firewall",
        "--format",
        "json",
    ]));
    assert!(out.code == 0 || out.code == 1, "{}{}", out.stdout, out.stderr);
    let tools = ran(&json(&out), "ip");
    assert!(tools.contains(&"iptables-save".to_string()), "a name was added, yet the kept text was used: {tools:?}");
    let kept = kept_text(&sb, false).expect("kept");
    assert!(kept.contains("--src-group trusted"), "the kept text still prints the number:\n{kept}");
}
