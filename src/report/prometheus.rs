//! Prometheus text for node_exporter's textfile collector: the audit's findings, facts and
//! gauges, written with [`crate::exposition`].

use crate::engine::Report;
use crate::exposition::{Kind, Writer};
use crate::resource::{FactValue, Status};

/// Whether the audit could run at all; 0 when the profile or invocation was invalid.
pub fn render_up(up: bool) -> String {
    let mut w = Writer::default();
    up_family(&mut w, up);
    w.into_text()
}

fn up_family(w: &mut Writer, up: bool) {
    let help = "Whether the audit could run (1) or not (0, see vakt's error output).";
    w.single("vakt_check_up", Kind::Gauge, help, u8::from(up));
}

/// Each resource's facts: a gauge per number (`vakt_swarm_managers 3`) and one info series
/// carrying the text facts as labels (`vakt_swarm_info{role="manager",...} 1`).
fn render_facts(report: &Report, w: &mut Writer) {
    for r in &report.resources {
        let mut labels = Vec::new();
        for f in &r.facts {
            match &f.value {
                FactValue::Number(n) => {
                    w.single(&format!("vakt_{}_{}", r.id, f.name), Kind::Gauge, f.help, n);
                }
                FactValue::Text(t) => labels.push((f.name, t.as_str())),
            }
        }
        if !labels.is_empty() {
            let name = format!("vakt_{}_info", r.id);
            w.family(&name, Kind::Gauge, &format!("Facts about the {} resource, as labels.", r.id));
            w.sample(&name, &labels, 1);
        }
    }
}

pub fn render(report: &Report) -> String {
    let mut w = Writer::default();
    up_family(&mut w, true);
    let help = "Whether an audited item complies (1) or not (0); skipped items are absent.";
    w.family("vakt_check_ok", Kind::Gauge, help);
    for r in &report.resources {
        for f in r.findings.iter().filter(|f| f.status != Status::Skipped) {
            let ok = u8::from(matches!(f.status, Status::Ok | Status::Changed));
            w.sample("vakt_check_ok", &[("resource", r.id), ("id", &f.id), ("status", f.status.as_str())], ok);
        }
    }
    render_facts(report, &mut w);
    // Resources' own gauges, grouped by name so each has one HELP and TYPE.
    let mut gauges: Vec<&crate::resource::Gauge> = report.resources.iter().flat_map(|r| &r.gauges).collect();
    gauges.sort_by_key(|g| g.name);
    for (i, g) in gauges.iter().enumerate() {
        if i == 0 || gauges[i - 1].name != g.name {
            w.family(g.name, Kind::Gauge, g.help);
        }
        let labels: Vec<(&str, &str)> = g.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        w.sample(g.name, &labels, g.value);
    }
    let s = &report.summary;
    w.family("vakt_check_findings", Kind::Gauge, "Audited items by status.");
    for (status, n) in [
        ("ok", s.ok),
        ("changed", s.changed),
        ("drift", s.drift),
        ("failed", s.failed),
        ("unknown", s.unknown),
        ("skipped", s.skipped),
    ] {
        w.sample("vakt_check_findings", &[("status", status)], n);
    }
    let seconds = format!("{:.3}", report.elapsed_ms as f64 / 1000.0);
    w.single("vakt_check_duration_seconds", Kind::Gauge, "Wall time of the audit.", seconds);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let help = "When the audit ran, in seconds since the epoch.";
    w.single("vakt_check_timestamp_seconds", Kind::Gauge, help, now);
    w.into_text()
}
