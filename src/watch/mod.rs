//! `vakt watch`: samples CPU steal, I/O wait and pressure, raises and clears alarms with
//! hysteresis, and reports to journald, systemd (sd_notify) and Prometheus.

pub mod cpu;
mod metrics;
pub mod psi;
mod window;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::error::Invalid;
use crate::host::Host;
use crate::profile::units::format_duration;
use crate::profile::{self, Profile, Watch as Settings};
use cpu::{CpuSample, Usage};
use psi::Pressure;
use window::{Alarm, Transition, Window};

/// One structured event with every figure as a `VAKT_*` journald field.
macro_rules! figures_event {
    ($level:expr, $id:expr, $r:expr, $s:expr, $line:expr, $interval:expr) => {{
        let (r, s): (&Reading, &Sample) = ($r, $s);
        let u = &r.usage;
        let psi = |i: usize| s.pressure[i].map_or(-1.0, |p| p.some.avg10);
        tracing::event!(
            $level,
            MESSAGE_ID = $id,
            VAKT_STEAL_PCT = u.system.steal_pct(),
            VAKT_IOWAIT_PCT = u.system.iowait_pct(),
            VAKT_STEAL_WINDOW_PCT = r.window_steal,
            VAKT_IOWAIT_WINDOW_PCT = r.window_iowait,
            VAKT_WORST_STEAL_CPU = u.worst_steal.map_or(-1, |w| i64::from(w.0)),
            VAKT_WORST_STEAL_PCT = u.worst_steal.map_or(0.0, |w| w.1),
            VAKT_WORST_IOWAIT_CPU = u.worst_iowait.map_or(-1, |w| i64::from(w.0)),
            VAKT_WORST_IOWAIT_PCT = u.worst_iowait.map_or(0.0, |w| w.1),
            VAKT_PSI_CPU_SOME_AVG10 = psi(0),
            VAKT_PSI_IO_SOME_AVG10 = psi(1),
            VAKT_PSI_MEMORY_SOME_AVG10 = psi(2),
            VAKT_INTERVAL_MS = $interval.as_millis() as u64,
            "{}",
            $line
        )
    }};
}

/// One fixed journald MESSAGE_ID per event type (`journalctl MESSAGE_ID=...`).
pub mod message_id {
    pub const STARTED: &str = "8b0e3c7a52f44f6f9a1d6c0e4b2a7d10";
    pub const SAMPLE: &str = "8b0e3c7a52f44f6f9a1d6c0e4b2a7d11";
    pub const SUMMARY: &str = "8b0e3c7a52f44f6f9a1d6c0e4b2a7d12";
    pub const STEAL_WARN: &str = "8b0e3c7a52f44f6f9a1d6c0e4b2a7d13";
    pub const STEAL_CLEAR: &str = "8b0e3c7a52f44f6f9a1d6c0e4b2a7d14";
    pub const IOWAIT_WARN: &str = "8b0e3c7a52f44f6f9a1d6c0e4b2a7d15";
    pub const IOWAIT_CLEAR: &str = "8b0e3c7a52f44f6f9a1d6c0e4b2a7d16";
    pub const PSI_ABSENT: &str = "8b0e3c7a52f44f6f9a1d6c0e4b2a7d17";
    pub const RELOADED: &str = "8b0e3c7a52f44f6f9a1d6c0e4b2a7d18";
    pub const RELOAD_FAILED: &str = "8b0e3c7a52f44f6f9a1d6c0e4b2a7d19";
    pub const AUDIT: &str = "8b0e3c7a52f44f6f9a1d6c0e4b2a7d1a";
    pub const STOPPING: &str = "8b0e3c7a52f44f6f9a1d6c0e4b2a7d1b";
}

/// One completed sample, sent from the sampler to the service loop.
#[derive(Debug)]
struct Sample {
    usage: Usage,
    pressure: [Option<Pressure>; 3],
}

/// The figures and alarms, updated per sample. Pure apart from the clock it is given.
#[derive(Debug)]
pub struct Monitor {
    settings: Settings,
    window: Window,
    steal: Alarm,
    iowait: Alarm,
}

/// What one sample means, ready to log and report.
#[derive(Debug)]
pub struct Reading {
    pub usage: Usage,
    pub window_steal: f64,
    pub window_iowait: f64,
    pub transitions: Vec<(&'static str, Transition)>,
    pub steal_alarm: bool,
    pub iowait_alarm: bool,
}

impl Monitor {
    pub fn new(settings: Settings) -> Monitor {
        let capacity = (settings.window.as_millis() / settings.interval.as_millis().max(1)).max(1) as usize;
        Monitor {
            window: Window::new(capacity),
            steal: Alarm::new(settings.steal_warn, settings.steal_clear),
            iowait: Alarm::new(settings.iowait_warn, settings.iowait_clear),
            settings,
        }
    }

