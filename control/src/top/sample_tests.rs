//! Unit tests of `top`'s figures: rates and resets, egress sums, verdict classes, group balance by buckets and by traffic, the daemon's state and sync rates.

use std::time::Duration;

use dataplane::abi::xe_counter;

use super::*;
use crate::top::fixture::{readings, sample, structure};

fn c(packets: u64, bytes: u64) -> xe_counter {
    xe_counter { packets, bytes }
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

#[test]
fn a_rate_is_the_difference_over_the_interval_and_a_counter_going_back_is_a_reset() {
    let r = Rate::between(Some(c(100, 10_000)), c(400, 40_000), 1.5);
    assert!(
        close(r.pps, 200.0) && close(r.bps, 160_000.0) && !r.reset,
        "{r:?}"
    );
    let back = Rate::between(Some(c(400, 40_000)), c(10, 1_000), 1.0);
    assert_eq!((back.pps, back.bps, back.reset), (None, None, true));
    assert_eq!(Rate::between(None, c(5, 5), 1.0), Rate::default());
    assert_eq!(Rate::between(Some(c(0, 0)), c(5, 5), 0.0), Rate::default());
    let sum = Rate::sum(&[r, back, Rate::default()]);
    assert!(close(sum.pps, 200.0) && sum.reset, "{sum:?}");
    assert_eq!(Rate::sum(&[]), Rate::default());
}

#[test]
fn next_hops_and_egress_ports_get_their_rates() {
    let s = sample();
    assert!((s.interval_s - 2.0).abs() < 1e-9);
    let nh = |id: u32| s.nexthops.iter().find(|n| n.id == id).unwrap();
    assert!(close(nh(1).rate.pps, 1_000.0), "{:?}", nh(1));
    assert!(close(nh(1).rate.bps, 800_000.0), "{:?}", nh(1));
    assert!(close(nh(2).rate.pps, 2_000.0));
    assert!(nh(3).rate.reset && nh(3).rate.pps.is_none());
    assert_eq!(nh(2).groups, [7, 9]);
    let port = |dev: &str| s.ports.iter().find(|p| p.dev == dev).unwrap();
    assert!(close(port("xe-o0").rate.pps, 1_000.0));
    assert_eq!(port("xe-o1").nexthops, [2, 3]);
    assert_eq!(port("xe-o1").packets, 5_300);
    // Next hop 3's reset marks its port; the known part is still summed.
    assert!(port("xe-o1").rate.reset && close(port("xe-o1").rate.pps, 2_000.0));
    assert!(s.ports.iter().all(|p| p.direction == "egress"));
}

#[test]
fn verdicts_say_where_packets_go_and_why() {
    let s = sample();
    let v = |name: &str| s.verdicts.iter().find(|v| v.verdict == name).unwrap();
    assert!(close(v("forward").rate.pps, 3_000.0));
    assert_eq!(v("pass-ttl").goes, "kernel");
    assert!(v("pass-ttl").why.contains("TTL"));
    assert!(close(s.totals.kernel.pps, 5.0));
    assert!(close(s.totals.forwarded.pps, 3_000.0));
    assert_eq!(s.totals.dropped, Rate::default());
    assert_eq!(v("forward").afxdp_pps, None);
    assert_eq!(goes(Verdict::DropBlackhole), "dropped");
}

#[test]
fn a_groups_members_are_weighed_by_buckets_and_by_traffic() {
    let s = sample();
    let g = s.groups.iter().find(|g| g.id == 7).unwrap();
    assert_eq!(g.routes, ["10.9.1.0/24", "172.16.255.66/32"]);
    let shares: Vec<_> = g
        .members
        .iter()
        .map(|m| (m.weight_share, m.bucket_share, m.traffic_share))
        .collect();
    assert!(close(shares[0].0, 1.0 / 3.0) && close(shares[1].0, 2.0 / 3.0));
    assert!((shares[0].1 - 0.375).abs() < 1e-9 && (shares[1].1 - 0.625).abs() < 1e-9);
    assert!(close(shares[0].2, 1.0 / 3.0) && close(shares[1].2, 2.0 / 3.0));
    // 3/8 of the buckets for a third of the weight: 12.5% over.
    assert!(close(g.bucket_imbalance, 0.125), "{g:?}");
    assert!(close(g.traffic_imbalance, 0.0), "{g:?}");
    assert!(close(g.rate.pps, 3_000.0));
    // Next hop 2 is in group 9 too: its traffic is both groups'.
    assert!(!g.members[0].shared && g.members[1].shared);
    // Group 9: next hop 3's counter was reset, so no traffic share.
    let g9 = s.groups.iter().find(|g| g.id == 9).unwrap();
    assert!(g9.members.iter().all(|m| m.traffic_share.is_none()));
    assert_eq!(g9.traffic_imbalance, None);
    assert_eq!(g9.bucket_imbalance, Some(0.0));
}

#[test]
fn buckets_come_from_the_maps_and_empty_ones_are_counted() {
    let mut st = structure();
    // The status says 3 and 5; the maps now hold 2, 5 and one empty.
    st.groups[0].row.members = BTreeMap::from([(0, 1), (1, 2), (2, 5)]);
    let (prev, cur) = readings();
    let mut sampler = Sampler::default();
    sampler.push(prev, &st);
    let s = sampler.push(cur, &st).unwrap();
    let g = &s.groups[0];
    assert_eq!(g.empty_buckets, 1);
    assert_eq!(g.members[0].buckets, 2);
    assert!((g.members[0].bucket_share - 0.25).abs() < 1e-9);
}

#[test]
fn without_weights_there_is_no_imbalance_to_tell() {
    let mut st = structure();
    for m in &mut st.groups[0].nexthops {
        m.weight = 0;
    }
    let (prev, cur) = readings();
    let mut sampler = Sampler::default();
    sampler.push(prev, &st);
    let g = sampler.push(cur, &st).unwrap().groups.remove(0);
    assert_eq!(g.members[0].weight, None);
    assert_eq!((g.bucket_imbalance, g.traffic_imbalance), (None, None));
    assert!(g.members[0].traffic_share.is_some());
}

#[test]
fn the_daemon_is_running_ended_stale_or_absent() {
    let s = sample();
    assert_eq!(s.daemon.state, "running");
    assert_eq!(s.daemon.pid, Some(4242));
    assert_eq!(s.daemon.engine.as_deref(), Some("xdp"));
    assert!(close(s.daemon.status_age_s, 0.5));
    let (_, mut cur) = readings();
    cur.daemon_alive = false;
    assert_eq!(DaemonState::of(&cur).state, "ended");
    cur.daemon_alive = true;
    cur.wall_ms += STALE_MS;
    assert_eq!(DaemonState::of(&cur).state, "not-updating");
    cur.activity = None;
    assert_eq!(DaemonState::of(&cur).state, "none");
}

#[test]
fn sync_rates_come_from_the_daemons_last_two_statuses() {
    let s = sample();
    let y = s.sync.unwrap();
    // 4 events between statuses written 2 s apart.
    assert!(close(y.events_per_s, 2.0), "{y:?}");
    assert!(close(y.last_redump_ago_s, 5.0));
    assert_eq!((y.buckets_moved_last_minute, y.buckets_moved), (3, 128));

    // A third read that sees the same status keeps the last two.
    let (prev, cur) = readings();
    let st = structure();
    let mut sampler = Sampler::default();
    sampler.push(prev, &st);
    sampler.push(cur.clone(), &st);
    let third = Reading {
        at: cur.at + Duration::from_secs(1),
        ..cur.clone()
    };
    let y = sampler.push(third, &st).unwrap().sync.unwrap();
    assert!(close(y.events_per_s, 2.0), "{y:?}");

    // Another daemon: no rate across the two.
    let mut other = cur.clone();
    other.at = cur.at + Duration::from_secs(2);
    if let Some(a) = &mut other.activity {
        a.pid = 5151;
        a.written_ms += 1_000;
    }
    let y = sampler.push(other, &st).unwrap().sync.unwrap();
    assert_eq!(y.events_per_s, None);
}

#[test]
fn the_json_flattens_each_rate_beside_its_counters() {
    let v = serde_json::to_value(sample()).unwrap();
    let nh = &v["nexthops"][0];
    assert_eq!(nh["id"], 1);
    assert_eq!(nh["pps"], 1_000.0);
    assert_eq!(nh["bps"], 800_000.0);
    assert_eq!(nh["reset"], false);
    assert_eq!(nh["gateway"], "10.0.0.2");
    assert_eq!(v["ports"][0]["direction"], "egress");
    assert_eq!(v["groups"][0]["members"][1]["weight"], 2);
    assert_eq!(v["daemon"]["state"], "running");
    assert_eq!(v["totals"]["kernel"]["pps"], 5.0);
}
