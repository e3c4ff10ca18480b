//! The `show` listings in the style of `ip nexthop`: the maps' rows (what forwards) joined with the daemon's topology (gateways, the kernel's ids, weights, timers), as lines or as JSON.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::inspect::{BucketRow, GroupRow, NexthopRow};
use crate::status::{GroupInfo, MemberInfo, NexthopInfo, Topology};

/// A next hop: the map's row, and its gateway and kernel ids where known.
#[derive(Debug, Clone, Serialize)]
pub struct NexthopListing {
    #[serde(flatten)]
    pub row: NexthopRow,
    pub gateway: Option<IpAddr>,
    /// The kernel's nexthop objects with this gateway and port.
    pub kernel_ids: Vec<u32>,
}

/// A group: the map's row, and its weights, timers and state where known.
#[derive(Debug, Clone, Serialize)]
pub struct GroupListing {
    #[serde(flatten)]
    pub row: GroupRow,
    pub kernel_id: Option<u32>,
    /// `resilient`, `kernel-resilient` or `modulo` (the maps' `mode` only
    /// says resilient or modulo).
    pub kind: Option<String>,
    pub idle_timer: Option<u64>,
    pub unbalanced_timer: Option<u64>,
    /// Seconds it has been unbalanced (None: balanced, or not known).
    pub unbalanced_for: Option<f64>,
    pub routes: Option<usize>,
    /// Each member: next hop, gateway, port, weight, buckets held and wanted.
    pub nexthops: Vec<MemberInfo>,
}

/// A bucket: the map's row, its idle time and its next hop's gateway.
#[derive(Debug, Clone, Serialize)]
pub struct BucketListing {
    pub group: u32,
    /// The route asked for (`show buckets PREFIX`), whose group this is now.
    pub route: Option<String>,
    #[serde(flatten)]
    pub row: BucketRow,
    /// Seconds since a packet last used it (None: never).
    pub idle_time: Option<f64>,
    pub gateway: Option<IpAddr>,
}

/// The topology's entries by id (empty without one).
pub struct Known<'a> {
    nexthops: HashMap<u32, &'a NexthopInfo>,
    groups: HashMap<u32, &'a GroupInfo>,
}

impl<'a> Known<'a> {
    pub fn new(t: Option<&'a Topology>) -> Self {
        Known {
            nexthops: t
                .map(|t| t.nexthops.iter().map(|n| (n.id, n)).collect())
                .unwrap_or_default(),
            groups: t
                .map(|t| t.groups.iter().map(|g| (g.id, g)).collect())
                .unwrap_or_default(),
        }
    }

    /// The topology names this next hop on the port the map says: the
    /// daemon wrote both (an id the topology holds for another port is
    /// stale and not used).
    fn nexthop(&self, id: u32, ifindex: u32) -> Option<&'a NexthopInfo> {
        self.nexthops
            .get(&id)
            .copied()
            .filter(|n| n.ifindex == ifindex)
    }

    pub fn nexthops(&self, rows: Vec<NexthopRow>) -> Vec<NexthopListing> {
        rows.into_iter()
            .map(|row| {
                let n = self.nexthop(row.id, row.ifindex);
                NexthopListing {
                    gateway: n.and_then(|n| n.gateway),
                    kernel_ids: n.map(|n| n.kernel_ids.clone()).unwrap_or_default(),
                    row,
                }
            })
            .collect()
    }

    pub fn groups(&self, rows: Vec<GroupRow>) -> Vec<GroupListing> {
        rows.into_iter()
            .map(|row| {
                // Known only if the topology's buckets are the map's.
                let g = self
                    .groups
                    .get(&row.id)
                    .copied()
                    .filter(|g| g.buckets == u32::from(row.size));
                let nexthops = match g {
                    Some(g) => g.members.clone(),
                    None => row
                        .members
                        .iter()
                        .filter(|(nh, _)| **nh != 0)
                        .map(|(nh, n)| MemberInfo {
                            nexthop: Some(*nh),
                            gateway: self.nexthops.get(nh).and_then(|i| i.gateway),
                            dev: self
                                .nexthops
                                .get(nh)
                                .map_or_else(String::new, |i| i.dev.clone()),
                            weight: 0,
                            buckets: *n as u32,
                            wanted: None,
                        })
                        .collect(),
                };
                GroupListing {
                    kernel_id: g.and_then(|g| g.kernel_id),
                    kind: g.map(|g| g.mode.clone()),
                    idle_timer: g.and_then(|g| g.idle_timer),
                    unbalanced_timer: g.and_then(|g| g.unbalanced_timer),
                    unbalanced_for: g.and_then(|g| g.unbalanced_for),
                    routes: g.map(|g| g.routes),
                    nexthops,
                    row,
                }
            })
            .collect()
    }

    /// `now` and `hz` are the stamp clock's (jiffies, low 32 bits).
    /// `route`: the prefix the group was asked for by, if any.
    pub fn buckets(
        &self,
        group: u32,
        route: Option<&str>,
        rows: Vec<BucketRow>,
        clock: dataplane::StampClock,
    ) -> Vec<BucketListing> {
        // Any base far from 0: the idle time is a difference.
        const NOW: u64 = 1 << 40;
        rows.into_iter()
            .map(|row| BucketListing {
                group,
                route: route.map(str::to_owned),
                idle_time: clock
                    .last_used_ms(row.last_used_tick, NOW)
                    .map(|t| (NOW - t) as f64 / 1000.0),
                // Named only where the topology's next hop is on the port
                // the map says (as for `show nexthops`).
                gateway: self
                    .nexthops
                    .get(&row.nexthop)
                    .filter(|n| n.dev == row.dev)
                    .and_then(|n| n.gateway),
                row,
            })
            .collect()
    }
}

