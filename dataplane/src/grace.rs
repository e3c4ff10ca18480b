//! Grace periods from the kernel: memory a packet may still hold (slot windows, group and next-hop ids, DIR-24-8 chunks) is reused only after every CPU has left the XDP program since it was unlinked.
//!
//! XDP programs run inside RCU read-side sections, so an RCU grace period
//! that starts after an entry was unlinked ends only once no packet can hold
//! it. Userspace gets one from `membarrier(MEMBARRIER_CMD_GLOBAL)`, which is
//! `synchronize_rcu()`; where that command is refused (nohz_full kernels), from
//! updating a map-in-map with an inner map, after which the kernel waits for a
//! grace period before returning (`maybe_wait_bpf_programs`, used the same
//! way by the kernel's own selftests). A grace period costs no CPU worth
//! mentioning but takes milliseconds of waiting, so one background thread
//! runs them: a writer asks for a [`Cookie`] after unlinking, and reuses what
//! it unlinked once the cookie is over, without waiting unless it must.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use libbpf_rs::libbpf_sys;

use crate::error::{Error, Result};

const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;

/// A grace period asked for at one moment: over once every packet that was
/// in the program then has left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cookie(u64);

/// How grace periods are obtained.
enum Mechanism {
    /// `membarrier(MEMBARRIER_CMD_GLOBAL)`.
    Membarrier,
    /// An update of this array-of-maps with this inner map.
    MapInMap { outer: OwnedFd, inner: OwnedFd },
    /// No packet reads the tables (in-memory tables of tests and models).
    Immediate,
    /// Grace periods end when a test says so.
    #[cfg(test)]
    Manual,
}

#[derive(Default)]
struct State {
    /// Cookies handed out; the last one.
    requested: u64,
    /// Every cookie up to this one is over.
    completed: u64,
    /// Grace periods run, and the time they took.
    periods: u64,
    waited: Duration,
    thread: bool,
}

struct Inner {
    mechanism: Mechanism,
    state: Mutex<State>,
    changed: Condvar,
}

/// A source of grace periods, shared by the writers of one dataplane.
#[derive(Clone)]
pub struct GracePeriods(Arc<Inner>);

/// What grace periods have cost so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GraceStats {
    pub periods: u64,
    pub waited: Duration,
    pub mechanism: &'static str,
}

impl GracePeriods {
    /// Grace periods of the running kernel.
    pub fn kernel() -> Result<Self> {
        // SAFETY: a query with no side effect.
        let cmds = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0) };
        let mechanism = if cmds >= 0 && cmds & libc::c_long::from(MEMBARRIER_CMD_GLOBAL) != 0 {
            Mechanism::Membarrier
        } else {
            map_in_map()?
        };
        Ok(Self::with(mechanism))
    }

    /// For tables no packet reads: every cookie is over at once.
    pub fn immediate() -> Self {
        Self::with(Mechanism::Immediate)
    }

    /// Grace periods that end only at [`GracePeriods::complete_all`].
    #[cfg(test)]
    pub(crate) fn manual() -> Self {
        Self::with(Mechanism::Manual)
    }

    /// Ends every grace period asked for so far (manual ones only).
    #[cfg(test)]
    pub(crate) fn complete_all(&self) {
        let mut st = self.0.state.lock().expect("grace state");
        st.completed = st.requested;
        self.0.changed.notify_all();
    }

    fn with(mechanism: Mechanism) -> Self {
        GracePeriods(Arc::new(Inner {
            mechanism,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }))
    }

    /// Asks for a grace period that starts after now. Call it after the
    /// stores that unlink what is to be reused.
    pub fn cookie(&self) -> Cookie {
        if matches!(self.0.mechanism, Mechanism::Immediate) {
            return Cookie(0);
        }
        let mut st = self.0.state.lock().expect("grace state");
        st.requested += 1;
        let c = Cookie(st.requested);
        #[cfg(test)]
        if matches!(self.0.mechanism, Mechanism::Manual) {
            return c;
        }
        if !st.thread {
            st.thread = true;
            let weak = Arc::downgrade(&self.0);
            std::thread::Builder::new()
                .name("xe-grace".into())
                .spawn(move || run(weak))
                .expect("spawning the grace-period thread");
        }
        self.0.changed.notify_all();
        c
    }

    /// Whether every packet in the program when `c` was asked for has left.
    pub fn is_over(&self, c: Cookie) -> bool {
        c.0 == 0 || self.0.state.lock().expect("grace state").completed >= c.0
    }

    /// Waits until `c` is over.
    pub fn wait(&self, c: Cookie) {
        if c.0 == 0 {
            return;
        }
        let mut st = self.0.state.lock().expect("grace state");
        while st.completed < c.0 {
            st = self.0.changed.wait(st).expect("grace state");
        }
    }

    pub fn stats(&self) -> GraceStats {
        let st = self.0.state.lock().expect("grace state");
        GraceStats {
            periods: st.periods,
            waited: st.waited,
            mechanism: match self.0.mechanism {
                Mechanism::Membarrier => "membarrier(MEMBARRIER_CMD_GLOBAL)",
                Mechanism::MapInMap { .. } => "map-in-map update (synchronize_rcu)",
                Mechanism::Immediate => "none (no packet reads these tables)",
                #[cfg(test)]
                Mechanism::Manual => "manual (tests)",
            },
        }
    }
}

