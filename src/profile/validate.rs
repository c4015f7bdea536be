//! From raw profile structs to the validated `Profile`: every semantic rule lives here, and
//! every error names its key so the caller can point at the line.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::raw::{self, RawProfile};
use super::units::Span;
use super::*;

/// A semantic error: which key, and why. Turned into a message with file and line by the caller.
pub(super) struct KeyError {
    pub section: String,
    pub nth: Option<usize>,
    pub key: String,
    pub message: String,
}

fn err(section: &str, key: &str, message: impl Into<String>) -> KeyError {
    KeyError { section: section.into(), nth: None, key: key.into(), message: message.into() }
}

/// A value from the profile, quoted for a message: control characters escaped so that nothing
/// from the input can move the cursor or forge a line on the operator's terminal.
pub(super) fn quoted(value: &str) -> String {
    let mut out = String::from("`");
    for c in value.chars().take(200) {
        if c.is_control() { out.extend(c.escape_default()) } else { out.push(c) }
    }
    if value.chars().count() > 200 {
        out.push('…');
    }
    out.push('`');
    out
}

/// A duration within `range`, which the message states.
fn span(section: &str, key: &str, text: &str, range: RangeInclusive<Duration>) -> Result<Span, KeyError> {
    let span = Span::parse(text).map_err(|m| err(section, key, escape_controls(&m)))?;
    if range.contains(&span.get()) {
        Ok(span)
    } else {
        let (lo, hi) = (units::format_duration(*range.start()), units::format_duration(*range.end()));
        Err(err(section, key, format!("{} is out of range; use {lo} to {hi}", quoted(text))))
    }
}

fn duration(section: &str, key: &str, text: &str, range: RangeInclusive<Duration>) -> Result<Duration, KeyError> {
    span(section, key, text, range).map(Span::get)
}

/// The probe's NVMe-class bound: whole microseconds, at most a second.
fn threshold(h: &raw::RawHost) -> Result<Threshold, KeyError> {
    const MAX_US: u64 = 1_000_000;
    let us = match &h.nvme_p50_us {
        toml::Value::Integer(n) => u64::try_from(*n).ok().filter(|n| (1..=MAX_US).contains(n)),
        _ => None,
    };
    let Some(us) = us else {
        let shown = quoted(&h.nvme_p50_us.to_string());
        let m = format!("{shown} is not a whole number of microseconds in range; use 1 to {MAX_US}");
        return Err(err("host", "nvme_p50_us", m));
    };
    Ok(Threshold { p50: Duration::from_micros(us) })
}

/// A size of at most `max` bytes (and at least `min`), which the message states.
fn size(section: &str, key: &str, text: &str, min: u64, max: &str) -> Result<Size, KeyError> {
    let size = Size::parse(text).map_err(|m| err(section, key, escape_controls(&m)))?;
    let top = Size::parse(max).map_or(u64::MAX, Size::bytes);
    if (min..=top).contains(&size.bytes()) {
        Ok(size)
    } else {
        Err(err(section, key, format!("{} is out of range; use {min} to {max}", quoted(text))))
    }
}

pub(super) fn escape_controls(message: &str) -> String {
    crate::escape::controls(message)
}

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

pub(super) fn validate(raw: RawProfile, source: &str) -> Result<Profile, KeyError> {
    let host = match raw.host {
        None => None,
        Some(h) => Some(HostReq {
            hypervisor: h.hypervisor,
            forbid_container: h.container == Containers::Forbid,
            storage: h.storage,
            storage_paths: absolute_paths("host", "storage_paths", &h.storage_paths)?,
            probe: Some(threshold(&h)?).filter(|_| h.latency_probe),
        }),
    };
    let packages = match raw.packages {
        None => None,
        Some(p) => {
            if let Some(bad) = p.install.iter().find(|n| !valid_package_name(n)) {
                return Err(err("packages", "install", format!("{} is not a Debian package name", quoted(bad))));
            }
            if let Some(twice) = p.install.iter().enumerate().find(|(i, n)| p.install[..*i].contains(n)) {
                return Err(err("packages", "install", format!("`{}` is listed twice", twice.1)));
            }
            Some(Packages {
                install: p.install,
                update: p.update,
                lock_timeout: duration("packages", "lock_timeout", &p.lock_timeout, Duration::ZERO..=HOUR)?,
            })
        }
    };
    let firewall = match raw.firewall {
        None => None,
        Some(f) => Some(validate_firewall(f)?),
    };
    let swarm = match raw.swarm {
        None => None,
        Some(s) => Some(validate_swarm(s)?),
    };
    let firewall = match (firewall, &swarm) {
        (Some(f), Some(s)) => Some(with_peer_rules(f, s)),
        (f, _) => f,
    };
    let docker = match raw.docker {
        None => None,
        Some(d) => Some(validate_docker(d, swarm.as_ref())?),
    };
    let nginx = match raw.nginx {
        None => None,
        Some(n) => Some(validate_nginx(n)?),
    };
    let tuning = match raw.tuning {
        None => None,
        Some(t) => Some(validate_tuning(t)?),
    };
    let watch = match raw.watch {
        None => None,
        Some(w) => Some(validate_watch(w)?),
    };
    let origin = Origin::File(PathBuf::from(source));
    Ok(Profile { source: source.into(), origin, host, packages, firewall, docker, swarm, nginx, tuning, watch })
}

