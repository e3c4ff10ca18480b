//! The ingress-port maps: a port's entry as one 8-byte word (INPORT_ON marks a port), in the mmapped `xe_inports` array below INPORT_INDEXES and in `xe_inports_far` past it.

use std::path::Path;
use std::sync::atomic::Ordering;

use libbpf_rs::MapCore;

use crate::abi::{bytes_of, read_from, xe_inport, INPORT_INDEXES, INPORT_ON};
use crate::dump;
use crate::error::Result;
use crate::maps::{self, map_err, open_pinned};
use crate::mmap::MmapCells;
use crate::program::Dataplane;

/// `port` marked as a port, as the maps hold it.
fn marked(port: &xe_inport) -> xe_inport {
    xe_inport {
        flags: port.flags | INPORT_ON,
        ..*port
    }
}

/// The entry the program reads for `port`, as one word.
fn word_of(port: &xe_inport) -> u64 {
    u64::from_ne_bytes(
        bytes_of(&marked(port))
            .try_into()
            .expect("xe_inport is 8 bytes"),
    )
}

/// The port an entry holds, as it was given to the writer (without
/// INPORT_ON); none where the mark is missing.
fn port_of(word: u64) -> Option<xe_inport> {
    let p: xe_inport = read_from(&word.to_ne_bytes())?;
    (p.flags & INPORT_ON != 0).then_some(xe_inport {
        flags: p.flags & !INPORT_ON,
        ..p
    })
}

/// Whether `ifindex` has its entry in the array (else in the far map).
fn in_array(ifindex: u32) -> bool {
    ifindex < INPORT_INDEXES
}

/// Maps the `xe_inports` array of `map` into this process.
pub(crate) fn map_array(map: &impl std::os::fd::AsFd) -> Result<MmapCells> {
    MmapCells::map(map, "xe_inports", INPORT_INDEXES as usize, 8)
}

impl Dataplane {
    /// Makes `ifindex` a port with `port`'s MAC and switches; the program
    /// reads the old entry or the new one, never a mix.
    pub(crate) fn write_inport(&mut self, ifindex: u32, port: &xe_inport) -> Result<()> {
        if in_array(ifindex) {
            self.inports
                .word(ifindex as usize)
                .store(word_of(port), Ordering::Release);
            return Ok(());
        }
        maps::update(
            &self.skel.maps.xe_inports_far,
            "xe_inports_far",
            &ifindex,
            &marked(port),
        )
    }

    /// Makes `ifindex` no port (nothing to do if it is none).
    pub(crate) fn clear_inport(&mut self, ifindex: u32) -> Result<()> {
        clear(&self.inports, &self.skel.maps.xe_inports_far, ifindex)
    }

    /// The port entry of `ifindex`, if it is a port.
    pub(crate) fn inport_of(&self, ifindex: u32) -> Option<xe_inport> {
        if in_array(ifindex) {
            return port_of(self.inports.word(ifindex as usize).load(Ordering::Acquire));
        }
        let far = &self.skel.maps.xe_inports_far;
        port_of(maps::lookup::<_, u64>(far, "xe_inports_far", &ifindex).ok()??)
    }

    /// Every ingress port the program admits frames from: (ifindex, entry),
    /// by ifindex.
    pub fn inports(&self) -> Result<Vec<(u32, xe_inport)>> {
        let mut out: Vec<(u32, xe_inport)> = (0..INPORT_INDEXES)
            .filter_map(|i| {
                Some((
                    i,
                    port_of(self.inports.word(i as usize).load(Ordering::Acquire))?,
                ))
            })
            .collect();
        let far = dump::entries::<u32, u64>(&self.skel.maps.xe_inports_far, "xe_inports_far")?;
        out.extend(far.into_iter().filter_map(|(i, w)| Some((i, port_of(w)?))));
        out.sort_by_key(|(i, _)| *i);
        Ok(out)
    }
}

/// Removes the ingress port entry of `ifindex` from the maps pinned in
/// `pin_dir` (no program load needed): frames received there go to the
/// kernel. Nothing to do if there is none.
pub fn pinned_remove_inport(pin_dir: &Path, ifindex: u32) -> Result<()> {
    let array = map_array(&open_pinned(pin_dir, "xe_inports")?)?;
    clear(&array, &open_pinned(pin_dir, "xe_inports_far")?, ifindex)
}

/// Clears the entry of `ifindex`: a zero word in the array, or no element
/// in the far map (already none is fine).
fn clear(array: &MmapCells, far: &dyn MapCore, ifindex: u32) -> Result<()> {
    if in_array(ifindex) {
        array.word(ifindex as usize).store(0, Ordering::Release);
        return Ok(());
    }
    match far.delete(bytes_of(&ifindex)) {
        Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
        r => r.map_err(map_err("xe_inports_far", "delete")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{INPORT_FWD_V4, INPORT_RPF};

    #[test]
    fn an_entry_reads_back_as_written_and_a_zero_word_is_no_port() {
        let p = xe_inport {
            mac: [2, 0, 0, 0, 0, 7],
            flags: INPORT_FWD_V4 | INPORT_RPF,
            ..Default::default()
        };
        let w = word_of(&p);
        let flags_at = std::mem::offset_of!(xe_inport, flags);
        assert_ne!(
            w.to_ne_bytes()[flags_at] & INPORT_ON,
            0,
            "marked in the flags byte"
        );
        let back = port_of(w).expect("a port");
        assert_eq!((back.mac, back.flags), (p.mac, p.flags));
        // A port with every switch off is still a port.
        let off = word_of(&xe_inport { flags: 0, ..p });
        assert_eq!(port_of(off).map(|q| q.flags), Some(0));
        assert!(port_of(0).is_none());
        let mut unmarked = w.to_ne_bytes();
        unmarked[flags_at] &= !INPORT_ON;
        assert!(port_of(u64::from_ne_bytes(unmarked)).is_none());
        assert!(in_array(INPORT_INDEXES - 1) && !in_array(INPORT_INDEXES));
    }
}
