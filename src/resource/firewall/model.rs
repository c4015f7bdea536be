//! ufw's rules as typed values and the one evaluation of a packet against them: which rule
//! matches first and what the verdict is. The SSH guard, prune, the order check and the
//! exposure audit all ask this module, so that what vakt predicts is what netfilter does
//! (a differential test in `tests/firewall_model.rs` holds it to real packets).
//!
//! The semantics modelled are ufw's INPUT path for new TCP and UDP connections from another
//! host: `ufw-before-input` accepts loopback, replies and ICMP (nothing a new connection from
//! elsewhere meets), then `ufw-user-input` holds the user rules in the order of `user.rules`
//! (IPv4) or `user6.rules` (IPv6), the first match deciding; what no rule matches gets the
//! incoming policy. `limit` admits (it denies only an address that opened 6 connections in
//! 30 s). Route rules (`ufw route`) judge forwarded traffic and never an INPUT packet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::profile::{Action, Policy, Proto, Rule};

/// A port set as ufw writes it in a tuple: `any`, `22`, `6000:6007` or `80,443,8000:8010`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ports {
    Any,
    List(Vec<(u16, u16)>),
}

impl Ports {
    pub fn parse(text: &str) -> Option<Ports> {
        if text == "any" {
            return Some(Ports::Any);
        }
        let range = |t: &str| -> Option<(u16, u16)> {
            let (a, b) = t.split_once(':').unwrap_or((t, t));
            let (a, b) = (a.parse().ok()?, b.parse().ok()?);
            (a <= b).then_some((a, b))
        };
        text.split(',').map(range).collect::<Option<Vec<_>>>().map(Ports::List)
    }

    pub fn contains(&self, port: u16) -> bool {
        match self {
            Ports::Any => true,
            Ports::List(l) => l.iter().any(|(a, b)| (*a..=*b).contains(&port)),
        }
    }
}

impl std::fmt::Display for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ports::Any => f.write_str("any"),
            Ports::List(l) => {
                let parts: Vec<String> =
                    l.iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}:{b}") }).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

/// Whether a rule logs, the suffix of its action word (`allow_log`, `deny_log-all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Log {
    Off,
    New,
    All,
}

impl Log {
    pub fn word(self) -> Option<&'static str> {
        match self {
            Log::Off => None,
            Log::New => Some("log"),
            Log::All => Some("log-all"),
        }
    }
}

/// Where a rule applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Incoming traffic to the host on any interface: what vakt writes.
    Input,
    /// Incoming traffic on one interface (`in on eth0`).
    Interface(String),
    /// Forwarded traffic (`ufw route ...`): never judges a packet to the host.
    Route,
    /// Outgoing traffic (`out`): never judges an incoming packet.
    Output,
}

/// One rule as ufw records it in `user.rules`/`user6.rules`:
/// `### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in comment=737368`, typed. Addresses
/// are normalised (ufw writes one host as `10.0.1.7`, here it is `10.0.1.7/32`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UfwRule {
    pub action: Action,
    pub log: Log,
    /// `Both` is ufw's `any` (tcp, udp and every other protocol).
    pub proto: Proto,
    /// A protocol vakt does not model (`esp`, `gre`, ...): the rule never matches TCP or UDP.
    pub other_proto: Option<String>,
    pub dports: Ports,
    pub dst: IpNet,
    pub sports: Ports,
    pub src: IpNet,
    pub v6: bool,
    pub scope: Scope,
    /// The application profile the rule came from (`OpenSSH`): never vakt's.
    pub app: Option<String>,
    /// The tuple as ufw wrote it (for messages).
    pub text: String,
}

/// A tuple line ufw wrote that vakt cannot read: kept, never touched, and reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub text: String,
    pub v6: bool,
}

pub fn any_net(v6: bool) -> IpNet {
    if v6 {
        IpNet::V6(Ipv6Net::new(Ipv6Addr::UNSPECIFIED, 0).expect("/0 is a prefix"))
    } else {
        IpNet::V4(Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).expect("/0 is a prefix"))
    }
}

