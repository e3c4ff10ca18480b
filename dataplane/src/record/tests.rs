//! The record against a plain map under random inserts, replaces and deletes (runs that wrap the table's end included), its capacity, and every stop a delete's moves can be cut at.

use std::collections::BTreeMap;

use super::*;
use crate::abi::{ROUTE_PIN, RT_BLACKHOLE, RT_UNICAST};

/// xorshift64*: reproducible draws without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn unicast(group: u32, pin: bool) -> xe_route {
    xe_route {
        group,
        kind: RT_UNICAST,
        flags: if pin { ROUTE_PIN } else { 0 },
        ..Default::default()
    }
}

fn record(capacity: u32, key: u64) -> Record<Vec<u64>> {
    Record::open(vec![0; words_for(capacity) as usize], || key)
}

/// A route as comparable fields (the skeleton's type has no equality).
type Fields = (u32, u8, u8);

fn f(r: &xe_route) -> Fields {
    (r.group, r.kind, r.flags)
}

fn o(r: Option<xe_route>) -> Option<Fields> {
    r.as_ref().map(f)
}

fn sorted<W: Words>(r: &Record<W>) -> Vec<(u32, u8, Fields)> {
    let mut v: Vec<_> = r.entries().iter().map(|(a, l, r)| (*a, *l, f(r))).collect();
    v.sort_by_key(|(a, l, _)| (*a, *l));
    v
}

fn expected(m: &BTreeMap<(u32, u8), xe_route>) -> Vec<(u32, u8, Fields)> {
    m.iter().map(|((a, l), r)| (*a, *l, f(r))).collect()
}

#[test]
fn random_changes_match_a_map() {
    for (capacity, seed) in [(8u32, 1u64), (64, 2), (1000, 3)] {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut r = record(capacity, rng.next());
        let mut m: BTreeMap<(u32, u8), xe_route> = BTreeMap::new();
        // Few distinct prefixes, so replaces and deletes of held ones are common.
        let universe = (capacity as u64) * 3 / 2;
        for step in 0..20_000 {
            let i = rng.next() % universe;
            let len = (i % 33) as u8;
            let addr = ((i as u32).wrapping_mul(0x0101_0101))
                & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            if rng.next().is_multiple_of(3) {
                assert_eq!(
                    o(r.remove(addr, len)),
                    o(m.remove(&(addr, len))),
                    "step {step}"
                );
            } else {
                let route = unicast((rng.next() % 65_536) as u32, rng.next().is_multiple_of(2));
                let got = r.insert(addr, len, &route);
                if m.contains_key(&(addr, len)) || m.len() < capacity as usize {
                    assert_eq!(
                        o(got.expect("room")),
                        o(m.insert((addr, len), route)),
                        "step {step}"
                    );
                } else {
                    assert!(
                        matches!(got, Err(Error::TableFull { .. })),
                        "step {step}: a new prefix past the capacity is refused"
                    );
                }
            }
            assert_eq!(r.len(), m.len(), "step {step}");
            if step % 997 == 0 {
                assert_eq!(sorted(&r), expected(&m), "step {step}");
            }
            for probe in [(addr, len), (addr ^ 1, 32)] {
                assert_eq!(
                    o(r.get(probe.0, probe.1)),
                    o(m.get(&probe).copied()),
                    "step {step}"
                );
            }
        }
        assert_eq!(sorted(&r), expected(&m));
    }
}

#[test]
fn a_full_record_refuses_new_prefixes_and_takes_changes() {
    let mut r = record(4, 7);
    for i in 0..4 {
        assert!(r
            .insert(i << 8, 24, &unicast(i, false))
            .expect("room")
            .is_none());
    }
    let err = r.insert(9 << 8, 24, &unicast(9, false)).unwrap_err();
    assert!(err.to_string().contains("xe_routes_v4"), "{err}");
    assert_eq!(
        o(r.insert(2 << 8, 24, &unicast(20, true))
            .expect("a held prefix changes")),
        o(Some(unicast(2, false)))
    );
    assert_eq!(o(r.remove(2 << 8, 24)), o(Some(unicast(20, true))));
    assert!(r.insert(9 << 8, 24, &unicast(9, false)).is_ok());
}

#[test]
fn kinds_lengths_and_the_default_route_survive_packing() {
    let mut r = record(16, 11);
    let bh = xe_route {
        kind: RT_BLACKHOLE,
        ..Default::default()
    };
    // The default route of group 0 packs to a nonzero word (the live bit).
    r.insert(0, 0, &unicast(0, false)).expect("room");
    r.insert(u32::MAX, 32, &unicast(65_535, true))
        .expect("room");
    r.insert(0x0a00_0000, 8, &bh).expect("room");
    assert_eq!(o(r.get(0, 0)), o(Some(unicast(0, false))));
    assert_eq!(o(r.get(u32::MAX, 32)), o(Some(unicast(65_535, true))));
    assert_eq!(o(r.get(0x0a00_0000, 8)), o(Some(bh)));
    assert!(r.get(0x0a00_0000, 9).is_none());
}

