//! A small made-up topology and two readings 2 s apart, for the unit tests of `top`'s figures, view and drawing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use dataplane::abi::{xe_counter, Verdict};

use super::sample::{Reading, Sample, Sampler, Structure};
use crate::inspect::{GroupRow, NexthopRow};
use crate::listings::{GroupListing, NexthopListing};
use crate::status::{Activity, MemberInfo};

fn nexthop(id: u32, gateway: &str, dev: &str) -> NexthopListing {
    NexthopListing {
        row: NexthopRow {
            id,
            dev: dev.into(),
            ifindex: 10 + id,
            lladdr: "02:00:00:00:00:01".into(),
            src_mac: "02:00:00:00:00:02".into(),
            mtu: 1500,
            vlan: 0,
            usable: true,
            state: vec!["valid"],
        },
        gateway: Some(gateway.parse().unwrap()),
        kernel_ids: vec![],
    }
}

fn member(nh: u32, gateway: &str, dev: &str, weight: u32, buckets: u32) -> MemberInfo {
    MemberInfo {
        nexthop: Some(nh),
        gateway: Some(gateway.parse().unwrap()),
        dev: dev.into(),
        weight,
        buckets,
        wanted: Some(buckets),
    }
}

fn group(id: u32, kind: &str, slots: &[(u32, usize)], members: Vec<MemberInfo>) -> GroupListing {
    let members_map: BTreeMap<u32, usize> = slots.iter().copied().collect();
    GroupListing {
        row: GroupRow {
            id,
            mode: if kind == "modulo" {
                "modulo"
            } else {
                "resilient"
            },
            base: 0,
            size: slots.iter().map(|(_, n)| *n as u16).sum(),
            members: members_map,
        },
        kernel_id: None,
        kind: Some(kind.into()),
        idle_timer: Some(120),
        unbalanced_timer: Some(0),
        unbalanced_for: None,
        routes: Some(1),
        nexthops: members,
    }
}

/// Next hops 1 (xe-o0), 2 and 3 (xe-o1); group 7 (resilient, 8 buckets:
/// 3 to next hop 1 of weight 1, 5 to next hop 2 of weight 2), group 9
/// (modulo: next hops 3 and 2); routes 172.16.255.66/32 and 10.9.1.0/24
/// to group 7, 10.9.0.0/16 to group 9.
pub fn structure() -> Structure {
    Structure {
        nexthops: vec![
            nexthop(1, "10.0.0.2", "xe-o0"),
            nexthop(2, "10.0.1.2", "xe-o1"),
            nexthop(3, "10.0.1.3", "xe-o1"),
        ],
        groups: vec![
            group(
                7,
                "resilient",
                &[(1, 3), (2, 5)],
                vec![
                    member(1, "10.0.0.2", "xe-o0", 1, 3),
                    member(2, "10.0.1.2", "xe-o1", 2, 5),
                ],
            ),
            group(
                9,
                "modulo",
                &[(3, 1), (2, 1)],
                vec![
                    member(3, "10.0.1.3", "xe-o1", 1, 1),
                    member(2, "10.0.1.2", "xe-o1", 1, 1),
                ],
            ),
        ],
        routes: vec![
            ("10.9.0.0/16".into(), 9),
            ("10.9.1.0/24".into(), 7),
            ("172.16.255.66/32".into(), 7),
        ],
        note: None,
    }
}

fn c(packets: u64, bytes: u64) -> xe_counter {
    xe_counter { packets, bytes }
}

fn activity(written_ms: u64, events: u64) -> Activity {
    Activity {
        pid: 4242,
        written_ms,
        started_ms: 1_000,
        engine: "xdp".into(),
        events,
        syncs: events,
        redumps: 2,
        last_redump_ms: Some(5_000),
        buckets_moved: 128,
        buckets_moved_last_minute: 3,
        latency_p50_us: 40,
        latency_p99_us: 900,
        ..Activity::default()
    }
}

/// Two readings 2 s apart: next hop 1 forwarded 2,000 frames of 100 bytes
/// (1,000 pps, 800 kbit/s), next hop 2 4,000 (2,000 pps), next hop 3's
/// counter went back (a reset); 10 frames went to the kernel with TTL 1.
pub fn readings() -> (Reading, Reading) {
    let t0 = Instant::now();
    let prev = Reading {
        at: t0,
        wall_ms: 8_000,
        verdicts: vec![
            (Verdict::Forward, c(1_500, 150_000)),
            (Verdict::PassTtl, c(0, 0)),
        ],
        engine: vec![],
        tx_refused: 0,
        nexthops: BTreeMap::from([(1, c(0, 0)), (2, c(1_000, 100_000)), (3, c(500, 50_000))]),
        activity: Some(activity(7_500, 10)),
        daemon_alive: true,
    };
    let cur = Reading {
        at: t0 + Duration::from_secs(2),
        wall_ms: 10_000,
        verdicts: vec![
            (Verdict::Forward, c(7_500, 750_000)),
            (Verdict::PassTtl, c(10, 1_000)),
        ],
        nexthops: BTreeMap::from([
            (1, c(2_000, 200_000)),
            (2, c(5_000, 500_000)),
            (3, c(300, 30_000)),
        ]),
        activity: Some(activity(9_500, 14)),
        ..prev.clone()
    };
    (prev, cur)
}

/// The sample of [`readings`] over [`structure`].
pub fn sample() -> Sample {
    let (prev, cur) = readings();
    let s = structure();
    let mut sampler = Sampler::default();
    assert!(sampler.push(prev, &s).is_none());
    sampler
        .push(cur, &s)
        .expect("a second reading gives a sample")
}

/// The ids of `ids`, as a set (for order-free comparisons).
pub fn set(ids: impl IntoIterator<Item = u32>) -> BTreeSet<u32> {
    ids.into_iter().collect()
}
