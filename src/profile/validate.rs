//! From raw profile structs to the validated `Profile`: every semantic rule lives here, and
//! every error names its key so the caller can point at the line.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::raw::{self, RawPort, RawProfile};
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

fn duration(section: &str, key: &str, text: &str) -> Result<Duration, KeyError> {
    units::parse_duration(text).map_err(|m| err(section, key, m))
}

fn size(section: &str, key: &str, text: &str) -> Result<Size, KeyError> {
    Size::parse(text).map_err(|m| err(section, key, m))
}

fn one_of<'a>(section: &str, key: &str, value: &'a str, allowed: &[&str]) -> Result<&'a str, KeyError> {
    if allowed.contains(&value) {
        Ok(value)
    } else {
        let hint = locate::closest(value, allowed.iter().copied()).map(|c| format!(" (did you mean `{c}`?)"));
        Err(err(section, key, format!("`{value}` is not one of {}{}", allowed.join(", "), hint.unwrap_or_default())))
    }
}

const HYPERVISORS: &[&str] = &["any", "none", "kvm", "qemu", "xen", "vmware", "microsoft", "oracle", "amazon"];
const STORAGE: &[&str] = &["any", "nvme", "virtio", "ssd", "scsi", "rotational"];

pub(super) fn validate(raw: RawProfile, source: &str) -> Result<Profile, KeyError> {
    let requirement = |v: &str| {
        if v == "any" { Requirement::Any } else { Requirement::Exactly(v.to_string()) }
    };
    let host = match raw.host {
        None => None,
        Some(h) => Some(HostReq {
            hypervisor: requirement(one_of("host", "hypervisor", &h.hypervisor, HYPERVISORS)?),
            forbid_container: one_of("host", "container", &h.container, &["forbid", "allow"])? == "forbid",
            storage: requirement(one_of("host", "storage", &h.storage, STORAGE)?),
            storage_paths: absolute_paths("host", "storage_paths", &h.storage_paths)?,
        }),
    };
    let packages = match raw.packages {
        None => None,
        Some(p) => {
            if let Some(bad) = p.install.iter().find(|n| !valid_package_name(n)) {
                return Err(err("packages", "install", format!("`{bad}` is not a Debian package name")));
            }
            Some(Packages {
                install: p.install,
                update: p.update,
                lock_timeout: duration("packages", "lock_timeout", &p.lock_timeout)?,
            })
        }
    };
    let firewall = match raw.firewall {
        None => None,
        Some(f) => Some(validate_firewall(f)?),
    };
    let swarm = match raw.swarm {
        None => None,
        Some(s) => Some(Swarm {
            init: s.init,
            advertise_addr: match s.advertise_addr.as_str() {
                "auto" => Advertise::Auto,
                text => match text.parse::<IpAddr>() {
                    Ok(ip) => Advertise::Ip(ip),
                    Err(_) if valid_interface_name(text) => Advertise::Interface(text.into()),
                    Err(_) => {
                        return Err(err(
                            "swarm",
                            "advertise_addr",
                            "give \"auto\", an IP address or an interface name",
                        ));
                    }
                },
            },
            listen_addr: s
                .listen_addr
                .parse()
                .map_err(|_| err("swarm", "listen_addr", format!("`{}` is not ADDRESS:PORT", s.listen_addr)))?,
        }),
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
    Ok(Profile { source: source.into(), host, packages, firewall, docker, swarm, nginx, tuning, watch })
}

fn absolute_paths(section: &str, key: &str, paths: &[String]) -> Result<Vec<PathBuf>, KeyError> {
    paths
        .iter()
        .map(|p| {
            if p.starts_with('/') {
                Ok(PathBuf::from(p))
            } else {
                Err(err(section, key, format!("`{p}` is not an absolute path")))
            }
        })
        .collect()
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
    let policy = |key: &str, value: &str, allowed: &[&str]| -> Result<Policy, KeyError> {
        one_of("firewall", key, value, allowed).map(|v| Policy::parse(v).unwrap_or(Policy::Deny))
    };
    let mut allow = Vec::new();
    for (i, r) in f.allow.into_iter().enumerate() {
        let at = |key: &str, message: String| KeyError {
            section: "firewall.allow".into(),
            nth: Some(i),
            key: key.into(),
            message,
        };
        let ports = match &r.port {
            RawPort::Number(0) => return Err(at("port", "port 0 is not a port".into())),
            RawPort::Number(p) => (*p, *p),
            RawPort::Text(t) => parse_port_range(t)
                .ok_or_else(|| at("port", format!("`{t}` is not a port or a range like \"6000:6007\"")))?,
        };
        let proto = match r.proto.as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "both" | "any" => Proto::Both,
            other => {
                return Err(at("proto", format!("`{other}` is not one of tcp, udp, both")));
            }
        };
        if ports.0 != ports.1 && proto == Proto::Both {
            return Err(at("proto", "ufw needs a port range to be tcp or udp, not both".into()));
        }
        let from = match r.from.as_str() {
            "any" => None,
            text => Some(
                parse_cidr(text)
                    .ok_or_else(|| at("from", format!("`{text}` is not a CIDR like \"10.0.0.0/8\" or \"any\"")))?,
            ),
        };
        if let Some(c) = &r.comment
            && (c.contains('\'') || c.contains('\n'))
        {
            return Err(at("comment", "a ufw comment cannot hold quotes or newlines".into()));
        }
        allow.push(Rule { ports, proto, from, comment: r.comment });
    }
    Ok(Firewall {
        enabled: f.enabled,
        incoming: policy("incoming", &f.incoming, &["allow", "deny", "reject"])?,
        outgoing: policy("outgoing", &f.outgoing, &["allow", "deny", "reject"])?,
        routed: policy("routed", &f.routed, &["allow", "deny", "reject", "disabled"])?,
        prune: f.prune,
        allow,
    })
}

fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let (a, b) = text.split_once(':').unwrap_or((text, text));
    let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a > 0 && a <= b).then_some((a, b))
}

/// A CIDR, or a bare address meaning the host route; the network is normalised (10.1.2.3/8 → 10.0.0.0/8).
fn parse_cidr(text: &str) -> Option<IpNet> {
    let net = text.parse::<IpNet>().or_else(|_| text.parse::<IpAddr>().map(IpNet::from)).ok()?;
    Some(net.trunc())
}

fn validate_docker(d: raw::RawDocker, swarm: Option<&Swarm>) -> Result<Docker, KeyError> {
    if d.storage_driver.is_empty() {
        return Err(err("docker", "storage_driver", "must name a driver, e.g. \"overlay2\""));
    }
    let mut daemon = serde_json::Map::new();
    for (key, value) in d.daemon {
        if key == "storage-driver" {
            return Err(err("docker.daemon", &key, "set the driver with `docker.storage_driver`, not here"));
        }
        let json = serde_json::to_value(&value).map_err(|e| err("docker.daemon", &key, e.to_string()))?;
        daemon.insert(key, json);
    }
    if swarm.is_some_and(|s| s.init) && daemon.get("live-restore") == Some(&serde_json::Value::Bool(true)) {
        // dockerd refuses to start with live-restore in swarm mode (moby/moby#29299).
        return Err(err(
            "docker.daemon",
            "live-restore",
            "live-restore = true conflicts with [swarm] init: dockerd will not start in swarm mode with it",
        ));
    }
    daemon.insert("storage-driver".into(), serde_json::Value::String(d.storage_driver.clone()));
    if let Some(h) = &d.host
        && !(h.starts_with("unix://") || h.starts_with('/'))
    {
        return Err(err("docker", "host", format!("`{h}`: only unix:// endpoints are supported")));
    }
    Ok(Docker {
        storage_driver: d.storage_driver,
        restart: d.restart,
        allow_driver_switch: d.allow_driver_switch,
        host: d.host,
        restart_timeout: duration("docker", "restart_timeout", &d.restart_timeout)?,
        daemon,
    })
}

