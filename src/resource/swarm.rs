//! The `swarm` resource, through the Engine API only: the first manager initialises, other
//! nodes join as managers or workers with a token from a systemd credential or a private file.
//! A node in another swarm or with another role is reported, never left, promoted or demoted.
//! On a manager, the swarm's quorum is reported.

pub mod token;

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

use super::{Fact, Finding, Plan, Resource, Status};
use crate::engine_api::{Engine, EngineFacts, NodeFacts, Reachability, SwarmState};
use crate::host::{Host, Shared};
use crate::profile::{Advertise, Firewall, Role, SWARM_GOSSIP_PORT, SWARM_VXLAN_PORT, Swarm as Wanted, TokenSource};
use crate::resource::netaddr;
use token::JoinToken;

#[derive(Debug)]
pub struct Observed {
    /// Preparing an image offline (`--root`): the swarm is joined or initialised at its first boot.
    offline: bool,
    engine: Result<EngineFacts, String>,
    /// The advertise address the profile resolves to here, and why.
    address: Result<(IpAddr, String), String>,
    /// The join token, read only when a join is due; `describe` says where it came from.
    token: Option<Result<JoinToken, String>>,
    /// The swarm's nodes, as a manager lists them (a worker cannot).
    nodes: Option<Result<Vec<NodeFacts>, String>>,
}

#[derive(Debug)]
pub enum Change {
    Init { advertise: IpAddr },
    Join { advertise: IpAddr, token: JoinToken },
}

pub struct Swarm<'p> {
    want: &'p Wanted,
    docker_host: Option<&'p Path>,
    /// The profile's firewall, where `[swarm] peers` became rules (None: not managed).
    firewall: Option<&'p Firewall>,
}

impl<'p> Swarm<'p> {
    pub fn new(want: &'p Wanted, docker_host: Option<&'p Path>, firewall: Option<&'p Firewall>) -> Self {
        Swarm { want, docker_host, firewall }
    }

    fn joins(&self) -> Option<Role> {
        self.want.role.filter(|r| !matches!(r, Role::Init))
    }

    fn token_source(&self, credentials_dir: Option<&Path>) -> String {
        token::describe(&self.want.token, credentials_dir)
    }
}

fn resolve(host: &Host, want: &Advertise) -> Result<(IpAddr, String), String> {
    // Interfaces are the kernel's, whatever the root; only /proc/net/route is a path.
    let addrs = netaddr::interface_addresses();
    match want {
        Advertise::Ip(ip) => Ok((*ip, "given in the profile".into())),
        Advertise::Interface(name) => netaddr::address_of(name, &addrs)
            .map(|ip| (ip, format!("{ip} is the address of {name}, named in the profile")))
            .ok_or_else(|| format!("interface {name} has no usable address")),
        Advertise::Auto => {
            let routes = host.read("/proc/net/route").map_err(|e| e.to_string())?;
            netaddr::pick_auto(&routes, &addrs)
        }
    }
}

fn read_token(host: &Host, source: &TokenSource) -> Result<JoinToken, String> {
    let file = match source {
        TokenSource::File(p) => Some(host.path(p)),
        TokenSource::Credential(_) => None,
    };
    token::location(source, file, host.credentials_dir()).and_then(|path| token::read(&path))
}

/// Networks whose traffic stays off the public internet: RFC 1918, shared address space
/// (RFC 6598), loopback, link-local, IPv6 unique-local.
fn is_private(net: &IpNet) -> bool {
    const PRIVATE: &[&str] = &[
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    ];
    PRIVATE.iter().filter_map(|p| p.parse::<IpNet>().ok()).any(|p| p.contains(net))
}

