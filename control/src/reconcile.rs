//! The reconciler: turns the translated kernel state into map writes, in an order that never exposes a torn state to a packet.
//!
//! Order of a sync: tx ports, then next hops (a next hop whose MAC or port
//! changes gets a fresh id; only its state bits, NH_TXPORT included, are
//! updated in place), then
//! group slots (a resized group is written to a fresh window of the slot pool
//! and switched with one 8-byte group update; same-size changes rewrite single
//! 4-byte slots), then routes (`routes`), and only then are unused groups,
//! next hops and ports retired. So a packet can meet a bucket pointing to an
//! old next hop, never to a removed one or to one without a MAC.
//!
//! What a sync unlinks (a group's old slot window, a retired group id or
//! next-hop id) may still be in use by a packet on another CPU: it is held
//! until a grace period that began after the sync's last write is over
//! (`dataplane::grace`), and only then handed out again.
//!
//! No kernel state makes a sync fail. What finds no room in a table, or
//! whose map write fails, stays out and is tried again by every sync; its
//! packets go to the kernel meanwhile: a next hop's buckets hold no next hop
//! (the program passes), a port's next hops lack NH_TXPORT, a group's routes
//! are written as a pass, and a route with no room of its own makes the
//! prefixes covering it pass (`capacity` logs and counts each).

mod describe;
mod routes;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use ahash::{AHashMap as HashMap, AHashSet as HashSet};

use dataplane::abi::{
    xe_group, xe_nexthop, xe_route, GROUP_MODULO, GROUP_RESILIENT, NH_LINK_UP, NH_TXPORT, NH_VALID,
    RT_UNICAST,
};
use dataplane::grace::{GracePeriods, Quarantine};
use dataplane::{Dataplane, TableWriter};

use crate::capacity::{Limit, Limits, Shortfalls};
use crate::pools::{IdPool, SlotPool, Window, Windows};
use crate::resilient::{BucketTable, Member, TableConfig};
use crate::state::{Dirty, KernelState, PathKey, Prefix, WeightedPath};
use crate::translate::{
    add_paths, group_for_key, modulo_slot_counts, route_verdict, Desired, DesiredGroup,
    DesiredRoute, GroupKey, GroupPlan, PlainGroupMode, Verdicts, MAX_MODULO_SLOTS,
};

/// Path ids found in adopted next hops above this are not taken over (ids
/// are handed out from 1 and never freed: a larger one is not ours).
const MAX_ADOPTED_PATH_ID: u32 = 1 << 24;

/// How long the table of a prefix that stopped forwarding is kept for its return.
const RECENT_MS: u64 = 10_000;

/// What became of an object that could not be written, and of its packets.
const NEXTHOP_STATUS: &str = "is not written: its buckets pass packets to the kernel";
const PORT_STATUS: &str =
    "is not in the redirect map: next hops on it pass packets to the kernel (no NH_TXPORT)";
const GROUP_STATUS: &str = "is not written: its routes pass packets to the kernel";

/// What the reconciler wrote for one path.
#[derive(Debug, Clone, Copy)]
struct WrittenNexthop {
    id: u32,
    nh: xe_nexthop,
}

fn same_except_state(a: &xe_nexthop, b: &xe_nexthop) -> bool {
    a.ifindex == b.ifindex
        && a.mtu == b.mtu
        && a.vlan == b.vlan
        && a.dmac == b.dmac
        && a.smac == b.smac
}

fn same(a: &xe_nexthop, b: &xe_nexthop) -> bool {
    same_except_state(a, b) && a.state == b.state
}

/// Something a sync unlinked, reusable after a grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unlinked {
    Window { base: u32, size: u32 },
    Group(u32),
    Nexthop(u32),
}

/// A group as written.
#[derive(Debug)]
struct WrittenGroup {
    id: u32,
    /// Its slot window: where, and since when its stamps are its own.
    window: Window,
    /// Next-hop id per slot, as written.
    slots: Vec<u32>,
    mode: u8,
    /// The bucket table of a group we balance ourselves; members are stable path ids.
    table: Option<BucketTable>,
    /// Its live members in `xe_pin_members`: path id → next-hop id.
    members: BTreeMap<u32, u32>,
    /// Its membership generation in `xe_group_gen` (0: none written).
    gen: u32,
}

/// Counts of what one sync wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub nexthops_written: usize,
    pub slots_written: usize,
    pub groups_written: usize,
    pub routes_written: usize,
    pub routes_deleted: usize,
    pub buckets_moved: usize,
}

/// Errors of `adopt` name the object that failed.
pub type Result<T> = anyhow::Result<T>;

/// The name of a port, for log lines.
fn port_name(ks: &KernelState, ifindex: u32) -> String {
    match ks.links.get(&ifindex) {
        Some(l) if !l.name.is_empty() => l.name.clone(),
        _ => format!("ifindex {ifindex}"),
    }
}

fn describe_path(ks: &KernelState, p: &PathKey) -> String {
    match p.gateway {
        Some(gw) => format!("{gw} dev {}", port_name(ks, p.ifindex)),
        None => format!("dev {}", port_name(ks, p.ifindex)),
    }
}

fn describe_group(ks: &KernelState, key: &GroupKey) -> String {
    match key {
        GroupKey::Nexthop(id) => format!("the group of nexthop object {id}"),
        GroupKey::Paths(paths) => {
            let mut via: Vec<String> = paths
                .iter()
                .take(4)
                .map(|w| describe_path(ks, &w.path))
                .collect();
            if paths.len() > 4 {
                via.push(format!("{} more", paths.len() - 4));
            }
            format!("the group via {}", via.join(", "))
        }
    }
}

/// A member stays in its group while its link is up, resolved or not
/// (packets to an unresolved one go to the kernel, which resolves it), and
/// written or not (a next hop that found no room holds its buckets empty).
fn live(d: &Desired, path: &PathKey) -> bool {
    d.paths
        .get(path)
        .is_some_and(|nh| nh.state & (NH_VALID | NH_LINK_UP) == (NH_VALID | NH_LINK_UP))
}

