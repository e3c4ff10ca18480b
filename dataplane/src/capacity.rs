//! How full each table of the dataplane is: used entries against the limit, read from the maps themselves.

use libbpf_rs::{MapCore, MapFlags};

use crate::abi::{
    read_from, xe_group, xe_nexthop, DIR_CHUNK, INPORT_INDEXES, MAX_DIR_CHUNKS, MAX_GROUPS,
    MAX_INPORTS, MAX_NEXTHOPS, MAX_TXPORTS, NH_VALID,
};
use crate::dir24::{Cells, TBL24_ENTRIES};
use crate::error::Result;
use crate::Dataplane;

/// One table's fill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableUse {
    pub table: &'static str,
    pub used: u64,
    pub limit: u64,
    /// What one entry is, and what fills the table.
    pub note: &'static str,
}

impl Dataplane {
    /// Used and limit of every table (a scan of each map: about a second
    /// with a million routes).
    pub fn capacity(&self) -> Result<Vec<TableUse>> {
        let m = &self.skel.maps;
        let groups: Vec<xe_group> = (0..MAX_GROUPS as usize)
            .map(|i| {
                let w = self
                    .groups
                    .word(i)
                    .load(std::sync::atomic::Ordering::Relaxed);
                read_from::<xe_group>(&w.to_ne_bytes()).unwrap_or_default()
            })
            .filter(|g| g.mode != 0)
            .collect();
        let slots: u64 = groups.iter().map(|g| u64::from(g.size)).sum();
        let (tbl24, _) = self.dir_cells()?;
        let chunks = (0..TBL24_ENTRIES)
            .filter(|i| tbl24.get(*i) & DIR_CHUNK != 0)
            .count() as u64;
        let (v6_used, v6_slots) = self.v6_reader()?.fill();
        let nexthops = (1..MAX_NEXTHOPS)
            .filter(|id| {
                m.xe_nexthops
                    .lookup(&id.to_ne_bytes(), MapFlags::ANY)
                    .ok()
                    .flatten()
                    .and_then(|b| read_from::<xe_nexthop>(&b))
                    .is_some_and(|n| n.state & NH_VALID != 0)
            })
            .count() as u64;
        Ok(vec![
            TableUse {
                table: "IPv4 routes",
                used: self.record.len() as u64,
                limit: self.sizes().routes_v4.into(),
                note: "one per prefix",
            },
            TableUse {
                table: "IPv4 DIR-24-8 chunks",
                used: chunks,
                limit: MAX_DIR_CHUNKS.into(),
                note: "one per /24 holding a prefix longer than /24",
            },
            TableUse {
                table: "IPv6 routes",
                used: m.xe_routes_v6.keys().count() as u64,
                limit: self.sizes().routes_v6.into(),
                note: "one per prefix",
            },
            TableUse {
                table: "IPv6 search slots",
                used: v6_used as u64,
                limit: v6_slots,
                note: "one per prefix and per marker that steers the search on lengths; kept at most about two thirds full",
            },
            TableUse {
                table: "groups",
                used: groups.len() as u64,
                limit: u64::from(MAX_GROUPS) - 1,
                note: "one per distinct member set; each also takes slots",
            },
            TableUse {
                table: "slot pool",
                used: slots,
                limit: self.sizes().slots.into(),
                note: "a resilient group takes one slot per bucket (128 by default: 16,384 such groups fill the default pool), a modulo group one per member weight",
            },
            TableUse {
                table: "next hops",
                used: nexthops,
                limit: u64::from(MAX_NEXTHOPS) - 1,
                note: "one per (port, gateway)",
            },
            TableUse {
                table: "tx ports",
                used: m.xe_txports.keys().count() as u64,
                limit: MAX_TXPORTS.into(),
                note: "one per egress or attached port",
            },
            TableUse {
                table: "ingress ports",
                used: self.inports()?.len() as u64,
                limit: u64::from(INPORT_INDEXES + MAX_INPORTS),
                note: "one per attached port: any number below ifindex 65536, 1024 past it",
            },
            TableUse {
                table: "IPv4 flow table",
                used: self.flows4.count(),
                limit: self.sizes.flows.into(),
                note: "one per IPv4 flow to a pinned route, in sets of 8 ways (twice as many ways as this size): a new flow whose set is full takes the way seen longest ago",
            },
            TableUse {
                table: "IPv6 flow table",
                used: self.flows6.count(),
                limit: self.sizes.flows.into(),
                note: "one per IPv6 flow to a pinned route, in sets of 8 ways, as IPv4",
            },
            TableUse {
                table: "pinned memberships",
                used: m.xe_pin_members.keys().count() as u64,
                limit: crate::abi::MAX_PIN_MEMBERS.into(),
                note: "one per live member of each group, with flow pinning on",
            },
        ])
    }
}
