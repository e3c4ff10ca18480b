//! What flow pinning costs the program, side by side with the unpinned decision in one run: a packet of a pinned flow (hit), a new flow's first packet (insert), and the flow table's memory per flow.

use anyhow::{bail, Result};
use dataplane::abi::{xe_route, GROUP_RESILIENT, ROUTE_PIN, RT_UNICAST, XDP_REDIRECT};
use dataplane::{pin_thread_to_cpu, Dataplane, LoadOptions, TableWriter};

use crate::report::{num, text, Table};
use crate::{frame, frame6_to, median, ns_per_packet, ns_per_packet_of, world, ANYCAST, CALLS};

/// The IPv6 anycast address of the benchmark world (a /128 to group 1).
const ANYCAST6: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x66);

/// New flows per round of the insert measurement.
const NEW_FLOWS: u16 = 4000;

/// The benchmark world, its route pinned or not (next hops 1-4 carry paths
/// 1-4, all live members of group 1).
fn load(pinned: bool, flows: u32) -> Result<Dataplane> {
    let mut dp = Dataplane::load(&LoadOptions {
        flows: Some(flows),
        ..Default::default()
    })?;
    world(&mut dp, GROUP_RESILIENT)?;
    for id in 1..=4u32 {
        let nh = dp.nexthop(id)?;
        dp.set_nexthop(id, &dataplane::abi::xe_nexthop { path: id, ..nh })?;
        dp.set_pin_member(1, id, Some(id))?;
    }
    dp.set_group_gen(1, 1)?;
    let route = xe_route {
        group: 1,
        kind: RT_UNICAST,
        flags: if pinned { ROUTE_PIN } else { 0 },
        ..Default::default()
    };
    dp.set_route_v4(ANYCAST, 32, &route)?;
    dp.set_route_v6(ANYCAST6, 128, &route)?;
    Ok(dp)
}

/// Median ns of one packet that is its flow's first: NEW_FLOWS flows, one
/// test run each (the kernel times the run itself, not the system call).
fn ns_new_flow(dp: &Dataplane) -> Result<f64> {
    dp.flush_flows(&|_| true)?;
    let mut out = vec![0u8; 128];
    let mut ns = Vec::with_capacity(usize::from(NEW_FLOWS));
    for sport in 0..NEW_FLOWS {
        let mut f = frame();
        f[34..36].copy_from_slice(&(10_000 + sport).to_be_bytes());
        let r = dp.test_run_repeat(&f, &mut out, 1)?;
        if r.action != XDP_REDIRECT {
            bail!("a new flow's packet was not forwarded");
        }
        ns.push(r.duration.as_nanos() as f64);
    }
    Ok(median(&mut ns))
}

pub fn pin_cost(rounds: usize) -> Result<Table> {
    pin_thread_to_cpu(0)?;
    let plain = load(false, 1024)?;
    let pinned = load(true, dataplane::abi::DEFAULT_PIN_FLOWS)?;
    let v6 = frame6_to(ANYCAST6);
    // Rounds interleave the variants so drift hits them alike.
    let mut ns = [(); 6].map(|_| Vec::new());
    for _ in 0..rounds {
        ns[0].push(ns_per_packet(&plain, CALLS)?);
        ns[1].push(ns_per_packet(&pinned, CALLS)?);
        ns[2].push(ns_per_packet_of(&plain, &v6, 14 + 7, CALLS)?);
        ns[3].push(ns_per_packet_of(&pinned, &v6, 14 + 7, CALLS)?);
        ns[4].push(ns_new_flow(&plain)?);
        ns[5].push(ns_new_flow(&pinned)?);
    }
    let [u_hit, p_hit, u_hit6, p_hit6, u_new, p_new] = ns.map(|mut v| median(&mut v));
    let memory = |table: &str| {
        pinned
            .map_memory()
            .into_iter()
            .find(|(n, _)| n == table)
            .map_or(0, |(_, b)| b)
    };
    let (memory4, memory6) = (memory("xe_flows4"), memory("xe_flows6"));
    let capacity = pinned.sizes().flows;
    let mut t = Table::new(
        "pin_cost",
        format!("flow pinning's cost, BPF_PROG_TEST_RUN, 64-byte UDP, resilient group of 64 buckets, {rounds} rounds: a packet of a known flow ({CALLS} calls x 200 packets, median ns/packet) and a new IPv4 flow's first packet ({NEW_FLOWS} flows, one run each, median)"),
        &["packet", "unpinned route ns", "pinned route ns", "pinned - unpinned ns"],
    );
    t.row(vec![
        text("known flow (pinned: a hit)"),
        num(u_hit, 1),
        num(p_hit, 1),
        num(p_hit - u_hit, 1),
    ]);
    t.row(vec![
        text("known IPv6 flow (pinned: a hit)"),
        num(u_hit6, 1),
        num(p_hit6, 1),
        num(p_hit6 - u_hit6, 1),
    ]);
    t.row(vec![
        text("new flow (pinned: an insert)"),
        num(u_new, 1),
        num(p_new, 1),
        num(p_new - u_new, 1),
    ]);
    t.note(format!(
        "Each family has its flow table, an LRU hash map of {capacity} entries, preallocated: IPv4 {:.1} MiB, {:.0} bytes per flow (a 16-byte key), IPv6 {:.1} MiB, {:.0} bytes per flow (a 44-byte key) (the kernel's memlock figures). A hit looks up the flow's entry and the group's membership generation instead of hashing and reading the bucket (no bucket stamp); the table hashes and compares the whole key, so an IPv6 hit costs more. A new flow also writes its entry: about {:.0}k new flows per second per CPU at the pinned first-packet cost. A single run times one packet with the kernel's clock: the new-flow rows carry that clock's overhead on both sides.",
        memory4 as f64 / f64::from(1 << 20),
        memory4 as f64 / f64::from(capacity),
        memory6 as f64 / f64::from(1 << 20),
        memory6 as f64 / f64::from(capacity),
        1e6 / p_new,
    ));
    Ok(t)
}
