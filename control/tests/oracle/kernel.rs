//! The kernel's own answer for a flow, asked over rtnetlink as `ip route get [fibmatch] DST from SRC iif IF ipproto P sport S dport D tos T` asks it, with nexthop objects and neighbour entries resolved.
//!
//! [`Kernel::route`] makes two RTM_GETROUTE requests for one [`Query`]:
//!
//! 1. with `RTM_F_FIB_MATCH`: the FIB entry the packet matches (type, table,
//!    metric, every hop with its weight and flags, `nhid`, route MTU);
//! 2. without it: the input-path decision for that one flow, i.e. the single
//!    hop the kernel picks (the multipath hash over the flow's fields).
//!
//! Both carry `RTA_DST`, `RTA_SRC`, `RTA_IIF`, `RTA_IP_PROTO`, `RTA_SPORT`,
//! `RTA_DPORT` and the header's `rtm_tos`; netlink-packet-route 0.34 encodes
//! every one of them (`RouteAttribute::{Destination, Source, Iif, IpProto,
//! Sport, Dport}`, ports in network order), so nothing goes through
//! `RouteAttribute::Other`.
//!
//! # What the kernel answers (Linux 6.18, measured by the oracle tests)
//!
//! The kernel answers a lookup that does not end in a forwarding or local
//! route with an errno, not with a route of that type, and the same errno for
//! the fibmatch request as for the plain one; `ip route get ... iif IF`
//! prints it as `RTNETLINK answers: <strerror>`. Both families:
//!
//! | case | errno | `ip route get` prints |
//! |---|---|---|
//! | `blackhole` route (or a route via a blackhole nexthop object) | `EINVAL` | `RTNETLINK answers: Invalid argument` |
//! | `unreachable` route | `EHOSTUNREACH` | `RTNETLINK answers: No route to host` |
//! | `prohibit` route | `EACCES` | `RTNETLINK answers: Permission denied` |
//! | `throw` route, or no route at all | `ENETUNREACH` | `RTNETLINK answers: Network is unreachable` |
//! | IPv4 forwarding off on the ingress device (`net.ipv4.conf.IF.forwarding=0`), any non-local destination, routed or not | `EHOSTUNREACH` | `RTNETLINK answers: No route to host` |
//!
//! So [`Kind::Blackhole`], [`Kind::Unreachable`], [`Kind::Prohibit`] and
//! [`Kind::Throw`] are decoded where the kernel sends them, but these
//! requests get [`Kind::Error`] instead. Local destinations still answer
//! `local` with IPv4 forwarding off.
//!
//! IPv6 forwarding switched off (`net.ipv6.conf.all.forwarding=0`) changes
//! nothing in either answer: the kernel reports the route and the hop it
//! would use, and only drops the packet later, in `ip6_forward`. A caller must
//! read that sysctl itself.
//!
//! # Which hop the kernel picks
//!
//! The ports only reach the multipath hash with
//! `net.ipv{4,6}.fib_multipath_hash_policy=1` (layer 4); with the default 0
//! the kernel hashes addresses only (and the IPv6 flow label). The kernel
//! accepts `RTA_IP_PROTO` only for TCP, UDP and ICMP of the query's family and
//! refuses any other protocol with `EOPNOTSUPP` ("Unsupported ip proto"); for
//! those the protocol and ports are left out of the request, the kernel hashes
//! the flow as protocol 0 without ports, and [`Answer::exact_flow`] is false.
//!
//! # Carrier and link state
//!
//! A hop whose device lost its carrier is reported `linkdown` (and still
//! chosen: `ignore_routes_with_linkdown` is 0 by default); one whose device is
//! down is `dead` and never chosen. The kernel learns of a carrier change from
//! its link watch, a moment after the change (tens of microseconds to
//! milliseconds here): an answer asked right after `ip link set PEER down`
//! may not show it yet.
//!
//! # Nexthop objects
//!
//! A route with `nhid` is answered with `RTA_NH_ID` (and, with
//! `net.ipv4.nexthop_compat_mode=1`, its hops expanded too); its hops are read
//! from the nexthop object itself (RTM_GETNEXTHOP by id, then each member), so
//! weights up to 65,535 and each member's `nhm_flags` are what [`Answer::hops`]
//! holds. The kernel deletes a nexthop object whose device loses its carrier
//! or goes down (and drops it from its groups), so a member is rarely seen
//! with `linkdown` or `dead`: it is gone instead.
//!
//! # IPv6 and the per-CPU route cache of a shared nexthop
//!
//! An IPv6 lookup ends in a per-CPU copy of the chosen hop's route, cached in
//! that hop (`fib6_nh`), and the fibmatch answer names the route that copy was
//! made from. A nexthop object's hop is shared by every route that uses it, so
//! once `::/0 nhid 22` (group [5]) has been looked up on a CPU, a flow into
//! `2001:db8:98::/64 nhid 21` (group [4, 5]) that the hash sends over
//! nexthop 5 is answered with `default nhid 22` on that CPU, until the IPv6
//! route generation changes (any route added or deleted). The copy also
//! carries that route's metrics: the plain answer, and the kernel's own
//! forwarding, use the MTU of whichever route filled the cache. The route the
//! FIB matched is asked for fresh: before each IPv6 fibmatch request,
//! [`Kernel::route`] bumps the generation with an `XFRM_MSG_SETDEFAULT` that
//! sets nothing (`ip xfrm policy setdefault` with no change), which drops the
//! cached copies and changes no route, rule or policy.

