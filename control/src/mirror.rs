//! The netlink side of the mirror: one socket subscribed to link, neighbour, route and nexthop events, one for dumps (subscribe first, then dump).

use std::os::fd::AsRawFd;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::neighbour::NeighbourMessage;
use netlink_packet_route::route::{RouteHeader, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};

use crate::nexthop_msg::{dump_nexthop_buckets, dump_nexthops, Bucket, RtMessage, RTNLGRP_NEXTHOP};
use crate::state::{Changed, KernelState};

const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_NEIGH: u32 = 3;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_ROUTE: u32 = 11;

/// What waiting for events gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Messages applied to the state.
    Changed(Changed),
    /// Nothing within the timeout.
    Idle,
    /// The kernel dropped events (ENOBUFS): the state must be dumped again.
    Overrun,
}

/// Netlink sockets of the mirror.
pub struct Mirror {
    events: Socket,
    requests: Socket,
    seq: u32,
    buf: Vec<u8>,
}

fn socket() -> Result<Socket> {
    let mut s = Socket::new(NETLINK_ROUTE).context("opening a NETLINK_ROUTE socket")?;
    s.bind_auto().context("binding the netlink socket")?;
    Ok(s)
}

impl Mirror {
    /// Subscribes to events with a receive buffer of `rcvbuf` bytes.
    pub fn open(rcvbuf: usize) -> Result<Self> {
        let events = socket()?;
        for g in [
            RTNLGRP_LINK,
            RTNLGRP_NEIGH,
            RTNLGRP_IPV4_ROUTE,
            RTNLGRP_IPV6_ROUTE,
            RTNLGRP_NEXTHOP,
        ] {
            events
                .add_membership(g)
                .with_context(|| format!("joining netlink group {g}"))?;
        }
        force_rcvbuf(&events, rcvbuf)?;
        Ok(Mirror {
            events,
            requests: socket()?,
            seq: 1,
            buf: vec![0; 1 << 20],
        })
    }

    fn request(&mut self, msg: RouteNetlinkMessage, state: &mut KernelState) -> Result<()> {
        let mut nl = NetlinkMessage::from(RtMessage::Route(msg));
        nl.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        self.seq += 1;
        nl.header.sequence_number = self.seq;
        nl.finalize();
        let mut out = vec![0; nl.buffer_len()];
        nl.serialize(&mut out);
        self.requests
            .send(&out, 0)
            .context("sending a netlink dump request")?;
        loop {
            let n = self
                .requests
                .recv(&mut &mut self.buf[..], 0)
                .context("reading a netlink dump")?;
            let mut off = 0;
            while off < n {
                let msg = NetlinkMessage::<RtMessage>::deserialize(&self.buf[off..n])
                    .context("parsing a netlink dump message")?;
                let len = msg.header.length as usize;
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => bail!("netlink dump failed: {e}"),
                    NetlinkPayload::InnerMessage(m) => {
                        state.apply_rt(&m);
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }

    /// Drops every queued event: after an overrun they are older than the dump
    /// that follows, and applying them after it would bring back deleted state.
    pub fn discard_pending(&mut self) {
        loop {
            match self.events.recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(_) => return,
            }
        }
    }

    /// Dumps everything again after an overrun, into a fresh state.
    pub fn resync(&mut self, table: u32) -> Result<KernelState> {
        self.discard_pending();
        let mut fresh = KernelState::new(table);
        self.dump(&mut fresh)?;
        Ok(fresh)
    }

    /// Fills `state` with a dump of the links only.
    pub fn dump_links(&mut self, state: &mut KernelState) -> Result<()> {
        self.request(RouteNetlinkMessage::GetLink(LinkMessage::default()), state)
    }

    /// Fills `state` from scratch with dumps of links, neighbours and routes.
    pub fn dump(&mut self, state: &mut KernelState) -> Result<()> {
        self.request(RouteNetlinkMessage::GetLink(LinkMessage::default()), state)?;
        self.request(
            RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
            state,
        )?;
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut m = RouteMessage::default();
            m.header = RouteHeader {
                address_family: family,
                ..Default::default()
            };
            self.request(RouteNetlinkMessage::GetRoute(m), state)?;
        }
        for m in dump_nexthops(&self.requests).context("dumping nexthop objects")? {
            state.apply_rt(&RtMessage::NewNexthop(m));
        }
        self.refresh_buckets(state)?;
        Ok(())
    }

    /// Reads the bucket tables of kernel resilient groups that changed.
    fn refresh_buckets(&mut self, state: &mut KernelState) -> Result<()> {
        for id in std::mem::take(&mut state.stale_buckets) {
            let msgs = match dump_nexthop_buckets(&self.requests, Some(id)) {
                Ok(m) => m,
                // Deleted since: its routes go with it.
                Err(e) if e.errno() == Some(libc::ENOENT) => continue,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("dumping the buckets of nexthop group {id}"))
                }
            };
            let mut table: Vec<u32> = Vec::new();
            for m in &msgs {
                if let Ok(b) = Bucket::from_message(m) {
                    let i = usize::from(b.index);
                    if table.len() <= i {
                        table.resize(i + 1, 0);
                    }
                    table[i] = b.nh_id;
                }
            }
            state.set_kernel_buckets(id, table);
        }
        Ok(())
    }

    /// Waits up to `timeout` for events and applies every one that arrived.
    pub fn poll(&mut self, state: &mut KernelState, timeout: Duration) -> Result<Event> {
        let mut pfd = libc::pollfd {
            fd: self.events.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe {
            libc::poll(
                &mut pfd,
                1,
                timeout.as_millis().min(i32::MAX as u128) as i32,
            )
        };
        if rc <= 0 {
            return Ok(Event::Idle);
        }
        let mut changed = Changed::default();
        loop {
            let n = match self.events.recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(Event::Overrun),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("reading netlink events"),
            };
            let mut off = 0;
            while off < n {
                let Ok(msg) = NetlinkMessage::<RtMessage>::deserialize(&self.buf[off..n]) else {
                    // A message this mirror does not parse; skip it by its length.
                    let len =
                        u32::from_ne_bytes(self.buf[off..off + 4].try_into().unwrap_or_default())
                            as usize;
                    if len == 0 {
                        break;
                    }
                    off += len;
                    continue;
                };
                let len = msg.header.length as usize;
                if let NetlinkPayload::InnerMessage(m) = msg.payload {
                    changed.merge(state.apply_rt(&m));
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
        if !state.stale_buckets.is_empty() {
            self.refresh_buckets(state)?;
            changed.nexthops = true;
        }
        Ok(Event::Changed(changed))
    }
}

/// Sets the receive buffer past rmem_max when allowed (root), else as large as permitted.
fn force_rcvbuf(s: &Socket, bytes: usize) -> Result<()> {
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: valid socket and an int option.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    if rc != 0 {
        s.set_rx_buf_sz(bytes)
            .context("setting the netlink receive buffer")?;
    }
    Ok(())
}
