//! Events and reporting: the journald events with their fixed MESSAGE_IDs, the one-line status
//! (also sent as `STATUS=`), the figures handed to the metrics endpoint, the periodic audit's
//! report, and the back-off that keeps a recurring failure from flooding the journal.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::metrics::Metrics;
use super::psi::{self, Pressure};
use super::sampler::Sample;
use super::window::{Reading, Transition};
use super::workload::{Event, Judge};
use crate::profile::units::format_duration;

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
    pub const SAMPLE_FAILED: &str = "8b0e3c7a52f44f6f9a1d6c0e4b2a7d1c";
    pub const SAMPLE_RECOVERED: &str = "8b0e3c7a52f44f6f9a1d6c0e4b2a7d1d";
    pub const METRICS_ACCEPT_FAILED: &str = "8b0e3c7a52f44f6f9a1d6c0e4b2a7d1e";
    pub const BOTTLENECK: &str = "8b0e3c7a52f44f6f9a1d6c0e4b2a7d1f";
    pub const BOTTLENECK_CLEAR: &str = "8b0e3c7a52f44f6f9a1d6c0e4b2a7d20";
    pub const QUIET: &str = "8b0e3c7a52f44f6f9a1d6c0e4b2a7d21";
    pub const WORKLOAD_FAILED: &str = "8b0e3c7a52f44f6f9a1d6c0e4b2a7d22";
    pub const LATENCY: &str = "8b0e3c7a52f44f6f9a1d6c0e4b2a7d23";
}

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

pub fn status_line(r: &Reading, pressure: &[Option<Pressure>; 3], window: Duration) -> String {
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

/// The once-per-window summary at info; single samples are debug.
pub fn summary(r: &Reading, s: &Sample, line: &str, interval: Duration) {
    figures_event!(tracing::Level::INFO, message_id::SUMMARY, r, s, line, interval);
}

pub fn report_sample(r: &Reading, s: &Sample, line: &str, interval: Duration) {
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

pub fn update_metrics(m: &Mutex<Metrics>, r: &Reading, s: &Sample) {
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

/// A change in the workload's judgement, to the journal.
pub fn workload_event(e: &Event) {
    match e {
        Event::Bottleneck(t) => tracing::warn!(MESSAGE_ID = message_id::BOTTLENECK, "bottleneck: {t}"),
        Event::Cleared(t) => tracing::info!(MESSAGE_ID = message_id::BOTTLENECK_CLEAR, "{t}"),
        Event::Quiet(t) => tracing::info!(MESSAGE_ID = message_id::QUIET, "quiet: {t}"),
    }
}

/// The workload's figures (none when the last answer failed) and the event it led to.
pub fn update_workload_metrics(m: &Mutex<Metrics>, judge: Option<&Judge>, event: Option<&Event>) {
    let Ok(mut m) = m.lock() else { return };
    let w = m.workload.get_or_insert_with(Default::default);
    match judge {
        Some(j) => {
            w.up = true;
            w.rate = j.last.map(|f| f.rate);
            w.services = j.last.map(|f| f.services);
            w.baseline = j.baseline;
            w.bottleneck = j.bottleneck;
        }
        None => {
            w.up = false;
            w.errors += 1;
        }
    }
    match event {
        Some(Event::Bottleneck(_)) => w.bottlenecks += 1,
        Some(Event::Quiet(_)) => w.quiets += 1,
        _ => {}
    }
}

pub fn report_audit(report: &crate::engine::Report, m: &Mutex<Metrics>) {
    let s = &report.summary;
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

/// When to log a failure that recurs every interval: the first time, then after 10 s, 20 s,
/// 40 s ... at most once an hour, saying how many went unlogged; a different failure is logged
/// at once. Pure: the caller gives the clock.
#[derive(Debug, Default)]
pub struct Backoff {
    last: Option<(String, Instant)>,
    gap: Duration,
    unlogged: u64,
    failures: u64,
}

const FIRST_GAP: Duration = Duration::from_secs(10);
const LONGEST_GAP: Duration = Duration::from_secs(3600);

impl Backoff {
    /// A failure: `Some(line)` to log, or `None` while backing off.
    pub fn fail(&mut self, now: Instant, what: &str) -> Option<String> {
        self.failures += 1;
        let due = match &self.last {
            Some((last, at)) if last == what => now.duration_since(*at) >= self.gap,
            _ => {
                self.gap = FIRST_GAP / 2;
                self.unlogged = 0;
                true
            }
        };
        if !due {
            self.unlogged += 1;
            return None;
        }
        let line = match self.unlogged {
            0 => what.to_string(),
            n => format!("{what} (and {n} more times since the last report)"),
        };
        self.gap = (self.gap * 2).min(LONGEST_GAP);
        self.last = Some((what.to_string(), now));
        self.unlogged = 0;
        Some(line)
    }

    /// A success: how many failures preceded it, if any, and a fresh start.
    pub fn recovered(&mut self) -> Option<u64> {
        let failures = std::mem::take(&mut self.failures);
        *self = Backoff::default();
        (failures > 0).then_some(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recurring_failure_is_logged_with_growing_gaps() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        // One failure a second for two minutes.
        let logged: Vec<(u64, String)> =
            (0..120).filter_map(|s| b.fail(t0 + Duration::from_secs(s), "no cpu").map(|l| (s, l))).collect();
        let at: Vec<u64> = logged.iter().map(|(s, _)| *s).collect();
        assert_eq!(at, vec![0, 10, 30, 70]);
        assert_eq!(logged[1].1, "no cpu (and 9 more times since the last report)");
        assert_eq!(logged[3].1, "no cpu (and 39 more times since the last report)");
        assert_eq!(b.fail(t0 + Duration::from_secs(121), "other").as_deref(), Some("other"), "a new failure at once");
        assert_eq!(b.recovered(), Some(121));
        assert_eq!(b.recovered(), None);
        assert_eq!(b.fail(t0 + Duration::from_secs(122), "no cpu").as_deref(), Some("no cpu"), "logged afresh");
    }
}
