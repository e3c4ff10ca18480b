//! What the daemon publishes beside the maps, for `show` and `top`: the kernel's names for what it wrote (gateways, nexthop ids, weights, timers) and its sync activity, as two JSON files under /run/xdp-ecmp, each replaced whole (written aside, then renamed).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Where the status of every daemon lives; one directory per pin directory.
pub const RUN_ROOT: &str = "/run/xdp-ecmp";

/// The status directory of the daemon that owns `pin_dir`: the pin
/// directory's path with `/` as `_` under [`RUN_ROOT`] (bpffs holds no
/// regular files, and two daemons on two pin directories keep apart).
pub fn dir_for(pin_dir: &Path) -> PathBuf {
    let name: String = pin_dir
        .to_string_lossy()
        .trim_matches('/')
        .chars()
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    Path::new(RUN_ROOT).join(if name.is_empty() { "_".into() } else { name })
}

/// A next hop as written, in the kernel's terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NexthopInfo {
    /// The dataplane's next-hop id (`show nexthops`, the buckets).
    pub id: u32,
    pub dev: String,
    pub ifindex: u32,
    /// None: a device route (the destination itself is the neighbour).
    pub gateway: Option<IpAddr>,
    /// The kernel's nexthop objects (`ip nexthop`) with this gateway and
    /// port; empty for a hop of a route written with `nexthop via`.
    pub kernel_ids: Vec<u32>,
}

/// A member of a group: its next hop, weight and the buckets it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The dataplane's next-hop id; None while the member has no next hop
    /// written (no room): its buckets pass packets to the kernel.
    pub nexthop: Option<u32>,
    pub gateway: Option<IpAddr>,
    pub dev: String,
    pub weight: u32,
    /// Buckets (slots) it holds now, and (resilient groups) its share.
    pub buckets: u32,
    pub wanted: Option<u32>,
}

/// A group as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub id: u32,
    /// The kernel's nexthop group (`nhid`) it copies, if it is one.
    pub kernel_id: Option<u32>,
    /// `resilient` (balanced here), `kernel-resilient` (the kernel's
    /// buckets, copied) or `modulo`.
    pub mode: String,
    pub buckets: u32,
    /// Seconds (resilient groups balanced here).
    pub idle_timer: Option<u64>,
    pub unbalanced_timer: Option<u64>,
    /// Seconds it had been unbalanced when written (None: balanced).
    pub unbalanced_for: Option<f64>,
    /// Routes forwarding through it.
    pub routes: usize,
    pub members: Vec<MemberInfo>,
}

/// The kernel's names for what the daemon wrote.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    pub pid: u32,
    /// Wall-clock ms when written.
    pub written_ms: u64,
    pub nexthops: Vec<NexthopInfo>,
    pub groups: Vec<GroupInfo>,
}

/// The daemon's sync activity, written about once a second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    pub pid: u32,
    /// Wall-clock ms when written and when the daemon started.
    pub written_ms: u64,
    pub started_ms: u64,
    /// `xdp` or `afxdp`.
    pub engine: String,
    pub events: u64,
    pub syncs: u64,
    /// Full re-dumps: after a message that may hide a silent flush, after a
    /// netlink overrun, and anti-entropy repairs.
    pub redumps: u64,
    pub resyncs: u64,
    pub entropy_checks: u64,
    pub entropy_repairs: u64,
    /// Wall-clock ms of the last full re-dump, if any.
    pub last_redump_ms: Option<u64>,
    pub buckets_moved: u64,
    /// Buckets moved in the last 60 s.
    pub buckets_moved_last_minute: u64,
    /// Event -> map latency quantiles, µs.
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
}

/// Bucket moves over the last minute: (monotonic ms, buckets).
#[derive(Debug, Clone, Default)]
pub struct MoveWindow(VecDeque<(u64, u64)>);

impl MoveWindow {
    pub const SPAN_MS: u64 = 60_000;

    pub fn record(&mut self, now_ms: u64, moved: u64) {
        if moved > 0 {
            self.0.push_back((now_ms, moved));
        }
        self.expire(now_ms);
    }

