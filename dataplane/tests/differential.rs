//! Program vs the Rust decision, over the in-memory tables and over the live maps: every fixture cut at every byte offset, then a million seeded random and mutated packets under random hash configs.

mod common;

use std::collections::BTreeMap;

use common::fixtures::fixtures;
use common::random::{mutate, random_packet};
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
