//! The IPv6 length search under churn: one CPU runs the program on three probe addresses while the other adds and deletes thousands of IPv6 routes of every length (reshaping the search, writing and removing markers, reusing slots after grace periods) that never change a probe's answer; every run must find the probe's own route.

mod common;

use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::packets::*;
use dataplane::abi::{
    xe_inport, xe_route, Verdict, INPORT_FWD_V6, RT_BLACKHOLE, RT_LOCAL, RT_UNICAST, RT_UNREACHABLE,
};
use dataplane::lensearch::mask;
use dataplane::{current_cpu, ifindex_of, pin_thread_to_cpu, AttachMode};
use dataplane::{Dataplane, LoadOptions, MapSizes, TableWriter};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use testnet::{require_root, TestNet};

/// Runs of a probe per test-run call.
const REPEAT: u32 = 64;

/// Stops the reader however the churn ends (a panic included), so the
/// scope can join it.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn route(kind: u8, group: u32) -> xe_route {
    xe_route {
        group,
        kind,
        ..Default::default()
    }
}

/// A probe: its address, the route that answers it (prefix, length) and
/// the verdict that route gives.
struct Probe {
    addr: u128,
    len: u8,
    verdict: Verdict,
}

#[test]
fn probes_keep_their_route_while_the_search_churns() {
    if !require_root("probes_keep_their_route_while_the_search_churns") {
        return;
    }
    let pins = PinDir(PathBuf::from(format!(
        "/sys/fs/bpf/xe-t{}-v6search",
        std::process::id()
    )));
    let mut writer = Dataplane::load(&LoadOptions {
        pin_dir: Some(pins.0.clone()),
        // A small slot table, so deleted slots are reused within the run.
        sizes: Some(MapSizes {
            routes_v6: 16384,
            ..Default::default()
        }),
        ..Default::default()
    })
    .expect("load");
    writer
        .set_inport(
            1,
            &xe_inport {
                mac: common::IN_MAC,
                flags: INPORT_FWD_V6,
                ..Default::default()
            },
        )
        .expect("inport");
    let a = |s: &str| u128::from(s.parse::<Ipv6Addr>().expect("v6"));
    // A /64 that is local, a /128 in it that is a blackhole, and the default
    // route to a group with no member.
    let probes = [
        Probe {
            addr: a("2001:db8:1:2::5"),
            len: 64,
            verdict: Verdict::PassLocal,
        },
        Probe {
            addr: a("2001:db8:1:2::99"),
            len: 128,
            verdict: Verdict::DropBlackhole,
        },
        Probe {
            addr: a("2001:db8:dead::1"),
            len: 0,
            verdict: Verdict::PassNexthopDown,
        },
    ];
    for (p, r) in probes.iter().zip([
        route(RT_LOCAL, 0),
        route(RT_BLACKHOLE, 0),
        route(RT_UNICAST, 7),
    ]) {
        writer
            .set_route_v6(Ipv6Addr::from(mask(p.addr, p.len)), p.len, &r)
            .expect("probe route");
    }
    let reader = Dataplane::load(&LoadOptions {
        pin_dir: Some(pins.0.clone()),
        ..Default::default()
    })
    .expect("reader over the same maps");
    // Attached to a port, the reader's program sits in the kernel's XDP
    // dispatcher: a test run then costs microseconds, not the tens of
    // milliseconds of installing it there first.
    let net = TestNet::new("v6s", &[("xe-s0", "xe-s1")]).expect("namespace");
    net.enter().expect("enter");
    let _link = reader
        .attach(ifindex_of("xe-s0").expect("xe-s0"), AttachMode::Native)
        .expect("attach the reader");
    let frames: Vec<Vec<u8>> = probes
        .iter()
        .map(|p| {
            eth(
                common::IN_MAC,
                &[],
                ETH_IPV6,
                &ip6(
                    v6("2001:db8:99::1"),
                    Ipv6Addr::from(p.addr).octets(),
                    64,
                    17,
                    0,
                    &udp(1, 53, b""),
                ),
            )
        })
        .collect();
    let counts = |dp: &Dataplane| {
        let c = dp.verdict_counters().expect("counters");
        let of = |v: Verdict| {
            c.iter()
                .find(|(w, _)| *w == v)
                .map_or(0, |(_, n)| n.packets)
        };
        probes
            .iter()
            .map(|p| of(p.verdict))
            .chain([of(Verdict::PassNoRoute)])
            .collect::<Vec<u64>>()
    };
    // Each probe's verdict before the churn.
    let mut out = vec![0u8; 256];
    for (i, f) in frames.iter().enumerate() {
        let before = counts(&reader);
        reader.test_run(f, &mut out).expect("test run");
        let after = counts(&reader);
        assert_eq!(
            after[i],
            before[i] + 1,
            "probe {i} gives {:?}",
            probes[i].verdict
        );
    }

    let start = counts(&reader);
    let stop = AtomicBool::new(false);
    let runs = AtomicU64::new(0);
    let cpu = current_cpu();
    let (changes, routes, refused) = std::thread::scope(|s| {
        s.spawn(|| {
            pin_thread_to_cpu(1 - cpu.min(1)).expect("pin the reader");
            let mut out = vec![0u8; 256];
            while !stop.load(Ordering::Relaxed) {
                for f in &frames {
                    reader
                        .test_run_repeat(f, &mut out, REPEAT)
                        .expect("test run");
                }
                runs.fetch_add(1, Ordering::Relaxed);
            }
        });
        let _stop = StopOnDrop(&stop);
        // Routes none of which answers a probe: each is either off every
        // probe, or shorter than the route answering it. Their lengths come
        // from a dozen common ones, and now and then any length (each new
        // one reshapes the search).
        let common = [0u8, 16, 32, 40, 48, 56, 60, 64, 80, 96, 127, 128];
        let mut rng = SmallRng::seed_from_u64(17);
        let mut held: Vec<(u128, u8)> = Vec::new();
        let mut changes = 0u64;
        let mut refused = 0u64;
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(4) {
            if held.len() > 1500 || (!held.is_empty() && rng.random_ratio(2, 5)) {
                let (p, l) = held.swap_remove(rng.random_range(0..held.len()));
                writer
                    .delete_route_v6(Ipv6Addr::from(p), l)
                    .expect("delete");
                changes += 1;
                continue;
            }
            loop {
                let len = if rng.random_ratio(1, 1000) {
                    rng.random_range(0..=128u8)
                } else {
                    common[rng.random_range(0..common.len())]
                };
                let probe = &probes[rng.random_range(0..probes.len())];
                // Near a probe: its address with some low bits flipped.
                let p = mask(
                    probe.addr ^ (rng.random::<u128>() >> rng.random_range(0..128)),
                    len,
                );
                let answers = probes
                    .iter()
                    .any(|q| mask(q.addr, len) == p && len >= q.len);
                if answers || held.contains(&(p, len)) {
                    continue;
                }
                // Slots wait out a grace period before another entry takes
                // them: a full table refuses the route (it goes to the
                // kernel) and changes nothing, which the probes check too.
                match writer.set_route_v6(Ipv6Addr::from(p), len, &route(RT_UNREACHABLE, 0)) {
                    Ok(()) => held.push((p, len)),
                    Err(dataplane::Error::TableFull { .. }) => refused += 1,
                    Err(e) => panic!("add: {e}"),
                }
                break;
            }
            changes += 1;
        }
        stop.store(true, Ordering::Relaxed);
        (changes, held.len(), refused)
    });
    let end = counts(&reader);
    let per_probe = runs.load(Ordering::Relaxed) * u64::from(REPEAT);
    let grace = writer.grace().stats();
    println!(
        "{changes} route changes ({routes} routes at the end, {refused} refused by a full slot table), {per_probe} runs of each probe; {} grace periods, {:?} in all",
        grace.periods, grace.waited
    );
    assert!(changes > 5_000, "{changes} changes");
    assert!(per_probe > 100_000, "{per_probe} runs");
    for (i, p) in probes.iter().enumerate() {
        assert_eq!(
            end[i] - start[i],
            per_probe,
            "probe {i} ({:?}) found another route",
            p.verdict
        );
    }
    assert_eq!(end[3], start[3], "no probe found no route");
    assert!(
        writer.v6_differences().expect("check").is_empty(),
        "the search agrees with the trie"
    );
}
