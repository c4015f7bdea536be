//! The moving window of samples, the alarms with hysteresis, and the [`Monitor`] that feeds
//! one interval's figures through both.

use std::collections::VecDeque;

use super::cpu::{Ticks, Usage};
use crate::profile::{Samples, Watch as Settings};

/// The last `capacity` intervals; averages are over summed ticks, so they are exact shares.
#[derive(Debug)]
pub struct Window {
    samples: VecDeque<Ticks>,
    capacity: usize,
}

impl Window {
    /// Memory grows with the samples actually taken, never with the capacity asked for.
    pub fn new(capacity: Samples) -> Window {
        Window { samples: VecDeque::new(), capacity: capacity.get() }
    }

    /// Keeps the newest samples that fit the new capacity.
    pub fn resize(&mut self, capacity: Samples) {
        self.capacity = capacity.get();
        let excess = self.samples.len().saturating_sub(self.capacity);
        self.samples.drain(..excess);
        self.samples.shrink_to_fit();
    }

    pub fn push(&mut self, t: Ticks) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(t);
    }

    pub fn total(&self) -> Ticks {
        let mut sum = Ticks::default();
        for t in &self.samples {
            sum.add(*t);
        }
        sum
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Raised,
    Cleared,
}

/// Raised when the value reaches `warn`, cleared only when it falls below `clear`.
#[derive(Debug, Clone, Copy)]
pub struct Alarm {
    pub warn: f64,
    pub clear: f64,
    pub active: bool,
}

impl Alarm {
    pub fn new(warn: f64, clear: f64) -> Alarm {
        Alarm { warn, clear, active: false }
    }

    pub fn update(&mut self, value: f64) -> Option<Transition> {
        if !self.active && value >= self.warn {
            self.active = true;
            Some(Transition::Raised)
        } else if self.active && value < self.clear {
            self.active = false;
            Some(Transition::Cleared)
        } else {
            None
        }
    }
}

/// The figures and alarms, updated per sample. Pure apart from the clock it is given.
#[derive(Debug)]
pub struct Monitor {
    pub settings: Settings,
    window: Window,
    steal: Alarm,
    iowait: Alarm,
}

/// What one sample means, ready to log and report.
#[derive(Debug)]
pub struct Reading {
    pub usage: Usage,
    pub window_steal: f64,
    pub window_iowait: f64,
    pub transitions: Vec<(&'static str, Transition)>,
    pub steal_alarm: bool,
    pub iowait_alarm: bool,
}

impl Monitor {
    pub fn new(s: &Settings) -> Monitor {
        Monitor {
            window: Window::new(s.samples),
            steal: Alarm::new(s.steal_warn, s.steal_clear),
            iowait: Alarm::new(s.iowait_warn, s.iowait_clear),
            settings: s.clone(),
        }
    }

    /// Applies reloaded settings: the window keeps its newest samples, raised alarms stay
    /// raised (they clear by the new thresholds), so a reload neither forgets nor repeats.
    pub fn reconfigure(&mut self, s: &Settings) {
        self.window.resize(s.samples);
        self.steal = Alarm { active: self.steal.active, ..Alarm::new(s.steal_warn, s.steal_clear) };
        self.iowait = Alarm { active: self.iowait.active, ..Alarm::new(s.iowait_warn, s.iowait_clear) };
        self.settings = s.clone();
    }

    pub fn observe(&mut self, usage: Usage) -> Reading {
        self.window.push(usage.system);
        let w = self.window.total();
        let mut transitions = Vec::new();
        if let Some(t) = self.steal.update(w.steal_pct()) {
            transitions.push(("steal", t));
        }
        if let Some(t) = self.iowait.update(w.iowait_pct()) {
            transitions.push(("iowait", t));
        }
        Reading {
            usage,
            window_steal: w.steal_pct(),
            window_iowait: w.iowait_pct(),
            transitions,
            steal_alarm: self.steal.active,
            iowait_alarm: self.iowait.active,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::cpu;
    use super::*;

    #[test]
    fn hysteresis_gives_one_warning_and_one_recovery() {
        let mut a = Alarm::new(10.0, 5.0);
        let seq = [1.0, 4.0, 11.0, 9.0, 12.0, 6.0, 5.5, 10.5, 4.9, 6.0, 9.9, 2.0];
        let events: Vec<_> = seq.iter().filter_map(|v| a.update(*v)).collect();
        assert_eq!(events, vec![Transition::Raised, Transition::Cleared]);
    }

    fn samples(n: u32) -> Samples {
        let interval = crate::profile::Interval::new(std::time::Duration::from_secs(1)).expect("1s");
        Samples::of(std::time::Duration::from_secs(n.into()), interval).expect("in range")
    }

    #[test]
    fn window_averages_over_its_capacity() {
        let mut w = Window::new(samples(2));
        for steal in [100, 0, 10] {
            w.push(Ticks { steal, iowait: 0, total: 100 });
        }
        assert_eq!(w.total().steal_pct(), 5.0);
    }

    #[test]
    fn resizing_keeps_the_newest() {
        let mut w = Window::new(samples(3));
        for steal in [100, 0, 10] {
            w.push(Ticks { steal, iowait: 0, total: 100 });
        }
        w.resize(samples(2));
        assert_eq!(w.total().steal_pct(), 5.0);
        w.resize(samples(1));
        assert_eq!(w.total().steal_pct(), 10.0);
    }

    /// The profile's bound on the window is stated in bytes: 24 per sample.
    #[test]
    fn a_sample_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Ticks>(), 24);
    }

    fn settings() -> Settings {
        crate::profile::parse(
            "t",
            "[watch]\ninterval = \"1s\"\nwindow = \"3s\"\nsteal_warn = 10.0\nsteal_clear = 5.0\n",
        )
        .expect("valid")
        .watch
        .expect("watch")
    }

    #[test]
    fn scripted_samples_give_one_warning_and_one_recovery() {
        let mut monitor = Monitor::new(&settings());
        // Steal per interval, in ticks out of 100: calm, a noisy neighbour, calm again.
        let steal = [0u64, 1, 30, 40, 20, 8, 12, 9, 2, 1, 0, 6, 9, 1];
        let mut counters = [0u64; 8];
        let mut prev = cpu::parse_stat("cpu0 0 0 0 0 0 0 0 0\n");
        let mut events = Vec::new();
        for s in steal {
            counters[0] += 100 - s;
            counters[7] += s;
            let line = counters.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
            let cur = cpu::parse_stat(&format!("cpu0 {line}\n"));
            let reading = monitor.observe(cpu::usage(&prev, &cur, 1.0));
            events.extend(reading.transitions);
            prev = cur;
        }
        assert_eq!(events, vec![("steal", Transition::Raised), ("steal", Transition::Cleared)]);
    }
}
