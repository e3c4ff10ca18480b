//! Redirected frames the kernel could not send: the two tracepoint programs that count them (attached once, pinned beside the XDP links) and their counters.

use std::path::Path;

use libbpf_rs::{Link, MapCore, MapFlags, TracepointCategory};

use crate::error::{Error, Result};
use crate::loader::Dataplane;

/// The tracepoint links, pinned under the pin directory by these names.
const LINKS: [(&str, &str); 2] = [
    ("link_txfail_redirect_err", "xdp_redirect_err"),
    ("link_txfail_devmap_xmit", "xdp_devmap_xmit"),
];

/// Redirected frames the kernel dropped, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxFailures {
    /// Refused when queued: the port stopped transmitting redirected
    /// frames between the control plane's check and the frame.
    pub refused: u64,
    /// Dropped when sent: the port's ring was full or its peer down.
    pub dropped: u64,
}

impl TxFailures {
    pub fn total(&self) -> u64 {
        self.refused + self.dropped
    }
}

impl Dataplane {
    /// Attaches the counting programs to their tracepoints; they count
    /// while the links live.
    pub fn attach_tx_failure_counters(&self) -> Result<Vec<Link>> {
        LINKS
            .iter()
            .map(|(_, tp)| self.tracepoint_link(tp))
            .collect()
    }

    fn tracepoint_link(&self, tp: &str) -> Result<Link> {
        let prog = match tp {
            "xdp_redirect_err" => &self.skel.progs.xe_redirect_err,
            _ => &self.skel.progs.xe_devmap_xmit,
        };
        prog.attach_tracepoint(TracepointCategory::Xdp, tp)
            .map_err(|source| Error::Load { source })
    }

    /// Attaches the counting programs and pins their links in `dir`, unless
    /// links pinned there already count (a restart: they use the same
    /// pinned map). They count nothing until a port is attached, and stay
    /// while the pins do.
    pub fn count_tx_failures(&self, dir: &Path) -> Result<()> {
        for (pin, tp) in LINKS {
            let path = dir.join(pin);
            if path.exists() {
                continue;
            }
            let mut link = self.tracepoint_link(tp)?;
            link.pin(&path).map_err(|source| Error::Load { source })?;
        }
        Ok(())
    }

    /// The failures counted so far.
    pub fn tx_failures(&self) -> Result<TxFailures> {
        sum(&self.skel.maps.xe_txfail)
    }
}

fn sum(map: &dyn MapCore) -> Result<TxFailures> {
    let one = |key: u32| -> Result<u64> {
        let per_cpu = map
            .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)
            .map_err(|source| Error::Map {
                map: "xe_txfail",
                op: "lookup",
                source,
            })?
            .unwrap_or_default();
        Ok(per_cpu
            .iter()
            .filter_map(|b| Some(u64::from_ne_bytes(b.get(..8)?.try_into().ok()?)))
            .sum())
    };
    Ok(TxFailures {
        refused: one(0)?,
        dropped: one(1)?,
    })
}

/// The failures counted in the map pinned in `pin_dir`; zero where the
/// pins predate it.
pub fn pinned_tx_failures(pin_dir: &Path) -> Result<TxFailures> {
    let path = pin_dir.join("xe_txfail");
    if !path.exists() {
        return Ok(TxFailures::default());
    }
    let map = libbpf_rs::MapHandle::from_pinned_path(&path).map_err(|e| Error::Pin {
        what: "opening pinned map",
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    sum(&map)
}