/// Keeps the dataplane maps equal to the kernel's state.
pub struct Reconciler {
    mode: PlainGroupMode,
    limits: Limits,
    path_ids: HashMap<PathKey, u32>,
    path_id_pool: IdPool,
    nexthops: HashMap<PathKey, WrittenNexthop>,
    nh_ids: IdPool,
    groups: HashMap<GroupKey, WrittenGroup>,
    group_ids: IdPool,
    pool: SlotPool,
    /// When each part of the slot pool was last written.
    windows: Windows,
    routes: HashMap<Prefix, xe_route>,
    txports: HashSet<u32>,
    /// Ports next hops use that do not transmit redirected frames (logged once).
    no_xdp_tx: HashSet<u32>,
    /// Next-hop ids replaced during this sync, retired once no slot holds them.
    retiring: Vec<u32>,
    /// Unlinked during this sync; held at its end.
    unlinked: Vec<Unlinked>,
    /// Unlinked by earlier syncs, waiting for their grace period.
    held: Quarantine<Unlinked>,
    /// Groups (id, base, size) found in adopted maps that no route kept, freed after the next sync.
    stale_groups: Vec<(u32, u32, u32)>,
    /// The group each forwarding prefix uses, and how many prefixes use each group.
    route_groups: HashMap<Prefix, GroupKey>,
    group_refs: HashMap<GroupKey, usize>,
    /// Bucket tables new groups start from (their routes' previous group),
    /// with the window whose stamps tell which buckets are busy.
    inherited: HashMap<GroupKey, (BucketTable, Window)>,
    /// Prefixes that stopped forwarding lately: the group each left, when.
    recent: HashMap<Prefix, (GroupKey, u64)>,
    /// The tables of the groups those prefixes left (table, window, when
    /// taken), one per group, not one per prefix: a group's table is read
    /// from it when the group itself is gone.
    recent_tables: HashMap<GroupKey, (BucketTable, Window, u64)>,
    /// What waits for room.
    short: Shortfalls,
    /// Forwarding routes whose group is not written: written as a pass.
    passed: HashSet<Prefix>,
    /// Routes not in the maps for want of room in their table.
    unwritten: BTreeMap<Prefix, Limit>,
    /// Routes written as a pass while a longer prefix under them is
    /// unwritten, with the entry they want.
    demoted: HashMap<Prefix, xe_route>,
    /// Prefixes the next sync looks at again, dirty or not.
    retry: HashSet<Prefix>,
    /// Routes in the maps per family, and per /24 the IPv4 routes longer
    /// than /24 in it (each such /24 takes a DIR-24-8 chunk).
    count_v4: u32,
    count_v6: u32,
    chunks: HashMap<u32, u32>,
    /// Prefixes whose routes (those inside them) pin their flows.
    pinned: Vec<Prefix>,
    /// Memberships found in adopted maps of groups not adopted, removed by
    /// the first sync.
    stale_members: Vec<(u32, u32)>,
    /// The next membership generation: one counter for every group, which
    /// only grows (also across restarts: adopted from the maps).
    next_gen: u32,
}

impl Reconciler {
    pub fn new(mode: PlainGroupMode) -> Self {
        Self::with_limits(mode, Limits::default())
    }

    /// A reconciler for maps of the given sizes.
    pub fn with_limits(mode: PlainGroupMode, limits: Limits) -> Self {
        Reconciler {
            mode,
            limits,
            path_ids: HashMap::new(),
            path_id_pool: IdPool::new(u32::MAX),
            nexthops: HashMap::new(),
            nh_ids: IdPool::new(limits.nexthops),
            groups: HashMap::new(),
            group_ids: IdPool::new(limits.groups),
            pool: SlotPool::new(limits.slots),
            windows: Windows::default(),
            routes: HashMap::new(),
            txports: HashSet::new(),
            no_xdp_tx: HashSet::new(),
            retiring: Vec::new(),
            unlinked: Vec::new(),
            held: Quarantine::default(),
            stale_groups: Vec::new(),
            route_groups: HashMap::new(),
            group_refs: HashMap::new(),
            inherited: HashMap::new(),
            recent: HashMap::new(),
            recent_tables: HashMap::new(),
            short: Shortfalls::new(limits),
            passed: HashSet::new(),
            unwritten: BTreeMap::new(),
            demoted: HashMap::new(),
            retry: HashSet::new(),
            count_v4: 0,
            count_v6: 0,
            chunks: HashMap::new(),
            pinned: Vec::new(),
            stale_members: Vec::new(),
            next_gen: 1,
        }
    }

    /// Pins the flows of routes inside any of `prefixes` (their groups'
    /// live members are then kept in `xe_pin_members`). Set before the
    /// first sync.
    pub fn set_pinned(&mut self, prefixes: Vec<Prefix>) {
        self.pinned = prefixes;
    }

    fn pins(&self, p: &Prefix) -> bool {
        self.pinned
            .iter()
            .any(|outer| crate::state::contains(outer, p))
    }

    /// The group id a route forwards through, if written.
    pub fn group_id(&self, key: &GroupKey) -> Option<u32> {
        self.groups.get(key).map(|g| g.id)
    }

    /// Per group balanced here: the largest |held/wanted - 1| over its members.
    pub fn imbalance(&self) -> Vec<(u32, f64)> {
        self.groups
            .values()
            .filter_map(|g| {
                let t = g.table.as_ref()?;
                let worst = t
                    .held_counts()
                    .iter()
                    .zip(t.wanted_counts())
                    .filter(|(_, w)| **w > 0)
                    .map(|(h, w)| (f64::from(*h) / f64::from(*w) - 1.0).abs())
                    .fold(0.0, f64::max);
                Some((g.id, worst))
            })
            .collect()
    }