use std::net::IpAddr;

use anyhow::{anyhow, bail, Context, Result};
use control::nexthop_msg::{
    route_socket, split_datagram, GroupKind, Nexthop, NexthopAttribute, NexthopHeader, NexthopKind,
    NexthopMessage, RtMessage, RTNH_F_DEAD, RTNH_F_LINKDOWN, RTNH_F_ONLINK,
};
use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_ERROR, NLM_F_ACK,
    NLM_F_REQUEST,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteMetric, RouteNextHopFlags,
    RouteType, RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::Socket;

/// `NUD_*` neighbour states (`linux/neighbour.h`), as [`Neighbour::state`] holds them.
pub const NUD_INCOMPLETE: u16 = 0x01;
pub const NUD_REACHABLE: u16 = 0x02;
pub const NUD_STALE: u16 = 0x04;
pub const NUD_DELAY: u16 = 0x08;
pub const NUD_PROBE: u16 = 0x10;
pub const NUD_FAILED: u16 = 0x20;
pub const NUD_NOARP: u16 = 0x40;
pub const NUD_PERMANENT: u16 = 0x80;

/// `RTAX_MTU`: its bit in `RTAX_LOCK` says the MTU is locked.
const RTAX_MTU: u32 = 2;

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

/// A packet as it arrives: the flow's fields and the ingress interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Ingress interface index (`iif`).
    pub iif: u32,
    /// IP protocol (`ipproto`).
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// The IPv4 TOS byte (`rtm_tos`). A route with a `tos` is matched
    /// against the legacy TOS bits (0x1c) of it only, so a route whose `tos`
    /// has other bits (0x20, DSCP CS1, ...) is never matched.
    pub tos: u8,
}

impl Query {
    /// Whether the kernel accepts this protocol in a route request (TCP,
    /// UDP, and ICMP of the query's family): otherwise protocol and ports
    /// are not sent, and the kernel hashes the flow without them.
    pub fn kernel_takes_proto(&self) -> bool {
        match self.proto {
            IPPROTO_TCP | IPPROTO_UDP => true,
            IPPROTO_ICMP => self.dst.is_ipv4(),
            IPPROTO_ICMPV6 => self.dst.is_ipv6(),
            _ => false,
        }
    }
}

/// What a lookup gave: the route's type (`rtm_type`), or the errno the kernel
/// answered with (see the module's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Unicast,
    Local,
    Blackhole,
    Unreachable,
    Prohibit,
    Throw,
    /// Any other `RTN_*` (broadcast 3, multicast 5, ...).
    Other(u8),
    /// The request failed with this errno (positive, e.g. `libc::ENETUNREACH`).
    Error(i32),
}

impl Kind {
    fn of(kind: RouteType) -> Kind {
        match kind {
            RouteType::Unicast => Kind::Unicast,
            RouteType::Local => Kind::Local,
            RouteType::BlackHole => Kind::Blackhole,
            RouteType::Unreachable => Kind::Unreachable,
            RouteType::Prohibit => Kind::Prohibit,
            RouteType::Throw => Kind::Throw,
            other => Kind::Other(other.into()),
        }
    }

    /// The errno, for [`Kind::Error`].
    pub fn errno(self) -> Option<i32> {
        match self {
            Kind::Error(errno) => Some(errno),
            _ => None,
        }
    }
}

