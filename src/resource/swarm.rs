//! The `swarm` resource, through the Engine API only: init when inactive, otherwise report;
//! never re-initialised, never left. Join tokens are never requested.

use std::net::IpAddr;
use std::path::Path;

use super::{Finding, Plan, Resource, Status};
use crate::engine_api::{Engine, EngineFacts};
use crate::host::Host;
use crate::profile::{Advertise, Swarm as Wanted};
use crate::resource::netaddr;

#[derive(Debug)]
pub struct Observed {
    /// Preparing an image offline (`--root`): the swarm is joined or initialised at its first boot.
    offline: bool,
    engine: Result<EngineFacts, String>,
    /// The advertise address the profile resolves to here, and why.
    address: Result<(IpAddr, String), String>,
}

#[derive(Debug)]
pub struct Init {
    advertise: IpAddr,
}

pub struct Swarm<'p> {
    want: &'p Wanted,
    docker_host: Option<&'p Path>,
}

impl<'p> Swarm<'p> {
    pub fn new(want: &'p Wanted, docker_host: Option<&'p Path>) -> Self {
        Swarm { want, docker_host }
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

impl Resource for Swarm<'_> {
    type Observed = Observed;
    type Action = Init;

    fn id(&self) -> &'static str {
        "swarm"
    }

    fn unknown_fails_apply(&self) -> bool {
        true
    }

    fn observe(&self, host: &Host) -> anyhow::Result<Observed> {
        if !host.is_live() {
            let why = "an image prepared offline".to_string();
            return Ok(Observed { offline: true, engine: Err(why.clone()), address: Err(why) });
        }
        let engine = host.docker_socket(self.docker_host).and_then(|s| Engine::observe(&s));
        Ok(Observed { offline: false, engine, address: resolve(host, &self.want.advertise_addr) })
    }

    fn plan(&self, o: &Observed) -> Plan<Init> {
        let mut plan = Plan::default();
        let id = "swarm.node";
        if o.offline {
            plan.pass(Finding::deferred(id, "swarm state", "swarm init through the Engine API, as the profile says"));
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
        let (addr, why) = match &o.address {
            Ok(a) => a.clone(),
            Err(reason) => {
                let status = if s.state == "active" { Status::Unknown } else { Status::Failed };
                let mut f = Finding::new(id, format!("cannot choose the advertise address: {reason}"), status);
                f.evidence.push(format!("swarm is {}", s.state));
                plan.pass(f);
                return plan;
            }
        };
        match (s.state.as_str(), s.manager) {
            ("inactive", _) if self.want.init => {
                let cmd = format!(
                    "swarm init through the Engine API (docker swarm init --advertise-addr {addr} --listen-addr {})",
                    self.want.listen_addr
                );
                let f = Finding::drift(id, "swarm manager (not in a swarm yet)", cmd).with_evidence(why);
                plan.fix(f, Init { advertise: addr });
            }
            ("inactive", _) => plan.pass(Finding::ok(id, "not in a swarm (init = false)")),
            ("active", true) => {
                let node = s.node_addr.clone().unwrap_or_default();
                let title = format!("swarm manager advertising {node}");
                if node == addr.to_string() {
                    plan.pass(Finding::ok(id, title).with_evidence(why));
                } else {
                    let mut f = Finding::new(id, title, Status::Drift);
                    f.evidence.push(format!("the profile resolves to {addr} ({why})"));
                    f.evidence.push("re-initialising a swarm is destructive; vakt never does it on its own".into());
                    plan.pass(f);
                }
            }
            ("active", false) => {
                let mut f =
                    Finding::new(id, "this node is a worker of a swarm; the profile wants a manager", Status::Drift);
                f.evidence
                    .push(format!("swarm {}", s.cluster_id.as_deref().unwrap_or("(cluster id hidden from workers)")));
                f.evidence.push("vakt never leaves a swarm on its own".into());
                plan.pass(f);
            }
            (other, _) => plan.pass(Finding::unknown(
                id,
                format!("swarm is {other}"),
                "the node is neither in nor out of a swarm; see `docker info`",
            )),
        }
        if facts.swarm.state == "active" || self.want.init {
            plan.warn(format!(
                "swarm management listens on {}; keep it off the public internet",
                self.want.listen_addr
            ));
        }
        plan
    }

    fn apply(&self, host: &Host, _o: &Observed, actions: Vec<Init>) -> anyhow::Result<()> {
        let engine = Engine::connect(&host.docker_socket(self.docker_host).map_err(anyhow::Error::msg)?)?;
        for init in actions {
            tracing::debug!(target: "vakt::run", "engine API: swarm init --advertise-addr {} --listen-addr {}", init.advertise, self.want.listen_addr);
            engine.init_swarm(&init.advertise.to_string(), &self.want.listen_addr.to_string())?;
        }
        Ok(())
    }
}
