//! The `exposure` audit: what the outside can reach, from facts, not intent. Listening
//! sockets and their owners (procfs), ports Docker publishes (the DNAT rules it loaded), and
//! whether ufw's rules and vakt's DOCKER-USER block are in the kernel, judged against the
//! profile. Read-only: it plans no action. Runs last, so that `apply` reports what it left.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

use super::firewall::{Tuple, parse_rules, published, setting};
use super::{Finding, Plan, Resource, Status};
use crate::host::Host;
use crate::profile::{Firewall as Wanted, Policy, Proto, Published, Target};

/// A TCP socket listening on an address the outside can address (not loopback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    /// `nginx (pid 812)`, or None when no process could be found (another namespace).
    pub owner: Option<String>,
}

/// A port Docker publishes, as its DNAT rule says: `--dport 8080` to `172.17.0.2:80`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dnat {
    pub port: u16,
    pub proto: String,
    pub to: String,
    /// `DOCKER` (a container's `-p`, or a service published in host mode) or `DOCKER-INGRESS`
    /// (swarm's routing mesh).
    pub chain: String,
}

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
    pub ufw_loaded: bool,
    pub incoming: Option<Policy>,
    pub rules: Vec<Tuple>,
    /// vakt's rules are in DOCKER-USER and FORWARD sends traffic there first.
    pub block_loaded: bool,
}

/// The DNAT rules of Docker's nat chains in `iptables-save` output.
pub fn parse_dnat(save: &str) -> Vec<Dnat> {
    let mut out = Vec::new();
    for line in save.lines() {
        let Some(rest) = ["-A DOCKER ", "-A DOCKER-INGRESS "].iter().find_map(|p| line.strip_prefix(p).map(|r| (p, r)))
        else {
            continue;
        };
        let words: Vec<&str> = rest.1.split_whitespace().collect();
        let after = |key: &str| words.iter().position(|w| *w == key).and_then(|i| words.get(i + 1)).copied();
        if after("-j") != Some("DNAT") {
            continue;
        }
        let (Some(port), Some(proto), Some(to)) =
            (after("--dport").and_then(|p| p.parse().ok()), after("-p"), after("--to-destination"))
        else {
            continue;
        };
        let chain = rest.0.trim_start_matches("-A ").trim().to_string();
        out.push(Dnat { port, proto: proto.into(), to: to.into(), chain });
    }
    out
}

pub struct Exposure<'p> {
    want: &'p Wanted,
    /// Ports that should not be reachable from the world, with the reason (swarm management,
    /// the gateway behind nginx): linted by real exposure, not by the rule list.
    sensitive: Vec<(u16, String)>,
}

impl<'p> Exposure<'p> {
    pub fn new(want: &'p Wanted, sensitive: Vec<(u16, String)>) -> Self {
        Exposure { want, sensitive }
    }

    fn lint(&self, plan: &mut Plan<()>, port: u16, world: bool, path: &str) {
        if let Some((_, why)) = self.sensitive.iter().find(|(p, _)| *p == port).filter(|_| world) {
            plan.warn(format!("port {port} ({why}) is reachable from the world: {path}"));
        }
    }
}

fn admits(t: &Tuple, port: u16) -> bool {
    let covers = match t.dport.split_once(':') {
        Some((a, b)) => a.parse::<u16>().is_ok_and(|a| a <= port) && b.parse::<u16>().is_ok_and(|b| port <= b),
        None => t.dport == port.to_string() || t.dport == "any",
    };
    !t.foreign && (t.action == "allow" || t.action == "limit") && covers && (t.proto == "tcp" || t.proto == "any")
}

/// Listening TCP sockets on non-loopback addresses, with the process holding each.
fn listeners(host: &Host) -> anyhow::Result<Vec<Listener>> {
    let mut entries = procfs::net::tcp().context("failed to read /proc/net/tcp")?;
    entries.extend(procfs::net::tcp6().unwrap_or_default());
    let mut wanted: HashMap<u64, SocketAddr> = entries
        .into_iter()
        .filter(|e| e.state == procfs::net::TcpState::Listen && !e.local_address.ip().is_loopback())
        .map(|e| (e.inode, e.local_address))
        .collect();
    let mut found = Vec::new();
    let procs = procfs::process::all_processes_with_root(host.path("/proc")).context("failed to list processes")?;
    for process in procs.flatten() {
        if wanted.is_empty() {
            break;
        }
        let Ok(fds) = process.fd() else { continue };
        for fd in fds.flatten() {
            if let procfs::process::FDTarget::Socket(inode) = fd.target
                && let Some(addr) = wanted.remove(&inode)
            {
                let comm = process.stat().map(|s| s.comm).unwrap_or_default();
                found.push(Listener { addr, owner: Some(format!("{comm} (pid {})", process.pid)) });
            }
        }
    }
    found.extend(wanted.into_values().map(|addr| Listener { addr, owner: None }));
    found.sort_by_key(|l| (l.addr.port(), l.addr.is_ipv6()));
    Ok(found)
}

