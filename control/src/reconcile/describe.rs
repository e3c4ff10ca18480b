//! What the reconciler wrote, in the kernel's terms (gateways, nexthop ids, weights, timers): the topology `show` and `top` print beside the maps.

use std::collections::HashMap;

use dataplane::abi::GROUP_RESILIENT;

use super::{port_name, Reconciler};
use crate::state::{KernelState, NexthopObject, PathKey};
use crate::status::{GroupInfo, MemberInfo, NexthopInfo, Topology};
use crate::translate::{group_for_key, GroupKey, GroupPlan};

impl Reconciler {
    /// The next hops and groups as written now, named as the kernel names
    /// them; `now_ms` is the daemon's clock (for how long a group has been
    /// unbalanced).
    pub fn describe(&self, ks: &KernelState, now_ms: u64) -> Topology {
        // The kernel's nexthop objects by path, in one pass.
        let mut objects: HashMap<&PathKey, Vec<u32>> = HashMap::new();
        for (id, o) in &ks.nexthops {
            if let NexthopObject::Single { path, .. } = o {
                objects.entry(path).or_default().push(*id);
            }
        }
        let mut nexthops: Vec<NexthopInfo> = self
            .nexthops
            .iter()
            .map(|(path, w)| {
                let mut kernel_ids = objects.get(path).cloned().unwrap_or_default();
                kernel_ids.sort_unstable();
                NexthopInfo {
                    id: w.id,
                    dev: port_name(ks, path.ifindex),
                    ifindex: path.ifindex,
                    gateway: path.gateway,
                    kernel_ids,
                }
            })
            .collect();
        nexthops.sort_by_key(|n| n.id);
        let plain = self.mode.plan();
        let mut groups: Vec<GroupInfo> = self
            .groups
            .iter()
            .map(|(key, g)| {
                let desired = group_for_key(ks, key, &plain);
                let (idle_timer, unbalanced_timer) = match (desired.as_ref().map(|d| &d.plan), key)
                {
                    (
                        Some(GroupPlan::Resilient {
                            idle_timer_ms,
                            unbalanced_timer_ms,
                            ..
                        }),
                        _,
                    ) => (Some(idle_timer_ms / 1000), Some(unbalanced_timer_ms / 1000)),
                    // The kernel's own resilient group: its timers.
                    (Some(GroupPlan::KernelBuckets(_)), GroupKey::Nexthop(id)) => {
                        match ks.nexthops.get(id) {
                            Some(NexthopObject::Group {
                                resilient: Some(r), ..
                            }) => (
                                Some(u64::from(r.idle_timer_s)),
                                Some(u64::from(r.unbalanced_timer_s)),
                            ),
                            _ => (None, None),
                        }
                    }
                    _ => (None, None),
                };
                // The share each member wants, by path id (groups balanced here).
                let wanted: HashMap<u32, u32> = g.table.as_ref().map_or_else(HashMap::new, |t| {
                    t.members()
                        .iter()
                        .zip(t.wanted_counts())
                        .map(|(m, w)| (m.next_hop, *w))
                        .collect()
                });
                // Slots each next hop holds, in one pass.
                let mut held: HashMap<u32, u32> = HashMap::new();
                for nh in &g.slots {
                    *held.entry(*nh).or_default() += 1;
                }
                let members = desired
                    .map(|d| d.members)
                    .unwrap_or_default()
                    .iter()
                    .map(|m| {
                        let nexthop = self.nexthops.get(&m.path).map(|w| w.id);
                        let held = nexthop.map_or(0, |id| held.get(&id).copied().unwrap_or(0));
                        MemberInfo {
                            nexthop,
                            gateway: m.path.gateway,
                            dev: port_name(ks, m.path.ifindex),
                            weight: m.weight,
                            buckets: held,
                            wanted: self
                                .path_ids
                                .get(&m.path)
                                .and_then(|p| wanted.get(p).copied()),
                        }
                    })
                    .collect();
                GroupInfo {
                    id: g.id,
                    kernel_id: match key {
                        GroupKey::Nexthop(id) => Some(*id),
                        GroupKey::Paths(_) => None,
                    },
                    mode: match (g.mode, &g.table) {
                        (GROUP_RESILIENT, Some(_)) => "resilient",
                        (GROUP_RESILIENT, None) => "kernel-resilient",
                        _ => "modulo",
                    }
                    .into(),
                    buckets: g.slots.len() as u32,
                    idle_timer,
                    unbalanced_timer,
                    unbalanced_for: g
                        .table
                        .as_ref()
                        .and_then(|t| t.unbalanced_since())
                        .map(|since| now_ms.saturating_sub(since) as f64 / 1000.0),
                    // Kept by every sync: no walk over the routes.
                    routes: self.group_refs.get(key).copied().unwrap_or(0),
                    members,
                }
            })
            .collect();
        groups.sort_by_key(|g| g.id);
        Topology {
            pid: std::process::id(),
            written_ms: crate::status::unix_ms(),
            nexthops,
            groups,
        }
    }
}
