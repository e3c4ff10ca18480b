//! Program vs the Rust decision, over the in-memory tables and over the live maps: every fixture cut at every byte offset, then a million seeded random and mutated packets under random hash configs.

mod common;

use std::collections::BTreeMap;

use common::fixtures::fixtures;
use common::packets::*;
use common::*;
use dataplane::abi::{xe_config, Verdict, CFG_SYMMETRIC, HASH_ALL_FIELDS};
use dataplane::TableReader;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use testnet::require_root;

/// Compares the program with the Rust decision over the model's tables and
/// over `readers` (the live maps, a copy read back from them) on one packet;
/// returns a description on mismatch.
fn compare(
    world: &World,
    readers: &[(&str, &dyn TableReader)],
    pkt: &[u8],
) -> Result<Verdict, String> {
    let (action, out, d) = world.run(pkt);
    let (md, mout) = world.model(pkt);
    let mut theirs = vec![("model", md, mout)];
    for (name, r) in readers {
        let mut o = vec![0u8; pkt.len() + 4];
        let (rd, n) = r.decide(pkt, &mut o);
        o.truncate(n);
        theirs.push((name, rd, o));
    }
    for (name, rd, rout) in theirs {
        if fields(&d) != fields(&rd) || action != rd.action || out != rout {
            return Err(format!(
                "packet {}\n  program: {:?} action {action} out {}\n  {name}: {:?} out {}",
                hex(pkt),
                fields(&d),
                hex(&out),
                fields(&rd),
                hex(&rout)
            ));
        }
    }
    Ok(verdict_of(&d))
}

#[test]
fn truncation_every_fixture_every_offset() {
    if !require_root("truncation_every_fixture_every_offset") {
        return;
    }
    let world = World::new("trunc");
    let live = world.dp.live_tables().expect("the live maps");
    let copy = world.dp.read_tables().expect("the maps read back");
    let readers: [(&str, &dyn TableReader); 2] = [("live maps", &live), ("read back", &copy)];
    let mut compared = 0usize;
    let mut model_only = 0usize;
    let mut mismatches = Vec::new();
    let mut verdicts: BTreeMap<&str, usize> = BTreeMap::new();
    for f in fixtures() {
        // The kernel refuses test runs shorter than an Ethernet header (and no
        // NIC delivers one): below 14 bytes only the model is asked.
        for cut in 0..14.min(f.pkt.len()) {
            let (md, _) = world.model(&f.pkt[..cut]);
            assert_eq!(
                verdict_of(&md),
                Verdict::DropTruncated,
                "{} cut at {cut}",
                f.name
            );
            model_only += 1;
        }
        for cut in 14..=f.pkt.len() {
            match compare(&world, &readers, &f.pkt[..cut]) {
                Ok(v) => *verdicts.entry(v.name()).or_default() += 1,
                Err(e) => mismatches.push(format!("{} cut at {cut}: {e}", f.name)),
            }
            compared += 1;
        }
    }
    println!(
        "truncation: {compared} cuts compared (program vs model vs live maps vs the maps read back), {model_only} sub-Ethernet cuts model-only, {} mismatches",
        mismatches.len()
    );
    println!("  verdicts: {verdicts:?}");
    assert!(
        mismatches.is_empty(),
        "{} mismatches, first:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(5)].join("\n")
    );
}

/// Random packets shaped like real traffic to the test world's routes.
fn random_packet(rng: &mut SmallRng) -> Vec<u8> {
    const V4_DST: [&str; 14] = [
        "172.16.255.66",
        "10.10.3.4",
        "10.20.0.9",
        "10.21.1.1",
        "10.22.0.2",
        "10.23.0.1",
        "10.24.1.1",
        "10.24.5.5",
        "10.25.0.1",
        "10.26.0.1",
        "192.0.2.1",
        "198.51.100.1",
        "203.0.113.9",
        "100.64.1.1",
    ];
    const V6_DST: [&str; 8] = [
        "2001:db8:66::1",
        "2001:db8:10::2",
        "2001:db8:20::3",
        "2001:db8:22::4",
        "2001:db8:24::5",
        "2001:db8:ff::1",
        "2001:db8:bad::1",
        "2001:db8:dead::1",
    ];
    let protos = [6u8, 17, 132, 1, 58, 47, 50];
    let vlans: Vec<(u16, u16)> = (0..rng.random_range(0..3u8))
        .map(|_| {
            (
                if rng.random_bool(0.5) { 0x8100 } else { 0x88a8 },
                rng.random(),
            )
        })
        .collect();
    let proto = protos[rng.random_range(0..protos.len())];
    let body_len = rng.random_range(0..64usize);
    let body: Vec<u8> = (0..body_len).map(|_| rng.random()).collect();
    let l4 = match proto {
        6 => [
            tcp(rng.random(), rng.random(), rng.random_range(4..9)),
            body,
        ]
        .concat(),
        17 => udp(rng.random(), rng.random(), &body),
        132 => [sctp(rng.random(), rng.random()), body].concat(),
        1 | 58 => {
            let ty = [0u8, 1, 2, 3, 4, 8, 11, 12, 128][rng.random_range(0..9)];
            icmp(ty, 0, &body)
        }
        _ => body,
    };
    if rng.random_bool(0.6) {
        let mut ip = Ip4::new(
            "10.2.0.100",
            V4_DST[rng.random_range(0..V4_DST.len())],
            proto,
        );
        ip.src = rng.random();
        if rng.random_bool(0.7) {
            ip.src[0] = 10;
        }
        ip.ttl = rng.random_range(0..4u8).max(1) * if rng.random_bool(0.8) { 60 } else { 0 };
        if rng.random_bool(0.15) {
            ip.frag = rng.random::<u16>() & 0x7fff;
        }
        if rng.random_bool(0.2) {
            ip.options = vec![1; 4 * rng.random_range(0..11usize)];
        }
        let l4 = if proto == 1 && rng.random_bool(0.5) {
            // an ICMP error quoting a random flow
            let q = Ip4::new(
                "172.16.255.66",
                "10.2.0.100",
                [6u8, 17, 132][rng.random_range(0..3)],
            );
            let quoted = q.packet(&udp(rng.random(), rng.random(), &[0; 8]));
            let cut = rng.random_range(0..=quoted.len());
            icmp([3u8, 11, 12][rng.random_range(0..3)], 4, &quoted[..cut])
        } else {
            l4
        };
        eth(IN_MAC, &vlans, ETH_IP, &ip.packet(&l4))
    } else {
        let mut payload = Vec::new();
        let mut next = proto;
        let mut chain = Vec::new();
        for _ in 0..rng.random_range(0..10u8) {
            let kind = [0u8, 43, 60, 44, 51][rng.random_range(0..5)];
            chain.push(kind);
        }
        for (i, kind) in chain.iter().enumerate().rev() {
            let hdr = match kind {
                44 => frag6(next, rng.random_range(0..3), rng.random_bool(0.5)),
                51 => ah(next, rng.random_range(0..3)),
                _ => ext8(next, rng.random_range(0..3)),
            };
            payload = [hdr, payload].concat();
            next = *kind;
            let _ = i;
        }
        payload.extend_from_slice(&l4);
        let dst = v6(V6_DST[rng.random_range(0..V6_DST.len())]);
        let mut src = v6("2001:db8:2::100");
        src[15] = rng.random();
        let hop = [0u8, 1, 2, 64, 255][rng.random_range(0..5)];
        eth(
            IN_MAC,
            &vlans,
            ETH_IPV6,
            &ip6(src, dst, hop, next, rng.random::<u32>() & 0xfffff, &payload),
        )
    }
}

