//! ufw's `user.rules` and `user6.rules` written as ufw itself writes them, so that a first
//! apply converges every rule with one write and the one load `ufw --force enable` makes,
//! instead of one ufw process per rule. The text follows ufw 0.36's `_write_rules`: the chain
//! declarations, one block per rule (its `### tuple ###` line and the iptables lines
//! `_get_rules_from_formatted` derives), the logging rules of the log level and the default
//! policies, and the rate-limit chains. tests/ufw_files.rs proves it byte for byte against
//! the ufw CLI with generated rule lists, log levels and policies.

use crate::profile::{Action, Policy, Proto, Rule};

use super::model;

/// ufw's `LOGLEVEL` in ufw.conf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Off,
    Low,
    Medium,
    High,
    Full,
}

impl LogLevel {
    pub fn parse(word: &str) -> Option<LogLevel> {
        Some(match word {
            "off" => LogLevel::Off,
            "low" => LogLevel::Low,
            "medium" => LogLevel::Medium,
            "high" => LogLevel::High,
            "full" => LogLevel::Full,
            _ => return None,
        })
    }
}

/// What ufw's file depends on besides the rules: the log level and the default policies
/// (incoming, outgoing, routed) as /etc/default/ufw holds them.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub loglevel: LogLevel,
    pub policies: [Policy; 3],
}

const LIMIT: &str = " -m limit --limit 3/min --limit-burst 10";