    /// Next-hop ids in use and their egress ifindex.
    pub fn nexthops_in_use(&self) -> Vec<(u32, u32)> {
        let mut v: Vec<(u32, u32)> = self
            .nexthops
            .values()
            .map(|w| (w.id, w.nh.ifindex))
            .collect();
        v.sort_unstable();
        v
    }

    /// Per limit, how many objects (next hops, groups, ports, routes) wait
    /// for room in it now.
    pub fn shortfalls(&self) -> Vec<(&'static str, u64)> {
        self.short.counts()
    }

    /// The objects waiting for room, each with its limit.
    pub fn waiting(&self) -> std::collections::BTreeSet<(Limit, String)> {
        self.short.objects()
    }

    /// Routes whose packets the program passes to the kernel for want of
    /// room: routes of unwritten groups, routes not in the maps, and the
    /// prefixes covering those.
    pub fn routes_to_kernel(&self) -> usize {
        self.passed.len() + self.unwritten.len() + self.demoted.len()
    }

    /// Takes over what a previous run left in pinned maps: routes, their
    /// groups, slots and next hops are matched to the kernel's state and kept
    /// as they are (bucket tables included, so no flow moves on a restart);
    /// everything else they reference is reserved until the first sync has
    /// moved routes off it. Returns how many groups were adopted.
    pub fn adopt(&mut self, ks: &KernelState, dp: &Dataplane, now_ms: u64) -> Result<usize> {
        let existing = crate::check::map_routes(dp)?;
        // Reserve everything the old maps reference.
        let mut old_groups: HashMap<u32, (xe_group, Vec<u32>)> = HashMap::new();
        for r in existing
            .values()
            .filter(|r| r.kind == RT_UNICAST && r.group != 0)
        {
            if old_groups.contains_key(&r.group) {
                continue;
            }
            // What cannot be read back is not adopted: the first sync writes it anew.
            let Ok(g) = dp.group(r.group) else { continue };
            let Ok(slots) = dp.slots(g.base, u32::from(g.size)) else {
                continue;
            };
            if g.mode == 0 || !self.pool.reserve(g.base, u32::from(g.size)) {
                continue;
            }
            for id in &slots {
                self.nh_ids.reserve(*id);
            }
            self.group_ids.reserve(r.group);
            old_groups.insert(r.group, (g, slots));
        }
        // Each old group goes to the group the first route using it (in
        // prefix order) wants now, unless another took that one. What a
        // route wants is asked route by route, and only until every old
        // group is adopted: with 1M routes over a few groups, a handful of
        // routes decide (translating every route took seconds). A heap,
        // not a sort, gives the prefix order: only the first few come out
        // (sorting 1M prefixes took most of what adoption had left).
        let plain = self.mode.plan();
        let mut in_order: BinaryHeap<Reverse<(Prefix, u32)>> = if old_groups.is_empty() {
            BinaryHeap::new()
        } else {
            existing
                .iter()
                .filter(|(_, r)| old_groups.contains_key(&r.group))
                .map(|(p, r)| Reverse((*p, r.group)))
                .collect()
        };
        let mut paths: BTreeMap<PathKey, xe_nexthop> = BTreeMap::new();
        let mut adopted_nh: HashSet<u32> = HashSet::new();
        let mut adopted_groups: HashSet<u32> = HashSet::new();
        while let Some(Reverse((prefix, group))) = in_order.pop() {
            if adopted_groups.len() == old_groups.len() {
                break;
            }
            let Some((g, slots)) = old_groups.get(&group) else {
                continue;
            };
            if adopted_groups.contains(&group) {
                continue;
            }
            let Some(DesiredRoute::Forward(key)) = route_verdict(ks, &prefix, &plain) else {
                continue;
            };
            if self.groups.contains_key(&key) {
                continue;
            }
            let Some(dg) = group_for_key(ks, &key, &plain) else {
                continue;
            };
            add_paths(ks, &dg, &mut paths);
            // Map each old next hop to the member path it serves (same port and MAC).
            let mut path_of_nh: HashMap<u32, PathKey> = HashMap::new();
            let mut read: HashMap<u32, xe_nexthop> = HashMap::new();
            for id in slots.iter().filter(|id| **id != 0) {
                let Ok(nh) = dp.nexthop(*id) else { continue };
                read.insert(*id, nh);
                let found = dg.members.iter().map(|m| m.path).find(|p| {
                    paths.get(p).is_some_and(|w| {
                        w.ifindex == nh.ifindex && (w.dmac == nh.dmac || nh.dmac == [0; 6])
                    })
                });
                if let Some(p) = found {
                    path_of_nh.insert(*id, p);
                }
            }
            if path_of_nh.is_empty() {
                continue;
            }
            for (id, p) in &path_of_nh {
                if !self.nexthops.contains_key(p) {
                    self.nexthops.insert(
                        *p,
                        WrittenNexthop {
                            id: *id,
                            nh: read[id],
                        },
                    );
                    adopted_nh.insert(*id);
                }
                if !self.path_ids.contains_key(p) {
                    // The id the previous run gave the path, which its
                    // pinned flows name, if no other path took it.
                    let old = read[id].path;
                    let pid = if old != 0
                        && old < MAX_ADOPTED_PATH_ID
                        && !self.path_ids.values().any(|v| *v == old)
                    {
                        self.path_id_pool.reserve(old);
                        old
                    } else {
                        self.path_id_pool
                            .alloc()
                            .ok_or_else(|| anyhow::anyhow!("out of path ids"))?
                    };
                    self.path_ids.insert(*p, pid);
                }
            }
            let table = match &dg.plan {
                GroupPlan::Resilient {
                    idle_timer_ms,
                    unbalanced_timer_ms,
                    ..
                } if dg.plan.fits(slots.len()) => {
                    let members: Vec<Member> = dg
                        .members
                        .iter()
                        .filter(|m| path_of_nh.values().any(|p| *p == m.path))
                        .map(|m| Member::new(self.path_ids[&m.path], m.weight))
                        .collect();
                    let assignment: Vec<Option<u32>> = slots
                        .iter()
                        .map(|id| path_of_nh.get(id).map(|p| self.path_ids[p]))
                        .collect();
                    BucketTable::from_assignment(
                        TableConfig::new(slots.len(), *idle_timer_ms, *unbalanced_timer_ms),
                        &members,
                        &assignment,
                        now_ms,
                    )
                    .ok()
                }
                _ => None,
            };
            adopted_groups.insert(group);
            // Stamps of a previous run count: its window is as old as they are.
            let window = self.windows.written(g.base, u32::from(g.size), 0);
            self.groups.insert(
                key.clone(),
                WrittenGroup {
                    id: group,
                    window,
                    slots: slots.clone(),
                    mode: g.mode,
                    table,
                    members: BTreeMap::new(),
                    gen: 0,
                },
            );
        }
        // Generations go on from the largest any group has (flow entries
        // may hold any of them); adopted groups keep theirs.
        for (group, gen) in dp.group_gens() {
            self.next_gen = self.next_gen.max(gen.saturating_add(1));
            if let Some(w) = self.groups.values_mut().find(|w| w.id == group) {
                w.gen = gen;
            }
        }
        // Memberships of adopted groups stay as found (the first sync
        // corrects them); those of any other group go after it.
        let ids: HashMap<u32, GroupKey> =
            self.groups.iter().map(|(k, w)| (w.id, k.clone())).collect();
        for (group, path, nh) in dp.pin_members() {
            match ids.get(&group).and_then(|k| self.groups.get_mut(k)) {
                Some(w) => {
                    w.members.insert(path, nh);
                }
                None => self.stale_members.push((group, path)),
            }
        }
        // Old groups no route kept, and next hops no adopted group uses, go after the first sync.
        for (id, (g, slots)) in &old_groups {
            if !adopted_groups.contains(id) {
                self.stale_groups.push((*id, g.base, u32::from(g.size)));
                for nh in slots {
                    if *nh != 0 && !adopted_nh.contains(nh) && !self.retiring.contains(nh) {
                        self.retiring.push(*nh);
                    }
                }
            }
        }
        self.routes = existing;
        self.count_routes();
        Ok(adopted_groups.len())
    }

