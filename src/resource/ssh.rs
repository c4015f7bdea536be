//! Which ports sshd really serves: `sshd -T` where it can run (the authority), else its
//! configuration files as sshd reads them (Include, Match, ListenAddress), systemd's
//! `ssh.socket` when SSH is socket-activated, the current session, and sshd's own sockets.
//! The firewall's lockout guard is built on this.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::host::Host;
use crate::profile::Proto;

mod kept;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshFacts {
    pub ports: BTreeSet<u16>,
    /// The operator's address when vakt runs inside an SSH session.
    pub client: Option<IpAddr>,
    pub evidence: Vec<String>,
}

const SSHD_CONFIG: &str = "/etc/ssh/sshd_config";

pub fn discover(host: &Host) -> SshFacts {
    let mut facts = SshFacts::default();
    let socket = socket_unit_ports(host);
    if let Some((ports, source)) = configured_ports(host) {
        // With socket activation and no standalone ssh.service, PID 1 listens where the socket
        // unit says; sshd_config's Port is not listened on (Ubuntu's generator turns it into a
        // socket drop-in, which the unit read already includes).
        if socket.is_some() && !service_enabled(host) {
            facts
                .evidence
                .push(format!("{source}: port {} (not listened on: ssh.socket listens instead)", join(&ports)));
        } else {
            facts.evidence.push(format!("{source}: port {}", join(&ports)));
            facts.ports.extend(ports);
        }
    }
    if let Some((ports, source)) = socket {
        facts.evidence.push(format!("{source} (socket activation): port {}", join(&ports)));
        facts.ports.extend(ports);
    }
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
        facts.evidence.push("no sshd configuration, socket unit, session or socket found; assuming port 22".into());
        facts.ports.insert(22);
    }
    facts
}

fn join(ports: &BTreeSet<u16>) -> String {
    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
}

/// The ports sshd's configuration makes it listen on, and where that was learnt.
fn configured_ports(host: &Host) -> Option<(BTreeSet<u16>, String)> {
    if !host.path(SSHD_CONFIG).exists() {
        return None;
    }
    let mut config = SshdConfig::default();
    read_config(host, Path::new(SSHD_CONFIG), &mut config, 0);
    // `sshd -T` resolves everything exactly as sshd will, but reads the live /etc/ssh: only
    // on the running system. It needs root and /run/sshd; when it cannot run, read the files.
    // Its answer is kept while nothing it read has changed.
    if host.is_live() {
        let stamp = kept::stamp(host, &config.read, kept::binary().as_deref());
        if !config.unstamped
            && let Some(ports) = kept::read(host, &stamp)
        {
            return Some((ports, "sshd -T (kept: its configuration is unchanged)".into()));
        }
        if let Ok(out) = host.runner.run(&["sshd", "-T"], &[], Duration::from_secs(10))
            && out.success
        {
            let ports = effective_ports(&out.stdout);
            if !ports.is_empty() {
                if !config.unstamped {
                    kept::write(host, &stamp, &ports);
                }
                return Some((ports, "sshd -T".into()));
            }
        }
    }
    Some((config.ports(), SSHD_CONFIG.into()))
}

/// The `port` and `listenaddress` lines of `sshd -T` output (lowercase keywords, one value each).
pub fn effective_ports(dump: &str) -> BTreeSet<u16> {
    let mut config = SshdConfig::default();
    for line in dump.lines() {
        config.keyword(line, false);
    }
    config.ports()
}

/// What sshd listens on, as its configuration says.
#[derive(Debug, Default)]
struct SshdConfig {
    ports: Vec<u16>,
    /// ListenAddress entries: the port when given (`host:port`, `[v6]:port`), else `None`.
    listen: Vec<Option<u16>>,
    /// Every file and Include directory read, as on the host: what sshd's answer rests on.
    read: Vec<PathBuf>,
    /// An Include this reader cannot follow exactly: sshd is asked every time.
    unstamped: bool,
}

