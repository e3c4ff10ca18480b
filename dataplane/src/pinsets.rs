//! A flow table's sets (`xe_flows4`, `xe_flows6`: mmapable arrays of `PIN_WAYS`-way sets) from userspace: where a flow's entry sits (the program's `xe_pin_set_of`), ways read whole and (re)written by the seq protocol of `struct xe_pin_way4`.

use std::mem::{offset_of, size_of};
use std::os::fd::AsFd;
use std::sync::atomic::{fence, Ordering};

use crate::abi::{
    bytes_of, read_from, xe_flow, xe_flow4, xe_pin, xe_pin_way4, xe_pin_way6, PIN_WAYS,
};
use libbpf_rs::{MapCore, MapFlags};

use crate::error::Result;
use crate::maps::map_err;
use crate::mmap::MmapCells;

/// The multiplier of the set index (the program's `XE_PIN_MUL`).
const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

/// The set of a key of 32-bit words `w` in a table of 2^`bits` sets keyed
/// by `seed`: the program's `xe_pin_set_of`, two words a step (an odd last
/// word with a zero).
pub fn set_of(w: &[u32], seed: u64, bits: u32) -> u32 {
    let mut h = seed;
    for pair in w.chunks(2) {
        let lo = pair.get(1).copied().map_or(0, u64::from);
        h = (h ^ (u64::from(pair[0]) << 32 | lo)).wrapping_mul(MUL);
    }
    h ^= h >> 29;
    (h.wrapping_mul(MUL) >> (64 - bits)) as u32
}

/// The sets of a table sized for `flows` flows (rounded up to a power of
/// two): twice as many ways as flows, so that a full table's sets are
/// half taken on average and few flows find all ways of theirs taken.
pub fn sets_for(flows: u32) -> u32 {
    (u64::from(flows.next_power_of_two()) * 2 / u64::from(PIN_WAYS)) as u32
}

/// The flows a table of `sets` sets is sized for (`sets_for`'s inverse).
pub fn flows_of(sets: u32) -> u32 {
    (u64::from(sets) * u64::from(PIN_WAYS) / 2) as u32
}

/// The flows a table asked for `flows` is sized for: `flows` rounded up
/// to a power of two.
pub fn rounded_flows(flows: u32) -> u32 {
    flows_of(sets_for(flows))
}

/// log2 of a set count (a power of two): the program's `pin_set_bits`.
pub fn set_bits(sets: u32) -> u32 {
    sets.trailing_zeros()
}

/// A new table's set-index key, from the kernel's random pool.
pub fn new_seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: writes at most 8 bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 8 {
        // No random pool (never on a running kernel): still a key.
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(MUL, |d| d.as_nanos() as u64 ^ MUL);
    }
    u64::from_ne_bytes(b)
}

/// The set-index key kept in an `xe_pin_seed` map.
pub(crate) fn read_seed(map: &dyn MapCore) -> Result<u64> {
    let v = map
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
        .map_err(map_err("xe_pin_seed", "lookup"))?;
    Ok(v.and_then(|b| read_from(&b)).unwrap_or(0))
}

/// Keeps `seed` in an `xe_pin_seed` map.
pub(crate) fn write_seed(map: &dyn MapCore, seed: u64) -> Result<()> {
    map.update(&0u32.to_ne_bytes(), &seed.to_ne_bytes(), MapFlags::ANY)
        .map_err(map_err("xe_pin_seed", "update"))
}

/// A family's way, in 32-bit words: its size, where the key and the entry
/// start, and the key's words.
#[derive(Clone, Copy)]
struct Layout {
    way: usize,
    key: usize,
    key_words: usize,
    pin: usize,
}