    /// Brings the maps to the kernel's state for the prefixes in `dirty`
    /// (every group and next hop is rechecked each time; there are few),
    /// and retries what earlier syncs found no room for. Never fails: what
    /// cannot be written is logged, counted and left to the kernel.
    /// `now_ms` drives resilient timers; `last_used(slot)` gives a slot's
    /// last use in the same clock.
    pub fn sync(
        &mut self,
        ks: &KernelState,
        dirty: &Dirty,
        dp: &mut dyn TableWriter,
        now_ms: u64,
        last_used: &dyn Fn(u32) -> Option<u64>,
    ) -> SyncStats {
        let plain = self.mode.plan();
        let grace = dp.grace();
        self.reclaim(&grace, dp, false);
        // Every verdict, then in prefix order (the maps are written in
        // order). A full sync takes the mirrored routes in their map's own
        // order, each read where it lies: looked up by prefix, a sync of
        // 1M routes missed the cache on every one.
        let mut vs = Verdicts::new(ks, plain.clone());
        let mut verdicts: Vec<(Prefix, Option<DesiredRoute>)> = match dirty {
            Dirty::All => {
                let mut v: Vec<_> = ks
                    .routes
                    .iter()
                    .map(|(p, m)| (*p, vs.within(p, m)))
                    .collect();
                let rest = ks.local_routes.keys().chain(self.routes.keys());
                let rest: Vec<Prefix> = rest
                    .filter(|p| !ks.routes.contains_key(*p))
                    .copied()
                    .collect();
                v.extend(rest.iter().map(|p| (*p, vs.route(p))));
                v
            }
            Dirty::Prefixes(set) => set.iter().map(|p| (*p, vs.route(p))).collect(),
        };
        verdicts.extend(self.retry.drain().map(|p| (p, vs.route(&p))));
        verdicts.sort_unstable_by_key(|v| v.0);
        verdicts.dedup_by_key(|v| v.0);
        // Room for every route at once (a first sync of 1M routes grew each
        // map through twenty rehashes).
        let forwarding = verdicts
            .iter()
            .filter(|v| matches!(v.1, Some(DesiredRoute::Forward(_))))
            .count();
        let (grouped, held) = (self.route_groups.len(), self.routes.len());
        // With no route in a group (as at the first sync), no prefix has one
        // to leave: none is looked up (a cache miss each, a million times).
        let first = grouped == 0;
        self.route_groups
            .reserve(forwarding.saturating_sub(grouped));
        self.routes.reserve(verdicts.len().saturating_sub(held));
        let mut inherit: HashMap<GroupKey, GroupKey> = HashMap::new();
        self.recent
            .retain(|_, r| now_ms.saturating_sub(r.1) < RECENT_MS);
        self.recent_tables
            .retain(|_, r| now_ms.saturating_sub(r.2) < RECENT_MS);
        for (p, verdict) in &verdicts {
            let p = *p;
            let old_key = if first {
                None
            } else {
                self.route_groups.remove(&p)
            };
            if let Some(old) = &old_key {
                if let Some(n) = self.group_refs.get_mut(old) {
                    *n -= 1;
                    if *n == 0 {
                        self.group_refs.remove(old);
                    }
                }
            }
            if let Some(DesiredRoute::Forward(key)) = verdict {
                if old_key.as_ref() != Some(key) {
                    tracing::debug!(prefix = ?p, from = ?old_key, to = ?key, "route changes group");
                }
                // Looked up before it is cloned: most routes share a group.
                match self.group_refs.get_mut(key) {
                    Some(n) => *n += 1,
                    None => {
                        self.group_refs.insert(key.clone(), 1);
                    }
                }
                if let Some(old) = &old_key {
                    // A route whose member set changed (as a routing daemon
                    // replaces it) starts its new group from the old table, so
                    // only the buckets of members that left move.
                    if old != key && !self.groups.contains_key(key) {
                        inherit.entry(key.clone()).or_insert_with(|| old.clone());
                    }
                } else if !self.groups.contains_key(key) {
                    // Or the route was deleted and comes back (a routing
                    // daemon swapping nexthop groups can do that in two steps).
                    if let Some((left, _)) = self.recent.remove(&p) {
                        // The group it left, if it still forwards, else its
                        // table as it was when routes left it.
                        let table = match self.groups.get(&left) {
                            Some(g) => g.table.clone().map(|t| (t, g.window)),
                            None => self.recent_tables.get(&left).map(|r| (r.0.clone(), r.1)),
                        };
                        if let Some(t) = table {
                            self.inherited.entry(key.clone()).or_insert(t);
                        }
                    }
                }
                let kept = match old_key {
                    Some(old) if old == *key => old,
                    _ => key.clone(),
                };
                self.route_groups.insert(p, kept);
            } else if let Some((old, g)) = old_key
                .as_ref()
                .and_then(|k| Some((k, self.groups.get(k)?)))
            {
                tracing::debug!(prefix = ?p, from = ?old_key, "route stops forwarding");
                // Leaving forwarding: remember its group for a while, and
                // the group's table (taken again at most once a second:
                // a copy per prefix cost a table per deleted route).
                if let Some(t) = &g.table {
                    self.recent.insert(p, (old.clone(), now_ms));
                    let fresh = self
                        .recent_tables
                        .get(old)
                        .is_some_and(|r| now_ms.saturating_sub(r.2) < 1000);
                    if !fresh {
                        self.recent_tables
                            .insert(old.clone(), (t.clone(), g.window, now_ms));
                    }
                }
            }
        }
        // Written in the same order.
        let mut updates = verdicts;
        let mut d = Desired::default();
        for key in self.group_refs.keys() {
            if let Some(g) = group_for_key(ks, key, &plain) {
                add_paths(ks, &g, &mut d.paths);
                d.groups.insert(key.clone(), g);
            }
        }
        let mut st = SyncStats::default();
        self.sync_txports(ks, &d, dp);
        self.sync_nexthops(ks, &d, dp, &mut st);
        for (new, old) in &inherit {
            if let Some(g) = self.groups.get(old) {
                if let Some(t) = g.table.clone() {
                    self.inherited.insert(new.clone(), (t, g.window));
                }
            }
        }
        let failed = self.sync_groups(ks, &d, dp, now_ms, last_used, &mut st);
        // A group not written keeps the table it would start from.
        self.inherited.retain(|k, _| failed.contains(k));
        if !failed.is_empty() {
            // Its routes pass to the kernel, whether they changed or not.
            let listed: HashSet<Prefix> = updates.iter().map(|u| u.0).collect();
            for (p, key) in &self.route_groups {
                if failed.contains(key) && !listed.contains(p) {
                    updates.push((*p, vs.route(p)));
                }
            }
        }
        self.sync_routes(&updates, &failed, dp, &mut st);
        self.retire(ks, &d, dp);
        // Every unlinking store of this sync is done: what it unlinked is
        // reusable once the packets that may hold it have left the program.
        if !self.unlinked.is_empty() {
            let cookie = grace.cookie();
            for u in std::mem::take(&mut self.unlinked) {
                self.held.hold(cookie, u);
            }
        }
        self.short.finish_sync();
        st
    }

