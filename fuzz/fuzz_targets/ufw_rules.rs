#![no_main]
//! ufw's rules files as typed rules, and the firewall model's evaluation of them: any bytes
//! parse without a panic, and every rule read evaluates, for both families.

use libfuzzer_sys::fuzz_target;
use vakt::profile::{Policy, Proto};
use vakt::resource::firewall::model;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (rules, _) = vakt::resource::firewall::parse_rules(&text, Some(&text));
    for v6 in [false, true] {
        let family: Vec<model::UfwRule> = rules.iter().filter(|r| r.v6 == v6).cloned().collect();
        for src in model::witnesses(&family, model::any_net(v6)).into_iter().take(64) {
            let packet = model::Packet { src, dst: None, dport: 22, proto: Proto::Tcp };
            let _ = model::evaluate(&family, Policy::Deny, &packet);
        }
        let _ = model::reach(&family, Policy::Allow, v6, 443, Proto::Udp);
    }
});
