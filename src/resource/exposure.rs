//! The `exposure` audit: what the outside can reach, from facts, not intent. Listening TCP
//! sockets and unconnected UDP ones with their owners (procfs), the ports Docker publishes
//! (the DNAT rules it loaded, named through the Engine API), and whether ufw's rules and
//! vakt's DOCKER-USER block are in the kernel, for IPv4 and IPv6, judged against the profile.
//! Read-only: it plans no action. Runs last, so that `apply` reports what it left.

mod facts;
mod names;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;

pub use facts::{Dnat, Family, Guard, Listener, parse_dnat};

use super::firewall::UfwFiles;
use super::firewall::model::{self, UfwRule};
use super::{Finding, Plan, Resource, Status};
use crate::engine_api::{Engine, Publications};
use crate::host::{Host, Shared};
use crate::profile::{Firewall as Wanted, Policy, Proto, Published, Target};

#[derive(Debug, Clone)]
pub struct Observed {
    pub live: bool,
    pub facts: Result<Facts, String>,
}

#[derive(Debug, Clone)]
pub struct Facts {
    pub listeners: Vec<Listener>,
    pub dnat: Vec<Dnat>,
    pub ufw_enabled: bool,
    pub v4: Family,
    pub v6: Family,
    /// Why `ip6tables-save` could not be read, when it could not.
    pub v6_unread: Option<String>,
    pub incoming: Option<Policy>,
    /// ufw's rules of both families (`user.rules`, and `user6.rules` unless `IPV6=no`).
    pub rules: Vec<UfwRule>,
    /// The Engine API's names for published ports, or why there are none.
    pub names: Result<Publications, String>,
}

pub struct Exposure<'p> {
    want: &'p Wanted,
    /// Ports that should not be reachable from the world, with the reason (swarm management,
    /// the gateway behind nginx): linted by real exposure, not by the rule list.
    sensitive: Vec<(u16, String)>,
    /// The profile's `[docker] host`, for the Engine API socket.
    docker_host: Option<&'p Path>,
    /// Whether the profile makes this node a swarm manager (its services are then asked for
    /// with its containers).
    manager_expected: bool,
}

/// One way the outside reaches a port, as judged against the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reach {
    /// Through which chain, for which address: the finding's evidence.
    path: String,
    /// The sources it admits; None: anywhere.
    from: Option<String>,
    status: Status,
    /// For the title: `allowed by the profile`, `not allowed by the profile`, ...
    verdict: &'static str,
    /// For the evidence: why that verdict.
    why: String,
    /// False for a port swarm publishes but this node has not set up yet.
    now: bool,
}

impl<'p> Exposure<'p> {
    pub fn new(want: &'p Wanted, sensitive: Vec<(u16, String)>, docker_host: Option<&'p Path>) -> Self {
        Exposure { want, sensitive, docker_host, manager_expected: false }
    }

    /// As the profile's `[swarm] role` says.
    pub fn expecting_manager(mut self, manager: bool) -> Self {
        self.manager_expected = manager;
        self
    }

    fn lint(&self, plan: &mut Plan<()>, port: u16, world: bool, path: &str) {
        if let Some((_, why)) = self.sensitive.iter().find(|(p, _)| *p == port).filter(|_| world) {
            plan.warn(format!("port {port} ({why}) is reachable from the world: {path}"));
        }
    }

