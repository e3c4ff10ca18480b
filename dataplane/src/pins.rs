//! The pin directory: the bpf filesystem it needs (mounted where missing, as BPF loaders do), and the lock that lets one writer at a time change the pinned maps.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use libbpf_rs::MapCore;

use crate::abi::LAYOUT_VERSION;
use crate::error::{Error, Result};

/// Where bpffs is mounted by convention.
pub const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Pin {
        what: "path with a NUL byte",
        path: path.to_owned(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

/// Whether `path` (which exists) is on a bpf filesystem.
fn on_bpffs(path: &Path) -> Result<bool> {
    let c = cpath(path)?;
    // SAFETY: NUL-terminated path and a zeroed out-struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    Ok(unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC)
}

/// Makes sure `dir` can hold pins: when it lies under /sys/fs/bpf and no bpf
/// filesystem is mounted there (a fresh machine, a new mount namespace),
/// mounts one; elsewhere its nearest existing ancestor must be on one.
/// Returns whether it mounted.
pub fn ensure_bpffs(dir: &Path) -> Result<bool> {
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if on_bpffs(existing)? {
        return Ok(false);
    }
    if let Some(ns) = under_ip_netns_exec() {
        // A bpffs mounted here would vanish, pins and links with it, when
        // this process exits: its mount namespace is its own.
        return Err(Error::Pin {
            what: "pin directory is not on a bpf filesystem: `ip netns exec` remounted /sys and hid it; run as `nsenter --net=/run/netns/NS xdp-ecmp ...` instead:",
            path: dir.to_owned(),
            source: std::io::Error::other(format!("inside `ip netns exec {ns}`")),
        });
    }
    let root = Path::new(BPFFS);
    if dir.starts_with(root) && root.is_dir() {
        let (src, target, fstype) = (c"bpf", cpath(root)?, c"bpf");
        // SAFETY: NUL-terminated strings; no data argument.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if r != 0 {
            return Err(Error::Pin {
                what: "no bpf filesystem is mounted, and mounting one failed (as root: `mount -t bpf bpf /sys/fs/bpf`):",
                path: root.to_owned(),
                source: std::io::Error::last_os_error(),
            });
        }
        if dir
            .ancestors()
            .find(|p| p.exists())
            .is_some_and(|p| on_bpffs(p).unwrap_or(false))
        {
            return Ok(true);
        }
    }
    Err(Error::Pin {
        what: "pin directory is not on a bpf filesystem (mount one: `mount -t bpf bpf /sys/fs/bpf`, or choose a --pin-dir under it):",
        path: dir.to_owned(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })
}

/// The namespace name when this process runs under `ip netns exec`, which
/// gives it a mount namespace of its own with /sys mounted from a sysfs whose
/// source is the namespace's name.
pub fn under_ip_netns_exec() -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let sys = info
        .lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some("/sys"))?;
    let mut after = sys.split(" - ").nth(1)?.split(' ');
    let (fstype, source) = (after.next()?, after.next()?);
    (fstype == "sysfs" && source != "sysfs" && Path::new("/run/netns").join(source).exists())
        .then(|| source.to_owned())
}

/// Refuses pinned maps of another layout before anything reuses them: the
/// `xe_layout` pin holds the version; maps pinned without it come from a
/// build before versioning.
pub fn check_layout(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(()); // nothing pinned yet
    };
    let has_maps = entries
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("xe_"));
    if !has_maps {
        return Ok(());
    }
    let refuse = |found: String| Error::Layout {
        dir: dir.to_owned(),
        found,
        want: LAYOUT_VERSION,
    };
    let path = dir.join("xe_layout");
    if !path.exists() {
        return Err(refuse("of an older build (no layout version)".into()));
    }
    let map = libbpf_rs::MapHandle::from_pinned_path(&path).map_err(|e| Error::Pin {
        what: "opening pinned map",
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let found = map
        .lookup(&0u32.to_ne_bytes(), libbpf_rs::MapFlags::ANY)
        .ok()
        .flatten()
        .and_then(|v| Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?)));
    match found {
        Some(v) if v == LAYOUT_VERSION => Ok(()),
        Some(v) => Err(refuse(format!("of layout version {v}"))),
        None => Err(refuse("of an unknown layout (unreadable xe_layout)".into())),
    }
}

/// The one-writer lock on a pin directory: the daemon and `attach` hold it
/// while they write the maps, so two processes never allocate the same
/// chunk, slot window or id. An flock on the directory itself, so it goes
/// with the process, however it ends.
#[derive(Debug)]
pub struct WriterLock {
    _fd: OwnedFd,
    pub path: PathBuf,
}

impl WriterLock {
    /// Takes the lock on `dir` (created, on a bpf filesystem, if missing),
    /// or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<WriterLock> {
        ensure_bpffs(dir)?;
        std::fs::create_dir_all(dir).map_err(|source| Error::Pin {
            what: "creating pin directory",
            path: dir.to_owned(),
            source,
        })?;
        let c = cpath(dir)?;
        // SAFETY: NUL-terminated path.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(Error::Pin {
                what: "opening pin directory",
                path: dir.to_owned(),
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: a fresh fd, owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a valid fd.
        if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(Error::Locked {
                    path: dir.to_owned(),
                    holder: holder(dir).unwrap_or_else(|| "a process this one cannot see".into()),
                });
            }
            return Err(Error::Pin {
                what: "locking pin directory",
                path: dir.to_owned(),
                source: err,
            });
        }
        Ok(WriterLock {
            _fd: fd,
            path: dir.to_owned(),
        })
    }
}

/// The process holding an flock on `dir`, from /proc/locks, as "pid N: cmdline".
fn holder(dir: &Path) -> Option<String> {
    let md = std::fs::metadata(dir).ok()?;
    let dev = md.dev();
    let want = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        md.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        // "1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF"
        let f: Vec<&str> = l.split_whitespace().collect();
        let (pid, id) = (f.get(4)?, f.get(5)?);
        if f.get(1) != Some(&"FLOCK") || *id != want {
            return None;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .split('\0')
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        Some(format!("pid {pid}: {cmd}"))
    })
}
