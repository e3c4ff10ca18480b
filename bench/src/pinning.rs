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

/// What one helper call and its return cost on this CPU: the peers'
/// `xdp_calls` with none and with 16 calls, side by side, median
/// ns/packet of each over `rounds` rounds, and the median of each round's
/// own difference over 16: (none, 16 calls, one call).
fn call_cost(rounds: usize) -> Result<(f64, f64, f64)> {
    use libbpf_rs::skel::{OpenSkel, SkelBuilder};
    let load = |calls: u32| -> Result<crate::compare::skel::PeersSkel<'static>> {
        let storage = Box::leak(Box::new(std::mem::MaybeUninit::uninit()));
        let mut open = crate::compare::skel::PeersSkelBuilder::default().open(storage)?;
        if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
            ro.helper_calls = calls;
        }
        Ok(open.load()?)
    };
    let (none, many) = (load(0)?, load(16)?);
    let pkt = frame();
    let mut out = vec![0u8; 128];
    let mut ns = |p: &libbpf_rs::ProgramMut<'_>| -> Result<f64> {
        let mut total = std::time::Duration::ZERO;
        for _ in 0..CALLS {
            let r = dataplane::test_run_prog(p, 0, &pkt, &mut out, 200)?;
            if r.action != dataplane::abi::XDP_DROP {
                bail!("xdp_calls did not drop the frame");
            }
            total += r.duration;
        }
        Ok(total.as_nanos() as f64 / f64::from(CALLS))
    };
    let (mut a, mut b, mut d) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (x, y) = (ns(&none.progs.xdp_calls)?, ns(&many.progs.xdp_calls)?);
        a.push(x);
        b.push(y);
        d.push((y - x) / 16.0);
    }
    Ok((median(&mut a), median(&mut b), median(&mut d)))
}

