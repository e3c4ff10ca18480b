//! Translation of the mirrored kernel state into what the dataplane needs: next hops per path, ECMP groups, and a verdict per route (pure).

use std::collections::{BTreeMap, HashMap};

use dataplane::abi::{xe_nexthop, NH_LINK_UP, NH_RESOLVED, NH_VALID};

use crate::aliases::Metrics;
use crate::state::{KernelState, NexthopObject, PathKey, Prefix, RouteTarget, WeightedPath};

/// How groups the kernel does not make resilient itself (multipath routes,
/// plain nexthop groups) are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainGroupMode {
    /// A bucket table with idle-aware migration (the default).
    Resilient {
        /// A new table's bucket count: `buckets`, or more where that cannot
        /// share the buckets by weight within 1% (`bucket_count::choose`),
        /// up to `max_buckets` (= `buckets`: fixed by the operator).
        buckets: u16,
        max_buckets: u16,
        idle_timer_ms: u64,
        unbalanced_timer_ms: u64,
    },
    /// Hash mod the number of live members, the classic behaviour.
    Modulo,
}

impl Default for PlainGroupMode {
    fn default() -> Self {
        PlainGroupMode::Resilient {
            buckets: 128,
            max_buckets: 4096,
            idle_timer_ms: 120_000,
            unbalanced_timer_ms: 0,
        }
    }
}

/// Identity of a group: the nexthop object it mirrors, or the path set of a
/// route (shared: a sync interns it, so a million routes over one path set
/// hold one copy, which hashing and comparing read from the cache).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupKey {
    Nexthop(u32),
    Paths(std::sync::Arc<[WeightedPath]>),
}

impl GroupPlan {
    /// Whether a resilient table of `count` buckets may serve this plan: a
    /// table keeps its count for life (resizing would move every flow).
    pub fn fits(&self, count: usize) -> bool {
        match self {
            GroupPlan::Resilient {
                buckets,
                max_buckets,
                ..
            } => {
                (usize::from(*buckets)..=usize::from((*max_buckets).max(*buckets))).contains(&count)
            }
            _ => false,
        }
    }
}

/// How a group's slots are filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupPlan {
    /// Our resilient allocator over the live members.
    Resilient {
        buckets: u16,
        max_buckets: u16,
        idle_timer_ms: u64,
        unbalanced_timer_ms: u64,
    },
    /// Live members, each repeated by weight.
    Modulo,
    /// The kernel's own resilient group: its bucket -> path assignment, copied.
    KernelBuckets(Vec<Option<PathKey>>),
}

/// A group as wanted: its live members (down or unresolved ones left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredGroup {
    pub members: Vec<WeightedPath>,
    pub plan: GroupPlan,
}

/// The dataplane verdict for a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DesiredRoute {
    Forward(GroupKey),
    Local,
    Blackhole,
    /// A unicast route the kernel forwards by and the program does not
    /// (on-link without a gateway, nothing usable, forwarding off, a table
    /// full): its packets go to the kernel; a source under it is routable.
    ToKernel,
    /// A route the kernel answers with an error or decides by rules the
    /// program does not follow (unreachable, prohibit, throw, TOS, broadcast
    /// and other types): its packets go to the kernel, and so do packets
    /// from a source under it (with source validation on, the kernel drops
    /// those).
    Refuse,
}

/// The whole translation.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    /// Every path some group uses, with its next-hop entry (state included).
    pub paths: BTreeMap<PathKey, xe_nexthop>,
    pub groups: HashMap<GroupKey, DesiredGroup>,
    pub routes: BTreeMap<Prefix, DesiredRoute>,
}

/// The next-hop entry for a path: egress port, MACs, MTU and state bits.
pub fn nexthop_for(ks: &KernelState, path: &PathKey) -> xe_nexthop {
    let mut nh = xe_nexthop {
        ifindex: path.ifindex,
        state: NH_VALID,
        ..Default::default()
    };
    if let Some(link) = ks.links.get(&path.ifindex) {
        nh.smac = link.mac;
        nh.mtu = link.mtu.min(u32::from(u16::MAX)) as u16;
        if link.up {
            nh.state |= NH_LINK_UP;
        }
    }
    if let Some(gw) = path.gateway {
        if let Some(n) = ks.neighbours.get(&(path.ifindex, gw)) {
            if let (true, Some(mac)) = (n.usable, n.mac) {
                nh.dmac = mac;
                nh.state |= NH_RESOLVED;
            }
        }
    }
    nh
}

fn forwardable(p: &WeightedPath) -> bool {
    p.path.gateway.is_some() && p.path.ifindex != 0
}

/// The most slots a modulo group takes: a group's `size` is 16 bits.
pub const MAX_MODULO_SLOTS: u32 = u16::MAX as u32;

