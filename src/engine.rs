//! Runs the resources: check (observe + plan, concurrently), apply (observe concurrently, then
//! plan + apply + verify in dependency order), and the summary and report every output format
//! is made of.

use std::time::Instant;

use serde::Serialize;

use crate::error::{Invalid, exit};
use crate::host::Host;
use crate::profile::Profile;
use crate::resource::{self, Ahead, Finding, Managed, Resource, ResourceReport, Status};

/// In `apply`, a could-not-verify item of a resource that must reach its service (an engine
/// that cannot be reached) is a failure to converge.
fn fail_unknowns(report: &mut ResourceReport, fails: bool) {
    if fails {
        for f in report.findings.iter_mut().filter(|f| f.status == Status::Unknown) {
            f.status = Status::Failed;
        }
    }
}

impl<R: Resource> Managed for R {
    fn id(&self) -> &'static str {
        Resource::id(self)
    }

    fn shared_reads(&self, host: &Host) -> Vec<crate::host::Shared> {
        Resource::shared_reads(self, host)
    }

    fn check(&self, host: &Host) -> ResourceReport {
        let mut report = match self.observe(host) {
            Ok(observed) => {
                let plan = self.plan(&observed);
                let mut report = ResourceReport::new(self.id(), plan.findings, plan.warnings).with_facts(plan.facts);
                report.gauges = plan.gauges;
                report
            }
            Err(e) => ResourceReport::not_observed(self.id(), Status::Unknown, &e),
        };
        report.host_facts = self.reports_facts();
        report
    }

    fn observe_ahead(&self, host: &Host) -> Ahead {
        Ahead(Box::new(self.observe_to_converge(host)))
    }

    fn converge(&self, host: &Host, ahead: Option<Ahead>) -> (ResourceReport, bool) {
        let ahead = ahead.and_then(|a| a.0.downcast::<anyhow::Result<R::Observed>>().ok());
        let observed = match ahead.map_or_else(|| self.observe_to_converge(host), |a| *a) {
            Ok(o) => o,
            Err(e) => return (ResourceReport::not_observed(self.id(), Status::Failed, &e), false),
        };
        let plan = self.plan(&observed);
        let mut report = ResourceReport::new(self.id(), plan.findings, plan.warnings).with_facts(plan.facts);
        report.gauges = plan.gauges;
        report.host_facts = self.reports_facts();
        if plan.actions.is_empty() {
            fail_unknowns(&mut report, self.unknown_fails_apply());
            return (report, false);
        }
        let touched = self.touches(&plan.actions);
        if let Err(e) = self.apply(host, &observed, plan.actions) {
            report.error = Some(format!("{e:#}"));
        }
        host.forget(touched);
        // Verify: the drift findings are judged again from a fresh observation.
        let after = match self.observe(host) {
            Ok(o) => {
                // The facts are the host's after the change.
                let plan = self.plan(&o);
                report.facts = plan.facts;
                plan.findings
            }
            Err(e) => {
                report.error.get_or_insert_with(|| format!("could not verify after apply: {e:#}"));
                Vec::new()
            }
        };
        for finding in report.findings.iter_mut().filter(|f| f.status == Status::Drift && f.change.is_some()) {
            let now = after.iter().find(|a| a.id == finding.id);
            finding.status = match now.map(|a| a.status) {
                Some(Status::Ok) => Status::Changed,
                // Gone from the plan, as a pruned rule is: changed, unless apply failed.
                None if report.error.is_none() => Status::Changed,
                Some(Status::Unknown) => Status::Unknown,
                _ => Status::Failed,
            };
            // What the change left behind, when it is something else (a swarm joined with the
            // wrong role): the operator sees it in this run, not only in the next check.
            if let Some(now) = now.filter(|a| a.status != Status::Ok && a.title != finding.title) {
                finding.evidence.push(format!("after the change: {}", now.title));
                finding.evidence.extend(now.evidence.iter().cloned());
            }
        }
        fail_unknowns(&mut report, self.unknown_fails_apply());
        (report, true)
    }
}

/// A section the profile leaves out, or a resource vakt does not manage yet.
struct Skipped {
    id: &'static str,
    reason: String,
}

