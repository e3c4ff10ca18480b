//! IPv6 program cost by the prefix lengths routes have: each length the binary search visits on its way to a packet's route is one more probe of the slot table.

use std::net::Ipv6Addr;

use anyhow::Result;
use dataplane::abi::{xe_route, RT_UNICAST};
use dataplane::lensearch::marker_lengths;
use dataplane::TableWriter;

use crate::compare::{cost_of, cost_of_empty, median, ours, skel::PeersSkel, Family, Verdict};
use crate::report::{num, Table};

/// Lengths searched, with 128 (the measured route's) among them.
const SETS: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, 129];

/// `n` lengths from 0..=128 spread evenly, 128 always one of them.
fn spread(n: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..n)
        .map(|i| (128 - (i * 128).div_ceil(n.max(1))) as u8)
        .collect();
    if n == 129 {
        v = (0..=128).collect();
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// One /128 route measured while routes of ever more lengths join it (at
/// 8000::/len, which does not cover the measured address; ::/0 covers it
/// but is shorter).
pub fn levels(
    ingress: u32,
    egress: u32,
    smac: [u8; 6],
    peers: &PeersSkel<'_>,
    rounds: usize,
) -> Result<Table> {
    let mut dp = ours(dataplane::abi::GROUP_RESILIENT, ingress, egress, smac)?;
    let route = xe_route {
        group: 1,
        kind: RT_UNICAST,
        ..Default::default()
    };
    let fam = Family::V6;
    let std::net::IpAddr::V6(dst) = fam.dst(0) else {
        unreachable!("an IPv6 destination")
    };
    dp.set_route_v6(dst, 128, &route)?;
    let pkt = fam.frame(0);
    let forwards = Verdict::Forwards {
        ttl_at: fam.ttl_at(),
        decrements: true,
    };
    let mut t = Table::new(
        "prog_cost_ipv6_lengths",
        format!("IPv6 program cost by prefix lengths searched, 64-byte UDP to a /128 route, {rounds} rounds, median ns/packet"),
        &[
            "prefix lengths",
            "slot-table searches for this packet",
            "xdp-ecmp resilient",
            "empty program",
            "resilient - empty",
        ],
    );
    let mut have: Vec<u8> = vec![128];
    for n in SETS {
        for l in spread(n) {
            if !have.contains(&l) {
                let a = if l == 0 { 0 } else { 1u128 << 127 };
                dp.set_route_v6(Ipv6Addr::from(a), l, &route)?;
                have.push(l);
            }
        }
        have.sort_unstable();
        let searches = marker_lengths(&have, 128).len() + 1;
        let (mut ours_ns, mut empty_ns, mut over) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let r = cost_of(&dp, ingress, &pkt, forwards)?;
            let e = cost_of_empty(peers, ingress, &pkt)?;
            ours_ns.push(r);
            empty_ns.push(e);
            over.push(r - e);
        }
        t.row(vec![
            num(have.len() as f64, 0),
            num(searches as f64, 0),
            num(median(ours_ns), 1),
            num(median(empty_ns), 1),
            num(median(over), 1),
        ]);
    }
    t.note("The search visits the lengths routes have by binary search, longer lengths nearer the top: a /128 among n lengths costs one slot-table search per level of that search (about log2 n), each an inlined array read or a few. The route count does not enter (the program-cost table above). Every run must forward the frame, all repetitions.");
    Ok(t)
}
