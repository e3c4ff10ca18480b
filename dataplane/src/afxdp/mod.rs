//! The AF_XDP engine: the XDP program keeps every decision that hands a frame to the kernel and steers the frames to be forwarded to the engine's sockets; workers (one per receive queue, pinned to CPUs) decide again over a published snapshot, rewrite and send on the egress port's socket.
//!
//! Zero-copy where the driver offers it, else copy mode (veth); a socket
//! per (port, queue), each with its own UMEM. A frame whose port or queue has no socket, or whose socket
//! closed (a worker that died), goes to the kernel: the program's redirect
//! falls back to XDP_PASS.

mod flows;
mod snapshot;
mod socket;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

pub use snapshot::SnapshotWriter;

use crate::abi::{xe_counter, Verdict, MAX_QUEUES, MAX_XSK_PORTS};
use crate::error::{Error, Result};
use crate::memory::Tables;
use crate::program::Dataplane;
use flows::EngineFlows;
use socket::PortSocket;
use worker::{Counters, Worker};

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Workers, one per receive queue: every port must have exactly this
    /// many queues.
    pub workers: u32,
    /// UMEM frames per socket (half receiving, half sending).
    pub frames: u32,
    /// CPUs to pin the workers to, in turn (empty: not pinned).
    pub cpus: Vec<usize>,
    /// Spin on empty rings instead of sleeping in poll(2).
    pub busy_poll: bool,
    /// Flow-table entries per worker (flows to pinned routes; a flow stays
    /// on its receive queue, so on one worker).
    pub pin_flows: usize,
    /// The kernel's tick rate: the pin timeouts of the config are in jiffies.
    pub hz: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: 1,
            frames: 4096,
            cpus: Vec::new(),
            busy_poll: false,
            pin_flows: 1 << 16,
            hz: 1000,
        }
    }
}

/// What the engine counted, summed over its workers.
#[derive(Debug, Clone)]
pub struct EngineCounters {
    pub verdicts: Vec<(Verdict, xe_counter)>,
    /// (next-hop id, sent) for every next hop that sent anything.
    pub nexthops: Vec<(u32, xe_counter)>,
    pub tx_full: u64,
    pub unserved: u64,
    /// What the workers' flow tables did, by event, and their entries now.
    pub pins: crate::flows::PinCounts,
    pub flows: u64,
}

impl Default for EngineCounters {
    fn default() -> Self {
        EngineCounters {
            verdicts: Vec::new(),
            nexthops: Vec::new(),
            tx_full: 0,
            unserved: 0,
            pins: crate::abi::PinEvent::ALL.map(|e| (e, 0)),
            flows: 0,
        }
    }
}

/// A running engine; [`Engine::stop`] ends it (dropping it does too).
pub struct Engine {
    workers: Vec<(u32, JoinHandle<Option<EngineFlows>>)>,
    counters: Vec<Arc<Counters>>,
    stop: Arc<AtomicBool>,
    ports: Vec<u32>,
    /// Each port (by name) and whether its sockets run zero-copy.
    zero_copy: Vec<(String, bool)>,
}

/// The number of receive queues of the port `name` (1 where the driver
/// does not say).
pub fn queue_count(name: &str) -> Result<u32> {
    match crate::ethtool::rx_queues(name) {
        Ok(q) => Ok(q.unwrap_or(1)),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
            Err(Error::NoSuchInterface(name.to_owned()))
        }
        Err(e) => Err(Error::Engine(format!("asking {name}'s queues: {e}"))),
    }
}