/// The quorum of the swarm, from a manager's node list.
fn quorum(plan: &mut Plan<Change>, nodes: &[NodeFacts]) {
    let managers: Vec<&NodeFacts> = nodes.iter().filter(|n| n.manager).collect();
    let count = managers.len();
    plan.fact(Fact::number("managers", "Managers in the swarm, as a manager lists them.", count as i64));
    plan.fact(Fact::number("nodes", "Nodes in the swarm, as a manager lists them.", nodes.len() as i64));
    let unreachable: Vec<&&NodeFacts> =
        managers.iter().filter(|n| n.reachability != Some(Reachability::Reachable)).collect();
    let tolerates = count.saturating_sub(1) / 2;
    let id = "swarm.quorum";
    if unreachable.is_empty() {
        let title = format!(
            "{count} manager{} reachable: the swarm survives {tolerates} manager failure{}",
            if count == 1 { "" } else { "s, all" },
            if tolerates == 1 { "" } else { "s" }
        );
        plan.pass(Finding::ok(id, title));
    } else {
        let mut f = Finding::new(id, format!("{} of {count} managers not reachable", unreachable.len()), Status::Drift);
        for n in &unreachable {
            f.evidence.push(format!(
                "manager {} ({}, node {}) is {}",
                n.hostname,
                n.addr,
                n.id,
                n.reachability.map_or("of unknown reachability", Reachability::as_str)
            ));
        }
        let needed = count / 2 + 1;
        f.evidence.push(format!(
            "the swarm needs {needed} reachable managers to be managed; with fewer it runs its tasks but accepts no change"
        ));
        f.evidence
            .push("bring the manager back, or on a manager: docker node demote NODE, then docker node rm NODE".into());
        plan.pass(f);
    }
    if count > 0 && count.is_multiple_of(2) {
        plan.warn(format!(
            "{count} managers: an even count tolerates no more failures than {} (both survive {tolerates}); run an odd number of managers",
            count - 1
        ));
    }
}