fn via(gateway: Option<IpAddr>, dev: &str) -> String {
    match gateway {
        Some(g) => format!("via {g} dev {dev}"),
        None => format!("dev {dev}"),
    }
}

pub fn nexthop_line(n: &NexthopListing) -> String {
    let mut s = format!("id {} {}", n.row.id, via(n.gateway, &n.row.dev));
    if n.row.vlan != 0 {
        s += &format!(" vlan {}", n.row.vlan & 0xfff);
    }
    s += &format!(" lladdr {} mtu {}", n.row.lladdr, n.row.mtu);
    for k in &n.kernel_ids {
        s += &format!(" nhid {k}");
    }
    s + " " + &n.row.state.join(",")
}

/// The group's line, then one line per member.
pub fn group_lines(g: &GroupListing) -> Vec<String> {
    let mut head = format!(
        "group {} {} buckets {}",
        g.row.id,
        g.kind.as_deref().unwrap_or(g.row.mode),
        g.row.size
    );
    if let Some(t) = g.idle_timer {
        head += &format!(" idle_timer {t}");
    }
    if let Some(t) = g.unbalanced_timer {
        head += &format!(" unbalanced_timer {t}");
    }
    if g.kind.as_deref() == Some("resilient") {
        head += &match g.unbalanced_for {
            Some(s) => format!(" unbalanced_time {s:.1}"),
            None => " balanced".into(),
        };
    }
    if let Some(k) = g.kernel_id {
        head += &format!(" nhid {k}");
    }
    if let Some(r) = g.routes {
        head += &format!(" routes {r}");
    }
    head += &format!(
        " slots {}..{}",
        g.row.base,
        g.row.base + u32::from(g.row.size)
    );
    let mut lines = vec![head];
    for m in &g.nexthops {
        let mut l = match m.nexthop {
            Some(id) => format!("    nexthop {id}"),
            None => "    nexthop -".into(),
        };
        if !m.dev.is_empty() {
            l += &format!(" {}", via(m.gateway, &m.dev));
        }
        if m.weight > 0 {
            l += &format!(" weight {}", m.weight);
        }
        l += &format!(" buckets {}", m.buckets);
        if let Some(w) = m.wanted.filter(|w| *w != m.buckets) {
            l += &format!(" (its share: {w})");
        }
        if m.nexthop.is_none() {
            l += " (not written: its buckets pass packets to the kernel)";
        }
        lines.push(l);
    }
    lines
}

pub fn bucket_line(b: &BucketListing) -> String {
    let idle = match b.idle_time {
        Some(t) => format!("{t:.2}"),
        None => "never".into(),
    };
    if b.row.nexthop == 0 {
        return format!(
            "group {} index {} idle_time {idle} empty (passes to the kernel)",
            b.group, b.row.index
        );
    }
    format!(
        "group {} index {} idle_time {idle} nexthop {} {}",
        b.group,
        b.row.index,
        b.row.nexthop,
        via(b.gateway, &b.row.dev)
    )
}