/// An absolute, normalised path: no `.` or `..` components, no empty ones, no control
/// characters, so that it names one place on the host (or under `--root`).
fn host_path(section: &str, key: &str, text: &str) -> Result<PathBuf, KeyError> {
    let problem = if !text.starts_with('/') {
        Some("is not an absolute path")
    } else if text.len() > 4096 {
        Some("is longer than a path can be")
    } else if text.chars().any(char::is_control) {
        Some("holds control characters")
    } else if text.len() > 1 && (text.contains("//") || text.ends_with('/')) {
        Some("is not normalised (empty components)")
    } else if Path::new(text).components().any(|c| matches!(c, Component::CurDir | Component::ParentDir)) {
        Some("is not normalised (`.` or `..` components)")
    } else {
        None
    };
    match problem {
        Some(p) => Err(err(section, key, format!("{} {p}; write the absolute path it means", quoted(text)))),
        None => Ok(PathBuf::from(text)),
    }
}

fn absolute_paths(section: &str, key: &str, paths: &[String]) -> Result<Vec<PathBuf>, KeyError> {
    paths.iter().map(|p| host_path(section, key, p)).collect()
}

fn valid_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

fn valid_interface_name(name: &str) -> bool {
    !name.is_empty() && name.len() < 16 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
}

fn validate_firewall(f: raw::RawFirewall) -> Result<Firewall, KeyError> {
    // `disabled` is a policy for routed traffic only.
    let policy = |key: &str, value: Policy| -> Result<Policy, KeyError> {
        if value == Policy::Disabled {
            return Err(err("firewall", key, "\"disabled\" is for `routed` only; use allow, deny or reject"));
        }
        Ok(value)
    };
    let mut rules: Vec<(Rule, &str, usize)> = Vec::new();
    let lists = [("allow", f.allow), ("rule", f.rule)];
    for (list, raw_rules) in lists {
        for (i, r) in raw_rules.into_iter().enumerate() {
            let rule = validate_rule(list, i, r)?;
            if let Some((_, first, n)) = rules.iter().find(|(a, _, _)| a.same_traffic(&rule)) {
                let message = format!("the same traffic as firewall.{first}[{n}]; list each rule once");
                return Err(KeyError {
                    section: format!("firewall.{list}"),
                    nth: Some(i),
                    key: "port".into(),
                    message,
                });
            }
            rules.push((rule, list, i));
        }
    }
    let admin = cidrs("firewall", "admin", &f.admin, "203.0.113.0/24")?;
    let published = f.published_ports;
    if published == Published::Docker
        && let Some((_, list, i)) = rules.iter().find(|(r, _, _)| r.target == Target::Containers)
    {
        return Err(KeyError {
            section: format!("firewall.{list}"),
            nth: Some(*i),
            key: "target".into(),
            message: "a rule for containers needs `published_ports = \"profile\"` in [firewall]: with \"docker\", \
                      Docker opens every published port to the world"
                .into(),
        });
    }
    Ok(Firewall {
        enabled: f.enabled,
        incoming: policy("incoming", f.incoming)?,
        outgoing: policy("outgoing", f.outgoing)?,
        routed: f.routed,
        prune: f.prune,
        admin,
        published,
        rules: rules.into_iter().map(|(r, _, _)| r).collect(),
    })
}

/// One entry of `[[firewall.allow]]` (always allow) or `[[firewall.rule]]` (any action).
fn validate_rule(list: &str, i: usize, r: raw::RawRule) -> Result<Rule, KeyError> {
    let at = |key: &str, message: String| KeyError {
        section: format!("firewall.{list}"),
        nth: Some(i),
        key: key.into(),
        message,
    };
    let action = match (list, r.action) {
        (_, None) => Action::Allow,
        ("allow", Some(other)) if other != Action::Allow => {
            return Err(at(
                "action",
                format!("{} in [[firewall.allow]]: write it as a [[firewall.rule]]", quoted(other.as_str())),
            ));
        }
        (_, Some(action)) => action,
    };
    let ports = match &r.port {
        raw::RawPort::Number(p) => (*p, *p),
        raw::RawPort::Text(t) => parse_port_range(t).ok_or_else(|| {
            at("port", format!("{} is not a port (1-65535) or a range like \"6000:6007\"", quoted(t)))
        })?,
    };
    if ports.0 == 0 {
        return Err(at("port", "port 0 is not a port; use 1-65535".into()));
    }
    let proto = r.proto;
    if ports.0 != ports.1 && proto == Proto::Both {
        return Err(at("proto", "ufw needs a port range to be tcp or udp, not both".into()));
    }
    if action == Action::Limit && proto != Proto::Tcp {
        return Err(at("proto", "ufw rate-limits tcp only: a limit rule needs proto = \"tcp\"".into()));
    }
    let from =
        match r.from.as_str() {
            "any" => None,
            text => {
                if let Some(why) = leading_zero(text) {
                    return Err(at("from", why));
                }
                Some(parse_cidr(text).ok_or_else(|| {
                    at("from", format!("{} is not a CIDR like \"10.0.0.0/8\" or \"any\"", quoted(text)))
                })?)
            }
        };
    if let Some(c) = &r.comment {
        ufw_comment(c).map_err(|m| at("comment", m))?;
    }
    let target = r.target.unwrap_or(Target::Host);
    if target == Target::Containers && action == Action::Limit {
        return Err(at("action", "ufw rate-limits the host's own ports only: use allow for containers".into()));
    }
    Ok(Rule { action, ports, proto, from, comment: r.comment, target })
}