/// One way out: an interface and, unless the destination is on-link, a
/// gateway (`RTA_GATEWAY`, or `RTA_VIA` for an IPv4 route via IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hop {
    pub ifindex: u32,
    pub gateway: Option<IpAddr>,
    /// 1 for a single-path route, `rtnh_hops + 1` (1..=256) for a hop of a
    /// multipath route, the member's weight (1..=65,535) in a nexthop group.
    pub weight: u32,
    /// `RTNH_F_DEAD`: the kernel does not use this hop.
    pub dead: bool,
    /// `RTNH_F_LINKDOWN`: the device has no carrier.
    pub linkdown: bool,
    /// `RTNH_F_ONLINK`: the gateway is taken as on-link without a covering route.
    pub onlink: bool,
}

impl Hop {
    fn new(ifindex: u32, gateway: Option<IpAddr>, weight: u32, flags: u32) -> Hop {
        Hop {
            ifindex,
            gateway,
            weight,
            dead: flags & RTNH_F_DEAD != 0,
            linkdown: flags & RTNH_F_LINKDOWN != 0,
            onlink: flags & RTNH_F_ONLINK != 0,
        }
    }
}

/// The route's MTU metric (`RTAX_MTU`) and whether it is locked (`mtu lock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mtu {
    pub mtu: u32,
    pub locked: bool,
}

/// What a route's nexthop object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NexthopObject {
    Single,
    Blackhole,
    Group { resilient: bool },
}

/// The kernel's answer for one [`Query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The matched FIB entry's type, or the errno of the fibmatch lookup.
    pub kind: Kind,
    /// The matched entry's prefix (`RTA_DST`, `rtm_dst_len`; 0.0.0.0/0 or ::/0
    /// for a default route).
    pub prefix: Option<(IpAddr, u8)>,
    /// `RTA_TABLE`; None for an error. IPv4 reports its local routes in
    /// table 254 (main) until the first policy rule is added: until then the
    /// kernel keeps local and main in one trie and answers with main's id.
    /// IPv6 reports 255.
    pub table: Option<u32>,
    /// `RTA_PRIORITY`, 0 where absent (IPv4 leaves out a metric of 0); None for
    /// an error.
    pub metric: Option<u32>,
    /// Every hop of the matched entry (one for a single-path route, the
    /// device of a local route), or the members of its nexthop object.
    pub hops: Vec<Hop>,
    /// `RTA_NH_ID`, for a route via a nexthop object.
    pub nhid: Option<u32>,
    /// What that nexthop object is.
    pub nexthop: Option<NexthopObject>,
    /// `RTAX_MTU` of the matched entry.
    pub mtu: Option<Mtu>,
    /// The type of the kernel's decision for this flow (the cached input
    /// route: `Unicast` to forward, `Local` to deliver), or its errno.
    pub chosen_kind: Kind,
    /// The hop the kernel picks for this flow: `RTA_OIF` (`lo` for local
    /// delivery) and the gateway; weight and flags are those of the same hop
    /// in `hops` (0 and false if it is not there).
    pub chosen: Option<Hop>,
    /// False when the protocol could not be sent (see
    /// [`Query::kernel_takes_proto`]): `chosen` is then the hop of a
    /// protocol-0 flow without ports, not necessarily that of the packet.
    pub exact_flow: bool,
}

/// A neighbour entry (ARP / NDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    /// `NDA_LLADDR`: present in the states that have one (not in
    /// `INCOMPLETE` or `FAILED`).
    pub mac: Option<[u8; 6]>,
    /// `ndm_state` (`NUD_*`).
    pub state: u16,
}

impl Neighbour {
    /// `NUD_VALID`: the kernel sends with this entry's MAC (reachable, stale,
    /// delay, probe, permanent, noarp); otherwise it queues the packet and
    /// solicits.
    pub fn usable(&self) -> bool {
        self.state & (NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT | NUD_NOARP)
            != 0
    }
}

/// What one request got back.
enum Reply {
    Message(RtMessage),
    Errno(i32),
}

/// A NETLINK_ROUTE socket of the namespace the calling thread was in when
/// [`Kernel::open`] ran (a later `setns` does not move it).
pub struct Kernel {
    socket: Socket,
    /// NETLINK_XFRM, for [`Kernel::drop_cached_routes`].
    xfrm: Socket,
    sequence: u32,
}

/// `XFRM_MSG_SETDEFAULT` (`linux/xfrm.h`).
const XFRM_MSG_SETDEFAULT: u16 = 0x27;

