//! The moving window of samples and the alarms with hysteresis.

use std::collections::VecDeque;

use super::cpu::Ticks;

/// The last `capacity` intervals; averages are over summed ticks, so they are exact shares.
#[derive(Debug)]
pub struct Window {
    samples: VecDeque<Ticks>,
    capacity: usize,
}

impl Window {
    pub fn new(capacity: usize) -> Window {
        Window { samples: VecDeque::with_capacity(capacity.max(1)), capacity: capacity.max(1) }
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

#[cfg(test)]
mod tests {
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
}