impl Resource for Swarm<'_> {
    type Observed = Observed;
    type Action = Change;

    fn id(&self) -> &'static str {
        "swarm"
    }

    fn shared_reads(&self, host: &Host) -> Vec<Shared> {
        host.engine_read(self.docker_host).into_iter().collect()
    }

    fn unknown_fails_apply(&self) -> bool {
        true
    }

    fn observe(&self, host: &Host) -> anyhow::Result<Observed> {
        if !host.is_live() {
            let why = "an image prepared offline".to_string();
            return Ok(Observed {
                offline: true,
                engine: Err(why.clone()),
                address: Err(why),
                token: None,
                nodes: None,
            });
        }
        let engine = host
            .docker_socket(self.docker_host)
            .and_then(|s| Engine::connect(&s).map(|e| e.remembering(&host.engine_info)).map_err(|e| format!("{e:#}")));
        // A node the profile makes a manager lists the swarm's nodes before it reads the
        // engine's facts: where the run asked for those ahead (`shared_reads`), the engine
        // composes them meanwhile. On a node that is no manager (yet), dockerd refuses and logs
        // it, and the answer is dropped; on a manager it is the answer, failure or not.
        let early_nodes = match &engine {
            Ok(engine) if self.want.role.is_some_and(Role::is_manager) => Some(engine.nodes()),
            _ => None,
        };
        let facts = engine.as_ref().map_err(Clone::clone).and_then(|e| e.facts().map_err(|e| format!("{e:#}")));
        let (mut token, mut nodes) = (None, None);
        if let (Ok(engine), Ok(facts)) = (&engine, &facts) {
            if facts.swarm.state == SwarmState::Inactive && self.joins().is_some() {
                token = Some(read_token(host, &self.want.token));
            }
            if facts.swarm.state == SwarmState::Active && facts.swarm.manager {
                let listed = early_nodes.unwrap_or_else(|| engine.nodes());
                nodes = Some(listed.map_err(|e| format!("{e:#}")));
            }
        }
        Ok(Observed { offline: false, engine: facts, address: resolve(host, &self.want.advertise_addr), token, nodes })
    }

    fn plan(&self, o: &Observed) -> Plan<Change> {
        let mut plan = Plan::default();
        let id = "swarm.node";
        self.lint(&mut plan);
        if o.offline {
            let first_boot = match self.want.role {
                Some(Role::Init) => "swarm init through the Engine API, as the profile says".into(),
                Some(role) => format!("swarm join as {} through {}", role.as_str(), self.want.join.join(", ")),
                None => "nothing: the profile neither inits nor joins a swarm".into(),
            };
            plan.pass(Finding::deferred(id, "swarm state", first_boot));
            return plan;
        }
        let facts = match &o.engine {
            Ok(f) => f,
            Err(reason) => {
                plan.pass(Finding::unknown(id, "swarm state", reason.clone()));
                return plan;
            }
        };
        let s = &facts.swarm;
        if s.state == SwarmState::Active {
            plan.fact(Fact::text("role", if s.manager { "manager" } else { "worker" }));
            if let Some(cluster) = &s.cluster_id {
                plan.fact(Fact::text("cluster_id", cluster.clone()));
            }
        }
        let (addr, why) = match &o.address {
            Ok(a) => a.clone(),
            Err(reason) => {
                let status = if s.state == SwarmState::Active { Status::Unknown } else { Status::Failed };
                let mut f = Finding::new(id, format!("cannot choose the advertise address: {reason}"), status);
                f.evidence.push(format!("swarm is {}", s.state));
                plan.pass(f);
                return plan;
            }
        };
        let listen = self.want.listen_addr;
        let node = s.node_id.as_deref().unwrap_or("NODE");
        match (s.state, self.want.role) {
            (SwarmState::Inactive, None) => {
                plan.pass(Finding::ok(id, "not in a swarm (the profile neither inits nor joins one)"))
            }
            (SwarmState::Inactive, Some(Role::Init)) => {
                let cmd = format!(
                    "swarm init through the Engine API (docker swarm init --advertise-addr {addr} --listen-addr {listen})"
                );
                let f = Finding::drift(id, "swarm manager (not in a swarm yet)", cmd).with_evidence(why);
                plan.fix(f, Change::Init { advertise: addr });
            }
            (SwarmState::Inactive, Some(role)) => {
                let through = self.want.join.join(", ");
                let title = format!("swarm {} (not in a swarm yet)", role.as_str());
                let source = self.token_source(None);
                match &o.token {
                    Some(Ok(token)) => {
                        let cmd = format!(
                            "swarm join as {} through the Engine API (docker swarm join --advertise-addr {addr} --listen-addr {listen} --token <{source}> {through})",
                            role.as_str()
                        );
                        let f = Finding::drift(id, title, cmd).with_evidence(why);
                        plan.fix(f, Change::Join { advertise: addr, token: token.clone() });
                    }
                    Some(Err(reason)) => {
                        let f = Finding::new(id, format!("{title}: cannot join"), Status::Failed)
                            .with_evidence(reason.clone());
                        plan.pass(f);
                    }
                    None => plan.pass(Finding::unknown(id, title, "the join token was not read")),
                }
            }
            (SwarmState::Active, want) => self.plan_active(&mut plan, facts, want, addr, &why),
            (SwarmState::Pending, _) => {
                let mut f = Finding::unknown(
                    id,
                    "swarm is pending: the node is still trying to join",
                    "dockerd keeps trying in the background after a join that timed out (managers unreachable?)",
                );
                if let Some(e) = &s.error {
                    f.evidence.push(format!("the engine says: {e}"));
                }
                f.evidence.push(format!("see `docker info`; `docker swarm leave` on node {node} stops the attempt"));
                plan.pass(f);
            }
            (other, _) => plan.pass(Finding::unknown(
                id,
                format!("swarm is {other}"),
                "the node is neither in nor out of a swarm; see `docker info`",
            )),
        }
        if let Some(Ok(nodes)) = &o.nodes {
            quorum(&mut plan, nodes);
        } else if let Some(Err(reason)) = &o.nodes {
            plan.pass(Finding::unknown("swarm.quorum", "swarm managers", reason.clone()));
        }
        plan
    }

    fn apply(&self, host: &Host, _o: &Observed, actions: Vec<Change>) -> anyhow::Result<()> {
        let engine = Engine::connect(&host.docker_socket(self.docker_host).map_err(anyhow::Error::msg)?)?;
        let listen = self.want.listen_addr.to_string();
        for change in actions {
            match change {
                Change::Init { advertise } => {
                    tracing::debug!(target: "vakt::run", "engine API: swarm init --advertise-addr {advertise} --listen-addr {listen}");
                    engine.init_swarm(&advertise.to_string(), &listen)?;
                }
                Change::Join { advertise, token } => {
                    let role = self.joins().map_or("worker", Role::as_str);
                    let through = self.want.join.join(", ");
                    tracing::debug!(target: "vakt::run", "engine API: swarm join as {role} --advertise-addr {advertise} --listen-addr {listen} {through}");
                    engine.join_swarm(&advertise.to_string(), &listen, &self.want.join, &token).map_err(|e| {
                        anyhow::anyhow!(
                            "swarm join as {role} through {through} failed: {e:#}; the node was left as it was. Check that the {} holds the swarm's current {role} token (on a manager: docker swarm join-token -q {role}) and that a manager is reachable",
                            self.token_source(host.credentials_dir())
                        )
                    })?;
                }
            }
        }
        Ok(())
    }
}

