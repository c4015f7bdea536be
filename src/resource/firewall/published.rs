//! The vakt block in ufw's `after.rules`/`after6.rules` that makes Docker-published ports obey
//! the profile (`[firewall] published_ports = "profile"`), and the reading of the live
//! `DOCKER-USER` chain that proves it is loaded. Pure functions of strings.
//!
//! Why a block in after.rules: Docker DNATs a published port in PREROUTING, so the packet
//! never meets ufw's INPUT rules; it is accepted in FORWARD by Docker's own chains, which come
//! before ufw's (moby/moby#4737, moby/moby#22054). Docker keeps `FORWARD -j DOCKER-USER` first
//! and never flushes that chain; ufw restores after.rules with `iptables-restore -n`, where a
//! `:CHAIN` line flushes the chain, so every ufw start or reload rewrites DOCKER-USER whole,
//! and a Docker restart leaves it alone. This is the approach of ufw's own documentation for
//! routed traffic and of the ufw-docker project.

use crate::profile::{Action, Firewall, Policy, Proto, Rule, Target};

pub const BEGIN: &str = "# BEGIN vakt published-ports";
pub const END: &str = "# END vakt published-ports";
/// The comment on every rule of the block, so that `iptables -S` shows whose rules they are
/// and a check can tell them from an operator's.
const MARK: &str = "-m comment --comment vakt";

/// Docker's bridges: the default one, swarm's gateway bridge and user-defined networks.
const BRIDGES: [&str; 3] = ["docker0", "docker_gwbridge", "br-+"];

/// The rules of the block for one family, as `iptables-save` prints them back.
pub fn chain_rules(want: &Firewall, v6: bool) -> Vec<String> {
    let ufw_forward = if v6 { "ufw6-user-forward" } else { "ufw-user-forward" };
    let rule = |spec: &str| format!("-A DOCKER-USER {spec}");
    let mut out = Vec::new();
    // Replies and related traffic (ICMP errors) of connections already let through.
    out.push(rule(&format!("{MARK} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN")));
    // Containers among themselves and out to the world: Docker's own rules judge those.
    for bridge in BRIDGES {
        out.push(rule(&format!("-i {bridge} {MARK} -j RETURN")));
    }
    for r in want.rules.iter().filter(|r| r.target == Target::Containers) {
        if r.from.is_some_and(|n| n.addr().is_ipv6() != v6) {
            continue;
        }
        let src = r.from.map(|n| format!("-s {n} ")).unwrap_or_default();
        let protos: &[&str] = match r.proto {
            Proto::Tcp => &["tcp"],
            Proto::Udp => &["udp"],
            Proto::Both => &["tcp", "udp"],
        };
        for proto in protos {
            // The DNATed packet carries the container's port; the published one, which the
            // profile names, is the connection's original destination port.
            let ports = r.port_text();
            let verdict = verdict(r, proto, v6);
            out.push(rule(&format!(
                "{src}-p {proto} {MARK} -m conntrack --ctstate DNAT --ctorigdstport {ports} -j {verdict}"
            )));
        }
    }
    // ufw's own route rules (`ufw route allow ...`) still apply; they match the port the
    // container sees.
    out.push(rule(&format!("{MARK} -j {ufw_forward}")));
    if let Some(verdict) = routed_verdict(want.routed, v6) {
        // Everything else from outside that would reach a container: published ports
        // (DNATed) and packets routed straight to a container's address.
        out.push(rule(&format!("{MARK} -m conntrack --ctstate DNAT -j {verdict}")));
        for bridge in BRIDGES {
            out.push(rule(&format!("-o {bridge} {MARK} -j {verdict}")));
        }
    }
    out.push(rule(&format!("{MARK} -j RETURN")));
    out
}

fn verdict(r: &Rule, proto: &str, v6: bool) -> String {
    match r.action {
        Action::Allow | Action::Limit => "RETURN".into(),
        Action::Deny => "DROP".into(),
        Action::Reject if proto == "tcp" => "REJECT --reject-with tcp-reset".into(),
        Action::Reject if v6 => "REJECT --reject-with icmp6-port-unreachable".into(),
        Action::Reject => "REJECT --reject-with icmp-port-unreachable".into(),
    }
}

