//! One AF_XDP socket on one port queue: its own UMEM (half the frames for receiving, half for sending), the four rings, and the bookkeeping of free frames.

use std::ffi::CString;
use std::num::NonZeroU32;
use std::ptr::NonNull;

use xdpilone::xdp::XdpDesc;
use xdpilone::{
    BufIdx, DeviceQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig, User,
};

use crate::error::{Error, Result};

/// Bytes per frame: a full 1500-byte frame with a pushed tag fits.
pub(crate) const FRAME_SIZE: u32 = 2048;

/// An anonymous, page-aligned mapping, unmapped on drop.
struct Area {
    ptr: NonNull<u8>,
    len: usize,
}

impl Area {
    fn new(len: usize) -> std::io::Result<Area> {
        // SAFETY: a fresh anonymous private mapping; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Area {
            ptr: NonNull::new(p.cast()).expect("mmap returned a non-null address"),
            len,
        })
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

const REGISTER: &str = "registering the UMEM";

/// How a socket could not be made: the port, the queue and what failed.
fn xsk_error(port: &str, queue: u32, what: &'static str, errno: xdpilone::Errno) -> Error {
    let what = match errno.get_raw() {
        libc::EPERM => "AF_XDP sockets need CAP_NET_RAW (as a service: the drop-in control/dist/xdp-ecmp-afxdp.conf)",
        // xdp_umem_account_pages: over RLIMIT_MEMLOCK without CAP_IPC_LOCK.
        libc::ENOBUFS if what == REGISTER => "registering the UMEM: its pages count against the locked-memory limit: raise it (ulimit -l, LimitMEMLOCK=) or give CAP_IPC_LOCK",
        _ => what,
    };
    Error::Xsk {
        port: port.to_owned(),
        queue,
        what,
        source: std::io::Error::from_raw_os_error(errno.get_raw()),
    }
}

/// A bound AF_XDP socket on (`ifindex`, `queue`). Frames [0, rx_frames)
/// circulate through the fill and receive rings; the rest are free for
/// sending and come back through the completion ring.
pub(crate) struct PortSocket {
    pub(crate) ifindex: u32,
    zero_copy: bool,
    rx: RingRx,
    tx: RingTx,
    device: DeviceQueue,
    tx_free: Vec<u64>,
    /// Frames given back after receiving, for the next fill.
    refill: Vec<u64>,
    /// Descriptors to send at the next flush.
    pending: Vec<XdpDesc>,
    /// The last batch read from the receive ring (kept to reuse its room).
    batch: Vec<XdpDesc>,
    _user: User,
    umem: Umem,
    _area: Area,
}