    /// Hands back what earlier syncs unlinked and whose grace period is
    /// over; with `wait`, first waits for the oldest. Unlinked groups and next
    /// hops are cleared only now: a packet that picked up the id just before
    /// it was unlinked still reads the whole old entry, never a cleared or
    /// half-cleared one. Whether anything came back.
    fn reclaim(&mut self, grace: &GracePeriods, dp: &mut dyn TableWriter, wait: bool) -> bool {
        let back = if wait {
            self.held.release_waiting(grace)
        } else {
            self.held.release(grace)
        };
        let any = !back.is_empty();
        // A failed clear leaves an entry nothing reaches; it is overwritten
        // whole when the id is handed out again.
        let logged = |r: dataplane::Result<()>, what: String| {
            if let Err(e) = r {
                tracing::warn!("clearing {what} failed: {e}; no route reaches it");
            }
        };
        for u in back {
            match u {
                Unlinked::Window { base, size } => self.pool.release(base, size),
                Unlinked::Group(id) => {
                    logged(
                        dp.set_group(id, &xe_group::default()),
                        format!("group {id}"),
                    );
                    self.group_ids.release(id);
                }
                Unlinked::Nexthop(id) => {
                    logged(
                        dp.set_nexthop(id, &xe_nexthop::default()),
                        format!("next hop {id}"),
                    );
                    self.nh_ids.release(id);
                }
            }
        }
        any
    }

    /// Allocates with `alloc`; when it finds nothing, waits for what earlier
    /// syncs unlinked to come back and tries again.
    fn alloc_or_wait<T>(
        &mut self,
        dp: &mut dyn TableWriter,
        mut alloc: impl FnMut(&mut Self) -> Option<T>,
    ) -> Option<T> {
        let grace = dp.grace();
        loop {
            if let Some(v) = alloc(self) {
                return Some(v);
            }
            if !self.reclaim(&grace, dp, true) {
                return None;
            }
        }
    }

