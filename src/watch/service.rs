//! The service loop: runs the sampler, the metrics server and the periodic audit as tasks of
//! their own, turns completed samples into reports and watchdog pings, and applies SIGHUP
//! reloads, which are validated in full before anything changes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Interval, MissedTickBehavior};

use super::events::{self, Backoff, message_id};
use super::latency;
use super::limits;
use super::metrics::Metrics;
use super::sampler::{self, Sample};
use super::window::{Monitor, Reading};
use super::workload::{self, Figures, HostLimits, HostSignals, Judge};
use crate::error::Invalid;
use crate::host::Host;
use crate::profile::units::format_duration;
use crate::profile::{self, CheckEvery, Profile, Watch as Settings};

pub fn run(profile_spec: Option<String>, root: PathBuf) -> anyhow::Result<u8> {
    let profile = profile::load(profile_spec.as_deref(), &root, true)?;
    let watchdog = limits::watchdog();
    let settings = usable(&profile, watchdog)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let code = runtime.block_on(async {
        let service = Service::start(profile_spec, root, profile, settings, watchdog).await?;
        service.run().await
    });
    // A blocking read or audit still running must not hold up the exit.
    runtime.shutdown_timeout(Duration::from_millis(500));
    code
}

/// The watch settings of `p`, checked against the watchdog.
fn usable(p: &Profile, watchdog: Option<Duration>) -> anyhow::Result<Settings> {
    let settings = p
        .watch
        .as_ref()
        .ok_or_else(|| Invalid(format!("{} has no [watch] section; add one (see docs/profile.md)", p.source)))?;
    limits::feeds(settings, watchdog)?;
    Ok(settings.clone())
}

async fn bind_metrics(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("failed to listen on {addr} for metrics"))
}

