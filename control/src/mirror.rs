//! The netlink side of the mirror: one socket subscribed to link, neighbour, route and nexthop events, one for dumps (subscribe first, then dump).

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netlink_packet_core::{
    NetlinkBuffer, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::neighbour::NeighbourMessage;
use netlink_packet_route::route::{RouteHeader, RouteMessage};
use netlink_packet_route::rule::RuleMessage;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};

use crate::nexthop_msg::{
    dump_nexthop_buckets, dump_nexthops, message_type_name, split_datagram, Bucket, RtMessage,
    RTNLGRP_NEXTHOP,
};
use crate::state::{Changed, KernelState};
use crate::xdp_features::XdpFeatures;

const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_NEIGH: u32 = 3;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_IPV6_ROUTE: u32 = 11;
const RTNLGRP_IPV4_RULE: u32 = 8;
const RTNLGRP_IPV6_RULE: u32 = 19;
const RTNLGRP_IPV4_NETCONF: u32 = 24;
const RTNLGRP_IPV6_NETCONF: u32 = 25;

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

/// Bytes of each buffer netlink datagrams are read into.
const DATAGRAM_BUF: usize = 1 << 20;

/// A datagram's messages as decoded, and whether it ends the dump.
type Decoded = (Vec<NetlinkMessage<RtMessage>>, bool);

/// Datagrams a dump's reading thread may be ahead of the one applying them.
const DUMP_AHEAD: usize = 16;

/// Whether a dump's datagram holds its last message (done, or an error).
/// A frame that does not parse is not taken for it: reading goes on, as
/// decoding skips the rest of that datagram and goes on.
fn ends_dump(datagram: &[u8]) -> bool {
    split_datagram(datagram).any(|f| {
        f.ok()
            .and_then(|f| NetlinkBuffer::new_checked(f).ok())
            .is_some_and(|b| {
                matches!(
                    b.message_type(),
                    netlink_packet_core::NLMSG_DONE | netlink_packet_core::NLMSG_ERROR
                )
            })
    })
}

/// Netlink sockets of the mirror.
pub struct Mirror {
    events: Socket,
    requests: Socket,
    seq: u32,
    buf: Vec<u8>,
    /// Messages skipped because they did not decode.
    undecodable: u64,
    /// The devices' XDP features (`None`: the kernel cannot say).
    xdp: Option<XdpFeatures>,
    /// The oldest moment since which the events the last `poll` applied
    /// can have been waiting (None: it timed out).
    readable_at: Option<Instant>,
    /// Netlink messages the last `poll` applied.
    messages: u64,
    /// Event datagrams read but not applied yet, each with the moment
    /// since which it can have been waiting (see `poll`).
    queue: std::collections::VecDeque<(Vec<u8>, Instant)>,
    queued_bytes: usize,
    /// When the event socket was last read until it was empty.
    emptied: Option<Instant>,
}

/// At most this many bytes of read events wait in the queue; beyond, they
/// wait in the socket's buffer (whose overrun starts a dump).
const QUEUE_BYTES: usize = 64 << 20;

/// At most this many event messages are applied per [`Mirror::poll`] (the
/// datagram that reaches it is applied whole): the maps are written between
/// batches, so a burst of changes (an `ip -batch`, a routing daemon's
/// table) does not hold its first change back until its last is applied.
pub const PASS_MESSAGES: u64 = 16;

