//! The IPv6 search against a reference longest-prefix match: random adds and deletes, every write checked for torn answers, reshapes, adoption and a full store.

use std::collections::{BTreeMap, HashMap};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::error::Error;

/// A hash map and the lengths, as the program's maps hold them. After each
/// write, every probe's answer must be one of its allowed answers.
#[derive(Default)]
struct Mem {
    entries: HashMap<Key, xe_route>,
    lens: Vec<u8>,
    probes: Vec<(u128, [(u8, u32); 2])>,
    writes: usize,
    /// Puts tried, refused or not.
    attempts: usize,
    /// New keys refused once this many entries are held.
    capacity: Option<usize>,
}

fn id(r: &xe_route) -> (u8, u32) {
    (r.kind, if r.kind == 0 { 0 } else { r.group })
}

impl Mem {
    fn answer(&self, addr: u128) -> (u8, u32) {
        id(&search(&self.lens, addr, |k| self.entries.get(&k).copied()))
    }

    fn wrote(&mut self) {
        self.writes += 1;
        for (addr, allowed) in &self.probes {
            let got = self.answer(*addr);
            assert!(
                allowed.contains(&got),
                "write {}: {addr:#x} reads {got:?}, neither the old answer nor the new {allowed:?}",
                self.writes
            );
        }
    }
}

impl EntryStore for Mem {
    fn put(&mut self, key: Key, route: &xe_route) -> Result<()> {
        self.attempts += 1;
        if !self.entries.contains_key(&key)
            && self.capacity.is_some_and(|c| self.entries.len() >= c)
        {
            return Err(Error::TableFull {
                what: "test store",
                max: self.capacity.unwrap_or(0) as u64,
            });
        }
        self.entries.insert(key, *route);
        self.wrote();
        Ok(())
    }
    fn delete(&mut self, key: Key) -> Result<()> {
        self.entries.remove(&key);
        self.wrote();
        Ok(())
    }
    fn set_lengths(&mut self, lens: &[u8]) -> Result<()> {
        assert!(lens.is_sorted(), "ascending");
        assert!(lens.len() <= LENGTHS);
        self.lens = lens.to_vec();
        self.wrote();
        Ok(())
    }
}

fn search_of(store: Mem) -> LenSearch<Mem> {
    LenSearch::new(store, GracePeriods::immediate())
}

fn route(group: u32) -> xe_route {
    xe_route {
        group,
        kind: 1,
        ..Default::default()
    }
}

/// The longest prefix covering `addr`, by brute force.
fn reference(rules: &BTreeMap<(u8, u128), xe_route>, addr: u128) -> (u8, u32) {
    (0..=128u8)
        .rev()
        .find_map(|l| rules.get(&(l, mask(addr, l))))
        .map_or((0, 0), id)
}

/// Addresses near a few bases, so prefixes overlap at every length.
fn pick(rng: &mut SmallRng) -> u128 {
    const BASES: [u128; 3] = [
        0x2001_0db8_0000_0000_0000_0000_0000_0000,
        0x2001_0db8_0001_0002_0000_0000_0000_0000,
        0xfd00_0000_0000_0000_0000_0000_0000_0000,
    ];
    let base = BASES[rng.random_range(0..BASES.len())];
    // Flip a few bits at random depths.
    let mut a = base;
    for _ in 0..rng.random_range(0..4) {
        a ^= 1u128 << rng.random_range(0..128);
    }
    a
}

fn probes(rng: &mut SmallRng, rules: &BTreeMap<(u8, u128), xe_route>, n: usize) -> Vec<u128> {
    let mut out: Vec<u128> = (0..n).map(|_| pick(rng)).collect();
    // And the first and last address of some routes.
    for (l, a) in rules.keys().take(n) {
        out.push(*a);
        out.push(*a | host(*l));
    }
    out
}

