//! Batched route writes to the live maps: the IPv4 record (LPM trie) written with one system call per batch, the DIR-24-8 tables beside it, each route's own result kept.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use libbpf_rs::libbpf_sys;
use libbpf_rs::MapCore;

use crate::abi::{xe_lpm_v4, xe_route};
use crate::error::{Error, Result};
use crate::maps::{self, lpm_v4};
use crate::program::Dataplane;
use crate::tables::{check_prefix, check_route_v4, TableWriter};

/// Elements per batch system call: large enough that the call's own cost
/// vanishes (1M routes: ~1.3 us each written one by one, ~0.7 us in
/// batches), small enough that the kernel's copy stays in the cache.
pub const BATCH: usize = 4096;

/// How many elements of a batch call the kernel took, and whether an error
/// stopped it (at element `done`).
struct Outcome {
    done: usize,
    stopped: bool,
}

/// `BPF_MAP_UPDATE_BATCH` (or, without values, `BPF_MAP_DELETE_BATCH`) of
/// `keys` on `map`. The kernel applies the elements in order and stops at
/// the first that fails, reporting how many it applied.
fn batch_call<K: Copy, V: Copy>(map: &dyn MapCore, keys: &[K], values: Option<&[V]>) -> Outcome {
    debug_assert_eq!(map.key_size() as usize, std::mem::size_of::<K>());
    let opts = libbpf_sys::bpf_map_batch_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
        ..Default::default()
    };
    let mut count = keys.len() as u32;
    let fd = map.as_fd().as_raw_fd();
    // SAFETY: `keys` (and `values`, of the same length) are `count` plain
    // elements of the map's key (and value) size; the kernel reads them
    // during the call and writes only `count`.
    let ret = unsafe {
        match values {
            Some(v) => {
                debug_assert_eq!(v.len(), keys.len());
                libbpf_sys::bpf_map_update_batch(
                    fd,
                    keys.as_ptr().cast(),
                    v.as_ptr().cast(),
                    &mut count,
                    &opts,
                )
            }
            None => libbpf_sys::bpf_map_delete_batch(fd, keys.as_ptr().cast(), &mut count, &opts),
        }
    };
    if ret == 0 {
        return Outcome {
            done: keys.len(),
            stopped: false,
        };
    }
    Outcome {
        // The kernel reports what it applied; never more than was asked.
        done: (count as usize).min(keys.len().saturating_sub(1)),
        stopped: true,
    }
}

/// Runs `call` over `keys` in batches of [`BATCH`]; where a batch stops at
/// an element, that element is written alone with `single` (which names
/// its error, and which a kernel without batch calls for the map answers)
/// and the batches go on after it. The errors, by key index.
fn in_batches<K: Copy>(
    keys: &[K],
    mut call: impl FnMut(std::ops::Range<usize>) -> Outcome,
    mut single: impl FnMut(usize) -> Result<()>,
) -> Vec<(usize, Error)> {
    let mut failed = Vec::new();
    let mut at = 0;
    while at < keys.len() {
        let end = (at + BATCH).min(keys.len());
        let out = call(at..end);
        at += out.done;
        if out.stopped {
            if let Err(e) = single(at) {
                failed.push((at, e));
            }
            at += 1;
        }
    }
    failed
}

impl Dataplane {
    /// Writes IPv4 routes as [`TableWriter::set_route_v4`] does, one result
    /// per route, with the record written in batches. The DIR-24-8 tables
    /// first (each route checked for room as it is added), then the record;
    /// a route the record refuses is taken back out of the tables (a new one
    /// deleted, a replaced one given its old entry). Packets never read the
    /// record, and a restart rewrites the tables from it, so a stop between
    /// the two leaves nothing wrong behind.
    pub(crate) fn write_routes_v4(
        &mut self,
        routes: &[(Ipv4Addr, u8, xe_route)],
    ) -> Vec<Result<()>> {
        if self.dir().is_err() {
            // Each route then reports the tables' own error.
            return routes
                .iter()
                .map(|(a, l, r)| self.set_route_v4(*a, *l, r))
                .collect();
        }
        let mut results: Vec<Result<()>> = Vec::with_capacity(routes.len());
        // Written to the tables: the route's index and what it replaced.
        let mut taken: Vec<(usize, Option<xe_route>)> = Vec::with_capacity(routes.len());
        let mut keys: Vec<xe_lpm_v4> = Vec::with_capacity(routes.len());
        let mut values: Vec<xe_route> = Vec::with_capacity(routes.len());
        for (i, (a, l, r)) in routes.iter().enumerate() {
            let checked = check_prefix("IPv4", *l, 32).and_then(|()| check_route_v4(r));
            let written = checked.and_then(|()| {
                let dir = self.dir()?;
                let old = dir.route(u32::from(*a), *l);
                dir.add(u32::from(*a), *l, r).map(|()| old)
            });
            match written {
                Ok(old) => {
                    taken.push((i, old));
                    keys.push(lpm_v4(*a, *l));
                    values.push(*r);
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let map = &self.skel.maps.xe_routes_v4;
        let failed = in_batches(
            &keys,
            |r| batch_call(map, &keys[r.clone()], Some(&values[r])),
            |k| maps::update(map, "xe_routes_v4", &keys[k], &values[k]),
        );
        for (k, e) in failed {
            let (i, old) = taken[k];
            let (a, l, _) = routes[i];
            if let Ok(dir) = self.dir() {
                match old {
                    Some(o) => {
                        let _ = dir.add(u32::from(a), l, &o);
                    }
                    None => {
                        dir.delete(u32::from(a), l);
                    }
                }
            }
            results[i] = Err(e);
        }
        results
    }

    /// Deletes IPv4 routes as [`TableWriter::delete_route_v4`] does, one
    /// result per route: the record in batches first, then the tables.
    pub(crate) fn remove_routes_v4(&mut self, prefixes: &[(Ipv4Addr, u8)]) -> Vec<Result<()>> {
        let mut results: Vec<Result<()>> = Vec::with_capacity(prefixes.len());
        let mut keys = Vec::with_capacity(prefixes.len());
        let mut index = Vec::with_capacity(prefixes.len());
        for (i, (a, l)) in prefixes.iter().enumerate() {
            match check_prefix("IPv4", *l, 32) {
                Ok(()) => {
                    keys.push(lpm_v4(*a, *l));
                    index.push(i);
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let map = &self.skel.maps.xe_routes_v4;
        let failed = in_batches(
            &keys,
            |r| batch_call::<_, xe_route>(map, &keys[r], None),
            |k| maps::delete(map, "xe_routes_v4", &keys[k]),
        );
        for (k, e) in failed {
            results[index[k]] = Err(e);
        }
        for (i, (a, l)) in prefixes.iter().enumerate() {
            if results[i].is_ok() {
                match self.dir() {
                    Ok(dir) => {
                        dir.delete(u32::from(*a), *l);
                    }
                    Err(e) => results[i] = Err(e),
                }
            }
        }
        results
    }
}