impl Swarm<'_> {
    fn plan_active(&self, plan: &mut Plan<Change>, facts: &EngineFacts, want: Option<Role>, addr: IpAddr, why: &str) {
        let id = "swarm.node";
        let s = &facts.swarm;
        let is = if s.manager { "manager" } else { "worker" };
        let node = s.node_id.as_deref().unwrap_or("NODE");
        let Some(want) = want else {
            plan.pass(Finding::ok(id, format!("swarm {is} (the profile neither inits nor joins one)")));
            return;
        };
        if want != Role::Init && !self.want.join.iter().any(|j| s.remote_managers.contains(j)) {
            let mut f = Finding::new(id, format!("this node is a {is} of another swarm"), Status::Drift);
            f.evidence.push(format!("its managers: {}", list(&s.remote_managers)));
            f.evidence.push(format!("the profile joins through: {}", self.want.join.join(", ")));
            f.evidence.push(
                "vakt never leaves a swarm (the node's swarm state would be lost); if the managers moved, list them in [swarm] join"
                    .into(),
            );
            plan.pass(f);
            return;
        }
        if want.is_manager() && !s.manager {
            let mut f = Finding::new(
                id,
                format!("this node is a worker of a swarm; the profile wants a {}", want.as_str()),
                Status::Drift,
            );
            f.evidence.push(format!("on a manager, run: docker node promote {node}"));
            f.evidence.push(format!("managers it knows: {}", list(&s.remote_managers)));
            f.evidence.push("vakt never changes a node's role or leaves a swarm on its own".into());
            plan.pass(f);
            return;
        }
        if want == Role::Worker && s.manager {
            let mut f =
                Finding::new(id, "this node is a manager of a swarm; the profile wants a worker", Status::Drift);
            f.evidence.push(format!("on a manager, run: docker node demote {node} (mind the quorum)"));
            f.evidence.push("vakt never changes a node's role or leaves a swarm on its own".into());
            plan.pass(f);
            return;
        }
        let current = s.node_addr.clone().unwrap_or_default();
        let title = format!("swarm {is} advertising {current}");
        if current == addr.to_string() {
            plan.pass(Finding::ok(id, title).with_evidence(why));
        } else {
            let mut f = Finding::new(id, title, Status::Drift);
            f.evidence.push(format!("the profile resolves to {addr} ({why})"));
            f.evidence.push(if want == Role::Init {
                "re-initialising a swarm is destructive; vakt never does it on its own".into()
            } else {
                "changing it means leaving the swarm and joining again, which vakt never does on its own".into()
            });
            plan.pass(f);
        }
    }

    /// Lints of the profile: who may reach the swarm's ports, and the data plane's encryption.
    fn lint(&self, plan: &mut Plan<Change>) {
        let Some(role) = self.want.role else { return };
        let management = self.want.listen_addr.port();
        let mut ports = vec![(SWARM_GOSSIP_PORT, "gossip"), (SWARM_VXLAN_PORT, "overlay data (VXLAN)")];
        if role.is_manager() {
            ports.insert(0, (management, "management"));
        }
        let mut world_open = false;
        match (self.firewall, self.want.peers.is_empty()) {
            (None, false) => plan.warn(
                "[swarm] peers is set but the profile has no [firewall]: vakt opens and limits no swarm port"
                    .to_string(),
            ),
            (Some(fw), _) => {
                for (port, what) in &ports {
                    let open = fw
                        .rules
                        .iter()
                        .find(|r| r.from.is_none() && r.action.admits() && (r.ports.0..=r.ports.1).contains(port));
                    if let Some(rule) = open {
                        world_open = true;
                        plan.warn(format!(
                            "the firewall opens {}/{} (swarm {what}) to the world; list the nodes' networks in [swarm] peers and remove that rule",
                            rule.port_text(),
                            rule.proto.as_str()
                        ));
                    }
                }
            }
            (None, true) => {}
        }
        if self.want.peers.is_empty() && role.is_manager() && !world_open {
            plan.warn(format!(
                "swarm management listens on {}; keep it off the public internet ([swarm] peers with [firewall] limits it)",
                self.want.listen_addr
            ));
        }
        for peer in self.want.peers.iter().filter(|p| !is_private(p)) {
            plan.warn(format!(
                "peer network {peer} is public: overlay traffic (4789/udp, VXLAN) crosses it unencrypted unless overlay networks are created with --opt encrypted"
            ));
        }
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "none known".into() } else { items.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine_api::SwarmFacts;

    fn profile(text: &str) -> crate::profile::Profile {
        crate::profile::parse("t.toml", text).expect("valid profile")
    }

    fn facts(state: &str, manager: bool, managers: &[&str]) -> EngineFacts {
        EngineFacts {
            version: "20.10".into(),
            driver: "overlay2".into(),
            images: 0,
            containers: 0,
            swarm: SwarmFacts {
                state: SwarmState::from_word(state).expect("a swarm state"),
                manager,
                node_addr: (state == "active").then(|| "10.0.0.2".into()),
                node_id: (state == "active").then(|| "n2".into()),
                cluster_id: (state == "active" && manager).then(|| "c1".into()),
                remote_managers: managers.iter().map(|m| m.to_string()).collect(),
                error: None,
            },
            reloadable: Default::default(),
        }
    }

    fn observed(
        engine: EngineFacts,
        token: Option<Result<JoinToken, String>>,
        nodes: Option<Vec<NodeFacts>>,
    ) -> Observed {
        Observed {
            offline: false,
            engine: Ok(engine),
            address: Ok(("10.0.0.2".parse().expect("ip"), "given".into())),
            token,
            nodes: nodes.map(Ok),
        }
    }

    const WORKER: &str = "[swarm]\nrole = \"worker\"\njoin = [\"10.0.0.1\"]\nadvertise_addr = \"10.0.0.2\"\n";
    const TOKEN: &str = "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-1awxwuwd3z9j1z3puu7rcgdbx";

    fn plan_of(text: &str, o: &Observed) -> Plan<Change> {
        let p = profile(text);
        let s = Swarm::new(p.swarm.as_ref().expect("swarm"), None, p.firewall.as_ref());
        s.plan(o)
    }

    #[test]
    fn an_inactive_node_joins_and_the_plan_never_shows_the_token() {
        let token = token::parse(TOKEN.as_bytes()).expect("token");
        let plan = plan_of(WORKER, &observed(facts("inactive", false, &[]), Some(Ok(token)), None));
        assert_eq!(plan.actions.len(), 1);
        let f = &plan.findings[0];
        assert_eq!(f.status, Status::Drift);
        let change = f.change.as_deref().expect("change");
        assert!(change.contains("swarm join as worker") && change.contains("10.0.0.1:2377"), "{change}");
        assert!(change.contains("--token <credential swarm-join-token>"), "{change}");
        let all = format!("{:?} {:?}", plan.findings, plan.actions);
        assert!(!all.contains(TOKEN) && !all.contains("SWMTKN"), "{all}");
    }

    #[test]
    fn a_join_still_pending_is_unknown_and_names_the_engines_reason() {
        let mut pending = facts("pending", false, &[]);
        pending.swarm.error = Some("Timeout was reached before node joined".into());
        let plan = plan_of(WORKER, &observed(pending, None, None));
        assert!(plan.actions.is_empty(), "no second join over a pending one");
        let f = &plan.findings[0];
        assert_eq!(f.status, Status::Unknown);
        assert!(f.evidence.contains(&"the engine says: Timeout was reached before node joined".to_string()), "{f:?}");
    }

    #[test]
    fn a_token_that_cannot_be_read_fails_without_a_change() {
        let plan = plan_of(
            WORKER,
            &observed(facts("inactive", false, &[]), Some(Err("refusing the join token".into())), None),
        );
        assert!(plan.actions.is_empty());
        assert_eq!(plan.findings[0].status, Status::Failed);
    }

    #[test]
    fn the_right_swarm_and_role_is_a_no_op() {
        let plan = plan_of(WORKER, &observed(facts("active", false, &["10.0.0.1:2377"]), None, None));
        assert!(plan.actions.is_empty());
        assert_eq!(plan.findings[0].status, Status::Ok, "{:?}", plan.findings);
        assert_eq!(plan.facts, vec![Fact::text("role", "worker")]);
    }

    #[test]
    fn another_swarm_or_another_role_is_drift_and_never_acted_on() {
        let other = plan_of(WORKER, &observed(facts("active", false, &["192.0.2.9:2377"]), None, None));
        assert!(other.actions.is_empty());
        assert_eq!(other.findings[0].status, Status::Drift);
        assert!(other.findings[0].title.contains("another swarm"));
        let manager = WORKER.replace("worker", "manager");
        let worker = plan_of(&manager, &observed(facts("active", false, &["10.0.0.1:2377"]), None, None));
        assert!(worker.actions.is_empty());
        assert!(worker.findings[0].evidence.contains(&"on a manager, run: docker node promote n2".to_string()));
        let demote = plan_of(WORKER, &observed(facts("active", true, &["10.0.0.1:2377"]), None, None));
        assert!(demote.findings[0].title.contains("wants a worker"), "{:?}", demote.findings);
    }

    fn node(name: &str, manager: bool, reach: &str) -> NodeFacts {
        NodeFacts {
            id: format!("id-{name}"),
            hostname: name.into(),
            manager,
            leader: false,
            reachability: if manager { Reachability::from_word(reach) } else { None },
            state: crate::engine_api::NodeStatus::Ready,
            addr: "10.0.0.9".into(),
        }
    }

    #[test]
    fn quorum_counts_managers_and_warns_about_even_counts_and_unreachable_ones() {
        let manager = WORKER.replace("worker", "manager");
        let three = vec![
            node("a", true, "reachable"),
            node("b", true, "reachable"),
            node("c", true, "reachable"),
            node("w", false, ""),
        ];
        let plan = plan_of(&manager, &observed(facts("active", true, &["10.0.0.1:2377"]), None, Some(three)));
        let q = plan.findings.iter().find(|f| f.id == "swarm.quorum").expect("quorum");
        assert_eq!(
            (q.status, q.title.as_str()),
            (Status::Ok, "3 managers, all reachable: the swarm survives 1 manager failure")
        );
        assert!(plan.facts.iter().any(|f| f.name == "managers" && f.value == crate::resource::FactValue::Number(3)));
        assert!(!plan.warnings.iter().any(|w| w.contains("even count")));

        let two = vec![node("a", true, "reachable"), node("b", true, "unreachable")];
        let plan = plan_of(&manager, &observed(facts("active", true, &["10.0.0.1:2377"]), None, Some(two)));
        let q = plan.findings.iter().find(|f| f.id == "swarm.quorum").expect("quorum");
        assert_eq!((q.status, q.title.as_str()), (Status::Drift, "1 of 2 managers not reachable"));
        assert!(q.evidence.iter().any(|e| e.contains("manager b") && e.contains("unreachable")), "{:?}", q.evidence);
        assert!(
            plan.warnings.iter().any(|w| w.contains("2 managers: an even count tolerates no more failures than 1")),
            "{:?}",
            plan.warnings
        );
    }

    #[test]
    fn peers_lint_world_open_ports_and_public_networks() {
        let text = "[firewall]\n[[firewall.allow]]\nport = 22\n[[firewall.allow]]\nport = 2377\n[swarm]\npeers = [\"203.0.113.0/24\", \"10.0.0.0/24\"]\n";
        let plan = plan_of(text, &observed(facts("active", true, &["10.0.0.2:2377"]), None, None));
        let w = plan.warnings.join("\n");
        assert!(w.contains("the firewall opens 2377/tcp (swarm management) to the world"), "{w}");
        assert!(w.contains("peer network 203.0.113.0/24 is public") && w.contains("--opt encrypted"), "{w}");
        assert!(!w.contains("10.0.0.0/24 is public"), "{w}");
        let bare =
            plan_of("[swarm]\npeers = [\"10.0.0.0/24\"]\n", &observed(facts("inactive", false, &[]), None, None));
        assert!(bare.warnings.iter().any(|w| w.contains("no [firewall]")), "{:?}", bare.warnings);
    }
}