impl SshdConfig {
    /// ListenAddress without a port listens on every Port; no ListenAddress means every
    /// address on every Port (22 when none is set).
    fn ports(&self) -> BTreeSet<u16> {
        let ports: BTreeSet<u16> =
            if self.ports.is_empty() { [22].into() } else { self.ports.iter().copied().collect() };
        if self.listen.is_empty() {
            return ports;
        }
        self.listen.iter().flat_map(|l| l.map_or_else(|| ports.clone(), |p| [p].into())).collect()
    }

    /// Reads one line; returns the Include patterns it names. Inside a Match block only
    /// Include matters (Port and ListenAddress are not allowed there).
    fn keyword(&mut self, line: &str, in_match: bool) -> Vec<String> {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            return Vec::new();
        }
        let (key, rest) = line.split_once(|c: char| c.is_whitespace() || c == '=').unwrap_or((line, ""));
        let args: Vec<&str> =
            rest.trim_start_matches(|c: char| c.is_whitespace() || c == '=').split_whitespace().collect();
        let args: Vec<String> =
            args.iter().take_while(|a| !a.starts_with('#')).map(|a| a.trim_matches('"').to_string()).collect();
        match key.to_ascii_lowercase().as_str() {
            "include" => return args,
            "port" if !in_match => self.ports.extend(args.first().and_then(|p| p.parse::<u16>().ok())),
            "listenaddress" if !in_match => {
                if let Some(addr) = args.first() {
                    self.listen.push(listen_port(addr));
                }
            }
            _ => {}
        }
        Vec::new()
    }
}

/// The port of a ListenAddress value, if it names one: `1.2.3.4:22`, `[::1]:22`, `host:22`.
fn listen_port(addr: &str) -> Option<u16> {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split_once("]:").and_then(|(_, p)| p.parse().ok());
    }
    match addr.matches(':').count() {
        1 => addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()),
        _ => None,
    }
}

/// Reads `path` (a path as on the host) into `config`, following Include the way sshd does:
/// relative patterns are under /etc/ssh, a `*` or `?` glob in the last component matches
/// files in lexical order, and a Match block ends at the end of the file that opened it.
fn read_config(host: &Host, path: &Path, config: &mut SshdConfig, depth: u8) {
    // sshd's own limit on nested includes.
    if depth > 16 {
        return;
    }
    config.read.push(path.to_path_buf());
    // A file vakt cannot read whole (unreadable, too large, a FIFO) could hold an Include
    // sshd follows: what sshd -T answers then depends on files this reader never stamped.
    // Bytes that are not UTF-8 (a Latin-1 comment) sshd takes as they are; the lines around
    // them are read the same, but a name with such bytes in it is not followed here.
    let text = match crate::fsutil::read_file(host.path(path)) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                config.unstamped = true;
                String::from_utf8_lossy(e.as_bytes()).into_owned()
            }
        },
        Err(e) => {
            config.unstamped |= e.kind() != std::io::ErrorKind::NotFound;
            return;
        }
    };
    let mut in_match = false;
    for line in text.lines() {
        if line.trim_start().to_ascii_lowercase().starts_with("match") {
            in_match = true;
            continue;
        }
        for pattern in config.keyword(line, in_match) {
            let pattern =
                if pattern.starts_with('/') { PathBuf::from(pattern) } else { Path::new("/etc/ssh").join(pattern) };
            // A glob above the file name, a character class or a quoted name with spaces is
            // one this reader does not follow as sshd does: sshd's answer cannot be stamped.
            let dir_glob = pattern.parent().is_some_and(|d| d.to_string_lossy().contains(['*', '?', '[']));
            if dir_glob || pattern.to_string_lossy().contains('[') || line.contains('"') {
                config.unstamped = true;
            }
            if let Some(dir) = pattern.parent().filter(|_| pattern.to_string_lossy().contains(['*', '?'])) {
                config.read.push(dir.to_path_buf());
            }
            for file in expand(host, &pattern) {
                read_config(host, &file, config, depth + 1);
            }
        }
    }
}

