//! The facts the exposure audit judges, read from the running system: listening sockets and
//! their owners (procfs), Docker's DNAT rules and ufw's loaded chains (`iptables-save`,
//! `ip6tables-save`). Parsing is a pure function of the saved tables.

use std::net::SocketAddr;

use crate::host::Host;
use crate::profile::{Firewall as Wanted, Proto, Published};
use crate::resource::firewall::published;

/// A socket the outside can address (not loopback): a listening TCP socket or an unconnected
/// UDP one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub proto: Proto,
    pub addr: SocketAddr,
    /// `nginx (pid 812)`, or None when no process was found holding it: a kernel socket (a
    /// VXLAN tunnel's, nfsd's), or a holder this run cannot see (in another PID namespace,
    /// not inspectable) or gone since the sockets were listed.
    pub owner: Option<String>,
}

/// A port Docker publishes, as its DNAT rule says: `--dport 8080` to `172.17.0.2:80`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dnat {
    pub proto: Proto,
    pub port: u16,
    pub to: String,
    /// `DOCKER` (a container's `-p`, or a service published in host mode) or `DOCKER-INGRESS`
    /// (swarm's routing mesh).
    pub chain: String,
    /// From `ip6tables-save`.
    pub v6: bool,
}

/// Whether ufw filters one address family's INPUT, as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// ufw's user chains for the family are loaded.
    Loaded,
    /// Not loaded: nothing of ufw's filters the family (disabled, flushed, failed at boot).
    NotLoaded,
    /// `IPV6=no` in /etc/default/ufw: ufw leaves IPv6 alone.
    Off,
    /// The family's live tables could not be read.
    Unknown(String),
}

/// What the kernel holds for one address family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    pub guard: Guard,
    /// vakt's rules are in DOCKER-USER and FORWARD sends traffic there first.
    pub block_loaded: bool,
}

impl Family {
    /// ufw's chains and vakt's block for one family, from its `iptables-save` output.
    pub fn from_save(save: &str, v6: bool, want: &Wanted) -> Family {
        let filter = published::parse_save(save, v6);
        let block_loaded = want.published == Published::Profile
            && filter.docker_user_hooked
            && filter
                .docker_user
                .as_deref()
                .is_some_and(|l| published::loaded_matches(l, &published::chain_rules(want, v6)));
        Family { guard: if filter.ufw_loaded { Guard::Loaded } else { Guard::NotLoaded }, block_loaded }
    }

    pub fn unread(why: String) -> Family {
        Family { guard: Guard::Unknown(why), block_loaded: false }
    }
}

/// The DNAT rules of Docker's nat chains in `iptables-save` (or `ip6tables-save`) output.
pub fn parse_dnat(save: &str, v6: bool) -> Vec<Dnat> {
    let mut out = Vec::new();
    for line in save.lines() {
        let Some((chain, rest)) = ["DOCKER", "DOCKER-INGRESS"]
            .iter()
            .find_map(|c| line.strip_prefix("-A ")?.strip_prefix(c)?.strip_prefix(' ').map(|r| (*c, r)))
        else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let after = |key: &str| words.iter().position(|w| *w == key).and_then(|i| words.get(i + 1)).copied();
        if after("-j") != Some("DNAT") {
            continue;
        }
        let proto = match after("-p") {
            Some("tcp") => Proto::Tcp,
            Some("udp") => Proto::Udp,
            _ => continue,
        };
        let (Some(port), Some(to)) = (after("--dport").and_then(|p| p.parse().ok()), after("--to-destination")) else {
            continue;
        };
        out.push(Dnat { proto, port, to: to.into(), chain: chain.into(), v6 });
    }
    out
}

/// Listening TCP sockets and unconnected UDP sockets on non-loopback addresses, both families,
/// with the process holding each.
pub fn listeners(host: &Host) -> anyhow::Result<Vec<Listener>> {
    let mut found: Vec<Listener> = crate::sockets::listeners(host, crate::sockets::Only::Reachable)?
        .into_iter()
        .map(|l| Listener {
            proto: l.proto,
            addr: l.addr,
            // A process names itself (prctl): its name is the user's text, escaped here.
            owner: l.holder.map(|h| format!("{} (pid {})", crate::escape::controls(&h.comm), h.pid)),
        })
        .collect();
    found.sort_by_key(|l| (l.proto, l.addr.port(), l.addr.is_ipv6(), l.addr.ip()));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dockers_dnat_rules_of_both_protocols() {
        let save = "*nat\n-A DOCKER -i docker0 -j RETURN\n\
            -A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80\n\
            -A DOCKER ! -i docker0 -p udp -m udp --dport 5353 -j DNAT --to-destination 172.17.0.2:53\n\
            -A DOCKER-INGRESS -p tcp -m tcp --dport 9000 -j DNAT --to-destination 172.18.0.2:9000\n\
            -A DOCKER-USER -p tcp -m tcp --dport 7000 -j DNAT --to-destination 10.0.0.1:7000\n\
            -A DOCKER ! -i docker0 -p sctp -m sctp --dport 3868 -j DNAT --to-destination 172.17.0.3:3868\nCOMMIT\n";
        let d = parse_dnat(save, false);
        let got: Vec<(Proto, u16, &str, &str)> =
            d.iter().map(|d| (d.proto, d.port, d.to.as_str(), d.chain.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (Proto::Tcp, 8080, "172.17.0.2:80", "DOCKER"),
                (Proto::Udp, 5353, "172.17.0.2:53", "DOCKER"),
                (Proto::Tcp, 9000, "172.18.0.2:9000", "DOCKER-INGRESS"),
            ],
            "not DOCKER-USER's, not sctp (ufw has no word for it)"
        );
        let v6 = parse_dnat(
            "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd00::2]:80\n",
            true,
        );
        assert!(v6[0].v6 && v6[0].to == "[fd00::2]:80", "{v6:?}");
    }

    fn want(text: &str) -> Wanted {
        crate::profile::parse("t", text).expect("valid").firewall.expect("firewall")
    }

    #[test]
    fn a_family_is_guarded_when_ufws_chains_are_loaded() {
        let w = want("[firewall]\n");
        let loaded = Family::from_save("*filter\n:ufw6-user-input - [0:0]\nCOMMIT\n", true, &w);
        assert_eq!(loaded, Family { guard: Guard::Loaded, block_loaded: false });
        let v4_chains_only = Family::from_save("*filter\n:ufw-user-input - [0:0]\nCOMMIT\n", true, &w);
        assert_eq!(v4_chains_only.guard, Guard::NotLoaded, "IPv6 needs ufw6's chains");
    }
}