const V4: Layout = Layout {
    way: size_of::<xe_pin_way4>() / 4,
    key: offset_of!(xe_pin_way4, key) / 4,
    key_words: size_of::<xe_flow4>() / 4,
    pin: offset_of!(xe_pin_way4, pin) / 4,
};
const V6: Layout = Layout {
    way: size_of::<xe_pin_way6>() / 4,
    key: offset_of!(xe_pin_way6, key) / 4,
    key_words: size_of::<xe_flow>() / 4,
    pin: offset_of!(xe_pin_way6, pin) / 4,
};
// The entry's next-hop word is read and written as one 8-byte unit.
const _: () = assert!(V4.pin.is_multiple_of(2) && V4.way.is_multiple_of(2));
const _: () = assert!(V6.pin.is_multiple_of(2) && V6.way.is_multiple_of(2));
const _: () = assert!(V4.key_words == 4 && V6.key_words == 11);

/// A key's words (the first `key_words` of them).
type Key = [u32; 11];

/// What a way holds, read whole.
enum Way {
    /// Being rewritten (odd seq) throughout the reads.
    Busy,
    Free(u32),
    Held(u32, Key, xe_pin),
}

/// One family's flow table, mapped into this process.
pub struct FlowSets {
    cells: MmapCells,
    layout: Layout,
    v6: bool,
    sets: u32,
    seed: u64,
}

impl FlowSets {
    /// Maps `map` (`xe_flows6` when `v6`, else `xe_flows4`) of `sets`
    /// sets, keyed by `seed`.
    pub(crate) fn map(map: &impl AsFd, v6: bool, sets: u32, seed: u64) -> Result<Self> {
        let (layout, name) = if v6 {
            (V6, "xe_flows6")
        } else {
            (V4, "xe_flows4")
        };
        let words = sets as usize * PIN_WAYS as usize * layout.way;
        Ok(FlowSets {
            cells: MmapCells::map(map, name, words, 4)?,
            layout,
            v6,
            sets,
            seed,
        })
    }

    /// Flows the table is sized for.
    pub fn flows(&self) -> u32 {
        flows_of(self.sets)
    }

    /// The key words of flow `k` in this table.
    fn key(&self, k: &xe_flow) -> Key {
        let mut w = [0u32; 11];
        let bytes = if self.v6 {
            bytes_of(k).to_vec()
        } else {
            let k4 = xe_flow4 {
                src: k.src[0],
                dst: k.dst[0],
                sport: k.sport,
                dport: k.dport,
                proto: k.proto,
                pad: [0; 3],
            };
            bytes_of(&k4).to_vec()
        };
        for (w, c) in w.iter_mut().zip(bytes.chunks_exact(4)) {
            *w = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
        }
        w
    }

    /// The flow a key stands for.
    fn flow(&self, w: &Key) -> Option<xe_flow> {
        let bytes: Vec<u8> = w[..self.layout.key_words]
            .iter()
            .flat_map(|x| x.to_ne_bytes())
            .collect();
        if self.v6 {
            return read_from(&bytes);
        }
        let k: xe_flow4 = read_from(&bytes)?;
        Some(xe_flow {
            src: [k.src, 0, 0, 0],
            dst: [k.dst, 0, 0, 0],
            sport: k.sport,
            dport: k.dport,
            proto: k.proto,
            ..Default::default()
        })
    }

    fn base(&self, set: u32, way: u32) -> usize {
        (set as usize * PIN_WAYS as usize + way as usize) * self.layout.way
    }

    /// Reads the way at `base` whole: retried while a writer has it.
    fn read(&self, base: usize) -> Way {
        let c = |i: usize| self.cells.cell(base + i);
        let l = self.layout;
        for _ in 0..64 {
            let seq = c(0).load(Ordering::Acquire);
            if seq & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let used = c(1).load(Ordering::Relaxed);
            let mut key = [0u32; 11];
            for (i, k) in key[..l.key_words].iter_mut().enumerate() {
                *k = c(l.key + i).load(Ordering::Relaxed);
            }
            let nh = self.cells.cell64(base + l.pin + 2).load(Ordering::Relaxed);
            let pin = xe_pin {
                path: c(l.pin).load(Ordering::Relaxed),
                seen: c(l.pin + 1).load(Ordering::Relaxed),
                nexthop: nh as u32,
                gen: (nh >> 32) as u32,
                flags: c(l.pin + 4).load(Ordering::Relaxed),
                pad: 0,
            };
            fence(Ordering::Acquire);
            if c(0).load(Ordering::Relaxed) == seq {
                return if used == 1 {
                    Way::Held(seq, key, pin)
                } else {
                    Way::Free(seq)
                };
            }
        }
        Way::Busy
    }