/// What happens to routed traffic no rule allowed: ufw's `routed` policy.
fn routed_verdict(policy: Policy, v6: bool) -> Option<&'static str> {
    match policy {
        Policy::Allow => None,
        Policy::Deny | Policy::Disabled => Some("DROP"),
        Policy::Reject if v6 => Some("REJECT --reject-with icmp6-port-unreachable"),
        Policy::Reject => Some("REJECT --reject-with icmp-port-unreachable"),
    }
}

/// The whole block for one family, markers included.
pub fn block(want: &Firewall, v6: bool) -> String {
    let ufw_forward = if v6 { "ufw6-user-forward" } else { "ufw-user-forward" };
    let mut text = format!(
        "{BEGIN}\n\
         # Managed by vakt ([firewall] published_ports = \"profile\"): edit the profile, not this block.\n\
         # Sends Docker's DOCKER-USER chain through the profile's container rules and ufw's route\n\
         # rules, so that only what the profile allows from outside reaches a published port.\n\
         *filter\n:DOCKER-USER - [0:0]\n:{ufw_forward} - [0:0]\n"
    );
    for line in chain_rules(want, v6) {
        text.push_str(&line);
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    text.push_str(END);
    text.push('\n');
    text
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{path} has `{BEGIN}` without `{END}` after it; restore the file from {path}.vakt-prev or remove the partial block"
)]
pub struct Unterminated {
    pub path: String,
}

/// The file with vakt's block replaced by `block` (`None`: removed), everything else kept.
/// Every vakt block in the file goes (an older copy left behind would flush DOCKER-USER after
/// the real one when ufw loads the file); the new block takes the first one's place.
pub fn splice(text: &str, block: Option<&str>, path: &str) -> Result<String, Unterminated> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut kept: Vec<&str> = Vec::with_capacity(lines.len());
    let mut first_at = None;
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_end() != BEGIN {
            kept.push(lines[i]);
            i += 1;
            continue;
        }
        // The block's own END, before any other block begins.
        let end = lines[i + 1..]
            .iter()
            .position(|l| l.trim_end() == END || l.trim_end() == BEGIN)
            .map(|e| i + 1 + e)
            .filter(|e| lines[*e].trim_end() == END)
            .ok_or_else(|| Unterminated { path: path.to_string() })?;
        // Take back the blank line vakt put before its block (never one before the first
        // block's place).
        if kept.last().is_some_and(|l| l.trim().is_empty()) && first_at.is_none_or(|f| kept.len() > f) {
            kept.pop();
        }
        first_at.get_or_insert(kept.len());
        i = end + 1;
    }
    let mut out = String::with_capacity(text.len() + 2048);
    let at = first_at.unwrap_or(kept.len());
    out.push_str(&kept[..at].concat());
    if let Some(b) = block {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(b);
    }
    out.push_str(&kept[at..].concat());
    Ok(out)
}

/// Lines outside vakt's block that declare `DOCKER-USER` (1-based line numbers): ufw loads the
/// file top to bottom and each declaration flushes the chain, so such a line decides what
/// the chain holds, not vakt's block.
pub fn foreign_docker_user(text: &str) -> Vec<usize> {
    let mut inside = false;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        match line.trim_end() {
            BEGIN => inside = true,
            END => inside = false,
            l if !inside
                && (l.starts_with(":DOCKER-USER ")
                    || l.starts_with("-F DOCKER-USER")
                    || l.starts_with("-A DOCKER-USER")) =>
            {
                out.push(n + 1)
            }
            _ => {}
        }
    }
    out
}

/// What the kernel's filter table holds for one family (the `*filter` part of `iptables-save`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Netfilter {
    /// ufw's rules are loaded: its user chains exist.
    pub ufw_loaded: bool,
    /// `None` when the chain does not exist.
    pub docker_user: Option<Vec<String>>,
    /// FORWARD's first rule sends traffic to DOCKER-USER.
    pub docker_user_hooked: bool,
    /// ufw's part of the table, as a revert loads it back.
    pub ufw: super::snapshot::UfwTable,
}

