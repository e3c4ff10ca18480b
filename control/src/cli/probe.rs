//! What this kernel and host offer xdp-ecmp, each probed at run time (never assumed): XDP programs, native XDP per device, AF_XDP sockets, BTF, bpffs, a device's driver.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use dataplane::pins::BPFFS;

/// The answer to one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Present; how it was seen.
    Yes(String),
    /// Absent; why that is known.
    No(String),
    /// Could not be told (no privilege, an older kernel that cannot say).
    Unknown(String),
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Found::Yes(how) => write!(f, "yes ({how})"),
            Found::No(why) => write!(f, "no ({why})"),
            Found::Unknown(why) => write!(f, "unknown ({why})"),
        }
    }
}

/// The bits of the kernel's `netdev` family XDP features (`NETDEV_XDP_ACT_*`).
pub mod xdp_act {
    /// The driver runs XDP programs itself (native mode).
    pub const BASIC: u64 = 1 << 0;
    /// Transmits frames redirected to it (`ndo_xdp_xmit`).
    pub const NDO_XMIT: u64 = 1 << 2;
    /// AF_XDP zero-copy.
    pub const XSK_ZEROCOPY: u64 = 1 << 3;
}

/// The kernel's release string (`uname -r`).
pub fn kernel_release() -> String {
    // SAFETY: a zeroed utsname filled by the kernel.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    // SAFETY: uname NUL-terminates the field.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Loads a two-instruction XDP program (`return XDP_PASS`) and closes it:
/// whether this kernel, for this process, loads XDP programs at all.
pub fn xdp_programs() -> Found {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    // r0 = 2 (XDP_PASS); exit.
    let insns: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0x00, 0, 0, 2, 0, 0, 0]),
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    let license = c"GPL";
    // union bpf_attr, BPF_PROG_LOAD part: prog_type, insn_cnt, insns,
    // license at bytes 0, 4, 8 and 16; the rest zero.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_XDP.to_ne_bytes());
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    // SAFETY: attr is a valid bpf_attr of the size given, pointing at
    // instructions and a license that outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if fd >= 0 {
        // SAFETY: the descriptor the kernel just returned, closed once.
        unsafe { libc::close(fd as libc::c_int) };
        return Found::Yes("a test program loaded".into());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => Found::Unknown(format!(
            "{e}: loading needs CAP_BPF and CAP_PERFMON, or root"
        )),
        Some(libc::ENOSYS) => Found::No("the kernel has no bpf() system call".into()),
        _ => Found::No(format!("a test program was refused: {e}")),
    }
}

/// Opens an AF_XDP socket and closes it.
pub fn af_xdp() -> Found {
    // SAFETY: plain socket call; the descriptor is closed at once.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd >= 0 {
        // SAFETY: the descriptor just opened, closed once.
        unsafe { libc::close(fd) };
        return Found::Yes("a socket opened".into());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            Found::Unknown(format!("{e}: AF_XDP sockets need CAP_NET_RAW"))
        }
        _ => Found::No(format!("socket(AF_XDP): {e}")),
    }
}

/// The kernel's own BTF, as `/sys/kernel/btf/vmlinux`.
pub fn btf() -> Found {
    let p = Path::new("/sys/kernel/btf/vmlinux");
    match std::fs::metadata(p) {
        Ok(m) => Found::Yes(format!("{}, {} bytes", p.display(), m.len())),
        Err(e) => Found::No(format!("{}: {e}", p.display())),
    }
}

/// Whether a bpf filesystem is mounted at /sys/fs/bpf.
pub fn bpffs() -> Found {
    let root = Path::new(BPFFS);
    if !root.is_dir() {
        return Found::No(format!("{BPFFS} does not exist"));
    }
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    let Ok(c) = std::ffi::CString::new(BPFFS) else {
        return Found::Unknown("path with a NUL byte".into());
    };
    // SAFETY: NUL-terminated path and a zeroed out-struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Found::Unknown(format!("statfs {BPFFS}: {}", io::Error::last_os_error()));
    }
    if st.f_type as i64 == BPF_FS_MAGIC {
        Found::Yes(format!("mounted at {BPFFS}"))
    } else {
        Found::No(format!(
            "not mounted at {BPFFS}; the daemon and the CLI mount it when they need it"
        ))
    }
}

/// Every device's XDP features in this network namespace, by name, as the
/// kernel's `netdev` family says (Linux 6.3 on); None where the kernel has
/// no such family.
pub fn xdp_features() -> anyhow::Result<Option<BTreeMap<String, u64>>> {
    let Some(mut f) = control::xdp_features::XdpFeatures::open()? else {
        return Ok(None);
    };
    Ok(Some(
        f.dump()?
            .into_iter()
            .map(|(ifindex, bits)| (control::inspect::ifname(ifindex), bits))
            .collect(),
    ))
}

/// Native XDP, as the devices' XDP features say: which devices of this
/// network namespace run XDP in their driver.
pub fn native_xdp() -> Found {
    match xdp_features() {
        Ok(Some(all)) => {
            let native: Vec<String> = all
                .iter()
                .filter(|(_, bits)| *bits & xdp_act::BASIC != 0)
                .map(|(name, _)| match dataplane::ethtool::driver(name) {
                    Ok(d) => format!("{name} ({d})"),
                    Err(_) => name.clone(),
                })
                .collect();
            if native.is_empty() {
                Found::No(format!(
                    "no device of {} in this network namespace has a driver with XDP; generic XDP works on any",
                    all.len()
                ))
            } else {
                Found::Yes(format!("drivers with XDP: {}", native.join(", ")))
            }
        }
        Ok(None) => Found::Unknown(
            "the kernel has no netdev generic netlink family (before Linux 6.3) to say which drivers have XDP".into(),
        ),
        Err(e) => Found::Unknown(format!("{e:#}")),
    }
}
