//! The exposure audit at scale, for `benches/bench.sh`: a million listening sockets and a
//! million Docker DNAT rules (as `iptables-save` prints them), judged against a profile.
//! Prints the time to parse the rules and the time to audit them.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use vakt::profile::{Policy, Proto};
use vakt::resource::Resource;
use vakt::resource::exposure::{Exposure, Facts, Family, Guard, Listener, Observed, parse_dnat};

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let listeners: Vec<Listener> = (0..n)
        .map(|i| Listener {
            proto: if i % 2 == 0 { Proto::Tcp } else { Proto::Udp },
            addr: SocketAddr::new(Ipv4Addr::from(0x0a00_0000 + (i as u32 / 60_000)).into(), 1 + (i % 60_000) as u16),
            owner: Some(format!("x (pid {i})")),
        })
        .collect();
    let mut save = String::with_capacity(n * 100);
    for i in 0..n {
        save.push_str(&format!(
            "-A DOCKER ! -i docker0 -p tcp -m tcp --dport {} -j DNAT --to-destination 172.17.{}.{}:80\n",
            1 + i % 60_000,
            (i / 250) % 250,
            i % 250
        ));
    }
    let want = vakt::profile::parse("bench", "[firewall]\n[[firewall.allow]]\nport = 80\n")
        .expect("profile")
        .firewall
        .expect("firewall");
    let began = Instant::now();
    let dnat = parse_dnat(&save, false);
    let parsed = began.elapsed();
    let guarded = Family { guard: Guard::Loaded, block_loaded: false };
    let facts = Facts {
        listeners,
        dnat,
        ufw_enabled: true,
        v4: guarded.clone(),
        v6: guarded,
        v6_unread: None,
        incoming: Some(Policy::Deny),
        rules: Vec::new(),
        names: Err("not asked".into()),
    };
    let audit = Instant::now();
    let plan = Exposure::new(&want, vec![], None).plan(&Observed { live: true, facts: Ok(facts) });
    let judged = audit.elapsed();
    println!(
        "exposure at scale ({n} sockets, {n} DNAT rules, {} findings): parse {:.0} ms, audit {:.0} ms, total {:.0} ms",
        plan.findings.len(),
        parsed.as_secs_f64() * 1000.0,
        judged.as_secs_f64() * 1000.0,
        began.elapsed().as_secs_f64() * 1000.0
    );
}
