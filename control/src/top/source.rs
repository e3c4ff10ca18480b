//! Where `top` reads from: the pinned counters (no program load) every interval, and the maps' routes, groups and next hops with the daemon's names for them, less often when reading them is slow.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use dataplane::Dataplane;

use super::sample::{Reading, Structure};
use crate::listings::{self, Known};
use crate::{inspect, status};

/// The structure is read again at most once per interval, and no more often
/// than this many times its last read took (a table of a million routes
/// takes seconds to list: `top` keeps to a few per cent of a CPU).
const STRUCTURE_COST_FACTOR: u32 = 20;

/// The AF_XDP engine's counters reach the maps when its daemon stores them,
/// about every 200 ms: read at any moment they are up to that old, and a
/// 1 s rate would be off by as much as 20%. While the engine forwards, a
/// read waits for the next store (this long at most), so the rates are
/// taken at the moments the counters were.
const ENGINE_STORE_WAIT: Duration = Duration::from_millis(450);

/// The pinned maps of one pin directory.
pub struct Source {
    pin_dir: PathBuf,
    dp: Dataplane,
    structure: Structure,
    read_at: Instant,
    took: Duration,
    /// The last wait for a store of the engine's counters saw none, and
    /// they have not changed since: the engine is idle, no read waits.
    engine_idle: bool,
    engine_last: Option<u64>,
}

impl Source {
    /// Opens the maps pinned in `pin_dir` (a clear error, naming it, when
    /// none are) and reads their structure.
    pub fn open(pin_dir: &Path) -> Result<Source> {
        let dp = inspect::open(pin_dir)?;
        let mut s = Source {
            pin_dir: pin_dir.to_owned(),
            dp,
            structure: Structure::default(),
            read_at: Instant::now(),
            took: Duration::ZERO,
            engine_idle: false,
            engine_last: None,
        };
        s.refresh()?;
        Ok(s)
    }

    pub fn structure(&self) -> &Structure {
        &self.structure
    }

    /// Reads the structure again if `interval` has passed since the last
    /// read and it is cheap enough (see [`STRUCTURE_COST_FACTOR`]).
    pub fn refresh_if_due(&mut self, interval: Duration) -> Result<()> {
        if self.read_at.elapsed() >= interval.max(self.took * STRUCTURE_COST_FACTOR) {
            self.refresh()?;
        }
        Ok(())
    }

    fn refresh(&mut self) -> Result<()> {
        let t0 = Instant::now();
        // A status of another version is as good as none here.
        let topology = status::read_topology(&self.pin_dir).ok().flatten();
        let known = Known::new(topology.as_ref());
        let routes = inspect::routes(&self.dp)?
            .into_iter()
            .filter_map(|r| Some((r.prefix, r.group?)))
            .collect();
        let groups = known.groups(inspect::groups(&self.dp)?);
        let ids: std::collections::BTreeSet<u32> = groups
            .iter()
            .flat_map(|g| g.row.members.keys().copied())
            .filter(|id| *id != 0)
            .collect();
        let rows = ids
            .into_iter()
            .map(|id| Ok(inspect::nexthop_row(id, &self.dp.nexthop(id)?)))
            .collect::<Result<Vec<_>>>()?;
        self.structure = Structure {
            nexthops: known.nexthops(rows),
            groups,
            routes,
            note: listings::provenance(topology.as_ref(), &status::dir_for(&self.pin_dir)),
        };
        self.read_at = Instant::now();
        self.took = t0.elapsed();
        Ok(())
    }

    /// The packets the AF_XDP engine counted, as last stored.
    fn engine_total(&self) -> Option<u64> {
        let c = dataplane::pinned_engine_counters(&self.pin_dir).ok()??;
        Some(c.iter().map(|(_, c)| c.packets).sum())
    }

    /// Waits for the daemon's next store of the engine's counters (see
    /// [`ENGINE_STORE_WAIT`]); false if none came.
    fn await_engine_store(&self) -> bool {
        let before = self.engine_total();
        let t0 = Instant::now();
        while t0.elapsed() < ENGINE_STORE_WAIT {
            std::thread::sleep(Duration::from_millis(2));
            if self.engine_total() != before {
                // The verdicts are stored first, the next hops microseconds later.
                std::thread::sleep(Duration::from_millis(1));
                return true;
            }
        }
        false
    }

    /// Reads the counters of the structure's next hops, the verdicts' and
    /// the daemon's status.
    pub fn read(&mut self) -> Result<Reading> {
        let activity = status::read_activity(&self.pin_dir).ok().flatten();
        let daemon_alive = activity.as_ref().is_some_and(|a| status::alive(a.pid));
        let engine_runs = daemon_alive && activity.as_ref().is_some_and(|a| a.engine == "afxdp");
        if engine_runs {
            if self.engine_total() != self.engine_last {
                self.engine_idle = false;
            }
            if !self.engine_idle {
                self.engine_idle = !self.await_engine_store();
            }
        }
        let ids: Vec<u32> = self.structure.nexthops.iter().map(|n| n.row.id).collect();
        let at = Instant::now();
        let wall_ms = status::unix_ms();
        let nexthops = dataplane::pinned_nexthop_counters(&self.pin_dir, &ids)?
            .into_iter()
            .collect();
        let verdicts = dataplane::pinned_verdict_counters(&self.pin_dir)?;
        let engine = dataplane::pinned_engine_counters(&self.pin_dir)?.unwrap_or_default();
        let tx_refused = dataplane::txfail::pinned_tx_failures(&self.pin_dir)?;
        self.engine_last = Some(engine.iter().map(|(_, c)| c.packets).sum());
        Ok(Reading {
            at,
            wall_ms,
            verdicts,
            engine,
            tx_refused,
            nexthops,
            activity,
            daemon_alive,
        })
    }
}