/// The pin-cost table, and the call-cost table that explains most of a
/// hit's cost (the kernel's hash table lookup is four calls).
pub fn pin_cost(rounds: usize) -> Result<Vec<Table>> {
    pin_thread_to_cpu(0)?;
    let plain = load(false, 1024)?;
    let pinned = load(true, dataplane::abi::DEFAULT_PIN_FLOWS)?;
    let v6 = frame6_to(ANYCAST6);
    // Rounds interleave the variants so drift hits them alike; a hit's
    // cost is the median of each round's difference (pinned less
    // unpinned, measured one right after the other), which drift between
    // rounds does not reach. Four times as many hit rounds as new-flow
    // rounds, no more: a repeated test run waits for RCU twice (the kernel
    // switches its XDP dispatcher to the program and back).
    let hit_rounds = rounds * 4;
    let mut ns = [(); 4].map(|_| Vec::new());
    let (mut d4, mut d6) = (Vec::new(), Vec::new());
    for _ in 0..hit_rounds {
        let (u, p) = (
            ns_per_packet(&plain, CALLS)?,
            ns_per_packet(&pinned, CALLS)?,
        );
        let u6 = ns_per_packet_of(&plain, &v6, 14 + 7, CALLS)?;
        let p6 = ns_per_packet_of(&pinned, &v6, 14 + 7, CALLS)?;
        d4.push(p - u);
        d6.push(p6 - u6);
        for (v, x) in ns.iter_mut().zip([u, p, u6, p6]) {
            v.push(x);
        }
    }
    let [u_hit, p_hit, u_hit6, p_hit6] = ns.map(|mut v| median(&mut v));
    let (hit4, hit6) = (median(&mut d4), median(&mut d6));
    let (mut u_new, mut p_new) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        u_new.push(ns_new_flow(&plain)?);
        p_new.push(ns_new_flow(&pinned)?);
    }
    let (u_new, p_new) = (median(&mut u_new), median(&mut p_new));
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
        format!("flow pinning's cost, BPF_PROG_TEST_RUN, 64-byte UDP, resilient group of 64 buckets: a packet of a known flow ({hit_rounds} rounds x {CALLS} calls x 200 packets, median ns/packet; the difference is the median of each round's own) and a new IPv4 flow's first packet ({rounds} rounds x {NEW_FLOWS} flows, one run each, median)"),
        &["packet", "unpinned route ns", "pinned route ns", "pinned - unpinned ns"],
    );
    t.row(vec![
        text("known flow (pinned: a hit)"),
        num(u_hit, 1),
        num(p_hit, 1),
        num(hit4, 1),
    ]);
    t.row(vec![
        text("known IPv6 flow (pinned: a hit)"),
        num(u_hit6, 1),
        num(p_hit6, 1),
        num(hit6, 1),
    ]);
    t.row(vec![
        text("new flow (pinned: an insert)"),
        num(u_new, 1),
        num(p_new, 1),
        num(p_new - u_new, 1),
    ]);
    let crowded = crowded_share(capacity);
    t.note(format!(
        "Each family has its flow table, an array of {ways}-way sets with twice as many ways as flows, sized for {capacity} flows and preallocated: IPv4 {:.1} MiB, {:.0} bytes per flow (a 48-byte way: the 16-byte key, the entry and a sequence word), IPv6 {:.1} MiB, {:.0} bytes per flow (an 80-byte way, a 44-byte key) (the kernel's memlock figures). A flow's set is a keyed multiply-shift hash of its key; a full set gives its least recently seen way to a new flow. With the table full, {:.2}% of {capacity} random flows found their set's {ways} ways taken by others (this run, the program's set hash), so the table starts to forget its oldest flows a little before it holds {capacity}. A hit hashes the key, compares it with the set's ways in place and reads the group's membership generation instead of hashing and reading the bucket (no bucket stamp); the verifier inlines the array lookup, so a hit makes no call. A new flow also writes its entry: about {:.0}k new flows per second per CPU at the pinned first-packet cost. A single run times one packet with the kernel's clock: the new-flow rows carry that clock's overhead on both sides.",
        memory4 as f64 / f64::from(1 << 20),
        memory4 as f64 / f64::from(capacity),
        memory6 as f64 / f64::from(1 << 20),
        memory6 as f64 / f64::from(capacity),
        crowded * 100.0,
        1e6 / p_new,
        ways = dataplane::abi::PIN_WAYS,
    ));
    let (none, many, one) = call_cost(hit_rounds)?;
    let mut c = Table::new(
        "call_cost",
        format!("what a call into the kernel and its return cost on this CPU: a program that makes 16 helper calls (bpf_get_numa_node_id) and one that makes none, BPF_PROG_TEST_RUN, {hit_rounds} rounds x {CALLS} calls x 200 packets, median ns/packet (one call: the median of each round's difference over 16)"),
        &["program", "ns per packet"],
    );
    c.row(vec![text("no call"), num(none, 1)]);
    c.row(vec![text("16 helper calls"), num(many, 1)]);
    c.row(vec![text("one call and its return"), num(one, 1)]);
    let mitigations: Vec<String> = ["spectre_v2", "retbleed", "spec_rstack_overflow"]
        .iter()
        .filter_map(|v| {
            let s = std::fs::read_to_string(format!("/sys/devices/system/cpu/vulnerabilities/{v}"))
                .ok()?;
            Some(format!("{v}: {}", s.trim()))
        })
        .collect();
    c.note(format!("A flow-table hit makes no call: the flow table is an array whose lookup the verifier inlines, like the unpinned decision's hash and bucket read; a new flow's insert makes one (the program's own subprogram). Where CPU mitigations send returns through a thunk, each call costs what this table shows. This CPU's mitigations (/sys/devices/system/cpu/vulnerabilities): {}.", mitigations.join("; ")));
    Ok(vec![t, c])
}

/// The share of `capacity` random IPv4 flows that find every way of their
/// set taken when the table is filled to its capacity (each of them takes
/// the way of an older flow): the program's set hash over random keys.
fn crowded_share(capacity: u32) -> f64 {
    use dataplane::pinsets::{set_bits, set_of, sets_for};
    use rand::Rng;
    let sets = sets_for(capacity);
    let mut rng = rand::rng();
    let (bits, seed) = (set_bits(sets), rng.random::<u64>());
    let mut fill = vec![0u8; sets as usize];
    let mut crowded = 0u32;
    for _ in 0..capacity {
        let key: [u32; 4] = rng.random();
        let n = &mut fill[set_of(&key, seed, bits) as usize];
        if u64::from(*n) == u64::from(dataplane::abi::PIN_WAYS) {
            crowded += 1;
        } else {
            *n += 1;
        }
    }
    f64::from(crowded) / f64::from(capacity)
}
