//! The reconciler: turns the translated kernel state into map writes, in an order that never exposes a torn state to a packet.
//!
//! Order of a sync: tx ports, then next hops (a next hop whose MAC or port
//! changes gets a fresh id; only its state bits, NH_TXPORT included, are
//! updated in place), then
//! group slots (a resized group is written to a fresh window of the slot pool
//! and switched with one 8-byte group update; same-size changes rewrite single
//! 4-byte slots), then routes, and only then are unused groups, next hops and
//! ports retired. So a packet can meet a bucket pointing to an old next hop,
//! never to a removed one or to one without a MAC.
//!
//! What a sync unlinks (a group's old slot window, a retired group id or
//! next-hop id) may still be in use by a packet on another CPU: it is held
//! until a grace period that began after the sync's last write is over
//! (`dataplane::grace`), and only then handed out again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use dataplane::abi::{
    xe_group, xe_nexthop, xe_route, GROUP_MODULO, GROUP_RESILIENT, MAX_GROUPS, MAX_NEXTHOPS,
    MAX_SLOTS, NH_LINK_UP, NH_TXPORT, NH_VALID, RT_BLACKHOLE, RT_LOCAL, RT_UNICAST, RT_UNREACHABLE,
};
use dataplane::grace::{GracePeriods, Quarantine};
use dataplane::{Dataplane, TableWriter};

use crate::resilient::{BucketTable, Member, TableConfig};
use crate::state::{Dirty, KernelState, PathKey, Prefix};
use crate::translate::{
    add_paths, group_for_key, modulo_slot_counts, route_verdict, translate, Desired, DesiredRoute,
    GroupKey, GroupPlan, PlainGroupMode,
};

/// How long the table of a prefix that stopped forwarding is kept for its return.
const RECENT_MS: u64 = 10_000;

/// First-fit allocator of windows in the slot pool.
#[derive(Debug, Clone)]
struct SlotPool {
    /// Free windows: start -> length.
    free: BTreeMap<u32, u32>,
}

impl SlotPool {
    fn new() -> Self {
        SlotPool {
            free: BTreeMap::from([(0, MAX_SLOTS)]),
        }
    }

    fn alloc(&mut self, size: u32) -> Option<u32> {
        let size = size.max(1);
        let (&start, &len) = self.free.iter().find(|(_, l)| **l >= size)?;
        self.free.remove(&start);
        if len > size {
            self.free.insert(start + size, len - size);
        }
        Some(start)
    }

    /// Marks [start, start + size) as taken (a window found in adopted maps).
    fn reserve(&mut self, start: u32, size: u32) -> bool {
        let size = size.max(1);
        let Some((&s, &l)) = self.free.range(..=start).next_back() else {
            return false;
        };
        if s + l < start + size {
            return false;
        }
        self.free.remove(&s);
        if start > s {
            self.free.insert(s, start - s);
        }
        if s + l > start + size {
            self.free.insert(start + size, s + l - start - size);
        }
        true
    }

    fn release(&mut self, start: u32, size: u32) {
        let size = size.max(1);
        let mut start = start;
        let mut len = size;
        if let Some((&s, &l)) = self.free.range(..start).next_back() {
            if s + l == start {
                self.free.remove(&s);
                start = s;
                len += l;
            }
        }
        if let Some(&l) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            len += l;
        }
        self.free.insert(start, len);
    }
}

/// Small ids handed out and taken back (0 is never used: it means "none").
#[derive(Debug, Clone)]
struct IdPool {
    next: u32,
    max: u32,
    free: Vec<u32>,
}

impl IdPool {
    fn new(max: u32) -> Self {
        IdPool {
            next: 1,
            max,
            free: Vec::new(),
        }
    }
    fn alloc(&mut self) -> Option<u32> {
        if let Some(id) = self.free.pop() {
            return Some(id);
        }
        (self.next < self.max).then(|| {
            self.next += 1;
            self.next - 1
        })
    }
    fn release(&mut self, id: u32) {
        self.free.push(id);
    }
    /// Marks `id` as taken (found in adopted maps).
    fn reserve(&mut self, id: u32) {
        if id == 0 || id >= self.max {
            return;
        }
        if id >= self.next {
            self.free.extend(self.next..id);
            self.next = id + 1;
        } else {
            self.free.retain(|f| *f != id);
        }
    }
}

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
    base: u32,
    /// Next-hop id per slot, as written.
    slots: Vec<u32>,
    mode: u8,
    /// The bucket table of a group we balance ourselves; members are stable path ids.
    table: Option<BucketTable>,
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

