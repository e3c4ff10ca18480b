//! Writing the live maps: the table writer (route records, DIR-24-8 tables and IPv6 length search, groups and slots through mmap, next hops, ports, config), the AF_XDP steering entries and the engine's stored counters.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering;

use libbpf_rs::MapCore;

use crate::abi::{
    bytes_of, xe_config, xe_counter, xe_group, xe_inport, xe_nexthop, xe_pin_member, xe_route,
    PinEvent, Verdict, DIR_CHUNK_SIZE, MAX_DIR_CHUNKS, MAX_GROUPS, MAX_NEXTHOPS, MAX_QUEUES,
    MAX_XSK_PORTS,
};
use crate::dir24::{Dir248, TBL24_ENTRIES};
use crate::error::Result;
use crate::grace::GracePeriods;
use crate::lensearch::LenSearch;
use crate::maps::{self, lpm_v6, map_err};
use crate::mmap::MmapCells;
use crate::program::Dataplane;
use crate::tables::{check_group, check_prefix, check_range, check_slots, TableWriter};
use crate::v6maps::V6Maps;

impl Dataplane {
    /// The DIR-24-8 tables, mapped on first use; with maps that may come from
    /// a pin, their contents are first checked against the routes in the
    /// record and every /24 that differs is rewritten.
    pub(crate) fn dir(&mut self) -> Result<&mut Dir248<MmapCells>> {
        self.adopt_lookup_tables()?;
        Ok(self.dir.as_mut().expect("just set"))
    }

    /// The DIR-24-8 tables mapped into this process.
    pub(crate) fn dir_cells(&self) -> Result<(MmapCells, MmapCells)> {
        let tbl24 = MmapCells::map(&self.skel.maps.xe_tbl24, "xe_tbl24", TBL24_ENTRIES, 4)?;
        let tbl8 = MmapCells::map(
            &self.skel.maps.xe_tbl8,
            "xe_tbl8",
            (MAX_DIR_CHUNKS * DIR_CHUNK_SIZE) as usize,
            4,
        )?;
        Ok((tbl24, tbl8))
    }

    /// The IPv6 length search, opened on first use; with maps that may
    /// come from a pin, its entries are first checked against the routes in
    /// the LPM trie (the record) and every one that differs is rewritten.
    fn v6(&mut self) -> Result<&mut LenSearch<V6Maps>> {
        self.adopt_lookup_tables()?;
        Ok(self.v6.as_mut().expect("just set"))
    }

    /// Takes over the lookup tables packets use (IPv4 DIR-24-8, IPv6 length
    /// search) now rather than at the first route write, so a program
    /// attached over maps from a pin (a previous run, or a version that
    /// kept routes only in the records) never reads tables that disagree
    /// with the records. Says what had to be rewritten (nothing when called again).
    pub fn adopt_lookup_tables(&mut self) -> Result<Repaired> {
        let mut repaired = Repaired::default();
        if self.dir.is_none() {
            let (tbl24, tbl8) = self.dir_cells()?;
            let mut dir = Dir248::new(tbl24, tbl8, self.grace.clone());
            if self.pinned {
                repaired.slash24s = dir.adopt(&self.record.entries())?;
            }
            self.dir = Some(dir);
        }
        if self.v6.is_none() {
            let mut v6 = LenSearch::new(self.v6_maps()?, self.grace.clone());
            if self.pinned {
                let (searched, held) = (v6.store().searched(), v6.store().held());
                repaired.v6_entries = v6.adopt(&self.trie_routes_v6()?, &searched, &held)?;
            }
            self.v6 = Some(v6);
        }
        Ok(repaired)
    }
}

/// What adopting pinned lookup tables rewrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Repaired {
    /// IPv4 /24s whose DIR-24-8 entries disagreed with the trie.
    pub slash24s: usize,
    /// IPv6 search entries written or removed.
    pub v6_entries: usize,
}

impl Repaired {
    pub fn total(&self) -> usize {
        self.slash24s + self.v6_entries
    }
}

impl Dataplane {
    /// Steers the frames to be forwarded that arrive on `ifindex`, receive
    /// queue `queue`, to the AF_XDP socket `fd` (a program loaded with
    /// `steer_xsk`); `port` is the engine's index of the port, below
    /// [`MAX_XSK_PORTS`], the same for every queue of it.
    pub fn set_xsk(&self, ifindex: u32, port: u32, queue: u32, fd: i32) -> Result<()> {
        check_range("AF_XDP port index", port, MAX_XSK_PORTS)?;
        check_range("receive queue", queue, MAX_QUEUES)?;
        maps::update(
            &self.skel.maps.xe_xsk_ports,
            "xe_xsk_ports",
            &ifindex,
            &port,
        )?;
        maps::update(
            &self.skel.maps.xe_xsks,
            "xe_xsks",
            &(port * MAX_QUEUES + queue),
            &fd,
        )
    }

    /// Stores the AF_XDP engine's counters (totals) where `stats` and the
    /// metrics read them.
    pub fn store_engine_counters(
        &self,
        verdicts: &[(Verdict, xe_counter)],
        nexthops: &[(u32, xe_counter)],
        pins: &crate::flows::PinCounts,
        flows: u64,
    ) -> Result<()> {
        let m = &self.skel.maps;
        for (e, n) in pins {
            maps::update(&m.xe_engine_pins, "xe_engine_pins", &(*e as u32), n)?;
        }
        let at = PinEvent::ALL.len() as u32;
        maps::update(&m.xe_engine_pins, "xe_engine_pins", &at, &flows)?;
        for (v, c) in verdicts {
            maps::update(&m.xe_engine_verdicts, "xe_engine_verdicts", &(*v as u32), c)?;
        }
        for (id, c) in nexthops {
            check_range("next-hop id", *id, MAX_NEXTHOPS)?;
            maps::update(&m.xe_engine_nh, "xe_engine_nh", id, c)?;
        }
        Ok(())
    }