/// A network as ufw writes it: `0.0.0.0/0`, `10.0.0.0/8`, or one host without a mask.
fn parse_net(text: &str, v6: bool) -> Option<IpNet> {
    let net = text.parse::<IpNet>().or_else(|_| text.parse::<IpAddr>().map(IpNet::from)).ok()?;
    (net.addr().is_ipv6() == v6).then(|| net.trunc())
}

/// Parses the tuple comments of a ufw rules file, in file order (which is netfilter's order).
pub fn parse_rules(text: &str, v6: bool) -> (Vec<UfwRule>, Vec<Unreadable>) {
    let mut rules = Vec::new();
    let mut unreadable = Vec::new();
    for t in text.lines().filter_map(|l| l.strip_prefix("### tuple ### ")) {
        match parse_tuple(t, v6) {
            Some(r) => rules.push(r),
            None => unreadable.push(Unreadable { text: t.to_string(), v6 }),
        }
    }
    (rules, unreadable)
}

fn parse_tuple(t: &str, v6: bool) -> Option<UfwRule> {
    let f: Vec<&str> = t.split_whitespace().filter(|w| !w.starts_with("comment=")).collect();
    // action proto dport dst sport src [dapp sapp] direction
    let (core, apps, direction) = match f.len() {
        7 => (&f[..6], None, f[6]),
        9 => (&f[..6], Some((f[6], f[7])), f[8]),
        _ => return None,
    };
    let (route, word) = match core[0].strip_prefix("route:") {
        Some(w) => (true, w),
        None => (false, core[0]),
    };
    let (action, log) = match word.split_once('_') {
        Some((a, "log")) => (a, Log::New),
        Some((a, "log-all")) => (a, Log::All),
        Some(_) => return None,
        None => (word, Log::Off),
    };
    let action = Action::from_word(action)?;
    let (proto, other_proto) = match core[1] {
        "tcp" => (Proto::Tcp, None),
        "udp" => (Proto::Udp, None),
        "any" => (Proto::Both, None),
        other => (Proto::Both, Some(other.to_string())),
    };
    let scope = match (route, direction) {
        (true, _) => Scope::Route,
        (false, "in") => Scope::Input,
        (false, "out") => Scope::Output,
        (false, d) => match d.strip_prefix("in_") {
            Some(iface) if !iface.is_empty() => Scope::Interface(iface.to_string()),
            _ if d.starts_with("out_") => Scope::Output,
            _ => return None,
        },
    };
    let app = apps.and_then(|(dapp, sapp)| {
        let name = if dapp != "-" { dapp } else { sapp };
        (name != "-").then(|| name.replace("%20", " "))
    });
    Some(UfwRule {
        action,
        log,
        proto,
        other_proto,
        dports: Ports::parse(core[2])?,
        dst: parse_net(core[3], v6)?,
        sports: Ports::parse(core[4])?,
        src: parse_net(core[5], v6)?,
        v6,
        scope,
        app,
        text: t.to_string(),
    })
}

/// A new connection from another host to this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    /// `None`: to whichever of the host's addresses; a rule naming one address may or may not
    /// match.
    pub dst: Option<IpAddr>,
    pub dport: u16,
    /// Tcp or Udp.
    pub proto: Proto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    No,
    Yes,
    /// Depends on what the model does not know (the interface, the destination address).
    Maybe,
}

impl UfwRule {
    fn matches(&self, p: &Packet) -> Match {
        let proto = self.proto == Proto::Both || self.proto == p.proto;
        let basic = self.other_proto.is_none()
            && self.v6 == p.src.is_ipv6()
            && proto
            && self.dports.contains(p.dport)
            // A new connection's source port is the client's choice: a rule that names one
            // matches some connections and not others.
            && self.src.contains(&p.src);
        if !basic || matches!(self.scope, Scope::Route | Scope::Output) {
            return Match::No;
        }
        let dst = match p.dst {
            _ if self.dst.prefix_len() == 0 => Match::Yes,
            Some(d) if self.dst.contains(&d) => Match::Yes,
            Some(_) => Match::No,
            None => Match::Maybe,
        };
        match (&self.scope, &self.sports, dst) {
            (_, _, Match::No) => Match::No,
            (Scope::Interface(_), _, _) | (_, Ports::List(_), _) | (_, _, Match::Maybe) => Match::Maybe,
            _ => Match::Yes,
        }
    }

