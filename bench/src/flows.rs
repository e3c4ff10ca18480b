//! Split accuracy and flow disruption, computed with the dataplane's hash and the control plane's bucket tables (no privileges).

use control::resilient::{modulo_slots, BucketTable, Member, TableConfig};
use std::net::Ipv4Addr;

use dataplane::abi::{
    xe_config, xe_flow, xe_group, xe_nexthop, xe_route, GROUP_RESILIENT, NH_TXPORT, NH_USABLE,
    ROUTE_PIN, RT_UNICAST,
};
use dataplane::forward::hash::flow_hash;
use dataplane::{MemoryFlows, Pins, TableReader, TableWriter, Tables};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::report::{num, pct, text, Table};

/// `n` random IPv4 UDP flows towards one anycast address, and the hash key.
fn random_flows(n: usize, seed: u64) -> ([u32; 2], Vec<xe_flow>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let key = [rng.random(), rng.random()];
    let flows = (0..n)
        .map(|_| {
            let mut f = xe_flow {
                sport: rng.random(),
                dport: 53,
                proto: 17,
                ..Default::default()
            };
            // A source a router forwards from (10/8): no special address.
            let r: [u8; 3] = rng.random();
            f.src[0] = u32::from_ne_bytes([10, r[0], r[1], r[2]]);
            f.dst[0] = u32::from_ne_bytes(ANYCAST.octets());
            f
        })
        .collect();
    (key, flows)
}

/// Hash values of `n` random IPv4 UDP flows towards one anycast address.
fn flow_hashes(n: usize, seed: u64) -> Vec<u32> {
    let (key, flows) = random_flows(n, seed);
    flows.iter().map(|f| flow_hash(f, key, 0, 0)).collect()
}

const ANYCAST: Ipv4Addr = Ipv4Addr::new(172, 16, 255, 66);

/// The frame of an IPv4 UDP flow (as the benchmark frames, to its ports).
fn frame_of(f: &xe_flow) -> Vec<u8> {
    let mut b = crate::frame_to(ANYCAST);
    b[26..30].copy_from_slice(&f.src[0].to_ne_bytes());
    let sum = crate::ipv4_checksum(&mut b[14..34]);
    b[24..26].copy_from_slice(&sum.to_be_bytes());
    b[34..36].copy_from_slice(&f.sport.to_be_bytes());
    b[36..38].copy_from_slice(&f.dport.to_be_bytes());
    b
}

/// Flow pinning through the shared decision (the program's, bit for bit):
/// tables with the anycast route pinned over `slots` (next hop = member id,
/// its path the same number), `live` the group's members.
struct PinnedWorld {
    tables: Tables,
    flows: MemoryFlows,
}

impl PinnedWorld {
    fn new(key: [u32; 2], members: usize) -> Self {
        let mut t = Tables::default();
        for id in 1..=members as u32 {
            t.add_txport(id).expect("port");
            t.set_nexthop(
                id,
                &xe_nexthop {
                    ifindex: id,
                    mtu: 1500,
                    state: NH_USABLE | NH_TXPORT,
                    path: id,
                    ..Default::default()
                },
            )
            .expect("next hop");
        }
        t.set_route_v4(
            ANYCAST,
            32,
            &xe_route {
                group: 1,
                kind: RT_UNICAST,
                flags: ROUTE_PIN,
                ..Default::default()
            },
        )
        .expect("route");
        t.set_config(&xe_config {
            seed: key,
            ..Default::default()
        })
        .expect("config");
        PinnedWorld {
            tables: t,
            flows: MemoryFlows::default(),
        }
    }

    /// The group's buckets and live members now.
    fn set(&mut self, slots: &[Option<u32>], live: &[Member], all: usize) {
        let ids: Vec<u32> = slots.iter().map(|s| s.unwrap_or(0)).collect();
        self.tables.set_slots(0, &ids).expect("slots");
        self.tables
            .set_group(
                1,
                &xe_group {
                    base: 0,
                    size: ids.len() as u16,
                    mode: GROUP_RESILIENT,
                    ..Default::default()
                },
            )
            .expect("group");
        for id in 1..=all as u32 {
            let member = live.iter().any(|m| m.next_hop == id);
            self.tables
                .set_pin_member(1, id, member.then_some(id))
                .expect("member");
        }
    }

