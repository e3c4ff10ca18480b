//! Flow pinning, program against the shared decision: flows to a pinned route keep their path through bucket moves and group changes, re-hash when their path leaves or dies, end on RST, close on FIN and age out; the flow tables of both end equal.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use std::collections::BTreeMap;

use common::fixtures::fixtures;
use common::packets::{eth, ip6, tcp, udp, v6, Ip4};
use common::random::{mutate, random_packet};
use common::{verdict_of, World, G_ANYCAST, IN_MAC, NH_P0, NH_P1, NH_P2, RES_BUCKETS, SEED};
use dataplane::abi::{
    xe_config, xe_decision, xe_flow, xe_nexthop, xe_route, PinEvent, Verdict, HASH_ALL_FIELDS,
    HASH_POLICY_L3, PIN_CLOSING, PIN_T_CLOSING, PIN_T_OTHER, PIN_WAYS, ROUTE_PIN, RT_UNICAST,
};
use dataplane::flows::FlowStats;
use dataplane::{MemoryFlows, Pins, TableReader};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use testnet::require_root;

const PATH: [(u32, u32); 3] = [(NH_P0, 100), (NH_P1, 101), (NH_P2, 102)];
const ANYCAST4: &str = "172.16.255.66";
const ANYCAST6: &str = "2001:db8:66::";

/// The world with the anycast routes pinned, next hops carrying path ids,
/// and NH_P0/NH_P1 members of the anycast group.
struct Pinned {
    w: World,
    flows: MemoryFlows,
    gen: u32,
}

impl Pinned {
    fn new(tag: &str) -> Pinned {
        Pinned::over(World::new(tag))
    }

    fn over(mut w: World) -> Pinned {
        for (id, path) in PATH {
            let nh = xe_nexthop {
                path,
                ..w.nexthop(id)
            };
            w.both(|t| t.set_nexthop(id, &nh));
        }
        let pinned = xe_route {
            group: G_ANYCAST,
            kind: RT_UNICAST,
            flags: ROUTE_PIN,
            ..Default::default()
        };
        w.both(|t| {
            t.set_route_v4(ANYCAST4.parse::<Ipv4Addr>().unwrap(), 32, &pinned)?;
            t.set_route_v6(ANYCAST6.parse::<Ipv6Addr>().unwrap(), 64, &pinned)?;
            t.set_pin_member(G_ANYCAST, 100, Some(NH_P0))?;
            t.set_pin_member(G_ANYCAST, 101, Some(NH_P1))?;
            t.set_group_gen(G_ANYCAST, 1)
        });
        Pinned {
            w,
            flows: MemoryFlows::default(),
            gen: 1,
        }
    }

    /// Changes a membership of the anycast group as the control plane does:
    /// the generation cleared first, a new one after.
    fn member(&mut self, path: u32, nh: Option<u32>) {
        self.gen += 1;
        let gen = self.gen;
        self.w.both(|t| {
            t.set_group_gen(G_ANYCAST, 0)?;
            t.set_pin_member(G_ANYCAST, path, nh)?;
            t.set_group_gen(G_ANYCAST, gen)
        });
    }

    /// The program's decision for `pkt`, checked equal to the shared
    /// decision's over the model tables and flow table.
    fn run(&mut self, pkt: &[u8]) -> xe_decision {
        let (_, out, d) = self.w.run(pkt);
        let now = self.w.dp.jiffies().unwrap() as u32;
        let mut mout = vec![0u8; pkt.len() + 4];
        let mut pins = Pins {
            table: &mut self.flows,
            now,
        };
        let (m, n) = self.w.model.decide_pinned(&mut pins, None, pkt, &mut mout);
        assert_eq!(
            (d.verdict, d.action, d.hash, d.group, d.bucket, d.nexthop, d.pin),
            (m.verdict, m.action, m.hash, m.group, m.bucket, m.nexthop, m.pin),
            "program and shared decision differ on {}",
            common::hex(pkt)
        );
        assert_eq!(
            out,
            mout[..n],
            "program and shared decision wrote different frames for {}",
            common::hex(pkt)
        );
        d
    }