    /// Whether this is the profile's rule `rule` for its family: the same action and the same
    /// traffic (typed: `10.0.1.7` and `10.0.1.7/32` are one network).
    pub fn is(&self, rule: &Rule) -> bool {
        self.action == rule.action && self.same_traffic(rule)
    }

    /// The same traffic as the profile's `rule` in this family, whatever the action: adding
    /// `rule` would *replace* this one ("Rule updated").
    pub fn same_traffic(&self, rule: &Rule) -> bool {
        self.same_traffic_as(&from_profile(rule, self.v6))
    }

    /// The same traffic whatever the action and logging, as ufw judges it: it keeps one rule
    /// per traffic and family.
    pub fn same_traffic_as(&self, other: &UfwRule) -> bool {
        self.v6 == other.v6
            && self.scope == other.scope
            && self.app == other.app
            && self.other_proto == other.other_proto
            && self.proto == other.proto
            && self.dports == other.dports
            && self.dst == other.dst
            && self.sports == other.sports
            && self.src == other.src
    }

    /// A rule vakt could have written: it may prune it or judge its order.
    pub fn is_plain(&self) -> bool {
        self.scope == Scope::Input && self.app.is_none() && self.other_proto.is_none()
    }

    pub fn describe(&self) -> String {
        let family = if self.v6 { " (v6)" } else { "" };
        let log = self.log.word().map(|w| format!(" {w}")).unwrap_or_default();
        let proto = self.other_proto.as_deref().unwrap_or(self.proto.as_str());
        let to = if self.dst.prefix_len() == 0 { String::new() } else { format!(" to {}", self.dst) };
        let sport = if self.sports == Ports::Any { String::new() } else { format!(" port {}", self.sports) };
        let src = if self.src.prefix_len() == 0 { "anywhere".to_string() } else { host_or_net(self.src) };
        let app = self.app.as_ref().map(|a| format!(" ({a})")).unwrap_or_default();
        let scope = match &self.scope {
            Scope::Input => String::new(),
            Scope::Interface(i) => format!("in on {i} "),
            Scope::Route => "route ".to_string(),
            Scope::Output => "out ".to_string(),
        };
        format!("{scope}{}{log} {}/{proto} from {src}{sport}{to}{app}{family}", self.action.as_str(), self.dports)
    }

    /// The `ufw delete` command for this rule, when vakt can express it: for both families
    /// (`from any`, which deletes the IPv4 and the IPv6 rule at once), or for this rule's family
    /// only (`from 0.0.0.0/0` or `from ::/0`).
    pub fn delete_command(&self, both_families: bool) -> Option<Vec<String>> {
        if !self.is_plain() {
            return None;
        }
        let mut argv = vec!["ufw".to_string(), "delete".into(), self.action.as_str().into()];
        argv.extend(self.log.word().map(String::from));
        if self.proto != Proto::Both {
            argv.extend(["proto".into(), self.proto.as_str().into()]);
        }
        let net = |n: IpNet| if n.prefix_len() == 0 { "any".to_string() } else { host_or_net(n) };
        let src = if self.src.prefix_len() == 0 && !both_families { self.src.to_string() } else { net(self.src) };
        argv.extend(["from".into(), src]);
        if self.sports != Ports::Any {
            argv.extend(["port".into(), self.sports.to_string()]);
        }
        argv.extend(["to".into(), net(self.dst)]);
        if self.dports != Ports::Any {
            argv.extend(["port".into(), self.dports.to_string()]);
        }
        Some(argv)
    }
}

/// A network as an operator writes it: one host without its mask.
pub fn host_or_net(n: IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() { n.addr().to_string() } else { n.to_string() }
}

/// The rule the profile means, as ufw will hold it for one family.
pub fn from_profile(rule: &Rule, v6: bool) -> UfwRule {
    UfwRule {
        action: rule.action,
        log: Log::Off,
        proto: rule.proto,
        other_proto: None,
        dports: Ports::List(vec![rule.ports]),
        dst: any_net(v6),
        sports: Ports::Any,
        src: rule.from.unwrap_or_else(|| any_net(v6)),
        v6,
        scope: Scope::Input,
        app: None,
        text: String::new(),
    }
}

