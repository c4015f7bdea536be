//! The workload beside the host (`[watch.workload]`): the gateway's invocation rate and service
//! count, asked of Prometheus every `every`, and the judgement an operator wants at 3 a.m.:
//! when invocations fall while the functions are still deployed, is it the host (iowait, I/O
//! pressure or steal above their thresholds: a **bottleneck**, an alarm) or less traffic (a
//! **quiet** spell, information only)?
//!
//! The client is bounded: a timeout for each question, a cap on the answer's size, and its own
//! task, so an unreachable, slow or garbled Prometheus costs the sampler nothing.

use std::collections::VecDeque;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::profile::{PromUrl, Workload};

/// One answer: both figures, or why there are none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// Invocations per second.
    pub rate: f64,
    pub services: f64,
}

/// Asks every `every` and sends each answer until the receiver is gone.
pub async fn run(w: Workload, tx: mpsc::Sender<Result<Figures, String>>) {
    let mut ticker = tokio::time::interval(*w.every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let answer = ask(&w).await;
        if tx.send(answer).await.is_err() {
            return;
        }
    }
}

/// Both queries, each within the timeout.
pub async fn ask(w: &Workload) -> Result<Figures, String> {
    let rate = query(w, &w.rate_query).await.map_err(|e| format!("invocation rate: {e}"))?;
    let services = query(w, &w.services_query).await.map_err(|e| format!("service count: {e}"))?;
    Ok(Figures { rate, services })
}

async fn query(w: &Workload, promql: &str) -> Result<f64, String> {
    let url = &w.prometheus;
    match tokio::time::timeout(w.timeout, get(url, &query_path(url, promql), w.max_body)).await {
        Ok(Ok(body)) => value(&body),
        Ok(Err(e)) => Err(format!("{}: {e}", url.shown())),
        Err(_) => {
            Err(format!("{} did not answer within {}", url.shown(), crate::profile::units::format_duration(w.timeout)))
        }
    }
}

fn query_path(url: &PromUrl, promql: &str) -> String {
    let mut encoded = String::new();
    for b in promql.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{}/api/v1/query?query={encoded}", url.prefix)
}

/// One HTTP/1.1 GET; the body is read up to `limit` bytes, a longer one is an error.
async fn get(url: &PromUrl, path: &str, limit: usize) -> Result<Bytes, String> {
    let host = url.host.trim_start_matches('[').trim_end_matches(']');
    let stream = TcpStream::connect((host, url.port)).await.map_err(|e| format!("cannot connect: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header(hyper::header::HOST, format!("{}:{}", url.host, url.port));
    if let Some(c) = &url.credentials {
        req = req.header(
            hyper::header::AUTHORIZATION,
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(c)),
        );
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let res = sender.send_request(req).await.map_err(|e| e.to_string());
    let body = match res {
        Ok(res) if res.status().is_success() => {
            Limited::new(res.into_body(), limit).collect().await.map(|b| b.to_bytes()).map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    format!("the answer is over {limit} bytes")
                } else {
                    e.to_string()
                }
            })
        }
        Ok(res) => Err(format!("HTTP {}", res.status())),
        Err(e) => Err(e),
    };
    conn.abort();
    body
}

/// The one number of a query's answer: an instant vector's single sample, or a scalar. An
/// empty vector (no series: no invocations at all yet) is 0.
fn value(body: &[u8]) -> Result<f64, String> {
    let doc: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("not a Prometheus answer: {e}"))?;
    if doc["status"] != "success" {
        let why = doc["error"].as_str().unwrap_or("no status");
        return Err(format!("Prometheus refused the query: {}", crate::escape::controls(why)));
    }
    let data = &doc["data"];
    let pair = match (data["resultType"].as_str(), &data["result"]) {
        (Some("vector"), serde_json::Value::Array(v)) if v.is_empty() => return Ok(0.0),
        (Some("vector"), serde_json::Value::Array(v)) if v.len() == 1 => &v[0]["value"],
        (Some("vector"), serde_json::Value::Array(v)) => {
            return Err(format!("the query gives {} series; sum() it to one", v.len()));
        }
        (Some("scalar"), pair) => pair,
        _ => return Err("the answer is neither an instant vector nor a scalar".into()),
    };
    pair[1]
        .as_str()
        .and_then(|t| t.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| "the answer's value is not a finite number of at least 0".into())
}

/// What the host's own figures say when the workload's are judged.
#[derive(Debug, Clone, Default)]
pub struct HostSignals {
    pub iowait_pct: f64,
    pub steal_pct: f64,
    /// I/O pressure, `some` avg10, percent; `None` without PSI.
    pub io_pressure: Option<f64>,
    /// The slowest disk's last p99 read latency, when disk latency is measured.
    pub disk_p99: Option<(String, Duration)>,
}