impl Kernel {
    pub fn open() -> Result<Kernel> {
        let mut xfrm = Socket::new(netlink_sys::protocols::NETLINK_XFRM)
            .context("opening a NETLINK_XFRM socket")?;
        xfrm.bind_auto()
            .context("binding the NETLINK_XFRM socket")?;
        Ok(Kernel {
            socket: route_socket().context("opening a NETLINK_ROUTE socket")?,
            xfrm,
            sequence: 0,
        })
    }

    /// Drops the kernel's cached routes (both families) by bumping the route
    /// generation: an `XFRM_MSG_SETDEFAULT` whose three directions are
    /// `XFRM_USERPOLICY_UNSPEC` leaves every default policy as it is and
    /// still bumps the generation. See the module's note on IPv6.
    fn drop_cached_routes(&mut self) -> Result<()> {
        self.sequence = self.sequence.wrapping_add(1);
        // nlmsghdr, then struct xfrm_userpolicy_default { in, fwd, out } = 0,
        // padded to 4 bytes.
        let mut m = Vec::with_capacity(20);
        m.extend_from_slice(&20u32.to_ne_bytes());
        m.extend_from_slice(&XFRM_MSG_SETDEFAULT.to_ne_bytes());
        m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        m.extend_from_slice(&self.sequence.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&[0; 4]);
        self.xfrm
            .send(&m, 0)
            .context("sending XFRM_MSG_SETDEFAULT")?;
        loop {
            let (datagram, _) = self
                .xfrm
                .recv_from_full()
                .context("reading the XFRM_MSG_SETDEFAULT acknowledgement")?;
            for frame in split_datagram(&datagram) {
                let buf = NetlinkBuffer::new_checked(frame.context("framing an xfrm reply")?)?;
                if buf.sequence_number() != self.sequence || buf.message_type() != NLMSG_ERROR {
                    continue;
                }
                let code = buf
                    .payload()
                    .get(..4)
                    .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
                    .ok_or_else(|| anyhow!("a short xfrm acknowledgement"))?;
                if code != 0 {
                    bail!(
                        "XFRM_MSG_SETDEFAULT: {}",
                        std::io::Error::from_raw_os_error(-code)
                    );
                }
                return Ok(());
            }
        }
    }

