//! Split accuracy and flow disruption, computed with the dataplane's hash and the control plane's bucket tables (no privileges).

use control::resilient::{modulo_slots, BucketTable, Member, TableConfig};
use dataplane::abi::xe_flow;
use dataplane::forward::hash::flow_hash;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::report::{num, pct, text, Table};

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

/// Split accuracy: the largest relative error of a member's share.
pub fn split(flows: usize, seed: u64) -> Table {
    let hashes = flow_hashes(flows, seed);
    let mut t = Table::new(
        "split",
        format!("split accuracy: {flows} random IPv4 UDP flows (seed {seed}) through xdp-ecmp's hash; cell = largest |share / ideal - 1| over the members"),
        &["members", "weights", "resilient 128 buckets", "resilient 4096 buckets", "modulo"],
    );
    for n in [2usize, 4, 8, 16, 64] {
        for (w, name) in [((1, 1), "1:1"), ((2, 1), "2:1"), ((11, 45), "11:45")] {
            let ms = members(n, w);
            let mut cells = vec![num(n as f64, 0), text(name)];
            for slots in [
                table(128, &ms).buckets().to_vec(),
                table(4096, &ms).buckets().to_vec(),
                modulo_slots(&ms).into_iter().map(Some).collect(),
            ] {
                cells.push(pct(max_error(&assign(&hashes, &slots), &ms)));
            }
            t.row(cells);
        }
    }
    t.note("Weights alternate over the members (w1, w2, w1, ...). Modulo spreads over a list where each member appears weight times (reduced by the gcd). The error has two parts: rounding the weights into buckets (128 buckets cannot express 11:45 over 64 members) and hash noise (flows/member is small at 64 members: 512 flows give ~4.4% standard deviation on their own).");
    t
}

/// Flows moved when 1 of N fails and when it returns, next to the ideal.
pub fn disruption(flows: usize, seed: u64) -> Table {
    let hashes = flow_hashes(flows, seed);
    let frac = |a: &[Option<u32>], b: &[Option<u32>]| {
        100.0 * a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / a.len() as f64
    };
    let mut t = Table::new(
        "disruption",
        format!("flow disruption: {flows} flows (seed {seed}); share of flows whose next hop changed when 1 of N members fails, and when it returns while every flow is active"),
        &["members", "event", "modulo", "resilient, idle timer 0", "resilient, idle-aware", "ideal"],
    );
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
        let mut tb = BucketTable::new(TableConfig::new(4096, 0, 0), &all, 0).expect("table");
        let r_all = assign(&hashes, tb.buckets());
        tb.set_members(&fewer, 1).expect("members");
        let r_fewer = assign(&hashes, tb.buckets());
        let ideal_fail =
            100.0 * r_all.iter().filter(|x| **x == Some(2)).count() as f64 / flows as f64;
        // Return with idle timer 0: buckets move at once.
        let mut t0 = tb.clone();
        t0.set_members(&all, 2).expect("members");
        let r0 = assign(&hashes, t0.buckets());
        // Return with an idle timer and every bucket busy: nothing moves yet.
        let mut ti = BucketTable::from_assignment(
            TableConfig::new(4096, 60_000, 0),
            &fewer,
            tb.buckets(),
            2,
        )
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
            t.row(vec![
                num(n as f64, 0),
                text(event),
                pct(m),
                pct(r),
                pct(i),
                pct(ideal),
            ]);
        }
    }
    t.note("4096-bucket tables, the control plane's allocator (the kernel's semantics). Ideal on failure: only the failed member's flows move; on return: no active flow moves. 'idle-aware' has a 60 s idle timer and every bucket busy, so the returning member gets only buckets as they go idle.");
    t
}
