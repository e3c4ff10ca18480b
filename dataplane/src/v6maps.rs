//! The IPv6 length search's maps as its entry store: entries in the xe_v6_slots table and the searched lengths in xe_v6_lens, both through mmap.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::atomic::Ordering;

use crate::abi::{xe_route, V6_LENS};
use crate::error::Result;
use crate::grace::GracePeriods;
use crate::lensearch::{EntryStore, Key, LenSearch};
use crate::mmap::MmapCells;
use crate::program::Dataplane;
use crate::v6slots::{size_for, SlotTable, SLOT_CELLS};

/// Cells of struct xe_v6_lens: active, count[2], pad, then two sets of
/// V6_LENS bytes.
const LENS_CELLS: usize = 4 + 2 * V6_LENS / 4;

/// The slot table and the mapped lengths.
pub(crate) struct V6Maps {
    slots: SlotTable<MmapCells>,
    lens: MmapCells,
}

impl Dataplane {
    fn v6_cells(&self) -> Result<(MmapCells, u32, MmapCells)> {
        let m = &self.skel.maps;
        let (bits, slots) = size_for(self.sizes.routes_v6);
        Ok((
            MmapCells::map(
                &m.xe_v6_slots,
                "xe_v6_slots",
                slots as usize * SLOT_CELLS,
                4,
            )?,
            bits,
            MmapCells::map(&m.xe_v6_lens, "xe_v6_lens", LENS_CELLS, 4)?,
        ))
    }

    /// The maps for writing: the slot table taken over (see
    /// [`SlotTable::adopt`]).
    pub(crate) fn v6_maps(&self) -> Result<V6Maps> {
        let (cells, bits, lens) = self.v6_cells()?;
        Ok(V6Maps {
            slots: SlotTable::adopt(cells, bits, self.grace.clone()),
            lens,
        })
    }

    /// The maps for reading only.
    pub(crate) fn v6_reader(&self) -> Result<V6Maps> {
        let (cells, bits, lens) = self.v6_cells()?;
        Ok(V6Maps {
            slots: SlotTable::reader(cells, bits),
            lens,
        })
    }
}

impl V6Maps {
    /// The lengths the program searches now.
    pub(crate) fn searched(&self) -> Vec<u8> {
        let set = (self.lens.cell(0).load(Ordering::Acquire) & 1) as usize;
        let n = (self.lens.cell(1 + set).load(Ordering::Relaxed) as usize).min(V6_LENS);
        let base = 4 + set * V6_LENS / 4;
        (0..n)
            .map(|i| {
                let c = self.lens.cell(base + i / 4).load(Ordering::Relaxed);
                c.to_ne_bytes()[i % 4]
            })
            .collect()
    }

    /// The entry at `key` as the program finds it.
    pub(crate) fn get(&self, key: Key) -> Option<xe_route> {
        self.slots.get(key)
    }

    /// Every entry the program can find.
    pub(crate) fn held(&self) -> HashMap<Key, xe_route> {
        self.slots
            .scan()
            .0
            .into_iter()
            .map(|(k, (_, r))| (k, r))
            .collect()
    }

    /// Entries held, and the home slots.
    pub(crate) fn fill(&self) -> (usize, u64) {
        (self.slots.scan().0.len(), self.slots.home_slots())
    }
}

impl EntryStore for V6Maps {
    fn put(&mut self, key: Key, route: &xe_route) -> Result<()> {
        self.slots.put(key, route)
    }

    fn delete(&mut self, key: Key) -> Result<()> {
        self.slots.delete(key);
        Ok(())
    }

    /// The unused set, then its count, then the switch (Release: the set
    /// is visible before the program can choose it).
    fn set_lengths(&mut self, lens: &[u8]) -> Result<()> {
        assert!(lens.len() <= V6_LENS);
        let set = 1 - (self.lens.cell(0).load(Ordering::Acquire) & 1) as usize;
        let base = 4 + set * V6_LENS / 4;
        let mut bytes = [0u8; V6_LENS];
        bytes[..lens.len()].copy_from_slice(lens);
        for (i, c) in bytes.chunks_exact(4).enumerate() {
            let v = u32::from_ne_bytes(c.try_into().expect("4 bytes"));
            self.lens.cell(base + i).store(v, Ordering::Relaxed);
        }
        self.lens
            .cell(1 + set)
            .store(lens.len() as u32, Ordering::Relaxed);
        self.lens.cell(0).store(set as u32, Ordering::Release);
        Ok(())
    }
}

/// Where the length search disagrees with the routes of the record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V6Differences {
    /// Entries (prefix, length) missing, wrong or left over.
    pub entries: Vec<(Ipv6Addr, u8)>,
    /// Lengths of routes the program does not search.
    pub lengths: Vec<u8>,
}

impl V6Differences {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.lengths.is_empty()
    }
}

/// A store that writes nothing and lists what it was asked to write.
#[derive(Default)]
struct Recorder(Vec<Key>);

impl EntryStore for Recorder {
    fn put(&mut self, key: Key, _: &xe_route) -> Result<()> {
        self.0.push(key);
        Ok(())
    }
    fn delete(&mut self, key: Key) -> Result<()> {
        self.0.push(key);
        Ok(())
    }
    fn set_lengths(&mut self, _: &[u8]) -> Result<()> {
        Ok(())
    }
}

/// What adopting `maps` for `routes` would rewrite, without writing.
pub(crate) fn differences(maps: &V6Maps, routes: &[(u128, u8, xe_route)]) -> Result<V6Differences> {
    let searched = maps.searched();
    let mut plan = LenSearch::new(Recorder::default(), GracePeriods::immediate());
    plan.adopt(routes, &searched, &maps.held())?;
    let mut entries: Vec<(Ipv6Addr, u8)> = plan
        .store()
        .0
        .iter()
        .map(|(l, a)| (Ipv6Addr::from(*a), *l))
        .collect();
    entries.sort();
    let mut lengths: Vec<u8> = routes
        .iter()
        .map(|r| r.1)
        .filter(|l| !searched.contains(l))
        .collect();
    lengths.sort_unstable();
    lengths.dedup();
    Ok(V6Differences { entries, lengths })
}