    /// How the outside reaches a host socket of one family through INPUT, where ufw decides;
    /// Err when the family's tables could not be read.
    fn input(&self, facts: &Facts, idx: &Index, v6: bool, proto: Proto, port: u16) -> Result<Option<Reach>, String> {
        let family = if v6 { &facts.v6 } else { &facts.v4 };
        let how = match &family.guard {
            Guard::Unknown(e) => return Err(e.clone()),
            Guard::Off => Some(("ufw does not filter IPv6 (IPV6=no in /etc/default/ufw)".to_string(), None)),
            Guard::NotLoaded => {
                let which = if v6 { "IPv6 rules" } else { "rules" };
                Some((format!("ufw's {which} are not loaded in netfilter: nothing filters INPUT"), None))
            }
            Guard::Loaded => {
                let rules = &idx.rules[usize::from(v6)];
                let policy = facts.incoming.unwrap_or(Policy::Deny);
                match model::reach(rules, policy, v6, port, proto) {
                    model::Reach::Nowhere => None,
                    model::Reach::Everywhere(model::By::Policy) => {
                        Some((format!("ufw's incoming policy is {}", policy.as_str()), None))
                    }
                    model::Reach::Everywhere(model::By::Rule(i)) => {
                        Some((format!("ufw rule: {}", rules[i].describe()), None))
                    }
                    model::Reach::Some(nets) => {
                        let nets: Vec<String> = nets.into_iter().map(model::host_or_net).collect();
                        Some((
                            format!("ufw rules admit {}/{} from {}", port, proto.as_str(), nets.join(", ")),
                            Some(nets.join(", ")),
                        ))
                    }
                }
            }
        };
        // What the profile's own rules, in its order, would do with a packet from anywhere.
        let profile: Vec<UfwRule> = self
            .want
            .host_rules()
            .filter(|r| r.from.is_none_or(|n| n.addr().is_ipv6() == v6))
            .map(|r| model::from_profile(r, v6))
            .collect();
        let allowed = model::reach(&profile, self.want.incoming, v6, port, proto) != model::Reach::Nowhere;
        Ok(how.map(|(path, from)| Reach {
            path,
            from,
            status: if allowed { Status::Ok } else { Status::Drift },
            verdict: if allowed { "allowed by the profile" } else { "not allowed by the profile" },
            why: "judged by the profile's host rules".into(),
            now: true,
        }))
    }

    /// How the outside reaches a published port of one family: DNATed in PREROUTING, judged
    /// in FORWARD, never in ufw's INPUT. None when vakt's block closes it.
    fn forward(&self, facts: &Facts, proto: Proto, port: u16, v6: bool) -> Option<Reach> {
        let want = self.want;
        let block_loaded = if v6 { facts.v6.block_loaded } else { facts.v4.block_loaded };
        let rule = want.rules.iter().find(|r| {
            r.target == Target::Containers && r.covers(port, proto) && r.from.is_none_or(|n| n.addr().is_ipv6() == v6)
        });
        let reachable = match rule {
            _ if !block_loaded => true,
            Some(r) => r.action.admits(),
            None => want.routed == Policy::Allow,
        };
        if !reachable {
            return None;
        }
        let from = rule.and_then(|r| r.from).filter(|_| block_loaded).map(|n| n.to_string());
        let (status, verdict, why) = match (block_loaded, rule) {
            (true, Some(_)) => {
                (Status::Ok, "allowed by the profile", "a target = \"containers\" rule allows it".to_string())
            }
            (true, None) => (
                Status::Drift,
                "not allowed by the profile",
                "routed policy allow lets every published port through".into(),
            ),
            (false, _) if want.published == Published::Profile => (
                Status::Drift,
                "the profile's rules for published ports are not loaded",
                "vakt's DOCKER-USER rules are not loaded: Docker's FORWARD rules accept it, ufw never sees it".into(),
            ),
            // Rules for containers need published_ports = "profile": none judges this port.
            (false, _) => (
                Status::Drift,
                "not allowed by the profile",
                "Docker's FORWARD rules accept it before ufw's, whatever ufw says; set published_ports = \"profile\""
                    .into(),
            ),
        };
        Some(Reach { path: String::new(), from, status, verdict, why, now: true })
    }

