//! Each group's members against their weights, pure: their share of the group's buckets (the flows the hash sends them) and of its traffic (their next hops' packets/s), and the largest gap to the weight's share.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Serialize, Serializer};

use super::sample::{NexthopRate, Rate, Structure};
use crate::listings::GroupListing;

/// A member of a group against its weight.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberBalance {
    pub nexthop: Option<u32>,
    pub gateway: Option<IpAddr>,
    pub dev: String,
    /// None: not known (no daemon status).
    pub weight: Option<u32>,
    /// Its weight over the members' weights.
    pub weight_share: Option<f64>,
    /// Buckets (slots) it holds in the maps, and its share by weight (resilient groups).
    pub buckets: u32,
    pub wanted: Option<u32>,
    /// Its buckets over the group's: the share of flows the hash sends it.
    pub bucket_share: f64,
    /// Its packets/s over the members': the share of traffic it carried
    /// (None: no traffic, or a member's rate is not known).
    pub traffic_share: Option<f64>,
    pub pps: Option<f64>,
    pub bps: Option<f64>,
    /// It is a member of other groups too: its rate (and traffic share)
    /// counts their packets as well.
    pub shared: bool,
}

/// A group's members: buckets and traffic against weights.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupBalance {
    pub id: u32,
    /// `resilient`, `kernel-resilient` or `modulo`.
    pub kind: String,
    pub buckets: u32,
    /// Buckets without a next hop: their packets go to the kernel.
    pub empty_buckets: u32,
    pub route_count: usize,
    /// Its routes' prefixes (the first 64 in JSON).
    #[serde(serialize_with = "first_64")]
    pub routes: Vec<String>,
    /// Seconds it has been unbalanced, as the daemon last wrote.
    pub unbalanced_for_s: Option<f64>,
    /// Its members' rates summed.
    #[serde(flatten)]
    pub rate: Rate,
    /// Largest |bucket share / weight share - 1| over the members.
    pub bucket_imbalance: Option<f64>,
    /// Largest |traffic share / weight share - 1| over the members.
    pub traffic_imbalance: Option<f64>,
    pub members: Vec<MemberBalance>,
}

fn first_64<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().take(64))
}

pub(super) fn groups(s: &Structure, nexthops: &[NexthopRate]) -> Vec<GroupBalance> {
    let rate_of: BTreeMap<u32, &NexthopRate> = nexthops.iter().map(|n| (n.id, n)).collect();
    let mut routes: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (prefix, g) in &s.routes {
        routes.entry(*g).or_default().push(prefix.clone());
    }
    s.groups
        .iter()
        .map(|g| {
            let routes = routes.remove(&g.row.id).unwrap_or_default();
            balance(g, routes, &rate_of)
        })
        .collect()
}

/// One group's members against their weights.
fn balance(
    g: &GroupListing,
    routes: Vec<String>,
    rate_of: &BTreeMap<u32, &NexthopRate>,
) -> GroupBalance {
    let size = u32::from(g.row.size);
    let weights: u32 = g.nexthops.iter().map(|m| m.weight).sum();
    let rates: Vec<Rate> = g
        .nexthops
        .iter()
        .map(|m| {
            m.nexthop
                .and_then(|id| rate_of.get(&id))
                .map_or_else(Rate::default, |n| n.rate)
        })
        .collect();
    let total = Rate::sum(&rates);
    // Traffic shares only when every member's rate is known and some flowed.
    let traffic_total = total
        .pps
        .filter(|t| *t > 0.0 && rates.iter().all(|r| r.pps.is_some()));
    let members: Vec<MemberBalance> = g
        .nexthops
        .iter()
        .zip(&rates)
        .map(|(m, r)| {
            // The maps' count is what forwards; the status may be older.
            let buckets = m
                .nexthop
                .and_then(|id| g.row.members.get(&id))
                .map_or(m.buckets, |n| *n as u32);
            MemberBalance {
                nexthop: m.nexthop,
                gateway: m.gateway,
                dev: m.dev.clone(),
                weight: (m.weight > 0).then_some(m.weight),
                weight_share: (m.weight > 0 && weights > 0)
                    .then(|| f64::from(m.weight) / f64::from(weights)),
                buckets,
                wanted: m.wanted,
                bucket_share: if size == 0 {
                    0.0
                } else {
                    f64::from(buckets) / f64::from(size)
                },
                traffic_share: traffic_total.and_then(|t| r.pps.map(|p| p / t)),
                pps: r.pps,
                bps: r.bps,
                shared: m
                    .nexthop
                    .and_then(|id| rate_of.get(&id))
                    .is_some_and(|n| n.groups.len() > 1),
            }
        })
        .collect();
    let worst = |share: fn(&MemberBalance) -> Option<f64>| {
        members
            .iter()
            .filter_map(|m| Some((share(m)? / m.weight_share.filter(|w| *w > 0.0)? - 1.0).abs()))
            .reduce(f64::max)
    };
    GroupBalance {
        id: g.row.id,
        kind: g.kind.clone().unwrap_or_else(|| g.row.mode.to_string()),
        buckets: size,
        empty_buckets: g.row.members.get(&0).map_or(0, |n| *n as u32),
        route_count: routes.len(),
        routes,
        unbalanced_for_s: g.unbalanced_for,
        rate: total,
        bucket_imbalance: worst(|m| Some(m.bucket_share)),
        traffic_imbalance: worst(|m| m.traffic_share),
        members,
    }
}