/// A line saying where the names come from when they are missing or old,
/// for standard error; None when a running daemon wrote them.
pub fn provenance(t: Option<&Topology>, status_dir: &std::path::Path) -> Option<String> {
    match t {
        None => Some(format!(
            "note: no daemon status in {} (maps written by `attach` or another version): gateways, weights and the kernel's ids are not shown",
            status_dir.display()
        )),
        Some(t) if !crate::status::alive(t.pid) => Some(format!(
            "note: gateways, weights and the kernel's ids as the daemon (pid {}) last wrote them, {:.0} s ago; it has ended",
            t.pid,
            crate::status::unix_ms().saturating_sub(t.written_ms) as f64 / 1000.0
        )),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn nh_row(id: u32, ifindex: u32, dev: &str) -> NexthopRow {
        NexthopRow {
            id,
            dev: dev.into(),
            ifindex,
            lladdr: "02:00:00:00:00:01".into(),
            src_mac: "02:00:00:00:00:02".into(),
            mtu: 1500,
            vlan: 0,
            usable: true,
            state: vec!["valid", "resolved", "link-up", "txport"],
        }
    }

    fn topology() -> Topology {
        Topology {
            pid: 1,
            written_ms: 0,
            nexthops: vec![
                NexthopInfo {
                    id: 1,
                    dev: "swp1".into(),
                    ifindex: 3,
                    gateway: Some("10.1.1.1".parse().unwrap()),
                    kernel_ids: vec![11],
                },
                NexthopInfo {
                    id: 2,
                    dev: "swp1".into(),
                    ifindex: 3,
                    gateway: Some("fe80::1".parse().unwrap()),
                    kernel_ids: vec![],
                },
            ],
            groups: vec![GroupInfo {
                id: 4,
                kernel_id: Some(40),
                mode: "resilient".into(),
                buckets: 8,
                idle_timer: Some(120),
                unbalanced_timer: Some(0),
                unbalanced_for: None,
                routes: 2,
                members: vec![
                    MemberInfo {
                        nexthop: Some(1),
                        gateway: Some("10.1.1.1".parse().unwrap()),
                        dev: "swp1".into(),
                        weight: 1,
                        buckets: 4,
                        wanted: Some(4),
                    },
                    MemberInfo {
                        nexthop: Some(2),
                        gateway: Some("fe80::1".parse().unwrap()),
                        dev: "swp1".into(),
                        weight: 1,
                        buckets: 3,
                        wanted: Some(4),
                    },
                ],
            }],
        }
    }

    #[test]
    fn two_next_hops_with_one_mac_differ_by_gateway() {
        let t = topology();
        let k = Known::new(Some(&t));
        let rows = k.nexthops(vec![nh_row(1, 3, "swp1"), nh_row(2, 3, "swp1")]);
        assert_eq!(
            nexthop_line(&rows[0]),
            "id 1 via 10.1.1.1 dev swp1 lladdr 02:00:00:00:00:01 mtu 1500 nhid 11 valid,resolved,link-up,txport"
        );
        assert_eq!(
            nexthop_line(&rows[1]),
            "id 2 via fe80::1 dev swp1 lladdr 02:00:00:00:00:01 mtu 1500 valid,resolved,link-up,txport"
        );
    }

    #[test]
    fn an_id_the_topology_holds_on_another_port_is_not_named() {
        let t = topology();
        let k = Known::new(Some(&t));
        let rows = k.nexthops(vec![nh_row(1, 9, "swp9")]);
        assert_eq!(rows[0].gateway, None);
        assert!(nexthop_line(&rows[0]).starts_with("id 1 dev swp9 lladdr"));
    }

    #[test]
    fn a_group_lists_each_member_with_weight_and_buckets() {
        let t = topology();
        let k = Known::new(Some(&t));
        let row = GroupRow {
            id: 4,
            mode: "resilient",
            base: 16,
            size: 8,
            members: BTreeMap::from([(0, 1), (1, 4), (2, 3)]),
        };
        let g = &k.groups(vec![row.clone()])[0];
        assert_eq!(
            group_lines(g),
            [
                "group 4 resilient buckets 8 idle_timer 120 unbalanced_timer 0 balanced nhid 40 routes 2 slots 16..24",
                "    nexthop 1 via 10.1.1.1 dev swp1 weight 1 buckets 4",
                "    nexthop 2 via fe80::1 dev swp1 weight 1 buckets 3 (its share: 4)",
            ]
        );
        // Without a topology: what the maps alone say.
        let g = &Known::new(None).groups(vec![row])[0];
        assert_eq!(
            group_lines(g),
            [
                "group 4 resilient buckets 8 slots 16..24",
                "    nexthop 1 buckets 4",
                "    nexthop 2 buckets 3",
            ]
        );
    }

    #[test]
    fn a_bucket_says_how_long_it_has_been_idle() {
        let t = topology();
        let k = Known::new(Some(&t));
        let clock = dataplane::StampClock {
            jiffies: 100_001,
            hz: 1000,
        };
        let row = |index, nexthop, tick| BucketRow {
            index,
            nexthop,
            dev: if nexthop == 0 { "-" } else { "swp1" }.into(),
            last_used_tick: tick,
        };
        let b = k.buckets(
            4,
            None,
            vec![row(0, 1, 90_001), row(1, 2, 0), row(2, 0, 0)],
            clock,
        );
        assert_eq!(
            bucket_line(&b[0]),
            "group 4 index 0 idle_time 10.00 nexthop 1 via 10.1.1.1 dev swp1"
        );
        assert_eq!(
            bucket_line(&b[1]),
            "group 4 index 1 idle_time never nexthop 2 via fe80::1 dev swp1"
        );
        assert_eq!(
            bucket_line(&b[2]),
            "group 4 index 2 idle_time never empty (passes to the kernel)"
        );
    }
}