fn check_all(t: &LenSearch<Mem>, rules: &BTreeMap<(u8, u128), xe_route>, probes: &[u128]) {
    let want = t.expected();
    assert_eq!(t.store().entries.len(), want.len(), "entries held");
    for (k, r) in &want {
        let held = t.store().entries.get(k).map(id);
        assert_eq!(held, Some(id(r)), "entry {k:?}");
    }
    for p in probes {
        assert_eq!(t.store().answer(*p), reference(rules, *p), "{p:#x}");
        assert_eq!(id(&t.lookup(*p)), reference(rules, *p), "model {p:#x}");
    }
}

/// Random adds, replaces and deletes; after every write (not only every
/// operation) each probe reads the answer of the table before or after.
#[test]
fn random_changes_match_a_reference_lpm_at_every_write() {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut t = search_of(Mem::default());
    let mut rules: BTreeMap<(u8, u128), xe_route> = BTreeMap::new();
    let lens = [0u8, 16, 32, 47, 48, 56, 63, 64, 65, 96, 112, 127, 128];
    for step in 0..3000 {
        let delete = rng.random_ratio(2, 5) && !rules.is_empty();
        let (len, a) = if delete {
            let keys: Vec<_> = rules.keys().copied().collect();
            keys[rng.random_range(0..keys.len())]
        } else {
            let len = if step > 1500 {
                rng.random_range(0..=128)
            } else {
                lens[rng.random_range(0..lens.len())]
            };
            (len, mask(pick(&mut rng), len))
        };
        let r = route(rng.random_range(1..1000));
        let mut after = rules.clone();
        if delete {
            after.remove(&(len, a));
        } else {
            after.insert((len, a), r);
        }
        let ps = probes(&mut rng, &after, 24);
        t.store.probes = ps
            .iter()
            .map(|p| (*p, [reference(&rules, *p), reference(&after, *p)]))
            .collect();
        if delete {
            t.delete(a, len).expect("delete");
        } else {
            t.add(a, len, &r).expect("add");
        }
        rules = after;
        t.store.probes.clear();
        check_all(&t, &rules, &ps);
        assert_eq!(t.routes(), rules.len(), "step {step}");
    }
    assert!(
        t.lengths().len() > 100,
        "random lengths reshaped the search"
    );
}

/// Routes of one length need no marker: one lookup finds any of them.
#[test]
fn routes_of_one_length_need_no_marker() {
    let mut t = search_of(Mem::default());
    for i in 0..1000u128 {
        t.add(0x2001_0db8 << 96 | i, 128, &route(1)).expect("add");
    }
    assert_eq!(t.lengths(), &[128]);
    assert_eq!(t.store().entries.len(), 1000);
    assert_eq!(t.entries(), 1000);
    let mut lookups = 0;
    let r = search(t.lengths(), 0x2001_0db8 << 96 | 7, |k| {
        lookups += 1;
        t.store().entries.get(&k).copied()
    });
    assert_eq!((id(&r), lookups), ((1, 1), 1));
}

/// A new shorter length puts markers under the longer routes before the
/// program searches it; a length whose routes all went stays searched.
#[test]
fn a_new_length_reshapes_and_an_empty_one_stays() {
    let mut t = search_of(Mem::default());
    let a = 0x2001_0db8_0001_0000_0000_0000_0000_0001u128;
    t.add(a, 128, &route(1)).expect("/128");
    t.add(a, 48, &route(2)).expect("/48");
    t.add(0, 0, &route(3)).expect("default");
    assert_eq!(t.lengths(), &[0, 48, 128]);
    // 48 is the root, 0 left and 128 right of it: the /128 needs no marker
    // at 48 (its /48 is a route), and a /128 elsewhere needs one.
    let b = 0xfd00u128 << 112 | 5;
    t.add(b, 128, &route(4)).expect("other /128");
    assert_eq!(
        t.store().entries.get(&(48, mask(b, 48))).map(id),
        Some((1, 3))
    );
    assert_eq!(id(&t.lookup(b)), (1, 4));
    assert_eq!(
        id(&t.lookup(b + 1)),
        (1, 3),
        "the marker answers the default"
    );
    t.delete(a, 48).expect("delete /48");
    assert_eq!(t.lengths(), &[0, 48, 128], "48 stays searched");
    assert_eq!(
        t.store().entries.get(&(48, mask(a, 48))).map(id),
        Some((1, 3)),
        "the /48's entry stays as the /128's marker, now answering the default"
    );
    assert_eq!(id(&t.lookup(a)), (1, 1));
    assert_eq!(id(&t.lookup(a + 1)), (1, 3));
    t.delete(a, 128).expect("delete /128");
    assert!(
        !t.store().entries.contains_key(&(48, mask(a, 48))),
        "unused marker removed"
    );
    assert_eq!(t.entries(), t.store().entries.len());
}