    /// Takes the way at `base` from even `seq` to odd, as a writer does;
    /// false if it is odd or not `seq` any more.
    fn take(&self, base: usize, seq: u32) -> bool {
        seq & 1 == 0
            && self
                .cells
                .cell(base)
                .compare_exchange(seq, seq + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Rewrites the way at `base` if it still has `seq`: key and entry,
    /// or free (None). False if another writer has it or had it since.
    fn write(&self, base: usize, seq: u32, to: Option<(&Key, &xe_pin)>) -> bool {
        let c = |i: usize| self.cells.cell(base + i);
        let l = self.layout;
        if !self.take(base, seq) {
            return false;
        }
        fence(Ordering::Release);
        if let Some((key, pin)) = to {
            for (i, k) in key[..l.key_words].iter().enumerate() {
                c(l.key + i).store(*k, Ordering::Relaxed);
            }
            c(l.pin).store(pin.path, Ordering::Relaxed);
            c(l.pin + 1).store(pin.seen, Ordering::Relaxed);
            self.cells.cell64(base + l.pin + 2).store(
                u64::from(pin.gen) << 32 | u64::from(pin.nexthop),
                Ordering::Relaxed,
            );
            c(l.pin + 4).store(pin.flags, Ordering::Relaxed);
            c(l.pin + 5).store(0, Ordering::Relaxed);
        }
        c(1).store(u32::from(to.is_some()), Ordering::Relaxed);
        c(0).fetch_add(1, Ordering::Release);
        true
    }

    /// The set of flow `k` and its key words.
    fn place(&self, k: &xe_flow) -> (u32, Key) {
        let key = self.key(k);
        let set = set_of(
            &key[..self.layout.key_words],
            self.seed,
            set_bits(self.sets),
        );
        (set, key)
    }

    /// The set flow key `k` (the hashed fields, as `pin_key` gives them)
    /// sits in.
    pub fn set_of(&self, k: &xe_flow) -> u32 {
        self.place(k).0
    }

    /// The entry of flow `k`, if its set holds one.
    pub fn get(&self, k: &xe_flow) -> Option<xe_pin> {
        let (set, key) = self.place(k);
        (0..PIN_WAYS).find_map(|w| match self.read(self.base(set, w)) {
            Way::Held(_, held, pin) if held == key => Some(pin),
            _ => None,
        })
    }

    /// Writes flow `k`'s entry as the program does: over its own entry,
    /// else into a free way, else over the way seen longest ago; not while
    /// another writer has a way of the set. False if the set stayed busy.
    pub fn put(&self, k: &xe_flow, pin: &xe_pin) -> bool {
        let (set, key) = self.place(k);
        for _ in 0..64 {
            let ways: Vec<(usize, Way)> = (0..PIN_WAYS)
                .map(|w| (self.base(set, w), self.read(self.base(set, w))))
                .collect();
            if ways.iter().any(|(_, w)| matches!(w, Way::Busy)) {
                std::hint::spin_loop();
                continue;
            }
            let own = ways.iter().find_map(|(b, w)| match w {
                Way::Held(seq, held, _) if *held == key => Some((*b, *seq)),
                _ => None,
            });
            let free = || {
                ways.iter().find_map(|(b, w)| match w {
                    Way::Free(seq) => Some((*b, *seq)),
                    _ => None,
                })
            };
            let oldest = || {
                ways.iter()
                    .filter_map(|(b, w)| match w {
                        Way::Held(seq, _, p) => Some((pin.seen.wrapping_sub(p.seen), *b, *seq)),
                        _ => None,
                    })
                    .max_by_key(|(age, _, _)| *age)
                    .map(|(_, b, seq)| (b, seq))
            };
            if let Some((b, seq)) = own.or_else(free).or_else(oldest) {
                if self.write(b, seq, Some((&key, pin))) {
                    return true;
                }
            }
            std::hint::spin_loop();
        }
        false
    }

    /// Takes flow `k`'s way as a writer does (seq odd) and keeps it until
    /// [`FlowSets::release`]: what readers and writers do meanwhile, for
    /// tests. Returns the way, None if no way holds `k`.
    #[doc(hidden)]
    pub fn hold(&self, k: &xe_flow) -> Option<usize> {
        let (set, key) = self.place(k);
        (0..PIN_WAYS).find_map(|w| {
            let b = self.base(set, w);
            match self.read(b) {
                Way::Held(seq, held, _) if held == key => self.take(b, seq).then_some(b),
                _ => None,
            }
        })
    }

    /// Gives back a way [`FlowSets::hold`] took, unchanged.
    #[doc(hidden)]
    pub fn release(&self, way: usize) {
        self.cells.cell(way).fetch_add(1, Ordering::Release);
    }

    /// Every entry held, by flow.
    pub fn entries(&self) -> Vec<(xe_flow, xe_pin)> {
        let mut out = Vec::new();
        for set in 0..self.sets {
            for w in 0..PIN_WAYS {
                if let Way::Held(_, key, pin) = self.read(self.base(set, w)) {
                    out.extend(self.flow(&key).map(|f| (f, pin)));
                }
            }
        }
        out
    }

    /// Entries held.
    pub fn count(&self) -> u64 {
        let mut n = 0;
        for set in 0..self.sets {
            for w in 0..PIN_WAYS {
                n += u64::from(matches!(self.read(self.base(set, w)), Way::Held(..)));
            }
        }
        n
    }

    /// Frees the ways whose flow `matches` picks; returns how many.
    pub fn remove(&self, matches: &dyn Fn(&xe_flow) -> bool) -> u64 {
        let mut n = 0;
        for set in 0..self.sets {
            for w in 0..PIN_WAYS {
                let b = self.base(set, w);
                if let Way::Held(seq, key, _) = self.read(b) {
                    if self.flow(&key).is_some_and(|f| matches(&f)) && self.write(b, seq, None) {
                        n += 1;
                    }
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip() {
        for flows in [1024u32, 1 << 20, 1 << 24] {
            let sets = sets_for(flows);
            assert_eq!(flows_of(sets), flows);
            assert_eq!(1u64 << set_bits(sets), u64::from(sets));
            assert_eq!(u64::from(sets) * u64::from(PIN_WAYS), 2 * u64::from(flows));
        }
        // A size that is not a power of two is rounded up.
        assert_eq!(rounded_flows(3000), 4096);
    }

    #[test]
    fn set_index_spreads_and_follows_the_seed() {
        let bits = 10;
        let mut per_set = vec![0u32; 1 << bits];
        for port in 0..32768u32 {
            let key = [0x0a00_0001, 0xc633_6401, port << 16 | 80, 6];
            per_set[set_of(&key, 7, bits) as usize] += 1;
        }
        // 32 keys a set on average: a fair spread stays far from 0 or 100.
        let (lo, hi) = (per_set.iter().min().unwrap(), per_set.iter().max().unwrap());
        assert!(*lo >= 10 && *hi <= 60, "spread {lo}..{hi}");
        let key = [1, 2, 3, 4];
        assert_ne!(set_of(&key, 1, 20), set_of(&key, 2, 20));
        // An odd word count takes the last word with a zero after it.
        assert_eq!(set_of(&[1, 2, 3], 5, 16), set_of(&[1, 2, 3, 0], 5, 16));
    }
}
