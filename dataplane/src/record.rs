//! The IPv4 route record: every route the DIR-24-8 tables were given, by prefix, in an open-addressing table of 8-byte words (an mmapable array the program never reads), each entry written with one store, so a stop at any point leaves a table that reads whole; pure over any word store.
//!
//! Words 0 and 1 are a header: the hash key (0 until the table is first
//! opened) and a change count, odd while a delete moves entries. The slots
//! follow, twice as many as routes may be held (a probe run stays short).
//! A slot is 0 (empty) or `address << 32 | entry`, where `entry` is the
//! route as a DIR-24-8 entry (group, kind, prefix length, pin) with a live
//! bit no route entry uses. An entry sits at or after its home slot (a keyed
//! hash of address and length), with no empty slot between.
//!
//! Safe order. A new entry and a changed route are one store each. A delete
//! fills the hole it leaves from the entries after it (backward shift): each
//! move is one store, made before the source is overwritten, so a stop
//! between two stores leaves an entry twice (both copies equal, in one
//! run), never lost; reading drops the copy, a change changes both and
//! deleting removes both. Readers in other processes (`show`, the checker) retry a
//! scan that a delete's moves overlapped.

use std::collections::HashSet;

use crate::abi::{xe_route, DIR_CHUNK};
use crate::dir24::{decode, encode};
use crate::error::{Error, Result};

/// A store of 64-bit words (the mapped array, or a vector in tests).
pub trait Words {
    fn get(&self, i: usize) -> u64;
    fn set(&mut self, i: usize, v: u64);
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A hint that word `i` is read soon (none by default).
    fn prefetch(&self, _i: usize) {}
}

impl Words for Vec<u64> {
    fn get(&self, i: usize) -> u64 {
        self[i]
    }
    fn set(&mut self, i: usize, v: u64) {
        self[i] = v;
    }
    fn len(&self) -> usize {
        <[u64]>::len(self)
    }
}

const KEY: usize = 0;
const CHANGES: usize = 1;
/// Header words before the first slot.
pub const HEADER: usize = 2;
/// Set in every entry: a route entry never has the chunk bit.
const LIVE: u32 = DIR_CHUNK;
/// Scans a reader tries before it takes one a delete overlapped.
const READ_TRIES: usize = 64;

/// Words of a record that holds up to `capacity` routes.
pub const fn words_for(capacity: u32) -> u32 {
    HEADER as u32 + 2 * capacity
}

// The map's default size in xe_abi.h is the same.
const _: () = assert!(crate::abi::RECORD_V4_WORDS == words_for(crate::abi::MAX_ROUTES_V4));

/// Routes a record of `words` words holds at most.
pub fn capacity_of(words: u32) -> u32 {
    words.saturating_sub(HEADER as u32) / 2
}

/// The record over a word store.
pub struct Record<W: Words> {
    words: W,
    key: u64,
    /// Entries held (each prefix once).
    count: usize,
}

/// The address with the bits past `len` cleared.
fn masked(addr: u32, len: u8) -> u32 {
    addr & u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0)
}

fn pack(addr: u32, len: u8, route: &xe_route) -> u64 {
    (u64::from(addr) << 32) | u64::from(encode(route, len) | LIVE)
}

fn prefix(w: u64) -> (u32, u8) {
    ((w >> 32) as u32, ((w >> 24) & 0x3f) as u8)
}

fn route(w: u64) -> xe_route {
    decode(w as u32)
}

impl<W: Words> Record<W> {
    /// Opens the record in `words`: a new one gets its hash key; one that
    /// held entries under no key (never written by this code) is emptied.
    pub fn open(mut words: W, new_key: impl FnOnce() -> u64) -> Self {
        let mut key = words.get(KEY);
        if key == 0 {
            key = new_key() | 1;
            for i in HEADER..words.len() {
                if words.get(i) != 0 {
                    words.set(i, 0);
                }
            }
            words.set(KEY, key);
        }
        // Otherwise only read: processes that do not write (`show`, the
        // checker) open it while the daemon writes.
        let mut r = Record {
            words,
            key,
            count: 0,
        };
        r.count = r.entries().len();
        r
    }

    fn slots(&self) -> usize {
        self.words.len() - HEADER
    }

    /// Routes it holds at most.
    pub fn capacity(&self) -> usize {
        self.slots() / 2
    }

