//! The Prometheus alerting rules vakt ships (`dist/prometheus/vakt.rules.yml`) pass
//! the real `promtool`: the file checks, and its unit tests (steal, I/O wait, the gateway
//! bottleneck against a quiet hour, vakt watch's own bottleneck alarm, audit drift, certificate expiry, the watchdog down) hold.

mod common;

use std::process::Command;

use common::*;

#[test]
fn the_shipped_alert_rules_pass_promtool() {
    if !require("promtool (Debian package prometheus)", has("promtool")) {
        return;
    }
    let check = run(Command::new("promtool").args(["check", "rules"]).arg(repo("dist/prometheus/vakt.rules.yml")));
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    assert!(check.stdout.contains("SUCCESS: 7 rules found"), "{}", check.stdout);
    let test = run(Command::new("promtool").args(["test", "rules"]).arg(repo("tests/prometheus/vakt.rules.test.yml")));
    assert_eq!(test.code, 0, "{}{}", test.stdout, test.stderr);
}
