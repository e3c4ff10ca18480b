//! The daemon's CPU scheduling: a short EEVDF slice, so that a thread an event wakes runs at once instead of after the slice of whatever holds its CPU.
//!
//! Since Linux 6.12 a SCHED_NORMAL thread may ask for its own slice
//! (`sched_attr.sched_runtime`, 0.1 to 100 ms); a waking thread with a
//! shorter slice than the running one preempts it. With the default slice
//! (about 3 ms here) a route-change burst made by another process on the
//! daemon's CPU held the daemon's wake-up back by up to 3 ms per burst while
//! the other CPU idled (`perf sched timehist`: sch delay 1.8-3.0 ms). The
//! share of CPU time is unchanged: nice stays as it was.

use std::io;
use std::time::Duration;

/// The slice the daemon asks for.
pub const SLICE: Duration = Duration::from_micros(100);

/// `sched_attr` as of its first version (`SCHED_ATTR_SIZE_VER0`).
const ATTR_SIZE: u32 = 48;

/// Asks for `slice` for the calling thread (threads it starts later inherit
/// it); returns the slice the kernel reports back (None: a kernel older
/// than 6.12, which takes the call and ignores the slice).
pub fn short_slice(slice: Duration) -> io::Result<Option<Duration>> {
    // SAFETY: getpriority of the calling thread; -1 is a valid nice, so
    // errno tells a failure.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        let n = libc::getpriority(libc::PRIO_PROCESS, 0);
        if *libc::__errno_location() != 0 {
            return Err(io::Error::last_os_error());
        }
        n
    };
    let attr = libc::sched_attr {
        size: ATTR_SIZE,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_flags: 0,
        sched_nice: nice,
        sched_priority: 0,
        sched_runtime: slice.as_nanos() as u64,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: a valid sched_attr of ATTR_SIZE bytes, for the calling thread.
    if unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut back: libc::sched_attr = unsafe { std::mem::zeroed() };
    // SAFETY: a writable sched_attr of ATTR_SIZE bytes.
    if unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut back, ATTR_SIZE, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((back.sched_runtime > 0).then(|| Duration::from_nanos(back.sched_runtime)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_gets_the_slice_it_asks_for_where_the_kernel_has_them() {
        // In a thread of its own: the test harness's threads keep theirs.
        let got = std::thread::spawn(|| short_slice(Duration::from_micros(250)))
            .join()
            .unwrap()
            .expect("sched_setattr of SCHED_OTHER with the same nice is allowed to anyone");
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut v = release
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
        if (major, minor) >= (6, 12) {
            assert_eq!(got, Some(Duration::from_micros(250)));
        } else {
            assert_eq!(got, None);
        }
    }
}