    /// Sets every anycast bucket to `nh`.
    fn all_buckets(&mut self, nh: u32) {
        let slots = vec![nh; usize::from(RES_BUCKETS)];
        self.w.both(|t| t.set_slots(0, &slots));
    }

    /// The program's flow table equals the model's (paths and flags).
    fn tables_agree(&self) {
        let mut prog: Vec<_> = self
            .w
            .dp
            .flow_entries()
            .into_iter()
            .map(|(k, p)| (format!("{k:?}"), p.path, p.flags))
            .collect();
        let mut model: Vec<_> = self
            .flows
            .entries()
            .into_iter()
            .map(|(k, p)| (format!("{k:?}"), p.path, p.flags))
            .collect();
        prog.sort();
        model.sort();
        assert_eq!(prog, model, "flow tables differ");
    }
}

fn tcp4(sport: u16, flags: u8) -> Vec<u8> {
    let mut l4 = tcp(sport, 443, 5);
    l4[13] = flags;
    eth(
        IN_MAC,
        &[],
        0x0800,
        &Ip4::new("198.18.0.1", ANYCAST4, 6).packet(&l4),
    )
}

fn udp6(sport: u16) -> Vec<u8> {
    let ip = ip6(
        v6("2001:db8:1::1"),
        v6("2001:db8:66::1"),
        64,
        17,
        0,
        &udp(sport, 53, b"q"),
    );
    eth(IN_MAC, &[], 0x86dd, &ip)
}

const ACK: u8 = 0x10;
const FIN_ACK: u8 = 0x11;
const RST: u8 = 0x04;

fn event(d: &xe_decision) -> Option<PinEvent> {
    PinEvent::of_decision(d.pin)
}

#[test]
fn pinned_flows_keep_their_path_until_it_leaves() {
    if !require_root("pinned_flows_keep_their_path_until_it_leaves") {
        return;
    }
    let mut p = Pinned::new("pin1");
    let flows: Vec<u16> = (1000..1064).collect();
    // First packets: each flow is written with the path its bucket chose.
    let mut first = Vec::new();
    for &s in &flows {
        let d = p.run(&tcp4(s, 0x02));
        assert_eq!(d.verdict, Verdict::Forward as u32);
        assert_eq!(event(&d), Some(PinEvent::Inserted));
        first.push(d.nexthop);
    }
    assert!(first.contains(&NH_P0) && first.contains(&NH_P1));
    p.tables_agree();
    // Every bucket moves to NH_P0: the flows on NH_P1 stay there.
    p.all_buckets(NH_P0);
    for (i, &s) in flows.iter().enumerate() {
        let d = p.run(&tcp4(s, ACK));
        assert_eq!((d.nexthop, event(&d)), (first[i], Some(PinEvent::Hit)));
    }
    // An unpinned copy of the route moves them, as resilient hashing must.
    let plain = xe_route {
        group: G_ANYCAST,
        kind: RT_UNICAST,
        ..Default::default()
    };
    p.w.both(|t| t.set_route_v4(ANYCAST4.parse().unwrap(), 32, &plain));
    let moved = flows
        .iter()
        .filter(|&&s| p.run(&tcp4(s, ACK)).nexthop != NH_P1)
        .count();
    assert_eq!(
        moved,
        flows.len(),
        "unpinned, every flow follows the buckets"
    );
    let pinned = xe_route {
        flags: ROUTE_PIN,
        ..plain
    };
    p.w.both(|t| t.set_route_v4(ANYCAST4.parse().unwrap(), 32, &pinned));
    // NH_P1's path leaves the group: its flows are hashed again (to NH_P0)
    // and their entries rewritten; NH_P0's stay hits.
    p.member(101, None);
    for (i, &s) in flows.iter().enumerate() {
        let d = p.run(&tcp4(s, ACK));
        let want = if first[i] == NH_P1 {
            PinEvent::Repinned
        } else {
            PinEvent::Hit
        };
        assert_eq!((d.nexthop, event(&d)), (NH_P0, Some(want)));
    }
    p.tables_agree();
    // A member whose next hop is replaced (a new id for the same path, as a
    // new MAC gives) keeps its flows.
    p.member(101, Some(NH_P1));
    p.all_buckets(NH_P1);
    let nh = p.w.nexthop(NH_P0);
    p.w.both(|t| t.set_nexthop(20, &nh));
    p.member(100, Some(20));
    for &s in &flows {
        let d = p.run(&tcp4(s, ACK));
        assert_eq!((d.nexthop, event(&d)), (20, Some(PinEvent::Hit)));
    }
    // Its next hop dies (state not usable): re-hashed to the buckets' NH_P1.
    let dead = xe_nexthop { state: 0, ..nh };
    p.w.both(|t| t.set_nexthop(20, &dead));
    for &s in &flows {
        let d = p.run(&tcp4(s, ACK));
        assert_eq!((d.nexthop, event(&d)), (NH_P1, Some(PinEvent::Repinned)));
    }
    p.tables_agree();
    let counts = p.w.dp.pin_counts().unwrap();
    let n = |e: PinEvent| counts.iter().find(|(x, _)| *x == e).unwrap().1;
    assert_eq!(n(PinEvent::Inserted), 64);
    assert!(n(PinEvent::Hit) >= 128 && n(PinEvent::Repinned) >= 64);
}