/// The files a pattern with a glob in its last component names, sorted by their bytes (as
/// glob(3) does in the C locale sshd runs in), names that are not UTF-8 included.
fn expand(host: &Host, pattern: &Path) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    if !name.contains(['*', '?']) {
        return vec![pattern.to_path_buf()];
    }
    let Ok(entries) = std::fs::read_dir(host.path(dir)) else { return Vec::new() };
    let mut names: Vec<std::ffi::OsString> =
        entries.filter_map(|e| Some(e.ok()?.file_name())).filter(|n| glob_match(name, n.as_bytes())).collect();
    names.sort();
    names.into_iter().map(|n| dir.join(n)).collect()
}

/// `*` and `?` matching of one file name (no character classes, as sshd configs use them).
fn glob_match(pattern: &str, name: &[u8]) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some((b'?', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    !name.starts_with(b".") && go(pattern.as_bytes(), name)
}

/// Whether a standalone ssh.service (or sshd.service) is enabled beside the socket.
fn service_enabled(host: &Host) -> bool {
    let Ok(entries) = std::fs::read_dir(host.path("/etc/systemd/system")) else { return false };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wants"))
        .any(|e| ["ssh.service", "sshd.service"].iter().any(|s| e.path().join(s).symlink_metadata().is_ok()))
}

/// Where systemd looks for a unit, most important first.
const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/run/systemd/generator",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// The TCP ports of `ssh.socket` when it is enabled: with socket activation (Ubuntu's
/// default since 22.10) PID 1 holds the listener and sshd's Port reaches it only through
/// the unit (or the drop-in that sshd's generator writes).
fn socket_unit_ports(host: &Host) -> Option<(BTreeSet<u16>, String)> {
    let enabled = std::fs::read_dir(host.path("/etc/systemd/system"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wants"))
        .any(|e| e.path().join("ssh.socket").symlink_metadata().is_ok());
    if !enabled {
        return None;
    }
    let unit = UNIT_DIRS.iter().map(|d| Path::new(d).join("ssh.socket")).find(|p| host.path(p).is_file())?;
    let mut files = vec![unit.clone()];
    // Drop-ins: by file name across the directories, the more important directory winning.
    let mut dropins: Vec<(String, PathBuf)> = Vec::new();
    for dir in UNIT_DIRS {
        let dir = Path::new(dir).join("ssh.socket.d");
        let Ok(entries) = std::fs::read_dir(host.path(&dir)) else { continue };
        for name in entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.ends_with(".conf")) {
            if !dropins.iter().any(|(n, _)| *n == name) {
                dropins.push((name.clone(), dir.join(&name)));
            }
        }
    }
    dropins.sort();
    files.extend(dropins.into_iter().map(|(_, p)| p));
    let mut streams: Vec<String> = Vec::new();
    for file in &files {
        let text = crate::fsutil::read_text(host.path(file)).unwrap_or_default();
        for line in text.lines().map(str::trim) {
            if let Some(value) = line.strip_prefix("ListenStream=") {
                if value.trim().is_empty() {
                    streams.clear();
                } else {
                    streams.push(value.trim().to_string());
                }
            }
        }
    }
    let ports: BTreeSet<u16> = streams.iter().filter_map(|s| stream_port(s)).collect();
    Some((ports, unit.display().to_string()))
}

/// The port of a `ListenStream=` value: `22`, `0.0.0.0:22`, `[::]:22`; unix paths have none.
fn stream_port(value: &str) -> Option<u16> {
    if value.starts_with('/') || value.starts_with('@') {
        return None;
    }
    value.rsplit(':').next()?.parse().ok().filter(|p| *p != 0)
}

/// `SSH_CONNECTION` is "client_ip client_port server_ip server_port".
fn session(text: &str) -> Option<(IpAddr, u16)> {
    let f: Vec<&str> = text.split_whitespace().collect();
    Some((f.first()?.parse().ok()?, f.get(3)?.parse().ok()?))
}

/// TCP ports in LISTEN state on sockets held by processes named `sshd`.
fn listening_ports(host: &Host) -> BTreeSet<u16> {
    let listeners = crate::sockets::listeners(host, crate::sockets::Only::TcpHeldBy("sshd")).unwrap_or_default();
    listeners.iter().filter(|l| l.proto == Proto::Tcp && l.holder.is_some()).map(|l| l.addr.port()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tmp");
        for (path, text) in files {
            let p = root.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().expect("dir")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        root
    }

    fn ports_of(root: &Path) -> BTreeSet<u16> {
        let host = Host::new(root);
        let mut config = SshdConfig::default();
        read_config(&host, Path::new(SSHD_CONFIG), &mut config, 0);
        config.ports()
    }

    #[test]
    fn follows_includes_skips_match_and_honours_listen_address() {
        let root = tree(&[
            (SSHD_CONFIG, "Include /etc/ssh/sshd_config.d/*.conf\nPort 22\nMatch User backup\n  Port 9999\n"),
            ("/etc/ssh/sshd_config.d/10-port.conf", "port=2222 # moved\n"),
            ("/etc/ssh/sshd_config.d/.hidden.conf", "Port 7\n"),
        ]);
        assert_eq!(ports_of(root.path()), [22, 2222].into());
        let root = tree(&[(
            SSHD_CONFIG,
            "Port 2200\nListenAddress 10.0.0.1\nListenAddress [::1]:2201\nListenAddress 127.0.0.1:2202\n",
        )]);
        assert_eq!(ports_of(root.path()), [2200, 2201, 2202].into());
        let root = tree(&[(SSHD_CONFIG, "PermitRootLogin no\n")]);
        assert_eq!(ports_of(root.path()), [22].into(), "sshd's default");
    }

    /// sshd reads bytes: a Latin-1 comment does not stop it, and its Include glob matches
    /// names that are not UTF-8. The reader follows both; what it cannot read whole leaves the
    /// answer unstamped (sshd -T is asked every time), since it may hide an Include.
    #[test]
    fn bytes_that_are_not_utf8_are_read_past_and_a_file_not_read_whole_is_never_kept() {
        use std::os::unix::ffi::OsStrExt;
        let root = tree(&[("/etc/ssh/sshd_config.d/10-port.conf", "Port 2222\n")]);
        let etc = root.path().join("etc/ssh");
        std::fs::write(etc.join("sshd_config"), b"# Gr\xfc\xdfe\nInclude /etc/ssh/sshd_config.d/*.conf\nPort 22\n")
            .expect("config");
        std::fs::write(etc.join("sshd_config.d").join(std::ffi::OsStr::from_bytes(b"20-\xe9.conf")), "Port 2223\n")
            .expect("a name that is not UTF-8");
        let host = Host::new(root.path());
        let mut config = SshdConfig::default();
        read_config(&host, Path::new(SSHD_CONFIG), &mut config, 0);
        assert_eq!(config.ports(), [22, 2222, 2223].into());
        assert!(config.unstamped, "a file read with a lossy decoding may name what the reader missed");

        std::fs::write(etc.join("sshd_config"), "Include /etc/ssh/sshd_config.d/*.conf\n").expect("config");
        let mut config = SshdConfig::default();
        read_config(&host, Path::new(SSHD_CONFIG), &mut config, 0);
        assert_eq!(config.ports(), [2222, 2223].into());
        assert!(!config.unstamped, "every file read whole");

        // A drop-in that is a FIFO (or unreadable): sshd may read what vakt could not.
        let fifo = etc.join("sshd_config.d/30-fifo.conf");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let mut config = SshdConfig::default();
        read_config(&host, Path::new(SSHD_CONFIG), &mut config, 0);
        assert!(config.unstamped, "a file not read whole");
    }

    #[test]
    fn socket_units_and_their_dropins_name_the_ports() {
        let root = tree(&[
            ("/lib/systemd/system/ssh.socket", "[Socket]\nListenStream=22\nAccept=no\n"),
            (
                "/etc/systemd/system/ssh.socket.d/port.conf",
                "[Socket]\nListenStream=\nListenStream=0.0.0.0:2222\nListenStream=[::]:2222\n",
            ),
        ]);
        let host = Host::new(root.path());
        assert_eq!(socket_unit_ports(&host), None, "a socket unit that is not enabled listens on nothing");
        std::fs::create_dir_all(root.path().join("etc/systemd/system/sockets.target.wants")).expect("mkdir");
        std::os::unix::fs::symlink(
            "/lib/systemd/system/ssh.socket",
            root.path().join("etc/systemd/system/sockets.target.wants/ssh.socket"),
        )
        .expect("link");
        assert_eq!(socket_unit_ports(&host).map(|(p, _)| p), Some([2222].into()), "the drop-in reset the list");
    }

    #[test]
    fn an_enabled_socket_listens_instead_of_sshd_config_unless_the_service_runs_too() {
        let root =
            tree(&[(SSHD_CONFIG, "Port 22\n"), ("/lib/systemd/system/ssh.socket", "[Socket]\nListenStream=2222\n")]);
        let wants = root.path().join("etc/systemd/system/sockets.target.wants");
        std::fs::create_dir_all(&wants).expect("mkdir");
        std::os::unix::fs::symlink("/lib/systemd/system/ssh.socket", wants.join("ssh.socket")).expect("link");
        let host = Host::new(root.path());
        assert_eq!(discover(&host).ports, [2222].into());
        let services = root.path().join("etc/systemd/system/multi-user.target.wants");
        std::fs::create_dir_all(&services).expect("mkdir");
        std::os::unix::fs::symlink("/lib/systemd/system/ssh.service", services.join("ssh.service")).expect("link");
        assert_eq!(discover(&host).ports, [22, 2222].into(), "a standalone sshd listens on its Port too");
    }

    #[test]
    fn reads_sshd_t_output() {
        assert_eq!(
            effective_ports("port 2222\nport 22\nlistenaddress [::]:2222\nlistenaddress 0.0.0.0:2222\n"),
            [2222].into()
        );
    }

    #[test]
    fn parses_session() {
        assert_eq!(session("203.0.113.9 51234 10.0.0.5 2222"), Some(("203.0.113.9".parse().expect("ip"), 2222)));
    }

    /// Under a root whose `/proc` has an sshd holding a listening socket and another process
    /// holding a second one, only sshd's port counts.
    #[test]
    fn listening_ports_are_sshds_own() {
        let header =
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
        let tcp = format!(
            "{header}   0: 00000000:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0 0 0 0\n   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 0 0 0\n"
        );
        let root = tree(&[("proc/net/tcp", &tcp), ("proc/net/udp", header)]);
        let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
        let rest = &stat[stat.rfind(')').expect("comm") + 1..];
        for (pid, comm, inode) in [(700, "sshd", 31337), (701, "nginx", 4242)] {
            let dir = root.path().join(format!("proc/{pid}"));
            std::fs::create_dir_all(dir.join("fd")).expect("fd dir");
            std::fs::write(dir.join("stat"), format!("{pid} ({comm}){rest}")).expect("stat");
            std::fs::write(dir.join("comm"), format!("{comm}\n")).expect("comm");
            std::os::unix::fs::symlink(format!("socket:[{inode}]"), dir.join("fd/3")).expect("fd");
        }
        assert_eq!(listening_ports(&Host::new(root.path())), [2222].into());
    }
}
