//! The flow tables (one per family) seen from userspace: their entries, its event counters, flushing, the group memberships pinned flows are checked against, and the live table as a read-only [`FlowTable`] (for `calc`).

use std::path::Path;

use libbpf_rs::{MapCore, MapFlags};

use crate::abi::{read_from, xe_flow, xe_pin, xe_pin_member, PinEvent};
use crate::error::Result;
use crate::forward::FlowTable;
use crate::maps::{map_err, open_pinned};
use crate::pinsets::FlowSets;
use crate::program::Dataplane;

/// What the flow table did, summed over CPUs, by event.
pub type PinCounts = [(PinEvent, u64); PinEvent::ALL.len()];

/// Both families' flow tables.
#[derive(Clone, Copy)]
pub struct FlowMaps<'a> {
    /// `xe_flows4`: IPv4 flows, keyed by `xe_flow4`.
    pub v4: &'a FlowSets,
    /// `xe_flows6`: IPv6 flows, keyed by `xe_flow` (is_v6 set).
    pub v6: &'a FlowSets,
}

impl FlowMaps<'_> {
    /// The table of `k`'s family.
    fn table(&self, k: &xe_flow) -> &FlowSets {
        if k.is_v6 != 0 {
            self.v6
        } else {
            self.v4
        }
    }

    /// Every entry of both tables, by flow. Ways rewritten while they are
    /// read are skipped.
    pub fn entries(&self) -> Vec<(xe_flow, xe_pin)> {
        let mut out = self.v4.entries();
        out.extend(self.v6.entries());
        out
    }

    /// Entries held: (IPv4, IPv6).
    pub fn counts(&self) -> (u64, u64) {
        (self.v4.count(), self.v6.count())
    }

    /// The entry of flow `k`, if there is one.
    pub fn get(&self, k: &xe_flow) -> Option<xe_pin> {
        self.table(k).get(k)
    }

    /// Writes `entries` into their families' tables, as the program
    /// writes a new flow's (over the way seen longest ago in a full set).
    /// Returns how many were written (a set other writers kept busy
    /// throughout is left: its flow is written by its next packet).
    pub fn put(&self, entries: impl Iterator<Item = (xe_flow, xe_pin)>) -> u64 {
        entries
            .map(|(k, p)| u64::from(self.table(&k).put(&k, &p)))
            .sum()
    }

    /// Removes the entries `matches` picks; their flows are hashed again
    /// by their next packet. Counted as [`PinEvent::Flushed`] in `stats`.
    /// Returns how many went.
    pub fn flush(&self, stats: &dyn MapCore, matches: &dyn Fn(&xe_flow) -> bool) -> Result<u64> {
        let n = self.v4.remove(matches) + self.v6.remove(matches);
        if n > 0 {
            add_flushed(stats, n)?;
        }
        Ok(n)
    }
}

/// Adds `n` to the flushed counter of a `xe_pin_stats` map (on the first
/// CPU's counter: the sum is what is read).
fn add_flushed(stats: &dyn MapCore, n: u64) -> Result<()> {
    let key = (PinEvent::Flushed as u32).to_ne_bytes();
    let mut per_cpu = stats
        .lookup_percpu(&key, MapFlags::ANY)
        .map_err(map_err("xe_pin_stats", "lookup"))?
        .unwrap_or_default();
    if let Some(first) = per_cpu.first_mut() {
        let v = read_from::<u64>(first).unwrap_or(0) + n;
        first.copy_from_slice(&v.to_ne_bytes());
        stats
            .update_percpu(&key, &per_cpu, MapFlags::ANY)
            .map_err(map_err("xe_pin_stats", "update"))?;
    }
    Ok(())
}

/// The event counters of a `xe_pin_stats` map.
pub fn counts(stats: &dyn MapCore) -> Result<PinCounts> {
    let mut out = PinEvent::ALL.map(|e| (e, 0));
    for (e, n) in out.iter_mut() {
        let per_cpu = stats
            .lookup_percpu(&(*e as u32).to_ne_bytes(), MapFlags::ANY)
            .map_err(map_err("xe_pin_stats", "lookup"))?
            .unwrap_or_default();
        *n = per_cpu.iter().filter_map(|b| read_from::<u64>(b)).sum();
    }
    Ok(out)
}

