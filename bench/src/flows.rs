//! Split accuracy and flow disruption, computed with the dataplane's hash and the control plane's bucket tables (no privileges).

use control::resilient::{modulo_slots, BucketTable, Member, TableConfig};
use dataplane::abi::xe_flow;
use dataplane::hash::flow_hash;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Hash values of `n` random IPv4 UDP flows towards one anycast address.
fn flow_hashes(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let key = [rng.random(), rng.random()];
    (0..n)
        .map(|_| {
            let mut f = xe_flow {
                sport: rng.random(),
                dport: 53,
                proto: 17,
                ..Default::default()
            };
            f.src[0] = rng.random();
            f.dst[0] = u32::from_ne_bytes([172, 16, 255, 66]);
            flow_hash(&f, key, 0, 0)
        })
        .collect()
}

/// Next hop per flow through a slot list (bucket table or modulo list).
fn assign(hashes: &[u32], slots: &[Option<u32>]) -> Vec<Option<u32>> {
    hashes
        .iter()
        .map(|h| slots[(*h as usize) % slots.len()])
        .collect()
}

fn members(n: usize, weights: (u32, u32)) -> Vec<Member> {
    (0..n as u32)
        .map(|i| Member::new(i + 1, if i % 2 == 0 { weights.0 } else { weights.1 }))
        .collect()
}

/// Largest |share/ideal - 1| over the members, in percent.
fn max_error(flow_nh: &[Option<u32>], ms: &[Member]) -> f64 {
    let total_w: u32 = ms.iter().map(|m| m.weight).sum();
    let n = flow_nh.len() as f64;
    ms.iter()
        .map(|m| {
            let got = flow_nh.iter().filter(|x| **x == Some(m.next_hop)).count() as f64;
            let ideal = n * f64::from(m.weight) / f64::from(total_w);
            (got / ideal - 1.0).abs() * 100.0
        })
        .fold(0.0, f64::max)
}

fn table(buckets: usize, ms: &[Member]) -> BucketTable {
    BucketTable::new(TableConfig::new(buckets, 0, 0), ms, 0).expect("valid table")
}

/// Prints the split-accuracy table; returns (members, weights, table, max error %) rows.
pub fn split(flows: usize, seed: u64) -> Vec<(usize, String, String, f64)> {
    let hashes = flow_hashes(flows, seed);
    let mut rows = Vec::new();
    println!("split accuracy: {flows} random flows, seed {seed}; cell = largest |share/ideal - 1| over the members");
    println!("| members | weights | resilient 128 buckets | resilient 4096 buckets | modulo |");
    println!("|---:|---|---:|---:|---:|");
    for n in [2usize, 4, 8, 16, 64] {
        for (w, name) in [((1, 1), "1:1"), ((2, 1), "2:1"), ((11, 45), "11:45")] {
            let ms = members(n, w);
            let mut cells = Vec::new();
            for (label, slots) in [
                ("resilient-128", table(128, &ms).buckets().to_vec()),
                ("resilient-4096", table(4096, &ms).buckets().to_vec()),
                ("modulo", modulo_slots(&ms).into_iter().map(Some).collect()),
            ] {
                let e = max_error(&assign(&hashes, &slots), &ms);
                rows.push((n, name.to_string(), label.to_string(), e));
                cells.push(format!("{e:.1}%"));
            }
            println!(
                "| {n} | {name} | {} | {} | {} |",
                cells[0], cells[1], cells[2]
            );
        }
    }
    rows
}

/// Prints flows moved when 1 of N fails and when it returns; returns (N, event, scheme, moved %, ideal %).
pub fn disruption(flows: usize, seed: u64) -> Vec<(usize, &'static str, &'static str, f64, f64)> {
    let hashes = flow_hashes(flows, seed);
    let mut rows = Vec::new();
    let frac = |a: &[Option<u32>], b: &[Option<u32>]| {
        100.0 * a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / a.len() as f64
    };
    println!("flow disruption: {flows} flows, seed {seed}; flows moved / ideal (the failed member's share on failure, 0 for active flows on return)");
    println!("| members | event | modulo | resilient, idle timer 0 | resilient, idle-aware (all buckets busy) | ideal |");
    println!("|---:|---|---:|---:|---:|---:|");
    for n in [4usize, 8, 16, 64] {
        let all = members(n, (1, 1));
        let fewer: Vec<Member> = all.iter().copied().filter(|m| m.next_hop != 2).collect();
        let m_all = assign(
            &hashes,
            &modulo_slots(&all).into_iter().map(Some).collect::<Vec<_>>(),
        );
        let m_fewer = assign(
            &hashes,
            &modulo_slots(&fewer)
                .into_iter()
                .map(Some)
                .collect::<Vec<_>>(),
        );
        // Failure: member 2 leaves.
        let mut t = BucketTable::new(TableConfig::new(4096, 0, 0), &all, 0).expect("table");
        let r_all = assign(&hashes, t.buckets());
        t.set_members(&fewer, 1).expect("members");
        let r_fewer = assign(&hashes, t.buckets());
        let ideal_fail =
            100.0 * r_all.iter().filter(|x| **x == Some(2)).count() as f64 / flows as f64;
        // Return with idle timer 0: buckets move at once.
        let mut t0 = t.clone();
        t0.set_members(&all, 2).expect("members");
        let r0 = assign(&hashes, t0.buckets());
        // Return with an idle timer and every bucket busy: nothing moves yet.
        let mut ti =
            BucketTable::from_assignment(TableConfig::new(4096, 60_000, 0), &fewer, t.buckets(), 2)
                .expect("table");
        for b in 0..4096 {
            ti.mark_used(b, 10).expect("stamp");
        }
        ti.set_members(&all, 20).expect("members");
        let ri = assign(&hashes, ti.buckets());
        let fail = (
            frac(&m_all, &m_fewer),
            frac(&r_all, &r_fewer),
            frac(&r_all, &r_fewer),
        );
        let ret = (
            frac(&m_fewer, &m_all),
            frac(&r_fewer, &r0),
            frac(&r_fewer, &ri),
        );
        for (event, (m, r, i), ideal) in [("1 fails", fail, ideal_fail), ("it returns", ret, 0.0)] {
            println!("| {n} | {event} | {m:.1}% | {r:.1}% | {i:.1}% | {ideal:.1}% |");
            rows.push((n, event, "modulo", m, ideal));
            rows.push((n, event, "resilient-0", r, ideal));
            rows.push((n, event, "resilient-idle", i, ideal));
        }
    }
    rows
}