/// A ufw rule comment: printable, without quotes (ufw stores it hex-encoded, but shows it
/// quoted), and never parsable as an option: ufw scans its whole command line for options
/// such as `--datadir=`, so a comment may not start with `-`.
pub(super) fn ufw_comment(c: &str) -> Result<(), String> {
    if c.is_empty() || c.len() > 200 {
        Err("a ufw comment is 1 to 200 characters".into())
    } else if ["in", "out", "log", "log-all"].contains(&c) {
        Err(format!(
            "{}: ufw reads a comment that is only `in`, `out`, `log` or `log-all` as that word of the rule",
            quoted(c)
        ))
    } else if c.starts_with('-') {
        Err(format!("{} starts with `-`: ufw would read it as an option", quoted(c)))
    } else if c.chars().any(|ch| ch.is_control() || ch == '\'' || ch == '"' || ch == '\\') {
        Err(format!("{}: a ufw comment cannot hold quotes, backslashes or control characters", quoted(c)))
    } else {
        Ok(())
    }
}

fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let (a, b) = text.split_once(':').unwrap_or((text, text));
    let digits = |t: &str| !t.is_empty() && t.len() <= 5 && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(a) || !digits(b) {
        return None;
    }
    let (a, b): (u16, u16) = (a.parse().ok()?, b.parse().ok()?);
    (a > 0 && a <= b).then_some((a, b))
}

/// A list of CIDRs under `section.key`; the error names the entry and shows an `example`.
fn cidrs(section: &str, key: &str, items: &[String], example: &str) -> Result<Vec<IpNet>, KeyError> {
    items
        .iter()
        .map(|c| {
            if let Some(why) = leading_zero(c) {
                return Err(err(section, key, why));
            }
            parse_cidr(c).ok_or_else(|| err(section, key, format!("{} is not a CIDR like \"{example}\"", quoted(c))))
        })
        .collect()
}

/// Why an IPv4 address (or network) written with a leading zero in an octet is refused: the
/// C library's `inet_aton`, and so ping, ssh and many tools, read `010` as octal 8, while
/// other parsers read 10, so the same text names two hosts.
fn leading_zero(text: &str) -> Option<String> {
    let addr = text.split('/').next().unwrap_or(text);
    let addr = addr.rsplit_once(':').filter(|(h, p)| !h.contains(':') && !p.is_empty()).map_or(addr, |(h, _)| h);
    let octets: Vec<&str> = addr.split('.').collect();
    let numeric = octets.len() == 4 && octets.iter().all(|o| !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit()));
    let bad = octets.iter().find(|o| o.len() > 1 && o.starts_with('0')).filter(|_| numeric)?;
    Some(format!(
        "{} has an octet with a leading zero (`{bad}`): inet_aton and the tools built on it read it as octal, others as decimal; write it without the zero",
        quoted(text)
    ))
}

/// A CIDR, or a bare address meaning the host route; the network is normalised (10.1.2.3/8 → 10.0.0.0/8).
fn parse_cidr(text: &str) -> Option<IpNet> {
    let net = text.parse::<IpNet>().or_else(|_| text.parse::<IpAddr>().map(IpNet::from)).ok()?;
    Some(net.trunc())
}

fn validate_swarm(s: raw::RawSwarm) -> Result<Swarm, KeyError> {
    let role = match s.role {
        None => s.init.then_some(Role::Init),
        Some(Role::Init) if !s.init => {
            return Err(err("swarm", "role", "role = \"init\" contradicts init = false; remove one of them"));
        }
        Some(role) => Some(role),
    };
    for (key, text) in [("advertise_addr", &s.advertise_addr), ("listen_addr", &s.listen_addr)] {
        if let Some(why) = leading_zero(text) {
            return Err(err("swarm", key, why));
        }
    }
    let advertise_addr = match s.advertise_addr.as_str() {
        "auto" => Advertise::Auto,
        text => match text.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() => {
                return Err(err(
                    "swarm",
                    "advertise_addr",
                    format!(
                        "{} is not an address other nodes can reach (Docker refuses it); use \"auto\", an IP address of this node or an interface name",
                        quoted(text)
                    ),
                ));
            }
            Ok(ip) => Advertise::Ip(ip),
            Err(_) if valid_interface_name(text) => Advertise::Interface(text.into()),
            Err(_) => {
                return Err(err(
                    "swarm",
                    "advertise_addr",
                    format!("{} is not \"auto\", an IP address or an interface name", quoted(text)),
                ));
            }
        },
    };
    let listen_addr: SocketAddr = s
        .listen_addr
        .parse()
        .map_err(|_| err("swarm", "listen_addr", format!("{} is not ADDRESS:PORT", quoted(&s.listen_addr))))?;
    if listen_addr.port() == 0 {
        return Err(err(
            "swarm",
            "listen_addr",
            format!("{}: port 0 is not a port; use 1-65535 (2377 is swarm's)", quoted(&s.listen_addr)),
        ));
    }
    if let Some(why) = s.join.iter().find_map(|j| leading_zero(j)) {
        return Err(err("swarm", "join", why));
    }
    let join = s.join.iter().map(|j| swarm_manager_addr(j)).collect::<Result<Vec<_>, _>>()?;
    if let Some((i, j)) = join.iter().enumerate().find(|(i, j)| join[..*i].contains(j)) {
        return Err(err("swarm", "join", format!("`{j}` is listed twice (entry {i})")));
    }
    match role {
        Some(Role::Manager | Role::Worker) if join.is_empty() => {
            return Err(err(
                "swarm",
                "join",
                "a node that joins needs the address of at least one manager, e.g. join = [\"10.0.0.1:2377\"]",
            ));
        }
        Some(Role::Init) | None if !join.is_empty() => {
            return Err(err(
                "swarm",
                "join",
                "only a manager or worker joins: set role = \"manager\" or \"worker\", or remove `join`",
            ));
        }
        _ => {}
    }
    let token = match &s.token_file {
        None => TokenSource::Credential(TOKEN_CREDENTIAL.into()),
        Some(path) => TokenSource::File(host_path("swarm", "token_file", path)?),
    };
    let peers = cidrs("swarm", "peers", &s.peers, "10.0.0.0/24")?;
    if let Some((i, p)) = peers.iter().enumerate().find(|(i, p)| peers[..*i].contains(p)) {
        return Err(err("swarm", "peers", format!("`{p}` is listed twice (entry {i})")));
    }
    if role.is_none() && !peers.is_empty() {
        return Err(err(
            "swarm",
            "peers",
            "peers open the swarm's ports to the other nodes, but this node is in no swarm (init = false and no role): set role, or remove peers",
        ));
    }
    Ok(Swarm { role, advertise_addr, listen_addr, join, token, peers })
}