pub fn parse_save(text: &str, v6: bool) -> Netfilter {
    let user_input = if v6 { ":ufw6-user-input " } else { ":ufw-user-input " };
    let mut nf = Netfilter::default();
    let mut first_forward = None;
    let mut filter = false;
    for line in text.lines() {
        if let Some(table) = line.strip_prefix('*') {
            filter = table.trim_end() == "filter";
        }
        if !filter {
            continue;
        }
        nf.ufw.take(line);
        if line.starts_with(user_input) {
            nf.ufw_loaded = true;
        } else if line.starts_with(":DOCKER-USER ") {
            nf.docker_user.get_or_insert_with(Vec::new);
        } else if line.starts_with("-A DOCKER-USER ") {
            nf.docker_user.get_or_insert_with(Vec::new).push(line.to_string());
        } else if line.starts_with("-A FORWARD ") && first_forward.is_none() {
            first_forward = Some(line);
        }
    }
    nf.docker_user_hooked = first_forward == Some("-A FORWARD -j DOCKER-USER");
    nf
}

/// Whether the loaded DOCKER-USER is the block's: its rules in order, then at most Docker's
/// own `-j RETURN`, which dockerd appends when it starts and finds none.
pub fn loaded_matches(loaded: &[String], want: &[String]) -> bool {
    loaded.len() >= want.len()
        && loaded[..want.len()] == *want
        && loaded[want.len()..].iter().all(|l| l == "-A DOCKER-USER -j RETURN")
}