/// Folds a path listed more than once into one member whose weight is the
/// sum, in the order paths first appear. The kernel accepts an IPv4
/// multipath route that lists a hop twice (and groups of distinct nexthop
/// objects on one path), and its hash-threshold selection then gives that
/// path both shares: the sum is what it forwards by. A weight of 0 (no
/// share) leaves the member out.
pub fn merge_paths(paths: impl IntoIterator<Item = WeightedPath>) -> Vec<WeightedPath> {
    let mut merged: Vec<WeightedPath> = Vec::new();
    for p in paths.into_iter().filter(|p| p.weight > 0) {
        match merged.iter_mut().find(|m| m.path == p.path) {
            Some(m) => m.weight = m.weight.saturating_add(p.weight),
            None => merged.push(p),
        }
    }
    merged
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// How many slots each member of a modulo group gets, from its weights:
/// divided by their greatest common divisor (the same split in fewer
/// slots), and when the sum still exceeds [`MAX_MODULO_SLOTS`], scaled down
/// in proportion (rounded down, at least one slot each), so that a group's
/// size fits its 16 bits. Scaling moves each member's count by less than
/// one slot of ~65,535 from its exact share.
pub fn modulo_slot_counts(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let reduced: Vec<u32> = weights.iter().map(|w| w / g).collect();
    let total: u64 = reduced.iter().map(|w| u64::from(*w)).sum();
    if total <= u64::from(MAX_MODULO_SLOTS) {
        return reduced;
    }
    // Each member may round up to one slot: keep room for that.
    let budget = u64::from(MAX_MODULO_SLOTS).saturating_sub(reduced.len() as u64);
    reduced
        .iter()
        .map(|w| ((u64::from(*w) * budget / total) as u32).max(1))
        .collect()
}

impl PlainGroupMode {
    /// The plan of a group this mode balances.
    pub fn plan(self) -> GroupPlan {
        match self {
            PlainGroupMode::Resilient {
                buckets,
                max_buckets,
                idle_timer_ms,
                unbalanced_timer_ms,
            } => GroupPlan::Resilient {
                buckets,
                max_buckets,
                idle_timer_ms,
                unbalanced_timer_ms,
            },
            PlainGroupMode::Modulo => GroupPlan::Modulo,
        }
    }
}

/// The verdict for one prefix: what its best route does, and the key of
/// the group it forwards through.
pub fn route_verdict(ks: &KernelState, prefix: &Prefix, plain: &GroupPlan) -> Option<DesiredRoute> {
    target_verdict(ks, prefix, ks.best_route(prefix)?, plain)
}

/// The verdict for a prefix whose best route is `target`.
fn target_verdict(
    ks: &KernelState,
    prefix: &Prefix,
    target: &RouteTarget,
    plain: &GroupPlan,
) -> Option<DesiredRoute> {
    // Policy routing may send a lookup to any table: the kernel decides.
    if ks.custom_rules(prefix.addr.is_ipv6()).is_some() {
        return Some(DesiredRoute::ToKernel);
    }
    Some(match target {
        RouteTarget::Local => DesiredRoute::Local,
        RouteTarget::Blackhole => DesiredRoute::Blackhole,
        RouteTarget::Unreachable | RouteTarget::Prohibit | RouteTarget::KernelOnly => {
            DesiredRoute::Refuse
        }
        RouteTarget::Paths(paths) => {
            let members = merge_paths(paths.iter().copied().filter(forwardable));
            if members.is_empty() {
                DesiredRoute::ToKernel
            } else {
                DesiredRoute::Forward(GroupKey::Paths(members.into()))
            }
        }
        RouteTarget::Nexthop(id) => match nexthop_group(ks, *id, plain) {
            Some(_) => DesiredRoute::Forward(GroupKey::Nexthop(*id)),
            None => match ks.nexthops.get(id) {
                Some(NexthopObject::Single {
                    blackhole: true, ..
                }) => DesiredRoute::Blackhole,
                _ => DesiredRoute::ToKernel,
            },
        },
    })
}

/// The verdicts of one sync, their path-set keys shared: a million routes
/// over one path set hold one key, which hashing and comparing read from
/// the cache (perf: 8% of a cold start with 1M routes went to keys read
/// from a million places). Routes whose path list equals the one before
/// take its key as it is, without merging and allocating one of their own.
pub struct Verdicts<'k> {
    ks: &'k KernelState,
    plain: GroupPlan,
    keys: ahash::AHashSet<GroupKey>,
    last: Option<(&'k [WeightedPath], GroupKey)>,
}

impl<'k> Verdicts<'k> {
    pub fn new(ks: &'k KernelState, plain: GroupPlan) -> Self {
        Verdicts {
            ks,
            plain,
            keys: Default::default(),
            last: None,
        }
    }

    /// [`route_verdict`], its key shared.
    pub fn route(&mut self, prefix: &Prefix) -> Option<DesiredRoute> {
        let target = self.ks.best_route(prefix)?;
        self.target(prefix, target)
    }

    /// [`route_verdict`] for a prefix whose routes in the mirrored table are
    /// `metrics` (its entry, found already).
    pub fn within(&mut self, prefix: &Prefix, metrics: &'k Metrics) -> Option<DesiredRoute> {
        let target = self
            .ks
            .local_target(prefix)
            .or_else(|| metrics.values().next())?;
        self.target(prefix, target)
    }

    fn target(&mut self, prefix: &Prefix, target: &'k RouteTarget) -> Option<DesiredRoute> {
        let RouteTarget::Paths(paths) = target else {
            return target_verdict(self.ks, prefix, target, &self.plain);
        };
        if self.ks.custom_rules(prefix.addr.is_ipv6()).is_some() {
            return Some(DesiredRoute::ToKernel);
        }
        if let Some((last, key)) = &self.last {
            if *last == paths.as_slice() {
                return Some(DesiredRoute::Forward(key.clone()));
            }
        }
        let v = target_verdict(self.ks, prefix, target, &self.plain)?;
        let DesiredRoute::Forward(key) = v else {
            return Some(v);
        };
        let key = match self.keys.get(&key) {
            Some(k) => k.clone(),
            None => {
                self.keys.insert(key.clone());
                key
            }
        };
        self.last = Some((paths.as_slice(), key.clone()));
        Some(DesiredRoute::Forward(key))
    }
}

/// The group behind a key, as the kernel's state wants it now.
pub fn group_for_key(ks: &KernelState, key: &GroupKey, plain: &GroupPlan) -> Option<DesiredGroup> {
    match key {
        GroupKey::Paths(members) => Some(DesiredGroup {
            members: members.to_vec(),
            plan: plain.clone(),
        }),
        GroupKey::Nexthop(id) => nexthop_group(ks, *id, plain),
    }
}

/// Adds the next-hop entry of every path `g` uses.
pub fn add_paths(ks: &KernelState, g: &DesiredGroup, paths: &mut BTreeMap<PathKey, xe_nexthop>) {
    for m in &g.members {
        paths
            .entry(m.path)
            .or_insert_with(|| nexthop_for(ks, &m.path));
    }
    if let GroupPlan::KernelBuckets(b) = &g.plan {
        for p in b.iter().flatten() {
            paths.entry(*p).or_insert_with(|| nexthop_for(ks, p));
        }
    }
}

/// Translates the whole mirrored state.
pub fn translate(ks: &KernelState, mode: PlainGroupMode) -> Desired {
    let plain = mode.plan();
    let mut d = Desired::default();
    for prefix in ks.prefixes() {
        let Some(route) = route_verdict(ks, prefix, &plain) else {
            continue;
        };
        if let DesiredRoute::Forward(key) = &route {
            if !d.groups.contains_key(key) {
                if let Some(g) = group_for_key(ks, key, &plain) {
                    d.groups.insert(key.clone(), g);
                }
            }
        }
        d.routes.insert(*prefix, route);
    }
    for g in d.groups.values() {
        add_paths(ks, g, &mut d.paths);
    }
    d
}

/// The group a route with `nhid` uses, or None if it cannot forward here.
fn nexthop_group(ks: &KernelState, id: u32, plain: &GroupPlan) -> Option<DesiredGroup> {
    let single_path = |nid: u32| match ks.nexthops.get(&nid) {
        Some(NexthopObject::Single {
            path,
            blackhole: false,
        }) if path.gateway.is_some() => Some(*path),
        _ => None,
    };
    match ks.nexthops.get(&id)? {
        NexthopObject::Single { .. } => {
            let path = single_path(id)?;
            Some(DesiredGroup {
                members: vec![WeightedPath { path, weight: 1 }],
                plan: GroupPlan::Modulo,
            })
        }
        NexthopObject::Group { members, resilient } => {
            let members = merge_paths(members.iter().filter_map(|(nid, weight)| {
                Some(WeightedPath {
                    path: single_path(*nid)?,
                    weight: u32::from(*weight),
                })
            }));
            if members.is_empty() {
                return None;
            }
            let plan = match (resilient, ks.kernel_buckets.get(&id)) {
                (Some(_), Some(buckets)) => {
                    GroupPlan::KernelBuckets(buckets.iter().map(|nid| single_path(*nid)).collect())
                }
                _ => plain.clone(),
            };
            Some(DesiredGroup { members, plan })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    fn path(port: u32) -> PathKey {
        PathKey {
            ifindex: port,
            gateway: Some(IpAddr::V4(Ipv4Addr::new(10, 0, port as u8, 2))),
        }
    }

    fn hop(port: u32, weight: u16) -> WeightedPath {
        WeightedPath {
            path: path(port),
            weight: weight.into(),
        }
    }

    fn prefix(third: u8) -> Prefix {
        Prefix {
            addr: IpAddr::V4(Ipv4Addr::new(172, 16, third, 0)),
            len: 24,
        }
    }

    /// The members of the group `p` forwards through.
    fn members(ks: &KernelState, p: Prefix) -> Vec<(u32, u64)> {
        let d = translate(ks, PlainGroupMode::default());
        let Some(DesiredRoute::Forward(key)) = d.routes.get(&p) else {
            panic!("{p} does not forward: {:?}", d.routes.get(&p));
        };
        d.groups[key]
            .members
            .iter()
            .map(|m| (m.path.ifindex, u64::from(m.weight)))
            .collect()
    }

    #[test]
    fn a_path_listed_twice_is_one_member_with_both_weights() {
        let mut ks = KernelState::new(254);
        // nexthop via A nexthop via B weight 3 nexthop via A: A 2, B 3.
        let hops = vec![hop(1, 1), hop(2, 3), hop(1, 1)];
        ks.routes
            .insert(prefix(0), Metrics::one(0, RouteTarget::Paths(hops)));
        assert_eq!(members(&ks, prefix(0)), [(1, 2), (2, 3)]);
        // Nexthop objects 1 and 2 on one path, grouped with 3.
        for (id, port) in [(1, 1), (2, 1), (3, 2)] {
            ks.nexthops.insert(
                id,
                NexthopObject::Single {
                    path: path(port),
                    blackhole: false,
                },
            );
        }
        ks.nexthops.insert(
            10,
            NexthopObject::Group {
                members: vec![(1, 65_535), (3, 7), (2, 65_535)],
                resilient: None,
            },
        );
        ks.routes
            .insert(prefix(1), Metrics::one(0, RouteTarget::Nexthop(10)));
        assert_eq!(members(&ks, prefix(1)), [(1, 131_070), (2, 7)]);
    }

    #[test]
    fn a_syncs_verdicts_share_one_key_per_member_set() {
        let mut ks = KernelState::new(254);
        let lists = [
            vec![hop(1, 1), hop(2, 3)],
            vec![hop(1, 1), hop(2, 3)],
            vec![hop(3, 1)],
            // Listed otherwise, merged into the first set's members.
            vec![hop(1, 1), hop(2, 2), hop(2, 1)],
            vec![hop(1, 1), hop(2, 3)],
        ];
        for (i, l) in lists.iter().enumerate() {
            ks.routes.insert(
                prefix(i as u8),
                Metrics::one(0, RouteTarget::Paths(l.clone())),
            );
        }
        let plain = PlainGroupMode::default().plan();
        let mut vs = Verdicts::new(&ks, plain.clone());
        let key = |v: Option<DesiredRoute>| match v {
            Some(DesiredRoute::Forward(GroupKey::Paths(k))) => k,
            other => panic!("not a path group: {other:?}"),
        };
        // Each as one made on its own would be, read in turn by both ways.
        let keys: Vec<_> = (0..lists.len() as u8)
            .map(|i| {
                let p = prefix(i);
                let v = if i % 2 == 0 {
                    vs.within(&p, &ks.routes[&p])
                } else {
                    vs.route(&p)
                };
                assert_eq!(v, route_verdict(&ks, &p, &plain), "{p}");
                key(v)
            })
            .collect();
        for i in [1, 3, 4] {
            assert!(std::sync::Arc::ptr_eq(&keys[0], &keys[i]), "route {i}");
        }
        assert!(!std::sync::Arc::ptr_eq(&keys[0], &keys[2]));
        // Policy routing sends every route to the kernel, the one whose
        // list was just seen too.
        ks.custom_rules
            .insert((false, "from 10.9.0.0/16 lookup 7".into()));
        let mut vs = Verdicts::new(&ks, plain);
        for i in [0, 1] {
            let p = prefix(i);
            assert_eq!(vs.route(&p), Some(DesiredRoute::ToKernel), "{p}");
        }
    }

    #[test]
    fn modulo_slots_fit_sixteen_bits_and_keep_the_split() {
        assert_eq!(modulo_slot_counts(&[2, 4, 6]), [1, 2, 3], "common divisor");
        assert_eq!(modulo_slot_counts(&[1, 1]), [1, 1]);
        assert!(modulo_slot_counts(&[]).is_empty());
        let w = [131_070, 1, 40_001];
        let n = modulo_slot_counts(&w);
        let total: u32 = n.iter().sum();
        assert!(total <= MAX_MODULO_SLOTS, "{n:?}");
        assert_eq!(n[1], 1, "every member keeps a slot");
        let exact = 131_070.0 / 171_072.0;
        assert!(
            (f64::from(n[0]) / f64::from(total) - exact).abs() < 1e-4,
            "{n:?}"
        );
    }
}
