//! Choosing the swarm advertise address: the default-route interface's address, skipping the
//! interfaces Docker makes. Pure over `/proc/net/route` text and an address list.

use std::net::IpAddr;

/// Interfaces that never carry the node's own address.
fn skipped(iface: &str) -> bool {
    iface == "lo"
        || iface == "docker0"
        || iface == "docker_gwbridge"
        || iface.starts_with("veth")
        || iface.starts_with("br-")
}

fn usable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => !v6.is_loopback() && (v6.segments()[0] & 0xffc0) != 0xfe80 && !v6.is_unspecified(),
    }
}

/// The address on `iface`, IPv4 first.
pub fn address_of(iface: &str, addrs: &[(String, IpAddr)]) -> Option<IpAddr> {
    let mut own: Vec<IpAddr> = addrs.iter().filter(|(i, ip)| i == iface && usable(ip)).map(|(_, ip)| *ip).collect();
    own.sort_by_key(|ip| ip.is_ipv6());
    own.first().copied()
}

/// Picks the advertise address and says why.
pub fn pick_auto(routes: &str, addrs: &[(String, IpAddr)]) -> Result<(IpAddr, String), String> {
    let mut defaults: Vec<(u32, &str)> = routes
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (iface, dest, mask, metric) = (f.first()?, f.get(1)?, f.get(7)?, f.get(6)?);
            (*dest == "00000000" && *mask == "00000000").then(|| (metric.parse().unwrap_or(u32::MAX), *iface))
        })
        .filter(|(_, iface)| !skipped(iface))
        .collect();
    defaults.sort();
    let Some((_, iface)) = defaults.first() else {
        return Err(
            "no default route on a usable interface; set [swarm] advertise_addr to an address or interface".into()
        );
    };
    match address_of(iface, addrs) {
        Some(ip) => Ok((ip, format!("{ip} is the address of {iface}, the default-route interface"))),
        None => Err(format!("the default-route interface {iface} has no usable address; set [swarm] advertise_addr")),
    }
}

/// The live interface addresses.
pub fn interface_addresses() -> Vec<(String, IpAddr)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    addrs
        .filter_map(|a| {
            let sa = a.address?;
            let ip = if let Some(v4) = sa.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else {
                IpAddr::V6(sa.as_sockaddr_in6()?.ip())
            };
            Some((a.interface_name, ip))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

    fn addrs(list: &[(&str, &str)]) -> Vec<(String, IpAddr)> {
        list.iter().map(|(i, a)| (i.to_string(), a.parse().expect("ip"))).collect()
    }

    #[test]
    fn picks_the_default_route_interface_of_a_multi_nic_host() {
        let routes = format!(
            "{HEADER}eth1\t00000000\t0101A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0\n\
             eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
             eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
        );
        let a = addrs(&[("lo", "127.0.0.1"), ("eth0", "fe80::1"), ("eth0", "10.0.0.5"), ("eth1", "192.168.1.7")]);
        let (ip, why) = pick_auto(&routes, &a).expect("picked");
        assert_eq!(ip.to_string(), "10.0.0.5");
        assert!(why.contains("eth0"), "{why}");
    }

    #[test]
    fn skips_docker_bridges_and_fails_without_default_route() {
        let routes = format!("{HEADER}docker0\t00000000\t010011AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n");
        let a = addrs(&[("docker0", "172.17.0.1")]);
        assert!(pick_auto(&routes, &a).unwrap_err().contains("no default route"));
        let routes = format!("{HEADER}eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n");
        assert!(pick_auto(&routes, &addrs(&[("eth0", "10.0.0.5")])).is_err());
    }

    #[test]
    fn link_local_only_interface_has_no_usable_address() {
        let routes = format!("{HEADER}ens3\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n");
        let err = pick_auto(&routes, &addrs(&[("ens3", "169.254.3.3")])).unwrap_err();
        assert!(err.contains("no usable address"), "{err}");
    }
}