fn observe_live(host: &Host, want: &Wanted) -> anyhow::Result<Facts> {
    let conf = host.read("/etc/ufw/ufw.conf")?;
    let defaults = host.read("/etc/default/ufw")?;
    let save = host.runner.run_ok(&["iptables-save"], Duration::from_secs(10))?.stdout;
    let filter = published::parse_save(&save, false);
    let block_loaded = want.published == Published::Profile
        && filter.docker_user_hooked
        && filter
            .docker_user
            .as_deref()
            .is_some_and(|l| published::loaded_matches(l, &published::chain_rules(want, false)));
    Ok(Facts {
        listeners: listeners(host)?,
        dnat: parse_dnat(&save),
        ufw_enabled: setting(&conf, "ENABLED").is_some_and(|v| v == "yes"),
        ufw_loaded: filter.ufw_loaded,
        incoming: setting(&defaults, "DEFAULT_INPUT_POLICY").and_then(|v| Policy::parse(&v)),
        rules: parse_rules(&host.read("/etc/ufw/user.rules")?, false),
        block_loaded,
    })
}

impl Resource for Exposure<'_> {
    type Observed = Observed;
    type Action = ();

    fn id(&self) -> &'static str {
        "exposure"
    }

    fn observe(&self, host: &Host) -> anyhow::Result<Observed> {
        if !host.is_live() {
            return Ok(Observed { live: false, facts: Err(String::new()) });
        }
        Ok(Observed { live: true, facts: observe_live(host, self.want).map_err(|e| format!("{e:#}")) })
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
        let want = self.want;
        let host_allowed = |port: u16| want.host_rules().any(|r| r.action.admits() && r.covers(port, Proto::Tcp));
        let dnat_ports: BTreeMap<u16, &Dnat> =
            facts.dnat.iter().filter(|d| d.proto == "tcp").map(|d| (d.port, d)).collect();

        // The host's own sockets: INPUT, where ufw decides when its rules are loaded.
        let mut seen = std::collections::BTreeSet::new();
        for l in &facts.listeners {
            let port = l.addr.port();
            let owner = l.owner.clone().unwrap_or_else(|| "no process found".into());
            // docker-proxy's sockets are the published ports, judged below.
            if owner.starts_with("docker-proxy") || dnat_ports.contains_key(&port) || !seen.insert(port) {
                continue;
            }
            let path = if !facts.ufw_loaded {
                Some(("ufw's rules are not loaded in netfilter: nothing filters INPUT".to_string(), true))
            } else if facts.incoming == Some(Policy::Allow) {
                Some(("ufw's incoming policy is allow".to_string(), true))
            } else {
                facts.rules.iter().find(|t| admits(t, port)).map(|t| {
                    let world = t.src == "0.0.0.0/0" || t.src == "::/0";
                    (format!("ufw rule: allow {}/{} from {}", t.dport, t.proto, t.src), world)
                })
            };
            let Some((path, world)) = path else { continue };
            self.lint(&mut plan, port, world, &format!("{owner}, {path}"));
            let id = format!("exposure.tcp.{port}");
            let title = format!("tcp/{port} reachable from outside: {owner} on {}", l.addr);
            let status = if host_allowed(port) { Status::Ok } else { Status::Drift };
            let verdict = if status == Status::Ok { "allowed by the profile" } else { "not allowed by the profile" };
            plan.pass(Finding::new(id, title, status).with_evidence(format!("{verdict}; path: {path}")));
        }

        // Published ports: DNATed in PREROUTING, judged in FORWARD, never in ufw's INPUT.
        for d in dnat_ports.values() {
            let container_rule =
                want.rules.iter().find(|r| r.target == Target::Containers && r.covers(d.port, Proto::Tcp));
            let reachable = match container_rule {
                _ if !facts.block_loaded => true,
                Some(r) => r.action.admits(),
                None => want.routed == Policy::Allow,
            };
            if !reachable {
                continue;
            }
            let world = !facts.block_loaded || container_rule.is_none_or(|r| r.from.is_none());
            self.lint(&mut plan, d.port, world, &format!("Docker publishes it (DNAT to {}), through FORWARD", d.to));
            let what = if d.chain == "DOCKER-INGRESS" { "swarm routing mesh" } else { "published by Docker" };
            let id = format!("exposure.tcp.{}", d.port);
            let title = format!("tcp/{} reachable from outside: {what}, DNAT to {}", d.port, d.to);
            let (status, why) = match (facts.block_loaded, container_rule) {
                (true, Some(_)) => (Status::Ok, "allowed by the profile (target = \"containers\")".to_string()),
                (true, None) => (Status::Drift, "routed policy allow lets every published port through".into()),
                (false, _) if want.published == Published::Profile => (
                    Status::Drift,
                    "vakt's DOCKER-USER rules are not loaded: Docker's FORWARD rules accept it, ufw never sees it"
                        .into(),
                ),
                (false, Some(r)) if r.action.admits() => {
                    (Status::Ok, "allowed by the profile (Docker's FORWARD rules accept it)".to_string())
                }
                (false, _) => (
                    Status::Drift,
                    "not allowed by the profile: Docker's FORWARD rules accept it before ufw's, whatever ufw says; \
                     set published_ports = \"profile\""
                        .into(),
                ),
            };
            plan.pass(
                Finding::new(id, title, status)
                    .with_evidence(format!("path: PREROUTING DNAT ({}) → FORWARD; {why}", d.chain)),
            );
        }
        if facts.ufw_enabled && !facts.ufw_loaded {
            plan.pass(
                Finding::new(
                    "exposure.ufw-loaded",
                    "ufw is enabled in ufw.conf but not loaded in netfilter",
                    Status::Drift,
                )
                .with_evidence("run `ufw reload` (vakt apply does)"),
            );
        }
        plan
    }

    fn apply(&self, _host: &Host, _o: &Observed, _actions: Vec<()>) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dockers_dnat_rules() {
        let save = "*nat\n-A DOCKER -i docker0 -j RETURN\n\
            -A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80\n\
            -A DOCKER-INGRESS -p tcp -m tcp --dport 9000 -j DNAT --to-destination 172.18.0.2:9000\nCOMMIT\n";
        let d = parse_dnat(save);
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].port, d[0].to.as_str(), d[0].chain.as_str()), (8080, "172.17.0.2:80", "DOCKER"));
        assert_eq!(d[1].chain, "DOCKER-INGRESS");
    }

    fn facts(block_loaded: bool) -> Observed {
        Observed {
            live: true,
            facts: Ok(Facts {
                listeners: vec![
                    Listener { addr: "0.0.0.0:80".parse().expect("addr"), owner: Some("nginx (pid 9)".into()) },
                    Listener { addr: "0.0.0.0:5432".parse().expect("addr"), owner: Some("postgres (pid 7)".into()) },
                ],
                dnat: parse_dnat(
                    "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80\n",
                ),
                ufw_enabled: true,
                ufw_loaded: true,
                incoming: Some(Policy::Deny),
                rules: parse_rules("### tuple ### allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in\n", false),
                block_loaded,
            }),
        }
    }

    #[test]
    fn the_gateway_beside_nginx_is_linted_by_what_is_reachable() {
        let sensitive = vec![(8080, "the gateway behind nginx".to_string())];
        // The rule list says nothing about 8080, yet Docker publishes it to the world.
        let w = want("[firewall]\n[[firewall.allow]]\nport = 80\n");
        let plan = Exposure::new(&w, sensitive.clone()).plan(&facts(false));
        assert!(
            plan.warnings.iter().any(|x| x.contains("port 8080 (the gateway behind nginx) is reachable")),
            "{:?}",
            plan.warnings
        );
        // A host rule for 8080 with the block loaded: still closed, no lint.
        let w = want(
            "[firewall]\npublished_ports = \"profile\"\n[[firewall.allow]]\nport = 80\n[[firewall.allow]]\nport = 8080\n",
        );
        assert!(Exposure::new(&w, sensitive).plan(&facts(true)).warnings.is_empty());
    }

    fn want(text: &str) -> Wanted {
        crate::profile::parse("t", text).expect("valid").firewall.expect("firewall")
    }

    #[test]
    fn judges_each_reachable_port_by_its_path() {
        let w = want("[firewall]\n[[firewall.allow]]\nport = 80\n");
        let plan = Exposure::new(&w, vec![]).plan(&facts(false));
        let by_id: BTreeMap<&str, Status> = plan.findings.iter().map(|f| (f.id.as_str(), f.status)).collect();
        assert_eq!(by_id.get("exposure.tcp.80"), Some(&Status::Ok));
        assert_eq!(by_id.get("exposure.tcp.8080"), Some(&Status::Drift), "published, ufw or not");
        assert_eq!(by_id.get("exposure.tcp.5432"), None, "ufw filters it");

        let w = want("[firewall]\npublished_ports = \"profile\"\n[[firewall.allow]]\nport = 80\n");
        let plan = Exposure::new(&w, vec![]).plan(&facts(true));
        assert!(!plan.findings.iter().any(|f| f.id == "exposure.tcp.8080"), "the block closes it: {:?}", plan.findings);
        let plan = Exposure::new(&w, vec![]).plan(&facts(false));
        let f = plan.findings.iter().find(|f| f.id == "exposure.tcp.8080").expect("finding");
        assert!(f.status == Status::Drift && f.evidence[0].contains("not loaded"), "{f:?}");
    }
}
