//! Redirected frames the kernel refused: the tracepoint program that counts them (attached once, pinned beside the XDP links) and its counter.

use std::path::Path;

use libbpf_rs::{Link, MapCore, MapFlags, TracepointCategory};

use crate::error::{Error, Result};
use crate::program::Dataplane;

/// The tracepoint link, pinned under the pin directory by this name.
const LINK: &str = "link_txfail_redirect_err";

/// Where tracefs is mounted by convention; libbpf finds a tracepoint's id
/// there (or under debugfs, at /sys/kernel/debug/tracing).
const TRACEFS: &str = "/sys/kernel/tracing";

/// Makes sure libbpf can find tracepoints: a fresh machine or a new mount
/// namespace may have neither tracefs nor debugfs mounted. Mounts tracefs
/// where missing, as it mounts bpffs (an attach that still fails names
/// its own error).
fn ensure_tracefs() {
    let events = |dir: &str| Path::new(dir).join("events").is_dir();
    if events(TRACEFS) || events("/sys/kernel/debug/tracing") || !Path::new(TRACEFS).is_dir() {
        return;
    }
    // SAFETY: NUL-terminated strings; no data argument.
    let r = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r == 0 {
        tracing::info!(
            "mounted tracefs at {TRACEFS} (the redirect-failure tracepoint is found there)"
        );
    }
}

impl Dataplane {
    /// Attaches the counting program to `xdp:xdp_redirect_err` (which fires
    /// only on a failure: nothing on the packet path); it counts while the
    /// link lives. Mounts tracefs first where it is missing.
    pub fn attach_tx_failure_counter(&self) -> Result<Link> {
        ensure_tracefs();
        self.skel
            .progs
            .xe_redirect_err
            .attach_tracepoint(TracepointCategory::Xdp, "xdp_redirect_err")
            .map_err(|source| Error::Load { source })
    }

    /// Attaches the counting program and pins its link in `dir`, unless a
    /// link pinned there already counts (a restart: it uses the same pinned
    /// map). It counts nothing until a port is attached, and stays while
    /// the pins do.
    pub fn count_tx_failures(&self, dir: &Path) -> Result<()> {
        let path = dir.join(LINK);
        if path.exists() {
            return Ok(());
        }
        let mut link = self.attach_tx_failure_counter()?;
        link.pin(&path).map_err(|source| Error::Load { source })
    }

    /// Redirected frames the kernel refused so far: the port stopped
    /// transmitting redirected frames between the control plane's check
    /// and the frame.
    pub fn tx_failures(&self) -> Result<u64> {
        sum(&self.skel.maps.xe_txfail)
    }
}

fn sum(map: &dyn MapCore) -> Result<u64> {
    let per_cpu = map
        .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
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
}

/// The refusals counted in the map pinned in `pin_dir`; zero where the pins
/// predate it.
pub fn pinned_tx_failures(pin_dir: &Path) -> Result<u64> {
    let path = pin_dir.join("xe_txfail");
    if !path.exists() {
        return Ok(0);
    }
    let map = libbpf_rs::MapHandle::from_pinned_path(&path).map_err(|e| Error::Pin {
        what: "opening pinned map",
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    sum(&map)
}