    /// Every way the outside reaches `proto/port`, and why some could not be judged.
    fn reaches(&self, facts: &Facts, idx: &Index, proto: Proto, port: u16) -> (Vec<Reach>, Vec<String>) {
        let (mut reaches, mut unknown) = (Vec::new(), Vec::new());
        let dnat = idx.dnat(proto, port);
        for d in dnat {
            let path = format!("{}: PREROUTING DNAT ({}) to {} → FORWARD", family(d.v6), d.chain, d.to);
            reaches.extend(self.forward(facts, proto, port, d.v6).map(|r| Reach { path, ..r }));
        }
        // A family whose packets Docker DNATs never reaches the host's socket from outside
        // (docker-proxy's, for instance); the other family's does, through INPUT.
        let listeners = idx.listeners(proto, port).iter().copied();
        for (l, v6, label) in listeners.flat_map(|l| families(&l.addr).into_iter().map(move |(v6, f)| (l, v6, f))) {
            if dnat.iter().any(|d| d.v6 == v6) {
                continue;
            }
            match self.input(facts, idx, v6, proto, port) {
                Ok(r) => reaches.extend(r.map(|r| Reach { path: format!("{} ({label}): {}", l.addr, r.path), ..r })),
                Err(e) => unknown.push(format!("{} ({label}): {e}", l.addr)),
            }
        }
        if dnat.is_empty() && self.on_the_mesh(facts, proto, port) {
            reaches.extend(self.forward(facts, proto, port, false).map(|r| {
                Reach {
                    path: "swarm publishes it on every node's routing mesh, but this node has no DNAT rule for it \
                       (its ingress network is not set up: no IPVS, or not ready yet); nothing reaches it now"
                        .into(),
                    now: false,
                    ..r
                }
            }));
        }
        reaches.dedup_by(|a, b| a.path == b.path);
        (reaches, unknown)
    }

    /// Whether the engine says swarm publishes `proto/port` on the routing mesh. A port the
    /// API names but no DNAT rule exists for is judged as the mesh will carry it once it is
    /// set up: not reachable now (the title says so), but a check that passes today would
    /// fail at the first task start with nothing changed, so the profile judges it already.
    fn on_the_mesh(&self, facts: &Facts, proto: Proto, port: u16) -> bool {
        facts.names.as_ref().is_ok_and(|n| names::ingress_ports(n).any(|p| p == (proto, port)))
    }

    /// What a user calls the thing reached on `proto/port`: the engine's names for a published
    /// port, the owning processes for a host socket; and why a published port has no name.
    fn what(&self, facts: &Facts, idx: &Index, proto: Proto, port: u16) -> (String, Option<String>) {
        let named = facts.names.as_ref().map(|n| names::publishers(n, proto, port)).unwrap_or_default();
        let docker = !idx.dnat(proto, port).is_empty();
        // docker-proxy's sockets are the published port's own: its name says it all.
        let held = holders(idx.listeners(proto, port), !named.is_empty() || docker);
        let publisher = match (named.is_empty(), docker) {
            (false, _) => named.join(" and "),
            (true, true)
                if [Proto::Tcp, Proto::Udp]
                    .into_iter()
                    .any(|p| idx.dnat(p, port).iter().any(|d| d.chain == "DOCKER-INGRESS")) =>
            {
                "swarm's routing mesh".into()
            }
            (true, true) => "a port Docker publishes".into(),
            (true, false) => String::new(),
        };
        let what = match (publisher.is_empty(), held.is_empty()) {
            (true, _) => held,
            (false, true) => publisher,
            (false, false) => format!("{publisher} ({held})"),
        };
        (what, names::why_unnamed(&facts.names).filter(|_| named.is_empty() && docker))
    }

