//! The flow table seen from userspace: its entries, its event counters, flushing, the group memberships pinned flows are checked against, and the live table as a read-only [`FlowTable`] (for `calc`).

use std::path::Path;

use libbpf_rs::{MapCore, MapFlags};

use crate::abi::{bytes_of, read_from, xe_flow, xe_pin, xe_pin_member, PinEvent};
use crate::error::Result;
use crate::forward::FlowTable;
use crate::maps::{map_err, open_pinned};
use crate::program::Dataplane;

/// What the flow table did, summed over CPUs, by event.
pub type PinCounts = [(PinEvent, u64); PinEvent::ALL.len()];

/// Every entry of a flow table (a map of `xe_flow` → `xe_pin`). Entries
/// removed while it is read are skipped.
pub fn entries(map: &dyn MapCore) -> Vec<(xe_flow, xe_pin)> {
    map.keys()
        .filter_map(|k| {
            let v = map.lookup(&k, MapFlags::ANY).ok()??;
            Some((read_from(&k)?, read_from(&v)?))
        })
        .collect()
}

/// Removes the entries `matches` picks; their flows are hashed again by
/// their next packet. Counted as [`PinEvent::Flushed`]. Returns how many
/// went.
pub fn flush(
    flows: &dyn MapCore,
    stats: &dyn MapCore,
    matches: &dyn Fn(&xe_flow) -> bool,
) -> Result<u64> {
    let mut n = 0;
    for k in flows.keys() {
        let Some(key) = read_from::<xe_flow>(&k) else {
            continue;
        };
        if !matches(&key) {
            continue;
        }
        match flows.delete(&k) {
            Ok(()) => n += 1,
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => {}
            Err(e) => return Err(map_err("xe_flows", "delete")(e)),
        }
    }
    if n > 0 {
        // Added on the first CPU's counter: the sum is what is read.
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
    }
    Ok(n)
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
    pub flows: libbpf_rs::MapHandle,
    pub stats: libbpf_rs::MapHandle,
    pub members: libbpf_rs::MapHandle,
    pub engine: libbpf_rs::MapHandle,
}

impl PinnedFlows {
    pub fn open(pin_dir: &Path) -> Result<Self> {
        Ok(PinnedFlows {
            flows: open_pinned(pin_dir, "xe_flows")?,
            stats: open_pinned(pin_dir, "xe_pin_stats")?,
            members: open_pinned(pin_dir, "xe_pin_members")?,
            engine: open_pinned(pin_dir, "xe_engine_pins")?,
        })
    }

    /// The table's fill and events (one pass over its keys: ~1 s at 1M),
    /// the AF_XDP engine's tables' added.
    pub fn stats(&self) -> Result<FlowStats> {
        let mut events = counts(&self.stats)?;
        let (engine, engine_entries) = engine_counts(&self.engine);
        for ((_, n), (_, e)) in events.iter_mut().zip(engine) {
            *n += e;
        }
        let entries = self.flows.keys().count() as u64 + engine_entries;
        Ok(FlowStats {
            events,
            entries,
            capacity: self.flows.max_entries(),
        })
    }
}

/// A flow table's fill and what it did.
#[derive(Debug, Clone, Copy)]
pub struct FlowStats {
    pub events: PinCounts,
    pub entries: u64,
    pub capacity: u32,
}

impl FlowStats {
    /// Entries that gave way to new flows (the table was full): inserted,
    /// less those ended, flushed and still held.
    pub fn evicted(&self) -> u64 {
        let n = |e: PinEvent| self.events[e as usize].1;
        n(PinEvent::Inserted)
            .saturating_sub(n(PinEvent::Ended) + n(PinEvent::Flushed) + self.entries)
    }
}

impl Dataplane {
    pub fn flow_entries(&self) -> Vec<(xe_flow, xe_pin)> {
        entries(&self.skel.maps.xe_flows)
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
        flush(
            &self.skel.maps.xe_flows,
            &self.skel.maps.xe_pin_stats,
            matches,
        )
    }
    /// Writes `entries` into the flow table (as the AF_XDP engine hands
    /// its tables over when it stops).
    pub fn put_flows(&self, entries: impl Iterator<Item = (xe_flow, xe_pin)>) -> Result<()> {
        for (k, p) in entries {
            self.skel
                .maps
                .xe_flows
                .update(bytes_of(&k), bytes_of(&p), MapFlags::ANY)
                .map_err(map_err("xe_flows", "update"))?;
        }
        Ok(())
    }

    /// The live flow table, read only (see [`ReadOnlyFlows`]).
    pub fn live_flows(&self) -> ReadOnlyFlows<'_> {
        ReadOnlyFlows(&self.skel.maps.xe_flows)
    }
}

/// A flow table read where it lives and never written, as the `calc` copy
/// of the program reads `xe_flows`: a question leaves no entry behind.
pub struct ReadOnlyFlows<'a>(pub &'a dyn MapCore);

impl FlowTable for ReadOnlyFlows<'_> {
    fn get(&mut self, key: &xe_flow) -> Option<xe_pin> {
        let v = self.0.lookup(bytes_of(key), MapFlags::ANY).ok()??;
        read_from(&v)
    }
    fn put(&mut self, _: &xe_flow, _: xe_pin) {}
    fn remove(&mut self, _: &xe_flow) {}
}