impl Managed for Skipped {
    fn id(&self) -> &'static str {
        self.id
    }

    fn check(&self, _host: &Host) -> ResourceReport {
        let finding = Finding::new(self.id, self.reason.clone(), Status::Skipped);
        ResourceReport::new(self.id, vec![finding], Vec::new())
    }

    fn observe_ahead(&self, _host: &Host) -> Ahead {
        Ahead(Box::new(()))
    }

    fn converge(&self, host: &Host, _ahead: Option<Ahead>) -> (ResourceReport, bool) {
        (self.check(host), false)
    }
}

/// Runs the audit (`vakt check`, and the watchdog's periodic one) and returns the report.
pub fn audit(host: &Host, profile: &Profile, only: &[String]) -> anyhow::Result<Report> {
    let started = std::time::Instant::now();
    let resources = registry(profile, only)?;
    let results = check_all(host, &resources);
    Ok(Report::new(Run::Check, false, profile, host, results, started))
}

/// The profile's resources in dependency order, limited to `only` when given.
pub fn registry<'p>(profile: &'p Profile, only: &[String]) -> anyhow::Result<Vec<Box<dyn Managed + 'p>>> {
    if let Some(bad) = only.iter().find(|id| !resource::ids().any(|known| known == id.as_str())) {
        let known: Vec<&str> = resource::ids().collect();
        return Err(Invalid(format!("--only: unknown resource `{bad}`; resources are {}", known.join(", "))).into());
    }
    Ok(resource::ALL
        .iter()
        .filter(|e| only.is_empty() || only.iter().any(|o| o == e.id))
        .map(|e| {
            (e.build)(profile).unwrap_or_else(|| {
                let reason = format!("not managed: the profile has no [{}] section", e.id);
                Box::new(Skipped { id: e.id, reason })
            })
        })
        .collect())
}

/// Observes every resource concurrently (they are independent when nothing changes).
pub fn check_all(host: &Host, resources: &[Box<dyn Managed + '_>]) -> Vec<ResourceReport> {
    host.forget_observations();
    std::thread::scope(|s| {
        let reads = read_ahead(s, host, resources);
        let handles: Vec<_> = resources.iter().map(|r| s.spawn(|| r.check(host))).collect();
        let reports = handles
            .into_iter()
            .zip(resources)
            .map(|(h, r)| {
                h.join().unwrap_or_else(|_| {
                    ResourceReport::not_observed(r.id(), Status::Unknown, &anyhow::anyhow!("observation panicked"))
                })
            })
            .collect();
        // A read that panicked left its memo empty: the resources that read it asked themselves.
        reads.into_iter().for_each(|h| drop(h.join()));
        reports
    })
}

/// Starts the observations the resources share, each once, before the resources start: the
/// processes and the engine they wait on then run while the resources read their files.
fn read_ahead<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    host: &'s Host,
    resources: &[Box<dyn Managed + '_>],
) -> Vec<std::thread::ScopedJoinHandle<'s, ()>> {
    shared_reads(host, resources).into_iter().map(|read| s.spawn(move || host.read_shared(&read))).collect()
}

