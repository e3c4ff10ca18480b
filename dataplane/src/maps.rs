//! Raw map access: typed update, delete and lookup, LPM keys, per-CPU sums, and maps opened from their pins.

use std::net::Ipv6Addr;
use std::path::Path;

use libbpf_rs::{MapCore, MapFlags, MapHandle, MapMut};

use crate::abi::{bytes_of, read_from, xe_counter, xe_lpm_v6, Verdict};
use crate::error::{Error, Result};

/// Map `name` as pinned in `pin_dir` by a running xdp-ecmp.
pub(crate) fn open_pinned(pin_dir: &Path, name: &str) -> Result<MapHandle> {
    let path = pin_dir.join(name);
    MapHandle::from_pinned_path(&path).map_err(|e| Error::Pin {
        what: "opening pinned map (is xdp-ecmp attached with this --pin-dir?)",
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })
}

pub(crate) fn map_err(
    map: &'static str,
    op: &'static str,
) -> impl FnOnce(libbpf_rs::Error) -> Error {
    move |source| Error::Map { map, op, source }
}

pub(crate) fn update<K: Copy, V: Copy>(
    map: &MapMut<'_>,
    name: &'static str,
    key: &K,
    val: &V,
) -> Result<()> {
    map.update(bytes_of(key), bytes_of(val), MapFlags::ANY)
        .map_err(map_err(name, "update"))
}

pub(crate) fn delete<K: Copy>(map: &MapMut<'_>, name: &'static str, key: &K) -> Result<()> {
    map.delete(bytes_of(key)).map_err(map_err(name, "delete"))
}

pub(crate) fn lookup<K: Copy, V: Copy>(
    map: &MapMut<'_>,
    name: &'static str,
    key: &K,
) -> Result<Option<V>> {
    let v = map
        .lookup(bytes_of(key), MapFlags::ANY)
        .map_err(map_err(name, "lookup"))?;
    Ok(v.and_then(|b| read_from(&b)))
}

pub(crate) fn lpm_v6(addr: Ipv6Addr, prefix_len: u8) -> xe_lpm_v6 {
    xe_lpm_v6 {
        prefixlen: prefix_len.into(),
        addr: addr.octets(),
    }
}

/// Packets and bytes per verdict from the counter maps pinned in `pin_dir`
/// (the program's, summed over CPUs, and the AF_XDP engine's), with no
/// program load. `forward` leaves out the redirected frames the kernel
/// refused (their packets; their bytes, which the kernel does not report,
/// stay in).
pub fn pinned_verdict_counters(pin_dir: &Path) -> Result<Vec<(Verdict, xe_counter)>> {
    let map = open_pinned(pin_dir, "xe_verdicts")?;
    let engine = open_pinned(pin_dir, "xe_engine_verdicts").ok();
    let failed = crate::txfail::pinned_tx_failures(pin_dir)?;
    Verdict::ALL
        .iter()
        .map(|v| {
            let mut c = sum_percpu(&map, "xe_verdicts", *v as u32)?;
            if *v == Verdict::Forward {
                c.packets = c.packets.saturating_sub(failed);
            }
            if let Some(e) = &engine {
                add(&mut c, counter(e, "xe_engine_verdicts", *v as u32)?);
            }
            Ok((*v, c))
        })
        .collect()
}

/// The AF_XDP engine's share of [`pinned_verdict_counters`]: what it
/// forwarded (and decided otherwise), per verdict; None where no engine
/// has stored counters under `pin_dir` (maps of an older version).
pub fn pinned_engine_counters(pin_dir: &Path) -> Result<Option<Vec<(Verdict, xe_counter)>>> {
    let Ok(map) = open_pinned(pin_dir, "xe_engine_verdicts") else {
        return Ok(None);
    };
    Verdict::ALL
        .iter()
        .map(|v| Ok((*v, counter(&map, "xe_engine_verdicts", *v as u32)?)))
        .collect::<Result<_>>()
        .map(Some)
}

/// Packets and bytes forwarded to each of `ids`, from the pinned
/// per-next-hop maps (the program's and the AF_XDP engine's).
pub fn pinned_nexthop_counters(pin_dir: &Path, ids: &[u32]) -> Result<Vec<(u32, xe_counter)>> {
    let map = open_pinned(pin_dir, "xe_nh_stats")?;
    let engine = open_pinned(pin_dir, "xe_engine_nh").ok();
    ids.iter()
        .map(|id| {
            let mut c = sum_percpu(&map, "xe_nh_stats", *id)?;
            if let Some(e) = &engine {
                add(&mut c, counter(e, "xe_engine_nh", *id)?);
            }
            Ok((*id, c))
        })
        .collect()
}

pub(crate) fn add(sum: &mut xe_counter, c: xe_counter) {
    sum.packets += c.packets;
    sum.bytes += c.bytes;
}

/// Entry `key` of an array of counters (zero where out of range).
pub(crate) fn counter(map: &dyn MapCore, name: &'static str, key: u32) -> Result<xe_counter> {
    Ok(map
        .lookup(&key.to_ne_bytes(), MapFlags::ANY)
        .map_err(map_err(name, "lookup"))?
        .and_then(|b| read_from(&b))
        .unwrap_or_default())
}

pub(crate) fn sum_percpu(map: &dyn MapCore, name: &'static str, key: u32) -> Result<xe_counter> {
    let per_cpu = map
        .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)
        .map_err(map_err(name, "lookup"))?
        .unwrap_or_default();
    let mut sum = xe_counter::default();
    for c in per_cpu.iter().filter_map(|b| read_from::<xe_counter>(b)) {
        add(&mut sum, c);
    }
    Ok(sum)
}
