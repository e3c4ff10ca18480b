//! The IPv6 route lookup by binary search on prefix lengths (Waldvogel et al.): which hash entries and markers a prefix add or delete writes, in an order a concurrent reader never sees torn; pure over any entry store.
//!
//! The store holds one entry per (length, masked address) of a route, and
//! markers: entries at the shorter lengths a binary search over the present
//! lengths visits on its way to a route's length, so the search turns
//! towards longer lengths there. Every entry holds the route of the longest
//! prefix no longer than itself that covers it (kind 0: none), so the last
//! entry the search hits is the answer. A search makes one hash lookup per
//! level: at most 8 for all 129 lengths, 1 when every route has one length,
//! however many routes there are.
//!
//! Safe order. An add writes its new markers (each holding the answer that
//! stands, so nothing changes), then the route, then the longer markers it
//! now answers for; a delete hands those markers to the covering route
//! first, then replaces or removes its own entry, then removes markers no
//! longer needed. Each write changes the answer of the addresses whose
//! search ends at that entry from the old table's to the new one's, so a
//! packet meets one or the other. A new length reshapes the search: every
//! marker the new shape needs is written first (a marker the old shape does
//! not visit changes nothing), then the program switches to the new
//! lengths in one store, and markers only the old shape used are removed
//! after a grace period. Lengths whose routes have all gone stay searched,
//! so a flapping route of a length of its own does not reshape the table.

use std::collections::{BTreeMap, HashMap};

use crate::abi::{bytes_of, xe_route};
use crate::error::{Error, Result};
use crate::grace::GracePeriods;

/// An entry's key: a prefix length and the address masked to it.
pub type Key = (u8, u128);

/// Entries most searches end at: every IPv6 prefix length, 0 to 128.
pub const LENGTHS: usize = 129;

/// Levels of the search over all 129 lengths.
pub const MAX_STEPS: usize = 8;

/// What the program reads: hash entries and the lengths it searches.
pub trait EntryStore {
    /// Writes an entry, new or replacing one: readers see the old value or
    /// the new one.
    fn put(&mut self, key: Key, route: &xe_route) -> Result<()>;
    /// Writes entries that are all new (no reader finds them before): a
    /// store may batch them.
    fn put_new(&mut self, entries: &[(Key, xe_route)]) -> Result<()> {
        entries.iter().try_for_each(|(k, r)| self.put(*k, r))
    }
    fn delete(&mut self, key: Key) -> Result<()>;
    /// Makes `lens` (ascending) the lengths searched, in one switch.
    fn set_lengths(&mut self, lens: &[u8]) -> Result<()>;
}

/// `addr` with the bits past `len` cleared.
pub fn mask(addr: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        addr & (u128::MAX << (128 - u32::from(len)))
    }
}

/// The bits past `len` set.
fn host(len: u8) -> u128 {
    !mask(u128::MAX, len)
}

/// The search's next index in `lo..=hi` (the upper middle, so longer
/// lengths sit nearer the top and fewer routes need markers); the program
/// computes the same.
fn middle(lo: usize, hi: usize) -> usize {
    (lo + hi).div_ceil(2)
}

/// The shorter lengths the search visits on its way to `len` (in `lens`),
/// where a route of length `len` needs markers.
pub fn marker_lengths(lens: &[u8], len: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut lo, mut hi) = (0usize, lens.len());
    while lo < hi {
        let mid = middle(lo, hi - 1);
        match lens[mid].cmp(&len) {
            std::cmp::Ordering::Equal => break,
            std::cmp::Ordering::Less => {
                out.push(lens[mid]);
                lo = mid + 1;
            }
            std::cmp::Ordering::Greater => hi = mid,
        }
    }
    out
}

/// The program's search: `get` reads an entry.
pub fn search(lens: &[u8], addr: u128, mut get: impl FnMut(Key) -> Option<xe_route>) -> xe_route {
    let mut best = xe_route::default();
    let (mut lo, mut hi) = (0usize, lens.len());
    while lo < hi {
        let mid = middle(lo, hi - 1);
        let l = lens[mid];
        match get((l, mask(addr, l))) {
            Some(r) => {
                if r.kind != 0 {
                    best = r;
                }
                lo = mid + 1;
            }
            None => hi = mid,
        }
    }
    best
}