/// One poll reads events into the queue for at most this long, then applies
/// what it has. While the kernel announces changes about as fast as they are
/// read (a burst in progress), the socket is never found empty: reading it
/// "to the end" read the whole burst before applying its first change, 6.5 ms
/// for a burst of 500 route changes. A backlog is still read fast (about a
/// microsecond a datagram), so the socket does not overrun.
pub const READ_BUDGET: Duration = Duration::from_micros(200);

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
            RTNLGRP_IPV4_IFADDR,
            RTNLGRP_IPV6_IFADDR,
            RTNLGRP_IPV4_ROUTE,
            RTNLGRP_IPV6_ROUTE,
            RTNLGRP_IPV4_RULE,
            RTNLGRP_IPV6_RULE,
            RTNLGRP_IPV4_NETCONF,
            RTNLGRP_IPV6_NETCONF,
            RTNLGRP_NEXTHOP,
        ] {
            events
                .add_membership(g)
                .with_context(|| format!("joining netlink group {g}"))?;
        }
        force_rcvbuf(&events, rcvbuf)?;
        let m = Self::with_events(events)?;
        if m.xdp.is_none() {
            tracing::warn!("this kernel does not say which devices transmit redirected XDP frames (no netdev generic netlink family, Linux < 6.3): every port is taken to");
        }
        Ok(m)
    }

    /// A mirror that only dumps (its event socket joins no group), for a
    /// dump made beside the event loop.
    pub fn for_dumps() -> Result<Self> {
        Self::with_events(socket()?)
    }

    fn with_events(events: Socket) -> Result<Self> {
        let xdp = XdpFeatures::open()?;
        Ok(Mirror {
            events,
            requests: socket()?,
            seq: 1,
            buf: vec![0; DATAGRAM_BUF],
            undecodable: 0,
            xdp,
            readable_at: None,
            messages: 0,
            queue: Default::default(),
            queued_bytes: 0,
            emptied: None,
        })
    }

    /// Sends `msg` with `flags` under a new sequence number.
    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        let mut nl = NetlinkMessage::from(RtMessage::Route(msg));
        nl.header.flags = flags;
        self.seq += 1;
        nl.header.sequence_number = self.seq;
        nl.finalize();
        let mut out = vec![0; nl.buffer_len()];
        nl.serialize(&mut out);
        self.requests
            .send(&out, 0)
            .context("sending a netlink request")?;
        Ok(())
    }

    /// Dumps what `msg` asks for into `state`. The kernel makes a dump's
    /// datagrams as they are read (a route dump's work is the reading
    /// thread's), so one thread reads and decodes while this one applies:
    /// with 1M routes, applying alone kept this thread busy (the kernel's
    /// part and the decoding were a third of the dump).
    fn request(&mut self, msg: RouteNetlinkMessage, state: &mut KernelState) -> Result<()> {
        self.send(msg, NLM_F_REQUEST | NLM_F_DUMP)?;
        let (full_tx, full) = std::sync::mpsc::sync_channel::<std::io::Result<Decoded>>(DUMP_AHEAD);
        // Applied messages go back to be freed where they were allocated:
        // freed here, each took the reader's allocator lock (perf: 6% of
        // this thread's dump time in free).
        let (done_tx, done) = std::sync::mpsc::channel::<Vec<NetlinkMessage<RtMessage>>>();
        let socket = &self.requests;
        let mut buf = std::mem::take(&mut self.buf);
        let result = std::thread::scope(|s| {
            let reader = s.spawn(move || {
                let mut skipped = 0;
                loop {
                    done.try_iter().for_each(drop);
                    // Datagrams of a dump are at most 32 KiB; a read into a
                    // smaller buffer would cut one short, so it is 1 MiB
                    // (untouched pages cost nothing).
                    let read = socket.recv(&mut &mut buf[..], 0).map(|n| {
                        let d = &buf[..n];
                        (decode(d, &mut skipped), ends_dump(d))
                    });
                    let last = read.as_ref().map_or(true, |r| r.1);
                    if full_tx.send(read).is_err() || last {
                        return (buf, skipped);
                    }
                }
            });
            let applied = (|| {
                for read in &full {
                    let (msgs, _) = read.context("reading a netlink dump")?;
                    for msg in &msgs {
                        match &msg.payload {
                            NetlinkPayload::Done(_) => return Ok(()),
                            NetlinkPayload::Error(e) => bail!("netlink dump failed: {e}"),
                            NetlinkPayload::InnerMessage(m) => {
                                state.apply_rt_flags(m, msg.header.flags);
                            }
                            _ => {}
                        }
                    }
                    let _ = done_tx.send(msgs);
                }
                bail!("the netlink dump ended without its last message")
            })();
            // The reader stops at the dump's last datagram, or when this
            // side has stopped listening (dropped with the channel).
            drop(full);
            match reader.join() {
                Ok((buf, skipped)) => (applied, buf, skipped),
                Err(_) => (
                    Err(anyhow::anyhow!("the netlink dump's reading thread failed")),
                    vec![0; DATAGRAM_BUF],
                    0,
                ),
            }
        });
        let (applied, buf, skipped) = result;
        self.undecodable += skipped;
        // The buffer events are read into.
        self.buf = buf;
        applied
    }

    /// When the event socket was last read until it was empty.
    pub fn emptied(&self) -> Option<Instant> {
        self.emptied
    }

    /// Messages this mirror's own reads skipped (no nexthop dump's).
    pub fn own_undecodable(&self) -> u64 {
        self.undecodable
    }

    /// Counts messages another mirror's dump skipped.
    pub fn add_undecodable(&mut self, n: u64) {
        self.undecodable += n;
    }

    /// Netlink messages skipped because they did not decode, in dumps and
    /// events (this mirror's and the nexthop dumps').
    pub fn undecodable(&self) -> u64 {
        self.undecodable + crate::nexthop_msg::undecodable_replies()
    }

    /// The descriptors events arrive on: rtnetlink, then the XDP features'.
    fn pollfds(&self) -> Vec<libc::pollfd> {
        let fd = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut v = vec![fd(self.events.as_raw_fd())];
        v.extend(self.xdp.as_ref().map(|x| fd(x.fd())));
        v
    }

    /// Where the latency of the events the last [`Mirror::poll`] applied
    /// starts: the oldest moment since which one of them can have been
    /// waiting (None: that poll timed out).
    pub fn readable_at(&self) -> Option<Instant> {
        self.readable_at
    }

    /// How many netlink messages the last [`Mirror::poll`] applied.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Event datagrams read but not applied yet.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Events are waiting to be read.
    pub fn has_pending(&self) -> bool {
        if !self.queue.is_empty() {
            return true;
        }
        let mut pfds = self.pollfds();
        // SAFETY: valid pollfds, no wait.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 0) > 0 }
    }

    /// Drops every queued event: after an overrun they are older than the dump
    /// that follows, and applying them after it would bring back deleted state.
    pub fn discard_pending(&mut self) {
        self.queue.clear();
        self.queued_bytes = 0;
        self.emptied = None;
        if let Some(x) = &mut self.xdp {
            let _ = x.drain();
        }
        loop {
            match self.events.recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(_) => return,
            }
        }
    }

    /// Waits until every rtnetlink change that had begun when this was
    /// called has finished. The kernel announces a deleted address or a link
    /// going down before it flushes what depends on it (both under the RTNL
    /// lock, which route dumps no longer take): a no-op RTM_NEWLINK on `lo`
    /// takes that lock, so once it is acknowledged a dump sees the flush.
    /// Without CAP_NET_ADMIN it falls back to a pause of 50 ms.
    pub fn rtnl_barrier(&mut self) -> Result<()> {
        let mut link = LinkMessage::default();
        link.header.index = 1;
        self.send(
            RouteNetlinkMessage::SetLink(link),
            NLM_F_REQUEST | NLM_F_ACK,
        )?;
        loop {
            let n = self
                .requests
                .recv(&mut &mut self.buf[..], 0)
                .context("reading a netlink barrier's answer")?;
            for msg in decode(&self.buf[..n], &mut self.undecodable) {
                if msg.header.sequence_number != self.seq {
                    continue;
                }
                if let NetlinkPayload::Error(e) = msg.payload {
                    if e.code.is_some() {
                        tracing::debug!("netlink barrier refused ({e}): pausing instead");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Dumps everything again (after an overrun, or a change that may have
    /// flushed state without a message), into a fresh state. The queued
    /// events are dropped first (the dump is newer); a dropped one may be the
    /// announcement of a change whose silent flush is still under way, so
    /// the dump waits for it behind the RTNL barrier.
    pub fn resync(&mut self, table: u32) -> Result<KernelState> {
        self.discard_pending();
        self.rtnl_barrier()?;
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
        // What a dump fills is synced whole.
        state.mark_all_dirty();
        self.request(RouteNetlinkMessage::GetLink(LinkMessage::default()), state)?;
        if let Some(x) = &mut self.xdp {
            state.set_xdp_features(x.dump()?);
        }
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
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut m = RuleMessage::default();
            m.header.family = family;
            self.request(RouteNetlinkMessage::GetRule(m), state)?;
        }
        for m in dump_nexthops(&self.requests).context("dumping nexthop objects")? {
            state.apply_rt(&RtMessage::NewNexthop(m));
        }
        self.refresh_buckets(state);
        Ok(())
    }

    /// Reads the bucket tables of kernel resilient groups that changed.
    fn refresh_buckets(&mut self, state: &mut KernelState) {
        let mut retry = Vec::new();
        for id in std::mem::take(&mut state.stale_buckets) {
            let msgs = match dump_nexthop_buckets(&self.requests, Some(id)) {
                Ok(m) => m,
                // Deleted since: its routes go with it.
                Err(e) if e.errno() == Some(libc::ENOENT) => continue,
                Err(e) => {
                    // Its last table stays; read again with the next events.
                    tracing::warn!("dumping the buckets of nexthop group {id} failed: {e}; retried with the next netlink events");
                    retry.push(id);
                    continue;
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
        state.stale_buckets.extend(retry);
    }

    /// Waits up to `timeout` for events and applies those that arrived, up
    /// to [`PASS_MESSAGES`] of them.
    pub fn poll(&mut self, state: &mut KernelState, timeout: Duration) -> Result<Event> {
        // What is readable now came after the socket was last emptied.
        if self.queue.is_empty() {
            let since = self.emptied.unwrap_or_else(Instant::now);
            if self.drain(since)? {
                return Ok(Event::Overrun);
            }
        }
        let mut pfds = self.pollfds();
        // Read but not applied yet: no wait.
        let wait = if self.queue.is_empty() {
            timeout
        } else {
            Duration::ZERO
        };
        // SAFETY: valid pollfds.
        let rc = unsafe {
            libc::poll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                wait.as_millis().min(i32::MAX as u128) as i32,
            )
        };
        self.messages = 0;
        if rc <= 0 && self.queue.is_empty() {
            self.readable_at = None;
            return Ok(Event::Idle);
        }
        let mut changed = Changed::default();
        if rc > 0 {
            if let Some(x) = &mut self.xdp {
                match x.drain() {
                    Ok(all) => {
                        for (i, f) in all {
                            changed.links |= state.set_xdp_feature(i, f);
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(Event::Overrun),
                    Err(e) => return Err(e).context("reading netdev notifications"),
                }
            }
        }
        // Everything readable is read now, stamped with the moment since
        // which it can have waited: the socket was empty when it was last
        // read to the end; after a wait (the socket empty when it began),
        // events came when the wait ended.
        let woke = Instant::now();
        let since = if wait.is_zero() {
            self.emptied.unwrap_or(woke)
        } else {
            woke
        };
        if self.drain(since)? {
            return Ok(Event::Overrun);
        }
        // At most PASS_MESSAGES are applied; the rest waits for the next
        // poll, which returns at once.
        let mut oldest: Option<Instant> = None;
        while self.messages < PASS_MESSAGES {
            let Some((datagram, since)) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes -= datagram.len();
            oldest = Some(oldest.map_or(since, |o| o.min(since)));
            for msg in decode(&datagram, &mut self.undecodable) {
                self.messages += 1;
                if let NetlinkPayload::InnerMessage(m) = msg.payload {
                    changed.merge(state.apply_rt_flags(&m, msg.header.flags));
                }
            }
        }
        self.readable_at = Some(oldest.unwrap_or(woke));
        if !state.stale_buckets.is_empty() {
            self.refresh_buckets(state);
            changed.nexthops = true;
        }
        Ok(Event::Changed(changed))
    }

    /// Reads readable event datagrams into the queue, each stamped `since`,
    /// until the socket is empty, [`READ_BUDGET`] has passed or the queue
    /// holds [`QUEUE_BYTES`]; true on an overrun (the kernel dropped events:
    /// the queue is dropped too, a dump follows).
    fn drain(&mut self, since: Instant) -> Result<bool> {
        let began = Instant::now();
        while self.queued_bytes < QUEUE_BYTES && began.elapsed() < READ_BUDGET {
            let n = match self.events.recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.queue.clear();
                    self.queued_bytes = 0;
                    self.emptied = None;
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.emptied = Some(Instant::now());
                    return Ok(false);
                }
                Err(e) => return Err(e).context("reading netlink events"),
            };
            self.queued_bytes += n;
            self.queue.push_back((self.buf[..n].to_vec(), since));
        }
        // Full, or out of time: what is left in the socket has waited at
        // least since the socket was last found empty, which stays the stamp.
        Ok(false)
    }
}

/// The messages of a datagram. One that does not decode (a kernel newer
/// than netlink-packet-route can send attributes it does not know) is
/// skipped, counted in `skipped` and logged; a frame whose length field is
/// inconsistent ends the datagram (the same count and log).
fn decode(datagram: &[u8], skipped: &mut u64) -> Vec<NetlinkMessage<RtMessage>> {
    let mut out = Vec::new();
    for frame in split_datagram(datagram) {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                *skipped += 1;
                tracing::warn!(
                    skipped = *skipped,
                    "skipping the rest of a netlink datagram: a length field is wrong ({e})"
                );
                break;
            }
        };
        match NetlinkMessage::<RtMessage>::deserialize(frame) {
            Ok(m) => out.push(m),
            Err(e) => {
                *skipped += 1;
                let kind = NetlinkBuffer::new_checked(frame).map_or(0, |b| b.message_type());
                tracing::warn!(
                    skipped = *skipped,
                    "skipping a netlink {} that does not decode: {e}",
                    message_type_name(kind)
                );
            }
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use netlink_sys::SocketAddr;

    use super::*;

    /// An RTM_NEWROUTE for 10.9.9.9/32 in table 254; with `bad_table`, its
    /// RTA_TABLE is 2 bytes long, which netlink-packet-route refuses.
    fn route_message(bad_table: bool) -> Vec<u8> {
        let mut m = Vec::new();
        let len: u32 = if bad_table {
            16 + 12 + 8 + 8
        } else {
            16 + 12 + 8
        };
        m.extend(len.to_ne_bytes());
        m.extend(24u16.to_ne_bytes()); // RTM_NEWROUTE
        m.extend([0; 10]); // flags, sequence, port
        m.extend([2, 32, 0, 0, 254, 4, 0, 1]); // rtmsg: inet, /32, table main, static, unicast
        m.extend(0u32.to_ne_bytes());
        m.extend(8u16.to_ne_bytes()); // RTA_DST
        m.extend(1u16.to_ne_bytes());
        m.extend([10, 9, 9, 9]);
        if bad_table {
            m.extend(6u16.to_ne_bytes()); // RTA_TABLE of 2 bytes
            m.extend(15u16.to_ne_bytes());
            m.extend([254, 0, 0, 0]);
        }
        m
    }

    #[test]
    fn a_message_that_does_not_decode_is_skipped_and_counted() {
        let datagram = [route_message(true), route_message(false)].concat();
        let mut skipped = 0;
        let msgs = decode(&datagram, &mut skipped);
        assert_eq!(skipped, 1);
        assert_eq!(msgs.len(), 1, "the message after it is read");
        let mut state = KernelState::new(254);
        for m in msgs {
            if let NetlinkPayload::InnerMessage(m) = m.payload {
                state.apply_rt(&m);
            }
        }
        assert_eq!(state.routes.len(), 1);
    }

    /// A netlink header alone: done (3) or error (2) end a dump.
    fn header_only(kind: u16) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend(20u32.to_ne_bytes());
        m.extend(kind.to_ne_bytes());
        m.extend([0; 10]);
        m.extend(0u32.to_ne_bytes());
        m
    }

    #[test]
    fn the_reading_thread_stops_at_the_dumps_last_message_only() {
        let route = route_message(false);
        assert!(!ends_dump(&route));
        assert!(!ends_dump(&[route.clone(), route_message(true)].concat()));
        assert!(ends_dump(&[route.clone(), header_only(3)].concat()));
        assert!(ends_dump(&header_only(2)));
        // A length field past the datagram: not taken for the end (the
        // decoder skips the rest, reading goes on).
        let mut cut = header_only(3);
        cut[0] = 200;
        assert!(!ends_dump(&[route, cut].concat()));
    }

    #[test]
    fn a_dump_goes_on_past_a_message_it_cannot_decode() {
        if !testnet::require_root("a_dump_goes_on_past_a_message_it_cannot_decode") {
            return;
        }
        let net = testnet::TestNet::new("undecodable", &[("xe-u0", "xe-u1")]).expect("namespace");
        net.enter().expect("enter");
        let mut mirror = Mirror::open(1 << 20).expect("mirror");
        // The message reaches the dump socket first, as if in the dump.
        let mut addr = SocketAddr::new(0, 0);
        mirror.requests.get_address(&mut addr).expect("address");
        let sender = socket().expect("socket");
        sender
            .send_to(
                &route_message(true),
                &SocketAddr::new(addr.port_number(), 0),
                0,
            )
            .expect("send");
        let mut state = KernelState::new(254);
        mirror.dump(&mut state).expect("the dump goes on");
        assert_eq!(mirror.undecodable, 1);
        assert!(
            state.links.values().any(|l| l.name == "xe-u0"),
            "the dump is complete: {:?}",
            state.links
        );
    }
}