/// What the resources read of the shared observations, each once, in their order.
fn shared_reads(host: &Host, resources: &[Box<dyn Managed + '_>]) -> Vec<crate::host::Shared> {
    let mut shared = Vec::new();
    for read in resources.iter().flat_map(|r| r.shared_reads(host)) {
        if !shared.contains(&read) {
            shared.push(read);
        }
    }
    shared
}

/// Which resources each one of a run waits for in `apply`: indices of earlier ones, those it
/// waits for through others included.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule(Vec<Vec<usize>>);

impl Schedule {
    /// As `resource::ALL` says for this host: a resource starts once what it waits for has
    /// converged, and meanwhile the others run (the firewall and nginx while Docker restarts).
    pub fn of(resources: &[Box<dyn Managed + '_>], profile: &Profile, host: &Host) -> Schedule {
        let ids: Vec<&str> = resources.iter().map(|r| r.id()).collect();
        let all = resource::waits(profile, host);
        let waits = |i: usize| (0..i).filter(|&j| all.get(ids[i]).is_some_and(|w| w.contains(ids[j]))).collect();
        Schedule((0..ids.len()).map(waits).collect())
    }

    /// One resource at a time, in list order.
    pub fn serial(n: usize) -> Schedule {
        Schedule((0..n).map(|i| (0..i).collect()).collect())
    }
}

/// Converges the resources as `schedule` orders them, each as soon as what it waits for has
/// converged. The schedule is made once every resource has observed (what it reads of the
/// host, the netfilter tables, is then at hand).
pub fn apply_all(
    host: &Host,
    resources: &[Box<dyn Managed + '_>],
    schedule: impl FnOnce() -> Schedule,
) -> Vec<ResourceReport> {
    apply_each(host, resources, schedule, |_| {})
}

/// [`apply_all`], handing the reports to `done` in list order, each as soon as it and those
/// before it have converged (an operator at a terminal sees it then).
pub fn apply_each(
    host: &Host,
    resources: &[Box<dyn Managed + '_>],
    schedule: impl FnOnce() -> Schedule,
    mut done: impl FnMut(&ResourceReport),
) -> Vec<ResourceReport> {
    host.forget_observations();
    // Every resource observes at once, as in `check`: on a converged host that is all the
    // run does. A resource converges from that observation unless one it waits for has
    // changed the host; the ones it does not wait for change nothing it observes.
    let mut ahead: Vec<Option<Ahead>> = std::thread::scope(|s| {
        let reads = read_ahead(s, host, resources);
        let handles: Vec<_> = resources.iter().map(|r| s.spawn(|| r.observe_ahead(host))).collect();
        // A panicked observation is taken again in its turn.
        let ahead = handles.into_iter().map(|h| h.join().ok()).collect();
        reads.into_iter().for_each(|h| drop(h.join()));
        ahead
    });
    let schedule = schedule();
    let n = resources.len();
    let mut reports: Vec<Option<ResourceReport>> = (0..n).map(|_| None).collect();
    let mut acted = vec![false; n];
    let mut started = vec![false; n];
    let mut shown = 0;
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut running = 0;
        loop {
            for i in 0..n {
                let waits = &schedule.0[i];
                if started[i] || waits.iter().any(|&j| reports[j].is_none()) {
                    continue;
                }
                started[i] = true;
                running += 1;
                let ahead = ahead[i].take().filter(|_| !waits.iter().any(|&j| acted[j]));
                let (r, tx) = (&resources[i], tx.clone());
                s.spawn(move || {
                    // Where panics unwind (the tests' builds; the release build aborts), a
                    // panic fails its resource and the others still converge.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.converge(host, ahead)));
                    let _ = tx.send((i, outcome));
                });
            }
            if running == 0 {
                break;
            }
            let Ok((i, outcome)) = rx.recv() else { break };
            running -= 1;
            let (report, did) = outcome.unwrap_or_else(|_| {
                let e = anyhow::anyhow!("converging panicked; the host may be half-changed: run apply again");
                (ResourceReport::not_observed(resources[i].id(), Status::Failed, &e), true)
            });
            reports[i] = Some(report);
            acted[i] = did;
            while let Some(Some(r)) = reports.get(shown) {
                done(r);
                shown += 1;
            }
        }
    });
    reports.into_iter().map(|r| r.expect("every resource converged")).collect()
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Summary {
    pub ok: usize,
    pub changed: usize,
    pub drift: usize,
    pub failed: usize,
    pub unknown: usize,
    pub skipped: usize,
    /// Of `unknown`, the host facts that `apply` reports but does not count in its exit code
    /// (always 0 for `check`).
    pub unknown_facts: usize,
}

impl Summary {
    /// The counts of a run; `apply` leaves unknown host facts out of the exit code.
    pub fn of(resources: &[ResourceReport], apply: bool) -> Summary {
        let unknown_facts = resources
            .iter()
            .filter(|r| apply && r.host_facts)
            .flat_map(|r| &r.findings)
            .filter(|f| f.status == Status::Unknown)
            .count();
        let mut s = Summary { unknown_facts, ..Summary::default() };
        for f in resources.iter().flat_map(|r| &r.findings) {
            *match f.status {
                Status::Ok => &mut s.ok,
                Status::Changed => &mut s.changed,
                Status::Drift => &mut s.drift,
                Status::Failed => &mut s.failed,
                Status::Unknown => &mut s.unknown,
                Status::Skipped => &mut s.skipped,
            } += 1;
        }
        // An apply error that left no failed or unknown finding still counts: it never goes
        // unreported.
        s.failed += resources
            .iter()
            .filter(|r| {
                r.error.is_some() && !r.findings.iter().any(|f| matches!(f.status, Status::Failed | Status::Unknown))
            })
            .count();
        s
    }

    /// 1 for drift or failure, else 3 when something could not be verified (other than a
    /// host fact in `apply`), else 0.
    pub fn exit_code(&self) -> u8 {
        if self.drift + self.failed > 0 {
            exit::DRIFT
        } else if self.unknown > self.unknown_facts {
            exit::UNKNOWN
        } else {
            exit::OK
        }
    }
}

crate::words! {
    /// Which run a report is of.
    pub enum Run {
        Check = "check",
        Apply = "apply",
    }
}

/// Everything one `check` or `apply` run found, ready for any output format.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Version of this JSON schema; bumped on any incompatible change.
    pub schema: u32,
    pub command: Run,
    pub dry_run: bool,
    pub profile: String,
    pub machine: crate::resource::host::Machine,
    pub resources: Vec<ResourceReport>,
    pub summary: Summary,
    pub elapsed_ms: u128,
    /// vakt's own peak resident memory so far (VmHWM; the commands it ran are not in it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_kib: Option<u64>,
    /// vakt's own CPU time so far, user and system, all its threads (the commands it ran and
    /// the engine's work are not in it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
}

impl Report {
    pub fn new(
        command: Run,
        dry_run: bool,
        profile: &Profile,
        host: &Host,
        resources: Vec<ResourceReport>,
        started: Instant,
    ) -> Report {
        let mut resources = resources;
        unique_ids(&mut resources);
        Report {
            schema: 1,
            command,
            dry_run,
            profile: profile.source.clone(),
            machine: crate::resource::host::Machine::read(host),
            summary: Summary::of(&resources, command == Run::Apply),
            resources,
            elapsed_ms: started.elapsed().as_millis(),
            peak_rss_kib: peak_rss_kib(),
            cpu_us: cpu_us(),
            commands: host.runner.commands(),
        }
    }
}

/// This process's peak resident set, from /proc/self/status.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// This process's CPU time, user and system, of all its threads.
fn cpu_us() -> Option<u64> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let us = |t: nix::sys::time::TimeVal| {
        u64::try_from(t.tv_sec()).ok()?.checked_mul(1_000_000)?.checked_add(u64::try_from(t.tv_usec()).ok()?)
    };
    us(usage.user_time())?.checked_add(us(usage.system_time())?)
}

/// Finding ids are keys in every format (Prometheus series, JUnit cases, JSON consumers): a
/// second finding with an id already used (two extra firewall rules that differ only in what
/// vakt does not show) gets a `#2` suffix rather than a duplicate series.
fn unique_ids(resources: &mut [ResourceReport]) {
    let mut seen = std::collections::HashSet::new();
    for f in resources.iter_mut().flat_map(|r| r.findings.iter_mut()) {
        if !seen.insert(f.id.clone()) {
            let id = (2..).map(|n| format!("{}#{n}", f.id)).find(|id| !seen.contains(id)).unwrap_or_default();
            seen.insert(id.clone());
            f.id = id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicU32, Ordering};

    use crate::host::Shared;
    use crate::resource::Plan;

    /// The engine's `/info` and the netfilter tables are read ahead of the resources, each
    /// once though three resources read the engine and two the tables; nothing for an image
    /// prepared offline.
    #[test]
    fn shared_reads_are_listed_once_and_only_on_the_running_system() {
        let text = "[firewall]\n[docker]\nhost = \"/run/vakt-test/docker.sock\"\n[swarm]\ninit = true\n";
        let profile = crate::profile::parse("t", text).expect("profile");
        let engine = Shared::EngineInfo("/run/vakt-test/docker.sock".into());
        let live = Host::new("/");
        let all = registry(&profile, &[]).expect("registry");
        // The tables only where ufw is set up (its observation stops before them otherwise).
        let ufw = std::path::Path::new("/etc/ufw/ufw.conf").exists();
        let mut want = vec![engine.clone()];
        if ufw {
            want.extend([Shared::Netfilter(false), Shared::Netfilter(true)]);
        }
        let mut got = shared_reads(&live, &all);
        got.sort_by_key(|s| format!("{s:?}"));
        want.sort_by_key(|s| format!("{s:?}"));
        assert_eq!(got, want);

        let swarm = registry(&profile, &["docker".into(), "swarm".into()]).expect("registry");
        assert_eq!(shared_reads(&live, &swarm), vec![engine]);

        let offline = tempfile::tempdir().expect("tmp");
        assert_eq!(shared_reads(&Host::new(offline.path()), &all), Vec::new());
    }

    /// A resource over a value it shares with others: it wants the value at `want`, and counts
    /// its observations.
    struct Setting<'a> {
        id: &'static str,
        value: &'a AtomicU32,
        want: u32,
        observations: &'a AtomicU32,
    }

    /// Two settings of one value that both want it at 1, `a` first; the run's reports and
    /// how often each resource observed.
    fn apply_two(value: &AtomicU32) -> (Vec<Status>, (u32, u32)) {
        let host = Host::new("/nonexistent");
        let seen = [AtomicU32::new(0), AtomicU32::new(0)];
        let resources: Vec<Box<dyn Managed>> = vec![
            Box::new(Setting { id: "a", value, want: 1, observations: &seen[0] }),
            Box::new(Setting { id: "b", value, want: 1, observations: &seen[1] }),
        ];
        let reports = apply_all(&host, &resources, || Schedule::serial(2));
        (statuses_of(&reports), (seen[0].load(Ordering::SeqCst), seen[1].load(Ordering::SeqCst)))
    }

    impl Resource for Setting<'_> {
        type Observed = u32;
        type Action = u32;

        fn id(&self) -> &'static str {
            self.id
        }

        fn observe(&self, _host: &Host) -> anyhow::Result<u32> {
            self.observations.fetch_add(1, Ordering::SeqCst);
            Ok(self.value.load(Ordering::SeqCst))
        }

        fn plan(&self, observed: &u32) -> Plan<u32> {
            let mut plan = Plan::default();
            if *observed == self.want {
                plan.pass(Finding::ok(self.id, format!("at {observed}")));
            } else {
                plan.fix(Finding::drift(self.id, format!("at {observed}"), format!("set {}", self.want)), self.want);
            }
            plan
        }

        fn apply(&self, _host: &Host, _observed: &u32, actions: Vec<u32>) -> anyhow::Result<()> {
            for a in actions {
                self.value.store(a, Ordering::SeqCst);
            }
            Ok(())
        }
    }

    fn statuses_of(reports: &[ResourceReport]) -> Vec<Status> {
        reports.iter().flat_map(|r| &r.findings).map(|f| f.status).collect()
    }

    #[test]
    fn a_converged_apply_observes_each_resource_once() {
        assert_eq!(apply_two(&AtomicU32::new(1)), (vec![Status::Ok, Status::Ok], (1, 1)));
    }

    #[test]
    fn after_a_change_the_later_resources_observe_afresh() {
        // `a` sets the value `b` wants: `b`, observed ahead at 0, must see 1 and do nothing.
        // `a` observes ahead, then to verify; `b` ahead, then afresh.
        let value = AtomicU32::new(0);
        assert_eq!(apply_two(&value), (vec![Status::Changed, Status::Ok], (2, 2)));
        assert_eq!(value.load(Ordering::SeqCst), 1);
    }

    /// A resource whose apply raises its flag, waits up to `patience` for the other's, and
    /// lowers it again: it reports whether the two were applying at the same time.
    struct Meet<'a> {
        id: &'static str,
        applying: &'a [std::sync::atomic::AtomicBool; 2],
        mine: usize,
        applied: std::sync::atomic::AtomicBool,
        patience: std::time::Duration,
        met: &'a std::sync::atomic::AtomicBool,
        /// When each one's apply began and ended.
        spans: &'a [std::sync::Mutex<Option<(Instant, Instant)>>; 2],
    }

    impl Resource for Meet<'_> {
        type Observed = bool;
        type Action = ();

        fn id(&self) -> &'static str {
            self.id
        }

        fn observe(&self, _host: &Host) -> anyhow::Result<bool> {
            Ok(self.applied.load(Ordering::SeqCst))
        }

        fn plan(&self, applied: &bool) -> Plan<()> {
            let mut plan = Plan::default();
            if *applied {
                plan.pass(Finding::ok(self.id, "applied"));
            } else {
                plan.fix(Finding::drift(self.id, "not applied", "apply"), ());
            }
            plan
        }

        fn apply(&self, _host: &Host, _observed: &bool, _actions: Vec<()>) -> anyhow::Result<()> {
            let began = Instant::now();
            self.applying[self.mine].store(true, Ordering::SeqCst);
            let until = Instant::now() + self.patience;
            while Instant::now() < until && !self.met.load(Ordering::SeqCst) {
                if self.applying[1 - self.mine].load(Ordering::SeqCst) {
                    self.met.store(true, Ordering::SeqCst);
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            self.applied.store(true, Ordering::SeqCst);
            self.applying[self.mine].store(false, Ordering::SeqCst);
            *self.spans[self.mine].lock().expect("span") = Some((began, Instant::now()));
            Ok(())
        }
    }

    /// Two `Meet`s applied as `schedule` orders them: whether either met the other, and
    /// whether `b` began after `a` had ended.
    fn meet(schedule: Schedule, patience_ms: u64) -> (Vec<Status>, bool, bool) {
        let host = Host::new("/nonexistent");
        let applying = [std::sync::atomic::AtomicBool::new(false), std::sync::atomic::AtomicBool::new(false)];
        let met = std::sync::atomic::AtomicBool::new(false);
        let spans = [std::sync::Mutex::new(None), std::sync::Mutex::new(None)];
        let patience = std::time::Duration::from_millis(patience_ms);
        let meet = |id, mine| Meet {
            id,
            applying: &applying,
            mine,
            applied: Default::default(),
            patience,
            met: &met,
            spans: &spans,
        };
        let resources: Vec<Box<dyn Managed>> = vec![Box::new(meet("a", 0)), Box::new(meet("b", 1))];
        let reports = apply_all(&host, &resources, || schedule);
        let span = |i: usize| spans[i].lock().expect("span").expect("applied");
        let after = span(1).0 >= span(0).1;
        (statuses_of(&reports), met.load(Ordering::SeqCst), after)
    }

    #[test]
    fn resources_that_do_not_wait_for_each_other_converge_at_once() {
        let (statuses, met, after) = meet(Schedule(vec![vec![], vec![]]), 10_000);
        assert_eq!((statuses, met, after), (vec![Status::Changed, Status::Changed], true, false));
    }

    #[test]
    fn a_resource_that_waits_starts_after_the_other_has_converged() {
        for schedule in [Schedule::serial(2), Schedule(vec![vec![], vec![0]])] {
            let (statuses, met, after) = meet(schedule, 50);
            assert_eq!((statuses, met, after), (vec![Status::Changed, Status::Changed], false, true));
        }
    }

    /// Converges by panicking.
    struct Panics;

    impl Managed for Panics {
        fn id(&self) -> &'static str {
            "panics"
        }
        fn check(&self, _host: &Host) -> ResourceReport {
            unreachable!("apply only")
        }
        fn observe_ahead(&self, _host: &Host) -> Ahead {
            Ahead(Box::new(()))
        }
        fn converge(&self, _host: &Host, _ahead: Option<Ahead>) -> (ResourceReport, bool) {
            panic!("a bug in a resource")
        }
    }

    #[test]
    #[cfg(panic = "unwind")]
    fn reports_come_in_list_order_and_a_panic_fails_only_its_resource() {
        let host = Host::new("/nonexistent");
        let value = AtomicU32::new(0);
        let seen = AtomicU32::new(0);
        let resources: Vec<Box<dyn Managed>> =
            vec![Box::new(Panics), Box::new(Setting { id: "later", value: &value, want: 1, observations: &seen })];
        let mut order = Vec::new();
        let reports = apply_each(&host, &resources, || Schedule(vec![vec![], vec![]]), |r| order.push(r.id));
        assert_eq!(order, ["panics", "later"]);
        assert_eq!(statuses_of(&reports), [Status::Failed, Status::Changed]);
        assert!(reports[0].error.as_deref().is_some_and(|e| e.contains("panicked")), "{:?}", reports[0].error);
        assert_eq!(value.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_schedule_follows_the_registry_through_resources_left_out() {
        let profile =
            crate::profile::parse("test", "[firewall]\n[docker]\n[swarm]\n[nginx]\n[tuning]\n").expect("profile");
        let ids = |only: &[&str]| {
            let only: Vec<String> = only.iter().map(|s| s.to_string()).collect();
            let resources = registry(&profile, &only).expect("registry");
            let names: Vec<&str> = resources.iter().map(|r| r.id()).collect();
            let Schedule(waits) = Schedule::of(&resources, &profile, &Host::new("/nonexistent"));
            waits.iter().map(|w| w.iter().map(|&j| names[j]).collect::<Vec<_>>()).collect::<Vec<_>>()
        };
        let all = ids(&[]);
        // host, packages, firewall, docker, swarm, nginx, tuning, exposure
        assert_eq!(all[5], ["host", "packages", "firewall"], "nginx does not wait for the engine");
        assert_eq!(all[4], ["host", "packages", "firewall", "docker"]);
        assert_eq!(all[3], ["host", "packages", "firewall"], "offline, Docker waits for the firewall");
        assert_eq!(all[7].len(), 7, "exposure waits for every other");
        // tuning waits for the firewall through the engine and nginx, left out by --only.
        assert_eq!(ids(&["firewall", "tuning"]), [vec![], vec!["firewall"]]);
        assert_eq!(ids(&["docker", "nginx"]), [Vec::<&str>::new(), vec![]]);
    }

    #[test]
    fn finding_ids_are_unique_in_a_report() {
        let mut reports = vec![report(&[Status::Ok, Status::Drift, Status::Ok], None)];
        unique_ids(&mut reports);
        let ids: Vec<&str> = reports[0].findings.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["x", "x#2", "x#3"]);
    }

    fn report(statuses: &[Status], error: Option<&str>) -> ResourceReport {
        let findings = statuses.iter().map(|s| Finding::new("x", "x", *s)).collect();
        ResourceReport {
            id: "x",
            findings,
            warnings: Vec::new(),
            error: error.map(String::from),
            gauges: Vec::new(),
            facts: Vec::new(),
            host_facts: false,
        }
    }

    #[test]
    fn exit_codes_follow_the_worst_finding() {
        assert_eq!(Summary::of(&[report(&[Status::Ok, Status::Skipped, Status::Changed], None)], false).exit_code(), 0);
        assert_eq!(Summary::of(&[report(&[Status::Ok, Status::Unknown], None)], false).exit_code(), 3);
        assert_eq!(Summary::of(&[report(&[Status::Unknown, Status::Drift], None)], false).exit_code(), 1);
        assert_eq!(Summary::of(&[report(&[Status::Failed], Some("boom"))], false).exit_code(), 1);
    }

    #[test]
    fn an_apply_error_is_never_lost() {
        let s = Summary::of(&[report(&[Status::Changed], Some("reload failed"))], true);
        assert_eq!((s.failed, s.exit_code()), (1, 1));
        let unknown = Summary::of(&[report(&[Status::Unknown], Some("socket missing"))], true);
        assert_eq!(unknown.exit_code(), 3, "could not observe stays unknown");
    }

    #[test]
    fn apply_does_not_exit_3_for_host_facts_but_check_does() {
        let host = |statuses: &[Status]| ResourceReport { host_facts: true, ..report(statuses, None) };
        let facts = [host(&[Status::Ok, Status::Unknown]), report(&[Status::Changed], None)];
        let apply = Summary::of(&facts, true);
        assert_eq!((apply.unknown, apply.unknown_facts, apply.exit_code()), (1, 1, 0));
        assert_eq!(Summary::of(&facts, false).exit_code(), 3, "check stays strict");
        let other = [host(&[Status::Unknown]), report(&[Status::Unknown], None)];
        assert_eq!(Summary::of(&other, true).exit_code(), 3, "another resource's unknown still counts");
        assert_eq!(Summary::of(&[host(&[Status::Drift])], true).exit_code(), 1, "a host that is wrong fails apply");
    }
}
