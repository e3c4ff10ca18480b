//! The IPv6 length search's maps as its entry store: entries in the xe_v6_routes hash by bpf() calls (new ones in batches), the searched lengths in xe_v6_lens through mmap.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::atomic::Ordering;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::abi::{bytes_of, read_from, xe_route, xe_v6_key, V6_LENS};
use crate::error::{Error, Result};
use crate::grace::GracePeriods;
use crate::lensearch::{EntryStore, Key, LenSearch};
use crate::maps::map_err;
use crate::mmap::MmapCells;
use crate::program::Dataplane;

/// Cells of struct xe_v6_lens: active, count[2], pad, then two sets of
/// V6_LENS bytes.
const LENS_CELLS: usize = 4 + 2 * V6_LENS / 4;
/// Entries written per batch update.
const BATCH: usize = 4096;

/// The hash of entries and the mapped lengths.
pub(crate) struct V6Maps {
    routes: MapHandle,
    lens: MmapCells,
}

/// The map key of an entry.
pub(crate) fn key_of((len, a): Key) -> xe_v6_key {
    let b = a.to_be_bytes();
    let mut addr = [0u32; 4];
    for (w, c) in addr.iter_mut().zip(b.chunks_exact(4)) {
        *w = u32::from_ne_bytes(c.try_into().expect("4 bytes"));
    }
    xe_v6_key {
        len: len.into(),
        addr,
    }
}

fn entry_of(k: &xe_v6_key) -> Option<Key> {
    let mut b = [0u8; 16];
    for (c, w) in b.chunks_exact_mut(4).zip(k.addr) {
        c.copy_from_slice(&w.to_ne_bytes());
    }
    let len = u8::try_from(k.len).ok().filter(|l| *l <= 128)?;
    Some((len, u128::from_be_bytes(b)))
}

impl Dataplane {
    pub(crate) fn v6_maps(&self) -> Result<V6Maps> {
        let m = &self.skel.maps;
        Ok(V6Maps {
            routes: MapHandle::try_from(&m.xe_v6_routes)
                .map_err(map_err("xe_v6_routes", "open"))?,
            lens: MmapCells::map(&m.xe_v6_lens, "xe_v6_lens", LENS_CELLS, 4)?,
        })
    }
}

impl V6Maps {
    /// The lengths the program searches now.
    pub(crate) fn searched(&self) -> Vec<u8> {
        let set = (self.lens.cell(0).load(Ordering::Acquire) & 1) as usize;
        let n = (self.lens.cell(1 + set).load(Ordering::Relaxed) as usize).min(V6_LENS);
        let base = 4 + set * V6_LENS / 4;
        (0..n)
            .map(|i| {
                let c = self.lens.cell(base + i / 4).load(Ordering::Relaxed);
                c.to_ne_bytes()[i % 4]
            })
            .collect()
    }

    /// The entry at `key`, if any.
    pub(crate) fn get(&self, key: Key) -> Option<xe_route> {
        self.routes
            .lookup(bytes_of(&key_of(key)), MapFlags::ANY)
            .ok()
            .flatten()
            .and_then(|b| read_from(&b))
    }

    /// Every entry held.
    pub(crate) fn held(&self) -> Result<HashMap<Key, xe_route>> {
        let mut out = HashMap::new();
        for k in self.routes.keys() {
            let Some(entry) = read_from::<xe_v6_key>(&k).and_then(|k| entry_of(&k)) else {
                continue;
            };
            if let Some(r) = self.get(entry) {
                out.insert(entry, r);
            }
        }
        Ok(out)
    }
}

impl EntryStore for V6Maps {
    fn put(&mut self, key: Key, route: &xe_route) -> Result<()> {
        self.routes
            .update(bytes_of(&key_of(key)), bytes_of(route), MapFlags::ANY)
            .map_err(|e| self.full_or(e, "update"))
    }

