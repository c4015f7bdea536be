//! What every resource is made of: the trait (observe → plan → apply), its plan, the findings
//! every report is built from, and the type-erased face the engine drives.

use serde::Serialize;

use crate::host::Host;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Changed,
    Skipped,
    Unknown,
    Drift,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Changed => "changed",
            Status::Skipped => "skipped",
            Status::Unknown => "unknown",
            Status::Drift => "drift",
            Status::Failed => "failed",
        }
    }
}

/// One audited item with a stable id (`firewall.rule.22/tcp`), a human title and the evidence.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub id: String,
    pub title: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    /// What apply does (or did) about a drift: usually the exact command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

impl Finding {
    pub fn new(id: impl Into<String>, title: impl Into<String>, status: Status) -> Finding {
        Finding { id: id.into(), title: title.into(), status, evidence: Vec::new(), change: None, diff: None }
    }

    pub fn ok(id: impl Into<String>, title: impl Into<String>) -> Finding {
        Finding::new(id, title, Status::Ok)
    }

    pub fn drift(id: impl Into<String>, title: impl Into<String>, change: impl Into<String>) -> Finding {
        Finding { change: Some(change.into()), ..Finding::new(id, title, Status::Drift) }
    }

    pub fn unknown(id: impl Into<String>, title: impl Into<String>, reason: impl Into<String>) -> Finding {
        Finding { evidence: vec![reason.into()], ..Finding::new(id, title, Status::Unknown) }
    }

    /// Work that needs the running system (a command, a service, the kernel), found while
    /// preparing an image offline (`--root`): left for the first boot's provisioning.
    pub fn deferred(id: impl Into<String>, title: impl Into<String>, first_boot: impl Into<String>) -> Finding {
        Finding::new(id, title, Status::Skipped)
            .with_evidence(
                "deferred to the first boot: an image prepared offline (--root) runs no command on this machine",
            )
            .with_evidence(format!("the first boot does: {}", first_boot.into()))
    }

    pub fn with_evidence(mut self, line: impl Into<String>) -> Finding {
        self.evidence.push(line.into());
        self
    }
}

/// A fact a resource reports about the host beside its findings (a swarm node's role, the
/// number of managers): shown in every format, judged by none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fact {
    /// A metric-name word: `[a-z_]+`.
    pub name: &'static str,
    /// One line for Prometheus' HELP (numbers only; text facts become labels of one info series).
    #[serde(skip)]
    pub help: &'static str,
    pub value: FactValue,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FactValue {
    Number(i64),
    Text(String),
}

impl Fact {
    pub fn number(name: &'static str, help: &'static str, value: i64) -> Fact {
        Fact { name, help, value: FactValue::Number(value) }
    }

    pub fn text(name: &'static str, value: impl Into<String>) -> Fact {
        Fact { name, help: "", value: FactValue::Text(value.into()) }
    }
}

impl std::fmt::Display for FactValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FactValue::Number(n) => write!(f, "{n}"),
            FactValue::Text(t) => f.write_str(t),
        }
    }
}

/// Facts serialize as one JSON object, `{"role": "manager", "managers": 3}`.
fn facts_as_object<S: serde::Serializer>(facts: &[Fact], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(facts.len()))?;
    for f in facts {
        map.serialize_entry(f.name, &f.value)?;
    }
    map.end()
}

/// The difference between the profile and what was observed: findings for the report and
/// resource-specific actions for `apply`. Empty `actions` means converged.
#[derive(Debug)]
pub struct Plan<A> {
    pub findings: Vec<Finding>,
    pub actions: Vec<A>,
    pub warnings: Vec<String>,
    /// Measurements for the Prometheus output (`check --format prometheus`).
    pub gauges: Vec<Gauge>,
    pub facts: Vec<Fact>,
}

impl<A> Default for Plan<A> {
    fn default() -> Self {
        Plan { findings: Vec::new(), actions: Vec::new(), warnings: Vec::new(), gauges: Vec::new(), facts: Vec::new() }
    }
}

