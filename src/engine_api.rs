//! The Docker Engine API through bollard, with every call bounded in time so that a dead or
//! slow socket is a clear "could not verify", never a hang. Observations get a short bound;
//! calls that make the engine do real work get their own, longer one.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use bollard::Docker;
use bollard::models::{
    ContainerSummary, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum, LocalNodeState,
    NodeSpecRoleEnum, NodeState, PortSummaryTypeEnum, Service, SwarmInitRequest, SwarmJoinRequest, SystemInfo,
};

use crate::secret::JoinToken;

/// For observations (`/info`): an engine that takes longer is reported as not answering.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// For `swarm join`, which waits for the node's certificate from a manager and, for a manager,
/// for the raft log to catch up.
pub const SWARM_JOIN_TIMEOUT: Duration = Duration::from_secs(120);
/// For `swarm init`, which creates the swarm's CA, node certificate and raft store before it
/// answers; on a loaded host that takes well over the observation bound.
pub const SWARM_INIT_TIMEOUT: Duration = Duration::from_secs(120);

/// What vakt needs to know about a running engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineFacts {
    pub version: String,
    pub driver: String,
    pub images: i64,
    pub containers: i64,
    pub swarm: SwarmFacts,
    /// The daemon.json keys a reload changes, as the engine runs them.
    pub reloadable: Reloadable,
}

/// The values of the daemon.json keys dockerd re-reads on SIGHUP that `/info` shows; None
/// where this engine's `/info` does not show one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloadable {
    /// In the engine's own order (it deduplicates them).
    pub labels: Option<Vec<String>>,
    pub debug: Option<bool>,
    pub live_restore: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmFacts {
    pub state: SwarmState,
    pub manager: bool,
    pub node_addr: Option<String>,
    pub node_id: Option<String>,
    /// Hidden from workers.
    pub cluster_id: Option<String>,
    /// The managers this node knows, `ADDRESS:PORT` (a manager lists itself too).
    pub remote_managers: Vec<String>,
    /// The engine's own last swarm error (a failed join left behind, for instance).
    pub error: Option<String>,
}

crate::words! {
    /// This node's part in a swarm, as the engine reports it.
    pub enum SwarmState {
        Inactive = "inactive",
        Pending = "pending",
        Active = "active",
        Error = "error",
        Locked = "locked",
    }
}

crate::words! {
    /// Whether the managers reach a manager.
    pub enum Reachability {
        Reachable = "reachable",
        Unreachable = "unreachable",
        Unknown = "unknown",
    }
}

crate::words! {
    /// A node's state in the swarm's node list.
    pub enum NodeStatus {
        Ready = "ready",
        Down = "down",
        Disconnected = "disconnected",
        Unknown = "unknown",
    }
}

/// One node of the swarm, as a manager lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub id: String,
    pub hostname: String,
    pub manager: bool,
    pub leader: bool,
    /// For managers only.
    pub reachability: Option<Reachability>,
    pub state: NodeStatus,
    pub addr: String,
}

/// The engine's `/info` answers of one run, by socket. The docker, swarm and exposure audits
/// all read the engine's state and dockerd takes a while to compose it (about 17 ms on a
/// small host), so one answer serves them all, also when they ask at the same moment.
pub type InfoMemo = crate::memo::Memo<Result<SystemInfo, String>>;

pub struct Engine {
    docker: Docker,
    socket: String,
    runtime: tokio::runtime::Runtime,
    memo: Option<Arc<InfoMemo>>,
}

impl Engine {
    pub fn connect(socket: &Path) -> anyhow::Result<Engine> {
        let socket = socket.display().to_string();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("failed to start an async runtime")?;
        if !Path::new(&socket).exists() {
            return Err(anyhow!(
                "Docker is not reachable: {socket} does not exist (is dockerd running? set [docker] host or DOCKER_HOST)"
            ));
        }
        // bollard's own bound applies to every request; the longest call's bound is given here
        // and each call is held to its own in `call`.
        let docker = Docker::connect_with_unix(&socket, SWARM_INIT_TIMEOUT.as_secs(), bollard::API_DEFAULT_VERSION)
            .map_err(|e| anyhow!("Docker is not reachable at {socket}: {e}"))?;
        Ok(Engine { docker, socket, runtime, memo: None })
    }

