//! The managed resources, one module each, listed in dependency order.

pub mod docker;
pub mod firewall;
pub mod host;
mod netaddr;
pub mod nginx;
pub mod packages;
mod ssh;
pub mod swarm;
pub mod tuning;

use crate::engine::Managed;
use crate::profile::Profile;

/// What the registry holds for one resource id.
pub enum Slot<'p> {
    Managed(Box<dyn Managed + 'p>),
    /// The profile has no section for it.
    Absent,
}

fn slot<'p, S, R: Managed + 'p>(section: Option<&'p S>, make: impl FnOnce(&'p S) -> R) -> Slot<'p> {
    match section {
        Some(s) => Slot::Managed(Box::new(make(s))),
        None => Slot::Absent,
    }
}

/// One slot per id in `engine::RESOURCE_IDS`, in that order.
pub fn all(p: &Profile) -> Vec<Slot<'_>> {
    vec![
        slot(p.host.as_ref(), host::HostVerdicts::new),
        slot(p.packages.as_ref(), packages::Packages::new),
        slot(p.firewall.as_ref(), |f| firewall::Firewall::new(f, sensitive_ports(p))),
        slot(p.docker.as_ref(), |d| docker::Docker::new(d, p.swarm.as_ref().is_some_and(|s| s.init))),
        slot(p.swarm.as_ref(), |s| swarm::Swarm::new(s, p.docker.as_ref().and_then(|d| d.host.as_deref()))),
        slot(p.nginx.as_ref(), |n| nginx::Nginx::new(n, &p.source, world_open_ports(p))),
        slot(p.tuning.as_ref(), tuning::Tuning::new),
    ]
}

/// Ports that should not be open to the world on this host: swarm management and the
/// gateway behind nginx.
fn sensitive_ports(p: &Profile) -> Vec<(u16, String)> {
    let mut ports = Vec::new();
    if let Some(s) = &p.swarm {
        ports.push((s.listen_addr.port(), "swarm management".to_string()));
    }
    if let Some(n) = &p.nginx {
        for u in &n.upstream {
            if let Some(port) = u.rsplit(':').next().and_then(|x| x.parse().ok()) {
                ports.push((port, "the gateway behind nginx; open, it bypasses the proxy".to_string()));
            }
        }
    }
    ports
}

/// Ports the firewall profile opens to anyone.
fn world_open_ports(p: &Profile) -> Vec<u16> {
    let Some(f) = &p.firewall else { return Vec::new() };
    f.allow.iter().filter(|r| r.from.is_none()).flat_map(|r| r.ports.0..=r.ports.1).take(4096).collect()
}
