//! Capacity: 1M IPv4 routes, 65,536 groups and next hops fit the maps and still forward; the model decides without allocating.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::fixtures::fixtures;
use common::packets::*;
use common::*;
use dataplane::abi::{
    xe_group, xe_nexthop, xe_route, Verdict, GROUP_RESILIENT, MAX_GROUPS, MAX_NEXTHOPS, NH_USABLE,
    RT_UNICAST,
};
use dataplane::tables::single_path;
use dataplane::{TableReader, TableWriter};
use testnet::require_root;

/// Counts allocations made by a thread while its `COUNTING` flag is set
/// (other tests run concurrently in other threads).
struct CountingAlloc;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

// SAFETY: forwards to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[test]
fn model_decides_without_allocating() {
    let mut t = dataplane::Tables::default();
    let nh = xe_nexthop {
        ifindex: 5,
        mtu: 1500,
        state: NH_USABLE,
        ..Default::default()
    };
    single_path(
        &mut t,
        "172.16.255.66".parse().expect("v4"),
        &nh,
        GROUP_RESILIENT,
        64,
    )
    .expect("world");
    let packets: Vec<Vec<u8>> = fixtures().into_iter().map(|f| f.pkt).collect();
    let mut out = vec![0u8; 4096];
    let mut forwarded = 0;
    COUNTING.with(|c| c.set(true));
    let start = std::time::Instant::now();
    const ROUNDS: usize = 2000;
    for _ in 0..ROUNDS {
        for p in &packets {
            let (d, _) = t.decide(p, &mut out);
            forwarded += usize::from(d.verdict == Verdict::Forward as u32);
        }
    }
    let elapsed = start.elapsed();
    COUNTING.with(|c| c.set(false));
    let n = ROUNDS * packets.len();
    println!(
        "model: {n} decisions, {} allocations, {:.0} ns/packet (fixture mix, {forwarded} forwarded)",
        ALLOCS.load(Ordering::SeqCst),
        elapsed.as_nanos() as f64 / n as f64
    );
    assert_eq!(
        ALLOCS.load(Ordering::SeqCst),
        0,
        "the model allocated per packet"
    );
    assert!(forwarded > 0);
}

#[test]
fn a_million_routes_and_full_group_and_nexthop_tables() {
    if !require_root("a_million_routes_and_full_group_and_nexthop_tables") {
        return;
    }
    let mut w = World::new("capacity");
    let started = std::time::Instant::now();
    const ROUTES: u32 = 1_000_000;
    // 1M distinct /32s in 100.64.0.0/10 spread over the last groups.
    for i in 0..ROUTES {
        let addr = Ipv4Addr::from(0x6440_0000u32 + i);
        let group = MAX_GROUPS - 1 - (i % 1024);
        w.dp.set_route_v4(
            addr,
            32,
            &xe_route {
                group,
                kind: RT_UNICAST,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("route {i}: {e}"));
    }
    let routes_s = started.elapsed().as_secs_f64();
    let nh = w.nexthop(NH_P0);
    for id in 100..MAX_NEXTHOPS {
        w.dp.set_nexthop(id, &nh).expect("next hop");
    }
    for i in 0..1024u32 {
        let g = xe_group {
            base: 100_000 + i,
            size: 1,
            mode: GROUP_RESILIENT,
            ..Default::default()
        };
        w.dp.set_slots(g.base, &[MAX_NEXTHOPS - 1 - i])
            .expect("slot");
        w.dp.set_group(MAX_GROUPS - 1 - i, &g).expect("group");
    }
    // The last route, group and next hop forward.
    let dst = Ipv4Addr::from(0x6440_0000u32 + ROUTES - 1).to_string();
    let pkt = eth(
        IN_MAC,
        &[],
        ETH_IP,
        &Ip4::new("10.2.0.100", &dst, 17).packet(&udp(1, 53, b"")),
    );
    let (_, _, d) = w.run(&pkt);
    assert_eq!(verdict_of(&d), Verdict::Forward);
    let expect_group = MAX_GROUPS - 1 - ((ROUTES - 1) % 1024);
    assert_eq!(d.group, expect_group);
    assert_eq!(
        d.nexthop,
        MAX_NEXTHOPS - 1 - (MAX_GROUPS - 1 - expect_group)
    );
    println!(
        "capacity: {ROUTES} IPv4 routes written in {routes_s:.1} s ({:.0} routes/s, one syscall each), {} next hops, group ids up to {}; the last of each forwards",
        f64::from(ROUTES) / routes_s,
        MAX_NEXTHOPS,
        MAX_GROUPS - 1
    );
    // The IPv4 route maps: the trie (the record) and the DIR-24-8 tables.
    let route_bytes: u64 =
        w.dp.map_memory()
            .iter()
            .filter(|(m, _)| ["xe_routes_v4", "xe_tbl24", "xe_tbl8"].contains(&m.as_str()))
            .inspect(|(m, b)| println!("  {m} memlock {:.1} MiB", *b as f64 / 1048576.0))
            .map(|(_, b)| b)
            .sum();
    let per_route = route_bytes as f64 / f64::from(ROUTES);
    println!(
        "capacity: IPv4 route maps {:.1} MiB, {per_route:.0} B/route",
        route_bytes as f64 / 1048576.0
    );
    assert!(per_route <= 128.0, "{per_route:.0} B/route, more than 128");
}
