use std::collections::BTreeMap;

use super::*;
use crate::engine_api::{PublishMode, PublishedPort, Publisher};
use crate::resource::firewall::parse_rules;

fn want(text: &str) -> Wanted {
    crate::profile::parse("t", text).expect("valid").firewall.expect("firewall")
}

fn listener(proto: Proto, addr: &str, owner: &str) -> Listener {
    Listener { proto, addr: addr.parse().expect("addr"), owner: Some(owner.into()) }
}

const GUARDED: Family = Family { guard: Guard::Loaded, block_loaded: false };

/// A host with ufw loaded for both families (incoming deny, 80/tcp allowed), nginx on 80,
/// postgres on 5432, and Docker publishing 8080 with no names from the engine.
fn base() -> Facts {
    Facts {
        listeners: vec![
            listener(Proto::Tcp, "0.0.0.0:80", "nginx (pid 9)"),
            listener(Proto::Tcp, "0.0.0.0:5432", "postgres (pid 7)"),
        ],
        dnat: parse_dnat(
            "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80\n",
            false,
        ),
        ufw_enabled: true,
        v4: GUARDED,
        v6: GUARDED,
        v6_unread: None,
        incoming: Some(Policy::Deny),
        rules: parse_rules("### tuple ### allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in\n", None).0,
        names: Ok(Publications::default()),
    }
}

fn observed(facts: Facts) -> Observed {
    Observed { live: true, facts: Ok(facts) }
}

fn with_blocks(mut facts: Facts, loaded: bool) -> Facts {
    facts.v4.block_loaded = loaded;
    facts.v6.block_loaded = loaded;
    facts
}

fn judged(w: &Wanted, facts: Facts) -> BTreeMap<String, Finding> {
    Exposure::new(w, vec![], None).plan(&observed(facts)).findings.into_iter().map(|f| (f.id.clone(), f)).collect()
}

fn status(findings: &BTreeMap<String, Finding>, id: &str) -> Option<Status> {
    findings.get(id).map(|f| f.status)
}

#[test]
fn the_gateway_beside_nginx_is_linted_by_what_is_reachable() {
    let sensitive = vec![(8080, "the gateway behind nginx".to_string())];
    // The rule list says nothing about 8080, yet Docker publishes it to the world.
    let w = want("[firewall]\n[[firewall.allow]]\nport = 80\n");
    let plan = Exposure::new(&w, sensitive.clone(), None).plan(&observed(base()));
    assert!(
        plan.warnings.iter().any(|x| x.contains("port 8080 (the gateway behind nginx) is reachable")),
        "{:?}",
        plan.warnings
    );
    // A host rule for 8080 with the block loaded: still closed, no lint.
    let w = want(
        "[firewall]\npublished_ports = \"profile\"\n[[firewall.allow]]\nport = 80\n[[firewall.allow]]\nport = 8080\n",
    );
    assert!(Exposure::new(&w, sensitive, None).plan(&observed(with_blocks(base(), true))).warnings.is_empty());
}

#[test]
fn judges_each_reachable_port_by_its_path() {
    let w = want("[firewall]\n[[firewall.allow]]\nport = 80\n");
    let found = judged(&w, base());
    assert_eq!(status(&found, "exposure.tcp.80"), Some(Status::Ok));
    assert_eq!(status(&found, "exposure.tcp.8080"), Some(Status::Drift), "published, ufw or not");
    assert_eq!(status(&found, "exposure.tcp.5432"), None, "ufw filters it");
    let nginx = &found["exposure.tcp.80"];
    assert_eq!(nginx.title, "tcp/80 reachable from anywhere via nginx (pid 9) on 0.0.0.0:80; allowed by the profile");

    let w = want("[firewall]\npublished_ports = \"profile\"\n[[firewall.allow]]\nport = 80\n");
    assert!(!judged(&w, with_blocks(base(), true)).contains_key("exposure.tcp.8080"), "the block closes it");
    let found = judged(&w, base());
    let f = &found["exposure.tcp.8080"];
    assert!(f.status == Status::Drift && f.evidence[0].contains("not loaded"), "{f:?}");
}