fn validate_nginx(n: raw::RawNginx) -> Result<Nginx, KeyError> {
    let directive = |key: &str, v: &str| -> Result<(), KeyError> {
        if v.is_empty() || v.contains([';', '{', '}', '\n', '"', '\'']) {
            Err(err("nginx", key, format!("`{v}` cannot be written into nginx.conf safely")))
        } else {
            Ok(())
        }
    };
    for (key, value) in [
        ("user", &n.user),
        ("worker_processes", &n.worker_processes),
        ("pid", &n.pid),
        ("error_log", &n.error_log),
        ("access_log", &n.access_log),
        ("mime_types", &n.mime_types),
        ("listen", &n.listen),
        ("server_name", &n.server_name),
        ("proxy_http_version", &n.proxy_http_version),
    ] {
        directive(key, value)?;
    }
    if n.upstream.is_empty() {
        return Err(err("nginx", "upstream", "list at least one upstream server, e.g. [\"127.0.0.1:8080\"]"));
    }
    for u in &n.upstream {
        directive("upstream", u)?;
    }
    if !n.config.starts_with('/') {
        return Err(err("nginx", "config", "must be an absolute path"));
    }
    Ok(Nginx {
        config: PathBuf::from(&n.config),
        pid: PathBuf::from(&n.pid),
        keepalive_timeout: duration("nginx", "keepalive_timeout", &n.keepalive_timeout)?,
        client_body_buffer_size: size("nginx", "client_body_buffer_size", &n.client_body_buffer_size)?,
        client_max_body_size: size("nginx", "client_max_body_size", &n.client_max_body_size)?,
        proxy_read_timeout: duration("nginx", "proxy_read_timeout", &n.proxy_read_timeout)?,
        proxy_send_timeout: duration("nginx", "proxy_send_timeout", &n.proxy_send_timeout)?,
        longest_invocation: duration("nginx", "longest_invocation", &n.longest_invocation)?,
        user: n.user,
        worker_processes: n.worker_processes,
        error_log: n.error_log,
        access_log: n.access_log,
        mime_types: n.mime_types,
        listen: n.listen,
        server_name: n.server_name,
        upstream: n.upstream,
        upstream_keepalive: n.upstream_keepalive,
        keepalive_requests: n.keepalive_requests,
        sendfile: n.sendfile,
        tcp_nopush: n.tcp_nopush,
        tcp_nodelay: n.tcp_nodelay,
        proxy_http_version: n.proxy_http_version,
        proxy_clear_connection: n.proxy_clear_connection,
    })
}

fn validate_tuning(t: raw::RawTuning) -> Result<Tuning, KeyError> {
    let mut sysctl = BTreeMap::new();
    for (key, value) in t.sysctl {
        let valid = !key.is_empty()
            && !key.contains("..")
            && key.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !valid {
            return Err(err("tuning.sysctl", &key, "is not a sysctl name like \"vm.swappiness\""));
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => u8::from(b).to_string(),
            _ => return Err(err("tuning.sysctl", &key, "must be a string or an integer")),
        };
        sysctl.insert(key, text);
    }
    if let Some(s) = &t.io_scheduler {
        one_of("tuning", "io_scheduler", s, &["none", "mq-deadline", "kyber", "bfq", "keep"])?;
    }
    // "keep" leaves the schedulers as they are.
    Ok(Tuning { io_scheduler: t.io_scheduler.filter(|s| s != "keep"), sysctl })
}

fn validate_watch(w: raw::RawWatch) -> Result<Watch, KeyError> {
    let interval = duration("watch", "interval", &w.interval)?;
    if interval < Duration::from_millis(100) {
        return Err(err("watch", "interval", "must be at least 100ms"));
    }
    let window = duration("watch", "window", &w.window)?;
    if window < interval {
        return Err(err("watch", "window", format!("must be at least the interval ({})", w.interval)));
    }
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
        Some(m) => Some(
            m.parse()
                .map_err(|_| err("watch", "metrics", format!("`{m}` is not ADDRESS:PORT like \"127.0.0.1:9477\"")))?,
        ),
    };
    let check_every = match &w.check_every {
        None => None,
        Some(c) => Some(duration("watch", "check_every", c)?),
    };
    Ok(Watch {
        interval,
        window,
        steal_warn: w.steal_warn,
        steal_clear: w.steal_clear,
        iowait_warn: w.iowait_warn,
        iowait_clear: w.iowait_clear,
        metrics,
        check_every,
    })
}
