//! `/proc/stat` CPU counters and the steal / iowait maths. Pure: text in, percentages out.
//!
//! The system-wide figure is the sum over the CPUs present in both samples, not the aggregate
//! `cpu` line: when a CPU goes offline its counters leave the aggregate, which would then run
//! backwards. Every field's delta is clamped to what the elapsed time allows, so a counter
//! that decreases (iowait may, see proc(5)) or leaps (a kernel bug produced absurd steal)
//! never yields a figure below 0 % or above 100 %.

use std::collections::BTreeMap;

/// The fields of a `cpuN` line that partition CPU time, in /proc/stat order:
/// user nice system idle iowait irq softirq steal. guest and guest_nice are already counted
/// in user and nice, so they are left out of the total (as node_exporter does).
pub const FIELDS: usize = 8;
const IOWAIT: usize = 4;
const STEAL: usize = 7;

/// USER_HZ: /proc/stat counts in 1/100 s on every architecture Linux exports it for.
pub const TICKS_PER_SECOND: f64 = 100.0;

pub type Times = [u64; FIELDS];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuSample {
    pub per_cpu: BTreeMap<u32, Times>,
}

/// Parses the `cpuN` lines of /proc/stat; missing trailing fields (old kernels) count as 0.
pub fn parse_stat(text: &str) -> CpuSample {
    let mut per_cpu = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(id) = words.next().and_then(|w| w.strip_prefix("cpu")).and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let mut times = [0u64; FIELDS];
        for (slot, word) in times.iter_mut().zip(words) {
            *slot = word.parse().unwrap_or(0);
        }
        per_cpu.insert(id, times);
    }
    CpuSample { per_cpu }
}

/// Clamped tick deltas between two samples of one CPU.
fn delta(prev: &Times, cur: &Times, max_ticks: u64) -> Times {
    let mut d = [0u64; FIELDS];
    for i in 0..FIELDS {
        d[i] = cur[i].saturating_sub(prev[i]).min(max_ticks);
    }
    d
}

/// Ticks over one interval: steal, iowait and the total they are shares of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ticks {
    pub steal: u64,
    pub iowait: u64,
    pub total: u64,
}

impl Ticks {
    fn of(d: &Times) -> Ticks {
        Ticks { steal: d[STEAL], iowait: d[IOWAIT], total: d.iter().sum() }
    }

    pub fn add(&mut self, other: Ticks) {
        self.steal += other.steal;
        self.iowait += other.iowait;
        self.total += other.total;
    }

    pub fn steal_pct(&self) -> f64 {
        pct(self.steal, self.total)
    }

    pub fn iowait_pct(&self) -> f64 {
        pct(self.iowait, self.total)
    }
}

fn pct(part: u64, total: u64) -> f64 {
    if total == 0 { 0.0 } else { (part as f64 * 100.0 / total as f64).clamp(0.0, 100.0) }
}

/// One interval's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub system: Ticks,
    /// The CPU with the most steal, and its percentage.
    pub worst_steal: Option<(u32, f64)>,
    pub worst_iowait: Option<(u32, f64)>,
    pub cpus: usize,
}