/// A key that steers the search.
#[derive(Debug, Clone, Copy)]
struct Marker {
    /// Routes whose search passes here.
    refs: u32,
    /// The longest route no longer than the marker covering it.
    best: Option<(u8, xe_route)>,
}

/// The entries and what the control side needs to keep them.
pub struct LenSearch<S: EntryStore> {
    store: S,
    grace: GracePeriods,
    /// Routes by length, then masked address.
    routes: BTreeMap<u8, BTreeMap<u128, xe_route>>,
    count: usize,
    /// The lengths searched, ascending.
    lens: Vec<u8>,
    /// Markers by length, then masked address (some are routes as well).
    markers: BTreeMap<u8, BTreeMap<u128, Marker>>,
    marker_count: usize,
    /// The store's refusal of the last reshape tried, until a delete.
    refused: Option<(&'static str, u64)>,
}

impl<S: EntryStore> LenSearch<S> {
    /// Over an empty store searching no length.
    pub fn new(store: S, grace: GracePeriods) -> Self {
        LenSearch {
            store,
            grace,
            routes: BTreeMap::new(),
            count: 0,
            lens: Vec::new(),
            markers: BTreeMap::new(),
            marker_count: 0,
            refused: None,
        }
    }

    pub fn routes(&self) -> usize {
        self.count
    }

    /// Entries in the store (routes and markers, counted once).
    pub fn entries(&self) -> usize {
        self.count + self.marker_count
            - self
                .markers
                .iter()
                .map(|(l, m)| m.keys().filter(|a| self.is_route((*l, **a))).count())
                .sum::<usize>()
    }