/// A timer whose first tick is one period from now, not at once.
fn timer(period: Duration) -> Interval {
    let mut t = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

async fn tick(t: &mut Option<Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

struct Service {
    spec: Option<String>,
    root: PathBuf,
    host: Host,
    profile: Profile,
    settings: Settings,
    watchdog: Option<Duration>,
    monitor: Monitor,
    metrics: Arc<Mutex<Metrics>>,
    /// Aborting it closes the listener; connections it handed out finish by their deadline.
    server: Option<JoinHandle<()>>,
    tx: mpsc::Sender<anyhow::Result<Sample>>,
    rx: mpsc::Receiver<anyhow::Result<Sample>>,
    sampler: JoinHandle<()>,
    summary: Interval,
    audit_timer: Option<Interval>,
    audit: Option<JoinHandle<()>>,
    sample_failures: Backoff,
    workload: Option<WorkloadTask>,
    /// The host's figures of the last sample, for judging the workload's.
    host_signals: HostSignals,
    latency: Option<LatencyTask>,
}

/// `latency_every` running: the probing task, its rounds, and each disk's last figures.
struct LatencyTask {
    task: JoinHandle<()>,
    rx: mpsc::Receiver<latency::Round>,
    disks: Vec<(String, crate::resource::probe::Figures)>,
}

impl LatencyTask {
    fn start(root: &std::path::Path, every: crate::profile::LatencyEvery) -> LatencyTask {
        let (tx, rx) = mpsc::channel(1);
        LatencyTask { task: tokio::spawn(latency::run(root.to_path_buf(), *every, tx)), rx, disks: Vec::new() }
    }

    /// The slowest disk by its p99.
    fn slowest(&self) -> Option<(String, Duration)> {
        self.disks.iter().max_by_key(|(_, f)| f.p99).map(|(d, f)| (d.clone(), f.p99))
    }
}

impl Drop for LatencyTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn round(l: &mut Option<LatencyTask>) -> Option<latency::Round> {
    match l {
        Some(l) => l.rx.recv().await,
        None => std::future::pending().await,
    }
}

/// `[watch.workload]` running: the task asking Prometheus, its answers, and their judge.
struct WorkloadTask {
    task: JoinHandle<()>,
    rx: mpsc::Receiver<Result<Figures, String>>,
    judge: Judge,
    /// The workload's part of the status line.
    line: String,
    failures: Backoff,
}

impl WorkloadTask {
    fn start(w: &crate::profile::Workload) -> WorkloadTask {
        let (tx, rx) = mpsc::channel(2);
        WorkloadTask {
            task: tokio::spawn(workload::run(w.clone(), tx)),
            rx,
            judge: Judge::new(w),
            line: format!("workload: asking {}", w.prometheus.shown()),
            failures: Backoff::default(),
        }
    }
}

impl Drop for WorkloadTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(w: &mut Option<WorkloadTask>) -> Option<Result<Figures, String>> {
    match w {
        Some(w) => w.rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Service {
    async fn start(
        spec: Option<String>,
        root: PathBuf,
        profile: Profile,
        settings: Settings,
        watchdog: Option<Duration>,
    ) -> anyhow::Result<Service> {
        let host = Host::new(&root);
        let metrics = Arc::new(Mutex::new(Metrics::default()));
        let server = match settings.metrics {
            Some(addr) => Some(tokio::spawn(super::http::serve(bind_metrics(addr).await?, metrics.clone()))),
            None => None,
        };
        let (tx, rx) = mpsc::channel(4);
        let sampler = tokio::spawn(sampler::run(
            host.path("/proc/stat"),
            host.path("/proc/pressure"),
            *settings.interval,
            tx.clone(),
        ));
        let settings_workload = settings.workload.clone();
        let latency = settings.latency_every.map(|e| LatencyTask::start(&root, e));
        Ok(Service {
            monitor: Monitor::new(&settings),
            summary: timer(settings.window),
            audit_timer: settings.check_every.map(|e| timer(*e)),
            spec,
            root,
            host,
            profile,
            settings,
            watchdog,
            metrics,
            server,
            tx,
            rx,
            sampler,
            audit: None,
            sample_failures: Backoff::default(),
            workload: settings_workload.as_ref().map(WorkloadTask::start),
            host_signals: HostSignals::default(),
            latency,
        })
    }

    async fn run(mut self) -> anyhow::Result<u8> {
        let mut term = signal(SignalKind::terminate()).context("failed to install the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("failed to install the SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("failed to install the SIGHUP handler")?;
        if sd_notify::watchdog_enabled().is_some_and(|w| w.is_zero()) {
            tracing::warn!("WATCHDOG_USEC=0 is not a watchdog timeout; running without watchdog pings");
        }
        // `limits::check` made sure a sample completes in every half of the timeout.
        let mut pinger = self.watchdog.map(|w| timer(w / 2));
        let s = &self.settings;
        tracing::info!(
            MESSAGE_ID = message_id::STARTED,
            VAKT_INTERVAL_MS = s.interval.as_millis() as u64,
            "vakt watch started with {} (interval {}, window {})",
            self.profile.source,
            format_duration(*s.interval),
            format_duration(s.window)
        );
        let mut progressed = false;
        let mut ready = false;
        let mut psi_told = false;
        let mut last: Option<(Reading, Sample, String)> = None;
        loop {
            tokio::select! {
                Some(result) = self.rx.recv() => match result {
                    Ok(sample) => {
                        let (reading, line) = self.take(&sample, &mut psi_told);
                        notify(&[sd_notify::NotifyState::Status(&line)]);
                        if !ready {
                            notify(&[sd_notify::NotifyState::Ready]);
                            ready = true;
                        }
                        last = Some((reading, sample, line));
                        progressed = true;
                    }
                    // A sample that could not be taken is not progress: no ping, no READY.
                    Err(e) => self.sample_failed(&e),
                },
                _ = tick(&mut pinger) => {
                    // Ping only when the sampler completed a sample since the last ping: a stuck
                    // or failing sampler must lead to a restart by systemd.
                    if progressed {
                        notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                    progressed = false;
                }
                _ = self.summary.tick() => {
                    if let Some((reading, sample, line)) = &last {
                        events::summary(reading, sample, line, *self.monitor.settings.interval);
                    }
                }
                _ = tick(&mut self.audit_timer) => self.start_audit(),
                Some(a) = answer(&mut self.workload) => self.workload_answer(a),
                Some(r) = round(&mut self.latency) => self.latency_round(r),
                _ = hup.recv() => match self.reload().await {
                    Ok(changes) => tracing::info!(MESSAGE_ID = message_id::RELOADED, "reloaded {}{changes}", self.profile.source),
                    Err(e) => tracing::error!(MESSAGE_ID = message_id::RELOAD_FAILED, "reload failed, keeping the running profile: {e:#}"),
                },
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        notify(&[sd_notify::NotifyState::Stopping]);
        tracing::info!(MESSAGE_ID = message_id::STOPPING, "vakt watch stopping");
        self.sampler.abort();
        Ok(crate::error::exit::OK)
    }

    /// Takes in one completed sample: window, alarms, events, metrics; returns the status line.
    fn take(&mut self, sample: &Sample, psi_told: &mut bool) -> (Reading, String) {
        if let Some(failures) = self.sample_failures.recovered() {
            tracing::info!(
                MESSAGE_ID = message_id::SAMPLE_RECOVERED,
                "sampling works again after {failures} failed samples"
            );
        }
        let reading = self.monitor.observe(sample.usage.clone());
        let disk_p99 = self.latency.as_ref().and_then(LatencyTask::slowest);
        self.host_signals = HostSignals {
            iowait_pct: reading.window_iowait,
            steal_pct: reading.window_steal,
            io_pressure: sample.pressure[1].map(|p| p.some.avg10),
            disk_p99: disk_p99.clone(),
        };
        let mut line = events::status_line(&reading, &sample.pressure, self.monitor.settings.window);
        if let Some((disk, p99)) = &disk_p99 {
            line = format!("{line}, {disk} p99 {:.1} ms", p99.as_secs_f64() * 1000.0);
        }
        if let Some(w) = &self.workload {
            line = format!("{line}; {}", w.line);
        }
        events::report_sample(&reading, sample, &line, *self.monitor.settings.interval);
        events::update_metrics(&self.metrics, &reading, sample);
        if sample.pressure.iter().all(Option::is_none) && !*psi_told {
            tracing::info!(
                MESSAGE_ID = message_id::PSI_ABSENT,
                "pressure stall information is not available on this kernel (no /proc/pressure or psi=0); reporting without it"
            );
            *psi_told = true;
        }
        (reading, line)
    }

    /// Takes one answer about the workload: judged against the host's last figures, an event
    /// when the judgement changes, the metrics and the status line's workload part. A failed
    /// answer is said (backing off in the journal) and judged not at all.
    fn workload_answer(&mut self, answer: Result<Figures, String>) {
        let s = &self.settings;
        let Some(w) = &mut self.workload else { return };
        let limits = HostLimits {
            iowait_warn: s.iowait_warn,
            iowait_clear: s.iowait_clear,
            steal_warn: s.steal_warn,
            steal_clear: s.steal_clear,
            io_pressure_warn: s.workload.as_ref().map_or(f64::INFINITY, |w| w.io_pressure_warn),
            latency_warn: s.latency_warn,
        };
        match answer {
            Ok(f) => {
                if w.failures.recovered().is_some() {
                    tracing::info!(
                        MESSAGE_ID = message_id::WORKLOAD_FAILED,
                        "the workload's figures are readable again"
                    );
                }
                let event = w.judge.observe(f, &self.host_signals, &limits);
                if let Some(e) = &event {
                    events::workload_event(e);
                }
                let baseline = w.judge.baseline.map_or("none yet".to_string(), |b| format!("{b:.2}/s"));
                let state = if w.judge.bottleneck { ", BOTTLENECK" } else { "" };
                w.line = format!("workload {:.2}/s (baseline {baseline}), {} services{state}", f.rate, f.services);
                events::update_workload_metrics(&self.metrics, Some(&w.judge), event.as_ref());
            }
            Err(e) => {
                w.line = format!("workload unknown: {e}");
                if let Some(logged) = w.failures.fail(Instant::now(), &e) {
                    tracing::warn!(
                        MESSAGE_ID = message_id::WORKLOAD_FAILED,
                        "cannot read the workload's figures: {logged}"
                    );
                }
                events::update_workload_metrics(&self.metrics, None, None);
            }
        }
    }

    /// Takes one round of disk latency probes: each measured disk's figures replace its last,
    /// to the journal and the metrics; a probe that did not run says why.
    fn latency_round(&mut self, round: latency::Round) {
        let Some(l) = &mut self.latency else { return };
        for (disk, outcome) in round {
            match outcome {
                crate::resource::probe::Outcome::Measured(f) => {
                    tracing::info!(MESSAGE_ID = message_id::LATENCY, "disk latency {disk}: {f}");
                    l.disks.retain(|(d, _)| *d != disk);
                    l.disks.push((disk, f));
                }
                crate::resource::probe::Outcome::NotRun(why) => {
                    tracing::info!(
                        MESSAGE_ID = message_id::LATENCY,
                        "disk latency {disk}: not measured: {why}{}",
                        latency::sandbox_hint(&why)
                    )
                }
            }
        }
        l.disks.sort_by(|a, b| a.0.cmp(&b.0));
        if let Ok(mut m) = self.metrics.lock() {
            m.disks.clone_from(&l.disks);
        }
    }

    fn sample_failed(&mut self, e: &anyhow::Error) {
        let line = format!("cannot sample: {e:#}");
        notify(&[sd_notify::NotifyState::Status(&line)]);
        if let Ok(mut m) = self.metrics.lock() {
            m.sample_errors += 1;
        }
        if let Some(logged) = self.sample_failures.fail(Instant::now(), &line) {
            tracing::error!(MESSAGE_ID = message_id::SAMPLE_FAILED, "{logged}");
        }
    }

    /// Runs the audit on a task of its own so that samples and pings go on meanwhile; a tick
    /// that finds the previous audit still running is skipped.
    fn start_audit(&mut self) {
        if self.audit.as_ref().is_some_and(|a| !a.is_finished()) {
            tracing::debug!(MESSAGE_ID = message_id::AUDIT, "the previous audit is still running; skipping this one");
            return;
        }
        let (root, profile, metrics) = (self.root.clone(), self.profile.clone(), self.metrics.clone());
        self.audit = Some(tokio::spawn(async move {
            let report = tokio::task::spawn_blocking(move || {
                let host = Host::new(&root);
                crate::engine::audit(&host, &profile, &[])
            })
            .await;
            match report {
                Ok(Ok(report)) => events::report_audit(&report, &metrics),
                Ok(Err(e)) => {
                    tracing::error!(MESSAGE_ID = message_id::AUDIT, "the periodic audit could not run: {e:#}")
                }
                Err(e) => tracing::error!(MESSAGE_ID = message_id::AUDIT, "the periodic audit could not run: {e}"),
            }
        }));
    }

    /// Loads and checks the profile, binds a new metrics address, and only then applies it all;
    /// any error leaves the running profile untouched. Returns what changed, for the log.
    async fn reload(&mut self) -> anyhow::Result<String> {
        let profile = profile::load(self.spec.as_deref(), &self.root, true)?;
        let new = usable(&profile, self.watchdog)?;
        let (old, s) = (&self.settings, &new);
        let listener = match s.metrics {
            Some(addr) if old.metrics != s.metrics => Some(bind_metrics(addr).await?),
            _ => None,
        };
        let mut changes = Vec::new();
        let was = |d: Option<CheckEvery>| d.map_or("off".to_string(), |d| format_duration(*d));
        if s.interval != old.interval {
            changes.push(format!("interval {} (was {})", format_duration(*s.interval), format_duration(*old.interval)));
            self.sampler.abort();
            self.sampler = tokio::spawn(sampler::run(
                self.host.path("/proc/stat"),
                self.host.path("/proc/pressure"),
                *s.interval,
                self.tx.clone(),
            ));
        }
        if s.window != old.window {
            changes.push(format!("window {} (was {})", format_duration(s.window), format_duration(old.window)));
            self.summary = timer(s.window);
        }
        if s.check_every != old.check_every {
            changes.push(format!("check_every {} (was {})", was(s.check_every), was(old.check_every)));
            self.audit_timer = s.check_every.map(|e| timer(*e));
        }
        if s.metrics != old.metrics {
            let show = |a: Option<SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
            changes.push(format!("metrics {} (was {})", show(s.metrics), show(old.metrics)));
            if let Some(server) = self.server.take() {
                server.abort();
            }
            self.server = listener.map(|l| tokio::spawn(super::http::serve(l, self.metrics.clone())));
        }
        if (s.steal_warn, s.steal_clear, s.iowait_warn, s.iowait_clear)
            != (old.steal_warn, old.steal_clear, old.iowait_warn, old.iowait_clear)
        {
            changes.push("alarm thresholds".to_string());
        }
        if s.latency_every != old.latency_every {
            let was = |e: Option<crate::profile::LatencyEvery>| e.map_or("off".to_string(), |e| format_duration(*e));
            changes.push(format!("latency_every {} (was {})", was(s.latency_every), was(old.latency_every)));
            self.latency = s.latency_every.map(|e| LatencyTask::start(&self.root, e));
        }
        if s.workload != old.workload {
            let shown =
                |w: &Option<crate::profile::Workload>| w.as_ref().map_or("off".to_string(), |w| w.prometheus.shown());
            changes.push(format!("workload {} (was {})", shown(&s.workload), shown(&old.workload)));
            self.workload = s.workload.as_ref().map(WorkloadTask::start);
        }
        self.monitor.reconfigure(&new);
        self.settings = new;
        self.profile = profile;
        Ok(if changes.is_empty() {
            " (no change to the watch settings)".to_string()
        } else {
            format!(": {}", changes.join(", "))
        })
    }
}

fn notify(state: &[sd_notify::NotifyState]) {
    let _ = sd_notify::notify(state);
}
