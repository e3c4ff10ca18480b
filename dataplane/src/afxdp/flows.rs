//! A worker's own flow table, with the program's `xe_flows` semantics (the engine pins flows by the same rules): bounded, entries seen longest ago give way first.

use ahash::AHashMap;

use crate::abi::{xe_flow, xe_pin};
use crate::forward::pin::key_bytes as key;
use crate::forward::FlowTable;

/// Entries by flow key, at most `capacity`. When full, an insert first
/// drops the eighth of the entries seen longest ago (one pass over the
/// table per `capacity / 8` inserts): like the program's table, whose full
/// sets give their least recently seen way, it forgets the oldest flows.
pub(crate) struct EngineFlows {
    map: AHashMap<[u8; 44], xe_pin>,
    capacity: usize,
}

impl EngineFlows {
    pub(crate) fn new(capacity: usize) -> Self {
        EngineFlows {
            map: AHashMap::new(),
            capacity: capacity.max(8),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// A table holding `entries` (as many as fit).
    pub(crate) fn seeded(capacity: usize, entries: &[(xe_flow, xe_pin)]) -> Self {
        let mut t = EngineFlows::new(capacity);
        for (k, p) in entries {
            t.put(k, *p);
        }
        t
    }

    /// Every entry, by flow.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (xe_flow, xe_pin)> + '_ {
        self.map
            .iter()
            .filter_map(|(k, p)| Some((crate::abi::read_from(k)?, *p)))
    }

    /// Drops the entries seen longest ago (by age at `now`) to make room.
    fn evict(&mut self, now: u32) {
        let mut ages: Vec<u32> = self
            .map
            .values()
            .map(|p| now.wrapping_sub(p.seen))
            .collect();
        let cut = ages.len() - self.capacity / 8;
        let (_, oldest, _) = ages.select_nth_unstable(cut);
        let oldest = *oldest;
        let mut over = self.map.len() - cut;
        self.map.retain(|_, p| {
            let drop = over > 0 && now.wrapping_sub(p.seen) >= oldest;
            over -= usize::from(drop);
            !drop
        });
    }
}

impl FlowTable for EngineFlows {
    fn get(&mut self, k: &xe_flow) -> Option<xe_pin> {
        self.map.get(&key(k)).copied()
    }
    fn put(&mut self, k: &xe_flow, pin: xe_pin) {
        let k = key(k);
        if self.map.len() >= self.capacity && !self.map.contains_key(&k) {
            self.evict(pin.seen);
        }
        self.map.insert(k, pin);
    }
    fn remove(&mut self, k: &xe_flow) {
        self.map.remove(&key(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(n: u16) -> xe_flow {
        xe_flow {
            sport: n,
            ..Default::default()
        }
    }

    #[test]
    fn full_table_drops_the_oldest_first() {
        let mut t = EngineFlows::new(16);
        for i in 0..16u16 {
            t.put(
                &flow(i),
                xe_pin {
                    path: u32::from(i),
                    seen: u32::from(i),
                    ..Default::default()
                },
            );
        }
        assert_eq!(t.map.len(), 16);
        t.put(
            &flow(100),
            xe_pin {
                seen: 100,
                ..Default::default()
            },
        );
        // The two oldest (seen 0 and 1) made room; the newest are kept.
        assert_eq!(t.map.len(), 15);
        assert!(t.get(&flow(0)).is_none() && t.get(&flow(1)).is_none());
        assert!(t.get(&flow(2)).is_some() && t.get(&flow(15)).is_some());
        assert!(t.get(&flow(100)).is_some());
        // Rewriting a present flow in a full table evicts nothing.
        let mut t = EngineFlows::new(8);
        for i in 0..8u16 {
            t.put(&flow(i), xe_pin::default());
        }
        t.put(&flow(3), xe_pin::default());
        assert_eq!(t.map.len(), 8);
    }
}