    /// Keeps the window and alarm states across a reload where the figures still make sense.
    fn reconfigure(&mut self, settings: Settings) {
        let (steal, iowait) = (self.steal.active, self.iowait.active);
        *self = Monitor::new(settings);
        self.steal.active = steal;
        self.iowait.active = iowait;
    }

    pub fn observe(&mut self, usage: Usage) -> Reading {
        self.window.push(usage.system);
        let w = self.window.total();
        let mut transitions = Vec::new();
        if let Some(t) = self.steal.update(w.steal_pct()) {
            transitions.push(("steal", t));
        }
        if let Some(t) = self.iowait.update(w.iowait_pct()) {
            transitions.push(("iowait", t));
        }
        Reading {
            usage,
            window_steal: w.steal_pct(),
            window_iowait: w.iowait_pct(),
            transitions,
            steal_alarm: self.steal.active,
            iowait_alarm: self.iowait.active,
        }
    }
}

fn status_line(r: &Reading, pressure: &[Option<Pressure>; 3], window: Duration) -> String {
    let u = &r.usage;
    let worst = |w: Option<(u32, f64)>| w.map_or(String::new(), |(cpu, p)| format!(", worst cpu{cpu} {p:.1}%"));
    let mut line = format!(
        "steal {:.1}%{} ({:.1}% over {}), iowait {:.1}%{} ({:.1}% over {})",
        u.system.steal_pct(),
        worst(u.worst_steal),
        r.window_steal,
        format_duration(window),
        u.system.iowait_pct(),
        worst(u.worst_iowait),
        r.window_iowait,
        format_duration(window),
    );
    if let Some(io) = &pressure[1] {
        line.push_str(&format!(", io pressure {:.2}", io.some.avg10));
    }
    line
}

fn read_sample(stat: &Path, pressure_dir: &Path) -> anyhow::Result<(CpuSample, [Option<Pressure>; 3])> {
    let text = std::fs::read_to_string(stat).with_context(|| format!("failed to read {}", stat.display()))?;
    let psi = psi::RESOURCES.map(|r| std::fs::read_to_string(pressure_dir.join(r)).ok().and_then(|t| psi::parse(&t)));
    Ok((cpu::parse_stat(&text), psi))
}

/// The sampler: reads /proc on a blocking thread every interval and sends completed samples.
/// If a read hangs, no sample arrives, and the watchdog pings stop.
async fn sampler(stat: PathBuf, pressure_dir: PathBuf, interval: Duration, tx: mpsc::Sender<anyhow::Result<Sample>>) {
    let mut previous: Option<(CpuSample, Instant)> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let (s, p) = (stat.clone(), pressure_dir.clone());
        let read = tokio::task::spawn_blocking(move || read_sample(&s, &p)).await;
        let now = Instant::now();
        let result = match read {
            Ok(Ok((sample, pressure))) => {
                let done = previous.as_ref().map(|(prev, at)| Sample {
                    usage: cpu::usage(prev, &sample, now.duration_since(*at).as_secs_f64()),
                    pressure,
                });
                previous = Some((sample, now));
                match done {
                    Some(d) => Ok(d),
                    None => continue,
                }
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("the sampler failed: {e}")),
        };
        if tx.send(result).await.is_err() {
            return;
        }
    }
}

fn notify(state: &[sd_notify::NotifyState]) {
    let _ = sd_notify::notify(state);
}

pub fn run(profile_spec: Option<String>, root: PathBuf) -> anyhow::Result<u8> {
    let profile = profile::load(profile_spec.as_deref(), &root, true)?;
    let settings = watch_settings(&profile)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(serve(profile_spec, root, profile, settings))
}

fn watch_settings(p: &Profile) -> anyhow::Result<Settings> {
    p.watch
        .clone()
        .ok_or_else(|| Invalid(format!("{} has no [watch] section; add one (see docs/profile.md)", p.source)).into())
}

