//! The slot table against a plain map: random puts and deletes, what a reader finds, the probe invariant, reuse only after a grace period, adoption of any contents, and how full it gets.

use std::collections::HashMap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;

fn table(bits: u32) -> SlotTable<Vec<u32>> {
    let (_, slots) = size_for(1 << (bits - 1));
    SlotTable::adopt(
        vec![0u32; slots as usize * SLOT_CELLS],
        bits,
        GracePeriods::immediate(),
    )
}

fn route(group: u32) -> xe_route {
    xe_route {
        group,
        kind: 1,
        ..Default::default()
    }
}

/// Every entry sits within the probe bound of its home with no empty slot
/// before it, and nothing else is marked live.
fn check_invariant<C: Cells>(t: &SlotTable<C>) {
    let mut live = 0;
    for i in 0..t.slots() {
        if let Some(k) = t.key_at(i) {
            live += 1;
            assert_eq!(
                t.at.get(&k),
                Some(&i),
                "slot {i} holds an entry not on record"
            );
            let h = home(k, t.bits);
            assert!(i >= h && i - h < V6_PROBES, "slot {i}, home {h}");
            assert!(
                (h..i).all(|j| t.state(j) != EMPTY),
                "an empty slot between home {h} and {i}"
            );
        }
    }
    assert_eq!(live, t.len());
}

#[test]
fn random_puts_and_deletes_read_back_as_a_map() {
    let mut rng = SmallRng::seed_from_u64(3);
    let mut t = table(12);
    let mut want: HashMap<Key, u32> = HashMap::new();
    for step in 0..20_000 {
        // Few distinct keys so deletes and re-adds collide in slots.
        let len = [48u8, 64, 128][rng.random_range(0..3)];
        let key = (len, rng.random_range(0..600u128) << (128 - u32::from(len)));
        if rng.random_ratio(2, 5) {
            t.delete(key);
            want.remove(&key);
        } else {
            let g = rng.random_range(1..60_000);
            t.put(key, &route(g)).expect("room");
            want.insert(key, g);
        }
        if step % 500 == 0 {
            check_invariant(&t);
        }
    }
    check_invariant(&t);
    for len in [48u8, 64, 128] {
        for a in 0..600u128 {
            let key = (len, a << (128 - u32::from(len)));
            assert_eq!(
                t.get(key).map(|r| r.group),
                want.get(&key).copied(),
                "{key:?}"
            );
        }
    }
}

#[test]
fn the_hash_spreads_neighbouring_addresses() {
    // 2^16 consecutive /128s into 2^17 home slots: no free slot is ever
    // out of reach, and most entries sit at home.
    let mut t = table(17);
    let base = 0x2001_0db8u128 << 96;
    for i in 0..1u128 << 16 {
        t.put((128, base | i), &route(1))
            .expect("room at half load");
    }
    let at_home =
        t.at.iter()
            .filter(|(k, i)| home(**k, t.bits) == **i)
            .count();
    assert!(
        at_home * 10 > t.len() * 7,
        "{at_home} of {} at home",
        t.len()
    );
    check_invariant(&t);
}

/// A deleted slot keeps its address until its grace period is over: a new
/// entry goes elsewhere meanwhile.
#[test]
fn a_deleted_slot_is_reused_only_after_its_grace_period() {
    let grace = GracePeriods::manual();
    let (bits, slots) = (4, (1usize << 4) + V6_PROBES);
    let mut t = SlotTable::adopt(vec![0u32; slots * SLOT_CELLS], bits, grace.clone());
    let a = (128u8, 1u128);
    t.put(a, &route(1)).expect("a");
    let i = t.at[&a];
    // A second key with the same home, placed after it.
    let b = (1..)
        .map(|x: u128| (128u8, x << 64))
        .find(|k| home(*k, bits) == home(a, bits))
        .expect("a colliding key");
    t.put(b, &route(2)).expect("b");
    assert_eq!(t.at[&b], i + 1);
    t.delete(a);
    assert_eq!(
        t.state(i),
        DELETED + 128,
        "b's probes pass the deleted slot"
    );
    let c = (1..)
        .map(|x: u128| (128u8, x << 32))
        .find(|k| home(*k, bits) == home(a, bits) && *k != b)
        .expect("another colliding key");
    t.put(c, &route(3)).expect("c");
    assert_eq!(t.at[&c], i + 2, "not the slot a reader may still compare");
    assert_eq!(t.get(b).map(|r| r.group), Some(2));
    // The same entry back takes its own slot at once: a reader comparing
    // it reads the same address.
    t.put(a, &route(5)).expect("a again");
    assert_eq!(t.at[&a], i);
    assert_eq!(t.get(a).map(|r| r.group), Some(5));
    t.delete(a);
    grace.complete_all();
    t.delete(c);
    let d = (1..)
        .map(|x: u128| (128u8, x << 16))
        .find(|k| home(*k, bits) == home(a, bits) && *k != b && *k != c)
        .expect("a fourth");
    t.put(d, &route(4)).expect("d");
    assert_eq!(t.at[&d], i, "after the grace period the slot is reused");
    check_invariant(&t);
}

