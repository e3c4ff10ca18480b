//! Translation of the mirrored kernel state into what the dataplane needs: next hops per path, ECMP groups, and a verdict per route (pure).

use std::collections::{BTreeMap, HashMap};

use dataplane::abi::{xe_nexthop, NH_LINK_UP, NH_RESOLVED, NH_VALID};

use crate::state::{KernelState, NexthopObject, PathKey, Prefix, RouteTarget, WeightedPath};

/// How groups the kernel does not make resilient itself (multipath routes,
/// plain nexthop groups) are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainGroupMode {
    /// A bucket table with idle-aware migration (the default).
    Resilient {
        buckets: u16,
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
            idle_timer_ms: 120_000,
            unbalanced_timer_ms: 0,
        }
    }
}

/// Identity of a group: the nexthop object it mirrors, or the path set of a route.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupKey {
    Nexthop(u32),
    Paths(Vec<WeightedPath>),
}

/// How a group's slots are filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupPlan {
    /// Our resilient allocator over the live members.
    Resilient {
        buckets: u16,
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
    /// No forwarding here (unreachable/prohibit, on-link without a gateway,
    /// or nothing usable): the kernel decides.
    ToKernel,
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

impl PlainGroupMode {
    /// The plan of a group this mode balances.
    pub fn plan(self) -> GroupPlan {
        match self {
            PlainGroupMode::Resilient {
                buckets,
                idle_timer_ms,
                unbalanced_timer_ms,
            } => GroupPlan::Resilient {
                buckets,
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
    let target = ks.best_route(prefix)?;
    Some(match target {
        RouteTarget::Local => DesiredRoute::Local,
        RouteTarget::Blackhole => DesiredRoute::Blackhole,
        RouteTarget::Unreachable | RouteTarget::Prohibit => DesiredRoute::ToKernel,
        RouteTarget::Paths(paths) => {
            let members: Vec<WeightedPath> = paths.iter().copied().filter(forwardable).collect();
            if members.is_empty() {
                DesiredRoute::ToKernel
            } else {
                DesiredRoute::Forward(GroupKey::Paths(members))
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

/// The group behind a key, as the kernel's state wants it now.
pub fn group_for_key(ks: &KernelState, key: &GroupKey, plain: &GroupPlan) -> Option<DesiredGroup> {
    match key {
        GroupKey::Paths(members) => Some(DesiredGroup {
            members: members.clone(),
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
    for prefix in ks.routes.keys() {
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
            let members: Vec<WeightedPath> = members
                .iter()
                .filter_map(|(nid, weight)| {
                    Some(WeightedPath {
                        path: single_path(*nid)?,
                        weight: *weight,
                    })
                })
                .collect();
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
