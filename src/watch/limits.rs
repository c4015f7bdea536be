//! What the daemon accepts from a profile and from systemd, checked before any timer or buffer
//! is made from it: at start (an error exits with code 2) and on every SIGHUP (an error keeps
//! the running profile).
//!
//! The profile parser enforces the same bounds; they are repeated here because the daemon must
//! not panic (tokio's `interval` panics on zero) or allocate absurdly whatever it is given.

use std::time::Duration;

use crate::error::Invalid;
use crate::profile::Watch as Settings;
use crate::profile::units::format_duration;

pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// At most this many intervals in the window: 100,000 samples of 24 bytes is 2.4 MB.
pub const MAX_WINDOW_SAMPLES: usize = 100_000;
/// The audit runs external commands with 30 s timeouts; more often than this is a typo.
pub const MIN_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Settings that passed [`check`]: every period here is a usable timer period.
#[derive(Debug, Clone)]
pub struct Checked {
    pub settings: Settings,
    /// How many intervals the window holds (at least 1, at most [`MAX_WINDOW_SAMPLES`]).
    pub window_samples: usize,
    /// The summary is logged once per window, and never more often than once per interval.
    pub summary_every: Duration,
}

/// The systemd watchdog timeout, if one is enabled for this process.
///
/// `WATCHDOG_USEC=0` is not a timeout: sd_watchdog_enabled(3) rejects it, so it means "none".
pub fn watchdog() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}

/// The longest interval that still feeds a watchdog of `timeout`: vakt pings at half the
/// timeout and only when a sample completed since the last ping, so every half needs a sample;
/// a third leaves the rest of the half for a slow read.
pub fn longest_interval_for(timeout: Duration) -> Duration {
    timeout / 3
}

pub fn check(s: &Settings, watchdog: Option<Duration>) -> Result<Checked, Invalid> {
    if s.interval < MIN_INTERVAL || s.interval > MAX_INTERVAL {
        return Err(Invalid(format!(
            "watch.interval = {} is out of range: use {} to {}",
            format_duration(s.interval),
            format_duration(MIN_INTERVAL),
            format_duration(MAX_INTERVAL)
        )));
    }
    let samples = s.window.as_nanos() / s.interval.as_nanos();
    if samples > MAX_WINDOW_SAMPLES as u128 {
        return Err(Invalid(format!(
            "watch.window = {} is {samples} samples at interval {}; at most {MAX_WINDOW_SAMPLES} are kept: shorten the window or lengthen the interval",
            format_duration(s.window),
            format_duration(s.interval)
        )));
    }
    if let Some(every) = s.check_every.filter(|e| *e < MIN_CHECK_EVERY) {
        return Err(Invalid(format!(
            "watch.check_every = {} is too short: use {} or more, or remove the key to run no audit in the daemon",
            format_duration(every),
            format_duration(MIN_CHECK_EVERY)
        )));
    }
    if let Some(timeout) = watchdog {
        let longest = longest_interval_for(timeout);
        if s.interval > longest {
            return Err(Invalid(format!(
                "watch.interval = {} cannot feed the systemd watchdog (WatchdogSec={}): vakt pings only after a completed sample and needs one at least every {}; lower interval or raise WatchdogSec= to {} or more",
                format_duration(s.interval),
                format_duration(timeout),
                format_duration(longest),
                format_duration(s.interval * 3)
            )));
        }
    }
    Ok(Checked {
        settings: s.clone(),
        window_samples: (samples as usize).max(1),
        summary_every: s.window.max(s.interval),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Built directly, not parsed: the daemon must hold even when the parser lets a value by.
    fn settings(interval_ms: u64, window_ms: u64, check_every_ms: Option<u64>) -> Settings {
        Settings {
            interval: Duration::from_millis(interval_ms),
            window: Duration::from_millis(window_ms),
            steal_warn: 10.0,
            steal_clear: 5.0,
            iowait_warn: 10.0,
            iowait_clear: 5.0,
            metrics: None,
            check_every: check_every_ms.map(Duration::from_millis),
        }
    }

    fn error(s: &Settings, watchdog: Option<Duration>) -> String {
        check(s, watchdog).map(|_| ()).expect_err("refused").0
    }

    #[test]
    fn zero_periods_are_refused() {
        assert!(error(&settings(0, 1000, None), None).contains("watch.interval = 0ms is out of range"));
        assert!(error(&settings(200, 1000, Some(0)), None).contains("watch.check_every = 0ms is too short"));
    }

    #[test]
    fn a_window_of_too_many_samples_is_refused_before_anything_is_allocated() {
        let e = error(&settings(100, 100_000 * 86_400_000, None), None);
        assert!(e.contains("watch.window = 100000d is 86400000000 samples at interval 100ms"), "{e}");
        let c = check(&settings(100, 10_000_000, None), None).expect("100000 samples are fine");
        assert_eq!(c.window_samples, MAX_WINDOW_SAMPLES);
    }

    #[test]
    fn a_window_shorter_than_the_interval_still_gives_usable_periods() {
        let c = check(&settings(1000, 0, None), None).expect("accepted");
        assert_eq!((c.window_samples, c.summary_every), (1, Duration::from_secs(1)));
    }

    #[test]
    fn the_interval_must_feed_the_watchdog() {
        let e = error(&settings(60_000, 60_000, None), Some(Duration::from_secs(30)));
        assert!(e.contains("watch.interval = 1m cannot feed the systemd watchdog (WatchdogSec=30s)"), "{e}");
        assert!(e.contains("at least every 10s") && e.contains("to 3m or more"), "{e}");
        assert!(check(&settings(10_000, 60_000, None), Some(Duration::from_secs(30))).is_ok());
        assert!(check(&settings(60_000, 60_000, None), None).is_ok(), "no watchdog, no limit");
    }
}