/// The grace-period thread: one grace period covers every cookie asked for
/// before it started. Ends when the last handle is gone.
fn run(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let target = {
            let st = inner.state.lock().expect("grace state");
            if st.completed >= st.requested {
                // Wake now and then to notice that every handle is gone.
                let _ = inner
                    .changed
                    .wait_timeout(st, Duration::from_secs(1))
                    .expect("grace state");
                continue;
            }
            st.requested
        };
        let start = Instant::now();
        synchronize(&inner.mechanism);
        let mut st = inner.state.lock().expect("grace state");
        st.completed = target;
        st.periods += 1;
        st.waited += start.elapsed();
        inner.changed.notify_all();
    }
}

/// One grace period. Neither call can fail once the mechanism was chosen
/// (membarrier was queried, the maps exist); should one fail anyway, it is
/// retried rather than taken for a grace period.
fn synchronize(m: &Mechanism) {
    loop {
        let ok = match m {
            // SAFETY: no pointers; the command was reported as supported.
            Mechanism::Membarrier => unsafe {
                libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) == 0
            },
            Mechanism::MapInMap { outer, inner } => {
                let (key, value) = (0u32, inner.as_raw_fd() as u32);
                // SAFETY: pointers to live locals of the map's key and value size.
                unsafe {
                    libbpf_sys::bpf_map_update_elem(
                        outer.as_raw_fd(),
                        (&key as *const u32).cast(),
                        (&value as *const u32).cast(),
                        0,
                    ) == 0
                }
            }
            Mechanism::Immediate => true,
            #[cfg(test)]
            Mechanism::Manual => true,
        };
        if ok {
            return;
        }
        tracing::warn!(error = %std::io::Error::last_os_error(), "grace period failed; retrying");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The fallback: an array-of-maps with one slot and an inner array.
fn map_in_map() -> Result<Mechanism> {
    let create = |what: &'static str, fd: i32| -> Result<OwnedFd> {
        if fd < 0 {
            return Err(Error::Grace {
                what,
                source: std::io::Error::from_raw_os_error(-fd),
            });
        }
        // SAFETY: a fresh fd, owned from here on.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    // SAFETY: plain map creation with valid names and sizes.
    let inner = create("creating the inner map of the grace-period map", unsafe {
        libbpf_sys::bpf_map_create(
            libbpf_sys::BPF_MAP_TYPE_ARRAY,
            c"xe_grace_in".as_ptr(),
            4,
            4,
            1,
            std::ptr::null(),
        )
    })?;
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        inner_map_fd: inner.as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: as above, with opts naming the inner map.
    let outer = create("creating the grace-period map (array of maps)", unsafe {
        libbpf_sys::bpf_map_create(
            libbpf_sys::BPF_MAP_TYPE_ARRAY_OF_MAPS,
            c"xe_grace".as_ptr(),
            4,
            4,
            1,
            &opts,
        )
    })?;
    Ok(Mechanism::MapInMap { outer, inner })
}

/// Things unlinked from the tables, each held until the grace period asked
/// for after its unlinking is over. Cookies of one source only grow, so the
/// oldest is always first.
#[derive(Debug)]
pub struct Quarantine<T> {
    held: VecDeque<(Cookie, T)>,
}

impl<T> Default for Quarantine<T> {
    fn default() -> Self {
        Quarantine {
            held: VecDeque::new(),
        }
    }
}

impl<T> Quarantine<T> {
    /// Holds `item` until `cookie` is over.
    pub fn hold(&mut self, cookie: Cookie, item: T) {
        debug_assert!(self.held.back().is_none_or(|(c, _)| *c <= cookie));
        self.held.push_back((cookie, item));
    }

    /// Takes every item whose grace period is over.
    pub fn release(&mut self, grace: &GracePeriods) -> Vec<T> {
        let mut out = Vec::new();
        while let Some((c, _)) = self.held.front() {
            if !grace.is_over(*c) {
                break;
            }
            out.push(self.held.pop_front().expect("front").1);
        }
        out
    }

    /// Waits for the oldest item's grace period and takes every item that is
    /// then over; empty when nothing is held.
    pub fn release_waiting(&mut self, grace: &GracePeriods) -> Vec<T> {
        if let Some((c, _)) = self.held.front() {
            grace.wait(*c);
        }
        self.release(grace)
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_over_only_after_a_grace_period_that_began_later() {
        let g = GracePeriods::kernel().expect("membarrier or map-in-map");
        let c = g.cookie();
        g.wait(c);
        assert!(g.is_over(c));
        let st = g.stats();
        assert!(st.periods >= 1, "{st:?}");
        // Cookies asked for later need a later grace period.
        let d = g.cookie();
        assert!(d > c);
        g.wait(d);
        assert!(g.stats().periods >= 2);
        println!(
            "grace: {} periods by {}, {:?} each on average",
            g.stats().periods,
            st.mechanism,
            g.stats().waited / g.stats().periods as u32
        );
    }

    #[test]
    fn the_quarantine_keeps_items_until_their_grace_period_is_over() {
        let g = GracePeriods::with(Mechanism::Membarrier);
        let mut q = Quarantine::default();
        // Ask without a thread having run: nothing is over yet.
        let c = {
            let mut st = g.0.state.lock().unwrap();
            st.requested += 1;
            st.thread = true; // no thread: this test completes periods by hand
            Cookie(st.requested)
        };
        q.hold(c, 7);
        assert!(q.release(&g).is_empty(), "held before the grace period");
        g.0.state.lock().unwrap().completed = c.0;
        assert_eq!(q.release(&g), vec![7]);
        assert!(q.is_empty());
        let mut i = Quarantine::default();
        i.hold(GracePeriods::immediate().cookie(), 1);
        assert_eq!(i.release(&GracePeriods::immediate()), vec![1]);
    }
}