    /// Routes it holds.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn home(&self, addr: u32, len: u8) -> usize {
        let mut h = ((u64::from(addr) << 8) | u64::from(len)) ^ self.key;
        h = (h ^ (h >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h = (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 32;
        ((u128::from(h) * self.slots() as u128) >> 64) as usize
    }

    fn next(&self, slot: usize) -> usize {
        if slot + 1 == self.slots() {
            0
        } else {
            slot + 1
        }
    }

    fn slot(&self, slot: usize) -> u64 {
        self.words.get(HEADER + slot)
    }

    /// The slot of the first copy of the prefix's entry, or the empty slot
    /// where it would go.
    fn find(&self, addr: u32, len: u8) -> (usize, Option<u64>) {
        let mut s = self.home(addr, len);
        loop {
            let w = self.slot(s);
            if w == 0 {
                return (s, None);
            }
            if prefix(w) == (addr, len) {
                return (s, Some(w));
            }
            s = self.next(s);
        }
    }

    /// Asks the CPU to fetch the prefix's home slot: a writer of many
    /// routes asks a few routes ahead, so a table of tens of MiB is not
    /// waited for once a route.
    pub fn prefetch(&self, addr: u32, len: u8) {
        self.words
            .prefetch(HEADER + self.home(masked(addr, len), len));
    }

    /// The route held for exactly this prefix.
    pub fn get(&self, addr: u32, len: u8) -> Option<xe_route> {
        let addr = masked(addr, len);
        self.find(addr, len).1.map(route)
    }

    /// Whether the prefix is held or there is room for it.
    pub fn check_room(&self, addr: u32, len: u8) -> Result<()> {
        if self.count < self.capacity() || self.get(addr, len).is_some() {
            return Ok(());
        }
        Err(Error::TableFull {
            what: "IPv4 route record (xe_routes_v4, one entry per prefix; max_routes_v4)",
            max: self.capacity() as u64,
        })
    }

    /// Holds `route` for the prefix; what it held before. A new prefix past
    /// the capacity is refused.
    pub fn insert(&mut self, addr: u32, len: u8, r: &xe_route) -> Result<Option<xe_route>> {
        self.check_room(addr, len)?;
        let addr = masked(addr, len);
        let (s, old) = self.find(addr, len);
        let w = pack(addr, len, r);
        self.words.set(HEADER + s, w);
        if old.is_none() {
            self.count += 1;
            return Ok(None);
        }
        // A copy a stopped delete left further on in the run changes too,
        // so copies never differ.
        let mut t = self.next(s);
        while self.slot(t) != 0 {
            if prefix(self.slot(t)) == (addr, len) {
                self.words.set(HEADER + t, w);
            }
            t = self.next(t);
        }
        Ok(old.map(route))
    }

    /// Drops the prefix (every copy of it); what it held.
    pub fn remove(&mut self, addr: u32, len: u8) -> Option<xe_route> {
        let addr = masked(addr, len);
        let mut held = None;
        while let (hole, Some(w)) = self.find(addr, len) {
            held.get_or_insert(route(w));
            let changes = self.words.get(CHANGES);
            self.words.set(CHANGES, changes | 1);
            self.shift_into(hole);
            self.words.set(CHANGES, (changes | 1) + 1);
        }
        if held.is_some() {
            self.count -= 1;
        }
        held
    }

    /// Fills `hole` from the run after it: each entry whose home lies
    /// outside (hole, its slot] moves back into the hole, whose place
    /// becomes the next hole; the last hole is emptied.
    fn shift_into(&mut self, mut hole: usize) {
        let mut s = self.next(hole);
        loop {
            let w = self.slot(s);
            if w == 0 {
                break;
            }
            let (a, l) = prefix(w);
            let home = self.home(a, l);
            // Cyclic distances from the hole: the entry may move back when
            // its home is not between the hole (exclusive) and its slot.
            let from_hole = |x: usize| (x + self.slots() - hole) % self.slots();
            if from_hole(home) == 0 || from_hole(home) > from_hole(s) {
                self.words.set(HEADER + hole, w);
                hole = s;
            }
            s = self.next(s);
        }
        self.words.set(HEADER + hole, 0);
    }

    /// Every route held, each prefix once, as (address, length, route): a
    /// scan no delete overlapped (or the last of [`READ_TRIES`]).
    pub fn entries(&self) -> Vec<(u32, u8, xe_route)> {
        let mut out = Vec::new();
        for _ in 0..READ_TRIES {
            let before = self.words.get(CHANGES);
            out = self.scan();
            if before & 1 == 0 && self.words.get(CHANGES) == before {
                break;
            }
        }
        out
    }

    fn scan(&self) -> Vec<(u32, u8, xe_route)> {
        let mut seen = HashSet::new();
        (0..self.slots())
            .map(|s| self.slot(s))
            .filter(|w| *w != 0 && seen.insert(prefix(*w)))
            .map(|w| {
                let (a, l) = prefix(w);
                (a, l, route(w))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
