//! The live maps read as the decision's tables (IPv6 routes through the length search packets use): what the loaded program decides for a frame, answered in Rust (a map lookup per table per packet: for questions and tests, not for packet rates).

use std::sync::atomic::Ordering;

use libbpf_rs::{MapCore, MapFlags};

use crate::abi::{
    bytes_of, read_from, xe_config, xe_group, xe_inport, xe_nexthop, xe_pin_member, xe_route,
    MAX_GROUPS, MAX_NEXTHOPS,
};
use crate::dir24::Dir248;
use crate::error::Result;
use crate::forward::TableReader;
use crate::grace::GracePeriods;
use crate::lensearch::search;
use crate::mmap::MmapCells;
use crate::program::Dataplane;
use crate::v6maps::V6Maps;

/// The program's maps as a [`TableReader`]: IPv4 routes from the DIR-24-8
/// tables, IPv6 routes by the program's search, and groups and slots from their mmapped arrays (the words the
/// program loads), the rest by map lookups. The config is read once, when
/// the reader is made.
pub struct LiveTables<'a> {
    dp: &'a Dataplane,
    /// Read only: the writer owns the tables' bookkeeping.
    dir: Dir248<MmapCells>,
    v6: V6Maps,
    config: xe_config,
}

impl Dataplane {
    /// A reader over the maps as they are now (see [`LiveTables`]).
    pub fn live_tables(&self) -> Result<LiveTables<'_>> {
        let (tbl24, tbl8) = self.dir_cells()?;
        Ok(LiveTables {
            dp: self,
            dir: Dir248::new(tbl24, tbl8, GracePeriods::immediate()),
            v6: self.v6_reader()?,
            config: self.config()?,
        })
    }
}

impl LiveTables<'_> {
    fn lookup<K: Copy, V: Copy>(map: &libbpf_rs::MapMut<'_>, key: &K) -> Option<V> {
        map.lookup(bytes_of(key), MapFlags::ANY)
            .ok()
            .flatten()
            .and_then(|b| read_from(&b))
    }
}

/// A failed lookup reads as an absent entry: the decision then passes the
/// frame, as the program does with an entry it cannot find.
impl TableReader for LiveTables<'_> {
    fn route_v4(&self, dst: [u8; 4]) -> Option<xe_route> {
        Some(self.dir.lookup(u32::from_be_bytes(dst)))
    }
    fn route_v6(&self, dst: [u8; 16]) -> Option<xe_route> {
        let lens = self.v6.searched();
        let r = search(&lens, u128::from_be_bytes(dst), |k| self.v6.get(k));
        (r.kind != 0).then_some(r)
    }
    fn group(&self, id: u32) -> Option<xe_group> {
        (id < MAX_GROUPS).then(|| {
            let word = self.dp.groups.word(id as usize).load(Ordering::Acquire);
            read_from(&word.to_ne_bytes()).unwrap_or_default()
        })
    }
    fn slot(&self, index: u32) -> Option<u32> {
        (index < self.dp.sizes.slots)
            .then(|| self.dp.slots.cell(index as usize).load(Ordering::Acquire))
    }
    fn nexthop(&self, id: u32) -> Option<xe_nexthop> {
        (id < MAX_NEXTHOPS)
            .then(|| Self::lookup(&self.dp.skel.maps.xe_nexthops, &id).unwrap_or_default())
    }
    fn inport(&self, ifindex: u32) -> Option<xe_inport> {
        self.dp.inport_of(ifindex)
    }
    fn is_txport(&self, ifindex: u32) -> bool {
        Self::lookup::<u32, u32>(&self.dp.skel.maps.xe_txports, &ifindex).is_some()
    }
    fn config(&self) -> xe_config {
        self.config
    }
    fn group_gen(&self, group: u32) -> u32 {
        Self::lookup(&self.dp.skel.maps.xe_group_gen, &group).unwrap_or(0)
    }
    fn pin_member(&self, group: u32, path: u32) -> Option<u32> {
        Self::lookup(
            &self.dp.skel.maps.xe_pin_members,
            &xe_pin_member { group, path },
        )
    }
}
