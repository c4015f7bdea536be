//! The Prometheus endpoint: the classic text exposition format (what node_exporter serves and
//! `promtool check metrics` accepts), with names that sit beside node_exporter's.

use std::fmt::Write;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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

/// Serves `GET /metrics` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Mutex<Metrics>>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            while len < buf.len() {
                match tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf[len..])).await {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => len += n,
                }
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let reply = if buf[..len].starts_with(b"GET /metrics ") {
                let body = metrics.lock().map(|m| m.render()).unwrap_or_default();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 18\r\nConnection: close\r\n\r\ntry GET /metrics\r\n"
                    .to_string()
            };
            let _ = stream.write_all(reply.as_bytes()).await;
        });
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