/// The thresholds the host's figures are held to.
#[derive(Debug, Clone, Copy)]
pub struct HostLimits {
    pub iowait_warn: f64,
    pub iowait_clear: f64,
    pub steal_warn: f64,
    pub steal_clear: f64,
    pub io_pressure_warn: f64,
    pub latency_warn: Duration,
}

impl HostLimits {
    /// The first host figure over its warning threshold, worded for the event.
    fn culprit(&self, h: &HostSignals) -> Option<String> {
        if h.iowait_pct >= self.iowait_warn {
            return Some(format!("iowait rose to {:.1} % (warn {} %)", h.iowait_pct, self.iowait_warn));
        }
        if let Some(p) = h.io_pressure.filter(|p| *p >= self.io_pressure_warn) {
            return Some(format!("I/O pressure rose to {p:.1} % (warn {} %)", self.io_pressure_warn));
        }
        if h.steal_pct >= self.steal_warn {
            return Some(format!("steal rose to {:.1} % (warn {} %)", h.steal_pct, self.steal_warn));
        }
        if let Some((disk, p99)) = h.disk_p99.as_ref().filter(|(_, p99)| *p99 >= self.latency_warn) {
            return Some(format!(
                "{disk}'s p99 read latency rose to {:.1} ms (warn {:.1} ms)",
                p99.as_secs_f64() * 1000.0,
                self.latency_warn.as_secs_f64() * 1000.0
            ));
        }
        None
    }

    fn calm(&self, h: &HostSignals) -> bool {
        h.iowait_pct < self.iowait_clear
            && h.steal_pct < self.steal_clear
            && h.io_pressure.is_none_or(|p| p < self.io_pressure_warn / 2.0)
            && h.disk_p99.as_ref().is_none_or(|(_, p99)| *p99 < self.latency_warn / 2)
    }
}

/// A change worth an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The rate fell with the services still deployed and a host figure over its threshold.
    Bottleneck(String),
    Cleared(String),
    /// The rate fell and the host is calm: less traffic.
    Quiet(String),
}

/// The recent answers and the alarm, with hysteresis: a bottleneck is raised once and cleared
/// once, when the rate is back above half the fall or the host is calm again.
#[derive(Debug)]
pub struct Judge {
    history: VecDeque<Figures>,
    capacity: usize,
    fall: f64,
    every: Duration,
    pub bottleneck: bool,
    quiet: bool,
    pub last: Option<Figures>,
    pub baseline: Option<f64>,
}

impl Judge {
    pub fn new(w: &Workload) -> Judge {
        Judge {
            history: VecDeque::new(),
            capacity: w.baseline,
            fall: w.fall,
            every: *w.every,
            bottleneck: false,
            quiet: false,
            last: None,
            baseline: None,
        }
    }