fn gateway_mesh() -> Facts {
    let mut facts = base();
    facts.dnat = parse_dnat(
        "-A DOCKER-INGRESS -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.18.0.2:8080\n\
         -A DOCKER ! -i docker0 -p tcp -m tcp --dport 8081 -j DNAT --to-destination 172.17.0.2:80\n\
         -A DOCKER ! -i docker0 -p tcp -m tcp --dport 8082 -j DNAT --to-destination 172.17.0.3:80\n",
        false,
    );
    let port = |port, target, by| PublishedPort { proto: "tcp".into(), port, target, by };
    facts.names = Ok(Publications {
        ports: vec![
            port(8080, 8080, Publisher::Service { name: "func_gateway".into(), mode: PublishMode::Ingress }),
            port(8081, 80, Publisher::Container { name: "web".into(), service: None }),
            port(8082, 80, Publisher::Container { name: "svc.1.k2x9".into(), service: Some("svc".into()) }),
            port(8082, 80, Publisher::Service { name: "svc".into(), mode: PublishMode::Host }),
        ],
        services_unavailable: None,
    });
    facts
}

#[test]
fn published_ports_are_named_by_the_engine_and_keep_the_netfilter_path() {
    let w = want("[firewall]\n[[firewall.allow]]\nport = 80\n");
    let found = judged(&w, gateway_mesh());
    let gateway = &found["exposure.tcp.8080"];
    assert_eq!(
        gateway.title,
        "tcp/8080 reachable from anywhere via swarm ingress, service func_gateway; not allowed by the profile"
    );
    assert!(
        gateway.evidence[0].starts_with("path: IPv4: PREROUTING DNAT (DOCKER-INGRESS) to 172.18.0.2:8080 → FORWARD")
    );
    assert!(
        found["exposure.tcp.8082"].title.contains("via service svc in host mode;"),
        "{:?}",
        found["exposure.tcp.8082"]
    );

    // Governed by the profile: only what it allows for containers is reachable.
    let w = want(
        "[firewall]\npublished_ports = \"profile\"\n[[firewall.allow]]\nport = 8081\ntarget = \"containers\"\nfrom = \"10.0.0.0/8\"\n",
    );
    let found = judged(&w, with_blocks(gateway_mesh(), true));
    let web = &found["exposure.tcp.8081"];
    assert_eq!(
        (web.status, web.title.as_str()),
        (Status::Ok, "tcp/8081 reachable from 10.0.0.0/8 via container web (-p 8081:80); allowed by the profile")
    );
    assert_eq!((status(&found, "exposure.tcp.8080"), status(&found, "exposure.tcp.8082")), (None, None));
}

#[test]
fn without_names_the_dnat_facts_still_judge_and_the_evidence_says_why() {
    let w = want("[firewall]\n[[firewall.allow]]\nport = 80\n");
    let mut facts = gateway_mesh();
    facts.names = Err("Docker is not reachable: /run/docker.sock does not exist".into());
    let found = judged(&w, facts);
    let gateway = &found["exposure.tcp.8080"];
    assert_eq!(gateway.status, Status::Drift);
    assert!(gateway.title.contains("via swarm's routing mesh;"), "{}", gateway.title);
    assert!(gateway.evidence.iter().any(|e| e.contains("names unavailable") && e.contains("does not exist")));
    assert_eq!(status(&found, "exposure.tcp.8081"), Some(Status::Drift), "{found:?}");

    // A worker names its own host-mode tasks, not the routing mesh's services.
    let mut facts = gateway_mesh();
    let names = facts.names.as_mut().expect("names");
    names.ports.retain(|p| matches!(p.by, Publisher::Container { .. }));
    names.services_unavailable = Some("this node is a swarm worker".into());
    let found = judged(&w, facts);
    assert!(
        found["exposure.tcp.8080"]
            .evidence
            .iter()
            .any(|e| e == "service names unavailable: this node is a swarm worker")
    );
    assert!(found["exposure.tcp.8082"].title.contains("via service svc in host mode (task svc.1.k2x9);"));
}

