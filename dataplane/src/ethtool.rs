//! Questions to a device by the ethtool ioctl (SIOCETHTOOL): how many receive queues it has, whether GRO is on, and its driver.

use std::ffi::c_void;
use std::io;

/// One SIOCETHTOOL request on `name` in the calling thread's namespace;
/// `data` is the command struct (its first word the command).
fn ethtool(name: &str, data: *mut c_void) -> io::Result<()> {
    // SAFETY: plain socket and ioctl calls on a zeroed ifreq; `data` points
    // to a command struct of the size the command needs, alive for the
    // call; the socket is closed before returning.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr
            .ifr_name
            .iter_mut()
            .zip(name.bytes().take(libc::IFNAMSIZ - 1))
        {
            *d = s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_data = data.cast();
        let rc = libc::ioctl(fd, libc::SIOCETHTOOL, &mut ifr);
        let err = io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// The receive queues of `name` (ETHTOOL_GCHANNELS: rx plus combined);
/// None where the driver does not say.
pub fn rx_queues(name: &str) -> io::Result<Option<u32>> {
    #[repr(C)]
    #[derive(Default)]
    struct Channels {
        cmd: u32,
        max_rx: u32,
        max_tx: u32,
        max_other: u32,
        max_combined: u32,
        rx: u32,
        tx: u32,
        other: u32,
        combined: u32,
    }
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    let mut ch = Channels {
        cmd: ETHTOOL_GCHANNELS,
        ..Default::default()
    };
    match ethtool(name, (&mut ch as *mut Channels).cast()) {
        Ok(()) => Ok(Some((ch.rx + ch.combined).max(1))),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The driver of `name` (ETHTOOL_GDRVINFO), e.g. `veth`, `virtio_net`.
pub fn driver(name: &str) -> io::Result<String> {
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    if name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a device name"),
        ));
    }
    // SAFETY: a zeroed plain-data struct, its command set below.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    ethtool(name, (&mut info as *mut DrvInfo).cast())?;
    let end = info
        .driver
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(info.driver.len());
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// Whether GRO is on for `name` (ETHTOOL_GGRO).
pub fn gro(name: &str) -> io::Result<bool> {
    #[repr(C)]
    struct Value {
        cmd: u32,
        data: u32,
    }
    const ETHTOOL_GGRO: u32 = 0x2b;
    let mut v = Value {
        cmd: ETHTOOL_GGRO,
        data: 0,
    };
    ethtool(name, (&mut v as *mut Value).cast())?;
    Ok(v.data != 0)
}
