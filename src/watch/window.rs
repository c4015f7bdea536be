//! The moving window of samples, the alarms with hysteresis, and the [`Monitor`] that feeds
//! one interval's figures through both.

use std::collections::VecDeque;

use super::cpu::{Ticks, Usage};
use super::limits::{Checked, MAX_WINDOW_SAMPLES};
use crate::profile::Watch as Settings;

/// The last `capacity` intervals; averages are over summed ticks, so they are exact shares.
#[derive(Debug)]
pub struct Window {
    samples: VecDeque<Ticks>,
    capacity: usize,
}

impl Window {
    /// Memory grows with the samples actually taken, never with the capacity asked for, and the
    /// capacity is bounded whatever the caller computed.
    pub fn new(capacity: usize) -> Window {
        Window { samples: VecDeque::new(), capacity: capacity.clamp(1, MAX_WINDOW_SAMPLES) }
    }

    /// Keeps the newest samples that fit the new capacity.
    pub fn resize(&mut self, capacity: usize) {
        self.capacity = capacity.clamp(1, MAX_WINDOW_SAMPLES);
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
    pub fn new(c: &Checked) -> Monitor {
        let s = &c.settings;
        Monitor {
            window: Window::new(c.window_samples),
            steal: Alarm::new(s.steal_warn, s.steal_clear),
            iowait: Alarm::new(s.iowait_warn, s.iowait_clear),
            settings: s.clone(),
        }
    }

    /// Applies reloaded settings: the window keeps its newest samples, raised alarms stay
    /// raised (they clear by the new thresholds), so a reload neither forgets nor repeats.
    pub fn reconfigure(&mut self, c: &Checked) {
        let s = &c.settings;
        self.window.resize(c.window_samples);
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

    #[test]
    fn window_averages_over_its_capacity() {
        let mut w = Window::new(2);
        for steal in [100, 0, 10] {
            w.push(Ticks { steal, iowait: 0, total: 100 });
        }
        assert_eq!(w.total().steal_pct(), 5.0);
    }

    #[test]
    fn an_absurd_capacity_is_bounded_and_resizing_keeps_the_newest() {
        let mut w = Window::new(usize::MAX);
        assert_eq!(w.capacity, MAX_WINDOW_SAMPLES);
        for steal in [100, 0, 10] {
            w.push(Ticks { steal, iowait: 0, total: 100 });
        }
        w.resize(2);
        assert_eq!(w.total().steal_pct(), 5.0);
        w.resize(0);
        assert_eq!(w.total().steal_pct(), 10.0);
    }

    fn checked() -> Checked {
        let s = crate::profile::parse(
            "t",
            "[watch]\ninterval = \"1s\"\nwindow = \"3s\"\nsteal_warn = 10.0\nsteal_clear = 5.0\n",
        )
        .expect("valid")
        .watch
        .expect("watch");
        super::super::limits::check(&s, None).expect("usable")
    }

    #[test]
    fn scripted_samples_give_one_warning_and_one_recovery() {
        let mut monitor = Monitor::new(&checked());
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