/// The whole file for one family, holding `rules` (the profile's, in order) and nothing else.
pub fn render(rules: &[&Rule], v6: bool, layout: Layout) -> String {
    let p = if v6 { "ufw6" } else { "ufw" };
    let mut out = String::from("*filter\n");
    for chain in [
        "user-input",
        "user-output",
        "user-forward",
        "before-logging-input",
        "before-logging-output",
        "before-logging-forward",
        "user-logging-input",
        "user-logging-output",
        "user-logging-forward",
        "after-logging-input",
        "after-logging-output",
        "after-logging-forward",
        "logging-deny",
        "logging-allow",
        "user-limit",
        "user-limit-accept",
    ] {
        out.push_str(&format!(":{p}-{chain} - [0:0]\n"));
    }
    out.push_str("### RULES ###\n");
    for rule in rules {
        out.push_str(&block(rule, v6));
    }
    out.push_str("\n### END RULES ###\n\n### LOGGING ###\n");
    for line in logging(p, layout) {
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str("### END LOGGING ###\n\n### RATE LIMITING ###\n");
    if layout.loglevel != LogLevel::Off {
        out.push_str(&format!(
            "-A {p}-user-limit -m limit --limit 3/minute -j LOG --log-prefix \"[UFW LIMIT BLOCK] \"\n"
        ));
    }
    out.push_str(&format!(
        "-A {p}-user-limit -j REJECT\n-A {p}-user-limit-accept -j ACCEPT\n### END RATE LIMITING ###\nCOMMIT\n"
    ));
    out
}

/// One rule's block: a blank line, its tuple, and its iptables lines.
fn block(rule: &Rule, v6: bool) -> String {
    let any = model::any_net(v6).to_string();
    let src = rule.from.map_or_else(|| any.clone(), model::host_or_net);
    let port = rule.port_text();
    let mut out = format!("\n### tuple ### {} {} {port} {any} any {src} in", rule.action.as_str(), rule.proto.as_str());
    if let Some(c) = &rule.comment {
        out.push_str(" comment=");
        out.extend(c.bytes().map(|b| format!("{b:02x}")));
    }
    out.push('\n');
    let chain = if v6 { "ufw6-user-input" } else { "ufw-user-input" };
    let matches = |proto: &str| {
        let ports =
            if port.contains(':') { format!(" -m multiport --dports {port}") } else { format!(" --dport {port}") };
        // ufw leaves out a source of the whole family (`from 0.0.0.0/0`), as it does `any`.
        let from = if rule.from.is_some_and(|n| n.prefix_len() > 0) { format!(" -s {src}") } else { String::new() };
        format!("-A {chain} -p {proto}{ports}{from}")
    };
    let protos: &[&str] = match rule.proto {
        Proto::Tcp => &["tcp"],
        Proto::Udp => &["udp"],
        Proto::Both => &["tcp", "udp"],
    };
    for proto in protos {
        let m = matches(proto);
        match rule.action {
            Action::Allow => out.push_str(&format!("{m} -j ACCEPT\n")),
            Action::Deny => out.push_str(&format!("{m} -j DROP\n")),
            Action::Reject if *proto == "tcp" => out.push_str(&format!("{m} -j REJECT --reject-with tcp-reset\n")),
            Action::Reject => out.push_str(&format!("{m} -j REJECT\n")),
            Action::Limit => {
                let limit = if v6 { "ufw6-user-limit" } else { "ufw-user-limit" };
                out.push_str(&format!("{m} -m conntrack --ctstate NEW -m recent --set\n"));
                out.push_str(&format!(
                    "{m} -m conntrack --ctstate NEW -m recent --update --seconds 30 --hitcount 6 -j {limit}\n"
                ));
                out.push_str(&format!("{m} -j {limit}-accept\n"));
            }
        }
    }
    out
}

/// ufw's `_get_logging_rules` for one family, as `_write_rules` prints them (its `-D` rules
/// left out).
fn logging(p: &str, layout: Layout) -> Vec<String> {
    let level = layout.loglevel;
    let dirs = ["input", "output", "forward"];
    if level == LogLevel::Off {
        return dirs.iter().map(|d| format!("-I {p}-user-logging-{d} -j RETURN")).collect();
    }
    let limit = if level < LogLevel::High { LIMIT } else { "" };
    let mut lines = Vec::new();
    for (d, policy) in dirs.iter().zip(layout.policies) {
        let blocks = matches!(policy, Policy::Deny | Policy::Reject | Policy::Disabled);
        if blocks {
            lines.push(format!("-A {p}-after-logging-{d} -j LOG --log-prefix \"[UFW BLOCK] \"{limit}"));
        } else if level >= LogLevel::Medium {
            lines.push(format!("-A {p}-after-logging-{d} -j LOG --log-prefix \"[UFW ALLOW] \"{limit}"));
        }
    }
    if level < LogLevel::Medium {
        lines.push(format!("-I {p}-logging-deny -m conntrack --ctstate INVALID -j RETURN{limit}"));
    } else {
        lines.push(format!(
            "-A {p}-logging-deny -m conntrack --ctstate INVALID -j LOG --log-prefix \"[UFW AUDIT INVALID] \"{limit}"
        ));
    }
    lines.push(format!("-A {p}-logging-deny -j LOG --log-prefix \"[UFW BLOCK] \"{limit}"));
    lines.push(format!("-A {p}-logging-allow -j LOG --log-prefix \"[UFW ALLOW] \"{limit}"));
    if level >= LogLevel::Medium {
        let audit = match level {
            LogLevel::Medium => format!(" -m conntrack --ctstate NEW{LIMIT}"),
            LogLevel::High => LIMIT.to_string(),
            _ => String::new(),
        };
        for d in dirs {
            lines.push(format!("-I {p}-before-logging-{d} -j LOG --log-prefix \"[UFW AUDIT] \"{audit}"));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What ufw 0.36 wrote for `ufw allow proto tcp from any to any port 22 comment 'ssh x'`,
    /// `ufw limit proto tcp from 10.0.0.0/8 to any port 2000:2010` and `ufw deny proto udp
    /// from 192.0.2.7 to any port 53` at log level low, policies deny/allow/deny.
    const UFW_WROTE: &str = "*filter\n:ufw-user-input - [0:0]\n:ufw-user-output - [0:0]\n:ufw-user-forward - [0:0]\n\
:ufw-before-logging-input - [0:0]\n:ufw-before-logging-output - [0:0]\n:ufw-before-logging-forward - [0:0]\n\
:ufw-user-logging-input - [0:0]\n:ufw-user-logging-output - [0:0]\n:ufw-user-logging-forward - [0:0]\n\
:ufw-after-logging-input - [0:0]\n:ufw-after-logging-output - [0:0]\n:ufw-after-logging-forward - [0:0]\n\
:ufw-logging-deny - [0:0]\n:ufw-logging-allow - [0:0]\n:ufw-user-limit - [0:0]\n:ufw-user-limit-accept - [0:0]\n\
### RULES ###\n\n### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in comment=7373682078\n\
-A ufw-user-input -p tcp --dport 22 -j ACCEPT\n\n### tuple ### limit tcp 2000:2010 0.0.0.0/0 any 10.0.0.0/8 in\n\
-A ufw-user-input -p tcp -m multiport --dports 2000:2010 -s 10.0.0.0/8 -m conntrack --ctstate NEW -m recent --set\n\
-A ufw-user-input -p tcp -m multiport --dports 2000:2010 -s 10.0.0.0/8 -m conntrack --ctstate NEW -m recent --update --seconds 30 --hitcount 6 -j ufw-user-limit\n\
-A ufw-user-input -p tcp -m multiport --dports 2000:2010 -s 10.0.0.0/8 -j ufw-user-limit-accept\n\n\
### tuple ### deny udp 53 0.0.0.0/0 any 192.0.2.7 in\n-A ufw-user-input -p udp --dport 53 -s 192.0.2.7 -j DROP\n\n\
### END RULES ###\n\n### LOGGING ###\n\
-A ufw-after-logging-input -j LOG --log-prefix \"[UFW BLOCK] \" -m limit --limit 3/min --limit-burst 10\n\
-A ufw-after-logging-forward -j LOG --log-prefix \"[UFW BLOCK] \" -m limit --limit 3/min --limit-burst 10\n\
-I ufw-logging-deny -m conntrack --ctstate INVALID -j RETURN -m limit --limit 3/min --limit-burst 10\n\
-A ufw-logging-deny -j LOG --log-prefix \"[UFW BLOCK] \" -m limit --limit 3/min --limit-burst 10\n\
-A ufw-logging-allow -j LOG --log-prefix \"[UFW ALLOW] \" -m limit --limit 3/min --limit-burst 10\n\
### END LOGGING ###\n\n### RATE LIMITING ###\n\
-A ufw-user-limit -m limit --limit 3/minute -j LOG --log-prefix \"[UFW LIMIT BLOCK] \"\n\
-A ufw-user-limit -j REJECT\n-A ufw-user-limit-accept -j ACCEPT\n### END RATE LIMITING ###\nCOMMIT\n";

    #[test]
    fn renders_what_ufw_wrote() {
        let profile = crate::profile::parse(
            "t",
            "[firewall]\n[[firewall.rule]]\nport = 22\ncomment = \"ssh x\"\n\
             [[firewall.rule]]\naction = \"limit\"\nport = \"2000:2010\"\nfrom = \"10.0.0.0/8\"\n\
             [[firewall.rule]]\naction = \"deny\"\nproto = \"udp\"\nport = 53\nfrom = \"192.0.2.7\"\n",
        )
        .expect("valid");
        let rules: Vec<&Rule> = profile.firewall.as_ref().expect("firewall").host_rules().collect();
        let layout = Layout { loglevel: LogLevel::Low, policies: [Policy::Deny, Policy::Allow, Policy::Deny] };
        assert_eq!(render(&rules, false, layout), UFW_WROTE);
    }
}