    /// Puts every port a next hop uses in the redirect map; a port that
    /// finds no room stays out and its next hops go without NH_TXPORT.
    fn sync_txports(&mut self, ks: &KernelState, d: &Desired, dp: &mut dyn TableWriter) {
        for p in d.paths.keys() {
            if !ks.transmits(p.ifindex) {
                if self.no_xdp_tx.insert(p.ifindex) {
                    tracing::warn!(
                        port = port_name(ks, p.ifindex),
                        "port does not transmit redirected XDP frames (a bridge, bond, VLAN or tunnel device, a driver without XDP, or a veth whose peer has no XDP program and no GRO): its next hops go to the kernel"
                    );
                }
                continue;
            }
            if self.no_xdp_tx.remove(&p.ifindex) {
                tracing::info!(
                    port = port_name(ks, p.ifindex),
                    "port transmits redirected XDP frames again: its next hops are forwarded"
                );
            }
            if self.txports.contains(&p.ifindex) {
                continue;
            }
            let port = format!("port {}", port_name(ks, p.ifindex));
            if self.txports.len() >= self.limits.txports as usize {
                self.short.note(Limit::TxPorts, port, PORT_STATUS, None);
                continue;
            }
            match dp.add_txport(p.ifindex) {
                Ok(()) => {
                    self.txports.insert(p.ifindex);
                }
                Err(e) => {
                    self.short
                        .note(Limit::TxPorts, port, PORT_STATUS, Some(e.to_string()));
                }
            }
        }
    }

    fn sync_nexthops(
        &mut self,
        ks: &KernelState,
        d: &Desired,
        dp: &mut dyn TableWriter,
        st: &mut SyncStats,
    ) {
        // Bucket tables name members by path id, written or not.
        for path in d.paths.keys() {
            if !self.path_ids.contains_key(path) {
                if let Some(id) = self.path_id_pool.alloc() {
                    self.path_ids.insert(*path, id);
                }
            }
        }
        for (path, want) in &d.paths {
            // sync_txports ran first: the port is in the redirect map, and
            // the next hop says so (the program does not look it up).
            let mut want = *want;
            if self.txports.contains(&path.ifindex) && ks.transmits(path.ifindex) {
                want.state |= NH_TXPORT;
            }
            // A pinned flow keeps this id while the path lives, whatever
            // next-hop id it has.
            want.path = self.path_ids.get(path).copied().unwrap_or(0);
            let want = &want;
            let what = || format!("next hop {}", describe_path(ks, path));
            match self.nexthops.get(path).copied() {
                Some(w) if same(&w.nh, want) => {}
                Some(w) if same_except_state(&w.nh, want) => match dp.set_nexthop(w.id, want) {
                    Ok(()) => {
                        self.nexthops.insert(
                            *path,
                            WrittenNexthop {
                                id: w.id,
                                nh: *want,
                            },
                        );
                        st.nexthops_written += 1;
                    }
                    Err(e) => self.short.note(
                        Limit::Write,
                        what(),
                        "is not rewritten: its entry keeps its old state bits",
                        Some(e.to_string()),
                    ),
                },
                old => {
                    // New contents under a new id: slots switch to it one by one.
                    let written = match self.alloc_or_wait(dp, |r| r.nh_ids.alloc()) {
                        None => {
                            self.short
                                .note(Limit::Nexthops, what(), NEXTHOP_STATUS, None);
                            None
                        }
                        Some(id) => match dp.set_nexthop(id, want) {
                            Ok(()) => Some(id),
                            Err(e) => {
                                // Never linked: the id is free at once.
                                self.nh_ids.release(id);
                                self.short.note(
                                    Limit::Write,
                                    what(),
                                    NEXTHOP_STATUS,
                                    Some(e.to_string()),
                                );
                                None
                            }
                        },
                    };
                    match written {
                        Some(id) => {
                            self.nexthops
                                .insert(*path, WrittenNexthop { id, nh: *want });
                            st.nexthops_written += 1;
                        }
                        // Its old contents are no longer right: its buckets empty.
                        None => {
                            self.nexthops.remove(path);
                        }
                    }
                    if let Some(o) = old {
                        // Still in slots until the groups are rewritten below.
                        self.retiring.push(o.id);
                    }
                }
            }
        }
    }

    fn nh_id(&self, path: &PathKey) -> u32 {
        self.nexthops.get(path).map_or(0, |w| w.id)
    }

    /// Writes every group; returns those that could not be (their routes
    /// then pass to the kernel).
    fn sync_groups(
        &mut self,
        ks: &KernelState,
        d: &Desired,
        dp: &mut dyn TableWriter,
        now_ms: u64,
        last_used: &dyn Fn(u32) -> Option<u64>,
        st: &mut SyncStats,
    ) -> HashSet<GroupKey> {
        let path_of_id: HashMap<u32, PathKey> =
            self.path_ids.iter().map(|(p, id)| (*id, *p)).collect();
        let mut failed = HashSet::new();
        for (key, g) in &d.groups {
            let live: Vec<WeightedPath> = g
                .members
                .iter()
                .filter(|m| live(d, &m.path))
                .copied()
                .collect();
            let planned = self.plan_slots(key, g, &live, &path_of_id, now_ms, last_used, st);
            let (mode, slots, table) = match planned {
                Ok(p) => p,
                Err(e) => {
                    self.short
                        .note(Limit::Write, describe_group(ks, key), GROUP_STATUS, Some(e));
                    failed.insert(key.clone());
                    continue;
                }
            };
            match self.write_group(key, mode, &slots, now_ms, dp, st) {
                Ok(()) => {
                    if let Some(w) = self.groups.get_mut(key) {
                        w.table = table;
                    }
                    if !self.pinned.is_empty() {
                        self.write_members(ks, key, &live, dp);
                    }
                }
                Err((limit, error)) => {
                    self.short
                        .note(limit, describe_group(ks, key), GROUP_STATUS, error);
                    failed.insert(key.clone());
                    // Kept for the next attempt, with what it learnt of busy buckets.
                    if let Some(t) = table {
                        match self.groups.get_mut(key) {
                            Some(w) => w.table = Some(t),
                            None => {
                                self.inherited.insert(key.clone(), (t, Window::none()));
                            }
                        }
                    }
                }
            }
        }
        failed
    }