/// What decides a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// The rule at this index of the list.
    Rule(usize),
    /// No rule matched: the incoming policy.
    Policy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub admits: bool,
    pub by: By,
    /// Earlier rules that may match (an interface, a destination address, a source port) and
    /// would decide otherwise: the verdict is not certain while these are listed.
    pub unsure: Vec<usize>,
}

/// The first match of `packet` in `rules` (one family's list, in ufw's order), else `policy`.
pub fn evaluate(rules: &[UfwRule], policy: Policy, packet: &Packet) -> Verdict {
    let mut maybe = Vec::new();
    let mut decided = None;
    for (i, r) in rules.iter().enumerate() {
        match r.matches(packet) {
            Match::No => {}
            Match::Maybe => maybe.push(i),
            Match::Yes => {
                decided = Some((r.action.admits(), By::Rule(i)));
                break;
            }
        }
    }
    let (admits, by) = decided.unwrap_or((policy == Policy::Allow, By::Policy));
    let unsure = maybe.into_iter().filter(|i| rules[*i].action.admits() != admits).collect();
    Verdict { admits, by, unsure }
}

/// One source address for every stretch of `within` over which every rule in `rules` matches
/// the same way, plus `within`'s first, middle and last addresses: asking these is asking
/// every address of `within`.
pub fn witnesses(rules: &[UfwRule], within: IpNet) -> Vec<IpAddr> {
    let lo = to_u128(within.network());
    let hi = to_u128(within.broadcast());
    let mut points = vec![lo, lo + (hi - lo) / 2, hi];
    for r in rules.iter().filter(|r| r.src.addr().is_ipv6() == within.addr().is_ipv6()) {
        let (a, b) = (to_u128(r.src.network()), to_u128(r.src.broadcast()));
        for p in [a.checked_sub(1), Some(a), Some(b), b.checked_add(1)].into_iter().flatten() {
            if (lo..=hi).contains(&p) {
                points.push(p);
            }
        }
    }
    points.sort_unstable();
    points.dedup();
    points.into_iter().map(|p| from_u128(p, within.addr().is_ipv6())).collect()
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(n: u128, v6: bool) -> IpAddr {
    if v6 { IpAddr::V6(Ipv6Addr::from(n)) } else { IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX))) }
}

/// Networks this wide are "the world" for the warnings: more than an IPv4 /8 (the widest
/// private range, 10.0.0.0/8) or an IPv6 /8 (fc00::/7 holds the unique-local networks an
/// operator may name; wider than that spans the global unicast space).
pub fn is_world(net: IpNet) -> bool {
    match net {
        IpNet::V4(n) => n.prefix_len() < 8,
        IpNet::V6(n) => n.prefix_len() < 7,
    }
}

/// How `port`/`proto` is reached from anywhere of one family: every source admitted, some
/// (naming a rule that admits), or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    Everywhere(By),
    Some(Vec<IpNet>),
    Nowhere,
}

