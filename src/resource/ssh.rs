//! Which port sshd really serves: its configuration, the current session, its sockets.
//! The firewall's lockout guard is built on this.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::host::Host;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshFacts {
    pub ports: BTreeSet<u16>,
    /// The operator's address when vakt runs inside an SSH session.
    pub client: Option<IpAddr>,
    pub evidence: Vec<String>,
}

pub fn discover(host: &Host) -> SshFacts {
    let mut facts = SshFacts::default();
    let mut configured = BTreeSet::new();
    if let Some(main) = host.read_opt("/etc/ssh/sshd_config") {
        configured.extend(config_ports(&main));
        let dropins = host.path("/etc/ssh/sshd_config.d");
        let mut files: Vec<_> = std::fs::read_dir(dropins)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        for f in files.iter().filter(|f| f.extension().is_some_and(|x| x == "conf")) {
            configured.extend(std::fs::read_to_string(f).map(|t| config_ports(&t)).unwrap_or_default());
        }
        if configured.is_empty() {
            configured.insert(22);
        }
        facts.evidence.push(format!("sshd_config: Port {}", join(&configured)));
    }
    facts.ports.extend(&configured);
    if let Ok(conn) = std::env::var("SSH_CONNECTION")
        && let Some((client, port)) = session(&conn)
    {
        facts.evidence.push(format!("this session (SSH_CONNECTION) is from {client} to port {port}"));
        facts.client = Some(client);
        facts.ports.insert(port);
    }
    let listening = listening_ports(host);
    if !listening.is_empty() {
        facts.evidence.push(format!("sshd listens on {}", join(&listening)));
        facts.ports.extend(listening);
    }
    if facts.ports.is_empty() {
        facts.evidence.push("no sshd configuration, session or socket found; assuming port 22".into());
        facts.ports.insert(22);
    }
    facts
}

fn join(ports: &BTreeSet<u16>) -> String {
    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
}

/// `Port` lines of an sshd_config (keywords are case-insensitive; only the first match of a
/// `Match` block's scope matters, and Port is not allowed there).
pub fn config_ports(text: &str) -> BTreeSet<u16> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let key = words.next()?;
            key.eq_ignore_ascii_case("port").then(|| words.next()?.parse().ok())?
        })
        .collect()
}

/// `SSH_CONNECTION` is "client_ip client_port server_ip server_port".
fn session(text: &str) -> Option<(IpAddr, u16)> {
    let f: Vec<&str> = text.split_whitespace().collect();
    Some((f.first()?.parse().ok()?, f.get(3)?.parse().ok()?))
}

/// TCP ports in LISTEN state on sockets held by processes named `sshd`.
fn listening_ports(host: &Host) -> BTreeSet<u16> {
    let mut inodes = BTreeSet::new();
    let Ok(procs) = std::fs::read_dir(host.path("/proc")) else { return BTreeSet::new() };
    for p in procs.filter_map(|e| e.ok()) {
        let dir = p.path();
        if !p.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if !std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim() == "sshd") {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(dir.join("fd")) else { continue };
        for fd in fds.filter_map(|e| e.ok()) {
            if let Ok(target) = std::fs::read_link(fd.path())
                && let Some(inode) =
                    target.to_str().and_then(|t| t.strip_prefix("socket:[")?.strip_suffix(']')?.parse::<u64>().ok())
            {
                inodes.insert(inode);
            }
        }
    }
    if inodes.is_empty() {
        return BTreeSet::new();
    }
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|t| host.read_opt(t))
        .flat_map(|t| listen_entries(&t))
        .filter(|(_, inode)| inodes.contains(inode))
        .map(|(port, _)| port)
        .collect()
}

/// (local port, inode) of LISTEN sockets in a /proc/net/tcp table.
fn listen_entries(table: &str) -> Vec<(u16, u64)> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.get(3) != Some(&"0A") {
                return None;
            }
            let port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            Some((port, f.get(9)?.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_port_lines_case_insensitively() {
        let ports = config_ports("# Port 99\nPort 2222\n  port 22 # second\nPermitRootLogin no\n");
        assert_eq!(ports.into_iter().collect::<Vec<_>>(), vec![22, 2222]);
        assert!(config_ports("Include /etc/ssh/sshd_config.d/*.conf\n").is_empty());
    }

    #[test]
    fn parses_session_and_listen_tables() {
        assert_eq!(session("203.0.113.9 51234 10.0.0.5 2222"), Some(("203.0.113.9".parse().expect("ip"), 2222)));
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1\n   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 4242 1\n";
        assert_eq!(listen_entries(table), vec![(2222, 31337)]);
    }
}