    fn judge(&self, plan: &mut Plan<()>, facts: &Facts, idx: &Index, proto: Proto, port: u16) {
        let id = format!("exposure.{}.{port}", proto.as_str());
        let (reaches, unknown) = self.reaches(facts, idx, proto, port);
        let (what, unnamed) = self.what(facts, idx, proto, port);
        let p = proto.as_str();
        let Some(worst) = reaches.iter().max_by_key(|r| r.status) else {
            if !unknown.is_empty() {
                plan.pass(Finding::unknown(
                    id,
                    format!("whether the outside reaches {p}/{port} ({what})"),
                    unknown.join("; "),
                ));
            }
            return;
        };
        let world = reaches.iter().any(|r| r.from.is_none());
        let from = if world {
            "anywhere".to_string()
        } else {
            reaches
                .iter()
                .filter_map(|r| r.from.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(", ")
        };
        self.lint(plan, port, world, &format!("{what}, {}", worst.path));
        let title = if reaches.iter().any(|r| r.now) {
            format!("{p}/{port} reachable from {from} via {what}; {}", worst.verdict)
        } else {
            format!("{p}/{port} published by {what}, not reachable yet, then from {from}; {}", worst.verdict)
        };
        let mut finding = Finding::new(id, title, worst.status);
        for r in &reaches {
            finding = finding.with_evidence(format!("path: {}; {}", r.path, r.why));
        }
        finding.evidence.extend(unknown.into_iter().map(|u| format!("not judged: {u}")));
        finding.evidence.extend(unnamed);
        plan.pass(finding);
    }
}

/// The processes holding sockets on `proto/port`, each with its addresses:
/// `sshd (pid 5) on 0.0.0.0:22, [::]:22`.
/// A listener's holder when no process was found holding it (see `facts::Listener::owner`).
const NO_HOLDER: &str = "a socket no visible process holds (a kernel one: VXLAN, nfsd)";

fn holders(listeners: &[&Listener], skip_docker_proxy: bool) -> String {
    let mut held: Vec<(String, Vec<String>)> = Vec::new();
    for l in listeners {
        let owner = l.owner.clone().unwrap_or_else(|| NO_HOLDER.into());
        if skip_docker_proxy && owner.starts_with("docker-proxy ") {
            continue;
        }
        match held.iter_mut().find(|(o, _)| *o == owner) {
            Some((_, addrs)) => addrs.push(l.addr.to_string()),
            None => held.push((owner, vec![l.addr.to_string()])),
        }
    }
    held.iter().map(|(o, a)| format!("{o} on {}", a.join(", "))).collect::<Vec<_>>().join("; ")
}

fn family(v6: bool) -> &'static str {
    if v6 { "IPv6" } else { "IPv4" }
}

/// The families a socket bound to `addr` hears, with a label for the evidence. A socket on
/// `::` hears IPv4 too unless it is IPv6-only, which /proc does not tell: it is judged for both.
fn families(addr: &SocketAddr) -> Vec<(bool, &'static str)> {
    match addr {
        SocketAddr::V4(_) => vec![(false, "IPv4")],
        SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_some() => vec![(false, "IPv4")],
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            vec![(true, "IPv6"), (false, "IPv4, unless the socket is IPv6-only")]
        }
        SocketAddr::V6(_) => vec![(true, "IPv6")],
    }
}

/// Reads what the audit needs at once: the two tables, the engine and the sockets each wait on
/// another process or the kernel, so the slowest of them, not their sum, is the audit's time.
fn observe_live(host: &Host, want: &Wanted, docker_host: Option<&Path>, manager: bool) -> anyhow::Result<Facts> {
    let ufw = UfwFiles::read(host)?;
    let ipv6 = ufw.ipv6;
    let (save, save6, names, listeners) = std::thread::scope(|s| {
        let save6 = s.spawn(|| host.netfilter_save(true).map_err(|e| format!("could not read the IPv6 tables: {e}")));
        let names = s.spawn(|| {
            host.docker_socket(docker_host).and_then(|s| {
                Engine::connect(&s)
                    .and_then(|e| e.remembering(&host.engine_info).publications(manager))
                    .map_err(|e| format!("{e:#}"))
            })
        });
        let listeners = s.spawn(|| facts::listeners(host));
        let save = host.netfilter_save(false).map_err(anyhow::Error::msg);
        let panicked = |what: &str| format!("reading {what} panicked");
        (
            save,
            save6.join().unwrap_or_else(|_| Err(panicked("the IPv6 tables"))),
            names.join().unwrap_or_else(|_| Err(panicked("the engine's publications"))),
            listeners.join().unwrap_or_else(|_| Err(anyhow::anyhow!(panicked("the listening sockets")))),
        )
    });
    let save = save?;
    let v6 = match &save6 {
        _ if !ipv6 => Family { guard: Guard::Off, block_loaded: false },
        Ok(s) => Family::from_save(s, true, want),
        Err(e) => Family::unread(e.clone()),
    };
    let mut dnat = parse_dnat(&save, false);
    dnat.extend(save6.as_deref().map(|s| parse_dnat(s, true)).unwrap_or_default());
    Ok(Facts {
        listeners: listeners?,
        dnat,
        ufw_enabled: ufw.enabled,
        v4: Family::from_save(&save, false, want),
        v6,
        v6_unread: save6.err(),
        incoming: ufw.incoming,
        rules: ufw.rules,
        names,
    })
}

