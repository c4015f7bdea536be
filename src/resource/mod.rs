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

use std::collections::{BTreeSet, HashMap};

use crate::profile::Profile;

/// Builds one resource from the profile; `None` when the profile has no section for it.
type Build = for<'p> fn(&'p Profile) -> Option<Box<dyn Managed + 'p>>;

/// What a resource waits for, given the profile and the host.
type After = fn(&Profile, &crate::host::Host) -> &'static [&'static str];

fn boxed<'p, S, R: Managed + 'p>(
    section: Option<&'p S>,
    make: impl FnOnce(&'p S) -> R,
) -> Option<Box<dyn Managed + 'p>> {
    section.map(|s| Box::new(make(s)) as Box<dyn Managed + 'p>)
}

/// One resource of the registry.
pub struct Entry {
    /// What `--only` takes.
    pub id: &'static str,
    /// The resources whose apply this one waits for on this host (all earlier in `ALL`); it
    /// may converge at the same time as any other. What it waits for through them counts too.
    pub after: After,
    pub build: Build,
}

/// Every resource, in dependency order. The one list: a new resource is a new module and an
/// entry here.
pub const ALL: &[Entry] = &[
    Entry { id: "host", after: |_, _| &[], build: |p| boxed(p.host.as_ref(), host::HostVerdicts::new) },
    // Installs what the rest run.
    Entry { id: "packages", after: |_, _| &["host"], build: |p| boxed(p.packages.as_ref(), packages::Packages::new) },
    Entry {
        id: "firewall",
        after: |_, _| &["packages"],
        build: |p| boxed(p.firewall.as_ref(), |f| firewall::Firewall::new(f, sensitive_ports(p))),
    },
    // Restarts while the firewall converges where the two commute (see
    // `firewall::commutes_with_engine`: DOCKER-USER's rules must be in place before the
    // engine comes up); otherwise after it.
    Entry {
        id: "docker",
        after: |p, host| match &p.firewall {
            Some(f) if firewall::commutes_with_engine(f, host) => &["packages"],
            _ => &["firewall"],
        },
        build: |p| {
            boxed(p.docker.as_ref(), |d| {
                docker::Docker::new(d, p.swarm.as_ref().is_some_and(crate::profile::Swarm::in_swarm))
            })
        },
    },
    // After the firewall too: the swarm's ports are governed before it listens on them.
    Entry {
        id: "swarm",
        after: |_, _| &["docker", "firewall"],
        build: |p| {
            boxed(p.swarm.as_ref(), |s| {
                swarm::Swarm::new(s, p.docker.as_ref().and_then(|d| d.host.as_deref()), p.firewall.as_ref())
            })
        },
    },
    // Not after the engine: nginx's files, its master and `nginx -t` share nothing with
    // Docker, so nginx converges while Docker restarts. After the firewall: certbot's
    // challenge comes in through it. With TLS, after the swarm too: certbot runs the
    // operator's hooks, which may change anything.
    Entry {
        id: "nginx",
        after: |p, _| match p.nginx.as_ref().and_then(|n| n.tls.as_ref()) {
            Some(_) => &["firewall", "swarm"],
            None => &["firewall"],
        },
        build: |p| boxed(p.nginx.as_ref(), |n| nginx::Nginx::new(n, world_open_ports(p)).with_profile(&p.origin)),
    },
    // After the engine: a sysctl it also sets (forwarding) ends as the profile says.
    Entry { id: "tuning", after: |_, _| &["swarm", "nginx"], build: |p| boxed(p.tuning.as_ref(), tuning::Tuning::new) },
    // Last: it audits what the others left reachable.
    Entry {
        id: "exposure",
        after: |_, _| &["tuning"],
        build: |p| {
            boxed(p.firewall.as_ref(), |f| {
                exposure::Exposure::new(f, sensitive_ports(p), p.docker.as_ref().and_then(|d| d.host.as_deref()))
                    .expecting_manager(
                        p.swarm.as_ref().and_then(|s| s.role).is_some_and(crate::profile::Role::is_manager),
                    )
            })
        },
    },
];

/// What each resource waits for in `apply` on `host`, directly or through others.
pub fn waits(profile: &Profile, host: &crate::host::Host) -> HashMap<&'static str, BTreeSet<&'static str>> {
    let mut all: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    // In list order: what an entry waits for is complete before any later one reads it.
    for e in ALL {
        let mut waits = BTreeSet::new();
        for a in (e.after)(profile, host) {
            waits.insert(*a);
            waits.extend(all.get(a).into_iter().flatten().copied());
        }
        all.insert(e.id, waits);
    }
    all
}

/// The resource ids, in dependency order.
pub fn ids() -> impl Iterator<Item = &'static str> {
    ALL.iter().map(|e| e.id)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_resource_waits_only_for_earlier_ones() {
        let profiles = ["[firewall]\n[docker]\n", "[firewall]\npublished_ports = \"profile\"\n[docker]\n", ""];
        for profile in profiles.map(|p| crate::profile::parse("test", p).expect("profile")) {
            // Offline and this machine (read, never changed).
            for host in [crate::host::Host::new("/nonexistent"), crate::host::Host::new("/")] {
                for (i, e) in ALL.iter().enumerate() {
                    for a in (e.after)(&profile, &host) {
                        let at = ALL.iter().position(|x| x.id == *a);
                        assert!(at.is_some_and(|at| at < i), "{} waits for {a}, which is not before it", e.id);
                    }
                }
            }
        }
    }

    #[test]
    fn nginx_overlaps_the_engine_and_the_rest_wait_as_they_must() {
        let profile = crate::profile::parse("test", "[firewall]\n[docker]\n[swarm]\n[nginx]\n").expect("profile");
        // Offline (an image under --root), Docker waits for the firewall.
        let host = crate::host::Host::new("/nonexistent");
        let all = super::waits(&profile, &host);
        let waits = |id, other| all[id].contains(other);
        assert!(!waits("nginx", "docker") && !waits("nginx", "swarm"));
        assert!(waits("nginx", "firewall") && waits("nginx", "packages"));
        assert!(waits("docker", "firewall") && waits("swarm", "docker") && waits("swarm", "firewall"));
        for id in ids().filter(|id| *id != "exposure") {
            assert!(waits("exposure", id), "exposure audits after {id}");
        }
        let tls = "[firewall]\n[docker]\n[swarm]\n[nginx]\nserver_name = \"example.org\"\n[nginx.tls]\nemail = \"ops@example.org\"\ndomains = [\"example.org\"]\n";
        let tls = crate::profile::parse("test", tls).expect("profile");
        assert!(super::waits(&tls, &host)["nginx"].contains("swarm"), "certbot's hooks run after the swarm");
    }
}
