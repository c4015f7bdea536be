//! `vakt watch`: samples CPU steal, I/O wait and pressure, raises and clears alarms with
//! hysteresis, and reports to journald, systemd (sd_notify) and Prometheus.
//!
//! `sampler` reads /proc, `window` keeps the moving window and alarms, `events` logs and
//! reports, `metrics` and `http` serve Prometheus, `limits` checks settings before use, and
//! `service` runs it all and applies reloads.

pub mod cpu;
mod events;
mod http;
mod latency;
mod limits;
mod metrics;
pub mod psi;
mod sampler;
mod service;
mod window;
mod workload;

pub use events::message_id;
pub use service::run;
