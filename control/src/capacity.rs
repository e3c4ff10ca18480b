//! The dataplane's table limits as the reconciler sees them, and the record of what waits for room: one log line when an object starts or stops waiting, counts for the metrics.

use std::collections::{BTreeMap, BTreeSet};

use dataplane::abi::{
    MAX_DIR_CHUNKS, MAX_GROUPS, MAX_NEXTHOPS, MAX_ROUTES_V4, MAX_ROUTES_V6, MAX_SLOTS, MAX_TXPORTS,
};

/// Sizes of the maps the reconciler fills. The defaults are the program's
/// (bpf/include/xe_abi.h); tests shrink them to reach a full table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Next-hop map entries (id 0 is never handed out).
    pub nexthops: u32,
    /// Group map entries (id 0 is never handed out).
    pub groups: u32,
    /// Slots of the shared pool that group windows are cut from.
    pub slots: u32,
    /// Ports in the redirect map.
    pub txports: u32,
    /// DIR-24-8 chunks: one per /24 that holds a prefix longer than /24.
    pub dir_chunks: u32,
    pub routes_v4: u32,
    pub routes_v6: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            nexthops: MAX_NEXTHOPS,
            groups: MAX_GROUPS,
            slots: MAX_SLOTS,
            txports: MAX_TXPORTS,
            dir_chunks: MAX_DIR_CHUNKS,
            routes_v4: MAX_ROUTES_V4,
            routes_v6: MAX_ROUTES_V6,
        }
    }
}

/// What an object can lack room in (or, for `Write`, a map write that failed otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Limit {
    Nexthops,
    Groups,
    Slots,
    TxPorts,
    DirChunks,
    RoutesV4,
    RoutesV6,
    Write,
}

impl Limit {
    pub const ALL: [Limit; 8] = [
        Limit::Nexthops,
        Limit::Groups,
        Limit::Slots,
        Limit::TxPorts,
        Limit::DirChunks,
        Limit::RoutesV4,
        Limit::RoutesV6,
        Limit::Write,
    ];

    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Nexthops => "nexthops",
            Limit::Groups => "groups",
            Limit::Slots => "slots",
            Limit::TxPorts => "txports",
            Limit::DirChunks => "dir24_chunks",
            Limit::RoutesV4 => "routes_v4",
            Limit::RoutesV6 => "routes_v6",
            Limit::Write => "map_write",
        }
    }

    fn table(self) -> &'static str {
        match self {
            Limit::Nexthops => "next-hop table",
            Limit::Groups => "group table",
            Limit::Slots => "slot pool",
            Limit::TxPorts => "redirect port map",
            Limit::DirChunks => "IPv4 DIR-24-8 chunk table",
            Limit::RoutesV4 => "IPv4 route table",
            Limit::RoutesV6 => "IPv6 route table",
            Limit::Write => "map write",
        }
    }

    /// The constant of bpf/include/xe_abi.h that sets the size.
    fn constant(self) -> &'static str {
        match self {
            Limit::Nexthops => "XE_MAX_NEXTHOPS",
            Limit::Groups => "XE_MAX_GROUPS",
            Limit::Slots => "XE_MAX_SLOTS",
            Limit::TxPorts => "XE_MAX_TXPORTS",
            Limit::DirChunks => "XE_MAX_DIR_CHUNKS",
            Limit::RoutesV4 => "XE_MAX_ROUTES_V4",
            Limit::RoutesV6 => "XE_MAX_ROUTES_V6",
            Limit::Write => "",
        }
    }

    /// How to raise the limit: a config key where the size is chosen at
    /// load, else the constant to change and rebuild.
    fn how_to_raise(self) -> String {
        match self {
            Limit::Slots => "raise slot_pool (--slot-pool) on new pins".into(),
            Limit::RoutesV4 => "raise max_routes_v4 (--max-routes-v4) on new pins".into(),
            Limit::RoutesV6 => "raise max_routes_v6 (--max-routes-v6) on new pins".into(),
            _ => format!(
                "raise {} in bpf/include/xe_abi.h and rebuild",
                self.constant()
            ),
        }
    }

    fn size(self, l: &Limits) -> u32 {
        match self {
            Limit::Nexthops => l.nexthops,
            Limit::Groups => l.groups,
            Limit::Slots => l.slots,
            Limit::TxPorts => l.txports,
            Limit::DirChunks => l.dir_chunks,
            Limit::RoutesV4 => l.routes_v4,
            Limit::RoutesV6 => l.routes_v6,
            Limit::Write => 0,
        }
    }
}

/// What became of an object that waits, and the error that stopped it.
#[derive(Debug, Clone)]
struct Wait {
    status: &'static str,
    error: Option<String>,
}

/// What waits for room, as found by the last sync, and when that changes, a log line.
#[derive(Debug, Default)]
pub struct Shortfalls {
    limits: Limits,
    waiting: BTreeMap<(Limit, String), Wait>,
    /// Noted during the sync under way.
    now: BTreeMap<(Limit, String), Wait>,
}

impl Shortfalls {
    pub fn new(limits: Limits) -> Self {
        Shortfalls {
            limits,
            ..Default::default()
        }
    }

    /// `object` waits for room in `limit` (or, with `Limit::Write`, a map
    /// write failed with `error`); `status` says what became of it and of
    /// its packets ("is not written: its routes pass packets to the kernel").
    pub fn note(
        &mut self,
        limit: Limit,
        object: String,
        status: &'static str,
        error: Option<String>,
    ) {
        self.now.insert((limit, object), Wait { status, error });
    }

    /// Ends a sync: logs what started waiting and what no longer waits.
    /// Whatever still waits is noted again by every sync (it is retried).
    pub fn finish_sync(&mut self) {
        let now = std::mem::take(&mut self.now);
        for ((limit, object), w) in &now {
            if self.waiting.contains_key(&(*limit, object.clone())) {
                continue;
            }
            let error = w
                .error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            if *limit == Limit::Write {
                tracing::warn!(
                    limit = limit.name(),
                    "{object} {}; a map write failed{error}; retried every sync",
                    w.status
                );
            } else {
                tracing::warn!(
                    limit = limit.name(),
                    "{} full ({} = {}){error}: {object} {} until room frees (retried every sync). \
                     Delete routes, or {}",
                    limit.table(),
                    limit.constant(),
                    limit.size(&self.limits),
                    w.status,
                    limit.how_to_raise()
                );
            }
        }
        for (limit, object) in self.waiting.keys() {
            if !now.contains_key(&(*limit, object.clone())) {
                tracing::info!(
                    limit = limit.name(),
                    "{object} no longer waits for the {}",
                    limit.table()
                );
            }
        }
        self.waiting = now;
    }

    /// Objects waiting now, per limit (every limit listed, zeros included).
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        let mut n: BTreeMap<Limit, u64> = Limit::ALL.iter().map(|l| (*l, 0)).collect();
        for (limit, _) in self.waiting.keys() {
            *n.entry(*limit).or_default() += 1;
        }
        n.into_iter().map(|(l, c)| (l.name(), c)).collect()
    }

    /// The objects waiting, each with the limit it waits for.
    pub fn objects(&self) -> BTreeSet<(Limit, String)> {
        self.waiting.keys().cloned().collect()
    }
}