/// The facts by (protocol, port), and ufw's rules by family, built once per audit.
struct Index<'f> {
    listeners: HashMap<(Proto, u16), Vec<&'f Listener>>,
    dnat: HashMap<(Proto, u16), Vec<&'f Dnat>>,
    rules: [Vec<UfwRule>; 2],
}

impl<'f> Index<'f> {
    fn new(facts: &'f Facts) -> Index<'f> {
        let mut listeners: HashMap<(Proto, u16), Vec<&Listener>> = HashMap::new();
        for l in &facts.listeners {
            listeners.entry((l.proto, l.addr.port())).or_default().push(l);
        }
        let mut dnat: HashMap<(Proto, u16), Vec<&Dnat>> = HashMap::new();
        for d in &facts.dnat {
            dnat.entry((d.proto, d.port)).or_default().push(d);
        }
        let family = |v6: bool| facts.rules.iter().filter(|r| r.v6 == v6).cloned().collect();
        Index { listeners, dnat, rules: [family(false), family(true)] }
    }

    fn listeners(&self, proto: Proto, port: u16) -> &[&'f Listener] {
        self.listeners.get(&(proto, port)).map_or(&[], Vec::as_slice)
    }

    fn dnat(&self, proto: Proto, port: u16) -> &[&'f Dnat] {
        self.dnat.get(&(proto, port)).map_or(&[], Vec::as_slice)
    }
}

impl Resource for Exposure<'_> {
    type Observed = Observed;
    type Action = ();

    fn id(&self) -> &'static str {
        "exposure"
    }

    fn shared_reads(&self, host: &Host) -> Vec<Shared> {
        // Without ufw's files the observation stops before it reads the tables.
        if !host.is_live() || !UfwFiles::present(host) {
            return Vec::new();
        }
        [Shared::Netfilter(false), Shared::Netfilter(true)]
            .into_iter()
            .chain(host.engine_read(self.docker_host))
            .collect()
    }

    fn observe(&self, host: &Host) -> anyhow::Result<Observed> {
        if !host.is_live() {
            return Ok(Observed { live: false, facts: Err(String::new()) });
        }
        let facts =
            observe_live(host, self.want, self.docker_host, self.manager_expected).map_err(|e| format!("{e:#}"));
        Ok(Observed { live: true, facts })
    }

    fn plan(&self, o: &Observed) -> Plan<()> {
        let mut plan = Plan::default();
        let facts = match (&o.facts, o.live) {
            (_, false) => {
                plan.pass(Finding::new(
                    "exposure",
                    "what the outside reaches is judged on the running system",
                    Status::Skipped,
                ));
                return plan;
            }
            (Err(e), _) => {
                plan.pass(Finding::unknown("exposure", "what the outside can reach", e.clone()));
                return plan;
            }
            (Ok(f), _) => f,
        };
        // One finding per (protocol, port), whatever the families and paths.
        // Indexed once: the audit is linear in sockets and rules, however many there are.
        let idx = Index::new(facts);
        let mut ports: BTreeSet<(Proto, u16)> = idx.listeners.keys().chain(idx.dnat.keys()).copied().collect();
        ports.extend(facts.names.iter().flat_map(names::ingress_ports));
        for (proto, port) in ports {
            self.judge(&mut plan, facts, &idx, proto, port);
        }
        let unloaded: Vec<&str> = [(false, &facts.v4), (true, &facts.v6)]
            .into_iter()
            .filter(|(_, f)| f.guard == Guard::NotLoaded)
            .map(|(v6, _)| family(v6))
            .collect();
        if facts.ufw_enabled && !unloaded.is_empty() {
            plan.pass(
                Finding::new(
                    "exposure.ufw-loaded",
                    "ufw is enabled in ufw.conf but not loaded in netfilter",
                    Status::Drift,
                )
                .with_evidence(format!("not loaded: {}", unloaded.join(", ")))
                .with_evidence("run `ufw reload` (vakt apply does)"),
            );
        }
        if let Some(e) = &facts.v6_unread {
            plan.pass(Finding::unknown(
                "exposure.ipv6",
                "what the outside reaches over IPv6 (ufw's IPv6 rules, Docker's IPv6 DNAT rules)",
                e.clone(),
            ));
        }
        plan
    }
}

#[cfg(test)]
mod tests;