    pub fn total(&mut self, now_ms: u64) -> u64 {
        self.expire(now_ms);
        self.0.iter().map(|(_, n)| n).sum()
    }

    fn expire(&mut self, now_ms: u64) {
        while self
            .0
            .front()
            .is_some_and(|(t, _)| now_ms.saturating_sub(*t) >= Self::SPAN_MS)
        {
            self.0.pop_front();
        }
    }
}

/// Wall-clock time in ms.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether the process that wrote a status still runs.
pub fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid != 0 && (unsafe { libc::kill(pid as i32, 0) } == 0 || errno_is_eperm())
}

fn errno_is_eperm() -> bool {
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

const TOPOLOGY: &str = "topology.json";
const ACTIVITY: &str = "activity.json";

/// Writes `value` as `dir/name`, whole: readers see the old file or the new one.
fn replace<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec(value)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name))
        .with_context(|| format!("renaming {} into place", tmp.display()))
}

fn read<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> Result<Option<T>> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| {
            format!(
                "{} does not parse (written by another version?)",
                path.display()
            )
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub fn write_topology(dir: &Path, t: &Topology) -> Result<()> {
    replace(dir, TOPOLOGY, t)
}

pub fn write_activity(dir: &Path, a: &Activity) -> Result<()> {
    replace(dir, ACTIVITY, a)
}

/// The topology last written for `pin_dir`, if any daemon wrote one.
pub fn read_topology(pin_dir: &Path) -> Result<Option<Topology>> {
    read(&dir_for(pin_dir), TOPOLOGY)
}

/// The activity last written for `pin_dir`, if any daemon wrote one.
pub fn read_activity(pin_dir: &Path) -> Result<Option<Activity>> {
    read(&dir_for(pin_dir), ACTIVITY)
}

/// Removes what a daemon wrote for `pin_dir` (the activity of a daemon that
/// ended tells nothing; the topology still names what the maps hold).
pub fn remove_activity(pin_dir: &Path) {
    let _ = std::fs::remove_file(dir_for(pin_dir).join(ACTIVITY));
}

/// Removes the whole status directory of `pin_dir` (with its pins).
pub fn remove_all(pin_dir: &Path) {
    let _ = std::fs::remove_dir_all(dir_for(pin_dir));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pin_dir_has_its_own_status_dir() {
        assert_eq!(
            dir_for(Path::new("/sys/fs/bpf/xdp-ecmp")),
            Path::new("/run/xdp-ecmp/sys_fs_bpf_xdp-ecmp")
        );
        assert_ne!(
            dir_for(Path::new("/sys/fs/bpf/a/b")),
            dir_for(Path::new("/sys/fs/bpf/a_c"))
        );
        assert_eq!(dir_for(Path::new("/")), Path::new("/run/xdp-ecmp/_"));
    }

    #[test]
    fn moves_leave_the_window_after_a_minute() {
        let mut w = MoveWindow::default();
        w.record(1_000, 5);
        w.record(30_000, 0);
        w.record(40_000, 3);
        assert_eq!(w.total(40_000), 8);
        assert_eq!(w.total(60_999), 8);
        assert_eq!(w.total(61_000), 3);
        assert_eq!(w.total(100_000), 0);
    }

    #[test]
    fn a_status_reads_back_as_written_and_a_missing_one_is_none() {
        let dir = std::env::temp_dir().join(format!("xe-status-{}", std::process::id()));
        let t = Topology {
            pid: 7,
            written_ms: 9,
            nexthops: vec![NexthopInfo {
                id: 1,
                dev: "swp1".into(),
                ifindex: 3,
                gateway: Some("fe80::1".parse().unwrap()),
                kernel_ids: vec![11],
            }],
            groups: vec![],
        };
        write_topology(&dir, &t).unwrap();
        assert_eq!(read(&dir, TOPOLOGY).unwrap(), Some(t));
        assert_eq!(read::<Activity>(&dir, ACTIVITY).unwrap(), None);
        std::fs::write(dir.join(ACTIVITY), b"{").unwrap();
        let e = read::<Activity>(&dir, ACTIVITY).unwrap_err();
        assert!(format!("{e:#}").contains("does not parse"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