/// Errors of a sync name the object that failed.
pub type Result<T> = anyhow::Result<T>;

/// Keeps the dataplane maps equal to the kernel's state.
pub struct Reconciler {
    mode: PlainGroupMode,
    path_ids: HashMap<PathKey, u32>,
    path_id_pool: IdPool,
    nexthops: HashMap<PathKey, WrittenNexthop>,
    nh_ids: IdPool,
    groups: HashMap<GroupKey, WrittenGroup>,
    group_ids: IdPool,
    pool: SlotPool,
    routes: HashMap<Prefix, xe_route>,
    txports: HashSet<u32>,
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
    /// Bucket tables new groups start from (their routes' previous group).
    /// (table, slot window base and length whose stamps tell which buckets are busy).
    inherited: HashMap<GroupKey, (BucketTable, u32, usize)>,
    /// Tables of prefixes that stopped forwarding lately (table, window, when).
    recent: HashMap<Prefix, (BucketTable, u32, usize, u64)>,
}

impl Reconciler {
    pub fn new(mode: PlainGroupMode) -> Self {
        Reconciler {
            mode,
            path_ids: HashMap::new(),
            path_id_pool: IdPool::new(u32::MAX),
            nexthops: HashMap::new(),
            nh_ids: IdPool::new(MAX_NEXTHOPS),
            groups: HashMap::new(),
            group_ids: IdPool::new(MAX_GROUPS),
            pool: SlotPool::new(),
            routes: HashMap::new(),
            txports: HashSet::new(),
            retiring: Vec::new(),
            unlinked: Vec::new(),
            held: Quarantine::default(),
            stale_groups: Vec::new(),
            route_groups: HashMap::new(),
            group_refs: HashMap::new(),
            inherited: HashMap::new(),
            recent: HashMap::new(),
        }
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

    /// Takes over what a previous run left in pinned maps: routes, their
    /// groups, slots and next hops are matched to the kernel's state and kept
    /// as they are (bucket tables included, so no flow moves on a restart);
    /// everything else they reference is reserved until the first sync has
    /// moved routes off it. Returns how many groups were adopted.
    pub fn adopt(&mut self, ks: &KernelState, dp: &Dataplane, now_ms: u64) -> Result<usize> {
        let d = translate(ks, self.mode);
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
            let g = dp.group(r.group)?;
            if g.mode == 0 || !self.pool.reserve(g.base, u32::from(g.size)) {
                continue;
            }
            let slots = dp.slots(g.base, u32::from(g.size))?;
            for id in &slots {
                self.nh_ids.reserve(*id);
            }
            self.group_ids.reserve(r.group);
            old_groups.insert(r.group, (g, slots));
        }
        let mut adopted_nh: HashSet<u32> = HashSet::new();
        let mut adopted_groups: HashSet<u32> = HashSet::new();
        for (prefix, want) in &d.routes {
            let (DesiredRoute::Forward(key), Some(r)) = (want, existing.get(prefix)) else {
                continue;
            };
            let Some((g, slots)) = old_groups.get(&r.group) else {
                continue;
            };
            if self.groups.contains_key(key) || adopted_groups.contains(&r.group) {
                continue;
            }
            let dg = &d.groups[key];
            // Map each old next hop to the member path it serves (same port and MAC).
            let mut path_of_nh: HashMap<u32, PathKey> = HashMap::new();
            for id in slots.iter().filter(|id| **id != 0) {
                let nh = dp.nexthop(*id)?;
                let found = dg.members.iter().map(|m| m.path).find(|p| {
                    d.paths.get(p).is_some_and(|w| {
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
                            nh: dp.nexthop(*id)?,
                        },
                    );
                    adopted_nh.insert(*id);
                }
                if !self.path_ids.contains_key(p) {
                    let pid = self
                        .path_id_pool
                        .alloc()
                        .ok_or_else(|| anyhow::anyhow!("out of path ids"))?;
                    self.path_ids.insert(*p, pid);
                }
            }
            let table = match &dg.plan {
                GroupPlan::Resilient {
                    buckets,
                    idle_timer_ms,
                    unbalanced_timer_ms,
                } if usize::from(*buckets) == slots.len() => {
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
                        TableConfig::new(
                            usize::from(*buckets),
                            *idle_timer_ms,
                            *unbalanced_timer_ms,
                        ),
                        &members,
                        &assignment,
                        now_ms,
                    )
                    .ok()
                }
                _ => None,
            };
            adopted_groups.insert(r.group);
            self.groups.insert(
                key.clone(),
                WrittenGroup {
                    id: r.group,
                    base: g.base,
                    slots: slots.clone(),
                    mode: g.mode,
                    table,
                },
            );
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
        Ok(adopted_groups.len())
    }

    /// Brings the maps to the kernel's state for the prefixes in `dirty`
    /// (every group and next hop is rechecked each time; there are few).
    /// `now_ms` drives resilient timers; `last_used(slot)` gives a slot's
    /// last use in the same clock.
    pub fn sync(
        &mut self,
        ks: &KernelState,
        dirty: &Dirty,
        dp: &mut dyn TableWriter,
        now_ms: u64,
        last_used: &dyn Fn(u32) -> Option<u64>,
    ) -> Result<SyncStats> {
        let plain = self.mode.plan();
        let grace = dp.grace();
        self.reclaim(&grace, false);
        let prefixes: Vec<Prefix> = match dirty {
            Dirty::All => {
                let mut all: HashSet<Prefix> = ks.routes.keys().copied().collect();
                all.extend(self.routes.keys().copied());
                all.into_iter().collect()
            }
            Dirty::Prefixes(set) => set.iter().copied().collect(),
        };
        let mut updates = Vec::with_capacity(prefixes.len());
        let mut inherit: HashMap<GroupKey, GroupKey> = HashMap::new();
        self.recent
            .retain(|_, r| now_ms.saturating_sub(r.3) < RECENT_MS);
        for p in prefixes {
            let verdict = route_verdict(ks, &p, &plain);
            let old_key = self.route_groups.remove(&p);
            if let Some(old) = &old_key {
                if let Some(n) = self.group_refs.get_mut(old) {
                    *n -= 1;
                    if *n == 0 {
                        self.group_refs.remove(old);
                    }
                }
            }
            if let Some(DesiredRoute::Forward(key)) = &verdict {
                if old_key.as_ref() != Some(key) {
                    tracing::debug!(prefix = ?p, from = ?old_key, to = ?key, "route changes group");
                }
                *self.group_refs.entry(key.clone()).or_default() += 1;
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
                    if let Some(r) = self.recent.remove(&p) {
                        self.inherited.entry(key.clone()).or_insert((r.0, r.1, r.2));
                    }
                }
                self.route_groups.insert(p, key.clone());
            } else if let Some(g) = old_key.as_ref().and_then(|k| self.groups.get(k)) {
                tracing::debug!(prefix = ?p, from = ?old_key, "route stops forwarding");
                // Leaving forwarding: remember its table for a while.
                if let Some(t) = &g.table {
                    self.recent
                        .insert(p, (t.clone(), g.base, g.slots.len(), now_ms));
                }
            }
            updates.push((p, verdict));
        }
        let mut d = Desired::default();
        for key in self.group_refs.keys() {
            if let Some(g) = group_for_key(ks, key, &plain) {
                add_paths(ks, &g, &mut d.paths);
                d.groups.insert(key.clone(), g);
            }
        }
        let mut st = SyncStats::default();
        self.sync_txports(&d, dp)?;
        self.sync_nexthops(&d, dp, &mut st)?;
        for (new, old) in &inherit {
            if let Some(g) = self.groups.get(old) {
                if let Some(t) = g.table.clone() {
                    self.inherited
                        .insert(new.clone(), (t, g.base, g.slots.len()));
                }
            }
        }
        let live_groups = self.sync_groups(&d, dp, now_ms, last_used, &mut st)?;
        self.inherited.clear();
        self.sync_routes(&updates, dp, &mut st)?;
        self.retire(&d, &live_groups, dp)?;
        // Every unlinking store of this sync is done: what it unlinked is
        // reusable once the packets that may hold it have left the program.
        if !self.unlinked.is_empty() {
            let cookie = grace.cookie();
            for u in std::mem::take(&mut self.unlinked) {
                self.held.hold(cookie, u);
            }
        }
        Ok(st)
    }

