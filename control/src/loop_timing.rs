//! Where one pass of the daemon's event loop spent its time, phase by phase; a pass that took long is logged with its phases, so an operator sees what held events back.

use std::time::{Duration, Instant};

/// A pass whose work (not its wait for events) took longer is logged.
pub const SLOW: Duration = Duration::from_millis(50);

/// The phases of one pass, in order.
pub struct Phases {
    last: Instant,
    marks: Vec<(&'static str, Duration)>,
}

impl Default for Phases {
    fn default() -> Self {
        Self::new()
    }
}

impl Phases {
    pub fn new() -> Self {
        Phases {
            last: Instant::now(),
            marks: Vec::with_capacity(6),
        }
    }

    /// The phase `name` ended now.
    pub fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.marks.push((name, now - self.last));
        self.last = now;
    }

    /// The wait for events ended at `readable` (None: nothing came, the
    /// whole wait was idle): the time spent waiting is no phase's work.
    pub fn wait_ended(&mut self, readable: Option<Instant>) {
        self.last = readable.unwrap_or_else(Instant::now).max(self.last);
    }

    /// The work of the pass: every phase's time summed.
    pub fn total(&self) -> Duration {
        self.marks.iter().map(|m| m.1).sum()
    }

    /// `status 3.1 ms, sync 412.0 ms`: the phases that took any time.
    pub fn describe(&self) -> String {
        self.marks
            .iter()
            .filter(|m| m.1 >= Duration::from_micros(100))
            .map(|(n, d)| format!("{n} {:.1} ms", d.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Logs the pass if its work took longer than [`SLOW`].
    pub fn report(&self, changes: u64) {
        let total = self.total();
        if total > SLOW {
            tracing::warn!(
                "one pass of the event loop took {:.1} ms ({changes} netlink messages): {}",
                total.as_secs_f64() * 1e3,
                self.describe()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_for_events_is_no_phase() {
        let mut p = Phases::new();
        std::thread::sleep(Duration::from_millis(20));
        p.mark("status");
        let before_wait = Instant::now();
        std::thread::sleep(Duration::from_millis(30));
        // Events became readable 10 ms before the wait returned.
        p.wait_ended(Some(Instant::now() - Duration::from_millis(10)));
        p.mark("netlink read");
        let read = p.marks[1].1;
        assert!(read >= Duration::from_millis(10), "{read:?}");
        assert!(read < Duration::from_millis(25), "{read:?}");
        assert!(p.marks[0].1 >= Duration::from_millis(20));
        assert!(p.total() < before_wait.elapsed() + Duration::from_millis(20));
        assert!(p.describe().starts_with("status "), "{}", p.describe());
        assert!(p.describe().contains(", netlink read "), "{}", p.describe());
    }

    #[test]
    fn an_idle_wait_counts_nothing() {
        let mut p = Phases::new();
        std::thread::sleep(Duration::from_millis(15));
        p.wait_ended(None);
        p.mark("netlink read");
        assert!(p.total() < Duration::from_millis(5), "{:?}", p.total());
        assert_eq!(p.describe(), "");
    }
}