/// Whether any of the rules is vakt's (left over from a block since removed).
pub fn has_vakt_rules(loaded: &[String]) -> bool {
    loaded.iter().any(|l| l.contains(MARK))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firewall(text: &str) -> Firewall {
        crate::profile::parse("t", text).expect("valid").firewall.expect("firewall")
    }

    const PROFILE: &str = "[firewall]\npublished_ports = \"profile\"\n[[firewall.allow]]\nport = 22\n\
        [[firewall.allow]]\nport = 8080\ntarget = \"containers\"\nfrom = \"10.0.0.0/8\"\n\
        [[firewall.rule]]\naction = \"reject\"\nport = 9000\nproto = \"both\"\ntarget = \"containers\"\n";

    #[test]
    fn container_rules_name_the_published_port_and_host_rules_stay_out() {
        let want = firewall(PROFILE);
        let v4 = chain_rules(&want, false);
        assert!(v4.contains(&"-A DOCKER-USER -s 10.0.0.0/8 -p tcp -m comment --comment vakt -m conntrack --ctstate DNAT --ctorigdstport 8080 -j RETURN".to_string()), "{v4:#?}");
        assert!(v4.contains(&"-A DOCKER-USER -p udp -m comment --comment vakt -m conntrack --ctstate DNAT --ctorigdstport 9000 -j REJECT --reject-with icmp-port-unreachable".to_string()));
        assert!(!v4.iter().any(|l| l.contains(" 22 ")), "the host's ssh rule is ufw's, not the block's");
        let v6 = chain_rules(&want, true);
        assert!(!v6.iter().any(|l| l.contains("10.0.0.0/8")), "an IPv4 source stays out of after6.rules");
        assert!(v6.iter().any(|l| l.contains("-j ufw6-user-forward")));
        // Replies first, the drop of everything else from outside last but one.
        assert!(v4[0].contains("RELATED,ESTABLISHED"));
        assert_eq!(v4.last().map(String::as_str), Some("-A DOCKER-USER -m comment --comment vakt -j RETURN"));
        assert!(v4.iter().any(|l| l.ends_with("--ctstate DNAT -j DROP")));
    }

    #[test]
    fn routed_allow_leaves_published_ports_open() {
        let want = firewall(&PROFILE.replace("[firewall]\n", "[firewall]\nrouted = \"allow\"\n"));
        assert!(!chain_rules(&want, false).iter().any(|l| l.contains("DROP")));
    }

    #[test]
    fn splice_adds_replaces_and_removes_keeping_the_rest() {
        let want = firewall(PROFILE);
        let stock = "*filter\n:ufw-after-input - [0:0]\nCOMMIT\n";
        let b = block(&want, false);
        let with = splice(stock, Some(&b), "after.rules").expect("splice");
        assert!(with.starts_with(stock) && with.ends_with(&b));
        assert_eq!(splice(&with, Some(&b), "after.rules").expect("again"), with, "idempotent");
        let other = block(&firewall("[firewall]\npublished_ports = \"profile\"\n"), false);
        let replaced = splice(&with, Some(&other), "after.rules").expect("replace");
        assert!(replaced.starts_with(stock) && replaced.ends_with(&other) && !replaced.contains("8080"));
        assert_eq!(splice(&with, None, "after.rules").expect("remove"), stock, "removal restores the file");
        // A second, older block goes too: exactly one is left, where the first one stood.
        let twice = format!("{with}\n{other}");
        assert_eq!(splice(&twice, Some(&b), "after.rules").expect("twice"), with);
        assert_eq!(splice(&twice, None, "after.rules").expect("twice"), stock);
        let operator = format!("{stock}*filter\n:DOCKER-USER - [0:0]\nCOMMIT\n");
        assert_eq!(foreign_docker_user(&operator), vec![5]);
        assert!(foreign_docker_user(&with).is_empty(), "vakt's own block is not foreign");
        // Two blank lines and two blocks back to back (a panic once), an empty file, and a
        // block without its END before a whole one.
        let packed = format!("COMMIT\n\n\n{b}{b}");
        assert_eq!(splice(&packed, Some(&b), "after.rules").expect("packed"), format!("COMMIT\n\n\n{b}"));
        let fresh = splice("", Some(&b), "after.rules").expect("empty");
        assert_eq!(splice(&fresh, Some(&b), "after.rules").expect("again"), fresh, "stable from an empty file");
        let half = format!("{stock}{BEGIN}\n*filter\n{b}");
        assert!(splice(&half, None, "after.rules").is_err(), "an unterminated block is not closed by the next one");
        let broken = format!("{stock}{BEGIN}\n*filter\n");
        let err = splice(&broken, None, "/etc/ufw/after.rules").expect_err("unterminated");
        assert!(err.to_string().contains("/etc/ufw/after.rules.vakt-prev"), "{err}");
    }

    #[test]
    fn reads_the_live_chain_and_tolerates_dockers_return() {
        let want = firewall(PROFILE);
        let rules = chain_rules(&want, false);
        let mut save = String::from(
            "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:DOCKER-USER - [0:0]\n:ufw-user-input - [0:0]\n",
        );
        save.push_str("-A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n");
        for r in &rules {
            save.push_str(r);
            save.push('\n');
        }
        save.push_str("-A DOCKER-USER -j RETURN\nCOMMIT\n");
        let nf = parse_save(&save, false);
        assert!(nf.ufw_loaded && nf.docker_user_hooked);
        let loaded = nf.docker_user.clone().expect("chain");
        assert!(loaded_matches(&loaded, &rules) && has_vakt_rules(&loaded));
        assert!(!loaded_matches(&loaded[1..], &rules));
        let bare = parse_save("*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j ufw-before-forward\nCOMMIT\n", false);
        assert!(!bare.ufw_loaded && !bare.docker_user_hooked && bare.docker_user.is_none());

        // The whole save (every table, as the run shares it): only `*filter` counts. The
        // mangle and nat tables have FORWARD, INPUT and policies of their own.
        let other = "*mangle\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j MARK --set-mark 1\nCOMMIT\n\
                     *nat\n:INPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n-A DOCKER -p tcp -j DNAT --to 1.2.3.4\nCOMMIT\n";
        let whole = parse_save(&format!("{other}{save}{}", other.replace("mangle", "raw")), false);
        assert_eq!(whole, nf, "the other tables change nothing");
        assert_eq!(whole.ufw.policies, [":INPUT DROP", ":FORWARD DROP"]);
    }
}