    /// Sends one request (no ACK asked) and returns the kernel's one reply:
    /// the answer, or the errno of its NLMSG_ERROR.
    fn get(&mut self, message: RtMessage) -> Result<Reply> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .context("sending a netlink request")?;
        loop {
            let (datagram, _) = self
                .socket
                .recv_from_full()
                .context("reading a netlink reply")?;
            for frame in split_datagram(&datagram) {
                let frame = frame.context("framing a netlink reply")?;
                if NetlinkBuffer::new_checked(frame)?.sequence_number() != self.sequence {
                    continue;
                }
                let reply = NetlinkMessage::<RtMessage>::deserialize(frame)
                    .with_context(|| format!("decoding the netlink reply {frame:02x?}"))?;
                match reply.payload {
                    NetlinkPayload::InnerMessage(message) => return Ok(Reply::Message(message)),
                    NetlinkPayload::Error(e) => match e.code {
                        Some(code) => return Ok(Reply::Errno(-code.get())),
                        None => bail!("the kernel acknowledged a get without answering it"),
                    },
                    _ => {}
                }
            }
        }
    }

    /// One RTM_GETROUTE for `q`: the route message, or the errno.
    fn get_route(
        &mut self,
        q: &Query,
        fib_match: bool,
    ) -> Result<std::result::Result<RouteMessage, i32>> {
        match self.get(RtMessage::Route(RouteNetlinkMessage::GetRoute(
            route_request(q, fib_match),
        )))? {
            Reply::Errno(errno) => Ok(Err(errno)),
            Reply::Message(RtMessage::Route(RouteNetlinkMessage::NewRoute(m))) => Ok(Ok(m)),
            Reply::Message(other) => bail!("RTM_GETROUTE answered with {other:?}"),
        }
    }

    /// What the kernel does with `q`'s packet arriving on `q.iif`: the
    /// matched FIB entry and the hop it picks for the flow. The kernel's
    /// refusals are [`Kind::Error`]; `Err` is for a failing socket or a reply
    /// that does not decode.
    pub fn route(&mut self, q: &Query) -> Result<Answer> {
        let mut answer = Answer {
            kind: Kind::Error(0),
            prefix: None,
            table: None,
            metric: None,
            hops: Vec::new(),
            nhid: None,
            nexthop: None,
            mtu: None,
            chosen_kind: Kind::Error(0),
            chosen: None,
            exact_flow: q.kernel_takes_proto(),
        };
        if q.dst.is_ipv6() {
            self.drop_cached_routes()?;
        }
        match self.get_route(q, true)? {
            Err(errno) => answer.kind = Kind::Error(errno),
            Ok(m) => {
                let entry = Entry::of(&m);
                answer.kind = Kind::of(m.header.kind);
                answer.prefix = entry
                    .dst
                    .map(|dst| (dst, m.header.destination_prefix_length));
                answer.table = Some(entry.table.unwrap_or(m.header.table.into()));
                answer.metric = Some(entry.metric.unwrap_or(0));
                answer.mtu = entry.mtu;
                answer.nhid = entry.nhid;
                answer.hops = entry.hops;
                if let Some(id) = entry.nhid {
                    let (object, hops) = self
                        .nexthop(id)
                        .with_context(|| format!("resolving nexthop {id} of {q:?}"))?;
                    answer.nexthop = Some(object);
                    answer.hops = hops;
                }
            }
        }
        match self.get_route(q, false)? {
            Err(errno) => answer.chosen_kind = Kind::Error(errno),
            Ok(m) => {
                let entry = Entry::of(&m);
                answer.chosen_kind = Kind::of(m.header.kind);
                answer.chosen = entry.hops.first().map(|hop| {
                    answer
                        .hops
                        .iter()
                        .find(|h| h.ifindex == hop.ifindex && h.gateway == hop.gateway)
                        .copied()
                        .unwrap_or(Hop::new(hop.ifindex, hop.gateway, 0, 0))
                });
            }
        }
        Ok(answer)
    }

    /// Nexthop object `id` (RTM_GETNEXTHOP by id): what it is and its hops, a
    /// group's members each read in turn, with the group's weights and the
    /// member's own `nhm_flags`. A blackhole has no hop.
    pub fn nexthop(&mut self, id: u32) -> Result<(NexthopObject, Vec<Hop>)> {
        let nh = self.get_nexthop(id)?;
        match nh.kind {
            NexthopKind::Single {
                blackhole: true, ..
            } => Ok((NexthopObject::Blackhole, Vec::new())),
            NexthopKind::Single { oif, gateway, .. } => Ok((
                NexthopObject::Single,
                vec![Hop::new(oif.unwrap_or(0), gateway, 1, nh.flags)],
            )),
            NexthopKind::Group { kind, members } => {
                let mut hops = Vec::with_capacity(members.len());
                for (member, weight) in members {
                    let m = self
                        .get_nexthop(member)
                        .with_context(|| format!("member {member} of group {id}"))?;
                    if let NexthopKind::Single {
                        oif,
                        gateway,
                        blackhole: false,
                        ..
                    } = m.kind
                    {
                        hops.push(Hop::new(oif.unwrap_or(0), gateway, weight.into(), m.flags));
                    }
                }
                let resilient = matches!(kind, GroupKind::Resilient { .. });
                Ok((NexthopObject::Group { resilient }, hops))
            }
        }
    }

    fn get_nexthop(&mut self, id: u32) -> Result<Nexthop> {
        let request = NexthopMessage {
            header: NexthopHeader::default(),
            attributes: vec![NexthopAttribute::Id(id)],
        };
        match self.get(RtMessage::GetNexthop(request))? {
            Reply::Message(RtMessage::NewNexthop(m)) => Ok(Nexthop::from_message(&m)?),
            Reply::Message(other) => bail!("RTM_GETNEXTHOP {id} answered with {other:?}"),
            Reply::Errno(errno) => Err(anyhow!(
                "RTM_GETNEXTHOP {id}: {}",
                std::io::Error::from_raw_os_error(errno)
            )),
        }
    }

    /// The neighbour entry of `addr` on `ifindex` (RTM_GETNEIGH by address,
    /// which the kernel serves for both families), None if there is none.
    pub fn neighbour(&mut self, ifindex: u32, addr: IpAddr) -> Result<Option<Neighbour>> {
        let mut m = NeighbourMessage::default();
        m.header.family = family(addr);
        m.header.ifindex = ifindex;
        m.header.state = NeighbourState::from(0u16);
        m.attributes = vec![NeighbourAttribute::Destination(match addr {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        })];
        match self.get(RtMessage::Route(RouteNetlinkMessage::GetNeighbour(m)))? {
            Reply::Errno(libc::ENOENT) => Ok(None),
            Reply::Errno(errno) => Err(anyhow!(
                "RTM_GETNEIGH {addr} on ifindex {ifindex}: {}",
                std::io::Error::from_raw_os_error(errno)
            )),
            Reply::Message(RtMessage::Route(RouteNetlinkMessage::NewNeighbour(n))) => {
                let mac = n.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::LinkLayerAddress(l) => <[u8; 6]>::try_from(&l[..]).ok(),
                    _ => None,
                });
                Ok(Some(Neighbour {
                    mac,
                    state: n.header.state.into(),
                }))
            }
            Reply::Message(other) => bail!("RTM_GETNEIGH answered with {other:?}"),
        }
    }
}

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn full_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The RTM_GETROUTE request `ip route get [fibmatch] ...` sends.
fn route_request(q: &Query, fib_match: bool) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family(q.dst);
    m.header.destination_prefix_length = full_len(q.dst);
    m.header.source_prefix_length = full_len(q.src);
    m.header.tos = q.tos;
    if fib_match {
        m.header.flags = RouteFlags::FibMatch;
    }
    m.attributes = vec![
        RouteAttribute::Destination(q.dst.into()),
        RouteAttribute::Source(q.src.into()),
        RouteAttribute::Iif(q.iif),
    ];
    if q.kernel_takes_proto() {
        m.attributes.extend([
            RouteAttribute::IpProto(q.proto),
            RouteAttribute::Sport(q.sport),
            RouteAttribute::Dport(q.dport),
        ]);
    }
    m
}

