//! Sampling: reads /proc/stat and /proc/pressure on a blocking thread every interval and turns
//! two successive reads into one interval's figures. A read that fails, or yields nothing to
//! measure, is sent as an error and never as a sample of zeros.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;

use super::cpu::{self, CpuSample, Usage};
use super::psi::{self, Pressure};
use crate::profile::units::format_duration;

/// One completed sample, sent from the sampler to the service loop.
#[derive(Debug)]
pub struct Sample {
    pub usage: Usage,
    pub pressure: [Option<Pressure>; 3],
}

/// Kernel interfaces, read plainly: a read that hangs here is a hung kernel interface, which
/// is what the watchdog exists to report (the loop stops pinging and systemd restarts it), so
/// it is not refused the way a hostile file under /etc is (`fsutil::read_text`).
fn read_sample(stat: &Path, pressure_dir: &Path) -> anyhow::Result<(CpuSample, [Option<Pressure>; 3])> {
    let text = std::fs::read_to_string(stat).with_context(|| format!("failed to read {}", stat.display()))?;
    let sample = cpu::parse_stat(&text);
    if sample.per_cpu.is_empty() {
        anyhow::bail!("{} has no cpuN lines; steal and I/O wait cannot be measured", stat.display());
    }
    let psi = psi::RESOURCES.map(|r| std::fs::read_to_string(pressure_dir.join(r)).ok().and_then(|t| psi::parse(&t)));
    Ok((sample, psi))
}

/// The figures between two reads, or why there are none: no CPU in common (every CPU id
/// changed) or counters that did not move would both read as a calm 0 %.
fn measure(stat: &Path, prev: &CpuSample, cur: &CpuSample, elapsed: Duration) -> anyhow::Result<Usage> {
    let usage = cpu::usage(prev, cur, elapsed.as_secs_f64());
    if usage.cpus == 0 {
        anyhow::bail!(
            "no CPU of {} appears in two successive reads; steal and I/O wait cannot be measured",
            stat.display()
        );
    }
    if usage.system.total == 0 {
        anyhow::bail!(
            "the CPU counters in {} did not advance in {}; steal and I/O wait cannot be measured",
            stat.display(),
            format_duration(elapsed)
        );
    }
    Ok(usage)
}

/// Reads every interval and sends completed samples (or errors) until the receiver is gone.
/// If a read hangs, nothing arrives, and the watchdog pings stop.
pub async fn run(stat: PathBuf, pressure_dir: PathBuf, interval: Duration, tx: mpsc::Sender<anyhow::Result<Sample>>) {
    let mut previous: Option<(CpuSample, Instant)> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let (s, p) = (stat.clone(), pressure_dir.clone());
        let read = tokio::task::spawn_blocking(move || read_sample(&s, &p)).await;
        let now = Instant::now();
        let result = match read {
            Ok(Ok((sample, pressure))) => {
                let done = previous.as_ref().map(|(prev, at)| {
                    measure(&stat, prev, &sample, now.duration_since(*at)).map(|usage| Sample { usage, pressure })
                });
                previous = Some((sample, now));
                match done {
                    Some(d) => d,
                    None => continue,
                }
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("the sampler failed: {e}")),
        };
        if tx.send(result).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(a: &str, b: &str) -> Result<Usage, String> {
        measure(Path::new("/proc/stat"), &cpu::parse_stat(a), &cpu::parse_stat(b), Duration::from_secs(1))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn counters_that_did_not_move_are_no_measurement() {
        let e = measured("cpu0 1 0 1 1 0 0 0 0\n", "cpu0 1 0 1 1 0 0 0 0\n").expect_err("no figures");
        assert_eq!(e, "the CPU counters in /proc/stat did not advance in 1s; steal and I/O wait cannot be measured");
        let e = measured("cpu0 1 0 1 1 0 0 0 0\n", "cpu1 9 0 9 9 0 0 0 0\n").expect_err("no figures");
        assert!(e.starts_with("no CPU of /proc/stat appears in two successive reads"), "{e}");
        assert_eq!(
            measured("cpu0 1 0 1 1 0 0 0 0\n", "cpu0 1 0 1 51 0 0 0 50\n").map(|u| u.system.steal_pct()),
            Ok(50.0)
        );
    }

    #[test]
    fn a_stat_without_cpu_lines_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stat = dir.path().join("stat");
        std::fs::write(&stat, "intr 1 2\nctxt 3\n").expect("write");
        let e = read_sample(&stat, dir.path()).map(|_| ()).expect_err("garbled");
        assert!(e.to_string().ends_with("stat has no cpuN lines; steal and I/O wait cannot be measured"), "{e}");
    }
}