    /// The slots a group wants now: its mode, a next-hop id per slot, and
    /// for a group balanced here, its bucket table.
    #[allow(clippy::too_many_arguments)]
    fn plan_slots(
        &mut self,
        key: &GroupKey,
        g: &DesiredGroup,
        live: &[WeightedPath],
        path_of_id: &HashMap<u32, PathKey>,
        now_ms: u64,
        last_used: &dyn Fn(u32) -> Option<u64>,
        st: &mut SyncStats,
    ) -> std::result::Result<(u8, Vec<u32>, Option<BucketTable>), String> {
        Ok(match &g.plan {
            GroupPlan::Modulo => {
                let weights: Vec<u32> = live.iter().map(|m| m.weight).collect();
                let slots: Vec<u32> = live
                    .iter()
                    .zip(modulo_slot_counts(&weights))
                    .flat_map(|(m, n)| std::iter::repeat_n(self.nh_id(&m.path), n as usize))
                    .collect();
                (GROUP_MODULO, slots, None)
            }
            GroupPlan::KernelBuckets(b) => {
                let slots = b.iter().map(|p| p.map_or(0, |p| self.nh_id(&p))).collect();
                (GROUP_RESILIENT, slots, None)
            }
            plan @ GroupPlan::Resilient {
                buckets,
                max_buckets,
                idle_timer_ms,
                unbalanced_timer_ms,
            } => {
                let members: Vec<Member> = live
                    .iter()
                    .map(|m| Member::new(self.path_ids[&m.path], m.weight))
                    .collect();
                // The group's own table, or the one its routes had before;
                // with the window whose stamps say which buckets are busy.
                let existing = self
                    .groups
                    .get_mut(key)
                    .and_then(|w| Some((w.table.take()?, w.window)))
                    .or_else(|| self.inherited.remove(key));
                let mut table = match existing {
                    // Nothing to move: no stamps to read, no upkeep.
                    Some((t, _))
                        if plan.fits(t.bucket_count())
                            && t.members() == members.as_slice()
                            && t.is_balanced() =>
                    {
                        t
                    }
                    Some((mut t, window)) if plan.fits(t.bucket_count()) => {
                        // Merge, never overwrite: a group written to a new
                        // window keeps what its table knew of busy buckets
                        // until the new window's stamps catch up. Stamps
                        // older than the window are another group's.
                        if window.len as usize == t.bucket_count() {
                            for i in 0..t.bucket_count() {
                                if let Some(ms) = self.windows.last_used(&window, i, last_used) {
                                    t.mark_used(i, ms).map_err(|e| e.to_string())?;
                                }
                            }
                        }
                        let out = t
                            .set_members(&members, now_ms)
                            .map_err(|e| format!("bucket table: {e}"))?;
                        if !out.migrations.is_empty() {
                            tracing::info!(group = ?key, moved = out.migrations.len(), members = members.len(), "members changed: buckets moved");
                        }
                        st.buckets_moved += out.migrations.len();
                        t
                    }
                    _ => {
                        // Its count for life: within 1% of every member's
                        // weight where a count up to the ceiling allows it.
                        let count = crate::bucket_count::choose(
                            &members,
                            usize::from(*buckets),
                            usize::from(*max_buckets),
                        );
                        tracing::info!(group = ?key, members = members.len(), buckets = count, "new bucket table");
                        BucketTable::new(
                            TableConfig::new(count, *idle_timer_ms, *unbalanced_timer_ms),
                            &members,
                            now_ms,
                        )
                        .map_err(|e| format!("bucket table: {e}"))?
                    }
                };
                let upkeep = table.upkeep(now_ms).migrations.len();
                if upkeep > 0 {
                    tracing::info!(group = ?key, moved = upkeep, "idle buckets moved to underweight members");
                }
                st.buckets_moved += upkeep;
                let slots = table
                    .buckets()
                    .iter()
                    .map(|b| {
                        b.and_then(|pid| path_of_id.get(&pid))
                            .map_or(0, |p| self.nh_id(p))
                    })
                    .collect();
                (GROUP_RESILIENT, slots, Some(table))
            }
        })
    }

    /// Writes a group's slots: in place when its size and mode stay, else
    /// in a fresh window switched to with one group store. On failure the
    /// group as written before (if any) is left as it was, and the limit
    /// that stopped it is returned.
    fn write_group(
        &mut self,
        key: &GroupKey,
        mode: u8,
        slots: &[u32],
        now_ms: u64,
        dp: &mut dyn TableWriter,
        st: &mut SyncStats,
    ) -> std::result::Result<(), (Limit, Option<String>)> {
        if slots.len() > MAX_MODULO_SLOTS as usize {
            let e = format!("{} slots do not fit a group's 16-bit size", slots.len());
            return Err((Limit::Write, Some(e)));
        }
        let size = slots.len() as u32;
        if let Some(w) = self.groups.get_mut(key) {
            if w.slots.len() == slots.len() && w.mode == mode {
                for (i, (old, new)) in w.slots.iter_mut().zip(slots).enumerate() {
                    if old != new {
                        dp.set_slots(w.window.base + i as u32, &[*new])
                            .map_err(|e| (Limit::Write, Some(e.to_string())))?;
                        *old = *new;
                        st.slots_written += 1;
                    }
                }
                return Ok(());
            }
        }
        // A new window, filled before the group points at it.
        let base = self
            .alloc_or_wait(dp, |r| r.pool.alloc(size))
            .ok_or((Limit::Slots, None))?;
        // What fails from here was never linked: it is free again at once.
        if let Err(e) = dp.set_slots(base, slots) {
            self.pool.release(base, size);
            return Err((Limit::Write, Some(e.to_string())));
        }
        let (id, new_id) = match self.groups.get(key) {
            Some(w) => (w.id, false),
            None => match self.alloc_or_wait(dp, |r| r.group_ids.alloc()) {
                Some(id) => (id, true),
                None => {
                    self.pool.release(base, size);
                    return Err((Limit::Groups, None));
                }
            },
        };
        let group = xe_group {
            base,
            size: size as u16,
            mode,
            ..Default::default()
        };
        if let Err(e) = dp.set_group(id, &group) {
            self.pool.release(base, size);
            if new_id {
                self.group_ids.release(id);
            }
            return Err((Limit::Write, Some(e.to_string())));
        }
        st.slots_written += slots.len();
        st.groups_written += 1;
        let window = self.windows.written(base, size, now_ms);
        if let Some(old) = self.groups.insert(
            key.clone(),
            WrittenGroup {
                id,
                window,
                slots: slots.to_vec(),
                mode,
                table: None,
                members: BTreeMap::new(),
                gen: 0,
            },
        ) {
            self.unlinked.push(Unlinked::Window {
                base: old.window.base,
                size: old.slots.len() as u32,
            });
        }
        Ok(())
    }