#[test]
fn a_mesh_port_without_a_dnat_rule_is_judged_as_it_will_be() {
    let mut facts = gateway_mesh();
    facts.dnat.retain(|d| d.port != 8080);
    let w = want("[firewall]\n[[firewall.allow]]\nport = 80\n");
    let gateway = &judged(&w, facts.clone())["exposure.tcp.8080"];
    assert_eq!(gateway.status, Status::Drift);
    assert!(gateway.title.starts_with("tcp/8080 published by swarm ingress, service func_gateway, not reachable yet"));
    assert!(gateway.evidence[0].contains("no DNAT rule"), "{gateway:?}");
    // Governed: allowed for containers, ok; not allowed, closed and not listed.
    let allowed =
        want("[firewall]\npublished_ports = \"profile\"\n[[firewall.allow]]\nport = 8080\ntarget = \"containers\"\n");
    assert_eq!(status(&judged(&allowed, with_blocks(facts.clone(), true)), "exposure.tcp.8080"), Some(Status::Ok));
    let governed = want("[firewall]\npublished_ports = \"profile\"\n");
    assert_eq!(status(&judged(&governed, with_blocks(facts, true)), "exposure.tcp.8080"), None);
}

#[test]
fn udp_listeners_are_judged_by_ufws_udp_rules() {
    let mut facts = base();
    facts.listeners.push(listener(Proto::Udp, "0.0.0.0:5300", "perl (pid 11)"));
    let w = want("[firewall]\n[[firewall.allow]]\nport = 80\n");
    assert_eq!(status(&judged(&w, facts.clone()), "exposure.udp.5300"), None, "ufw drops it");
    // A tcp rule does not open it; an operator's udp rule does, and the profile lacks it.
    facts.rules.extend(parse_rules("### tuple ### allow tcp 5300 0.0.0.0/0 any 0.0.0.0/0 in\n", None).0);
    assert_eq!(status(&judged(&w, facts.clone()), "exposure.udp.5300"), None, "tcp only");
    facts.rules.extend(parse_rules("### tuple ### allow udp 5300 0.0.0.0/0 any 0.0.0.0/0 in\n", None).0);
    let found = judged(&w, facts.clone());
    assert_eq!(
        found["exposure.udp.5300"].title,
        "udp/5300 reachable from anywhere via perl (pid 11) on 0.0.0.0:5300; not allowed by the profile"
    );
    let w = want("[firewall]\n[[firewall.allow]]\nport = 5300\nproto = \"udp\"\n");
    assert_eq!(status(&judged(&w, facts), "exposure.udp.5300"), Some(Status::Ok));
}

/// Swarm's VXLAN socket is the kernel's: no process holds it, and the finding says what that
/// likely means rather than naming nobody.
#[test]
fn a_socket_no_process_holds_is_named_as_likely_the_kernels() {
    let mut facts = base();
    facts.listeners.push(Listener { proto: Proto::Udp, addr: "0.0.0.0:4789".parse().expect("addr"), owner: None });
    facts.rules.extend(parse_rules("### tuple ### allow udp 4789 0.0.0.0/0 any 0.0.0.0/0 in\n", None).0);
    let found = judged(&want("[firewall]\n"), facts);
    assert_eq!(
        found["exposure.udp.4789"].title,
        "udp/4789 reachable from anywhere via a socket no visible process holds (a kernel one: VXLAN, nfsd) on \
         0.0.0.0:4789; not allowed by the profile"
    );
}

#[test]
fn ipv6_sockets_are_judged_by_ufws_ipv6_state() {
    let mut facts = base();
    facts.listeners = vec![listener(Proto::Tcp, "[2001:db8::1]:5432", "postgres (pid 7)")];
    facts.dnat.clear();
    let w = want("[firewall]\n");
    assert_eq!(status(&judged(&w, facts.clone()), "exposure.tcp.5432"), None, "ufw6 drops it");
    facts.v6.guard = Guard::Off;
    let f = &judged(&w, facts.clone())["exposure.tcp.5432"];
    assert!(f.status == Status::Drift && f.evidence[0].contains("IPV6=no"), "{f:?}");
    facts.v6 = Family::unread("could not read the IPv6 tables: ip6tables-save: not found".into());
    facts.v6_unread = Some("could not read the IPv6 tables: ip6tables-save: not found".into());
    let found = judged(&w, facts);
    assert_eq!(status(&found, "exposure.tcp.5432"), Some(Status::Unknown));
    assert!(found["exposure.ipv6"].evidence[0].contains("ip6tables-save"));
}

