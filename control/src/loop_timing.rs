//! Where one pass of the daemon's event loop spent its time, phase by phase; a pass that took long is logged with its phases, so an operator sees what held events back.

use std::time::{Duration, Instant};

/// A pass whose work (not its wait for events) took longer is logged.
pub const SLOW: Duration = Duration::from_millis(50);

/// What the calling thread had used so far (getrusage RUSAGE_THREAD): a
/// slow pass's work less its CPU time is time the thread was off the CPU,
/// waiting for it (preempted), asleep in the kernel, or taken by the
/// hypervisor (steal, which the guest sees as neither).
#[derive(Clone, Copy, Default, Debug)]
pub struct ThreadUse {
    pub cpu: Duration,
    pub preempted: i64,
    pub slept: i64,
    pub faults: i64,
    pub major_faults: i64,
}

impl ThreadUse {
    pub fn now() -> Self {
        // SAFETY: getrusage only writes the struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
            return ThreadUse::default();
        }
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        ThreadUse {
            cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
            preempted: ru.ru_nivcsw,
            slept: ru.ru_nvcsw,
            faults: ru.ru_minflt + ru.ru_majflt,
            major_faults: ru.ru_majflt,
        }
    }

    /// What was used from `earlier` to `self`.
    pub fn since(&self, earlier: &ThreadUse) -> ThreadUse {
        ThreadUse {
            cpu: self.cpu.saturating_sub(earlier.cpu),
            preempted: self.preempted - earlier.preempted,
            slept: self.slept - earlier.slept,
            faults: self.faults - earlier.faults,
            major_faults: self.major_faults - earlier.major_faults,
        }
    }

    /// `on CPU 2.1 ms, off CPU 91.4 ms (preempted 3 times, slept 1 times),
    /// 12 page faults (0 major)` for a pass whose work took `work`.
    pub fn describe(&self, work: Duration) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "on CPU {:.1} ms, off CPU {:.1} ms (preempted {} times, slept {} times), {} page faults ({} major)",
            ms(self.cpu),
            ms(work.saturating_sub(self.cpu)),
            self.preempted,
            self.slept,
            self.faults,
            self.major_faults
        )
    }
}

/// The phases of one pass, in order.
pub struct Phases {
    last: Instant,
    marks: Vec<(&'static str, Duration)>,
    began: ThreadUse,
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
            began: ThreadUse::now(),
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

    /// Logs the pass if its work took longer than [`SLOW`], with how much
    /// of it the thread spent on the CPU (the wait for events sleeps, so its
    /// CPU time is next to none and its sleep counts among `slept`).
    pub fn report(&self, changes: u64) {
        let total = self.total();
        if total > SLOW {
            tracing::warn!(
                "one pass of the event loop took {:.1} ms ({changes} netlink messages): {}; {}",
                total.as_secs_f64() * 1e3,
                self.describe(),
                ThreadUse::now().since(&self.began).describe(total)
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
    fn cpu_time_and_sleeps_are_told_apart() {
        let before = ThreadUse::now();
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        std::thread::sleep(Duration::from_millis(30));
        let used = ThreadUse::now().since(&before);
        // Spinning is on the CPU (less what a busy machine took), the sleep
        // is not; the sleep is one voluntary switch at least.
        assert!(used.cpu >= Duration::from_millis(5), "{used:?}");
        assert!(used.cpu < Duration::from_millis(45), "{used:?}");
        assert!(used.slept >= 1, "{used:?}");
        let line = used.describe(Duration::from_millis(60));
        assert!(line.starts_with("on CPU "), "{line}");
        assert!(line.contains("off CPU "), "{line}");
        assert!(line.contains("page faults"), "{line}");
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
