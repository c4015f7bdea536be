//! Names for published ports, from the Engine API: what a user calls the thing that publishes
//! a port (`swarm ingress, service func_gateway`, `container web (-p 8081:80)`), matched to
//! the netfilter facts by (protocol, port). Pure functions.

use crate::engine_api::{Publications, PublishMode, PublishedPort, Publisher};
use crate::profile::Proto;

/// What the engine says publishes `proto/port`, one phrase per publisher. A swarm task's
/// container is named by its service when the service is listed too.
pub fn publishers(pubs: &Publications, proto: Proto, port: u16) -> Vec<String> {
    let here: Vec<&PublishedPort> = pubs.ports.iter().filter(|p| p.port == port && p.proto == proto.as_str()).collect();
    let listed = |svc: &str| {
        here.iter().any(|p| matches!(&p.by, Publisher::Service { name, mode: PublishMode::Host } if name == svc))
    };
    let mut out: Vec<String> = Vec::new();
    for p in &here {
        let phrase = match &p.by {
            Publisher::Service { name, mode: PublishMode::Ingress } => format!("swarm ingress, service {name}"),
            Publisher::Service { name, mode: PublishMode::Host } => format!("service {name} in host mode"),
            Publisher::Container { service: Some(svc), .. } if listed(svc) => continue,
            Publisher::Container { name, service: Some(svc) } => {
                format!("service {svc} in host mode (task {name})")
            }
            Publisher::Container { name, service: None } => {
                let udp = if proto == Proto::Udp { "/udp" } else { "" };
                format!("container {name} (-p {port}:{}{udp})", p.target)
            }
        };
        // Container and service names are whatever their creator chose: escaped here.
        let phrase = crate::escape::controls(&phrase);
        if !out.contains(&phrase) {
            out.push(phrase);
        }
    }
    out
}

/// The ports swarm publishes on the routing mesh, which every node of the swarm answers on
/// once its ingress network is set up (a host-mode port is only where a task runs, and the
/// containers list shows it there).
pub fn ingress_ports(pubs: &Publications) -> impl Iterator<Item = (Proto, u16)> + '_ {
    pubs.ports.iter().filter_map(|p| {
        let proto = match p.proto.as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return None,
        };
        matches!(p.by, Publisher::Service { mode: PublishMode::Ingress, .. }).then_some((proto, p.port))
    })
}

/// Why names are missing for a published port nobody named: the engine did not answer, or
/// this node cannot list services.
pub fn why_unnamed(pubs: &Result<Publications, String>) -> Option<String> {
    match pubs {
        Err(e) => Some(format!("names unavailable, Docker's DNAT rules only: {e}")),
        Ok(p) => p.services_unavailable.as_ref().map(|e| format!("service names unavailable: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(proto: &str, port: u16, target: u16, by: Publisher) -> PublishedPort {
        PublishedPort { proto: proto.into(), port, target, by }
    }

    fn container(name: &str, service: Option<&str>) -> Publisher {
        Publisher::Container { name: name.into(), service: service.map(Into::into) }
    }

    fn service(name: &str, mode: PublishMode) -> Publisher {
        Publisher::Service { name: name.into(), mode }
    }

    #[test]
    fn names_what_publishes_each_port() {
        let pubs = Publications {
            ports: vec![
                port("tcp", 8080, 8080, service("func_gateway", PublishMode::Ingress)),
                port("tcp", 8081, 80, container("web", None)),
                port("udp", 8081, 53, container("dns", None)),
                port("tcp", 8082, 80, container("svc.1.k2x9", Some("svc"))),
                port("tcp", 8082, 80, service("svc", PublishMode::Host)),
                port("tcp", 8083, 80, container("api.1.q7", Some("api"))),
            ],
            services_unavailable: None,
        };
        assert_eq!(publishers(&pubs, Proto::Tcp, 8080), ["swarm ingress, service func_gateway"]);
        assert_eq!(publishers(&pubs, Proto::Tcp, 8081), ["container web (-p 8081:80)"]);
        assert_eq!(publishers(&pubs, Proto::Udp, 8081), ["container dns (-p 8081:53/udp)"]);
        assert_eq!(publishers(&pubs, Proto::Tcp, 8082), ["service svc in host mode"], "the task is the service's");
        assert_eq!(publishers(&pubs, Proto::Tcp, 8083), ["service api in host mode (task api.1.q7)"]);
        assert!(publishers(&pubs, Proto::Tcp, 9000).is_empty());
        assert_eq!(ingress_ports(&pubs).collect::<Vec<_>>(), [(Proto::Tcp, 8080)]);
    }

    #[test]
    fn says_why_a_port_has_no_name() {
        assert_eq!(why_unnamed(&Ok(Publications::default())), None);
        let worker = Publications { ports: vec![], services_unavailable: Some("this node is a swarm worker".into()) };
        assert_eq!(why_unnamed(&Ok(worker)).as_deref(), Some("service names unavailable: this node is a swarm worker"));
        let down = why_unnamed(&Err("Docker is not reachable: /run/docker.sock does not exist".into()));
        assert!(down.is_some_and(|w| w.contains("DNAT rules only") && w.contains("does not exist")));
    }
}