#[test]
fn one_finding_per_port_lists_every_family_and_address() {
    let mut facts = base();
    facts.dnat.clear();
    facts.listeners =
        vec![listener(Proto::Tcp, "0.0.0.0:22", "sshd (pid 5)"), listener(Proto::Tcp, "[::]:22", "sshd (pid 5)")];
    facts.rules = parse_rules("### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n", None).0;
    facts.rules.extend(parse_rules("", Some("### tuple ### allow tcp 22 ::/0 any ::/0 in\n")).0);
    let w = want("[firewall]\n[[firewall.allow]]\nport = 22\n");
    let found = judged(&w, facts.clone());
    let ssh = &found["exposure.tcp.22"];
    assert_eq!(
        ssh.title,
        "tcp/22 reachable from anywhere via sshd (pid 5) on 0.0.0.0:22, [::]:22; allowed by the profile"
    );
    assert!(
        ssh.evidence.iter().any(|e| e.starts_with("path: [::]:22 (IPv6): ufw rule: allow 22/tcp from anywhere (v6)")),
        "{ssh:?}"
    );
    assert_eq!(found.keys().filter(|k| k.starts_with("exposure.tcp.")).count(), 1);

    // IPv6 rules not loaded while IPv4's are: reachable over IPv6 only, and ufw is not whole.
    facts.rules.retain(|t| !t.v6);
    facts.v6.guard = Guard::NotLoaded;
    let found = judged(&w, facts);
    assert!(found["exposure.tcp.22"].evidence.iter().any(|e| e.contains("IPv6 rules are not loaded")));
    assert_eq!(found["exposure.ufw-loaded"].evidence[0], "not loaded: IPv6");
}

#[test]
fn docker_publishing_over_ipv6_is_judged_by_the_ipv6_block() {
    let mut facts = with_blocks(base(), true);
    facts.v6.block_loaded = false;
    facts.dnat.extend(parse_dnat(
        "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd00::2]:80\n",
        true,
    ));
    let w = want("[firewall]\npublished_ports = \"profile\"\n[[firewall.allow]]\nport = 80\n");
    let f = &judged(&w, facts)["exposure.tcp.8080"];
    assert_eq!(f.status, Status::Drift);
    assert_eq!(f.evidence.len(), 1, "IPv4's block closes it: {f:?}");
    assert!(f.evidence[0].starts_with("path: IPv6: PREROUTING DNAT (DOCKER) to [fd00::2]:80"), "{f:?}");
}

/// Issue 22: a million listening sockets and a million DNAT rules used to take beyond 30 s
/// (every port rescanned every socket and rule); indexed once, the audit is linear. The
/// benchmark (`benches/bench.sh`, exposure at scale) holds the release build to 2 s.
#[test]
fn a_million_sockets_and_rules_are_audited_in_linear_time() {
    const N: usize = 1_000_000;
    let mut facts = base();
    facts.listeners = (0..N)
        .map(|i| Listener {
            proto: if i % 2 == 0 { Proto::Tcp } else { Proto::Udp },
            addr: std::net::SocketAddr::new(
                std::net::Ipv4Addr::from(0x0a00_0000 + (i as u32 / 60_000)).into(),
                1 + (i % 60_000) as u16,
            ),
            owner: Some(format!("x (pid {i})")),
        })
        .collect();
    let mut save = String::with_capacity(N * 100);
    for i in 0..N {
        save.push_str(&format!(
            "-A DOCKER ! -i docker0 -p tcp -m tcp --dport {} -j DNAT --to-destination 172.17.{}.{}:80\n",
            1 + i % 60_000,
            (i / 250) % 250,
            i % 250
        ));
    }
    let began = std::time::Instant::now();
    facts.dnat = parse_dnat(&save, false);
    assert_eq!(facts.dnat.len(), N);
    let plan = Exposure::new(&want("[firewall]\n[[firewall.allow]]\nport = 80\n"), vec![], None).plan(&observed(facts));
    let took = began.elapsed();
    assert_eq!(plan.findings.iter().filter(|f| f.id.starts_with("exposure.tcp.")).count(), 60_000);
    // Linear takes seconds in a debug build; the old quadratic audit took hours here.
    assert!(took < std::time::Duration::from_secs(60), "took {took:?}");
}