    pub fn lengths(&self) -> &[u8] {
        &self.lens
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// The route for `addr`, as the program finds it (kind 0: none).
    pub fn lookup(&self, addr: u128) -> xe_route {
        search(&self.lens, addr, |k| self.value(k))
    }

    /// The route of exactly `addr/len`, if there is one.
    pub fn route(&self, addr: u128, len: u8) -> Option<xe_route> {
        self.routes.get(&len)?.get(&mask(addr, len)).copied()
    }

    /// What the store should hold at `key`.
    fn value(&self, (len, a): Key) -> Option<xe_route> {
        if let Some(r) = self.routes.get(&len).and_then(|m| m.get(&a)) {
            return Some(*r);
        }
        let m = self.markers.get(&len)?.get(&a)?;
        Some(m.best.map(|b| b.1).unwrap_or_default())
    }

    fn is_route(&self, (len, a): Key) -> bool {
        self.routes.get(&len).is_some_and(|m| m.contains_key(&a))
    }

    /// The longest route of length at most `max` covering `addr`.
    fn best(&self, addr: u128, max: u8) -> Option<(u8, xe_route)> {
        self.routes
            .range(..=max)
            .rev()
            .find_map(|(l, m)| m.get(&mask(addr, *l)).map(|r| (*l, *r)))
    }

    /// Every entry the store should hold: for tests and adoption.
    pub fn expected(&self) -> HashMap<Key, xe_route> {
        let mut out = HashMap::new();
        for (l, m) in &self.markers {
            for a in m.keys() {
                out.insert((*l, *a), self.value((*l, *a)).expect("a marker"));
            }
        }
        for (l, m) in &self.routes {
            for (a, r) in m {
                out.insert((*l, *a), *r);
            }
        }
        out
    }

    /// Adds or replaces the route of `addr/len`. On an error nothing
    /// changed, for packets or here.
    pub fn add(&mut self, addr: u128, len: u8, route: &xe_route) -> Result<()> {
        assert!(len <= 128);
        let a = mask(addr, len);
        if let Err(at) = self.lens.binary_search(&len) {
            // A reshape the store had no room for is not tried again (it
            // costs a pass over every route) until something is deleted.
            if let Some((what, max)) = self.refused {
                return Err(Error::TableFull { what, max });
            }
            let mut lens = self.lens.clone();
            lens.insert(at, len);
            if let Err(e) = self.reshape(lens) {
                if let Error::TableFull { what, max } = e {
                    self.refused = Some((what, max));
                }
                return Err(e);
            }
        }
        let new = !self.is_route((len, a));
        let path = if new {
            marker_lengths(&self.lens, len)
        } else {
            Vec::new()
        };
        // Markers first, each holding the answer that stands.
        let fresh: Vec<(Key, xe_route)> = path
            .iter()
            .map(|m| (*m, mask(a, *m)))
            .filter(|k| self.value(*k).is_none())
            .map(|k| (k, self.best(k.1, k.0).map(|b| b.1).unwrap_or_default()))
            .collect();
        self.store.put_new(&fresh)?;
        if let Err(e) = self.store.put((len, a), route) {
            self.undo(&fresh);
            return Err(e);
        }
        for m in &path {
            let best = self.best(a, *m);
            let mk = self
                .markers
                .entry(*m)
                .or_default()
                .entry(mask(a, *m))
                .or_insert(Marker { refs: 0, best });
            if mk.refs == 0 {
                self.marker_count += 1;
            }
            mk.refs += 1;
        }
        if new {
            self.count += 1;
        }
        self.routes.entry(len).or_default().insert(a, *route);
        if let Some(mk) = self.markers.get_mut(&len).and_then(|m| m.get_mut(&a)) {
            mk.best = Some((len, *route));
        }
        // Then the longer markers it now answers for.
        self.hand_over(
            a,
            len,
            |b| b.is_none_or(|(l, _)| l <= len),
            Some((len, *route)),
        )
    }

    /// Points the markers longer than `len` under `a` whose answer `takes`
    /// to `to`.
    fn hand_over(
        &mut self,
        a: u128,
        len: u8,
        takes: impl Fn(Option<(u8, xe_route)>) -> bool,
        to: Option<(u8, xe_route)>,
    ) -> Result<()> {
        let mut writes = Vec::new();
        for (m, keys) in self.markers.range_mut(len.saturating_add(1)..) {
            if *m <= len {
                continue;
            }
            for (k, mk) in keys.range_mut(a..=a | host(len)) {
                if takes(mk.best) {
                    mk.best = to;
                    writes.push((*m, *k));
                }
            }
        }
        let none = xe_route::default();
        for k in writes {
            if !self.is_route(k) {
                self.store.put(k, to.as_ref().map_or(&none, |b| &b.1))?;
            }
        }
        Ok(())
    }

    /// Removes entries written for an add that failed.
    fn undo(&mut self, fresh: &[(Key, xe_route)]) {
        for (k, _) in fresh {
            let _ = self.store.delete(*k);
        }
    }

    /// Deletes the route of `addr/len`, if there is one.
    pub fn delete(&mut self, addr: u128, len: u8) -> Result<()> {
        assert!(len <= 128);
        let a = mask(addr, len);
        if !self.is_route((len, a)) {
            return Ok(());
        }
        self.refused = None;
        let parent = len.checked_sub(1).and_then(|l| self.best(a, l));
        self.hand_over(a, len, |b| b.is_some_and(|(l, _)| l == len), parent)?;
        self.routes.get_mut(&len).expect("a route").remove(&a);
        if self.routes[&len].is_empty() {
            self.routes.remove(&len);
        }
        self.count -= 1;
        match self.markers.get_mut(&len).and_then(|m| m.get_mut(&a)) {
            Some(mk) => {
                mk.best = parent;
                let r = parent.map(|b| b.1).unwrap_or_default();
                self.store.put((len, a), &r)?;
            }
            None => self.store.delete((len, a))?,
        }
        for m in marker_lengths(&self.lens, len) {
            let k = (m, mask(a, m));
            let keys = self.markers.get_mut(&m).expect("a marker length");
            let mk = keys.get_mut(&k.1).expect("the route's marker");
            mk.refs -= 1;
            if mk.refs == 0 {
                keys.remove(&k.1);
                self.marker_count -= 1;
                if !self.is_route(k) {
                    self.store.delete(k)?;
                }
            }
        }
        Ok(())
    }

    /// Searches `lens` from now on: the markers they need first, then the
    /// switch, then (after a grace period) the removal of markers only the
    /// old lengths needed.
    fn reshape(&mut self, lens: Vec<u8>) -> Result<()> {
        let want = self.marker_refs(&lens);
        let fresh: Vec<(Key, xe_route)> = want
            .iter()
            .flat_map(|(m, keys)| keys.keys().map(move |a| (*m, *a)))
            .filter(|k| self.value(*k).is_none())
            .map(|k| (k, self.best(k.1, k.0).map(|b| b.1).unwrap_or_default()))
            .collect();
        self.store.put_new(&fresh)?;
        if let Err(e) = self.store.set_lengths(&lens) {
            self.undo(&fresh);
            return Err(e);
        }
        self.grace.wait(self.grace.cookie());
        let old = std::mem::take(&mut self.markers);
        self.install_markers(want);
        self.lens = lens;
        for (m, keys) in old {
            for a in keys.keys() {
                let k = (m, *a);
                if self.value(k).is_none() {
                    self.store.delete(k)?;
                }
            }
        }
        Ok(())
    }

    /// How many routes need each marker when `lens` are searched.
    fn marker_refs(&self, lens: &[u8]) -> BTreeMap<u8, BTreeMap<u128, u32>> {
        let mut refs: BTreeMap<u8, BTreeMap<u128, u32>> = BTreeMap::new();
        for (l, keys) in &self.routes {
            let path = marker_lengths(lens, *l);
            for a in keys.keys() {
                for m in &path {
                    *refs.entry(*m).or_default().entry(mask(*a, *m)).or_default() += 1;
                }
            }
        }
        refs
    }

    /// Makes `refs` the markers (their answers from the routes).
    fn install_markers(&mut self, refs: BTreeMap<u8, BTreeMap<u128, u32>>) {
        self.markers.clear();
        self.marker_count = 0;
        for (m, keys) in refs {
            let out: BTreeMap<u128, Marker> = keys
                .into_iter()
                .map(|(a, refs)| {
                    (
                        a,
                        Marker {
                            refs,
                            best: self.best(a, m),
                        },
                    )
                })
                .collect();
            self.marker_count += out.len();
            self.markers.insert(m, out);
        }
    }

    /// Takes over a store that may hold anything (a previous run's pins):
    /// `routes` are the record. Writes every entry that differs, switches to
    /// their lengths (and any `searched` already), then removes what is left
    /// of `held` (the keys found in the store). Returns how many entries it
    /// wrote or removed.
    pub fn adopt(
        &mut self,
        routes: &[(u128, u8, xe_route)],
        searched: &[u8],
        held: &HashMap<Key, xe_route>,
    ) -> Result<usize> {
        self.routes.clear();
        self.count = 0;
        for (a, l, r) in routes {
            let fresh = self.routes.entry(*l).or_default().insert(mask(*a, *l), *r);
            if fresh.is_none() {
                self.count += 1;
            }
        }
        let mut lens: Vec<u8> = searched.iter().copied().filter(|l| *l <= 128).collect();
        lens.extend(self.routes.keys());
        lens.sort_unstable();
        lens.dedup();
        self.install_markers(self.marker_refs(&lens));
        let want = self.expected();
        let same = |a: &xe_route, b: &xe_route| bytes_of(a) == bytes_of(b);
        let mut n = 0;
        for (k, r) in &want {
            if !held.get(k).is_some_and(|h| same(h, r)) {
                self.store.put(*k, r)?;
                n += 1;
            }
        }
        if lens.as_slice() != searched {
            self.store.set_lengths(&lens)?;
            self.grace.wait(self.grace.cookie());
        }
        self.lens = lens;
        for k in held.keys() {
            if !want.contains_key(k) {
                self.store.delete(*k)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