    /// Hands back what earlier syncs unlinked and whose grace period is
    /// over; with `wait`, first waits for the oldest. Whether anything came back.
    fn reclaim(&mut self, grace: &GracePeriods, wait: bool) -> bool {
        let back = if wait {
            self.held.release_waiting(grace)
        } else {
            self.held.release(grace)
        };
        let any = !back.is_empty();
        for u in back {
            match u {
                Unlinked::Window { base, size } => self.pool.release(base, size),
                Unlinked::Group(id) => self.group_ids.release(id),
                Unlinked::Nexthop(id) => self.nh_ids.release(id),
            }
        }
        any
    }

    /// Allocates with `alloc`; when it finds nothing, waits for what earlier
    /// syncs unlinked to come back and tries again.
    fn alloc_or_wait<T>(
        &mut self,
        grace: &GracePeriods,
        mut alloc: impl FnMut(&mut Self) -> Option<T>,
    ) -> Option<T> {
        loop {
            if let Some(v) = alloc(self) {
                return Some(v);
            }
            if !self.reclaim(grace, true) {
                return None;
            }
        }
    }

    /// Next-hop ids, slot windows and group ids unlinked and not yet reusable.
    pub fn held(&self) -> usize {
        self.held.len() + self.unlinked.len()
    }

    fn sync_txports(&mut self, d: &Desired, dp: &mut dyn TableWriter) -> Result<()> {
        for p in d.paths.keys() {
            if self.txports.insert(p.ifindex) {
                if let Err(e) = dp.add_txport(p.ifindex) {
                    self.txports.remove(&p.ifindex);
                    anyhow::bail!("adding ifindex {} to the redirect map: {e}", p.ifindex);
                }
            }
        }
        Ok(())
    }