#[test]
fn reopening_keeps_the_key_and_the_entries() {
    let mut r = record(32, 5);
    for i in 0..20 {
        r.insert(i * 3, 32, &unicast(i, false)).expect("room");
    }
    let before = sorted(&r);
    let again = Record::open(r.words.clone(), || panic!("a keyed record keeps its key"));
    assert_eq!(again.key, r.key);
    assert_eq!(again.len(), 20);
    assert_eq!(sorted(&again), before);
}

/// A store that logs its writes, so a delete can be replayed up to any
/// store, as a process killed between two stores leaves the mapped array.
struct Logging {
    words: Vec<u64>,
    log: Vec<(usize, u64)>,
}
impl Words for Logging {
    fn get(&self, i: usize) -> u64 {
        self.words[i]
    }
    fn set(&mut self, i: usize, v: u64) {
        self.log.push((i, v));
        self.words[i] = v;
    }
    fn len(&self) -> usize {
        self.words.len()
    }
}

#[test]
fn a_delete_stopped_at_any_store_loses_nothing_else() {
    // A crowded small table, so deletes move long runs (wrapping the end).
    let capacity = 24u32;
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut m: BTreeMap<(u32, u8), xe_route> = BTreeMap::new();
    let mut full = record(capacity, 99);
    while m.len() < capacity as usize {
        let addr = rng.next() as u32;
        let route = unicast((rng.next() % 1000) as u32, false);
        full.insert(addr, 32, &route).expect("room");
        m.insert((addr, 32), route);
    }
    let (mut stops, mut twice) = (0, 0);
    for &(addr, len) in m.keys() {
        let mut logged = Record {
            words: Logging {
                words: full.words.clone(),
                log: Vec::new(),
            },
            key: full.key,
            count: full.count,
        };
        logged.remove(addr, len);
        let log = logged.words.log;
        for cut in 0..=log.len() {
            let mut words = full.words.clone();
            for (i, v) in &log[..cut] {
                words[*i] = *v;
            }
            // What the next process opens: each other route still there,
            // the deleted one there or not.
            let mut reopened = Record::open(words, || panic!("keyed"));
            let mut want = m.clone();
            if reopened.get(addr, len).is_none() {
                want.remove(&(addr, len));
            }
            assert_eq!(sorted(&reopened), expected(&want), "cut {cut}");
            assert_eq!(reopened.len(), want.len(), "cut {cut}");
            // A change reaches every copy the cut left.
            for (&(a, l), r) in want.iter_mut() {
                *r = unicast(r.group + 1, true);
                reopened.insert(a, l, r).expect("held");
            }
            assert_eq!(sorted(&reopened), expected(&want), "cut {cut}");
            let words: Vec<u64> = (0..reopened.slots())
                .map(|s| reopened.slot(s))
                .filter(|w| *w != 0)
                .collect();
            let mut by_prefix: BTreeMap<(u32, u8), Vec<u64>> = BTreeMap::new();
            for w in &words {
                by_prefix.entry(prefix(*w)).or_default().push(*w);
            }
            twice += usize::from(words.len() > by_prefix.len());
            for (p, copies) in &by_prefix {
                assert!(
                    copies.windows(2).all(|w| w[0] == w[1]),
                    "cut {cut}: copies of {p:?} equal"
                );
            }
            // And the delete, made again, removes every copy.
            reopened.remove(addr, len);
            want.remove(&(addr, len));
            assert!(
                (0..reopened.slots())
                    .all(|s| prefix(reopened.slot(s)) != (addr, len) || reopened.slot(s) == 0),
                "cut {cut}: no copy left"
            );
            assert_eq!(sorted(&reopened), expected(&want), "cut {cut}");
            assert_eq!(reopened.len(), want.len(), "cut {cut}");
            stops += 1;
        }
    }
    assert!(
        stops > 4 * capacity as usize,
        "deletes moved entries ({stops} stops)"
    );
    assert!(twice > 0, "some cut left a copy");
}

#[test]
fn a_record_without_a_key_is_emptied_and_keyed() {
    let mut words = vec![0u64; words_for(8) as usize];
    words[HEADER + 3] = pack(1, 32, &unicast(1, false));
    let r = Record::open(words, || 0);
    assert_ne!(r.key, 0, "a key of 0 is made nonzero");
    assert!(r.is_empty());
    assert!(r.entries().is_empty());
}

#[test]
fn sizes_round_trip() {
    for c in [1024u32, 1 << 21, 1 << 24] {
        assert_eq!(capacity_of(words_for(c)), c);
    }
}
