//! Attaching the program to a port through a BPF link: modes, pinned links, link updates, interface names.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use libbpf_rs::libbpf_sys;

use crate::error::{Error, Result};
use crate::program::Dataplane;

/// XDP attach mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic (skb) mode where the driver has none.
    Auto,
    Native,
    Generic,
}

const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// An XDP program attached to an interface through a BPF link.
#[derive(Debug)]
pub struct XdpLink {
    fd: OwnedFd,
    pub ifindex: u32,
    /// "native" or "generic"; "pinned" for a link opened from bpffs.
    pub mode: &'static str,
}

impl XdpLink {
    /// Pins the link so it outlives this process.
    pub fn pin(&self, path: &Path) -> Result<()> {
        let c = cpath(path)?;
        // SAFETY: valid fd and NUL-terminated path.
        let rc = unsafe { libbpf_sys::bpf_obj_pin(self.fd.as_raw_fd(), c.as_ptr()) };
        if rc < 0 {
            return Err(Error::Pin {
                what: "pinning XDP link at",
                path: path.to_owned(),
                source: std::io::Error::from_raw_os_error(-rc),
            });
        }
        Ok(())
    }

    /// Opens a link pinned earlier (by this or a previous process).
    pub fn open_pinned(path: &Path, ifindex: u32) -> Result<Self> {
        let c = cpath(path)?;
        // SAFETY: NUL-terminated path.
        let fd = unsafe { libbpf_sys::bpf_obj_get(c.as_ptr()) };
        if fd < 0 {
            return Err(Error::Pin {
                what: "opening pinned XDP link",
                path: path.to_owned(),
                source: std::io::Error::from_raw_os_error(-fd),
            });
        }
        // SAFETY: bpf_obj_get returned a fresh fd we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(XdpLink {
            fd,
            ifindex,
            mode: "pinned",
        })
    }

    /// Atomically replaces the program behind the link.
    pub fn update_program(&self, dp: &Dataplane) -> Result<()> {
        // SAFETY: both fds are valid; null opts means no expected old program.
        let rc = unsafe {
            libbpf_sys::bpf_link_update(
                self.fd.as_raw_fd(),
                dp.prog_fd().as_raw_fd(),
                std::ptr::null(),
            )
        };
        if rc < 0 {
            return Err(Error::AttachMode {
                ifindex: self.ifindex,
                mode: "link update",
                source: std::io::Error::from_raw_os_error(-rc),
            });
        }
        Ok(())
    }

    /// The interface the link holds the program on; None once the interface
    /// is gone (the kernel then detached it) or the link was detached.
    pub fn attached_ifindex(&self) -> Result<Option<u32>> {
        let mut info = libbpf_sys::bpf_link_info::default();
        let mut len = std::mem::size_of::<libbpf_sys::bpf_link_info>() as u32;
        // SAFETY: valid link fd and an out-struct of the size given.
        let rc = unsafe {
            libbpf_sys::bpf_link_get_info_by_fd(self.fd.as_raw_fd(), &mut info, &mut len)
        };
        if rc < 0 {
            return Err(Error::AttachMode {
                ifindex: self.ifindex,
                mode: "link info",
                source: std::io::Error::from_raw_os_error(-rc),
            });
        }
        // SAFETY: an XDP link's info fills the xdp member of the union.
        let ifindex = unsafe { info.__bindgen_anon_1.xdp.ifindex };
        Ok((ifindex != 0).then_some(ifindex))
    }

    /// Detaches the program from the interface now, even if the link is pinned.
    pub fn detach(self) -> Result<()> {
        // SAFETY: valid link fd.
        let rc = unsafe { libbpf_sys::bpf_link_detach(self.fd.as_raw_fd()) };
        if rc < 0 {
            return Err(Error::AttachMode {
                ifindex: self.ifindex,
                mode: "detach",
                source: std::io::Error::from_raw_os_error(-rc),
            });
        }
        Ok(())
    }
}

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Error::Pin {
        what: "path with a NUL byte",
        path: path.to_owned(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

/// Resolves an interface name to its ifindex.
pub fn ifindex_of(name: &str) -> Result<u32> {
    let c = CString::new(name).map_err(|_| Error::NoSuchInterface(name.to_owned()))?;
    // SAFETY: NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(Error::NoSuchInterface(name.to_owned()));
    }
    Ok(idx)
}

impl Dataplane {
    /// Attaches the program to `ifindex` through a BPF link.
    pub fn attach(&self, ifindex: u32, mode: AttachMode) -> Result<XdpLink> {
        let try_mode = |flags: u32| -> std::io::Result<OwnedFd> {
            let opts = libbpf_sys::bpf_link_create_opts {
                sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _,
                flags,
                ..Default::default()
            };
            // SAFETY: valid prog fd; for XDP the target is the ifindex.
            let fd = unsafe {
                libbpf_sys::bpf_link_create(
                    self.prog_fd().as_raw_fd(),
                    ifindex as i32,
                    libbpf_sys::BPF_XDP,
                    &opts,
                )
            };
            if fd < 0 {
                return Err(std::io::Error::from_raw_os_error(-fd));
            }
            // SAFETY: fresh fd owned from here on.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let link = |fd, mode| XdpLink { fd, ifindex, mode };
        match mode {
            AttachMode::Native => try_mode(XDP_FLAGS_DRV_MODE)
                .map(|fd| link(fd, "native"))
                .map_err(|source| Error::AttachMode {
                    ifindex,
                    mode: "native",
                    source,
                }),
            AttachMode::Generic => try_mode(XDP_FLAGS_SKB_MODE)
                .map(|fd| link(fd, "generic"))
                .map_err(|source| Error::AttachMode {
                    ifindex,
                    mode: "generic",
                    source,
                }),
            AttachMode::Auto => match try_mode(XDP_FLAGS_DRV_MODE) {
                Ok(fd) => Ok(link(fd, "native")),
                Err(native) => match try_mode(XDP_FLAGS_SKB_MODE) {
                    Ok(fd) => Ok(link(fd, "generic")),
                    Err(generic) => Err(Error::Attach {
                        ifindex,
                        native,
                        generic,
                    }),
                },
            },
        }
    }
}
