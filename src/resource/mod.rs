//! The managed resources, one module each (alphabetical here; `ALL` below gives the order
//! they run in), and the registry that builds them from the profile.

pub mod docker;
pub mod exposure;
pub mod firewall;
pub mod host;
mod netaddr;
pub mod nginx;
pub mod packages;
pub mod probe;
mod ssh;
pub mod swarm;
pub mod tuning;

mod model;

pub use model::{Ahead, Fact, FactValue, Finding, Gauge, Managed, Plan, Resource, ResourceReport, Status};

use crate::profile::Profile;

/// Builds one resource from the profile; `None` when the profile has no section for it.
type Build = for<'p> fn(&'p Profile) -> Option<Box<dyn Managed + 'p>>;

fn boxed<'p, S, R: Managed + 'p>(
    section: Option<&'p S>,
    make: impl FnOnce(&'p S) -> R,
) -> Option<Box<dyn Managed + 'p>> {
    section.map(|s| Box::new(make(s)) as Box<dyn Managed + 'p>)
}

/// Every resource, in dependency order, with its id (what `--only` takes). The one list:
/// a new resource is a new module and a line here.
pub const ALL: &[(&str, Build)] = &[
    ("host", |p| boxed(p.host.as_ref(), host::HostVerdicts::new)),
    ("packages", |p| boxed(p.packages.as_ref(), packages::Packages::new)),
    ("firewall", |p| boxed(p.firewall.as_ref(), |f| firewall::Firewall::new(f, sensitive_ports(p)))),
    ("docker", |p| {
        boxed(p.docker.as_ref(), |d| {
            docker::Docker::new(d, p.swarm.as_ref().is_some_and(crate::profile::Swarm::in_swarm))
        })
    }),
    ("swarm", |p| {
        boxed(p.swarm.as_ref(), |s| {
            swarm::Swarm::new(s, p.docker.as_ref().and_then(|d| d.host.as_deref()), p.firewall.as_ref())
        })
    }),
    ("nginx", |p| boxed(p.nginx.as_ref(), |n| nginx::Nginx::new(n, world_open_ports(p)).with_profile(&p.origin))),
    ("tuning", |p| boxed(p.tuning.as_ref(), tuning::Tuning::new)),
    // Last: it audits what the others left reachable.
    ("exposure", |p| {
        boxed(p.firewall.as_ref(), |f| {
            exposure::Exposure::new(f, sensitive_ports(p), p.docker.as_ref().and_then(|d| d.host.as_deref()))
        })
    }),
];

/// The resource ids, in dependency order.
pub fn ids() -> impl Iterator<Item = &'static str> {
    ALL.iter().map(|(id, _)| *id)
}

/// Ports that should not be open to the world on this host: swarm management, gossip and
/// data plane, and the gateway behind nginx.
fn sensitive_ports(p: &Profile) -> Vec<(u16, String)> {
    let mut ports = Vec::new();
    if let Some(s) = &p.swarm {
        ports.push((s.listen_addr.port(), "swarm management".to_string()));
        if s.in_swarm() {
            ports.push((crate::profile::SWARM_GOSSIP_PORT, "swarm gossip; limit it with [swarm] peers".to_string()));
            ports.push((
                crate::profile::SWARM_VXLAN_PORT,
                "swarm overlay traffic, unencrypted; limit it with [swarm] peers".to_string(),
            ));
        }
    }
    if let Some(n) = &p.nginx {
        for u in &n.upstream {
            ports.push((u.port, "the gateway behind nginx; open, it bypasses the proxy".to_string()));
        }
    }
    ports
}

/// Ports the firewall profile opens to anyone.
fn world_open_ports(p: &Profile) -> Vec<u16> {
    let Some(f) = &p.firewall else { return Vec::new() };
    f.rules
        .iter()
        .filter(|r| r.from.is_none() && r.action.admits())
        .flat_map(|r| r.ports.0..=r.ports.1)
        .take(4096)
        .collect()
}
