//! The Prometheus endpoint's figures, with names that sit beside node_exporter's, written with
//! [`crate::exposition`]. Serving them is `http.rs`'s job.

use crate::exposition::{Kind, Writer};

pub use crate::exposition::CONTENT_TYPE;

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
    /// With `[watch.workload]`: the gateway's figures and their judgement.
    pub workload: Option<WorkloadMetrics>,
    /// With `latency_every`: each disk's last latency probe.
    pub disks: Vec<(String, crate::resource::probe::Figures)>,
}

#[derive(Debug, Default, Clone)]
pub struct WorkloadMetrics {
    /// Whether the last question to Prometheus was answered.
    pub up: bool,
    pub rate: Option<f64>,
    pub services: Option<f64>,
    pub baseline: Option<f64>,
    pub bottleneck: bool,
    pub errors: u64,
    pub bottlenecks: u64,
    pub quiets: u64,
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut w = Writer::default();
        let gauge = |w: &mut Writer, name: &str, help: &str, v: f64| {
            w.single(name, Kind::Gauge, help, v);
        };
        gauge(
            &mut w,
            "vakt_cpu_steal_ratio",
            "Share of CPU time stolen by the hypervisor over the last interval.",
            self.steal,
        );
        gauge(
            &mut w,
            "vakt_cpu_iowait_ratio",
            "Share of CPU time spent waiting for I/O over the last interval.",
            self.iowait,
        );
        gauge(
            &mut w,
            "vakt_cpu_steal_window_ratio",
            "Share of CPU time stolen over the alarm window.",
            self.steal_window,
        );
        gauge(
            &mut w,
            "vakt_cpu_iowait_window_ratio",
            "Share of CPU time in I/O wait over the alarm window.",
            self.iowait_window,
        );
        w.family("vakt_cpu_worst_ratio", Kind::Gauge, "The worst single CPU's share over the last interval, by mode.")
            .sample("vakt_cpu_worst_ratio", &[("mode", "steal")], self.worst_steal)
            .sample("vakt_cpu_worst_ratio", &[("mode", "iowait")], self.worst_iowait);
        if !self.pressure.is_empty() {
            let name = "vakt_pressure_avg10_ratio";
            w.family(name, Kind::Gauge, "Pressure stall information, 10 s average, by resource and kind.");
            for (resource, kind, v) in &self.pressure {
                w.sample(name, &[("resource", resource), ("kind", kind)], v);
            }
        }
        w.family("vakt_alarm_active", Kind::Gauge, "Whether an alarm is raised (1) or not (0).")
            .sample("vakt_alarm_active", &[("kind", "steal")], u8::from(self.steal_alarm))
            .sample("vakt_alarm_active", &[("kind", "iowait")], u8::from(self.iowait_alarm));
        if let Some(wl) = &self.workload {
            w.sample("vakt_alarm_active", &[("kind", "bottleneck")], u8::from(wl.bottleneck));
        }
        w.single("vakt_samples_total", Kind::Counter, "Samples of /proc/stat taken.", self.samples);
        let help = "Reads of /proc/stat that gave no figures (unreadable, no CPU lines, counters stuck).";
        w.single("vakt_sample_errors_total", Kind::Counter, help, self.sample_errors);
        if let Some(wl) = &self.workload {
            w.single(
                "vakt_workload_up",
                Kind::Gauge,
                "Whether the last question about the workload was answered.",
                u8::from(wl.up),
            );
            for (name, help, v) in [
                ("vakt_workload_invocation_rate", "The gateway's invocations per second (rate_query).", wl.rate),
                ("vakt_workload_baseline_rate", "The invocation rate's recent baseline.", wl.baseline),
                ("vakt_workload_services", "The gateway's deployed services (services_query).", wl.services),
            ] {
                if let Some(v) = v {
                    w.single(name, Kind::Gauge, help, v);
                }
            }
            w.single(
                "vakt_workload_errors_total",
                Kind::Counter,
                "Questions about the workload that got no answer.",
                wl.errors,
            );
            w.family("vakt_workload_falls_total", Kind::Counter, "Falls of the invocation rate, by verdict.")
                .sample("vakt_workload_falls_total", &[("verdict", "bottleneck")], wl.bottlenecks)
                .sample("vakt_workload_falls_total", &[("verdict", "quiet")], wl.quiets);
        }
        if !self.disks.is_empty() {
            let name = "vakt_disk_read_latency_seconds";
            let help = "Read latency of the disk's last probe (4 KiB O_DIRECT reads at queue depth 1).";
            w.family(name, Kind::Summary, help);
            for (disk, f) in &self.disks {
                for (q, v) in [("0.5", f.p50), ("0.9", f.p90), ("0.99", f.p99)] {
                    w.sample(name, &[("disk", disk), ("quantile", q)], v.as_secs_f64());
                }
                w.sample(&format!("{name}_sum"), &[("disk", disk)], f.sum.as_secs_f64());
                w.sample(&format!("{name}_count"), &[("disk", disk)], f.samples);
            }
        }
        if let Some(at) = self.last_audit {
            w.family("vakt_check_findings", Kind::Gauge, "Findings of the last periodic audit, by state.");
            for (state, n) in &self.findings {
                w.sample("vakt_check_findings", &[("state", state)], n);
            }
            w.single("vakt_check_last_run_timestamp_seconds", Kind::Gauge, "When the last periodic audit ran.", at);
        }
        w.into_text()
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
        assert!(!text.contains("vakt_disk_read_latency_seconds"), "no probe, no latency");
    }

    #[test]
    fn disk_latency_is_a_summary() {
        let ms = std::time::Duration::from_micros;
        let f = crate::resource::probe::Figures {
            reads: 900,
            samples: 800,
            p50: ms(250),
            p90: ms(400),
            p99: ms(1500),
            sum: ms(240_000),
            iops: 900.0,
            elapsed: ms(1_000_000),
            rounds: 1,
        };
        let text = Metrics { disks: vec![("vda".into(), f)], ..Default::default() }.render();
        for line in [
            "# TYPE vakt_disk_read_latency_seconds summary",
            "vakt_disk_read_latency_seconds{disk=\"vda\",quantile=\"0.5\"} 0.00025",
            "vakt_disk_read_latency_seconds{disk=\"vda\",quantile=\"0.99\"} 0.0015",
            "vakt_disk_read_latency_seconds_sum{disk=\"vda\"} 0.24",
            "vakt_disk_read_latency_seconds_count{disk=\"vda\"} 800",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