    /// This engine's `/info` comes from (and goes to) `memo`: for observations only, never
    /// for a handle that waits for a change.
    pub fn remembering(mut self, memo: &Arc<InfoMemo>) -> Engine {
        self.memo = Some(Arc::clone(memo));
        self
    }

    fn info(&self) -> anyhow::Result<SystemInfo> {
        let ask = || self.call("/info", CALL_TIMEOUT, self.docker.info());
        match &self.memo {
            Some(memo) => memo.get(&self.socket, || ask().map_err(|e| format!("{e:#}"))).map_err(anyhow::Error::msg),
            None => ask(),
        }
    }

    fn call<T>(
        &self,
        what: &str,
        limit: Duration,
        fut: impl Future<Output = Result<T, bollard::errors::Error>>,
    ) -> anyhow::Result<T> {
        self.runtime.block_on(self.bounded(what, limit, fut))
    }

    /// One request held to `limit`, for calls made side by side inside one `block_on`.
    async fn bounded<T>(
        &self,
        what: &str,
        limit: Duration,
        fut: impl Future<Output = Result<T, bollard::errors::Error>>,
    ) -> anyhow::Result<T> {
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(anyhow!("Docker at {} failed to answer {what}: {}", self.socket, explain(&e, limit))),
            Err(_) => Err(anyhow!("Docker at {} did not answer {what} within {}s", self.socket, limit.as_secs())),
        }
    }

    pub fn facts(&self) -> anyhow::Result<EngineFacts> {
        let info = self.info()?;
        let swarm = info.swarm.unwrap_or_default();
        let state = match swarm.local_node_state {
            Some(LocalNodeState::ACTIVE) => SwarmState::Active,
            Some(LocalNodeState::PENDING) => SwarmState::Pending,
            Some(LocalNodeState::ERROR) => SwarmState::Error,
            Some(LocalNodeState::LOCKED) => SwarmState::Locked,
            _ => SwarmState::Inactive,
        };
        Ok(EngineFacts {
            version: info.server_version.unwrap_or_default(),
            driver: info.driver.unwrap_or_default(),
            images: info.images.unwrap_or(0),
            containers: info.containers.unwrap_or(0),
            swarm: SwarmFacts {
                state,
                manager: swarm.control_available.unwrap_or(false),
                node_addr: swarm.node_addr.filter(|a| !a.is_empty()),
                node_id: swarm.node_id.filter(|a| !a.is_empty()),
                cluster_id: swarm.cluster.and_then(|c| c.id).filter(|a| !a.is_empty()),
                remote_managers: swarm.remote_managers.unwrap_or_default().into_iter().filter_map(|p| p.addr).collect(),
                // The engine's error may quote what it was sent.
                error: swarm.error.filter(|e| !e.is_empty()).map(|e| crate::secret::redact_tokens(&e)),
            },
            reloadable: Reloadable { labels: info.labels, debug: info.debug, live_restore: info.live_restore_enabled },
        })
    }

    /// The facts of the engine at `socket`, or why they could not be had (for a finding).
    pub fn observe(socket: &Path, memo: &Arc<InfoMemo>) -> Result<EngineFacts, String> {
        Engine::connect(socket).and_then(|e| e.remembering(memo).facts()).map_err(|e| format!("{e:#}"))
    }

    /// Waits until the engine answers, up to `bound`, and gives its facts as it came back;
    /// `progress` is called about once a second.
    pub fn wait_ready(socket: &Path, bound: Duration, mut progress: impl FnMut()) -> anyhow::Result<EngineFacts> {
        let started = std::time::Instant::now();
        let mut last_tick = started;
        loop {
            match Engine::connect(socket).and_then(|e| e.facts()) {
                Ok(facts) => return Ok(facts),
                Err(e) if started.elapsed() >= bound => {
                    return Err(e.context(format!("Docker did not come back within {}s", bound.as_secs())));
                }
                Err(_) => {
                    if last_tick.elapsed() >= Duration::from_secs(1) {
                        progress();
                        last_tick = std::time::Instant::now();
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// `docker swarm init`; the join tokens are never requested, so they cannot leak.
    pub fn init_swarm(&self, advertise: &str, listen: &str) -> anyhow::Result<()> {
        let request = SwarmInitRequest {
            advertise_addr: Some(advertise.into()),
            listen_addr: Some(listen.into()),
            ..Default::default()
        };
        self.call("swarm init", SWARM_INIT_TIMEOUT, self.docker.init_swarm(request)).map(|_node_id| ())
    }
}

impl Engine {
    /// Every node of the swarm; only a manager can answer.
    pub fn nodes(&self) -> anyhow::Result<Vec<NodeFacts>> {
        let nodes = self.call("/nodes", CALL_TIMEOUT, self.docker.list_nodes(None))?;
        Ok(nodes
            .into_iter()
            .map(|n| {
                let status = n.status.unwrap_or_default();
                let ms = n.manager_status;
                NodeFacts {
                    id: n.id.unwrap_or_default(),
                    hostname: n.description.and_then(|d| d.hostname).unwrap_or_default(),
                    manager: n.spec.and_then(|s| s.role) == Some(NodeSpecRoleEnum::MANAGER),
                    leader: ms.as_ref().and_then(|m| m.leader).unwrap_or(false),
                    reachability: ms.as_ref().and_then(|m| m.reachability).map(|r| match r {
                        bollard::models::Reachability::REACHABLE => Reachability::Reachable,
                        bollard::models::Reachability::UNREACHABLE => Reachability::Unreachable,
                        _ => Reachability::Unknown,
                    }),
                    state: match status.state {
                        Some(NodeState::READY) => NodeStatus::Ready,
                        Some(NodeState::DOWN) => NodeStatus::Down,
                        Some(NodeState::DISCONNECTED) => NodeStatus::Disconnected,
                        _ => NodeStatus::Unknown,
                    },
                    addr: ms.and_then(|m| m.addr).or(status.addr).unwrap_or_default(),
                }
            })
            .collect())
    }

    /// `docker swarm join`. The token goes into the request body only; every error is
    /// redacted, as an engine may echo what it was sent.
    pub fn join_swarm(
        &self,
        advertise: &str,
        listen: &str,
        remotes: &[String],
        token: &JoinToken,
    ) -> anyhow::Result<()> {
        let request = SwarmJoinRequest {
            advertise_addr: Some(advertise.into()),
            listen_addr: Some(listen.into()),
            remote_addrs: Some(remotes.to_vec()),
            join_token: Some(token.expose().into()),
            ..Default::default()
        };
        self.call("swarm join", SWARM_JOIN_TIMEOUT, self.docker.join_swarm(request))
            .map_err(|e| anyhow!(token.redact(&format!("{e:#}"))))
    }
}

impl Engine {
    /// The ports the engine publishes, named: running containers (`/containers/json`) and, on
    /// a swarm manager, services (`/services`). Only a manager lists services: any other node
    /// answers 503 and dockerd logs that as an error, so they are asked only where `/info`
    /// says this node is a manager, or, alongside the containers, where the profile makes it
    /// one (`manager_expected`; the answer is dropped unless `/info` agrees).
    pub fn publications(&self, manager_expected: bool) -> anyhow::Result<Publications> {
        let services = || self.bounded("/services", CALL_TIMEOUT, self.docker.list_services(None));
        // Before `/info`: in a run the engine composes that meanwhile (it is asked ahead of the
        // resources), and the memo then has the answer.
        let (containers, early_services) = self.runtime.block_on(async {
            let containers = self.bounded("/containers/json", CALL_TIMEOUT, self.docker.list_containers(None));
            if manager_expected {
                let (c, s) = tokio::join!(containers, services());
                (c, Some(s))
            } else {
                (containers.await, None)
            }
        });
        let mut ports = container_ports(containers?);
        let swarm = self.info()?.swarm.unwrap_or_default();
        let active = swarm.local_node_state == Some(LocalNodeState::ACTIVE);
        let services_unavailable = match (active, swarm.control_available.unwrap_or(false)) {
            (false, _) => None,
            (true, false) => Some(
                "this node is a swarm worker and only managers list services: ports on the routing mesh are not named"
                    .to_string(),
            ),
            (true, true) => match early_services.unwrap_or_else(|| self.runtime.block_on(services())) {
                Ok(services) => {
                    ports.extend(service_ports(services));
                    None
                }
                Err(e) => Some(format!("{e:#}")),
            },
        };
        Ok(Publications { ports, services_unavailable })
    }
}

/// How a swarm service publishes a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PublishMode {
    /// On the routing mesh: every node of the swarm answers on the port.
    Ingress,
    /// On the nodes that run a task only, like a container's `-p`.
    Host,
}

/// What publishes a port, as the Engine API names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Publisher {
    /// A running container's `-p`; `service` when it is a swarm task (a host-mode port).
    Container {
        name: String,
        service: Option<String>,
    },
    Service {
        name: String,
        mode: PublishMode,
    },
}

/// One published port: `proto` is `tcp`, `udp` or `sctp`; `target` the port inside.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PublishedPort {
    pub proto: String,
    pub port: u16,
    pub target: u16,
    pub by: Publisher,
}

/// The engine's published ports, and why services could not be listed when they could not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publications {
    pub ports: Vec<PublishedPort>,
    pub services_unavailable: Option<String>,
}