/// Usage between two samples taken `elapsed_secs` apart.
pub fn usage(prev: &CpuSample, cur: &CpuSample, elapsed_secs: f64) -> Usage {
    // A little slack over the wall clock: the two reads are not instantaneous.
    let max_ticks = (elapsed_secs.max(0.0) * TICKS_PER_SECOND * 1.25 + 2.0) as u64;
    let mut system = Ticks::default();
    let mut worst_steal: Option<(u32, f64)> = None;
    let mut worst_iowait: Option<(u32, f64)> = None;
    let mut cpus = 0;
    for (id, now) in &cur.per_cpu {
        let Some(before) = prev.per_cpu.get(id) else { continue };
        let t = Ticks::of(&delta(before, now, max_ticks));
        system.add(t);
        cpus += 1;
        if worst_steal.is_none_or(|(_, p)| t.steal_pct() > p) {
            worst_steal = Some((*id, t.steal_pct()));
        }
        if worst_iowait.is_none_or(|(_, p)| t.iowait_pct() > p) {
            worst_iowait = Some((*id, t.iowait_pct()));
        }
    }
    Usage { system, worst_steal, worst_iowait, cpus }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(lines: &[&str]) -> CpuSample {
        parse_stat(&format!("cpu  0 0 0 0 0 0 0 0 0 0\n{}\nintr 1 2 3\nctxt 99\n", lines.join("\n")))
    }

    #[test]
    fn normal_interval() {
        let a = stat(&["cpu0 100 0 50 800 10 0 0 0 0 0", "cpu1 100 0 50 800 10 0 0 0 0 0"]);
        let b = stat(&["cpu0 150 0 70 920 20 0 0 0 0 0", "cpu1 120 0 60 970 10 0 0 0 0 0"]);
        let u = usage(&a, &b, 2.0);
        assert_eq!(u.system.total, 400);
        assert_eq!(u.system.iowait, 10);
        assert!((u.system.iowait_pct() - 2.5).abs() < 1e-9);
        assert_eq!(u.worst_iowait, Some((0, 5.0)));
        assert_eq!(u.system.steal_pct(), 0.0);
    }

    #[test]
    fn steal_heavy() {
        let a = stat(&["cpu0 0 0 0 0 0 0 0 0 0 0"]);
        let b = stat(&["cpu0 30 0 10 20 0 0 0 40 0 0"]);
        let u = usage(&a, &b, 1.0);
        assert!((u.system.steal_pct() - 40.0).abs() < 1e-9);
        assert_eq!(u.worst_steal, Some((0, 40.0)));
    }

    #[test]
    fn iowait_going_backwards_is_clamped_to_zero() {
        let a = stat(&["cpu0 100 0 0 100 500 0 0 0 0 0"]);
        let b = stat(&["cpu0 150 0 0 150 480 0 0 0 0 0"]);
        let u = usage(&a, &b, 1.0);
        assert_eq!(u.system.iowait, 0);
        assert_eq!(u.system.total, 100);
    }

    #[test]
    fn absurd_steal_stays_within_bounds() {
        let a = stat(&["cpu0 100 0 0 100 0 0 0 5 0 0"]);
        let b = stat(&["cpu0 150 0 0 150 0 0 0 18446744073709551000 0 0"]);
        let u = usage(&a, &b, 1.0);
        let s = u.system.steal_pct();
        assert!((0.0..=100.0).contains(&s), "{s}");
        assert!(u.system.steal <= 127, "clamped to the interval: {}", u.system.steal);
    }

    #[test]
    fn a_cpu_appearing_or_vanishing_does_not_break_the_deltas() {
        let a = stat(&["cpu0 100 0 0 100 0 0 0 0 0 0"]);
        let b = stat(&["cpu0 150 0 0 140 10 0 0 0 0 0", "cpu1 999999 0 0 999999 99999 0 0 0 0 0"]);
        let u = usage(&a, &b, 1.0);
        assert_eq!((u.cpus, u.system.total, u.system.iowait), (1, 100, 10));
        let c = stat(&["cpu1 999999 0 0 1000099 99999 0 0 0 0 0"]);
        let u = usage(&b, &c, 1.0);
        assert_eq!((u.cpus, u.system.total), (1, 100));
    }

    #[test]
    fn short_lines_of_old_kernels_parse() {
        let s = parse_stat("cpu0 1 2 3 4\n");
        assert_eq!(s.per_cpu[&0], [1, 2, 3, 4, 0, 0, 0, 0]);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn times() -> impl Strategy<Value = Times> {
        prop::array::uniform8(prop_oneof![any::<u64>(), 0u64..10_000])
    }

    proptest! {
        #[test]
        fn shares_stay_within_0_and_100(a in prop::collection::vec(times(), 1..4), b in prop::collection::vec(times(), 1..4), secs in 0.0f64..100.0) {
            let sample = |v: &Vec<Times>| CpuSample { per_cpu: v.iter().enumerate().map(|(i, t)| (i as u32, *t)).collect() };
            let u = usage(&sample(&a), &sample(&b), secs);
            for p in [u.system.steal_pct(), u.system.iowait_pct(), u.worst_steal.map_or(0.0, |w| w.1), u.worst_iowait.map_or(0.0, |w| w.1)] {
                prop_assert!((0.0..=100.0).contains(&p), "{p}");
            }
        }

        #[test]
        fn parsing_never_panics(text in "\\PC{0,200}") {
            let _ = parse_stat(&text);
        }
    }
}
