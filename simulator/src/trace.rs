//! The event trace: a bounded ring of the last lines, printed with a violation so the failure
//! can be read without re-running anything.

use std::collections::VecDeque;

use crate::clock::{Ms, fmt_ms};

pub struct Trace {
    cap: usize,
    lines: VecDeque<String>,
}

impl Trace {
    pub fn new(cap: usize) -> Trace {
        Trace {
            cap,
            lines: VecDeque::with_capacity(cap),
        }
    }

    pub fn push(&mut self, at: Ms, line: String) {
        if self.lines.len() == self.cap {
            self.lines.pop_front();
        }
        self.lines.push_back(format!("{:>14}  {line}", fmt_ms(at)));
    }

    pub fn tail(&self, n: usize) -> Vec<String> {
        let skip = self.lines.len().saturating_sub(n);
        self.lines.iter().skip(skip).cloned().collect()
    }
}
