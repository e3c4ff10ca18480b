//! The daemon's side of the AF_XDP engine: one writer that keeps the maps and the engine's tables in step, publishing per wake-up, and the engine's counters stored where `stats` and the metrics read them.

use std::net::{Ipv4Addr, Ipv6Addr};

use dataplane::abi::{xe_config, xe_counter, xe_group, xe_inport, xe_nexthop, xe_route, Verdict};
use dataplane::afxdp::{Engine, EngineConfig, SnapshotWriter};
use dataplane::grace::GracePeriods;
use dataplane::readback::Counts;
use dataplane::{Dataplane, Result, TableWriter};

/// Writes to the maps and, once the engine runs, to its tables; remembers
/// whether anything reached the engine's tables since the last publish.
pub struct Tee<'a> {
    pub dp: &'a mut Dataplane,
    pub engine: Option<&'a mut Running>,
}

impl Tee<'_> {
    fn both(&mut self, f: impl Fn(&mut dyn TableWriter) -> Result<()>) -> Result<()> {
        f(self.dp)?;
        if let Some(e) = self.engine.as_deref_mut() {
            // The engine's copy has no limits the maps lack: a write the
            // maps took, it takes.
            f(&mut e.tables)?;
            e.dirty = true;
        }
        Ok(())
    }

    /// Applies to the engine's tables, with `f(tables, i)`, each write `i`
    /// whose result in the maps is Ok; a write they refuse gets their error.
    fn follow(
        &mut self,
        results: &mut [Result<()>],
        f: impl Fn(&mut dyn TableWriter, usize) -> Result<()>,
    ) {
        let Some(e) = self.engine.as_deref_mut() else {
            return;
        };
        for (i, r) in results.iter_mut().enumerate() {
            if r.is_ok() {
                *r = f(&mut e.tables, i);
                e.dirty = true;
            }
        }
    }
}

impl TableWriter for Tee<'_> {
    fn set_route_v4(&mut self, addr: Ipv4Addr, len: u8, route: &xe_route) -> Result<()> {
        self.both(|t| t.set_route_v4(addr, len, route))
    }
    fn delete_route_v4(&mut self, addr: Ipv4Addr, len: u8) -> Result<()> {
        self.both(|t| t.delete_route_v4(addr, len))
    }
    /// The maps in batches, then the engine's tables for each route the
    /// maps took.
    fn set_routes_v4(&mut self, routes: &[(Ipv4Addr, u8, xe_route)]) -> Vec<Result<()>> {
        let mut results = self.dp.set_routes_v4(routes);
        self.follow(&mut results, |t, i| {
            let (a, l, r) = &routes[i];
            t.set_route_v4(*a, *l, r)
        });
        results
    }
    fn delete_routes_v4(&mut self, prefixes: &[(Ipv4Addr, u8)]) -> Vec<Result<()>> {
        let mut results = self.dp.delete_routes_v4(prefixes);
        self.follow(&mut results, |t, i| {
            let (a, l) = prefixes[i];
            t.delete_route_v4(a, l)
        });
        results
    }
    fn set_route_v6(&mut self, addr: Ipv6Addr, len: u8, route: &xe_route) -> Result<()> {
        self.both(|t| t.set_route_v6(addr, len, route))
    }
    fn delete_route_v6(&mut self, addr: Ipv6Addr, len: u8) -> Result<()> {
        self.both(|t| t.delete_route_v6(addr, len))
    }
    fn set_group(&mut self, id: u32, group: &xe_group) -> Result<()> {
        self.both(|t| t.set_group(id, group))
    }
    fn set_slots(&mut self, base: u32, nexthops: &[u32]) -> Result<()> {
        self.both(|t| t.set_slots(base, nexthops))
    }
    fn set_nexthop(&mut self, id: u32, nh: &xe_nexthop) -> Result<()> {
        self.both(|t| t.set_nexthop(id, nh))
    }
    fn add_txport(&mut self, ifindex: u32) -> Result<()> {
        self.both(|t| t.add_txport(ifindex))
    }
    fn remove_txport(&mut self, ifindex: u32) -> Result<()> {
        self.both(|t| t.remove_txport(ifindex))
    }
    fn set_inport(&mut self, ifindex: u32, port: &xe_inport) -> Result<()> {
        self.both(|t| t.set_inport(ifindex, port))
    }
    fn remove_inport(&mut self, ifindex: u32) -> Result<()> {
        self.both(|t| t.remove_inport(ifindex))
    }
    fn set_config(&mut self, cfg: &xe_config) -> Result<()> {
        self.both(|t| t.set_config(cfg))
    }
    fn set_pin_member(&mut self, group: u32, path: u32, nexthop: Option<u32>) -> Result<()> {
        self.both(|t| t.set_pin_member(group, path, nexthop))
    }
    fn set_group_gen(&mut self, group: u32, gen: u32) -> Result<()> {
        self.both(|t| t.set_group_gen(group, gen))
    }
    /// The maps' grace periods: the engine's snapshots are freed by their
    /// own epochs.
    fn grace(&self) -> GracePeriods {
        self.dp.grace()
    }
}