/// A manager to join through: `IP`, `IP:PORT`, `[IPv6]:PORT` or `NAME:PORT`; the port
/// defaults to 2377, swarm's management port.
fn swarm_manager_addr(text: &str) -> Result<String, KeyError> {
    let bad = || err("swarm", "join", format!("{} is not a manager address like \"10.0.0.1:2377\"", quoted(text)));
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(std::net::SocketAddr::new(ip, 2377).to_string());
    }
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return if addr.port() == 0 { Err(bad()) } else { Ok(addr.to_string()) };
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    match port.parse::<u16>() {
        Ok(p) if p != 0 && valid_dns_name(host) => Ok(format!("{host}:{p}")),
        _ => Err(bad()),
    }
}

/// `[swarm] peers` opens the swarm's ports to the peers only, as rules the firewall resource
/// applies like the profile's own; a rule the profile already lists for the same traffic is
/// not added twice.
fn with_peer_rules(mut f: Firewall, s: &Swarm) -> Firewall {
    let Some(role) = s.role else { return f };
    for peer in &s.peers {
        let mut wanted = Vec::new();
        if role.is_manager() {
            wanted.push((s.listen_addr.port(), Proto::Tcp, "swarm management from peers"));
        }
        wanted.push((SWARM_GOSSIP_PORT, Proto::Both, "swarm gossip from peers"));
        wanted.push((SWARM_VXLAN_PORT, Proto::Udp, "swarm overlay (VXLAN) from peers"));
        for (port, proto, comment) in wanted {
            let rule = Rule {
                action: Action::Allow,
                ports: (port, port),
                proto,
                from: Some(*peer),
                comment: Some(comment.into()),
                target: Target::Host,
            };
            if !f.rules.iter().any(|r| r.same_traffic(&rule)) {
                f.rules.push(rule);
            }
        }
    }
    f
}

fn validate_docker(d: raw::RawDocker, swarm: Option<&Swarm>) -> Result<Docker, KeyError> {
    if d.storage_driver.is_empty()
        || d.storage_driver.len() > 32
        || !d.storage_driver.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(err(
            "docker",
            "storage_driver",
            format!("{} is not a storage driver name like \"overlay2\"", quoted(&d.storage_driver)),
        ));
    }
    let mut daemon = serde_json::Map::new();
    for (key, value) in d.daemon {
        if key == "storage-driver" {
            return Err(err("docker.daemon", &key, "set the driver with `docker.storage_driver`, not here"));
        }
        let json = serde_json::to_value(&value).map_err(|e| err("docker.daemon", &key, e.to_string()))?;
        daemon_value(&key, &json).map_err(|why| err("docker.daemon", &key, why))?;
        daemon.insert(key, json);
    }
    if swarm.is_some_and(Swarm::in_swarm) && daemon.get("live-restore") == Some(&serde_json::Value::Bool(true)) {
        // dockerd refuses to start with live-restore in swarm mode (moby/moby#29299).
        return Err(err(
            "docker.daemon",
            "live-restore",
            "live-restore = true conflicts with [swarm]: dockerd will not start in swarm mode with it",
        ));
    }
    daemon.insert("storage-driver".into(), serde_json::Value::String(d.storage_driver.clone()));
    let host = match &d.host {
        None => None,
        Some(h) => {
            let Some(path) = h.strip_prefix("unix://").or(h.starts_with('/').then_some(h.as_str())) else {
                return Err(err(
                    "docker",
                    "host",
                    format!("{}: only unix sockets are supported (unix:///PATH)", quoted(h)),
                ));
            };
            Some(host_path("docker", "host", path)?)
        }
    };
    Ok(Docker {
        storage_driver: d.storage_driver,
        restart: d.restart,
        allow_driver_switch: d.allow_driver_switch,
        host,
        restart_timeout: duration("docker", "restart_timeout", &d.restart_timeout, SECOND..=10 * MINUTE)?,
        daemon,
    })
}