    fn sync_nexthops(
        &mut self,
        d: &Desired,
        dp: &mut dyn TableWriter,
        st: &mut SyncStats,
    ) -> Result<()> {
        for (path, want) in &d.paths {
            // sync_txports ran first: the port is in the redirect map, and
            // the next hop says so (the program does not look it up).
            let mut want = *want;
            if self.txports.contains(&path.ifindex) {
                want.state |= NH_TXPORT;
            }
            let want = &want;
            if !self.path_ids.contains_key(path) {
                let id = self
                    .path_id_pool
                    .alloc()
                    .ok_or_else(|| anyhow::anyhow!("out of path ids"))?;
                self.path_ids.insert(*path, id);
            }
            match self.nexthops.get(path).copied() {
                Some(w) if same(&w.nh, want) => {}
                Some(w) if same_except_state(&w.nh, want) => {
                    dp.set_nexthop(w.id, want)?;
                    self.nexthops.insert(
                        *path,
                        WrittenNexthop {
                            id: w.id,
                            nh: *want,
                        },
                    );
                    st.nexthops_written += 1;
                }
                old => {
                    // New contents under a new id: slots switch to it one by one.
                    let id = self
                        .alloc_or_wait(&dp.grace(), |r| r.nh_ids.alloc())
                        .ok_or_else(|| anyhow::anyhow!("next-hop table full ({MAX_NEXTHOPS})"))?;
                    dp.set_nexthop(id, want)?;
                    self.nexthops
                        .insert(*path, WrittenNexthop { id, nh: *want });
                    st.nexthops_written += 1;
                    if let Some(o) = old {
                        // Still in slots until the groups are rewritten below.
                        self.retiring.push(o.id);
                    }
                }
            }
        }
        Ok(())
    }

