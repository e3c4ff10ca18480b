//! The IPv4 DIR-24-8 route tables (as DPDK's rte_lpm): which entries a prefix add or delete rewrites, in an order a concurrent reader never sees torn; pure over any entry store.
//!
//! The first level has one entry per /24 (indexed by the top 24 address
//! bits); a /24 that holds a prefix longer than /24 points instead to a
//! 256-entry chunk of the second level. Every entry records the length of
//! the prefix that wrote it, so an add overwrites only entries of prefixes no
//! longer than itself, and a delete rewrites exactly the entries it wrote,
//! with the next shorter prefix that covers it.

use ahash::AHashMap as HashMap;

use crate::abi::{
    xe_route, DIR_CHUNK, DIR_CHUNK_MASK, DIR_CHUNK_SIZE, DIR_DEPTH_SHIFT, DIR_GROUP_MASK,
    DIR_KIND_SHIFT, DIR_PIN, ROUTE_PIN,
};
use crate::error::{Error, Result};
use crate::grace::{GracePeriods, Quarantine};

/// First-level entries: one per /24.
pub const TBL24_ENTRIES: usize = 1 << 24;
const CHUNK: usize = DIR_CHUNK_SIZE as usize;

/// Array of 32-bit entries; `set` must be one aligned 4-byte store.
pub trait Cells {
    fn get(&self, i: usize) -> u32;
    fn set(&mut self, i: usize, v: u32);
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Cells for Vec<u32> {
    fn get(&self, i: usize) -> u32 {
        self[i]
    }
    fn set(&mut self, i: usize, v: u32) {
        self[i] = v;
    }
    fn len(&self) -> usize {
        <[u32]>::len(self)
    }
}

/// The entry for `route` written by a prefix of length `len`.
pub fn encode(route: &xe_route, len: u8) -> u32 {
    (route.group & DIR_GROUP_MASK)
        | (u32::from(route.kind) << DIR_KIND_SHIFT)
        | (u32::from(len) << DIR_DEPTH_SHIFT)
        | if route.flags & ROUTE_PIN != 0 {
            DIR_PIN
        } else {
            0
        }
}

/// The route an entry holds (kind 0: none).
pub fn decode(e: u32) -> xe_route {
    xe_route {
        group: e & DIR_GROUP_MASK,
        kind: (e >> DIR_KIND_SHIFT) as u8,
        flags: if e & DIR_PIN != 0 { ROUTE_PIN } else { 0 },
        ..Default::default()
    }
}

fn depth(e: u32) -> u8 {
    ((e >> DIR_DEPTH_SHIFT) & 0x3f) as u8
}

fn is_chunk(e: u32) -> bool {
    e & DIR_CHUNK != 0
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// The tables and what the control side needs to keep them: the routes by
/// prefix (to find the covering prefix on a delete) and the chunk allocator.
pub struct Dir248<C: Cells> {
    tbl24: C,
    tbl8: C,
    /// Entry (depth included) per (masked address, length).
    rules: HashMap<(u32, u8), u32>,
    /// Chunks never handed out start here.
    fresh: u32,
    /// Freed chunks a packet may still read: reused only after a grace
    /// period, so a packet that read the old pointer finishes with the old
    /// contents.
    freed: Quarantine<u32>,
    /// Freed chunks past their grace period.
    free: Vec<u32>,
    grace: GracePeriods,
    chunks_used: u32,
}

impl<C: Cells> Dir248<C> {
    /// Tables over empty (all-zero) stores; freed chunks wait for `grace`.
    pub fn new(tbl24: C, tbl8: C, grace: GracePeriods) -> Self {
        assert_eq!(tbl24.len(), TBL24_ENTRIES, "first level of 2^24 entries");
        assert_eq!(tbl8.len() % CHUNK, 0, "second level in whole chunks");
        Dir248 {
            tbl24,
            tbl8,
            rules: HashMap::new(),
            fresh: 0,
            freed: Quarantine::default(),
            free: Vec::new(),
            grace,
            chunks_used: 0,
        }
    }

    /// Capacity of the second level, in chunks.
    pub fn max_chunks(&self) -> u32 {
        (self.tbl8.len() / CHUNK) as u32
    }

    pub fn chunks_used(&self) -> u32 {
        self.chunks_used
    }

    pub fn routes(&self) -> usize {
        self.rules.len()
    }

    /// The route of exactly `addr/len` (host order), if there is one.
    pub fn route(&self, addr: u32, len: u8) -> Option<xe_route> {
        let addr = addr & mask(len.min(32));
        self.rules.get(&(addr, len)).map(|e| decode(*e))
    }

    /// The route for `addr` (host order), as the program finds it.
    pub fn lookup(&self, addr: u32) -> xe_route {
        decode(self.entry_of(addr))
    }

    fn entry_of(&self, addr: u32) -> u32 {
        let e = self.tbl24.get((addr >> 8) as usize);
        if is_chunk(e) {
            self.tbl8
                .get(((e & DIR_CHUNK_MASK) as usize) * CHUNK + (addr & 0xff) as usize)
        } else {
            e
        }
    }

    /// Fails, before anything is written, if adding this prefix needs a
    /// chunk and none is left.
    pub fn check_room(&self, addr: u32, len: u8) -> Result<()> {
        if len <= 24 || is_chunk(self.tbl24.get((addr >> 8) as usize)) {
            return Ok(());
        }
        if self.fresh < self.max_chunks() || !self.free.is_empty() || !self.freed.is_empty() {
            return Ok(());
        }
        Err(self.full())
    }

    fn full(&self) -> Error {
        Error::TableFull {
            what: "IPv4 DIR-24-8 chunk table (one chunk per /24 holding a prefix longer than /24; XE_MAX_DIR_CHUNKS)",
            max: self.max_chunks().into(),
        }
    }

    fn alloc_chunk(&mut self) -> Result<u32> {
        let c = if self.fresh < self.max_chunks() {
            self.fresh += 1;
            self.fresh - 1
        } else {
            self.free.extend(self.freed.release(&self.grace));
            if self.free.is_empty() {
                // Every chunk is taken or still readable: wait for the oldest.
                self.free.extend(self.freed.release_waiting(&self.grace));
            }
            self.free.pop().ok_or_else(|| self.full())?
        };
        self.chunks_used += 1;
        Ok(c)
    }

    /// Call after the entry that pointed to `c` was replaced.
    fn free_chunk(&mut self, c: u32) {
        self.chunks_used -= 1;
        self.freed.hold(self.grace.cookie(), c);
    }

    /// Adds or replaces the route of `addr/len` (host order).
    pub fn add(&mut self, addr: u32, len: u8, route: &xe_route) -> Result<()> {
        assert!(len <= 32);
        let addr = addr & mask(len);
        self.check_room(addr, len)?;
        let e = encode(route, len);
        self.rules.insert((addr, len), e);
        if len <= 24 {
            let start = (addr >> 8) as usize;
            for i in start..start + (1usize << (24 - len)) {
                let cur = self.tbl24.get(i);
                if is_chunk(cur) {
                    let base = ((cur & DIR_CHUNK_MASK) as usize) * CHUNK;
                    for j in base..base + CHUNK {
                        if depth(self.tbl8.get(j)) <= len {
                            self.tbl8.set(j, e);
                        }
                    }
                } else if depth(cur) <= len {
                    self.tbl24.set(i, e);
                }
            }
            return Ok(());
        }
        let i = (addr >> 8) as usize;
        let mut cur = self.tbl24.get(i);
        if !is_chunk(cur) {
            // Fill the chunk with what the /24 held, then publish it.
            let c = self.alloc_chunk()?;
            let base = c as usize * CHUNK;
            for j in base..base + CHUNK {
                self.tbl8.set(j, cur);
            }
            cur = DIR_CHUNK | c;
            self.tbl24.set(i, cur);
        }
        let base = ((cur & DIR_CHUNK_MASK) as usize) * CHUNK + (addr & 0xff) as usize;
        for j in base..base + (1usize << (32 - len)) {
            if depth(self.tbl8.get(j)) <= len {
                self.tbl8.set(j, e);
            }
        }
        Ok(())
    }

    /// The entry of the longest prefix shorter than `len` that covers `addr`.
    fn covering(&self, addr: u32, len: u8) -> u32 {
        (0..len)
            .rev()
            .find_map(|l| self.rules.get(&(addr & mask(l), l)).copied())
            .unwrap_or(0)
    }

    /// Deletes the route of `addr/len`; false if there was none.
    pub fn delete(&mut self, addr: u32, len: u8) -> bool {
        assert!(len <= 32);
        let addr = addr & mask(len);
        if self.rules.remove(&(addr, len)).is_none() {
            return false;
        }
        let repl = self.covering(addr, len);
        // Inside its range, the entries this prefix wrote are those of its depth.
        let mine = |e: u32| !is_chunk(e) && depth(e) == len;
        if len <= 24 {
            let start = (addr >> 8) as usize;
            for i in start..start + (1usize << (24 - len)) {
                let cur = self.tbl24.get(i);
                if is_chunk(cur) {
                    let base = ((cur & DIR_CHUNK_MASK) as usize) * CHUNK;
                    for j in base..base + CHUNK {
                        if mine(self.tbl8.get(j)) {
                            self.tbl8.set(j, repl);
                        }
                    }
                } else if mine(cur) {
                    self.tbl24.set(i, repl);
                }
            }
            return true;
        }
        let i = (addr >> 8) as usize;
        let cur = self.tbl24.get(i);
        debug_assert!(is_chunk(cur), "a prefix longer than /24 lives in a chunk");
        if !is_chunk(cur) {
            return true;
        }
        let c = cur & DIR_CHUNK_MASK;
        let base = c as usize * CHUNK;
        let off = (addr & 0xff) as usize;
        for j in base + off..base + off + (1usize << (32 - len)) {
            if mine(self.tbl8.get(j)) {
                self.tbl8.set(j, repl);
            }
        }
        // No prefix longer than /24 left: the /24 is one entry again.
        if (base..base + CHUNK).all(|j| depth(self.tbl8.get(j)) <= 24) {
            let first = self.tbl8.get(base);
            self.tbl24.set(i, first);
            self.free_chunk(c);
        }
        true
    }

    /// Takes over tables another process wrote, given the routes they should
    /// hold: marks the chunks they use as taken, then rewrites (safely, as
    /// add does) every /24 whose lookups differ from what the routes say.
    /// Returns how many /24s had to be rewritten.
    pub fn adopt(&mut self, routes: &[(u32, u8, xe_route)]) -> Result<usize> {
        // Chunks in use, and entries pointing past the table (treated as wrong).
        let max = self.max_chunks();
        let mut used = vec![false; max as usize];
        for i in 0..TBL24_ENTRIES {
            let e = self.tbl24.get(i);
            if is_chunk(e) && (e & DIR_CHUNK_MASK) < max {
                used[(e & DIR_CHUNK_MASK) as usize] = true;
            }
        }
        self.fresh = max;
        // The process that wrote the tables may have freed some of the
        // unused chunks a moment ago: they too wait for a grace period.
        self.freed = Quarantine::default();
        self.free.clear();
        let cookie = self.grace.cookie();
        for c in (0..max).filter(|c| !used[*c as usize]) {
            self.freed.hold(cookie, c);
        }
        self.chunks_used = max - self.freed.len() as u32;
        let (want, differ) = self.compare(routes)?;
        self.rules = want.rules.clone();
        for &i in &differ {
            let (have, should) = (self.tbl24.get(i), want.tbl24.get(i));
            let old_chunk =
                (is_chunk(have) && (have & DIR_CHUNK_MASK) < max).then_some(have & DIR_CHUNK_MASK);
            if is_chunk(should) {
                let c = self.alloc_chunk()?;
                let (nb, wb) = (
                    c as usize * CHUNK,
                    ((should & DIR_CHUNK_MASK) as usize) * CHUNK,
                );
                for j in 0..CHUNK {
                    self.tbl8.set(nb + j, want.tbl8.get(wb + j));
                }
                self.tbl24.set(i, DIR_CHUNK | c);
            } else {
                self.tbl24.set(i, should);
            }
            if let Some(c) = old_chunk {
                self.free_chunk(c);
            }
        }
        Ok(differ.len())
    }

    /// The first-level indexes (/24s) whose entries differ from what
    /// `routes` say, comparing chunk contents rather than chunk numbers.
    /// One pass over the first level against the routes' intervals (the
    /// expected tables are never built): a check costs milliseconds.
    pub fn differences(&self, routes: &[(u32, u8, xe_route)]) -> Result<Vec<usize>> {
        let max = self.max_chunks();
        // Routes up to /24 as (first /24, end, length, entry), a covering
        // prefix before what it covers; longer ones by their /24.
        let mut short: Vec<(usize, usize, u8, u32)> = Vec::new();
        let mut long: HashMap<usize, Vec<(u32, u8, u32)>> = HashMap::new();
        for (a, l, r) in routes {
            let a = a & mask(*l);
            if *l <= 24 {
                let start = (a >> 8) as usize;
                short.push((start, start + (1usize << (24 - l)), *l, encode(r, *l)));
            } else {
                long.entry((a >> 8) as usize)
                    .or_default()
                    .push((a, *l, encode(r, *l)));
            }
        }
        short.sort_unstable_by_key(|&(start, _, len, _)| (start, len));
        let mut long_at: Vec<usize> = long.keys().copied().collect();
        long_at.sort_unstable();
        let mut li = 0;
        let mut differ = Vec::new();
        // The prefixes covering the current index, innermost last.
        let mut open: Vec<(usize, u32)> = Vec::new();
        let (mut next, mut i) = (0, 0);
        while i < TBL24_ENTRIES {
            while open.last().is_some_and(|&(end, _)| end <= i) {
                open.pop();
            }
            while next < short.len() && short[next].0 == i {
                open.push((short[next].1, short[next].3));
                next += 1;
            }
            let cover = open.last().map_or(0, |&(_, e)| e);
            let end = short
                .get(next)
                .map_or(TBL24_ENTRIES, |r| r.0)
                .min(open.last().map_or(TBL24_ENTRIES, |&(end, _)| end));
            // Plain entries up to each /24 that longer routes split.
            let mut j = i;
            while j < end {
                let stop = long_at.get(li).copied().filter(|&x| x < end).unwrap_or(end);
                // The cover is never a chunk: equal means a plain entry.
                differ.extend((j..stop).filter(|&k| self.tbl24.get(k) != cover));
                if stop < end {
                    li += 1;
                    let have = self.tbl24.get(stop);
                    let have_chunk = is_chunk(have) && (have & DIR_CHUNK_MASK) < max;
                    // The chunk the longer routes make over the cover.
                    let mut rs = long[&stop].clone();
                    rs.sort_unstable_by_key(|r| r.1);
                    let mut want = [cover; CHUNK];
                    for &(a, l, e) in &rs {
                        let first = (a & 0xff) as usize;
                        want[first..first + (1usize << (32 - l))].fill(e);
                    }
                    let base = ((have & DIR_CHUNK_MASK) as usize) * CHUNK;
                    if !(have_chunk && (0..CHUNK).all(|k| self.tbl8.get(base + k) == want[k])) {
                        differ.push(stop);
                    }
                }
                j = stop + 1;
            }
            i = end;
        }
        Ok(differ)
    }

    /// The tables `routes` make, and the /24s where these differ from them.
    fn compare(&self, routes: &[(u32, u8, xe_route)]) -> Result<(Dir248<Vec<u32>>, Vec<usize>)> {
        let max = self.max_chunks();
        // Built in memory, shortest prefixes first.
        let mut want = Dir248::new(
            vec![0u32; TBL24_ENTRIES],
            vec![0u32; self.tbl8.len()],
            GracePeriods::immediate(),
        );
        let mut sorted: Vec<_> = routes.to_vec();
        sorted.sort_by_key(|r| r.1);
        for (a, l, r) in &sorted {
            want.add(*a, *l, r)?;
        }
        let differ = (0..TBL24_ENTRIES)
            .filter(|&i| {
                let (have, should) = (self.tbl24.get(i), want.tbl24.get(i));
                match (
                    is_chunk(have) && (have & DIR_CHUNK_MASK) < max,
                    is_chunk(should),
                ) {
                    (false, false) => have != should,
                    (true, true) => {
                        let hb = ((have & DIR_CHUNK_MASK) as usize) * CHUNK;
                        let wb = ((should & DIR_CHUNK_MASK) as usize) * CHUNK;
                        (0..CHUNK).any(|j| self.tbl8.get(hb + j) != want.tbl8.get(wb + j))
                    }
                    _ => true,
                }
            })
            .collect();
        Ok((want, differ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{RT_BLACKHOLE, RT_UNICAST};

    fn tables(chunks: usize) -> Dir248<Vec<u32>> {
        Dir248::new(
            vec![0; TBL24_ENTRIES],
            vec![0; chunks * CHUNK],
            GracePeriods::immediate(),
        )
    }

    fn r(group: u32) -> xe_route {
        xe_route {
            group,
            kind: RT_UNICAST,
            ..Default::default()
        }
    }

    fn a(s: &str) -> u32 {
        u32::from(s.parse::<std::net::Ipv4Addr>().expect("addr"))
    }

    #[test]
    fn entry_layout_round_trips() {
        let e = encode(&r(65535), 32);
        assert_eq!(decode(e).group, 65535);
        assert_eq!(decode(e).kind, RT_UNICAST);
        assert_eq!(depth(e), 32);
        assert!(!is_chunk(e));
    }

    #[test]
    fn longest_prefix_wins_and_delete_restores_the_cover() {
        let mut t = tables(4);
        t.add(0, 0, &r(1)).expect("default");
        t.add(a("10.0.0.0"), 8, &r(2)).expect("/8");
        t.add(a("10.1.2.0"), 24, &r(3)).expect("/24");
        t.add(a("10.1.2.128"), 25, &r(4)).expect("/25");
        t.add(a("10.1.2.200"), 32, &r(5)).expect("/32");
        let g = |t: &Dir248<Vec<u32>>, s| t.lookup(a(s)).group;
        assert_eq!(g(&t, "11.0.0.1"), 1);
        assert_eq!(g(&t, "10.9.9.9"), 2);
        assert_eq!(g(&t, "10.1.2.1"), 3);
        assert_eq!(g(&t, "10.1.2.129"), 4);
        assert_eq!(g(&t, "10.1.2.200"), 5);
        assert_eq!(t.chunks_used(), 1);
        // A shorter prefix added later does not override the longer ones.
        t.add(a("10.1.0.0"), 16, &r(6)).expect("/16");
        assert_eq!(g(&t, "10.1.2.200"), 5);
        assert_eq!(g(&t, "10.1.3.1"), 6);
        assert!(t.delete(a("10.1.2.200"), 32));
        assert_eq!(g(&t, "10.1.2.200"), 4);
        assert!(t.delete(a("10.1.2.128"), 25));
        assert_eq!(g(&t, "10.1.2.200"), 3);
        assert_eq!(t.chunks_used(), 0, "the chunk folds back into its /24");
        assert!(t.delete(a("10.1.2.0"), 24));
        assert_eq!(g(&t, "10.1.2.200"), 6);
        assert!(t.delete(a("10.1.0.0"), 16));
        assert_eq!(g(&t, "10.1.2.200"), 2);
        assert!(!t.delete(a("10.1.0.0"), 16));
        assert!(t.delete(0, 0));
        assert_eq!(t.lookup(a("11.0.0.1")).kind, 0);
    }

    #[test]
    fn a_full_chunk_table_is_an_error_naming_the_limit() {
        let mut t = tables(2);
        t.add(a("1.0.0.1"), 32, &r(1)).expect("1");
        t.add(a("1.0.1.1"), 32, &r(1)).expect("2");
        t.add(a("1.0.1.2"), 32, &r(1))
            .expect("same /24, same chunk");
        let e = t.add(a("1.0.2.1"), 32, &r(1)).expect_err("full");
        assert!(e.to_string().contains("chunk"), "{e}");
        assert!(e.to_string().contains('2'), "{e}");
        assert_eq!(t.lookup(a("1.0.2.1")).kind, 0, "nothing written");
        assert_eq!(t.routes(), 3);
        assert!(t.delete(a("1.0.0.1"), 32));
        t.add(a("1.0.2.1"), 32, &r(7))
            .expect("a freed chunk is reused");
        assert_eq!(t.lookup(a("1.0.2.1")).group, 7);
    }

    /// Small deterministic generator (no dependency in the library's tests).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 16) as u32
        }
    }

    fn reference(rules: &HashMap<(u32, u8), xe_route>, addr: u32) -> xe_route {
        (0..=32u8)
            .rev()
            .find_map(|l| rules.get(&(addr & mask(l), l)).copied())
            .unwrap_or_default()
    }

    #[test]
    fn random_adds_and_deletes_match_a_reference_lpm() {
        let mut t = tables(1024);
        let mut rules: HashMap<(u32, u8), xe_route> = HashMap::new();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // Addresses in two /16s so prefixes overlap a lot.
        let pick = |rng: &mut Rng| {
            let hi = if rng.next().is_multiple_of(2) {
                0x0a01_0000
            } else {
                0xc0a8_0000
            };
            hi | (rng.next() & 0xffff)
        };
        let lens = [8u8, 12, 16, 20, 23, 24, 25, 26, 28, 30, 31, 32];
        for step in 0..4000 {
            // A default route rewrites 2^24 entries: now and then.
            let len = if rng.next().is_multiple_of(200) {
                0
            } else {
                lens[rng.next() as usize % lens.len()]
            };
            let addr = pick(&mut rng) & mask(len);
            if rng.next().is_multiple_of(3) && !rules.is_empty() {
                let keys: Vec<_> = rules.keys().copied().collect();
                let (ka, kl) = keys[rng.next() as usize % keys.len()];
                assert!(t.delete(ka, kl));
                rules.remove(&(ka, kl));
            } else {
                let route = xe_route {
                    group: rng.next() % 65536,
                    kind: if rng.next().is_multiple_of(5) {
                        RT_BLACKHOLE
                    } else {
                        RT_UNICAST
                    },
                    ..Default::default()
                };
                t.add(addr, len, &route).expect("add");
                rules.insert((addr, len), route);
            }
            for _ in 0..20 {
                let probe = pick(&mut rng);
                let (got, want) = (t.lookup(probe), reference(&rules, probe));
                assert_eq!(
                    (got.kind, if got.kind == 0 { 0 } else { got.group }),
                    (want.kind, if want.kind == 0 { 0 } else { want.group }),
                    "step {step}: {probe:#x}"
                );
            }
        }
        // Deleting everything leaves empty tables and no chunk in use.
        let keys: Vec<_> = rules.keys().copied().collect();
        for (ka, kl) in keys {
            assert!(t.delete(ka, kl));
        }
        assert_eq!(t.chunks_used(), 0);
        assert!((0..TBL24_ENTRIES).all(|i| t.tbl24.get(i) == 0));
    }

    /// The sweep that `differences` makes finds exactly the /24s that a
    /// comparison with freshly built tables finds, over random routes,
    /// random damage and random routes the tables never got.
    #[test]
    fn differences_agree_with_tables_built_afresh() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for round in 0..6 {
            let mut t = tables(64);
            let mut routes: HashMap<(u32, u8), xe_route> = HashMap::new();
            for _ in 0..60 {
                let len = [0u8, 8, 16, 22, 24, 25, 28, 32][rng.next() as usize % 8];
                let addr = (0x0a00_0000 | (rng.next() & 0x00ff_ffff)) & mask(len);
                if len == 0 && round % 2 == 0 {
                    continue;
                }
                let route = r(1 + rng.next() % 1000);
                if t.add(addr, len, &route).is_ok() {
                    routes.insert((addr, len), route);
                }
            }
            let mut list: Vec<(u32, u8, xe_route)> =
                routes.iter().map(|(&(a, l), r)| (a, l, *r)).collect();
            assert!(t.differences(&list).expect("sweep").is_empty());
            // Damage: first-level entries, chunk entries, a missed route.
            for _ in 0..5 {
                let i = 0x0a_0000 + (rng.next() as usize % 0x1_0000);
                t.tbl24.set(i, rng.next() & !DIR_CHUNK);
            }
            for _ in 0..3 {
                let j = rng.next() as usize % t.tbl8.len();
                t.tbl8.set(j, rng.next() & !DIR_CHUNK);
            }
            list.push((0x0b01_0200, 23, r(7)));
            list.push((0x0a02_0305, 32, r(8)));
            let mut sweep = t.differences(&list).expect("sweep");
            let mut built = t.compare(&list).expect("tables").1;
            sweep.sort_unstable();
            built.sort_unstable();
            assert_eq!(sweep, built, "round {round}");
            assert!(!sweep.is_empty());
        }
    }

    #[test]
    fn adopting_repairs_what_differs_and_keeps_what_agrees() {
        let routes = vec![
            (a("10.0.0.0"), 8, r(1)),
            (a("10.1.2.3"), 32, r(2)),
            (a("10.1.5.0"), 30, r(3)),
        ];
        let mut t = tables(8);
        for (ad, l, rt) in &routes {
            t.add(*ad, *l, rt).expect("add");
        }
        // Same tables, another process: nothing to repair, chunks kept.
        let (tbl24, tbl8) = (t.tbl24.clone(), t.tbl8.clone());
        let mut again = Dir248::new(tbl24, tbl8, GracePeriods::immediate());
        assert!(again.differences(&routes).expect("compare").is_empty());
        assert_eq!(again.adopt(&routes).expect("adopt"), 0);
        assert_eq!(again.chunks_used(), 2);
        assert_eq!(again.lookup(a("10.1.2.3")).group, 2);
        // A route the tables never got, and one they should not hold.
        let mut more = routes.clone();
        more.push((a("10.2.0.0"), 16, r(4)));
        more.retain(|x| x.2.group != 3);
        assert_eq!(again.differences(&more).expect("compare").len(), 256 + 1);
        assert_eq!(again.adopt(&more).expect("adopt"), 256 + 1);
        assert!(again.differences(&more).expect("compare").is_empty());
        assert_eq!(again.lookup(a("10.2.9.9")).group, 4);
        assert_eq!(again.lookup(a("10.1.5.1")).group, 1);
        assert_eq!(again.chunks_used(), 1);
        assert!(again.delete(a("10.1.2.3"), 32));
        assert_eq!(again.lookup(a("10.1.2.3")).group, 1);
    }
}