/// The daemon.json keys dockerd reloads (their running values are verified): of the type
/// dockerd reads, and labels as dockerd accepts them at start and on reload alike: `key=value`,
/// the key neither empty, nor with whitespace, nor in Docker's reserved namespaces, and one
/// value per key. Control characters nowhere.
fn daemon_value(key: &str, value: &serde_json::Value) -> Result<(), String> {
    const RESERVED: &[&str] = &["com.docker.", "io.docker.", "org.dockerproject."];
    match key {
        "debug" | "live-restore" if !value.is_boolean() => Err(format!("{key} is true or false")),
        "labels" => {
            let labels = value.as_array().ok_or("labels is a list of \"key=value\" strings")?;
            if labels.len() > 256 {
                return Err(format!("{} labels; at most 256", labels.len()));
            }
            let mut seen: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
            for label in labels {
                let text = label.as_str().ok_or_else(|| format!("{label} is not a \"key=value\" string"))?;
                let Some((name, val)) = text.split_once('=') else {
                    return Err(format!("{} is not key=value (Docker refuses it)", quoted(text)));
                };
                if text.chars().count() > 1024 || text.chars().any(char::is_control) {
                    return Err(format!("{}: at most 1024 characters, no control characters", quoted(text)));
                }
                if name.is_empty() || name.chars().any(char::is_whitespace) {
                    return Err(format!("{}: the key is empty or holds whitespace (Docker refuses it)", quoted(text)));
                }
                // Docker compares the key lowercased: `COM.Docker.x` is reserved too.
                if RESERVED.iter().any(|r| name.to_lowercase().starts_with(r)) {
                    return Err(format!("{}: {} is Docker's reserved namespace", quoted(text), quoted(name)));
                }
                if let Some(other) = seen.insert(name, val).filter(|v| *v != val) {
                    return Err(format!("{} is set twice, to {} and {}", quoted(name), quoted(other), quoted(val)));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// One nginx token: printable ASCII without whitespace or anything nginx gives a meaning
/// (`;`, braces, quotes, `#` comments, `$` variables, `\\` escapes).
fn nginx_token(key: &str, v: &str) -> Result<(), KeyError> {
    let bad = |c: char| !c.is_ascii_graphic() || ";{}\"'#$\\".contains(c);
    if v.is_empty() || v.len() > 255 || v.chars().any(bad) {
        Err(err(
            "nginx",
            key,
            format!("{} must be one nginx word: no spaces, quotes, `;`, braces, `#`, `$` or `\\`", quoted(v)),
        ))
    } else {
        Ok(())
    }
}

/// `listen`: a port, `ADDRESS:PORT` or `[IPv6]:PORT`.
fn nginx_listen(v: &str) -> Result<Listen, KeyError> {
    let bad = || err("nginx", "listen", format!("{} is not a port, ADDRESS:PORT or [IPv6]:PORT", quoted(v)));
    let listen = if let Ok(port) = v.parse::<u16>() {
        Listen::Port(port)
    } else {
        Listen::Addr(v.parse::<SocketAddr>().map_err(|_| bad())?)
    };
    if listen.port() == 0 || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b".:[]".contains(&b)) {
        return Err(bad());
    }
    Ok(listen)
}

/// An upstream server: `HOST:PORT` with a DNS name or an IP address (IPv6 in brackets).
fn nginx_upstream(v: &str) -> Result<Upstream, KeyError> {
    let bad = || err("nginx", "upstream", format!("{} is not HOST:PORT like \"127.0.0.1:8080\"", quoted(v)));
    if let Ok(addr) = v.parse::<SocketAddr>() {
        return if addr.port() == 0 {
            Err(bad())
        } else {
            Ok(Upstream { host: addr.ip().to_string(), port: addr.port() })
        };
    }
    let (host, port) = v.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
    if !valid_dns_name(host) {
        return Err(bad());
    }
    Ok(Upstream { host: host.to_string(), port })
}

fn valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn validate_nginx(n: raw::RawNginx) -> Result<Nginx, KeyError> {
    for (key, value) in [
        ("user", &n.user),
        ("error_log", &n.error_log),
        ("access_log", &n.access_log),
        ("mime_types", &n.mime_types),
        ("server_name", &n.server_name),
    ] {
        nginx_token(key, value)?;
    }
    if !(n.worker_processes == "auto" || n.worker_processes.parse::<u16>().is_ok_and(|w| (1..=1024).contains(&w))) {
        return Err(err(
            "nginx",
            "worker_processes",
            format!("{} is not \"auto\" or a number from 1 to 1024", quoted(&n.worker_processes)),
        ));
    }
    if n.upstream.is_empty() {
        return Err(err("nginx", "upstream", "list at least one upstream server, e.g. [\"127.0.0.1:8080\"]"));
    }
    let upstream = n.upstream.iter().map(|u| nginx_upstream(u)).collect::<Result<Vec<_>, _>>()?;
    if let Some((i, u)) = upstream.iter().enumerate().find(|(i, u)| upstream[..*i].contains(u)) {
        return Err(err(
            "nginx",
            "upstream",
            format!("`{u}` is listed twice (entries {} and {i})", upstream.iter().position(|x| x == u).unwrap_or(0)),
        ));
    }
    if n.upstream_keepalive > 10_000 {
        return Err(err(
            "nginx",
            "upstream_keepalive",
            format!("{} is out of range; use 0 to 10000", n.upstream_keepalive),
        ));
    }
    if n.keepalive_requests == 0 {
        return Err(err("nginx", "keepalive_requests", "0 is out of range; use 1 to 4294967295"));
    }
    let long = SECOND..=7 * DAY;
    Ok(Nginx {
        config: host_path("nginx", "config", &n.config)?,
        pid: host_path("nginx", "pid", &n.pid)?,
        keepalive_timeout: span("nginx", "keepalive_timeout", &n.keepalive_timeout, Duration::ZERO..=DAY)?,
        client_body_buffer_size: size("nginx", "client_body_buffer_size", &n.client_body_buffer_size, 1, "1g")?,
        // 0 is nginx's own "no limit"; written out, it is the operator's choice.
        client_max_body_size: size("nginx", "client_max_body_size", &n.client_max_body_size, 0, "64g")?,
        proxy_read_timeout: span("nginx", "proxy_read_timeout", &n.proxy_read_timeout, long.clone())?,
        proxy_send_timeout: span("nginx", "proxy_send_timeout", &n.proxy_send_timeout, long.clone())?,
        longest_invocation: span("nginx", "longest_invocation", &n.longest_invocation, long)?,
        listen: nginx_listen(&n.listen)?,
        include_sites: n.include_sites,
        disable_default_site: n.default_site == DefaultSite::Disable,
        tls: match n.tls.map(validate_nginx_tls).transpose()? {
            // Two default servers on one address: nginx -t refuses every render once a
            // certificate exists.
            Some(t) if same_listen(&t.listen, &nginx_listen(&n.listen)?) => {
                return Err(err(
                    "nginx.tls",
                    "listen",
                    format!("{} is [nginx] listen too; HTTPS needs its own port (443)", quoted(&t.listen.to_string())),
                ));
            }
            other => other,
        },
        user: n.user,
        worker_processes: n.worker_processes,
        error_log: n.error_log,
        access_log: n.access_log,
        mime_types: n.mime_types,
        server_name: n.server_name,
        upstream,
        upstream_keepalive: n.upstream_keepalive,
        keepalive_requests: n.keepalive_requests,
        sendfile: n.sendfile,
        tcp_nopush: n.tcp_nopush,
        tcp_nodelay: n.tcp_nodelay,
        proxy_http_version: n.proxy_http_version,
        proxy_clear_connection: n.proxy_clear_connection,
    })
}

/// Whether two `listen`s take the same port on a common address.
fn same_listen(a: &Listen, b: &Listen) -> bool {
    match (a, b) {
        (Listen::Addr(x), Listen::Addr(y)) => x == y,
        _ => a.port() == b.port(),
    }
}

/// A name certbot may ask a certificate for: a DNS hostname of two or more labels, lowercase
/// letters, digits and inner hyphens (no wildcards: HTTP-01 cannot prove them).
fn tls_domain(v: &str) -> Result<String, KeyError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let name = v.to_ascii_lowercase();
    // certbot refuses IP addresses ("Requested name is an IP address"), and a name whose last
    // label is all digits is one or no name at all.
    if name.rsplit('.').next().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return Err(err(
            "nginx.tls",
            "domains",
            format!("{} is an IP address; certbot and Let's Encrypt issue certificates for DNS names only", quoted(v)),
        ));
    }
    if name.len() <= 253 && name.contains('.') && name.split('.').all(label_ok) {
        Ok(name)
    } else {
        Err(err("nginx.tls", "domains", format!("{} is not a DNS name like \"gateway.example.com\"", quoted(v))))
    }
}

/// The ACME account address: `local@domain`, the local part from a conservative set, nothing
/// certbot's argv could read as an option.
fn tls_email(v: &str) -> Result<(), KeyError> {
    let ok = v.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && local.len() <= 64
            && !local.starts_with(['-', '.'])
            && !local.ends_with('.')
            && !local.contains("..")
            && local.bytes().all(|b| b.is_ascii_alphanumeric() || b"._%+-".contains(&b))
            && tls_domain(domain).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(err("nginx.tls", "email", format!("{} is not a plain address like \"ops@example.com\"", quoted(v))))
    }
}

/// The ACME directory reaches certbot's argv: an `https://` URL with a host, printable ASCII
/// without whitespace or quotes.
fn tls_directory(v: &str) -> Result<(), KeyError> {
    let host = v.strip_prefix("https://").map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
    let printable = v.bytes().all(|b| b.is_ascii_graphic() && !b"\"'\\`".contains(&b));
    // Credentials in the URL would be printed in every report and log line: ACME needs none.
    if host.is_some_and(|h| h.contains('@')) {
        return Err(err(
            "nginx.tls",
            "acme_directory",
            "the URL carries credentials (user:password@); an ACME directory needs none, and vakt would print them: remove them",
        ));
    }
    match host {
        Some(h) if !h.is_empty() && !h.starts_with(['-', ':', '@']) && printable && v.len() <= 2048 => Ok(()),
        _ => Err(err(
            "nginx.tls",
            "acme_directory",
            format!("{} is not an https:// URL without spaces or quotes", quoted(v)),
        )),
    }
}

fn validate_nginx_tls(t: raw::RawNginxTls) -> Result<NginxTls, KeyError> {
    if t.domains.is_empty() {
        return Err(err("nginx.tls", "domains", "list the names to serve, e.g. [\"gateway.example.com\"]"));
    }
    let domains = t.domains.iter().map(|d| tls_domain(d)).collect::<Result<Vec<_>, _>>()?;
    if let Some((i, d)) = domains.iter().enumerate().find(|(i, d)| domains[..*i].contains(d)) {
        return Err(err("nginx.tls", "domains", format!("`{d}` is listed twice (entry {i})")));
    }
    // Let's Encrypt's limit of names per certificate.
    if domains.len() > 100 {
        let m = format!("{} names; a certificate holds at most 100 (Let's Encrypt's limit): split them", domains.len());
        return Err(err("nginx.tls", "domains", m));
    }
    tls_email(&t.email)?;
    tls_directory(&t.acme_directory)?;
    let listen = nginx_listen(&t.listen).map_err(|e| KeyError { section: "nginx.tls".into(), ..e })?;
    let path = |key: &str, v: &str| {
        let p = host_path("nginx.tls", key, v)?;
        nginx_token(key, v).map_err(|e| KeyError { section: "nginx.tls".into(), ..e })?;
        Ok::<_, KeyError>(p)
    };
    Ok(NginxTls {
        domains,
        email: t.email,
        acme_directory: t.acme_directory,
        listen,
        redirect_http: t.redirect_http,
        hsts: if t.hsts {
            // Whole seconds, at least one: `max-age=0` (what 999ms rendered) tells browsers to
            // drop HSTS.
            let d = duration("nginx.tls", "hsts_max_age", &t.hsts_max_age, SECOND..=2 * 365 * DAY)?;
            if d.subsec_nanos() != 0 {
                let m = format!("{} is not whole seconds; HSTS counts seconds", quoted(&t.hsts_max_age));
                return Err(err("nginx.tls", "hsts_max_age", m));
            }
            Some(d)
        } else {
            None
        },
        expiry_warn: duration("nginx.tls", "expiry_warn", &t.expiry_warn, Duration::ZERO..=60 * DAY)?,
        webroot: path("webroot", &t.webroot)?,
        certbot_config_dir: path("certbot_config_dir", &t.certbot_config_dir)?,
        certbot_work_dir: path("certbot_work_dir", &t.certbot_work_dir)?,
        certbot_logs_dir: path("certbot_logs_dir", &t.certbot_logs_dir)?,
    })
}

/// A sysctl name as `sysctl` and /proc/sys accept it: dot-separated words of letters, digits,
/// `_` and `-`, each starting with neither a dot nor a dash (`-` at the start of a sysctl.d
/// line means "ignore errors").
fn valid_sysctl_key(key: &str) -> bool {
    key.len() <= 255
        && key.split('.').all(|word| {
            !word.is_empty()
                && !word.starts_with('-')
                && word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// A sysctl value: one line of printable text (tabs are turned into spaces by the caller's
/// comparison anyway), not empty, not padded.
fn valid_sysctl_value(value: &str) -> bool {
    !value.is_empty() && value.len() <= 4096 && value.trim() == value && !value.chars().any(char::is_control)
}

fn validate_tuning(t: raw::RawTuning) -> Result<Tuning, KeyError> {
    let mut sysctl = BTreeMap::new();
    for (key, value) in t.sysctl {
        if !valid_sysctl_key(&key) {
            return Err(err(
                "tuning.sysctl",
                &key,
                format!("{} is not a sysctl name like \"vm.swappiness\"", quoted(&key)),
            ));
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => u8::from(b).to_string(),
            _ => return Err(err("tuning.sysctl", &key, "must be a string or an integer")),
        };
        if !valid_sysctl_value(&text) {
            return Err(err(
                "tuning.sysctl",
                &key,
                format!("{} is not a sysctl value: one line of printable text, no control characters", quoted(&text)),
            ));
        }
        sysctl.insert(key, text);
    }
    Ok(Tuning { io_scheduler: t.io_scheduler.filter(|s| *s != IoScheduler::Keep), sysctl })
}

fn validate_watch(w: raw::RawWatch) -> Result<Watch, KeyError> {
    let interval = duration("watch", "interval", &w.interval, Interval::MIN..=Interval::MAX)?;
    let interval = Interval::new(interval).expect("in range");
    let longest = (*interval * Samples::MAX as u32).min(7 * DAY);
    let window = duration("watch", "window", &w.window, *interval..=longest)?;
    let samples = Samples::of(window, interval).expect("a window of one interval to the longest");
    for (key, v) in [
        ("steal_warn", w.steal_warn),
        ("steal_clear", w.steal_clear),
        ("iowait_warn", w.iowait_warn),
        ("iowait_clear", w.iowait_clear),
    ] {
        if !(0.0..=100.0).contains(&v) {
            return Err(err("watch", key, format!("{v} is not a percentage between 0 and 100")));
        }
    }
    if w.steal_clear >= w.steal_warn {
        return Err(err(
            "watch",
            "steal_clear",
            format!("must be below steal_warn ({}) for the alarm to clear", w.steal_warn),
        ));
    }
    if w.iowait_clear >= w.iowait_warn {
        return Err(err(
            "watch",
            "iowait_clear",
            format!("must be below iowait_warn ({}) for the alarm to clear", w.iowait_warn),
        ));
    }
    let metrics = match &w.metrics {
        None => None,
        Some(m) => Some(m.parse::<SocketAddr>().ok().filter(|a| a.port() != 0).ok_or_else(|| {
            err("watch", "metrics", format!("{} is not ADDRESS:PORT like \"127.0.0.1:9477\"", quoted(m)))
        })?),
    };
    let check_every = match &w.check_every {
        None => None,
        Some(c) => {
            let every = duration("watch", "check_every", c, CheckEvery::MIN..=CheckEvery::MAX)?;
            Some(CheckEvery::new(every).expect("in range"))
        }
    };
    let latency_every = match &w.latency_every {
        None => None,
        Some(t) => {
            let every = duration("watch", "latency_every", t, LatencyEvery::MIN..=LatencyEvery::MAX)?;
            Some(LatencyEvery::new(every).expect("in range"))
        }
    };
    let latency_warn = duration("watch", "latency_warn", &w.latency_warn, Duration::from_micros(100)..=10 * SECOND)?;
    let workload = w.workload.map(validate_workload).transpose()?;
    Ok(Watch {
        latency_every,
        latency_warn,
        workload,
        interval,
        window,
        samples,
        steal_warn: w.steal_warn,
        steal_clear: w.steal_clear,
        iowait_warn: w.iowait_warn,
        iowait_clear: w.iowait_clear,
        metrics,
        check_every,
    })
}

fn validate_workload(w: raw::RawWorkload) -> Result<Workload, KeyError> {
    const SECTION: &str = "watch.workload";
    let prometheus = prom_url(&w.prometheus).map_err(|m| err(SECTION, "prometheus", m))?;
    for (key, query) in [("rate_query", &w.rate_query), ("services_query", &w.services_query)] {
        if query.trim().is_empty() || query.len() > 1024 || query.chars().any(char::is_control) {
            let m = format!("{} is not a PromQL query: one line of at most 1024 characters", quoted(query));
            return Err(err(SECTION, key, m));
        }
    }
    let every = duration(SECTION, "every", &w.every, WorkloadEvery::MIN..=WorkloadEvery::MAX)?;
    let every = WorkloadEvery::new(every).expect("in range");
    let timeout = duration(SECTION, "timeout", &w.timeout, Duration::from_millis(100)..=30 * SECOND)?;
    if timeout >= *every {
        let m = format!(
            "{} is not shorter than every ({}): one question must end before the next",
            quoted(&w.timeout),
            w.every
        );
        return Err(err(SECTION, "timeout", m));
    }
    let max_body = size(SECTION, "max_body", &w.max_body, 1024, "16m")?.bytes();
    for (key, v) in [("fall", w.fall), ("io_pressure_warn", w.io_pressure_warn)] {
        if !(v > 0.0 && v <= 100.0) {
            return Err(err(SECTION, key, format!("{v} is not a percentage above 0 and at most 100")));
        }
    }
    let longest = (*every * Workload::MAX_BASELINE as u32).min(7 * DAY);
    let baseline = duration(SECTION, "baseline", &w.baseline, *every..=longest)?;
    Ok(Workload {
        prometheus,
        rate_query: w.rate_query,
        services_query: w.services_query,
        every,
        timeout,
        max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
        fall: w.fall / 100.0,
        baseline: (baseline.as_nanos() / every.as_nanos()) as usize,
        io_pressure_warn: w.io_pressure_warn,
    })
}

/// `http://[USER:PASSWORD@]HOST[:PORT][/PREFIX]`: what vakt's Prometheus client dials.
fn prom_url(text: &str) -> Result<PromUrl, String> {
    let shown = || quoted(&text.split_once('@').map_or(text.to_string(), |(_, rest)| format!("http://***@{rest}")));
    let Some(rest) = text.strip_prefix("http://") else {
        return Err(format!(
            "{} is not an http:// URL (vakt asks Prometheus over plain HTTP: use its local address)",
            shown()
        ));
    };
    let (authority, prefix) = rest.find('/').map_or((rest, ""), |i| (&rest[..i], &rest[i..]));
    let (credentials, hostport) = match authority.rsplit_once('@') {
        Some((c, h)) if c.contains(':') && !c.chars().any(|ch| ch.is_control() || ch.is_whitespace()) => {
            (Some(c.to_string()), h)
        }
        Some(_) => return Err(format!("{}: credentials are USER:PASSWORD", shown())),
        None => (None, authority),
    };
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) =
                v6.split_once(']').ok_or_else(|| format!("{}: an IPv6 address needs its ]", shown()))?;
            addr.parse::<std::net::Ipv6Addr>().map_err(|_| format!("{}: `{addr}` is not an IPv6 address", shown()))?;
            (format!("[{addr}]"), after.strip_prefix(':'))
        }
        None => {
            let (h, p) = hostport.split_once(':').map_or((hostport, None), |(h, p)| (h, Some(p)));
            (h.to_string(), p)
        }
    };
    let host_ok = host.starts_with('[')
        || (!host.is_empty()
            && host.len() <= 253
            && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            && !host.starts_with(['-', '.']));
    if !host_ok {
        return Err(format!("{}: `{}` is not a host name or address", shown(), escape_controls(&host)));
    }
    let port = match port {
        None => 80,
        Some(p) => {
            p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("{}: the port is 1 to 65535", shown()))?
        }
    };
    let prefix = prefix.trim_end_matches('/');
    if !prefix.chars().all(|c| c.is_ascii_alphanumeric() || "/_.-~".contains(c)) {
        return Err(format!("{}: the path may hold letters, digits and / _ . - ~ only (no query)", shown()));
    }
    Ok(PromUrl { host, port, prefix: prefix.to_string(), credentials })
}