    /// Keeps a group's live members (path id → next-hop id) in
    /// `xe_pin_members`, for pinned flows: added and changed before they are
    /// dropped, so a flow whose path stays never misses it. A member whose
    /// next hop is not written is not one a flow can keep.
    fn write_members(
        &mut self,
        ks: &KernelState,
        key: &GroupKey,
        live: &[WeightedPath],
        dp: &mut dyn TableWriter,
    ) {
        let want: BTreeMap<u32, u32> = live
            .iter()
            .filter_map(|m| Some((*self.path_ids.get(&m.path)?, self.nexthops.get(&m.path)?.id)))
            .collect();
        let Some(w) = self.groups.get_mut(key) else {
            return;
        };
        let id = w.id;
        let same = w.members == want;
        if same && w.gen != 0 {
            return;
        }
        // Flow entries stop trusting their cached next hop before the
        // members change, and trust the new ones only after.
        if !same && w.gen != 0 {
            if let Err(e) = dp.set_group_gen(id, 0) {
                self.short.note(
                    Limit::Write,
                    describe_group(ks, key),
                    "keeps its members for pinned flows as they were",
                    Some(e.to_string()),
                );
                return;
            }
            w.gen = 0;
        }
        let mut failed = None;
        for (path, nh) in &want {
            if w.members.get(path) != Some(nh) {
                match dp.set_pin_member(id, *path, Some(*nh)) {
                    Ok(()) => {
                        w.members.insert(*path, *nh);
                    }
                    Err(e) => failed = Some(e.to_string()),
                }
            }
        }
        let gone: Vec<u32> = w
            .members
            .keys()
            .filter(|p| !want.contains_key(p))
            .copied()
            .collect();
        for path in gone {
            match dp.set_pin_member(id, path, None) {
                Ok(()) => {
                    w.members.remove(&path);
                }
                Err(e) => failed = Some(e.to_string()),
            }
        }
        if failed.is_none() {
            let gen = self.next_gen;
            match dp.set_group_gen(id, gen) {
                Ok(()) => {
                    w.gen = gen;
                    self.next_gen = gen.wrapping_add(1).max(1);
                }
                Err(e) => failed = Some(e.to_string()),
            }
        }
        if let Some(e) = failed {
            // Tried again by the next sync; meanwhile a missing member's
            // flows are hashed again, a stale one's keep a live path or
            // find its next hop unusable; every entry looks its member up.
            self.short.note(
                Limit::Write,
                describe_group(ks, key),
                "has members not recorded for pinned flows: their flows are hashed again",
                Some(e),
            );
        }
    }

    /// Removes what no route uses any more. A store that fails here only
    /// leaves an entry no route reaches.
    fn retire(&mut self, ks: &KernelState, d: &Desired, dp: &mut dyn TableWriter) {
        let dead: Vec<GroupKey> = self
            .groups
            .keys()
            .filter(|k| !d.groups.contains_key(*k))
            .cloned()
            .collect();
        for k in dead {
            if let Some(g) = self.groups.remove(&k) {
                // Its id may be handed out again: no member of it may stay.
                if g.gen != 0 {
                    let _ = dp.set_group_gen(g.id, 0);
                }
                for path in g.members.keys() {
                    let _ = dp.set_pin_member(g.id, *path, None);
                }
                // No route points to it any more: cleared after its grace period.
                self.unlinked.extend([
                    Unlinked::Window {
                        base: g.window.base,
                        size: g.slots.len() as u32,
                    },
                    Unlinked::Group(g.id),
                ]);
            }
        }
        let dead: Vec<PathKey> = self
            .nexthops
            .keys()
            .filter(|p| !d.paths.contains_key(*p))
            .copied()
            .collect();
        for p in dead {
            if let Some(w) = self.nexthops.remove(&p) {
                // No slot holds it any more: cleared after its grace period.
                self.unlinked.push(Unlinked::Nexthop(w.id));
            }
            // Path ids stay: a bucket table remembered for a returning route names its members by them.
        }
        for (group, path) in std::mem::take(&mut self.stale_members) {
            // Unless this sync gave the id to a group with that member.
            let mine = self
                .groups
                .values()
                .any(|w| w.id == group && w.members.contains_key(&path));
            if !mine {
                let _ = dp.set_pin_member(group, path, None);
            }
        }
        for (id, base, size) in std::mem::take(&mut self.stale_groups) {
            self.unlinked
                .extend([Unlinked::Window { base, size }, Unlinked::Group(id)]);
        }
        for id in std::mem::take(&mut self.retiring) {
            self.unlinked.push(Unlinked::Nexthop(id));
        }
        let used: HashSet<u32> = d.paths.keys().map(|p| p.ifindex).collect();
        // Unused, or unable to transmit (its next hops no longer say NH_TXPORT).
        let dead: Vec<u32> = self
            .txports
            .iter()
            .filter(|i| !used.contains(*i) || !ks.transmits(**i))
            .copied()
            .collect();
        self.no_xdp_tx.retain(|i| used.contains(i));
        for i in dead {
            // The port may be gone already; the kernel then removed it.
            let _ = dp.remove_txport(i);
            self.txports.remove(&i);
        }
    }
}