async fn serve(spec: Option<String>, root: PathBuf, mut profile: Profile, settings: Settings) -> anyhow::Result<u8> {
    let host = Host::new(&root);
    let mut monitor = Monitor::new(settings.clone());
    let metrics = Arc::new(Mutex::new(metrics::Metrics::default()));
    if let Some(addr) = settings.metrics {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("failed to listen on {addr} for metrics"))?;
        tokio::spawn(metrics::serve(listener, metrics.clone()));
    }
    let (tx, mut rx) = mpsc::channel(4);
    let mut sampler_task =
        tokio::spawn(sampler(host.path("/proc/stat"), host.path("/proc/pressure"), settings.interval, tx.clone()));

    let mut term = signal(SignalKind::terminate()).context("failed to install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("failed to install the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("failed to install the SIGHUP handler")?;
    let watchdog = sd_notify::watchdog_enabled();
    let ping_every = watchdog.map_or(Duration::from_secs(3600), |w| w / 2);
    let mut pinger = tokio::time::interval(ping_every);
    let mut audit = tokio::time::interval(settings.check_every.unwrap_or(Duration::from_secs(86_400 * 365)));
    audit.tick().await;
    // A summary at info once per window; single samples are debug.
    let mut summary = tokio::time::interval(settings.window);
    summary.tick().await;

    tracing::info!(
        MESSAGE_ID = message_id::STARTED,
        VAKT_INTERVAL_MS = settings.interval.as_millis() as u64,
        "vakt watch started with {} (interval {}, window {})",
        profile.source,
        format_duration(settings.interval),
        format_duration(settings.window)
    );
    let mut progressed = false;
    let mut ready = false;
    let mut psi_told = false;
    let mut last: Option<(Reading, Sample, String)> = None;
    loop {
        tokio::select! {
            Some(result) = rx.recv() => {
                let sample = match result {
                    Ok(s) => s,
                    Err(e) => { tracing::error!("{e:#}"); continue; }
                };
                let reading = monitor.observe(sample.usage.clone());
                let line = status_line(&reading, &sample.pressure, monitor.settings.window);
                report_sample(&reading, &sample, &line, monitor.settings.interval);
                update_metrics(&metrics, &reading, &sample);
                if sample.pressure.iter().all(Option::is_none) && !psi_told {
                    tracing::info!(MESSAGE_ID = message_id::PSI_ABSENT, "pressure stall information is not available on this kernel (no /proc/pressure or psi=0); reporting without it");
                    psi_told = true;
                }
                notify(&[sd_notify::NotifyState::Status(&line)]);
                if !ready {
                    notify(&[sd_notify::NotifyState::Ready]);
                    ready = true;
                }
                last = Some((reading, sample, line));
                progressed = true;
            }
            _ = pinger.tick() => {
                // Ping only when the sampler completed a sample since the last ping: a stuck
                // sampler must lead to a restart by systemd.
                if progressed && watchdog.is_some() {
                    notify(&[sd_notify::NotifyState::Watchdog]);
                }
                progressed = false;
            }
            _ = summary.tick() => {
                if let Some((reading, sample, line)) = &last {
                    figures_event!(tracing::Level::INFO, message_id::SUMMARY, reading, sample, line, monitor.settings.interval);
                }
            }
            _ = audit.tick(), if monitor.settings.check_every.is_some() => {
                run_audit(&root, &profile, &metrics).await;
            }
            _ = hup.recv() => {
                match profile::load(spec.as_deref(), &root, true).and_then(|p| watch_settings(&p).map(|s| (p, s))) {
                    Ok((p, s)) => {
                        if s.interval != monitor.settings.interval {
                            sampler_task.abort();
                            sampler_task = tokio::spawn(sampler(host.path("/proc/stat"), host.path("/proc/pressure"), s.interval, tx.clone()));
                        }
                        monitor.reconfigure(s);
                        tracing::info!(MESSAGE_ID = message_id::RELOADED, "reloaded {}", p.source);
                        profile = p;
                    }
                    Err(e) => tracing::error!(MESSAGE_ID = message_id::RELOAD_FAILED, "reload failed, keeping the running profile: {e:#}"),
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!(MESSAGE_ID = message_id::STOPPING, "vakt watch stopping");
    sampler_task.abort();
    Ok(crate::error::exit::OK)
}

fn report_sample(r: &Reading, s: &Sample, line: &str, interval: Duration) {
    figures_event!(tracing::Level::DEBUG, message_id::SAMPLE, r, s, line, interval);
    for (kind, t) in &r.transitions {
        match (*kind, t) {
            ("steal", Transition::Raised) => tracing::warn!(
                MESSAGE_ID = message_id::STEAL_WARN,
                VAKT_STEAL_PCT = r.window_steal,
                "another tenant is taking CPU time: {:.1} % stolen over the window; this host's functions run slower than they should",
                r.window_steal
            ),
            ("steal", Transition::Cleared) => tracing::info!(
                MESSAGE_ID = message_id::STEAL_CLEAR,
                VAKT_STEAL_PCT = r.window_steal,
                "CPU steal back to {:.1} %: the hypervisor gives this host its CPU time again",
                r.window_steal
            ),
            (_, Transition::Raised) => tracing::warn!(
                MESSAGE_ID = message_id::IOWAIT_WARN,
                VAKT_IOWAIT_PCT = r.window_iowait,
                "CPUs wait on storage: {:.1} % I/O wait over the window; image pulls and containers stall",
                r.window_iowait
            ),
            (_, Transition::Cleared) => tracing::info!(
                MESSAGE_ID = message_id::IOWAIT_CLEAR,
                VAKT_IOWAIT_PCT = r.window_iowait,
                "I/O wait back to {:.1} %",
                r.window_iowait
            ),
        }
    }
}

fn update_metrics(m: &Mutex<metrics::Metrics>, r: &Reading, s: &Sample) {
    let Ok(mut m) = m.lock() else { return };
    let u = &r.usage;
    m.steal = u.system.steal_pct() / 100.0;
    m.iowait = u.system.iowait_pct() / 100.0;
    m.steal_window = r.window_steal / 100.0;
    m.iowait_window = r.window_iowait / 100.0;
    m.worst_steal = u.worst_steal.map_or(0.0, |w| w.1 / 100.0);
    m.worst_iowait = u.worst_iowait.map_or(0.0, |w| w.1 / 100.0);
    m.pressure.clear();
    for (name, p) in psi::RESOURCES.iter().zip(&s.pressure) {
        if let Some(p) = p {
            m.pressure.push((name, "some", p.some.avg10 / 100.0));
            if let Some(full) = p.full {
                m.pressure.push((name, "full", full.avg10 / 100.0));
            }
        }
    }
    m.steal_alarm = r.steal_alarm;
    m.iowait_alarm = r.iowait_alarm;
    m.samples += 1;
}

async fn run_audit(root: &std::path::Path, profile: &Profile, m: &Mutex<metrics::Metrics>) {
    let root = root.to_path_buf();
    let profile = profile.clone();
    let report = tokio::task::spawn_blocking(move || {
        let host = Host::new(&root);
        crate::cmd::check::audit(&host, &profile, &[])
    })
    .await;
    let Ok(Ok(report)) = report else {
        tracing::error!(MESSAGE_ID = message_id::AUDIT, "the periodic audit could not run");
        return;
    };
    let s = report.summary;
    if let Ok(mut m) = m.lock() {
        m.findings = vec![
            ("ok", s.ok),
            ("drift", s.drift),
            ("failed", s.failed),
            ("unknown", s.unknown),
            ("skipped", s.skipped),
        ];
        m.last_audit =
            Some(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()));
    }
    for f in report
        .resources
        .iter()
        .flat_map(|r| &r.findings)
        .filter(|f| matches!(f.status, crate::resource::Status::Drift | crate::resource::Status::Failed))
    {
        tracing::warn!(
            MESSAGE_ID = message_id::AUDIT,
            VAKT_FINDING = f.id.as_str(),
            "audit: {} {}: {}",
            f.status.as_str(),
            f.id,
            f.title
        );
    }
    tracing::info!(
        MESSAGE_ID = message_id::AUDIT,
        VAKT_DRIFT = s.drift as u64,
        "audit: {} ok, {} drift, {} failed, {} unknown",
        s.ok,
        s.drift,
        s.failed,
        s.unknown
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        crate::profile::parse(
            "t",
            "[watch]\ninterval = \"1s\"\nwindow = \"3s\"\nsteal_warn = 10.0\nsteal_clear = 5.0\n",
        )
        .expect("valid")
        .watch
        .expect("watch")
    }

    #[test]
    fn scripted_samples_give_one_warning_and_one_recovery() {
        let mut monitor = Monitor::new(settings());
        // Steal per interval, in ticks out of 100: calm, a noisy neighbour, calm again.
        let steal = [0u64, 1, 30, 40, 20, 8, 12, 9, 2, 1, 0, 6, 9, 1];
        let mut counters = [0u64; 8];
        let mut prev = cpu::parse_stat("cpu0 0 0 0 0 0 0 0 0\n");
        let mut events = Vec::new();
        for s in steal {
            counters[0] += 100 - s;
            counters[7] += s;
            let line = counters.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
            let cur = cpu::parse_stat(&format!("cpu0 {line}\n"));
            let reading = monitor.observe(cpu::usage(&prev, &cur, 1.0));
            events.extend(reading.transitions);
            prev = cur;
        }
        assert_eq!(events, vec![("steal", Transition::Raised), ("steal", Transition::Cleared)]);
    }
}