/// A running engine with its tables' writer and the counters it started
/// from (those stored by an earlier run, which its own add to).
pub struct Running {
    engine: Engine,
    tables: SnapshotWriter,
    dirty: bool,
    base: (Counts<Verdict>, Counts<u32>),
    /// The flow tables' events stored by an earlier run.
    pin_base: dataplane::flows::PinCounts,
    dead_reported: bool,
}

impl Running {
    /// Starts the engine on `ports` over what the maps hold now. Workers 0:
    /// as many as the first port has receive queues. `pin_flows` flow-table
    /// entries are shared out among the workers; `hz` is the kernel's tick
    /// rate, which the config's pin timeouts count in.
    pub fn start(
        dp: &Dataplane,
        ports: &[String],
        cfg: &EngineConfig,
        pin_flows: u32,
        hz: u32,
    ) -> anyhow::Result<Running> {
        let mut cfg = cfg.clone();
        if cfg.workers == 0 {
            let first = ports.first().map(String::as_str).unwrap_or_default();
            cfg.workers = dataplane::afxdp::queue_count(first)?;
        }
        cfg.pin_flows = (pin_flows / cfg.workers.max(1)) as usize;
        cfg.hz = hz;
        let tables = dp.read_tables()?;
        let base = dp.engine_counters()?;
        let pin_base = dp.engine_pin_counts().0;
        let (engine, tables) = Engine::start(dp, ports, &cfg, tables)?;
        let mode = |zc: bool| if zc { "zero-copy" } else { "copy" };
        let modes: Vec<String> = engine
            .modes()
            .iter()
            .map(|(p, zc)| format!("{p}:{}", mode(*zc)))
            .collect();
        tracing::info!(
            workers = cfg.workers,
            ports = modes.join(","),
            busy_poll = cfg.busy_poll,
            "AF_XDP engine started: frames to forward between these ports go through it"
        );
        Ok(Running {
            engine,
            tables,
            dirty: false,
            base,
            pin_base,
            dead_reported: false,
        })
    }

    /// Hands the workers what was written since the last call, if anything.
    pub fn publish(&mut self) {
        if std::mem::take(&mut self.dirty) {
            self.tables.publish();
        }
    }

    /// Stores the engine's counters (on top of the earlier run's) in the
    /// pinned maps; logs once if a worker died (its queues' frames go to
    /// the kernel since its sockets closed).
    pub fn store_counters(&mut self, dp: &Dataplane) -> Result<()> {
        let c = self.engine.counters();
        let sum = |a: xe_counter, b: xe_counter| xe_counter {
            packets: a.packets + b.packets,
            bytes: a.bytes + b.bytes,
        };
        let verdicts: Vec<(Verdict, xe_counter)> = c
            .verdicts
            .iter()
            .zip(&self.base.0)
            .map(|((v, n), (_, b))| (*v, sum(*n, *b)))
            .collect();
        let mut nexthops = c.nexthops.clone();
        for (id, n) in nexthops.iter_mut() {
            if let Some((_, b)) = self.base.1.iter().find(|(i, _)| i == id) {
                *n = sum(*n, *b);
            }
        }
        let mut pins = c.pins;
        for ((_, n), (_, b)) in pins.iter_mut().zip(self.pin_base) {
            *n += b;
        }
        dp.store_engine_counters(&verdicts, &nexthops, &pins, c.flows)?;
        let dead = self.engine.dead_workers();
        if !dead.is_empty() && !self.dead_reported {
            self.dead_reported = true;
            tracing::error!(
                workers = ?dead,
                "AF_XDP worker(s) ended: the frames of their queues go to the kernel; restart xdp-ecmp to serve them again"
            );
        }
        Ok(())
    }

    /// Stops steering (the program forwards again) and ends the workers.
    pub fn stop(mut self, dp: &Dataplane) -> anyhow::Result<()> {
        self.store_counters(dp)?;
        self.engine.stop(dp)?;
        Ok(())
    }
}