    /// A member stays in its group while its link is up, resolved or not:
    /// packets to an unresolved one go to the kernel, which resolves it.
    fn live(&self, path: &PathKey) -> bool {
        self.nexthops
            .get(path)
            .is_some_and(|w| w.nh.state & (NH_VALID | NH_LINK_UP) == (NH_VALID | NH_LINK_UP))
    }

    fn nh_id(&self, path: &PathKey) -> u32 {
        self.nexthops.get(path).map_or(0, |w| w.id)
    }

    fn sync_groups(
        &mut self,
        d: &Desired,
        dp: &mut dyn TableWriter,
        now_ms: u64,
        last_used: &dyn Fn(u32) -> Option<u64>,
        st: &mut SyncStats,
    ) -> Result<HashSet<GroupKey>> {
        let path_of_id: HashMap<u32, PathKey> =
            self.path_ids.iter().map(|(p, id)| (*id, *p)).collect();
        let mut seen = HashSet::new();
        for (key, g) in &d.groups {
            seen.insert(key.clone());
            let live: Vec<_> = g
                .members
                .iter()
                .filter(|m| self.live(&m.path))
                .copied()
                .collect();
            let (mode, slots, table) = match &g.plan {
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
                GroupPlan::Resilient {
                    buckets,
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
                        .and_then(|w| Some((w.table.take()?, w.base, w.slots.len())))
                        .or_else(|| self.inherited.remove(key));
                    let mut table = match existing {
                        // Nothing to move: no stamps to read, no upkeep.
                        Some((t, _, _))
                            if t.bucket_count() == usize::from(*buckets)
                                && t.members() == members.as_slice()
                                && t.is_balanced() =>
                        {
                            t
                        }
                        Some((mut t, base, len)) if t.bucket_count() == usize::from(*buckets) => {
                            // Merge, never overwrite: a group written to a new
                            // window keeps what its table knew of busy buckets
                            // until the new window's stamps catch up.
                            if len == t.bucket_count() {
                                for i in 0..len {
                                    if let Some(ms) = last_used(base + i as u32) {
                                        t.mark_used(i, ms).map_err(|e| anyhow::anyhow!("{e:?}"))?;
                                    }
                                }
                            }
                            let out = t
                                .set_members(&members, now_ms)
                                .map_err(|e| anyhow::anyhow!("group {key:?}: {e:?}"))?;
                            if !out.migrations.is_empty() {
                                tracing::info!(group = ?key, moved = out.migrations.len(), members = members.len(), "members changed: buckets moved");
                            }
                            st.buckets_moved += out.migrations.len();
                            t
                        }
                        _ => {
                            tracing::info!(group = ?key, members = members.len(), "new bucket table");
                            BucketTable::new(
                                TableConfig::new(
                                    usize::from(*buckets),
                                    *idle_timer_ms,
                                    *unbalanced_timer_ms,
                                ),
                                &members,
                                now_ms,
                            )
                            .map_err(|e| anyhow::anyhow!("group {key:?}: {e:?}"))?
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
            };
            self.write_group(key, mode, slots, table, dp, st)?;
        }
        Ok(seen)
    }

    fn write_group(
        &mut self,
        key: &GroupKey,
        mode: u8,
        slots: Vec<u32>,
        table: Option<BucketTable>,
        dp: &mut dyn TableWriter,
        st: &mut SyncStats,
    ) -> Result<()> {
        let size = slots.len() as u32;
        if let Some(w) = self.groups.get_mut(key) {
            if w.slots.len() == slots.len() && w.mode == mode {
                for (i, (old, new)) in w.slots.iter_mut().zip(&slots).enumerate() {
                    if old != new {
                        dp.set_slots(w.base + i as u32, &[*new])?;
                        *old = *new;
                        st.slots_written += 1;
                    }
                }
                w.table = table;
                return Ok(());
            }
        }
        // A new window, filled before the group points at it.
        let grace = dp.grace();
        let base = self
            .alloc_or_wait(&grace, |r| r.pool.alloc(size))
            .ok_or_else(|| anyhow::anyhow!("slot pool full ({MAX_SLOTS} slots)"))?;
        dp.set_slots(base, &slots)?;
        st.slots_written += slots.len();
        let id = match self.groups.get(key) {
            Some(w) => w.id,
            None => self
                .alloc_or_wait(&grace, |r| r.group_ids.alloc())
                .ok_or_else(|| anyhow::anyhow!("group table full ({MAX_GROUPS})"))?,
        };
        dp.set_group(
            id,
            &xe_group {
                base,
                size: size as u16,
                mode,
                ..Default::default()
            },
        )?;
        st.groups_written += 1;
        if let Some(old) = self.groups.insert(
            key.clone(),
            WrittenGroup {
                id,
                base,
                slots,
                mode,
                table,
            },
        ) {
            self.unlinked.push(Unlinked::Window {
                base: old.base,
                size: old.slots.len() as u32,
            });
        }
        Ok(())
    }

    fn sync_routes(
        &mut self,
        updates: &[(Prefix, Option<DesiredRoute>)],
        dp: &mut dyn TableWriter,
        st: &mut SyncStats,
    ) -> Result<()> {
        for (prefix, r) in updates {
            let Some(r) = r else {
                if self.routes.remove(prefix).is_some() {
                    match prefix.addr {
                        IpAddr::V4(a) => dp.delete_route_v4(a, prefix.len)?,
                        IpAddr::V6(a) => dp.delete_route_v6(a, prefix.len)?,
                    }
                    st.routes_deleted += 1;
                }
                continue;
            };
            let want = match r {
                DesiredRoute::Forward(key) => xe_route {
                    group: self.groups.get(key).map_or(0, |g| g.id),
                    kind: RT_UNICAST,
                    ..Default::default()
                },
                DesiredRoute::Local => xe_route {
                    kind: RT_LOCAL,
                    ..Default::default()
                },
                DesiredRoute::Blackhole => xe_route {
                    kind: RT_BLACKHOLE,
                    ..Default::default()
                },
                DesiredRoute::ToKernel => xe_route {
                    kind: RT_UNREACHABLE,
                    ..Default::default()
                },
            };
            if self
                .routes
                .get(prefix)
                .is_some_and(|w| w.group == want.group && w.kind == want.kind)
            {
                continue;
            }
            match prefix.addr {
                IpAddr::V4(a) => dp.set_route_v4(a, prefix.len, &want)?,
                IpAddr::V6(a) => dp.set_route_v6(a, prefix.len, &want)?,
            }
            self.routes.insert(*prefix, want);
            st.routes_written += 1;
        }
        Ok(())
    }

    fn retire(
        &mut self,
        d: &Desired,
        live_groups: &HashSet<GroupKey>,
        dp: &mut dyn TableWriter,
    ) -> Result<()> {
        let dead: Vec<GroupKey> = self
            .groups
            .keys()
            .filter(|k| !live_groups.contains(*k))
            .cloned()
            .collect();
        for k in dead {
            if let Some(g) = self.groups.remove(&k) {
                dp.set_group(g.id, &xe_group::default())?;
                self.unlinked.extend([
                    Unlinked::Window {
                        base: g.base,
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
                dp.set_nexthop(w.id, &xe_nexthop::default())?;
                self.unlinked.push(Unlinked::Nexthop(w.id));
            }
            // Path ids stay: a bucket table remembered for a returning route names its members by them.
        }
        for (id, base, size) in std::mem::take(&mut self.stale_groups) {
            dp.set_group(id, &xe_group::default())?;
            self.unlinked
                .extend([Unlinked::Window { base, size }, Unlinked::Group(id)]);
        }
        for id in std::mem::take(&mut self.retiring) {
            dp.set_nexthop(id, &xe_nexthop::default())?;
            self.unlinked.push(Unlinked::Nexthop(id));
        }
        let used: HashSet<u32> = d.paths.keys().map(|p| p.ifindex).collect();
        let dead: Vec<u32> = self
            .txports
            .iter()
            .filter(|i| !used.contains(*i))
            .copied()
            .collect();
        for i in dead {
            // The port may be gone already; the kernel then removed it.
            let _ = dp.remove_txport(i);
            self.txports.remove(&i);
        }
        Ok(())
    }
}