    /// Takes one answer with the host's figures of the moment.
    pub fn observe(&mut self, f: Figures, host: &HostSignals, limits: &HostLimits) -> Option<Event> {
        let n = self.history.len();
        let (rate, services) = self.history.iter().fold((0.0, 0.0), |(r, s), h| (r + h.rate, s + h.services));
        let baseline = (n > 0).then(|| (rate / n as f64, services / n as f64));
        self.last = Some(f);
        self.baseline = baseline.map(|b| b.0);
        let fell = baseline.filter(|(rate, services)| {
            *rate > 0.0 && f.rate <= rate * (1.0 - self.fall) && f.services > 0.0 && f.services >= services * 0.9
        });
        let span = crate::profile::units::format_duration(self.every * n as u32);
        let event = match (fell, self.bottleneck) {
            (Some((rate, _)), false) => match limits.culprit(host) {
                Some(why) => {
                    self.bottleneck = true;
                    Some(Event::Bottleneck(format!(
                        "invocations fell {:.0} % against the last {span} ({:.2}/s, baseline {rate:.2}/s) with {} services deployed, while {why}",
                        (1.0 - f.rate / rate) * 100.0,
                        f.rate,
                        f.services
                    )))
                }
                None if !self.quiet => {
                    self.quiet = true;
                    Some(Event::Quiet(format!(
                        "invocations fell {:.0} % against the last {span} ({:.2}/s, baseline {rate:.2}/s) with the host calm: less traffic, not a bottleneck",
                        (1.0 - f.rate / rate) * 100.0,
                        f.rate
                    )))
                }
                None => None,
            },
            (_, true) => {
                let recovered = baseline.is_some_and(|(rate, _)| f.rate > rate * (1.0 - self.fall / 2.0));
                (recovered || limits.calm(host)).then(|| {
                    self.bottleneck = false;
                    let why = if recovered { "invocations are back" } else { "the host is calm again" };
                    Event::Cleared(format!("bottleneck over: {why} ({:.2}/s)", f.rate))
                })
            }
            (None, false) => {
                self.quiet = false;
                None
            }
        };
        // The baseline learns while no bottleneck holds it: a host at fault must not teach it
        // that the fallen rate is normal.
        if !self.bottleneck {
            if self.history.len() == self.capacity {
                self.history.pop_front();
            }
            self.history.push_back(f);
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> Workload {
        let text = "[watch]\n[watch.workload]\nevery = \"1s\"\ntimeout = \"500ms\"\nbaseline = \"5s\"\nfall = 50.0\n";
        crate::profile::parse("t", text).expect("valid").watch.expect("watch").workload.expect("workload")
    }

    const LIMITS: HostLimits = HostLimits {
        iowait_warn: 20.0,
        iowait_clear: 10.0,
        steal_warn: 10.0,
        steal_clear: 5.0,
        io_pressure_warn: 20.0,
        latency_warn: Duration::from_millis(20),
    };

    fn run(judge: &mut Judge, rates: &[f64], host: HostSignals) -> Vec<Event> {
        rates.iter().filter_map(|r| judge.observe(Figures { rate: *r, services: 4.0 }, &host, &LIMITS)).collect()
    }

    #[test]
    fn a_fall_with_the_host_at_fault_is_a_bottleneck_once_then_clears() {
        let mut j = Judge::new(&workload());
        let busy = HostSignals { iowait_pct: 35.0, steal_pct: 1.0, io_pressure: Some(40.0), disk_p99: None };
        assert_eq!(run(&mut j, &[100.0, 100.0, 100.0], HostSignals::default()), vec![]);
        let events = run(&mut j, &[30.0, 25.0, 20.0], busy);
        assert_eq!(events.len(), 1, "{events:?}");
        let Event::Bottleneck(text) = &events[0] else { panic!("{events:?}") };
        assert!(text.contains("fell 70 %") && text.contains("iowait rose to 35.0 %"), "{text}");
        assert!(j.bottleneck);
        let events = run(&mut j, &[95.0], HostSignals::default());
        assert!(matches!(&events[..], [Event::Cleared(t)] if t.contains("invocations are back")), "{events:?}");
    }

    #[test]
    fn a_slow_disk_is_a_host_signal_too() {
        let mut j = Judge::new(&workload());
        let slow = HostSignals { disk_p99: Some(("vda".into(), Duration::from_millis(35))), ..Default::default() };
        let events = run(&mut j, &[100.0, 100.0, 20.0], slow);
        assert!(
            matches!(&events[..], [Event::Bottleneck(t)] if t.contains("vda's p99 read latency rose to 35.0 ms (warn 20.0 ms)")),
            "{events:?}"
        );
    }

    #[test]
    fn a_fall_with_a_calm_host_is_quiet_and_raises_nothing() {
        let mut j = Judge::new(&workload());
        let events = run(&mut j, &[100.0, 100.0, 100.0, 30.0, 25.0], HostSignals::default());
        assert!(matches!(&events[..], [Event::Quiet(t)] if t.contains("less traffic")), "{events:?}");
        assert!(!j.bottleneck);
    }

    #[test]
    fn fewer_services_or_no_baseline_is_no_fall() {
        let mut j = Judge::new(&workload());
        let busy = HostSignals { iowait_pct: 50.0, ..Default::default() };
        assert_eq!(j.observe(Figures { rate: 0.0, services: 4.0 }, &busy, &LIMITS), None, "no baseline yet");
        let mut j = Judge::new(&workload());
        j.observe(Figures { rate: 100.0, services: 4.0 }, &busy, &LIMITS);
        assert_eq!(j.observe(Figures { rate: 10.0, services: 1.0 }, &busy, &LIMITS), None, "functions were removed");
    }

    #[test]
    fn answers_are_read_strictly() {
        let vector =
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"12.25"]}]}}"#;
        assert_eq!(value(vector), Ok(12.25));
        assert_eq!(value(br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#), Ok(0.0));
        assert_eq!(value(br#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"3"]}}"#), Ok(3.0));
        for bad in [
            &br#"{"status":"error","error":"parse error"}"#[..],
            br#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"NaN"]}]}}"#,
            br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            b"<html>",
        ] {
            assert!(value(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn queries_are_percent_encoded() {
        let w = workload();
        assert_eq!(
            query_path(&w.prometheus, "sum(rate(x{code=\"200\"}[1m]))"),
            "/api/v1/query?query=sum%28rate%28x%7Bcode%3D%22200%22%7D%5B1m%5D%29%29"
        );
    }
}
