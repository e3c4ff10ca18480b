//! IPv4 route writes of many routes in one call against the live maps: each route gets its own result, a full record refuses exactly the routes past its size and leaves no trace of them in the DIR-24-8 tables, and lookups equal those of the same routes written one by one.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use dataplane::abi::{xe_route, RT_UNICAST};
use dataplane::{Dataplane, LoadOptions, MapSizes, TableReader, TableWriter, Tables};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use testnet::require_root;

/// The record's size in these tests: the smallest a map may be made.
const RECORD: usize = 1024;

fn load() -> Dataplane {
    Dataplane::load(&LoadOptions {
        sizes: Some(MapSizes {
            routes_v4: RECORD as u32,
            ..MapSizes::default()
        }),
        ..Default::default()
    })
    .expect("loading the XDP program")
}

fn unicast(group: u32) -> xe_route {
    xe_route {
        group,
        kind: RT_UNICAST,
        ..Default::default()
    }
}

/// `n` distinct random prefixes of /16 to /32 in 10.0.0.0/8: many overlap,
/// and most are longer than /24 (each takes a DIR-24-8 chunk).
fn prefixes(rng: &mut SmallRng, n: usize) -> Vec<(Ipv4Addr, u8)> {
    let mut seen = BTreeMap::new();
    while seen.len() < n {
        let len: u8 = rng.random_range(16..=32);
        let addr = 0x0a00_0000u32 | rng.random_range(0..1u32 << 20) << 4;
        let addr = addr & (u32::MAX << (32 - u32::from(len)));
        seen.insert((addr, len), ());
    }
    seen.keys().map(|(a, l)| (Ipv4Addr::from(*a), *l)).collect()
}

/// The routes the record holds, sorted: prefix, length, group, kind.
fn record(dp: &Dataplane) -> Vec<(Ipv4Addr, u8, u32, u8)> {
    let mut r: Vec<_> = dp
        .routes_v4()
        .expect("reading the record")
        .into_iter()
        .map(|(a, l, r)| (a, l, r.group, r.kind))
        .collect();
    r.sort_unstable();
    r
}

/// Lookups of the live tables and of `reference` agree on every prefix's
/// first and last address and on random addresses of the range.
fn same_lookups(dp: &Dataplane, reference: &Tables, rng: &mut SmallRng, routes: &[(Ipv4Addr, u8)]) {
    let live = dp.live_tables().expect("mapping the live tables");
    let mut addrs: Vec<u32> = routes
        .iter()
        .flat_map(|(a, l)| {
            let a = u32::from(*a);
            [a, a | u32::MAX.checked_shr(u32::from(*l)).unwrap_or(0)]
        })
        .collect();
    addrs.extend((0..20_000).map(|_| 0x0a00_0000u32 | rng.random_range(0..1u32 << 24)));
    for a in addrs {
        let d = Ipv4Addr::from(a).octets();
        let (got, want) = (live.route_v4(d), reference.route_v4(d));
        let key = |r: Option<xe_route>| r.filter(|r| r.kind != 0).map(|r| (r.group, r.kind));
        assert_eq!(key(got), key(want), "lookup of {}", Ipv4Addr::from(a));
    }
}

#[test]
fn a_full_record_refuses_exactly_the_routes_past_its_size() {
    if !require_root("a_full_record_refuses_exactly_the_routes_past_its_size") {
        return;
    }
    let mut rng = SmallRng::seed_from_u64(7);
    let mut dp = load();
    let mut reference = Tables::default();
    // Half as many again as the record holds, in one call: each route past
    // its size is refused on its own, before the tables are written.
    let all = prefixes(&mut rng, RECORD + RECORD / 2);
    let routes: Vec<(Ipv4Addr, u8, xe_route)> = all
        .iter()
        .enumerate()
        .map(|(i, (a, l))| (*a, *l, unicast(1 + i as u32 % 100)))
        .collect();
    let results = dp.set_routes_v4(&routes);
    assert_eq!(results.len(), routes.len(), "a result per route");
    let ok: Vec<usize> = (0..routes.len()).filter(|i| results[*i].is_ok()).collect();
    assert_eq!(ok.len(), RECORD, "the record takes as many as it holds");
    assert_eq!(ok, (0..RECORD).collect::<Vec<_>>(), "in order");
    for (i, r) in results.iter().enumerate().skip(RECORD) {
        let e = r.as_ref().expect_err("past the record's size");
        assert!(
            e.to_string().contains("xe_routes_v4"),
            "route {i}'s error names the map: {e}"
        );
    }
    for i in &ok {
        let (a, l, r) = routes[*i];
        reference.set_route_v4(a, l, &r).expect("reference");
    }
    let want: Vec<_> = ok.iter().map(|i| routes[*i]).collect();
    let got = record(&dp);
    assert_eq!(got.len(), want.len());
    for ((ga, gl, gg, _), (wa, wl, wr)) in got.iter().zip(&want) {
        assert_eq!((ga, gl, gg), (wa, wl, &wr.group));
    }
    // The refused routes left nothing in the tables packets read.
    same_lookups(&dp, &reference, &mut rng, &all);

    // A full record still takes changes of its routes, and deletes; the
    // refused routes, deleted, answer with an error each.
    let changed: Vec<(Ipv4Addr, u8, xe_route)> = ok
        .iter()
        .step_by(2)
        .map(|i| (routes[*i].0, routes[*i].1, unicast(500 + *i as u32 % 7)))
        .collect();
    assert!(dp.set_routes_v4(&changed).iter().all(|r| r.is_ok()));
    for (a, l, r) in &changed {
        reference.set_route_v4(*a, *l, r).expect("reference");
    }
    let gone: Vec<(Ipv4Addr, u8)> = ok
        .iter()
        .skip(1)
        .step_by(3)
        .map(|i| (routes[*i].0, routes[*i].1))
        .chain([(routes[RECORD].0, routes[RECORD].1)])
        .collect();
    let deleted = dp.delete_routes_v4(&gone);
    assert!(deleted[..gone.len() - 1].iter().all(|r| r.is_ok()));
    assert!(deleted[gone.len() - 1].is_err(), "a route never written");
    for (a, l) in &gone[..gone.len() - 1] {
        reference.delete_route_v4(*a, *l).expect("reference");
    }
    assert_eq!(record(&dp).len(), RECORD - (gone.len() - 1));
    same_lookups(&dp, &reference, &mut rng, &all);
}