/// What the AF_XDP engine's flow tables did, as its daemon stored it in a
/// `xe_engine_pins` map: events, and entries then.
pub fn engine_counts(map: &dyn MapCore) -> (PinCounts, u64) {
    let get = |i: u32| -> u64 {
        map.lookup(&i.to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()
            .and_then(|b| read_from(&b))
            .unwrap_or(0)
    };
    (
        PinEvent::ALL.map(|e| (e, get(e as u32))),
        get(PinEvent::ALL.len() as u32),
    )
}

/// The (group, path) → next-hop id memberships of a `xe_pin_members` map.
pub fn members(map: &dyn MapCore) -> Vec<(u32, u32, u32)> {
    map.keys()
        .filter_map(|k| {
            let key: xe_pin_member = read_from(&k)?;
            let v = map.lookup(&k, MapFlags::ANY).ok()??;
            Some((key.group, key.path, read_from(&v)?))
        })
        .collect()
}

/// The flow-table maps pinned under a pin directory, for the CLI (no
/// program load).
pub struct PinnedFlows {
    pub flows4: FlowSets,
    pub flows6: FlowSets,
    pub stats: libbpf_rs::MapHandle,
    pub members: libbpf_rs::MapHandle,
    pub engine: libbpf_rs::MapHandle,
}

impl PinnedFlows {
    pub fn open(pin_dir: &Path) -> Result<Self> {
        let seed = crate::pinsets::read_seed(&open_pinned(pin_dir, "xe_pin_seed")?)?;
        let table = |name: &'static str, v6: bool| -> Result<FlowSets> {
            let m = open_pinned(pin_dir, name)?;
            FlowSets::map(&m, v6, m.max_entries(), seed)
        };
        Ok(PinnedFlows {
            flows4: table("xe_flows4", false)?,
            flows6: table("xe_flows6", true)?,
            stats: open_pinned(pin_dir, "xe_pin_stats")?,
            members: open_pinned(pin_dir, "xe_pin_members")?,
            engine: open_pinned(pin_dir, "xe_engine_pins")?,
        })
    }

    pub fn maps(&self) -> FlowMaps<'_> {
        FlowMaps {
            v4: &self.flows4,
            v6: &self.flows6,
        }
    }

    /// The tables' fill and events (one pass over their ways), the AF_XDP
    /// engine's tables' added (to the IPv4 count: the engine keeps one
    /// count).
    pub fn stats(&self) -> Result<FlowStats> {
        let mut events = counts(&self.stats)?;
        let (engine, engine_entries) = engine_counts(&self.engine);
        for ((_, n), (_, e)) in events.iter_mut().zip(engine) {
            *n += e;
        }
        let (v4, v6) = self.maps().counts();
        Ok(FlowStats::new(
            events,
            v4 + engine_entries,
            v6,
            self.flows4.flows(),
        ))
    }
}

/// The flow tables' fill and what they did.
#[derive(Debug, Clone, Copy)]
pub struct FlowStats {
    pub events: PinCounts,
    /// Entries held, both families.
    pub entries: u64,
    pub entries_v4: u64,
    pub entries_v6: u64,
    /// Entries each family's table holds at most.
    pub capacity: u32,
}

impl FlowStats {
    pub fn new(events: PinCounts, entries_v4: u64, entries_v6: u64, capacity: u32) -> Self {
        FlowStats {
            events,
            entries: entries_v4 + entries_v6,
            entries_v4,
            entries_v6,
            capacity,
        }
    }

    /// Entries that gave way to new flows (the table was full): inserted,
    /// less those ended, flushed and still held.
    pub fn evicted(&self) -> u64 {
        let n = |e: PinEvent| self.events[e as usize].1;
        n(PinEvent::Inserted)
            .saturating_sub(n(PinEvent::Ended) + n(PinEvent::Flushed) + self.entries)
    }
}

impl Dataplane {
    /// The flow tables, both families.
    pub fn flow_maps(&self) -> FlowMaps<'_> {
        FlowMaps {
            v4: &self.flows4,
            v6: &self.flows6,
        }
    }
    pub fn flow_entries(&self) -> Vec<(xe_flow, xe_pin)> {
        self.flow_maps().entries()
    }
    pub fn pin_counts(&self) -> Result<PinCounts> {
        counts(&self.skel.maps.xe_pin_stats)
    }
    /// The AF_XDP engine's flow tables as its daemon last stored them:
    /// events and entries.
    pub fn engine_pin_counts(&self) -> (PinCounts, u64) {
        engine_counts(&self.skel.maps.xe_engine_pins)
    }
    pub fn pin_members(&self) -> Vec<(u32, u32, u32)> {
        members(&self.skel.maps.xe_pin_members)
    }
    /// Every group's membership generation that is not 0, as (group, gen).
    pub fn group_gens(&self) -> Vec<(u32, u32)> {
        let map = &self.skel.maps.xe_group_gen;
        (0..crate::abi::MAX_GROUPS)
            .filter_map(|g| {
                let v = map.lookup(&g.to_ne_bytes(), MapFlags::ANY).ok()??;
                let gen: u32 = read_from(&v)?;
                (gen != 0).then_some((g, gen))
            })
            .collect()
    }
    pub fn flush_flows(&self, matches: &dyn Fn(&xe_flow) -> bool) -> Result<u64> {
        self.flow_maps()
            .flush(&self.skel.maps.xe_pin_stats, matches)
    }
    /// Writes `entries` into the flow tables (as the AF_XDP engine hands
    /// its tables over when it stops); returns how many were written.
    pub fn put_flows(&self, entries: impl Iterator<Item = (xe_flow, xe_pin)>) -> u64 {
        self.flow_maps().put(entries)
    }

    /// The live flow tables, read only (see [`ReadOnlyFlows`]).
    pub fn live_flows(&self) -> ReadOnlyFlows<'_> {
        ReadOnlyFlows(self.flow_maps())
    }
}

/// The flow tables read where they live and never written, as the `calc`
/// copy of the program reads them: a question leaves no entry behind.
pub struct ReadOnlyFlows<'a>(pub FlowMaps<'a>);

impl FlowTable for ReadOnlyFlows<'_> {
    fn get(&mut self, key: &xe_flow) -> Option<xe_pin> {
        self.0.get(key)
    }
    fn put(&mut self, _: &xe_flow, _: xe_pin) {}
    fn remove(&mut self, _: &xe_flow) {}
}
