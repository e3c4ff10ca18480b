//! One engine worker: the sockets of every served port on one receive queue; receives, decides over the published snapshot, rewrites into a frame of the egress port's socket and sends. No locks on the packet path.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ahash::AHashMap;
use crossbeam_epoch as epoch;

use super::flows::EngineFlows;
use super::snapshot::Published;
use super::socket::{PortSocket, FRAME_SIZE};
use crate::abi::{xe_decision, PinEvent, Verdict, MAX_NEXTHOPS, XDP_REDIRECT};
use crate::forward::{Pins, TableReader};

/// Frames taken from one socket's receive ring at a time.
const BATCH: u32 = 64;

/// What one worker counted; written by that worker only, read by anyone.
pub(crate) struct Counters {
    /// Packets and bytes per verdict of the engine's own decision.
    pub(crate) verdicts: [(AtomicU64, AtomicU64); Verdict::ALL.len()],
    /// Packets and bytes sent per next hop.
    pub(crate) nexthops: Box<[(AtomicU64, AtomicU64)]>,
    /// Forwarded frames dropped because every sending frame of the egress
    /// socket was in flight.
    pub(crate) tx_full: AtomicU64,
    /// Forwarded frames whose egress port has no socket of this worker.
    pub(crate) unserved: AtomicU64,
    /// What the worker's flow table did, by event, and its entries now.
    pub(crate) pins: [AtomicU64; PinEvent::ALL.len()],
    pub(crate) flows: AtomicU64,
}

impl Counters {
    pub(crate) fn new() -> Counters {
        Counters {
            verdicts: std::array::from_fn(|_| Default::default()),
            nexthops: (0..MAX_NEXTHOPS).map(|_| Default::default()).collect(),
            tx_full: AtomicU64::new(0),
            unserved: AtomicU64::new(0),
            pins: std::array::from_fn(|_| AtomicU64::new(0)),
            flows: AtomicU64::new(0),
        }
    }

    fn add(pair: &(AtomicU64, AtomicU64), bytes: usize) {
        pair.0.fetch_add(1, Ordering::Relaxed);
        pair.1.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

pub(crate) struct Worker {
    pub(crate) sockets: Vec<PortSocket>,
    pub(crate) published: Arc<Published>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) busy_poll: bool,
    /// Flows to pinned routes, the kernel's jiffies when the engine
    /// started and their rate: entries are stamped in the program's clock,
    /// so they can move between the engine and the program's table.
    pub(crate) flows: EngineFlows,
    pub(crate) jiffies0: u32,
    pub(crate) hz: u32,
}

impl Worker {
    /// Serves until stopped; hands back the flow table.
    pub(crate) fn run(mut self) -> EngineFlows {
        let by_ifindex: AHashMap<u32, usize> = self
            .sockets
            .iter()
            .enumerate()
            .map(|(i, s)| (s.ifindex, i))
            .collect();
        let mut out = vec![0u8; FRAME_SIZE as usize + 4];
        let mut fds: Vec<libc::pollfd> = self
            .sockets
            .iter()
            .map(|s| libc::pollfd {
                fd: s.fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let start = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let mut work = 0;
            {
                let guard = epoch::pin();
                let tables = self.published.load(&guard);
                // The kernel's jiffies, as the program stamps entries.
                let now = self.jiffies0.wrapping_add(
                    (start.elapsed().as_millis() as u64 * u64::from(self.hz) / 1000) as u32,
                );
                for i in 0..self.sockets.len() {
                    let n = self.sockets[i].receive_batch(BATCH);
                    let ingress = self.sockets[i].ifindex;
                    for k in 0..n {
                        let pkt = self.sockets[i].received(k);
                        let bytes = pkt.len();
                        let mut pins = Pins {
                            table: &mut self.flows,
                            now,
                        };
                        let (d, len) =
                            tables.decide_pinned(&mut pins, Some(ingress), pkt, &mut out);
                        if let Some(e) = PinEvent::of_decision(d.pin) {
                            self.counters.pins[e as usize].fetch_add(1, Ordering::Relaxed);
                        }
                        if d.verdict == Verdict::Forward as u32 && d.action == XDP_REDIRECT {
                            self.send(&by_ifindex, &d, &out[..len], bytes);
                        } else {
                            // Decided otherwise than the program did a moment
                            // ago (the tables changed): counted, and dropped,
                            // as a frame in userspace cannot go back to the
                            // kernel's stack.
                            self.account(&d, bytes);
                        }
                    }
                    self.sockets[i].finish_batch();
                    self.sockets[i].refill();
                    work += n;
                }
            }
            for s in &mut self.sockets {
                s.flush();
            }
            self.counters
                .flows
                .store(self.flows.len() as u64, Ordering::Relaxed);
            if work == 0 {
                if self.busy_poll {
                    std::hint::spin_loop();
                } else {
                    // SAFETY: valid pollfds; a 10 ms timeout so a stop is seen.
                    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 10) };
                }
            }
        }
        self.flows
    }

    fn account(&self, d: &xe_decision, bytes: usize) {
        if let Some(pair) = self.counters.verdicts.get(d.verdict as usize) {
            Counters::add(pair, bytes);
        }
    }

    fn send(
        &mut self,
        by_ifindex: &AHashMap<u32, usize>,
        d: &xe_decision,
        frame: &[u8],
        bytes: usize,
    ) {
        let Some(&j) = by_ifindex.get(&d.ifindex) else {
            self.counters.unserved.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if self.sockets[j].queue_send(frame.len(), |b| b.copy_from_slice(frame)) {
            self.account(d, bytes);
            if let Some(pair) = self.counters.nexthops.get(d.nexthop as usize) {
                Counters::add(pair, bytes);
            }
        } else {
            self.counters.tx_full.fetch_add(1, Ordering::Relaxed);
        }
    }
}