    /// The next hop each flow is sent to now (its entry written as the
    /// program writes it).
    fn send(&mut self, flows: &[xe_flow]) -> Vec<Option<u32>> {
        let mut out = vec![0u8; 128];
        flows
            .iter()
            .map(|f| {
                let mut pins = Pins {
                    table: &mut self.flows,
                    now: 1,
                };
                let (d, _) = self
                    .tables
                    .decide_pinned(&mut pins, None, &frame_of(f), &mut out);
                (d.verdict == 0).then_some(d.nexthop)
            })
            .collect()
    }
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

/// Largest |flows of a member / flows its buckets would get - 1| over the
/// members, in percent: the hash's noise alone, against the table's own shares.
fn noise(flow_nh: &[Option<u32>], slots: &[Option<u32>], ms: &[Member]) -> f64 {
    let n = flow_nh.len() as f64;
    ms.iter()
        .filter_map(|m| {
            let held = slots.iter().filter(|x| **x == Some(m.next_hop)).count() as f64;
            (held > 0.0).then(|| {
                let got = flow_nh.iter().filter(|x| **x == Some(m.next_hop)).count() as f64;
                (got / (n * held / slots.len() as f64) - 1.0).abs() * 100.0
            })
        })
        .fold(0.0, f64::max)
}

/// Three standard deviations of a member's flow count under a fair binomial
/// draw of `flows` flows, relative to its ideal, in percent: the largest over
/// the members (the one of least weight).
fn binomial_bound(flows: usize, ms: &[Member]) -> f64 {
    let total: f64 = ms.iter().map(|m| f64::from(m.weight)).sum();
    ms.iter()
        .map(|m| {
            let p = f64::from(m.weight) / total;
            300.0 * ((1.0 - p) / (p * flows as f64)).sqrt()
        })
        .fold(0.0, f64::max)
}

/// Split accuracy: the largest relative error of a member's share, for each
/// flow count in `flow_counts`, at the bucket count the daemon chooses for a
/// new table (and at a fixed 128 and modulo, for comparison), with its two
/// parts apart: rounding weights into buckets, and the hash's noise.
pub fn split(flow_counts: &[usize], seed: u64) -> Table {
    let mut t = Table::new(
        "split",
        format!("split accuracy: random IPv4 UDP flows (seed {seed}) through xdp-ecmp's hash; cells = largest |share / ideal - 1| over the members"),
        &["members", "weights", "flows", "buckets chosen", "rounding error", "hash noise", "total error", "binomial bound", "resilient 128 buckets", "modulo"],
    );
    for &flows in flow_counts {
        let hashes = flow_hashes(flows, seed);
        for n in [2usize, 4, 5, 8, 16, 64] {
            for (w, name) in [((1, 1), "1:1"), ((2, 1), "2:1"), ((11, 45), "11:45")] {
                let ms = members(n, w);
                let chosen = control::bucket_count::choose(&ms, 128, 4096);
                let slots = table(chosen, &ms).buckets().to_vec();
                let got = assign(&hashes, &slots);
                let mut cells = vec![
                    num(n as f64, 0),
                    text(name),
                    num(flows as f64, 0),
                    num(chosen as f64, 0),
                    pct(control::bucket_count::rounding_error(chosen, &ms) * 100.0),
                    pct(noise(&got, &slots, &ms)),
                    pct(max_error(&got, &ms)),
                    pct(binomial_bound(flows, &ms)),
                ];
                for slots in [
                    table(128, &ms).buckets().to_vec(),
                    modulo_slots(&ms).into_iter().map(Some).collect(),
                ] {
                    cells.push(pct(max_error(&assign(&hashes, &slots), &ms)));
                }
                t.row(cells);
            }
        }
    }
    t.note("Weights alternate over the members (w1, w2, w1, ...). Buckets chosen: what the daemon gives a new table of these members (128, or more where 128 cannot share the buckets within 1% of each member's weight, up to 4,096; control::bucket_count). Rounding error: a member's share of the buckets against its share of the weight. Hash noise: a member's share of the flows against its share of the buckets. Total error: of the flows against the weight (both parts). Binomial bound: three standard deviations of a member's flow count under a fair binomial draw, relative to its ideal, the largest over the members. Modulo spreads over a list where each member appears weight times (reduced by the gcd).");
    t
}

/// Flows moved when 1 of N fails and when it returns, next to the ideal.
pub fn disruption(flows: usize, seed: u64) -> Table {
    let hashes = flow_hashes(flows, seed);
    let (key, flow_list) = random_flows(flows, seed);
    let frac = |a: &[Option<u32>], b: &[Option<u32>]| {
        100.0 * a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / a.len() as f64
    };
    let mut t = Table::new(
        "disruption",
        format!("flow disruption: {flows} flows (seed {seed}); share of flows whose next hop changed when 1 of N members fails, and when it returns while every flow is active"),
        &["members", "event", "modulo", "resilient, idle timer 0", "resilient, idle-aware", "pinned (idle timer 0)", "ideal"],
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
        let b_all = tb.buckets().to_vec();
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
        // Pinned flows under the same tables as 'idle timer 0': each flow's
        // first packet pins it, the tables change, its next packet decides.
        let mut pw = PinnedWorld::new(key, n);
        pw.set(&b_all, &all, n);
        let p_all = pw.send(&flow_list);
        pw.set(tb.buckets(), &fewer, n);
        let p_fewer = pw.send(&flow_list);
        pw.set(t0.buckets(), &all, n);
        let p_back = pw.send(&flow_list);
        // The decision hashes the flows' frames as the table above does.
        assert_eq!(p_all, r_all, "the shared decision and the hash disagree");
        let pinned = (frac(&p_all, &p_fewer), frac(&p_fewer, &p_back));
        for (event, (m, r, i), p, ideal) in [
            ("1 fails", fail, pinned.0, ideal_fail),
            ("it returns", ret, pinned.1, 0.0),
        ] {
            t.row(vec![
                num(n as f64, 0),
                text(event),
                pct(m),
                pct(r),
                pct(i),
                pct(p),
                pct(ideal),
            ]);
        }
    }
    t.note("4096-bucket tables, the control plane's allocator (the kernel's semantics). Ideal on failure: only the failed member's flows move; on return: no active flow moves. 'idle-aware' has a 60 s idle timer and every bucket busy, so the returning member gets only buckets as they go idle. 'pinned' runs each flow through the shared decision (the program's, bit for bit) with the route pinned over the 'idle timer 0' tables: its first packet writes its entry, the tables change, its next packet decides; only flows whose own next hop left move.");
    t
}
