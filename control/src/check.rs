//! Consistency checker: do the dataplane maps forward every prefix the way the kernel's state says? Lists each difference.

use std::collections::BTreeMap;

use ahash::AHashMap as HashMap;
use std::net::IpAddr;

use anyhow::Result;
use dataplane::abi::{
    xe_route, NH_LINK_UP, NH_TXPORT, NH_VALID, RT_BLACKHOLE, RT_LOCAL, RT_PROHIBIT, RT_UNICAST,
    RT_UNREACHABLE,
};
use dataplane::Dataplane;

use crate::state::{KernelState, Prefix};
use crate::translate::{modulo_slot_counts, translate, DesiredRoute, GroupPlan, PlainGroupMode};

/// What a next hop looks like from outside: port and neighbour MAC.
type Hop = (u32, [u8; 6]);

/// Every route in the maps, by prefix.
pub fn map_routes(dp: &Dataplane) -> Result<HashMap<Prefix, xe_route>> {
    let mut maps = HashMap::with_capacity(dp.sizes().routes_v4 as usize / 2);
    for (a, l, r) in dp.routes_v4()? {
        maps.insert(
            Prefix {
                addr: IpAddr::V4(a),
                len: l,
            },
            r,
        );
    }
    for (a, l, r) in dp.routes_v6()? {
        maps.insert(
            Prefix {
                addr: IpAddr::V6(a),
                len: l,
            },
            r,
        );
    }
    Ok(maps)
}

/// Differences between the kernel's state and the maps; empty when consistent.
pub fn check(ks: &KernelState, dp: &Dataplane, mode: PlainGroupMode) -> Result<Vec<String>> {
    let d = translate(ks, mode);
    let mut diffs = Vec::new();
    let mut maps = map_routes(dp)?;
    for (prefix, want) in &d.routes {
        let Some(got) = maps.remove(prefix) else {
            diffs.push(format!("{prefix}: in the kernel, missing from the maps"));
            continue;
        };
        let kind = match want {
            DesiredRoute::Forward(_) => RT_UNICAST,
            DesiredRoute::Local => RT_LOCAL,
            DesiredRoute::Blackhole => RT_BLACKHOLE,
            DesiredRoute::ToKernel => RT_UNREACHABLE,
            DesiredRoute::Refuse => RT_PROHIBIT,
        };
        if got.kind != kind {
            diffs.push(format!(
                "{prefix}: kind {} in the maps, {kind} wanted",
                got.kind
            ));
            continue;
        }
        let DesiredRoute::Forward(key) = want else {
            continue;
        };
        let g = &d.groups[key];
        let grp = dp.group(got.group)?;
        let slots = dp.slots(grp.base, u32::from(grp.size))?;
        let mut held: BTreeMap<Hop, usize> = BTreeMap::new();
        let mut hops = Vec::with_capacity(slots.len());
        for id in &slots {
            // Id 0: an unassigned bucket (no live member), which passes.
            if *id == 0 {
                hops.push(None);
                continue;
            }
            let nh = dp.nexthop(*id)?;
            let hop = (nh.ifindex, nh.dmac);
            // A next hop the program redirects must leave by a port that
            // transmits redirected frames, as the kernel says now.
            let tx = ks.transmits(nh.ifindex);
            if nh.state & NH_TXPORT != 0 && !tx {
                diffs.push(format!(
                    "{prefix}: next hop {id} is redirected to port {}, which does not transmit redirected frames",
                    nh.ifindex
                ));
            }
            hops.push(Some(hop));
            *held.entry(hop).or_default() += 1;
        }
        let hop_of = |p: &crate::state::PathKey| d.paths.get(p).map(|nh| (nh.ifindex, nh.dmac));
        let live: Vec<_> = g
            .members
            .iter()
            .filter(|m| {
                d.paths
                    .get(&m.path)
                    .is_some_and(|nh| nh.state & (NH_VALID | NH_LINK_UP) == (NH_VALID | NH_LINK_UP))
            })
            .collect();
        match &g.plan {
            GroupPlan::KernelBuckets(b) => {
                let want: Vec<Option<Hop>> =
                    b.iter().map(|p| p.as_ref().and_then(hop_of)).collect();
                if want.len() != hops.len() {
                    diffs.push(format!(
                        "{prefix}: {} buckets in the maps, the kernel has {}",
                        hops.len(),
                        want.len()
                    ));
                }
                for (i, (w, h)) in want.iter().zip(&hops).enumerate() {
                    if let Some(w) = w {
                        if Some(w) != h.as_ref() {
                            diffs.push(format!(
                                "{prefix}: bucket {i} goes to {h:?}, the kernel's to {w:?}"
                            ));
                        }
                    }
                }
            }
            GroupPlan::Modulo => {
                let weights: Vec<u32> = live.iter().map(|m| m.weight).collect();
                let want: usize = modulo_slot_counts(&weights)
                    .iter()
                    .map(|n| *n as usize)
                    .sum();
                if want != hops.len() {
                    diffs.push(format!(
                        "{prefix}: {} modulo slots, {want} wanted",
                        hops.len()
                    ));
                }
            }
            plan @ GroupPlan::Resilient {
                buckets,
                max_buckets,
                ..
            } => {
                if !plan.fits(hops.len()) {
                    diffs.push(format!(
                        "{prefix}: {} buckets, {buckets}..={max_buckets} wanted",
                        hops.len()
                    ));
                }
            }
        }
        let members: Vec<Hop> = live.iter().filter_map(|m| hop_of(&m.path)).collect();
        for (hop, n) in &held {
            if !members.contains(hop) {
                diffs.push(format!(
                    "{prefix}: {n} slots go to {hop:?}, not a live member"
                ));
            }
        }
        for hop in &members {
            if !held.contains_key(hop) {
                diffs.push(format!("{prefix}: live member {hop:?} holds no slot"));
            }
        }
    }
    for p in maps.keys() {
        diffs.push(format!("{p}: in the maps, not in the kernel"));
    }
    let dir = dp.dir_differences()?;
    for a in dir.iter().take(10) {
        diffs.push(format!(
            "{a}/24: the IPv4 lookup tables (DIR-24-8) disagree with the route map"
        ));
    }
    if dir.len() > 10 {
        diffs.push(format!(
            "... and {} more /24s where the lookup tables disagree",
            dir.len() - 10
        ));
    }
    let v6 = dp.v6_differences()?;
    for (a, l) in v6.entries.iter().take(10) {
        diffs.push(format!(
            "{a}/{l}: the IPv6 length search's entry disagrees with the route map"
        ));
    }
    if v6.entries.len() > 10 {
        diffs.push(format!(
            "... and {} more IPv6 search entries that disagree",
            v6.entries.len() - 10
        ));
    }
    for l in &v6.lengths {
        diffs.push(format!("/{l}: IPv6 routes of this length, not searched"));
    }
    diffs.sort();
    diffs.dedup();
    Ok(diffs)
}