impl PortSocket {
    /// Opens and binds a socket on `name` queue `queue` with `frames`
    /// frames, its fill ring full: zero-copy where the driver offers it,
    /// else copy mode; need_wakeup either way.
    pub(crate) fn open(name: &str, queue: u32, frames: u32) -> Result<PortSocket> {
        match Self::open_in(name, queue, frames, SocketConfig::XDP_BIND_ZEROCOPY) {
            Ok(s) => Ok(s),
            // A driver without zero-copy refuses the bind; anything else
            // fails the same way in copy mode, which reports it.
            Err(Error::Xsk { what, .. }) if what.starts_with("binding") => {
                Self::open_in(name, queue, frames, SocketConfig::XDP_BIND_COPY)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the socket runs in zero-copy mode.
    pub(crate) fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    fn open_in(name: &str, queue: u32, frames: u32, mode: u16) -> Result<PortSocket> {
        let area =
            Area::new(frames as usize * FRAME_SIZE as usize).map_err(|source| Error::Xsk {
                port: name.to_owned(),
                queue,
                what: "allocating the UMEM (is the memlock limit high enough?)",
                source,
            })?;
        let half = frames / 2;
        let config = UmemConfig {
            fill_size: half.next_power_of_two(),
            complete_size: half.next_power_of_two(),
            frame_size: FRAME_SIZE,
            headroom: 0,
            flags: 0,
        };
        let slice = NonNull::slice_from_raw_parts(area.ptr, area.len);
        // SAFETY: page aligned, `len` bytes, alive as long as the socket
        // (fields drop in order: rings, user, umem, then the area).
        let umem =
            unsafe { Umem::new(config, slice) }.map_err(|e| xsk_error(name, queue, REGISTER, e))?;
        let cname = CString::new(name).map_err(|_| Error::NoSuchInterface(name.to_owned()))?;
        let mut info = IfInfo::invalid();
        info.from_name(&cname)
            .map_err(|_| Error::NoSuchInterface(name.to_owned()))?;
        info.set_queue(queue);
        let sock = Socket::with_shared(&info, &umem)
            .map_err(|e| xsk_error(name, queue, "creating the socket", e))?;
        let mut device = umem
            .fq_cq(&sock)
            .map_err(|e| xsk_error(name, queue, "mapping the fill and completion rings", e))?;
        let ring = NonZeroU32::new(half.next_power_of_two());
        let user = umem
            .rx_tx(
                &sock,
                &SocketConfig {
                    rx_size: ring,
                    tx_size: ring,
                    bind_flags: mode | SocketConfig::XDP_BIND_NEED_WAKEUP,
                },
            )
            .map_err(|e| xsk_error(name, queue, "configuring the rings", e))?;
        let rx = user
            .map_rx()
            .map_err(|e| xsk_error(name, queue, "mapping the receive ring", e))?;
        let tx = user
            .map_tx()
            .map_err(|e| xsk_error(name, queue, "mapping the send ring", e))?;
        umem.bind(&user).map_err(|e| {
            let what = match e.get_raw() {
                libc::EBUSY => "binding: another AF_XDP socket holds this queue (another engine?)",
                libc::EINVAL => "binding (does the port have this queue?)",
                _ => "binding",
            };
            xsk_error(name, queue, what, e)
        })?;
        let addr = |i: u32| u64::from(i) * u64::from(FRAME_SIZE);
        {
            let mut fill = device.fill(half);
            fill.insert((0..half).map(addr));
            fill.commit();
        }
        let ifindex = info.ifindex();
        Ok(PortSocket {
            ifindex,
            zero_copy: mode == SocketConfig::XDP_BIND_ZEROCOPY,
            rx,
            tx,
            device,
            tx_free: (half..frames).map(addr).collect(),
            refill: Vec::with_capacity(half as usize),
            pending: Vec::with_capacity(half as usize),
            batch: Vec::with_capacity(half as usize),
            _user: user,
            umem,
            _area: area,
        })
    }

    /// The socket's fd, for the XSKMAP.
    pub(crate) fn fd(&self) -> i32 {
        self.rx.as_raw_fd()
    }

    /// The frame at `addr` (an offset in the UMEM) and the offset in it.
    fn frame(&self, addr: u64) -> (xdpilone::UmemChunk, usize) {
        let frame = self
            .umem
            .frame(BufIdx((addr / u64::from(FRAME_SIZE)) as u32))
            .expect("a frame of this UMEM");
        (frame, (addr % u64::from(FRAME_SIZE)) as usize)
    }

    /// The `len` bytes the kernel wrote at `addr` (a received frame).
    fn bytes(&self, addr: u64, len: usize) -> &[u8] {
        let (frame, start) = self.frame(addr);
        // SAFETY: in the frame, which the kernel handed over with the
        // receive descriptor and does not touch until it is filled again.
        unsafe { &frame.addr.as_ref()[start..start + len] }
    }

    /// `len` bytes of the free sending frame at `addr`.
    fn bytes_mut(&mut self, addr: u64, len: usize) -> &mut [u8] {
        let (mut frame, start) = self.frame(addr);
        // SAFETY: in the frame, which is free (not in any ring) and ours.
        unsafe { &mut frame.addr.as_mut()[start..start + len] }
    }

    /// Reads up to `max` received frames into the batch: see
    /// [`Self::received`], then [`Self::finish_batch`].
    pub(crate) fn receive_batch(&mut self, max: u32) -> usize {
        self.batch.clear();
        let mut rx = self.rx.receive(max);
        while let Some(desc) = rx.read() {
            self.batch.push(desc);
        }
        rx.release();
        self.batch.len()
    }

    /// The bytes of frame `k` of the batch.
    pub(crate) fn received(&self, k: usize) -> &[u8] {
        let desc = self.batch[k];
        self.bytes(desc.addr, desc.len as usize)
    }

    /// The batch's frames go back to the fill ring at the next refill.
    pub(crate) fn finish_batch(&mut self) {
        let frame = u64::from(FRAME_SIZE);
        self.refill
            .extend(self.batch.drain(..).map(|d| d.addr - d.addr % frame));
    }

    /// Gives received frames back to the kernel.
    pub(crate) fn refill(&mut self) {
        if self.refill.is_empty() {
            return;
        }
        let mut fill = self.device.fill(self.refill.len() as u32);
        let done = fill.insert(self.refill.iter().copied()) as usize;
        fill.commit();
        drop(fill);
        self.refill.drain(..done);
        if self.device.needs_wakeup() {
            self.device.wake();
        }
    }

    /// A free frame to send from, `len` bytes, filled by `f`; false if
    /// every sending frame is in flight.
    pub(crate) fn queue_send(&mut self, len: usize, f: impl FnOnce(&mut [u8])) -> bool {
        if self.tx_free.is_empty() {
            self.reclaim();
        }
        let Some(addr) = self.tx_free.pop() else {
            return false;
        };
        f(self.bytes_mut(addr, len));
        self.pending.push(XdpDesc {
            addr,
            len: len as u32,
            options: 0,
        });
        true
    }

    /// Frames the kernel has sent, free again.
    fn reclaim(&mut self) {
        let mut done = self.device.complete(self.device.available());
        while let Some(addr) = done.read() {
            self.tx_free.push(addr);
        }
        done.release();
    }

    /// Hands the queued frames to the kernel and kicks it (copy mode sends
    /// on the kick).
    pub(crate) fn flush(&mut self) {
        self.reclaim();
        if self.pending.is_empty() {
            return;
        }
        let mut tx = self.tx.transmit(self.pending.len() as u32);
        let sent = tx.insert(self.pending.iter().copied()) as usize;
        tx.commit();
        drop(tx);
        self.pending.drain(..sent);
        // Copy mode sends a bounded batch per kick (32 frames here): kick
        // until the kernel has taken the ring's frames, a few times at most.
        for _ in 0..8 {
            self.tx.wake();
            if self.tx.pending() == 0 {
                break;
            }
        }
    }
}