/// Flips, cuts, extends or rewrites length fields of a packet.
fn mutate(rng: &mut SmallRng, mut p: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.random_range(0..4u8) {
        match rng.random_range(0..6u8) {
            0 | 1 => {
                // a random byte in the first 80 (where the headers are)
                let i = rng.random_range(0..p.len().min(80));
                p[i] = rng.random();
            }
            2 => {
                let i = rng.random_range(0..p.len());
                p[i] ^= 1 << rng.random_range(0..8);
            }
            3 => {
                let cut = rng.random_range(14..=p.len().max(14));
                p.truncate(cut.max(14));
            }
            4 => p.extend((0..rng.random_range(1..40)).map(|_| rng.random::<u8>())),
            _ => {
                // an IP length field (v4 total length or v6 payload length)
                let off = if p.len() > 20 {
                    16 + rng.random_range(0..3) * 2
                } else {
                    12
                };
                if off + 1 < p.len() {
                    let v: u16 = rng.random_range(0..2000);
                    p[off..off + 2].copy_from_slice(&v.to_be_bytes());
                }
            }
        }
    }
    if p.len() < 14 {
        p.resize(14, 0);
    }
    p
}

#[test]
fn differential_random_and_mutated_packets() {
    if !require_root("differential_random_and_mutated_packets") {
        return;
    }
    let count: usize = std::env::var("XE_DIFF_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = std::env::var("XE_DIFF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    println!("differential: seed {seed} (rerun with XE_DIFF_SEED={seed}), {count} packets");
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut world = World::new("diff");
    let fixtures: Vec<Vec<u8>> = fixtures().into_iter().map(|f| f.pkt).collect();
    let mut verdicts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut mismatches = Vec::new();
    let started = std::time::Instant::now();
    let mut live = None;
    for i in 0..count {
        if i % 20_000 == 0 {
            live = None;
            // A new hash configuration for the next stretch, on both sides.
            let cfg = xe_config {
                seed: [rng.random(), rng.random()],
                hash_fields: if rng.random_bool(0.3) {
                    0
                } else {
                    rng.random::<u32>() & HASH_ALL_FIELDS
                },
                flags: if rng.random_bool(0.3) {
                    CFG_SYMMETRIC
                } else {
                    0
                },
                ..Default::default()
            };
            world.set_config(cfg);
        }
        let base = if rng.random_bool(0.3) {
            fixtures[rng.random_range(0..fixtures.len())].clone()
        } else {
            random_packet(&mut rng)
        };
        let pkt = if rng.random_bool(0.6) {
            mutate(&mut rng, base)
        } else {
            base
        };
        if live.is_none() {
            // The reader takes the config when made: one per stretch.
            live = Some(world.dp.live_tables().expect("the live maps"));
        }
        let readers: [(&str, &dyn TableReader); 1] =
            [("live maps", live.as_ref().expect("just made"))];
        match compare(&world, &readers, &pkt) {
            Ok(v) => *verdicts.entry(v.name()).or_default() += 1,
            Err(e) => {
                if mismatches.len() < 10 {
                    mismatches.push(e);
                } else {
                    mismatches.push(String::new());
                }
            }
        }
    }
    println!(
        "differential: {count} packets compared (program vs model vs live maps) in {:.1} s, {} mismatches",
        started.elapsed().as_secs_f64(),
        mismatches.len()
    );
    println!("  verdicts: {verdicts:?}");
    assert!(
        mismatches.is_empty(),
        "{} mismatches (seed {seed}), first:\n{}",
        mismatches.len(),
        mismatches
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(verdicts.values().sum::<usize>(), count);
}