/// Addresses blocked by a rule for a network narrower than the world (a fail2ban ban, a
/// blocked range) do not make a port less than open to the world; the policy admitting some
/// address means the world, less what rules block.
pub fn reach(rules: &[UfwRule], policy: Policy, v6: bool, dport: u16, proto: Proto) -> Reach {
    let verdicts: Vec<(IpAddr, Verdict)> = witnesses(rules, any_net(v6))
        .into_iter()
        .map(|src| (src, evaluate(rules, policy, &Packet { src, dst: None, dport, proto })))
        .collect();
    let banned = |v: &Verdict| matches!(v.by, By::Rule(i) if !v.admits && !is_world(rules[i].src));
    let world: Vec<&Verdict> = verdicts.iter().map(|(_, v)| v).filter(|v| !banned(v)).collect();
    if let Some(first) = world.first().filter(|_| world.iter().all(|v| v.admits)) {
        return Reach::Everywhere(first.by);
    }
    if verdicts.iter().any(|(_, v)| v.admits && v.by == By::Policy) {
        return Reach::Everywhere(By::Policy);
    }
    let mut nets: Vec<IpNet> = verdicts
        .iter()
        .filter(|(_, v)| v.admits)
        .map(|(src, v)| match v.by {
            By::Rule(i) => rules[i].src,
            By::Policy => IpNet::from(*src),
        })
        .collect();
    nets.sort();
    nets.dedup();
    if nets.is_empty() { Reach::Nowhere } else { Reach::Some(nets) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Vec<UfwRule> {
        let (r, bad) = parse_rules(text, false);
        assert!(bad.is_empty(), "{bad:?}");
        r
    }

    fn tcp(src: &str, port: u16) -> Packet {
        Packet { src: src.parse().expect("addr"), dst: None, dport: port, proto: Proto::Tcp }
    }

    #[test]
    fn a_bare_address_is_its_host_network() {
        let r = rules("### tuple ### allow any 2377 0.0.0.0/0 any 10.0.1.7 in\n");
        assert_eq!(r[0].src, "10.0.1.7/32".parse::<IpNet>().expect("net"));
        assert_eq!(
            r[0].delete_command(true).expect("plain").join(" "),
            "ufw delete allow from 10.0.1.7 to any port 2377"
        );
    }

    #[test]
    fn the_first_match_decides_and_policy_decides_the_rest() {
        let r = rules(
            "### tuple ### deny tcp 1:65535 0.0.0.0/0 any 0.0.0.0/0 in\n\
             ### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n",
        );
        let v = evaluate(&r, Policy::Allow, &tcp("192.0.2.1", 22));
        assert_eq!((v.admits, v.by), (false, By::Rule(0)));
        let v = evaluate(&r, Policy::Allow, &Packet { proto: Proto::Udp, ..tcp("192.0.2.1", 22) });
        assert_eq!((v.admits, v.by), (true, By::Policy));
    }

    #[test]
    fn witnesses_cover_every_stretch_of_a_network() {
        let r = rules("### tuple ### deny tcp 22 0.0.0.0/0 any 10.9.8.128/25 in\n");
        let w = witnesses(&r, "10.9.8.0/24".parse().expect("net"));
        let admitted: Vec<bool> =
            w.iter().map(|a| evaluate(&r, Policy::Allow, &tcp(&a.to_string(), 22)).admits).collect();
        assert!(admitted.contains(&true) && admitted.contains(&false), "{w:?}");
        assert!(w.contains(&"10.9.8.255".parse().expect("addr")) && w.contains(&"10.9.8.0".parse().expect("addr")));
    }

    #[test]
    fn interface_and_destination_rules_make_a_verdict_unsure() {
        let r = rules(
            "### tuple ### deny tcp 22 0.0.0.0/0 any 0.0.0.0/0 in_eth0\n\
             ### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n",
        );
        let v = evaluate(&r, Policy::Deny, &tcp("192.0.2.1", 22));
        assert_eq!((v.admits, v.unsure), (true, vec![0]));
    }

    #[test]
    fn route_rules_never_judge_the_host() {
        let r = rules("### tuple ### route:deny tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n");
        assert!(evaluate(&r, Policy::Allow, &tcp("192.0.2.1", 22)).admits);
    }

    #[test]
    fn reach_names_who_gets_in() {
        let r = rules("### tuple ### allow tcp 2377 0.0.0.0/0 any 10.0.0.0/8 in\n");
        assert_eq!(
            reach(&r, Policy::Deny, false, 2377, Proto::Tcp),
            Reach::Some(vec!["10.0.0.0/8".parse().expect("n")])
        );
        assert_eq!(reach(&r, Policy::Deny, false, 22, Proto::Tcp), Reach::Nowhere);
        let world = rules("### tuple ### allow tcp 2377 0.0.0.0/0 any 0.0.0.0/0 in\n");
        assert_eq!(reach(&world, Policy::Deny, false, 2377, Proto::Tcp), Reach::Everywhere(By::Rule(0)));
        // One banned host does not make a world-open port any less open to the world.
        let banned = rules(
            "### tuple ### reject any any 0.0.0.0/0 any 198.51.100.7 in\n### tuple ### allow tcp 2377 0.0.0.0/0 any 0.0.0.0/0 in\n",
        );
        assert_eq!(reach(&banned, Policy::Deny, false, 2377, Proto::Tcp), Reach::Everywhere(By::Rule(1)));
    }
}
