//! The IPv6 search's entries in an open-addressing table of array slots, which the program reads with no call into the kernel: placement, probing and slot reuse in an order a concurrent reader never sees torn; pure over any cell store.
//!
//! A slot is six 32-bit cells: a state word (0 empty, 2 + the prefix length
//! for an entry, 0x100 + it for a deleted one), the entry's route (as a DIR-24-8 entry) and
//! the masked address (two 64-bit halves as numbers). An entry
//! sits at most `V6_PROBES` - 1 slots after its home slot (the top bits of a
//! multiplicative hash), with no empty slot between: a reader probes from
//! the home slot until it meets the entry, an empty slot or the probe bound.
//!
//! Safe order. A new entry's route and address are written before its state
//! word (release), so a reader that sees the state sees the rest. A route
//! changes with one store. A deleted entry's state becomes "deleted" (with
//! its length), which readers pass over; its slot takes another entry only
//! after a grace period, so no reader that saw the old state is still
//! comparing the address when it is overwritten, but takes the same entry
//! back at once (a reader compares the same address). A deleted slot past
//! its grace period and followed by an empty one becomes empty itself (no
//! entry's probes pass it).

use std::collections::{HashMap, HashSet};

use crate::abi::{xe_route, V6_PROBES};
use crate::dir24::{decode, encode, Cells};
use crate::error::{Error, Result};
use crate::grace::{GracePeriods, Quarantine};
use crate::lensearch::Key;

/// Cells per slot.
pub const SLOT_CELLS: usize = 6;
const EMPTY: u32 = 0;
/// Plus the length of the entry deleted.
const DELETED: u32 = 0x100;
const LIVE: u32 = 2;

fn is_deleted(state: u32) -> bool {
    state >= DELETED
}
/// The hash's multiplier (2^64 / golden ratio, odd; XE_V6_MUL).
const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

/// The address as the slot holds it: its first and last 64 bits as
/// numbers.
pub fn halves(a: u128) -> (u64, u64) {
    ((a >> 64) as u64, a as u64)
}

/// A slot's four address cells: each half's native bytes as two cells.
fn address_cells(a: u128) -> [u32; 4] {
    let (hi, lo) = halves(a);
    let mut w = [0u32; 4];
    for (o, c) in w.iter_mut().zip(
        hi.to_ne_bytes()
            .chunks_exact(4)
            .chain(lo.to_ne_bytes().chunks_exact(4)),
    ) {
        *o = u32::from_ne_bytes(c.try_into().expect("4 bytes"));
    }
    w
}

/// The home slot of `key` in a table of 2^`bits` home slots; the program
/// computes the same (xe_v6_home).
pub fn home((len, a): Key, bits: u32) -> usize {
    let (hi, lo) = halves(a);
    let mut h = (u64::from(len) + 1).wrapping_mul(MUL);
    h = (h ^ hi).wrapping_mul(MUL);
    h = (h ^ lo).wrapping_mul(MUL);
    h ^= h >> 29;
    (h.wrapping_mul(MUL) >> (64 - bits)) as usize
}

/// Slots of a table for `entries` entries: 2^bits home slots (at least
/// twice the entries) and the probe bound's overhang.
pub fn size_for(entries: u32) -> (u32, u32) {
    let bits = (u64::from(entries.max(1)) * 2)
        .next_power_of_two()
        .trailing_zeros();
    (bits, (1u32 << bits) + V6_PROBES as u32)
}

/// The table and the control side's bookkeeping.
pub struct SlotTable<C: Cells> {
    cells: C,
    bits: u32,
    /// Where each entry sits.
    at: HashMap<Key, usize>,
    /// Deleted slots (or empty ones that were) a reader may still compare:
    /// reused after their grace period.
    dead: Quarantine<usize>,
    held: HashSet<usize>,
    grace: GracePeriods,
}

impl<C: Cells> SlotTable<C> {
    /// The table over `cells` (2^bits + V6_PROBES slots) for reading only:
    /// nothing scanned, nothing written.
    pub fn reader(cells: C, bits: u32) -> Self {
        assert_eq!(
            cells.len(),
            ((1usize << bits) + V6_PROBES) * SLOT_CELLS,
            "2^bits slots and the overhang"
        );
        SlotTable {
            cells,
            bits,
            at: HashMap::new(),
            dead: Quarantine::default(),
            held: HashSet::new(),
            grace: GracePeriods::immediate(),
        }
    }

    /// The table over `cells`, taking over what they hold: entries a reader
    /// can find are kept, others are deleted.
    pub fn adopt(cells: C, bits: u32, grace: GracePeriods) -> Self {
        let mut t = Self::reader(cells, bits);
        t.grace = grace;
        let (found, lost) = t.scan();
        t.at = found.into_iter().map(|(k, (i, _))| (k, i)).collect();
        // The process that wrote them may have deleted some a moment ago.
        let cookie = t.grace.cookie();
        for i in 0..t.slots() {
            if is_deleted(t.state(i)) {
                t.dead.hold(cookie, i);
                t.held.insert(i);
            }
        }
        for i in lost {
            t.kill(i);
        }
        t
    }