#[test]
fn batches_and_single_writes_make_the_same_tables() {
    if !require_root("batches_and_single_writes_make_the_same_tables") {
        return;
    }
    let mut rng = SmallRng::seed_from_u64(11);
    let mut batched = load();
    let mut single = load();
    let all = prefixes(&mut rng, 1000);
    // Rounds of random adds, changes and deletes, more than one batch of
    // the kernel's at a time in the first round.
    for round in 0..6 {
        let n = if round == 0 { all.len() } else { 300 };
        let pick: Vec<usize> = (0..n)
            .map(|k| {
                if round == 0 {
                    k
                } else {
                    rng.random_range(0..all.len())
                }
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let (adds, dels): (Vec<usize>, Vec<usize>) = pick
            .into_iter()
            .partition(|_| round == 0 || rng.random_bool(0.6));
        let routes: Vec<_> = adds
            .iter()
            .map(|i| (all[*i].0, all[*i].1, unicast(1 + rng.random_range(0..50))))
            .collect();
        let a = batched.set_routes_v4(&routes);
        for (k, (p, l, r)) in routes.iter().enumerate() {
            let b = single.set_route_v4(*p, *l, r);
            assert_eq!(a[k].is_ok(), b.is_ok(), "round {round}: {p}/{l}");
        }
        let gone: Vec<_> = dels.iter().map(|i| all[*i]).collect();
        let a = batched.delete_routes_v4(&gone);
        for (k, (p, l)) in gone.iter().enumerate() {
            let b = single.delete_route_v4(*p, *l);
            assert_eq!(a[k].is_ok(), b.is_ok(), "round {round}: delete {p}/{l}");
        }
        assert_eq!(record(&batched), record(&single), "round {round}: records");
        let (lb, ls) = (
            batched.live_tables().expect("live"),
            single.live_tables().expect("live"),
        );
        for _ in 0..20_000 {
            let d = Ipv4Addr::from(0x0a00_0000u32 | rng.random_range(0..1u32 << 24)).octets();
            assert_eq!(
                lb.route_v4(d).map(|r| (r.group, r.kind)),
                ls.route_v4(d).map(|r| (r.group, r.kind)),
                "round {round}: lookup of {d:?}"
            );
        }
    }
}

/// The record read back (the IPv6 trie in the kernel's batches, several of
/// them here) is exactly what was written, for both families, and nothing
/// when empty.
#[test]
fn the_record_reads_back_whole_across_batches() {
    if !require_root("the_record_reads_back_whole_across_batches") {
        return;
    }
    let n = 2 * dataplane::BATCH + 1234;
    let mut dp = Dataplane::load(&LoadOptions::default()).expect("loading the XDP program");
    assert!(dp.routes_v4().expect("empty record").is_empty());
    assert!(dp.routes_v6().expect("empty record").is_empty());
    let mut rng = SmallRng::seed_from_u64(5);
    let v4: Vec<(Ipv4Addr, u8, xe_route)> = prefixes(&mut rng, n)
        .into_iter()
        .enumerate()
        .map(|(i, (a, l))| (a, l, unicast(1 + i as u32 % 300)))
        .collect();
    assert!(dp.set_routes_v4(&v4).iter().all(|r| r.is_ok()));
    let v6: Vec<(std::net::Ipv6Addr, u8, xe_route)> = (0..n as u128)
        .map(|i| {
            // Distinct in the top 64 bits, which every length keeps.
            let len = 64 + (i % 65) as u8;
            let addr =
                (0x2001_0db8u128 << 96 | i << 64 | i) & (u128::MAX << (128 - u32::from(len)));
            (
                (std::net::Ipv6Addr::from(addr), len),
                unicast(1 + i as u32 % 300),
            )
        })
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .map(|((a, l), r)| (a, l, r))
        .collect();
    for (a, l, r) in &v6 {
        dp.set_route_v6(*a, *l, r).expect("an IPv6 route");
    }
    let mut want4: Vec<_> = v4
        .iter()
        .map(|(a, l, r)| (*a, *l, r.group, r.kind))
        .collect();
    want4.sort_unstable();
    same(record(&dp), want4, "IPv4");
    let mut got6: Vec<_> = dp
        .routes_v6()
        .expect("IPv6 record")
        .into_iter()
        .map(|(a, l, r)| (a, l, r.group, r.kind))
        .collect();
    got6.sort_unstable();
    let want6: Vec<_> = v6
        .iter()
        .map(|(a, l, r)| (*a, *l, r.group, r.kind))
        .collect();
    assert!(
        want6.len() > 2 * dataplane::BATCH,
        "{} IPv6 routes",
        want6.len()
    );
    same(got6, want6, "IPv6");
}

/// `got` equals `want`, or the first difference is named (not both lists).
fn same<T: PartialEq + std::fmt::Debug>(got: Vec<T>, want: Vec<T>, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: entries read back");
    if let Some(i) = (0..got.len()).find(|i| got[*i] != want[*i]) {
        panic!(
            "{what}: entry {i} read back as {:?}, written {:?}",
            got[i], want[i]
        );
    }
}