/// The fields of a route reply this module reads.
struct Entry {
    dst: Option<IpAddr>,
    table: Option<u32>,
    metric: Option<u32>,
    nhid: Option<u32>,
    mtu: Option<Mtu>,
    /// `RTA_MULTIPATH`'s hops, else one hop from `RTA_OIF` and the gateway.
    hops: Vec<Hop>,
}

fn address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some((*a).into()),
        RouteAddress::Inet6(a) => Some((*a).into()),
        _ => None,
    }
}

/// `RTA_GATEWAY` or `RTA_VIA` among `attrs`.
fn gateway(attrs: &[RouteAttribute]) -> Option<IpAddr> {
    attrs.iter().find_map(|a| match a {
        RouteAttribute::Gateway(g) => address(g),
        RouteAttribute::Via(RouteVia::Inet(g)) => Some((*g).into()),
        RouteAttribute::Via(RouteVia::Inet6(g)) => Some((*g).into()),
        _ => None,
    })
}

impl Entry {
    fn of(m: &RouteMessage) -> Entry {
        let mut e = Entry {
            dst: None,
            table: None,
            metric: None,
            nhid: None,
            mtu: None,
            hops: Vec::new(),
        };
        let mut oif = None;
        let mut multipath = None;
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(d) => e.dst = address(d),
                RouteAttribute::Table(t) => e.table = Some(*t),
                RouteAttribute::Priority(p) => e.metric = Some(*p),
                RouteAttribute::NhId(id) => e.nhid = Some(*id),
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::MultiPath(hops) => multipath = Some(hops),
                RouteAttribute::Metrics(metrics) => {
                    let mut lock = 0;
                    for metric in metrics {
                        match metric {
                            RouteMetric::Mtu(mtu) => {
                                e.mtu = Some(Mtu {
                                    mtu: *mtu,
                                    locked: false,
                                })
                            }
                            RouteMetric::Lock(bits) => lock = *bits,
                            _ => {}
                        }
                    }
                    if let Some(mtu) = &mut e.mtu {
                        mtu.locked = lock & (1 << RTAX_MTU) != 0;
                    }
                }
                _ => {}
            }
        }
        if e.dst.is_none() && m.header.destination_prefix_length == 0 {
            e.dst = Some(match m.header.address_family {
                AddressFamily::Inet6 => IpAddr::from([0u16; 8]),
                _ => IpAddr::from([0u8; 4]),
            });
        }
        e.hops = match multipath {
            Some(hops) => hops
                .iter()
                .map(|h| {
                    let flags = h.flags;
                    Hop {
                        ifindex: h.interface_index,
                        gateway: gateway(&h.attributes),
                        weight: u32::from(h.hops) + 1,
                        dead: flags.contains(RouteNextHopFlags::Dead),
                        linkdown: flags.contains(RouteNextHopFlags::Linkdown),
                        onlink: flags.contains(RouteNextHopFlags::Onlink),
                    }
                })
                .collect(),
            None => oif
                .map(|oif| Hop::new(oif, gateway(&m.attributes), 1, m.header.flags.bits() & 0xff))
                .into_iter()
                .collect(),
        };
        e
    }
}