/// The published ports of running containers. A port bound on IPv4 and IPv6 is listed twice
/// by the engine; it is one port here.
pub fn container_ports(containers: Vec<ContainerSummary>) -> Vec<PublishedPort> {
    let mut out = Vec::new();
    for c in containers {
        let name = c.names.unwrap_or_default().into_iter().next().unwrap_or_default();
        let name = name.trim_start_matches('/').to_string();
        let service = c.labels.unwrap_or_default().remove("com.docker.swarm.service.name");
        for p in c.ports.unwrap_or_default() {
            let Some(port) = p.public_port else { continue };
            let proto = match p.typ {
                Some(PortSummaryTypeEnum::UDP) => "udp",
                Some(PortSummaryTypeEnum::SCTP) => "sctp",
                _ => "tcp",
            };
            let by = Publisher::Container { name: name.clone(), service: service.clone() };
            out.push(PublishedPort { proto: proto.into(), port, target: p.private_port, by });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The published ports of swarm services, with their publish mode.
pub fn service_ports(services: Vec<Service>) -> Vec<PublishedPort> {
    let mut out = Vec::new();
    for s in services {
        let name = s.spec.and_then(|sp| sp.name).unwrap_or_default();
        for p in s.endpoint.and_then(|e| e.ports).unwrap_or_default() {
            let (Some(port), Some(target)) = (
                p.published_port.and_then(|p| u16::try_from(p).ok()),
                p.target_port.and_then(|p| u16::try_from(p).ok()),
            ) else {
                continue;
            };
            let proto = match p.protocol {
                Some(EndpointPortConfigProtocolEnum::UDP) => "udp",
                Some(EndpointPortConfigProtocolEnum::SCTP) => "sctp",
                _ => "tcp",
            };
            // The engine's default mode, when the field is absent, is ingress.
            let mode = match p.publish_mode {
                Some(EndpointPortConfigPublishModeEnum::HOST) => PublishMode::Host,
                _ => PublishMode::Ingress,
            };
            let by = Publisher::Service { name: name.clone(), mode };
            out.push(PublishedPort { proto: proto.into(), port, target, by });
        }
    }
    out.sort();
    out.dedup();
    out
}

fn explain(e: &bollard::errors::Error, limit: Duration) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, message } => {
            format!("HTTP {status_code}: {message}")
        }
        bollard::errors::Error::RequestTimeoutError => format!("no answer within {}s", limit.as_secs()),
        other => {
            let text = other.to_string();
            if text.contains("Permission denied") {
                format!("{text} (run as root or as a member of the docker group)")
            } else {
                text
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_info_answer_serves_every_audit_of_a_run_until_it_is_forgotten() {
        let memo = InfoMemo::default();
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let ask = || {
            asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            Ok(SystemInfo { driver: Some("overlay2".into()), ..Default::default() })
        };
        // Three audits asking at the same moment: one request, the same answer for all.
        let drivers: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3).map(|_| s.spawn(|| memo.get("/run/docker.sock", ask))).collect();
            handles.into_iter().map(|h| h.join().expect("joined").expect("answer").driver).collect()
        });
        assert_eq!(drivers, vec![Some("overlay2".to_string()); 3]);
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Another engine is asked on its own; a failure is remembered as the answer too.
        assert!(memo.get("/other.sock", || Err("down".into())).is_err());
        assert!(memo.get("/other.sock", ask).is_err(), "the run keeps the answer it had");
        // After a change the run asks again.
        memo.forget();
        memo.get("/run/docker.sock", ask).expect("answer");
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    /// As Docker 20.10 answers `/containers/json`: a `-p` container bound on both families, a
    /// swarm task publishing in host mode, and a container with an unpublished port.
    const CONTAINERS: &str = r#"[
      {"Names":["/web"],"Labels":{},"Ports":[
        {"IP":"0.0.0.0","PrivatePort":80,"PublicPort":8081,"Type":"tcp"},
        {"IP":"::","PrivatePort":80,"PublicPort":8081,"Type":"tcp"},
        {"IP":"0.0.0.0","PrivatePort":53,"PublicPort":5353,"Type":"udp"}]},
      {"Names":["/svc.1.k2x9"],"Labels":{"com.docker.swarm.service.name":"svc"},"Ports":[
        {"IP":"0.0.0.0","PrivatePort":80,"PublicPort":8082,"Type":"tcp"}]},
      {"Names":["/db"],"Labels":{},"Ports":[{"PrivatePort":5432,"Type":"tcp"}]}
    ]"#;

    /// As a manager answers `/services`: one port on the routing mesh, one in host mode.
    const SERVICES: &str = r#"[
      {"Spec":{"Name":"func_gateway"},"Endpoint":{"Ports":[
        {"Protocol":"tcp","TargetPort":8080,"PublishedPort":8080,"PublishMode":"ingress"}]}},
      {"Spec":{"Name":"svc"},"Endpoint":{"Ports":[
        {"Protocol":"tcp","TargetPort":80,"PublishedPort":8082,"PublishMode":"host"}]}},
      {"Spec":{"Name":"worker"},"Endpoint":{}}
    ]"#;

    #[test]
    fn names_each_published_port_of_a_container_once() {
        let ports = container_ports(serde_json::from_str(CONTAINERS).expect("fixture"));
        let found: Vec<(&str, u16, u16, &Publisher)> =
            ports.iter().map(|p| (p.proto.as_str(), p.port, p.target, &p.by)).collect();
        let web = Publisher::Container { name: "web".into(), service: None };
        let task = Publisher::Container { name: "svc.1.k2x9".into(), service: Some("svc".into()) };
        assert_eq!(found, vec![("tcp", 8081, 80, &web), ("tcp", 8082, 80, &task), ("udp", 5353, 53, &web)]);
    }

    #[test]
    fn names_services_with_their_publish_mode() {
        let ports = service_ports(serde_json::from_str(SERVICES).expect("fixture"));
        let modes: Vec<(u16, &Publisher)> = ports.iter().map(|p| (p.port, &p.by)).collect();
        assert_eq!(
            modes,
            vec![
                (8080, &Publisher::Service { name: "func_gateway".into(), mode: PublishMode::Ingress }),
                (8082, &Publisher::Service { name: "svc".into(), mode: PublishMode::Host }),
            ]
        );
    }
}
