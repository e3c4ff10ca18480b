//! Translation of the mirrored kernel state into what the dataplane needs: next hops per path, ECMP groups, and a verdict per route (pure).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

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

/// Translates the mirrored state.
pub fn translate(ks: &KernelState, mode: PlainGroupMode) -> Desired {
    let mut d = Desired::default();
    let plain_plan = match mode {
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
    };
    for (prefix, by_metric) in &ks.routes {
        let Some(target) = by_metric.values().next() else {
            continue;
        };
        let route = match target {
            RouteTarget::Local => DesiredRoute::Local,
            RouteTarget::Blackhole => DesiredRoute::Blackhole,
            RouteTarget::Unreachable | RouteTarget::Prohibit => DesiredRoute::ToKernel,
            RouteTarget::Paths(paths) => {
                let members: Vec<WeightedPath> =
                    paths.iter().copied().filter(forwardable).collect();
                if members.is_empty() {
                    DesiredRoute::ToKernel
                } else {
                    let key = GroupKey::Paths(members.clone());
                    d.groups.entry(key.clone()).or_insert_with(|| DesiredGroup {
                        members,
                        plan: plain_plan.clone(),
                    });
                    DesiredRoute::Forward(key)
                }
            }
            RouteTarget::Nexthop(id) => match nexthop_group(ks, *id, &plain_plan) {
                Some(g) => {
                    let key = GroupKey::Nexthop(*id);
                    d.groups.insert(key.clone(), g);
                    DesiredRoute::Forward(key)
                }
                None => match ks.nexthops.get(id) {
                    Some(NexthopObject::Single {
                        blackhole: true, ..
                    }) => DesiredRoute::Blackhole,
                    _ => DesiredRoute::ToKernel,
                },
            },
        };
        d.routes.insert(*prefix, route);
    }
    for g in d.groups.values() {
        for m in &g.members {
            d.paths
                .entry(m.path)
                .or_insert_with(|| nexthop_for(ks, &m.path));
        }
        if let GroupPlan::KernelBuckets(b) = &g.plan {
            for p in b.iter().flatten() {
                d.paths.entry(*p).or_insert_with(|| nexthop_for(ks, p));
            }
        }
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

/// Address family of a prefix, for choosing the v4 or v6 table.
pub fn is_v4(p: &Prefix) -> bool {
    matches!(p.addr, IpAddr::V4(_))
}