/// One sample of a Prometheus gauge a resource measured (a certificate's time to expiry).
/// Samples with the same `name` share its `help`.
#[derive(Debug, Clone, Serialize)]
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl<A> Plan<A> {
    pub fn pass(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    /// A drift that `apply` fixes with `action`.
    pub fn fix(&mut self, finding: Finding, action: A) {
        self.findings.push(finding);
        self.actions.push(action);
    }

    pub fn warn(&mut self, text: impl Into<String>) {
        self.warnings.push(text.into());
    }

    pub fn fact(&mut self, fact: Fact) {
        self.facts.push(fact);
    }
}

/// A managed part of the host. `plan` is pure; `observe` and `apply` do the I/O.
pub trait Resource: Sync {
    type Observed: Send + 'static;
    type Action: Send;

    fn id(&self) -> &'static str;
    fn observe(&self, host: &Host) -> anyhow::Result<Self::Observed>;
    fn plan(&self, observed: &Self::Observed) -> Plan<Self::Action>;

    /// What `apply` observes before converging: `observe`, unless the resource takes
    /// measurements that apply's own load would skew (the host's latency probe).
    fn observe_to_converge(&self, host: &Host) -> anyhow::Result<Self::Observed> {
        self.observe(host)
    }
    /// The shared observations `observe` reads (see [`crate::host::Shared`]): a run starts
    /// them before the resources observe.
    fn shared_reads(&self, _host: &Host) -> Vec<crate::host::Shared> {
        Vec::new()
    }

    /// Carries out the plan's actions. Audit-only resources (host verdicts, exposure) plan
    /// none, and keep this default.
    fn apply(&self, _host: &Host, _observed: &Self::Observed, _actions: Vec<Self::Action>) -> anyhow::Result<()> {
        Ok(())
    }

    /// What carrying out `actions` can make stale among the run's shared observations (the
    /// engine's `/info`, the netfilter tables): everything, unless the resource says less.
    fn touches(&self, _actions: &[Self::Action]) -> crate::host::Touches {
        crate::host::Touches::Everything
    }

    /// Whether `apply` counts a could-not-verify item as a failure to converge (an engine
    /// that cannot be reached), rather than as unknown (a fact vakt cannot see).
    fn unknown_fails_apply(&self) -> bool {
        false
    }

    /// Whether this resource only reports facts about the machine that `apply` cannot change
    /// (the host verdicts). `apply` reports their could-not-verify items but does not let
    /// them set its exit code: a host whose disk backing cannot be seen is provisioned once,
    /// not retried at every boot. `check` stays strict.
    fn reports_facts(&self) -> bool {
        false
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ResourceReport {
    pub id: &'static str,
    pub findings: Vec<Finding>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "facts_as_object")]
    pub facts: Vec<Fact>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gauges: Vec<Gauge>,
    /// Set for a resource that only reports facts about the machine (`Resource::reports_facts`).
    #[serde(skip)]
    pub host_facts: bool,
}

impl ResourceReport {
    pub(crate) fn new(id: &'static str, findings: Vec<Finding>, warnings: Vec<String>) -> ResourceReport {
        ResourceReport { id, findings, warnings, error: None, gauges: Vec::new(), facts: Vec::new(), host_facts: false }
    }

    pub(crate) fn with_facts(mut self, facts: Vec<Fact>) -> ResourceReport {
        self.facts = facts;
        self
    }

    pub(crate) fn not_observed(id: &'static str, status: Status, error: &anyhow::Error) -> ResourceReport {
        let reason = format!("{error:#}");
        let mut finding = Finding::new(id, format!("{id} could not be observed"), status);
        finding.evidence.push(reason.clone());
        ResourceReport {
            id,
            findings: vec![finding],
            warnings: Vec::new(),
            error: Some(reason),
            gauges: Vec::new(),
            facts: Vec::new(),
            host_facts: false,
        }
    }
}

/// The type-erased face of a resource that the commands drive; the engine implements it for
/// every `Resource`.
pub trait Managed: Sync {
    fn id(&self) -> &'static str;
    /// See [`Resource::shared_reads`].
    fn shared_reads(&self, _host: &Host) -> Vec<crate::host::Shared> {
        Vec::new()
    }
    fn check(&self, host: &Host) -> ResourceReport;
    /// What `converge` would observe first, taken ahead of the run (concurrently with the
    /// other resources' observations).
    fn observe_ahead(&self, host: &Host) -> Ahead;
    /// Converges the resource, starting from `ahead` when nothing has changed the host since
    /// it was taken; the report, and whether anything was done to the host.
    fn converge(&self, host: &Host, ahead: Option<Ahead>) -> (ResourceReport, bool);
}

/// A resource's observation taken ahead of `apply`, opaque to the engine.
pub struct Ahead(pub Box<dyn std::any::Any + Send>);
