//! What the daemon needs beyond the profile's own bounds (an interval, a window and an audit
//! period are bounded types the profile's validation made): an interval that feeds systemd's
//! watchdog. Checked at start (an error exits with code 2) and on every SIGHUP (an error keeps
//! the running profile).

use std::time::Duration;

use crate::error::Invalid;
use crate::profile::Watch as Settings;
use crate::profile::units::format_duration;

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

/// Whether the settings' interval feeds a watchdog of `watchdog` (none: any interval does).
pub fn feeds(s: &Settings, watchdog: Option<Duration>) -> Result<(), Invalid> {
    let interval = *s.interval;
    match watchdog {
        Some(timeout) if interval > longest_interval_for(timeout) => Err(Invalid(format!(
            "watch.interval = {} cannot feed the systemd watchdog (WatchdogSec={}): vakt pings only after a completed sample and needs one at least every {}; lower interval or raise WatchdogSec= to {} or more",
            format_duration(interval),
            format_duration(timeout),
            format_duration(longest_interval_for(timeout)),
            format_duration(interval * 3)
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(interval: &str) -> Settings {
        let text = format!("[watch]\ninterval = \"{interval}\"\nwindow = \"1h\"\n");
        crate::profile::parse("t", &text).expect("valid").watch.expect("watch")
    }

    fn error(s: &Settings, watchdog: Option<Duration>) -> String {
        feeds(s, watchdog).expect_err("refused").0
    }

    #[test]
    fn the_interval_must_feed_the_watchdog() {
        let e = error(&settings("1m"), Some(Duration::from_secs(30)));
        assert!(e.contains("watch.interval = 1m cannot feed the systemd watchdog (WatchdogSec=30s)"), "{e}");
        assert!(e.contains("at least every 10s") && e.contains("to 3m or more"), "{e}");
        assert!(feeds(&settings("10s"), Some(Duration::from_secs(30))).is_ok());
        assert!(feeds(&settings("1m"), None).is_ok(), "no watchdog, no limit");
    }
}