    fn put_new(&mut self, entries: &[(Key, xe_route)]) -> Result<()> {
        for chunk in entries.chunks(BATCH) {
            let mut keys = Vec::with_capacity(chunk.len() * size_of::<xe_v6_key>());
            let mut values = Vec::with_capacity(chunk.len() * size_of::<xe_route>());
            for (k, r) in chunk {
                keys.extend_from_slice(bytes_of(&key_of(*k)));
                values.extend_from_slice(bytes_of(r));
            }
            self.routes
                .update_batch(
                    &keys,
                    &values,
                    chunk.len() as u32,
                    MapFlags::ANY,
                    MapFlags::ANY,
                )
                .map_err(|e| self.full_or(e, "update_batch"))?;
        }
        Ok(())
    }

    fn delete(&mut self, key: Key) -> Result<()> {
        match self.routes.delete(bytes_of(&key_of(key))) {
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
            r => r.map_err(map_err("xe_v6_routes", "delete")),
        }
    }

    /// The unused set, then its count, then the switch (Release: the set
    /// is visible before the program can choose it).
    fn set_lengths(&mut self, lens: &[u8]) -> Result<()> {
        assert!(lens.len() <= V6_LENS);
        let set = 1 - (self.lens.cell(0).load(Ordering::Acquire) & 1) as usize;
        let base = 4 + set * V6_LENS / 4;
        let mut bytes = [0u8; V6_LENS];
        bytes[..lens.len()].copy_from_slice(lens);
        for (i, c) in bytes.chunks_exact(4).enumerate() {
            let v = u32::from_ne_bytes(c.try_into().expect("4 bytes"));
            self.lens.cell(base + i).store(v, Ordering::Relaxed);
        }
        self.lens
            .cell(1 + set)
            .store(lens.len() as u32, Ordering::Relaxed);
        self.lens.cell(0).store(set as u32, Ordering::Release);
        Ok(())
    }
}

impl V6Maps {
    /// A full hash names itself and what to raise; other errors as they are.
    fn full_or(&self, e: libbpf_rs::Error, op: &'static str) -> Error {
        if e.kind() == libbpf_rs::ErrorKind::TooBig {
            return Error::TableFull {
                what: "IPv6 route entries (routes and their search markers, xe_v6_routes: twice max_routes_v6)",
                max: self.routes.max_entries().into(),
            };
        }
        map_err("xe_v6_routes", op)(e)
    }
}

/// Where the length search disagrees with the routes of the record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V6Differences {
    /// Entries (prefix, length) missing, wrong or left over.
    pub entries: Vec<(Ipv6Addr, u8)>,
    /// Lengths of routes the program does not search.
    pub lengths: Vec<u8>,
}

impl V6Differences {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.lengths.is_empty()
    }
}

/// A store that writes nothing and lists what it was asked to write.
#[derive(Default)]
struct Recorder(Vec<Key>);

impl EntryStore for Recorder {
    fn put(&mut self, key: Key, _: &xe_route) -> Result<()> {
        self.0.push(key);
        Ok(())
    }
    fn delete(&mut self, key: Key) -> Result<()> {
        self.0.push(key);
        Ok(())
    }
    fn set_lengths(&mut self, _: &[u8]) -> Result<()> {
        Ok(())
    }
}

/// What adopting `maps` for `routes` would rewrite, without writing.
pub(crate) fn differences(maps: &V6Maps, routes: &[(u128, u8, xe_route)]) -> Result<V6Differences> {
    let searched = maps.searched();
    let mut plan = LenSearch::new(Recorder::default(), GracePeriods::immediate());
    plan.adopt(routes, &searched, &maps.held()?)?;
    let mut entries: Vec<(Ipv6Addr, u8)> = plan
        .store()
        .0
        .iter()
        .map(|(l, a)| (Ipv6Addr::from(*a), *l))
        .collect();
    entries.sort();
    let mut lengths: Vec<u8> = routes
        .iter()
        .map(|r| r.1)
        .filter(|l| !searched.contains(l))
        .collect();
    lengths.sort_unstable();
    lengths.dedup();
    Ok(V6Differences { entries, lengths })
}