/// Adoption rewrites what differs and removes what no route needs.
#[test]
fn adoption_repairs_any_store() {
    let mut rng = SmallRng::seed_from_u64(11);
    let mut rules: BTreeMap<(u8, u128), xe_route> = BTreeMap::new();
    for _ in 0..300 {
        let len = [0u8, 32, 48, 64, 128][rng.random_range(0..5)];
        rules.insert(
            (len, mask(pick(&mut rng), len)),
            route(rng.random_range(1..50)),
        );
    }
    let mut mem = Mem::default();
    // A stale store: entries of other routes, wrong answers, other lengths.
    for _ in 0..200 {
        let len = rng.random_range(0..=128);
        mem.entries
            .insert((len, mask(pick(&mut rng), len)), route(999));
    }
    mem.lens = vec![12, 64, 100];
    let held = mem.entries.clone();
    let searched = mem.lens.clone();
    let mut t = search_of(mem);
    let record: Vec<(u128, u8, xe_route)> = rules.iter().map(|((l, a), r)| (*a, *l, *r)).collect();
    let n = t.adopt(&record, &searched, &held).expect("adopt");
    assert!(n > 0);
    assert_eq!(t.lengths(), &[0, 12, 32, 48, 64, 100, 128]);
    let ps = probes(&mut rng, &rules, 500);
    check_all(&t, &rules, &ps);
    // Adopting again finds nothing to do.
    let held = t.store().entries.clone();
    let searched = t.lengths().to_vec();
    assert_eq!(t.adopt(&record, &searched, &held).expect("again"), 0);
}

/// A store out of room fails the add with nothing changed for packets.
#[test]
fn a_full_store_fails_the_add_and_changes_nothing() {
    let mut t = search_of(Mem {
        capacity: Some(3),
        ..Default::default()
    });
    let a = 0x2001_0db8u128 << 96;
    t.add(a | 1, 128, &route(1)).expect("1");
    t.add(a | 2, 128, &route(2)).expect("2");
    t.add(a, 32, &route(3))
        .expect("3: a /32, no marker needed under it");
    let ids = |t: &LenSearch<Mem>| -> BTreeMap<Key, (u8, u32)> {
        t.store().entries.iter().map(|(k, r)| (*k, id(r))).collect()
    };
    let before = ids(&t);
    // A /128 elsewhere needs a marker at 32 and its own entry: 2 > 1 left.
    let b = 0xfd00u128 << 112;
    let e = t.add(b, 128, &route(4)).expect_err("full");
    assert!(e.to_string().contains("test store"), "{e}");
    assert_eq!(ids(&t), before, "nothing left behind");
    assert_eq!(id(&t.lookup(b)), (0, 0));
    assert_eq!(t.routes(), 3);
    let writes = t.store().writes;
    t.add(b | 9, 64, &route(5))
        .expect_err("a new length needs a marker for the /128s first");
    assert!(t.store().writes == writes, "nothing written");
    assert_eq!(t.lengths(), &[32, 128], "the search did not change");
    let tried = t.store().attempts;
    t.add(b | 10, 64, &route(5))
        .expect_err("refused again, without another pass over the routes");
    assert_eq!(t.store().attempts, tried, "no write tried");
    t.delete(a | 2, 128).expect("room made");
    let tried = t.store().attempts;
    t.add(b | 9, 64, &route(5))
        .expect_err("the reshape fits now, the route itself does not");
    assert!(t.store().attempts > tried, "tried again after a delete");
    assert_eq!(t.lengths(), &[32, 64, 128], "the search reshaped");
    assert_eq!(id(&t.lookup(a | 1)), (1, 1));
}
