//! The Prometheus endpoint: gauges and counters named to sit beside node_exporter's.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Labels = Vec<(&'static str, String)>;
type GaugeF = Gauge<f64, AtomicU64>;

#[derive(Clone, Default)]
pub struct Metrics {
    pub steal: GaugeF,
    pub iowait: GaugeF,
    pub steal_window: GaugeF,
    pub iowait_window: GaugeF,
    pub worst: Family<Labels, GaugeF>,
    pub pressure: Family<Labels, GaugeF>,
    pub alarm: Family<Labels, Gauge>,
    pub samples: Counter,
    pub findings: Family<Labels, Gauge>,
    pub last_audit: GaugeF,
}

impl Metrics {
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("vakt");
        r.register(
            "cpu_steal_ratio",
            "Share of CPU time stolen by the hypervisor over the last interval",
            self.steal.clone(),
        );
        r.register(
            "cpu_iowait_ratio",
            "Share of CPU time spent waiting for I/O over the last interval",
            self.iowait.clone(),
        );
        r.register(
            "cpu_steal_window_ratio",
            "Share of CPU time stolen over the alarm window",
            self.steal_window.clone(),
        );
        r.register(
            "cpu_iowait_window_ratio",
            "Share of CPU time in I/O wait over the alarm window",
            self.iowait_window.clone(),
        );
        r.register(
            "cpu_worst_ratio",
            "The worst single CPU's share over the last interval, by mode",
            self.worst.clone(),
        );
        r.register(
            "pressure_avg10_ratio",
            "Pressure stall information, 10 s average, by resource and kind",
            self.pressure.clone(),
        );
        r.register("alarm_active", "Whether an alarm is raised (1) or not (0)", self.alarm.clone());
        r.register("samples", "Samples of /proc/stat taken", self.samples.clone());
        r.register("check_findings", "Findings of the last periodic audit, by state", self.findings.clone());
        r.register("check_last_run_timestamp_seconds", "When the last periodic audit ran", self.last_audit.clone());
        r
    }
}

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn render(registry: &Registry) -> String {
    let mut body = String::new();
    let _ = encode(&mut body, registry);
    body
}

/// Serves `GET /metrics` until the task is dropped.
pub async fn serve(listener: TcpListener, registry: Arc<Mutex<Registry>>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let registry = registry.clone();
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
            let request = String::from_utf8_lossy(&buf[..len]);
            let reply = if request.starts_with("GET /metrics ") {
                let body = registry.lock().map(|r| render(&r)).unwrap_or_default();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 21\r\nConnection: close\r\n\r\ntry GET /metrics\r\n\r\n"
                    .to_string()
            };
            let _ = stream.write_all(reply.as_bytes()).await;
        });
    }
}
