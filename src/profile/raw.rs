//! The profile as written: serde structs that reject unknown keys and fill in defaults.
//! Nothing here is validated beyond its TOML type; `super::validate` turns it into a `Profile`.

use serde::{Deserialize, Serialize};

use super::{
    Action, Containers, DefaultSite, HttpVersion, Hypervisor, IoScheduler, Policy, Proto, Published, Requirement, Role,
    StorageKind, Target,
};

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    pub host: Option<RawHost>,
    pub packages: Option<RawPackages>,
    pub firewall: Option<RawFirewall>,
    pub docker: Option<RawDocker>,
    pub swarm: Option<RawSwarm>,
    pub nginx: Option<RawNginx>,
    pub tuning: Option<RawTuning>,
    pub watch: Option<RawWatch>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHost {
    pub hypervisor: Requirement<Hypervisor>,
    pub container: Containers,
    pub storage: Requirement<StorageKind>,
    pub storage_paths: Vec<String>,
    pub latency_probe: bool,
    /// Any TOML value, so that a wrong one (-1, 1.5, "500", nan, 2^64) is named with its key
    /// and range by the validation, not as serde's "expected u64".
    pub nvme_p50_us: toml::Value,
}

impl Default for RawHost {
    fn default() -> Self {
        RawHost {
            hypervisor: Requirement::Exactly(Hypervisor::Kvm),
            container: Containers::Forbid,
            storage: Requirement::Exactly(StorageKind::Nvme),
            storage_paths: vec!["/".into(), "/var/lib/docker".into()],
            latency_probe: true,
            nvme_p50_us: toml::Value::Integer(500),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPackages {
    pub install: Vec<String>,
    pub update: bool,
    pub lock_timeout: String,
}

impl Default for RawPackages {
    fn default() -> Self {
        RawPackages { install: Vec::new(), update: true, lock_timeout: "120s".into() }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFirewall {
    pub enabled: bool,
    pub incoming: Policy,
    pub outgoing: Policy,
    pub routed: Policy,
    pub prune: bool,
    /// Networks the operator administers the host from (the SSH lockout guard's judge).
    pub admin: Vec<String>,
    /// Who decides which Docker-published ports the outside reaches: "docker" or "profile".
    pub published_ports: Published,
    pub allow: Vec<RawRule>,
    /// Rules with an `action` (allow, limit, deny, reject).
    pub rule: Vec<RawRule>,
}

impl Default for RawFirewall {
    fn default() -> Self {
        RawFirewall {
            enabled: true,
            incoming: Policy::Deny,
            outgoing: Policy::Allow,
            routed: Policy::Disabled,
            prune: false,
            admin: Vec::new(),
            published_ports: Published::Docker,
            allow: Vec::new(),
            rule: Vec::new(),
        }
    }
}

/// A port as written: `22` or `"6000:6007"`. Deserialized by hand so that a wrong value says
/// what a port is, not which variants of an enum failed.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum RawPort {
    Number(u16),
    Text(String),
}

impl<'de> Deserialize<'de> for RawPort {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawPort, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawPort;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a port from 1 to 65535, or a range like \"6000:6007\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawPort, E> {
                match u16::try_from(v) {
                    Ok(p) if p > 0 => Ok(RawPort::Number(p)),
                    _ => Err(E::custom(format!("{v} is not a port; use 1 to 65535, or a range like \"6000:6007\""))),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawPort, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(-1))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawPort, E> {
                Ok(RawPort::Text(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    pub port: RawPort,
    #[serde(default = "default_proto")]
    pub proto: Proto,
    #[serde(default = "default_from")]
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// "host" (ufw's own rules, the default) or "containers" (Docker-published ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
}

fn default_proto() -> Proto {
    Proto::Tcp
}

fn default_from() -> String {
    "any".into()
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDocker {
    pub storage_driver: String,
    pub restart: bool,
    pub allow_driver_switch: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub restart_timeout: String,
    pub daemon: toml::Table,
}

impl Default for RawDocker {
    fn default() -> Self {
        RawDocker {
            storage_driver: "overlay2".into(),
            restart: true,
            allow_driver_switch: false,
            host: None,
            restart_timeout: "60s".into(),
            daemon: toml::Table::new(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSwarm {
    pub init: bool,
    /// `init`, `manager` or `worker`; absent, `init` decides (`true`: `init`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    pub advertise_addr: String,
    pub listen_addr: String,
    /// Managers to join through (`ADDRESS[:PORT]`), for `manager` and `worker`.
    pub join: Vec<String>,
    /// Where the join token is read from; absent, the systemd credential `swarm-join-token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// Networks of the swarm's nodes: the swarm ports are opened to them only.
    pub peers: Vec<String>,
}

impl Default for RawSwarm {
    fn default() -> Self {
        RawSwarm {
            init: true,
            role: None,
            advertise_addr: "auto".into(),
            listen_addr: "0.0.0.0:2377".into(),
            join: Vec::new(),
            token_file: None,
            peers: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNginx {
    pub config: String,
    pub user: String,
    pub worker_processes: String,
    pub pid: String,
    pub error_log: String,
    pub access_log: String,
    pub mime_types: String,
    pub listen: String,
    pub server_name: String,
    pub upstream: Vec<String>,
    pub upstream_keepalive: u32,
    pub keepalive_timeout: String,
    pub keepalive_requests: u32,
    pub sendfile: bool,
    pub tcp_nopush: bool,
    pub tcp_nodelay: bool,
    pub client_body_buffer_size: String,
    pub client_max_body_size: String,
    pub proxy_http_version: HttpVersion,
    pub proxy_clear_connection: bool,
    pub proxy_read_timeout: String,
    pub proxy_send_timeout: String,
    pub longest_invocation: String,
    pub include_sites: bool,
    pub default_site: DefaultSite,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawNginxTls>,
}

/// `[nginx.tls]`: HTTPS for the gateway with a certificate from ACME through certbot.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNginxTls {
    pub domains: Vec<String>,
    pub email: String,
    pub acme_directory: String,
    pub listen: String,
    pub redirect_http: bool,
    pub hsts: bool,
    pub hsts_max_age: String,
    pub expiry_warn: String,
    pub webroot: String,
    pub certbot_config_dir: String,
    pub certbot_work_dir: String,
    pub certbot_logs_dir: String,
}

impl Default for RawNginxTls {
    fn default() -> Self {
        RawNginxTls {
            domains: Vec::new(),
            email: String::new(),
            acme_directory: "https://acme-v02.api.letsencrypt.org/directory".into(),
            listen: "443".into(),
            redirect_http: true,
            hsts: false,
            hsts_max_age: "365d".into(),
            expiry_warn: "14d".into(),
            webroot: "/var/www/vakt-acme".into(),
            certbot_config_dir: "/etc/letsencrypt".into(),
            certbot_work_dir: "/var/lib/letsencrypt".into(),
            certbot_logs_dir: "/var/log/letsencrypt".into(),
        }
    }
}

impl Default for RawNginx {
    fn default() -> Self {
        RawNginx {
            config: "/etc/nginx/nginx.conf".into(),
            user: "www-data".into(),
            worker_processes: "auto".into(),
            pid: "/run/nginx.pid".into(),
            error_log: "/var/log/nginx/error.log".into(),
            access_log: "/var/log/nginx/access.log".into(),
            mime_types: "mime.types".into(),
            listen: "80".into(),
            server_name: "_".into(),
            upstream: vec!["127.0.0.1:8080".into()],
            upstream_keepalive: 16,
            keepalive_timeout: "65s".into(),
            keepalive_requests: 10_000,
            sendfile: true,
            tcp_nopush: true,
            tcp_nodelay: true,
            client_body_buffer_size: "128k".into(),
            client_max_body_size: "50m".into(),
            proxy_http_version: HttpVersion::V1_1,
            proxy_clear_connection: true,
            proxy_read_timeout: "300s".into(),
            proxy_send_timeout: "300s".into(),
            longest_invocation: "300s".into(),
            include_sites: true,
            default_site: DefaultSite::Disable,
            tls: None,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTuning {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_scheduler: Option<IoScheduler>,
    pub sysctl: toml::Table,
}

impl Default for RawTuning {
    fn default() -> Self {
        RawTuning { io_scheduler: Some(IoScheduler::None), sysctl: toml::Table::new() }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWatch {
    pub interval: String,
    pub window: String,
    pub steal_warn: f64,
    pub steal_clear: f64,
    pub iowait_warn: f64,
    pub iowait_clear: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_every: Option<String>,
    /// How often to measure the read latency of the disks under `/` and Docker's data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_every: Option<String>,
    /// A disk's p99 read latency that counts as the host's fault in a workload's fall.
    pub latency_warn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<RawWorkload>,
}

/// `[watch.workload]`: where the gateway's invocation rate and service count come from.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWorkload {
    /// The Prometheus server's base URL (`http://HOST:PORT`).
    pub prometheus: String,
    pub rate_query: String,
    pub services_query: String,
    pub every: String,
    pub timeout: String,
    pub max_body: String,
    /// How far the rate must fall below its baseline, in percent, to count as a fall.
    pub fall: f64,
    /// How far back the baseline reaches.
    pub baseline: String,
    /// I/O pressure (`some`, 10 s average, percent) that counts as the host's fault.
    pub io_pressure_warn: f64,
}

impl Default for RawWorkload {
    fn default() -> Self {
        RawWorkload {
            prometheus: "http://127.0.0.1:9090".into(),
            rate_query: "sum(rate(gateway_function_invocation_total{code=\"200\"}[1m]))".into(),
            services_query: "sum(gateway_service_count)".into(),
            every: "15s".into(),
            timeout: "2s".into(),
            max_body: "64k".into(),
            fall: 50.0,
            baseline: "10m".into(),
            io_pressure_warn: 20.0,
        }
    }
}

impl Default for RawWatch {
    fn default() -> Self {
        RawWatch {
            interval: "5s".into(),
            window: "1m".into(),
            steal_warn: 10.0,
            steal_clear: 5.0,
            iowait_warn: 20.0,
            iowait_clear: 10.0,
            metrics: None,
            check_every: None,
            latency_every: None,
            latency_warn: "20ms".into(),
            workload: None,
        }
    }
}