impl Engine {
    /// Starts the engine on `ports` (names) with `tables` as the first
    /// snapshot, and steers the program's forwarded frames to it. `dp` must
    /// be loaded with `steer_xsk`. Returns the engine and the writer of its
    /// tables.
    pub fn start(
        dp: &Dataplane,
        ports: &[String],
        cfg: &EngineConfig,
        tables: Tables,
    ) -> Result<(Engine, SnapshotWriter)> {
        if cfg.workers == 0 || cfg.workers > MAX_QUEUES {
            return Err(Error::OutOfRange {
                what: "AF_XDP workers",
                value: cfg.workers.into(),
                max: MAX_QUEUES.into(),
            });
        }
        if ports.len() > MAX_XSK_PORTS as usize {
            return Err(Error::OutOfRange {
                what: "AF_XDP ports",
                value: ports.len() as u64,
                max: MAX_XSK_PORTS.into(),
            });
        }
        for p in ports {
            let q = queue_count(p)?;
            if q != cfg.workers {
                return Err(Error::Engine(format!(
                    "port {p} has {q} receive queue(s) and the engine {} worker(s): give as many workers as the ports have queues (or set the ports' queues with `ethtool -L {p} combined {}`)",
                    cfg.workers, cfg.workers
                )));
            }
        }
        let (writer, published) = SnapshotWriter::new(tables);
        // Flows the program's table pins (a previous engine's included):
        // every worker starts from them, on the program's clock.
        let seed = dp.flow_entries();
        let jiffies0 = dp.jiffies()? as u32;
        let stop = Arc::new(AtomicBool::new(false));
        let mut engine = Engine {
            workers: Vec::new(),
            counters: Vec::new(),
            stop: stop.clone(),
            ports: Vec::new(),
            zero_copy: Vec::new(),
        };
        for queue in 0..cfg.workers {
            let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
            let counters = Arc::new(Counters::new());
            let (names, published, stop, c) = (
                ports.to_vec(),
                published.clone(),
                stop.clone(),
                counters.clone(),
            );
            let (frames, busy_poll) = (cfg.frames, cfg.busy_poll);
            let (pin_flows, hz, seed) = (cfg.pin_flows, cfg.hz, seed.clone());
            let cpu = (!cfg.cpus.is_empty()).then(|| cfg.cpus[queue as usize % cfg.cpus.len()]);
            let handle = std::thread::Builder::new()
                .name(format!("xe-afxdp-{queue}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        if let Err(e) = crate::testrun::pin_thread_to_cpu(cpu) {
                            let _ = ready_tx.send(Err(Error::Engine(format!(
                                "pinning worker {queue} to CPU {cpu}: {e}"
                            ))));
                            return None;
                        }
                    }
                    // The sockets live on this thread (their rings are its own).
                    let sockets: Result<Vec<PortSocket>> = names
                        .iter()
                        .map(|n| PortSocket::open(n, queue, frames))
                        .collect();
                    let sockets = match sockets {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return None;
                        }
                    };
                    let fds = sockets
                        .iter()
                        .map(|s| (s.ifindex, s.fd(), s.zero_copy()))
                        .collect();
                    if ready_tx.send(Ok(fds)).is_err() {
                        return None;
                    }
                    Some(
                        Worker {
                            sockets,
                            published,
                            counters: c,
                            stop,
                            busy_poll,
                            flows: EngineFlows::seeded(pin_flows, &seed),
                            jiffies0,
                            hz,
                        }
                        .run(),
                    )
                })
                .map_err(|e| Error::Engine(format!("starting worker {queue}: {e}")))?;
            engine.workers.push((queue, handle));
            engine.counters.push(counters);
            let fds: Vec<(u32, i32, bool)> = ready_rx
                .recv()
                .map_err(|_| Error::Engine(format!("worker {queue} ended while starting")))??;
            for (port, (ifindex, fd, zero_copy)) in fds.into_iter().enumerate() {
                dp.set_xsk(ifindex, port as u32, queue, fd)?;
                if queue == 0 {
                    engine.ports.push(ifindex);
                    engine.zero_copy.push((ports[port].clone(), zero_copy));
                }
            }
        }
        Ok((engine, writer))
    }

    /// Each port and whether its sockets run zero-copy (else copy mode).
    pub fn modes(&self) -> &[(String, bool)] {
        &self.zero_copy
    }

    /// What the workers counted so far.
    pub fn counters(&self) -> EngineCounters {
        let mut out = EngineCounters::default();
        let sum = |f: &dyn Fn(
            &Counters,
        )
            -> &(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64)| {
            let mut c = xe_counter::default();
            for w in &self.counters {
                let (p, b) = f(w);
                c.packets += p.load(Ordering::Relaxed);
                c.bytes += b.load(Ordering::Relaxed);
            }
            c
        };
        for (i, v) in Verdict::ALL.iter().enumerate() {
            out.verdicts.push((*v, sum(&|w| &w.verdicts[i])));
        }
        for id in 0..crate::abi::MAX_NEXTHOPS as usize {
            let c = sum(&|w| &w.nexthops[id]);
            if c.packets != 0 {
                out.nexthops.push((id as u32, c));
            }
        }
        for w in &self.counters {
            out.tx_full += w.tx_full.load(Ordering::Relaxed);
            out.unserved += w.unserved.load(Ordering::Relaxed);
            out.flows += w.flows.load(Ordering::Relaxed);
            for (i, (_, n)) in out.pins.iter_mut().enumerate() {
                *n += w.pins[i].load(Ordering::Relaxed);
            }
        }
        out
    }

    /// Workers that have ended (a panic): their ports' frames on their
    /// queues go to the kernel since their sockets closed.
    pub fn dead_workers(&self) -> Vec<u32> {
        self.workers
            .iter()
            .filter(|(_, h)| h.is_finished())
            .map(|(q, _)| *q)
            .collect()
    }

    /// Stops steering to the engine (the ports' frames go to the kernel)
    /// and ends the workers.
    /// Stops steering (the program forwards the frames again), ends the
    /// workers and hands their flow-table entries to the program's table,
    /// where the program keeps those flows pinned (and a next engine
    /// starts from them).
    pub fn stop(mut self, dp: &Dataplane) -> Result<()> {
        for ifindex in &self.ports {
            dp.remove_xsk_port(*ifindex)?;
        }
        let tables = self.end()?;
        for t in &tables {
            let (held, written) = (t.len() as u64, dp.put_flows(t.entries()));
            if written < held {
                tracing::warn!(
                    held,
                    written,
                    "flow table handover: sets busy throughout, those flows are hashed again"
                );
            }
        }
        Ok(())
    }

    fn end(&mut self) -> Result<Vec<EngineFlows>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut died = Vec::new();
        let mut tables = Vec::new();
        for (queue, h) in self.workers.drain(..) {
            match h.join() {
                Ok(Some(t)) => tables.push(t),
                Ok(None) => {}
                Err(_) => died.push(queue),
            }
        }
        if died.is_empty() {
            Ok(tables)
        } else {
            Err(Error::Engine(format!("worker(s) {died:?} had died")))
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.end();
    }
}