#[test]
fn tcp_ends_and_other_flows_age() {
    if !require_root("tcp_ends_and_other_flows_age") {
        return;
    }
    let mut p = Pinned::new("pin2");
    // RST of a flow without an entry: forwarded, nothing written.
    let d = p.run(&tcp4(2000, RST));
    assert_eq!((d.verdict, event(&d)), (Verdict::Forward as u32, None));
    assert!(p.w.dp.flow_entries().is_empty());
    // FIN marks the entry closing; RST removes it.
    assert_eq!(event(&p.run(&tcp4(2000, 0x02))), Some(PinEvent::Inserted));
    assert_eq!(event(&p.run(&tcp4(2000, FIN_ACK))), Some(PinEvent::Hit));
    let e = p.w.dp.flow_entries();
    assert_eq!((e.len(), e[0].1.flags), (1, PIN_CLOSING));
    p.tables_agree();
    assert_eq!(event(&p.run(&tcp4(2000, RST))), Some(PinEvent::Ended));
    assert!(p.w.dp.flow_entries().is_empty());
    p.tables_agree();
    // IPv6 UDP pins too, and ages out after its timeout (1 jiffy here);
    // a closing TCP entry ages by its own.
    let mut timeouts = [0u32; 3];
    timeouts[PIN_T_OTHER] = 1;
    timeouts[PIN_T_CLOSING] = 1;
    p.w.set_config(xe_config {
        seed: SEED,
        pin_timeout: timeouts,
        ..Default::default()
    });
    assert_eq!(event(&p.run(&udp6(5353))), Some(PinEvent::Inserted));
    assert_eq!(
        event(&p.run(&tcp4(2001, FIN_ACK))),
        Some(PinEvent::Inserted)
    );
    assert_eq!(event(&p.run(&tcp4(2002, ACK))), Some(PinEvent::Inserted));
    let j = p.w.dp.jiffies().unwrap();
    while p.w.dp.jiffies().unwrap() < j + 3 {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert_eq!(event(&p.run(&udp6(5353))), Some(PinEvent::Repinned));
    assert_eq!(event(&p.run(&tcp4(2001, ACK))), Some(PinEvent::Repinned));
    // An open TCP flow has no timeout here (0: until evicted).
    assert_eq!(event(&p.run(&tcp4(2002, ACK))), Some(PinEvent::Hit));
    p.tables_agree();
    // The path a pinned flow took is what `calc` shows: the live table read
    // through the shared decision, with nothing written.
    let pkt = tcp4(2002, ACK);
    let tables = p.w.dp.live_tables().unwrap();
    let mut live = p.w.dp.live_flows();
    let mut pins = Pins {
        table: &mut live,
        now: p.w.dp.jiffies().unwrap() as u32,
    };
    let mut out = vec![0u8; pkt.len() + 4];
    let (d, _) = tables.decide_pinned(&mut pins, None, &pkt, &mut out);
    assert_eq!(event(&d), Some(PinEvent::Hit));
    let before = p.w.dp.flow_entries().len();
    let (d, _) = tables.decide_pinned(&mut pins, None, &tcp4(2999, 0x02), &mut out);
    assert_eq!(event(&d), Some(PinEvent::Inserted));
    assert_eq!(
        p.w.dp.flow_entries().len(),
        before,
        "a question wrote an entry"
    );
    // Flushing empties the table and is counted.
    let n = p.w.dp.flush_flows(&|_| true).unwrap();
    assert_eq!(n as usize, before);
    assert!(p.w.dp.flow_entries().is_empty());
    let counts = p.w.dp.pin_counts().unwrap();
    assert_eq!(counts[PinEvent::Flushed as usize].1, n);
}

/// The flow key of `tcp4(sport, ..)`'s packets.
fn flow(sport: u16) -> xe_flow {
    xe_flow {
        src: [u32::from_ne_bytes([198, 18, 0, 1]), 0, 0, 0],
        dst: [
            u32::from_ne_bytes(ANYCAST4.parse::<Ipv4Addr>().unwrap().octets()),
            0,
            0,
            0,
        ],
        sport,
        dport: 443,
        proto: 6,
        ..Default::default()
    }
}

/// A set's ways all taken: a new flow of the set takes the way seen
/// longest ago, the others stay (program only: the model's table never
/// evicts). The set is the one the control plane computes for the key.
#[test]
fn a_full_set_gives_its_oldest_way_to_a_new_flow() {
    if !require_root("a_full_set_gives_its_oldest_way_to_a_new_flow") {
        return;
    }
    let p = Pinned::new("pin4");
    let table = p.w.dp.flow_maps();
    let set = table.v4.set_of(&flow(1000));
    let ports: Vec<u16> = (1000..u16::MAX)
        .filter(|s| table.v4.set_of(&flow(*s)) == set)
        .take(PIN_WAYS as usize + 1)
        .collect();
    assert_eq!(
        ports.len(),
        PIN_WAYS as usize + 1,
        "not enough flows of one set"
    );
    let ev = |sport: u16| event(&p.w.run(&tcp4(sport, ACK)).2);
    let (full, new) = ports.split_at(PIN_WAYS as usize);
    for s in full {
        assert_eq!(ev(*s), Some(PinEvent::Inserted), "port {s}");
    }
    // Every flow of the full set seen again later, but one (in its fourth
    // way): that one is the set's oldest.
    let j = p.w.dp.jiffies().unwrap();
    while p.w.dp.jiffies().unwrap() < j + 2 {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let oldest = full[3];
    for s in full.iter().filter(|s| **s != oldest) {
        assert_eq!(ev(*s), Some(PinEvent::Hit), "port {s}");
    }
    assert_eq!(ev(new[0]), Some(PinEvent::Inserted));
    let mut held: Vec<u16> = p.w.dp.flow_entries().iter().map(|(k, _)| k.sport).collect();
    held.sort();
    let mut want: Vec<u16> = ports.iter().copied().filter(|s| *s != oldest).collect();
    want.sort();
    assert_eq!(held, want, "the set gave its oldest way to the new flow");
    assert!(table.v4.get(&flow(oldest)).is_none());
    assert!(table.v4.get(&flow(new[0])).is_some());
    let counts = p.w.dp.pin_counts().unwrap();
    let stats = FlowStats::new(counts, held.len() as u64, 0, p.w.dp.sizes().flows);
    assert_eq!(stats.evicted(), 1);
}

/// A way being rewritten (its seq odd, as a writer leaves it between
/// taking and giving it back) holds no flow for any reader, and its set
/// takes no other write meanwhile: the program forwards the flow by its
/// bucket and writes nothing, the control plane neither finds nor writes
/// an entry there; given back, the entry is found again as it was.
#[test]
fn a_way_being_rewritten_is_neither_read_nor_written() {
    if !require_root("a_way_being_rewritten_is_neither_read_nor_written") {
        return;
    }
    let p = Pinned::new("pin5");
    let table = p.w.dp.flow_maps();
    let ev = |sport: u16| event(&p.w.run(&tcp4(sport, ACK)).2);
    assert_eq!(ev(3000), Some(PinEvent::Inserted));
    let before = table.v4.get(&flow(3000)).expect("entry written");
    let other = (3001..u16::MAX)
        .find(|s| table.v4.set_of(&flow(*s)) == table.v4.set_of(&flow(3000)))
        .unwrap();
    let way = table.v4.hold(&flow(3000)).expect("way held");
    assert!(table.v4.get(&flow(3000)).is_none());
    assert!(table.entries().is_empty());
    // The program: no hit, and no write into the busy set; the writes it
    // left undone are not counted.
    let inserted = || p.w.dp.pin_counts().unwrap()[PinEvent::Inserted as usize].1;
    let counted = inserted();
    assert_eq!(ev(3000), Some(PinEvent::Inserted));
    assert_eq!(ev(other), Some(PinEvent::Inserted));
    assert_eq!(inserted(), counted, "an undone write was counted");
    assert!(!table.v4.put(&flow(other), &before));
    table.v4.release(way);
    assert_eq!(table.entries().len(), 1, "a write went into a busy set");
    let after = table.v4.get(&flow(3000)).expect("entry back");
    assert_eq!(
        (after.path, after.nexthop, after.gen, after.flags),
        (before.path, before.nexthop, before.gen, before.flags)
    );
    assert_eq!(ev(3000), Some(PinEvent::Hit));
}

/// Seeded random and mutated packets (the differential test's) with both
/// anycast routes pinned, the program and the shared decision each with its
/// own flow table, while buckets move, members leave and return, a next hop
/// dies and the hash configuration (and so the flow key) changes.
#[test]
fn differential_pinned_random_and_mutated_packets() {
    if !require_root("differential_pinned_random_and_mutated_packets") {
        return;
    }
    let count: usize = std::env::var("XE_PIN_DIFF_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = std::env::var("XE_PIN_DIFF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    println!("pinned differential: seed {seed} (XE_PIN_DIFF_SEED), {count} packets");
    let mut rng = SmallRng::seed_from_u64(seed);
    // Room for every flow: the model's table never evicts.
    let mut p = Pinned::over(World::with_flows("pin-diff", 1 << 20));
    let fixtures: Vec<Vec<u8>> = fixtures().into_iter().map(|f| f.pkt).collect();
    let mut events: BTreeMap<String, usize> = BTreeMap::new();
    let p1 = p.w.nexthop(NH_P1);
    for i in 0..count {
        if i % 5_000 == 0 && i > 0 {
            match rng.random_range(0..5) {
                0 => p.all_buckets([NH_P0, NH_P1][rng.random_range(0..2)]),
                1 => p.member(101, None),
                2 => p.member(101, Some(NH_P1)),
                3 => {
                    let state = if rng.random_bool(0.5) { 0 } else { p1.state };
                    let nh = xe_nexthop { state, ..p1 };
                    p.w.both(|t| t.set_nexthop(NH_P1, &nh));
                }
                _ => p.w.set_config(xe_config {
                    seed: SEED,
                    hash_fields: [0, HASH_POLICY_L3, HASH_ALL_FIELDS][rng.random_range(0..3)],
                    ..Default::default()
                }),
            }
        }
        let base = if rng.random_bool(0.3) {
            fixtures[rng.random_range(0..fixtures.len())].clone()
        } else {
            random_packet(&mut rng)
        };
        let pkt = if rng.random_bool(0.5) {
            mutate(&mut rng, base)
        } else {
            base
        };
        if pkt.len() < 14 {
            continue;
        }
        let d = p.run(&pkt);
        let what = match event(&d) {
            Some(e) => e.name().to_string(),
            None => verdict_of(&d).name().to_string(),
        };
        *events.entry(what).or_default() += 1;
    }
    p.tables_agree();
    println!("  decisions: {events:?}");
    for (e, least) in [("hit", 1000), ("inserted", 1000), ("repinned", 1)] {
        let n = events.get(e).copied().unwrap_or(0);
        assert!(n >= least, "{n} {e}, fewer than {least}: {events:?}");
    }
}