    /// The entries a reader finds (where, and their routes), and the slots
    /// marked live that no reader finds.
    pub fn scan(&self) -> (HashMap<Key, (usize, xe_route)>, Vec<usize>) {
        let mut found = HashMap::new();
        let mut lost = Vec::new();
        for i in 0..self.slots() {
            if let Some(key) = self.key_at(i) {
                if self.find(key) == Some(i) {
                    found.insert(key, (i, decode(self.cells.get(i * SLOT_CELLS + 1))));
                } else {
                    lost.push(i);
                }
            }
        }
        (found, lost)
    }

    fn slots(&self) -> usize {
        (1usize << self.bits) + V6_PROBES
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn home_slots(&self) -> u64 {
        1 << self.bits
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    fn state(&self, i: usize) -> u32 {
        self.cells.get(i * SLOT_CELLS)
    }

    fn key_at(&self, i: usize) -> Option<Key> {
        let s = self.state(i);
        if s < LIVE || s - LIVE > 128 {
            return None;
        }
        let mut b = [0u8; 16];
        for (w, c) in b.chunks_exact_mut(4).enumerate() {
            c.copy_from_slice(&self.cells.get(i * SLOT_CELLS + 2 + w).to_ne_bytes());
        }
        let half = |b: &[u8]| u64::from_ne_bytes(b.try_into().expect("8 bytes"));
        let a = u128::from(half(&b[..8])) << 64 | u128::from(half(&b[8..]));
        Some(((s - LIVE) as u8, a))
    }

    /// The slot a reader finds `key` in, probing as the program does.
    fn find(&self, key: Key) -> Option<usize> {
        let h = home(key, self.bits);
        let w = address_cells(key.1);
        for i in h..h + V6_PROBES {
            let s = self.state(i);
            if s == EMPTY {
                return None;
            }
            if s == LIVE + u32::from(key.0)
                && (0..4).all(|k| self.cells.get(i * SLOT_CELLS + 2 + k) == w[k])
            {
                return Some(i);
            }
        }
        None
    }

    /// The entry's route as a reader finds it.
    pub fn get(&self, key: Key) -> Option<xe_route> {
        self.find(key)
            .map(|i| decode(self.cells.get(i * SLOT_CELLS + 1)))
    }

    /// Writes `key`'s route: one store for an entry held, else a new slot.
    pub fn put(&mut self, key: Key, route: &xe_route) -> Result<()> {
        let r = encode(route, 0);
        if let Some(&i) = self.at.get(&key) {
            self.cells.set(i * SLOT_CELLS + 1, r);
            return Ok(());
        }
        let i = self.place(key)?;
        let w = address_cells(key.1);
        self.cells.set(i * SLOT_CELLS + 1, r);
        for (k, v) in w.iter().enumerate() {
            self.cells.set(i * SLOT_CELLS + 2 + k, *v);
        }
        // Last: a reader that sees the state sees the rest.
        self.cells.set(i * SLOT_CELLS, LIVE + u32::from(key.0));
        self.at.insert(key, i);
        Ok(())
    }

    /// A free slot for `key` within its probe bound: the first empty one,
    /// or deleted one past its grace period, or one that held this same
    /// entry (a reader comparing it reads the same address).
    fn place(&mut self, key: Key) -> Result<usize> {
        self.release();
        let h = home(key, self.bits);
        let w = address_cells(key.1);
        for i in h..h + V6_PROBES {
            let s = self.state(i);
            if s == EMPTY || is_deleted(s) && !self.held.contains(&i) {
                return Ok(i);
            }
            if s == DELETED + u32::from(key.0)
                && (0..4).all(|k| self.cells.get(i * SLOT_CELLS + 2 + k) == w[k])
            {
                return Ok(i);
            }
        }
        Err(Error::TableFull {
            what: "IPv6 search slots (no free slot within the probe bound; xe_v6_slots, sized from max_routes_v6)",
            max: (1u64 << self.bits),
        })
    }

    /// Deleted slots past their grace period are free; those just before
    /// an empty slot become empty (no probe passes them).
    fn release(&mut self) {
        for i in self.dead.release(&self.grace) {
            self.held.remove(&i);
            self.clear_from(i);
        }
    }

    /// Empties `i` and the deleted slots before it, as far as no probe
    /// passes them and their grace periods are over.
    fn clear_from(&mut self, i: usize) {
        let mut j = i;
        loop {
            let next_empty = j + 1 == self.slots() || self.state(j + 1) == EMPTY;
            if !(is_deleted(self.state(j)) && !self.held.contains(&j) && next_empty) {
                return;
            }
            self.cells.set(j * SLOT_CELLS, EMPTY);
            if j == 0 {
                return;
            }
            j -= 1;
        }
    }

    /// Deletes `key`'s entry, if held.
    pub fn delete(&mut self, key: Key) {
        if let Some(i) = self.at.remove(&key) {
            self.kill(i);
        }
    }

    fn kill(&mut self, i: usize) {
        let len = self.state(i) - LIVE;
        self.cells.set(i * SLOT_CELLS, DELETED + len);
        self.dead.hold(self.grace.cookie(), i);
        self.held.insert(i);
    }
}

#[cfg(test)]
mod tests;
