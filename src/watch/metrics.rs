//! The Prometheus endpoint: the classic text exposition format (what node_exporter serves and
//! `promtool check metrics` accepts), with names that sit beside node_exporter's. Serving it
//! is `http.rs`'s job.

use std::fmt::Write;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The latest figures; written by the service loop, read by the HTTP handler.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub steal: f64,
    pub iowait: f64,
    pub steal_window: f64,
    pub iowait_window: f64,
    pub worst_steal: f64,
    pub worst_iowait: f64,
    /// (resource, kind, avg10 ratio)
    pub pressure: Vec<(&'static str, &'static str, f64)>,
    pub steal_alarm: bool,
    pub iowait_alarm: bool,
    pub samples: u64,
    /// Reads of /proc/stat that gave no figures.
    pub sample_errors: u64,
    /// (state, count) of the last periodic audit, and when it ran.
    pub findings: Vec<(&'static str, usize)>,
    pub last_audit: Option<f64>,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn one(v: f64) -> Vec<(String, f64)> {
    vec![(String::new(), v)]
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut o = String::new();
        family(
            &mut o,
            "vakt_cpu_steal_ratio",
            "gauge",
            "Share of CPU time stolen by the hypervisor over the last interval.",
            &one(self.steal),
        );
        family(
            &mut o,
            "vakt_cpu_iowait_ratio",
            "gauge",
            "Share of CPU time spent waiting for I/O over the last interval.",
            &one(self.iowait),
        );
        family(
            &mut o,
            "vakt_cpu_steal_window_ratio",
            "gauge",
            "Share of CPU time stolen over the alarm window.",
            &one(self.steal_window),
        );
        family(
            &mut o,
            "vakt_cpu_iowait_window_ratio",
            "gauge",
            "Share of CPU time in I/O wait over the alarm window.",
            &one(self.iowait_window),
        );
        let worst = vec![
            ("{mode=\"steal\"}".to_string(), self.worst_steal),
            ("{mode=\"iowait\"}".to_string(), self.worst_iowait),
        ];
        family(
            &mut o,
            "vakt_cpu_worst_ratio",
            "gauge",
            "The worst single CPU's share over the last interval, by mode.",
            &worst,
        );
        if !self.pressure.is_empty() {
            let p: Vec<(String, f64)> =
                self.pressure.iter().map(|(r, k, v)| (format!("{{resource=\"{r}\",kind=\"{k}\"}}"), *v)).collect();
            family(
                &mut o,
                "vakt_pressure_avg10_ratio",
                "gauge",
                "Pressure stall information, 10 s average, by resource and kind.",
                &p,
            );
        }
        let alarms = vec![
            ("{kind=\"steal\"}".to_string(), f64::from(u8::from(self.steal_alarm))),
            ("{kind=\"iowait\"}".to_string(), f64::from(u8::from(self.iowait_alarm))),
        ];
        family(&mut o, "vakt_alarm_active", "gauge", "Whether an alarm is raised (1) or not (0).", &alarms);
        family(&mut o, "vakt_samples_total", "counter", "Samples of /proc/stat taken.", &one(self.samples as f64));
        family(
            &mut o,
            "vakt_sample_errors_total",
            "counter",
            "Reads of /proc/stat that gave no figures (unreadable, no CPU lines, counters stuck).",
            &one(self.sample_errors as f64),
        );
        if let Some(at) = self.last_audit {
            let f: Vec<(String, f64)> =
                self.findings.iter().map(|(s, n)| (format!("{{state=\"{s}\"}}"), *n as f64)).collect();
            family(&mut o, "vakt_check_findings", "gauge", "Findings of the last periodic audit, by state.", &f);
            family(
                &mut o,
                "vakt_check_last_run_timestamp_seconds",
                "gauge",
                "When the last periodic audit ran.",
                &one(at),
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_help_type_and_values() {
        let m = Metrics { steal: 0.25, samples: 3, steal_alarm: true, ..Default::default() };
        let text = m.render();
        assert!(text.contains("# TYPE vakt_cpu_steal_ratio gauge\nvakt_cpu_steal_ratio 0.25\n"), "{text}");
        assert!(text.contains("# HELP vakt_samples_total Samples of /proc/stat taken.\n# TYPE vakt_samples_total counter\nvakt_samples_total 3\n"), "{text}");
        assert!(text.contains("vakt_alarm_active{kind=\"steal\"} 1"), "{text}");
        assert!(!text.contains("vakt_check_findings"), "no audit, no audit metrics");
    }
}