    /// Stops steering the frames of `ifindex` to the engine: they go to the
    /// kernel again (the sockets' entries go when the sockets close).
    pub fn remove_xsk_port(&self, ifindex: u32) -> Result<()> {
        match self.skel.maps.xe_xsk_ports.delete(bytes_of(&ifindex)) {
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
            r => r.map_err(map_err("xe_xsk_ports", "delete")),
        }
    }
}

impl TableWriter for Dataplane {
    /// The DIR-24-8 tables packets use, then the record; a full record or
    /// chunk table fails before either is written (see `write_routes_v4`).
    fn set_route_v4(&mut self, addr: Ipv4Addr, len: u8, route: &xe_route) -> Result<()> {
        let mut results = self.write_routes_v4(&[(addr, len, *route)]);
        results.pop().expect("one result")
    }

    fn delete_route_v4(&mut self, addr: Ipv4Addr, len: u8) -> Result<()> {
        let mut results = self.remove_routes_v4(&[(addr, len)]);
        results.pop().expect("one result")
    }

    fn set_routes_v4(&mut self, routes: &[(Ipv4Addr, u8, xe_route)]) -> Vec<Result<()>> {
        self.write_routes_v4(routes)
    }

    fn delete_routes_v4(&mut self, prefixes: &[(Ipv4Addr, u8)]) -> Vec<Result<()>> {
        self.remove_routes_v4(prefixes)
    }

    /// The length search packets use first (it may be full), then the trie
    /// (the record); the search is put back if the trie refuses.
    fn set_route_v6(&mut self, addr: Ipv6Addr, len: u8, route: &xe_route) -> Result<()> {
        check_prefix("IPv6", len, 128)?;
        let a = u128::from(addr);
        let v6 = self.v6()?;
        let old = v6.route(a, len);
        v6.add(a, len, route)?;
        let key = lpm_v6(addr, len);
        let written = maps::update(&self.skel.maps.xe_routes_v6, "xe_routes_v6", &key, route);
        if written.is_err() {
            let v6 = self.v6()?;
            match old {
                Some(r) => v6.add(a, len, &r)?,
                None => v6.delete(a, len)?,
            }
        }
        written
    }

    fn delete_route_v6(&mut self, addr: Ipv6Addr, len: u8) -> Result<()> {
        check_prefix("IPv6", len, 128)?;
        self.v6()?.delete(u128::from(addr), len)?;
        let key = lpm_v6(addr, len);
        maps::delete(&self.skel.maps.xe_routes_v6, "xe_routes_v6", &key)
    }

    /// One 8-byte store (Release: the window's slots, written before, are
    /// visible first); the program reads the entry with one 8-byte load.
    fn set_group(&mut self, id: u32, group: &xe_group) -> Result<()> {
        check_group(id, group, self.sizes.slots)?;
        let word = u64::from_ne_bytes(bytes_of(group).try_into().expect("8-byte xe_group"));
        self.groups.word(id as usize).store(word, Ordering::Release);
        Ok(())
    }

    fn set_slots(&mut self, base: u32, nexthops: &[u32]) -> Result<()> {
        check_slots(base, nexthops.len(), self.sizes.slots)?;
        for (i, nh) in nexthops.iter().enumerate() {
            // Release: the next hop it names is written before.
            self.slots
                .cell(base as usize + i)
                .store(*nh, Ordering::Release);
        }
        Ok(())
    }

    fn set_nexthop(&mut self, id: u32, nh: &xe_nexthop) -> Result<()> {
        check_range("next-hop id", id, MAX_NEXTHOPS)?;
        maps::update(&self.skel.maps.xe_nexthops, "xe_nexthops", &id, nh)
    }

    fn add_txport(&mut self, ifindex: u32) -> Result<()> {
        maps::update(&self.skel.maps.xe_txports, "xe_txports", &ifindex, &ifindex)
    }

    fn remove_txport(&mut self, ifindex: u32) -> Result<()> {
        maps::delete(&self.skel.maps.xe_txports, "xe_txports", &ifindex)
    }

    /// Replaces the whole entry at once: a packet reads the old entry or
    /// the new one.
    fn set_inport(&mut self, ifindex: u32, port: &xe_inport) -> Result<()> {
        self.write_inport(ifindex, port)
    }

    fn remove_inport(&mut self, ifindex: u32) -> Result<()> {
        self.clear_inport(ifindex)
    }

    fn set_config(&mut self, cfg: &xe_config) -> Result<()> {
        maps::update(&self.skel.maps.xe_config, "xe_config", &0u32, cfg)
    }

    fn set_group_gen(&mut self, group: u32, gen: u32) -> Result<()> {
        check_range("group id", group, MAX_GROUPS)?;
        maps::update(&self.skel.maps.xe_group_gen, "xe_group_gen", &group, &gen)
    }

    fn set_pin_member(&mut self, group: u32, path: u32, nexthop: Option<u32>) -> Result<()> {
        let key = xe_pin_member { group, path };
        let map = &self.skel.maps.xe_pin_members;
        match nexthop {
            Some(id) => maps::update(map, "xe_pin_members", &key, &id),
            None => match map.delete(bytes_of(&key)) {
                Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
                r => r.map_err(map_err("xe_pin_members", "delete")),
            },
        }
    }

    fn grace(&self) -> GracePeriods {
        self.grace.clone()
    }
}