#[test]
fn adoption_keeps_what_a_reader_finds_and_deletes_the_rest() {
    let mut t = table(8);
    for i in 0..60u128 {
        t.put((128, i), &route(i as u32 + 1)).expect("room");
    }
    let mut cells = t.cells.clone();
    let k = (128u8, 7u128);
    let (i, h) = (t.at[&k], home(k, 8));
    let empty = |cells: &Vec<u32>, j: usize| cells[j * SLOT_CELLS] == EMPTY;
    // A copy of k past an empty slot after it (a reader stops before it),
    // and one out of its probe range.
    let after = (i + 1..h + V6_PROBES)
        .find(|j| empty(&cells, *j) && empty(&cells, j + 1))
        .map(|j| j + 1)
        .expect("two empty slots after it");
    let far = (0..t.slots())
        .find(|j| empty(&cells, *j) && (*j < h || *j >= h + V6_PROBES))
        .expect("an empty slot out of range");
    for j in [after, far] {
        for c in 0..SLOT_CELLS {
            cells[j * SLOT_CELLS + c] = cells[i * SLOT_CELLS + c];
        }
    }
    let t2 = SlotTable::adopt(cells, 8, GracePeriods::immediate());
    check_invariant(&t2);
    assert_eq!(t2.len(), 60, "each key once");
    assert_eq!(t2.get(k).map(|r| r.group), Some(8));
    for j in [after, far] {
        assert_ne!(t2.state(j), LIVE + 128, "slot {j} no longer an entry");
    }
}

/// Random keys fill well past the half the sizing plans for before a key
/// finds no slot within its probe bound.
#[test]
fn random_keys_fill_past_two_thirds_before_the_first_refusal() {
    let mut rng = SmallRng::seed_from_u64(5);
    let bits = 16;
    let mut t = table(bits);
    let n = loop {
        let key = (128u8, rng.random::<u128>());
        if t.put(key, &route(1)).is_err() {
            break t.len();
        }
    };
    let fill = n as f64 / f64::from(1u32 << bits);
    println!("first refusal at {n} entries: {fill:.3} of the home slots");
    assert!(fill > 0.67, "{fill}");
}

/// The length search over a slot table, as the maps hold it.
struct Both(SlotTable<Vec<u32>>);

impl crate::lensearch::EntryStore for Both {
    fn put(&mut self, key: Key, route: &xe_route) -> Result<()> {
        self.0.put(key, route)
    }
    fn delete(&mut self, key: Key) -> Result<()> {
        self.0.delete(key);
        Ok(())
    }
    fn set_lengths(&mut self, _: &[u8]) -> Result<()> {
        Ok(())
    }
}

#[test]
fn churned_routes_near_each_other_always_find_slots() {
    use crate::lensearch::{mask, LenSearch};
    let mut rng = SmallRng::seed_from_u64(17);
    let bits = 15;
    let (_, slots) = size_for(1 << (bits - 1));
    let table = SlotTable::adopt(
        vec![0u32; slots as usize * SLOT_CELLS],
        bits,
        GracePeriods::immediate(),
    );
    let mut s = LenSearch::new(Both(table), GracePeriods::immediate());
    let bases = [
        0x2001_0db8_0001_0002u128 << 64 | 5,
        0x2001_0db8_0001_0002u128 << 64 | 0x99,
        0x2001_0db8_dead_u128 << 80 | 1,
    ];
    let mut held: Vec<(u128, u8)> = Vec::new();
    let mut most = 0;
    for step in 0..60_000 {
        if held.len() > 1500 || (!held.is_empty() && rng.random_ratio(2, 5)) {
            let (p, l) = held.swap_remove(rng.random_range(0..held.len()));
            s.delete(p, l).expect("delete");
            continue;
        }
        let len = rng.random_range(0..=128u8);
        let p = mask(
            bases[rng.random_range(0..3)] ^ (rng.random::<u128>() >> rng.random_range(0..128)),
            len,
        );
        if held.contains(&(p, len)) {
            continue;
        }
        if let Err(e) = s.add(p, len, &route(1)) {
            panic!(
                "step {step}: {e}: {} routes, {} entries of {} home slots",
                held.len(),
                s.store().0.len(),
                1 << bits
            );
        }
        held.push((p, len));
        most = most.max(s.store().0.len());
    }
    println!("at most {most} entries for 1500 routes");
    assert!(most >= 1500 && most < 1 << (bits - 1), "{most}");
}
