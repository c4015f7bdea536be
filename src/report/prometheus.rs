//! Prometheus text for node_exporter's textfile collector.

use std::fmt::Write;

use crate::engine::Report;
use crate::resource::{FactValue, Status};

fn label(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Whether the audit could run at all; 0 when the profile or invocation was invalid.
pub fn render_up(up: bool) -> String {
    format!(
        "# HELP vakt_check_up Whether the audit could run (1) or not (0, see vakt's error output).\n# TYPE vakt_check_up gauge\nvakt_check_up {}\n",
        u8::from(up)
    )
}

/// Each resource's facts: a gauge per number (`vakt_swarm_managers 3`) and one info series
/// carrying the text facts as labels (`vakt_swarm_info{role="manager",...} 1`).
fn render_facts(report: &Report, out: &mut String) {
    for r in &report.resources {
        let mut labels = Vec::new();
        for f in &r.facts {
            match &f.value {
                FactValue::Number(n) => {
                    let name = format!("vakt_{}_{}", r.id, f.name);
                    let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} gauge\n{name} {n}", f.help);
                }
                FactValue::Text(t) => labels.push(format!("{}=\"{}\"", f.name, label(t))),
            }
        }
        if !labels.is_empty() {
            let name = format!("vakt_{}_info", r.id);
            let _ = writeln!(
                out,
                "# HELP {name} Facts about the {} resource, as labels.\n# TYPE {name} gauge\n{name}{{{}}} 1",
                r.id,
                labels.join(",")
            );
        }
    }
}

pub fn render(report: &Report) -> String {
    let mut out = render_up(true);
    out.push_str("# HELP vakt_check_ok Whether an audited item complies (1) or not (0); skipped items are absent.\n");
    out.push_str("# TYPE vakt_check_ok gauge\n");
    for r in &report.resources {
        for f in r.findings.iter().filter(|f| f.status != Status::Skipped) {
            let ok = u8::from(matches!(f.status, Status::Ok | Status::Changed));
            let _ = writeln!(
                out,
                "vakt_check_ok{{resource=\"{}\",id=\"{}\",status=\"{}\"}} {ok}",
                r.id,
                label(&f.id),
                f.status.as_str()
            );
        }
    }
    render_facts(report, &mut out);
    // Resources' own gauges, grouped by name so each has one HELP and TYPE.
    let mut gauges: Vec<&crate::resource::Gauge> = report.resources.iter().flat_map(|r| &r.gauges).collect();
    gauges.sort_by_key(|g| g.name);
    for (i, g) in gauges.iter().enumerate() {
        if i == 0 || gauges[i - 1].name != g.name {
            let _ = writeln!(out, "# HELP {} {}\n# TYPE {} gauge", g.name, g.help, g.name);
        }
        let labels: Vec<String> = g.labels.iter().map(|(k, v)| format!("{k}=\"{}\"", label(v))).collect();
        let _ = writeln!(out, "{}{{{}}} {}", g.name, labels.join(","), g.value);
    }
    let s = &report.summary;
    out.push_str("# HELP vakt_check_findings Audited items by status.\n# TYPE vakt_check_findings gauge\n");
    for (status, n) in [
        ("ok", s.ok),
        ("changed", s.changed),
        ("drift", s.drift),
        ("failed", s.failed),
        ("unknown", s.unknown),
        ("skipped", s.skipped),
    ] {
        let _ = writeln!(out, "vakt_check_findings{{status=\"{status}\"}} {n}");
    }
    out.push_str(
        "# HELP vakt_check_duration_seconds Wall time of the audit.\n# TYPE vakt_check_duration_seconds gauge\n",
    );
    let _ = writeln!(out, "vakt_check_duration_seconds {:.3}", report.elapsed_ms as f64 / 1000.0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    out.push_str("# HELP vakt_check_timestamp_seconds When the audit ran, in seconds since the epoch.\n# TYPE vakt_check_timestamp_seconds gauge\n");
    let _ = writeln!(out, "vakt_check_timestamp_seconds {now}");
    out
}
