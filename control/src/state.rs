//! The kernel's routing state as the control plane mirrors it: links, neighbours, routes and nexthop objects, updated from netlink messages.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use ahash::{AHashMap, AHashSet};

use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, LinkXdp, XdpAttached,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteMetric, RouteNextHopFlags,
    RouteType, RouteVia,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::RouteNetlinkMessage;

use crate::aliases::{self, Alias, Metrics, Op};
use crate::nexthop_msg::{Bucket, GroupKind, Nexthop, NexthopKind, RtMessage};

/// The kernel's main table and local table ids.
pub const TABLE_MAIN: u32 = 254;
pub const TABLE_LOCAL: u32 = 255;

/// A network interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// Administratively up and carrier present.
    pub up: bool,
    /// Administratively up (`ip link set up`), carrier or not: going down
    /// flushes IPv4 routes even when the carrier was already gone.
    pub admin_up: bool,
    /// Transmits frames redirected to it: its XDP features say `NDO_XMIT`
    /// (true where the kernel cannot say, before Linux 6.3).
    pub xdp_tx: bool,
    /// A veth's peer, when it is in this namespace (`IFLA_LINK` without
    /// `IFLA_LINK_NETNSID`).
    pub veth_peer: Option<u32>,
    /// An XDP program is attached (`IFLA_XDP`).
    pub xdp_attached: bool,
    /// GRO is on (asked by ethtool, of veths only; true where it cannot be
    /// asked).
    pub gro: bool,
}

/// A neighbour entry (ARP / ND).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub mac: Option<[u8; 6]>,
    /// The MAC may be used to send (reachable, stale, delay, probe, permanent, noarp).
    pub usable: bool,
}

/// An IP prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// One way out: an interface and, unless the destination is on-link, a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathKey {
    pub ifindex: u32,
    pub gateway: Option<IpAddr>,
}

/// A path with its ECMP weight: 1..=256 for a hop of a multipath route,
/// 1..=65,535 for a member of a nexthop group, and their sum for a path
/// listed more than once (translate merges those).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WeightedPath {
    pub path: PathKey,
    pub weight: u32,
}

/// What a route does with a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// Forward over these paths (one for a single-path route).
    Paths(Vec<WeightedPath>),
    /// Forward over a nexthop object (`nhid`).
    Nexthop(u32),
    Local,
    Blackhole,
    Unreachable,
    Prohibit,
    /// What the program cannot decide as the kernel would (a TOS route,
    /// `throw`, `nat`, broadcast, anycast or multicast routes, several IPv6
    /// routes of one metric): packets go to the kernel.
    KernelOnly,
}

/// Resilient group parameters, in the kernel's units (seconds for timers here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResilientParams {
    pub buckets: u16,
    pub idle_timer_s: u32,
    pub unbalanced_timer_s: u32,
}

/// A nexthop object (`ip nexthop`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NexthopObject {
    Single {
        path: PathKey,
        blackhole: bool,
    },
    Group {
        members: Vec<(u32, u16)>,
        resilient: Option<ResilientParams>,
    },
}

/// Everything mirrored, keyed the way the translation needs it.
#[derive(Debug, Clone, Default)]
pub struct KernelState {
    pub links: HashMap<u32, Link>,
    pub neighbours: HashMap<(u32, IpAddr), Neighbour>,
    /// Routes by prefix, then by metric (the lowest metric wins): what
    /// forwards, derived from `aliases`.
    pub routes: AHashMap<Prefix, Metrics>,
    /// Every route of the mirrored table, as the kernel keys them.
    pub aliases: AHashMap<Prefix, Vec<Alias>>,
    /// What the local table (this host's addresses, broadcast and anycast
    /// routes) decides for a prefix, derived from `local_aliases`: the
    /// kernel looks in the local table before main, so an entry there wins
    /// over any route of the mirrored table to the prefix or inside it.
    pub local_routes: BTreeMap<Prefix, RouteTarget>,
    pub local_aliases: AHashMap<Prefix, Vec<Alias>>,
    pub nexthops: HashMap<u32, NexthopObject>,
    /// The kernel's bucket -> nexthop id assignment of its resilient groups.
    pub kernel_buckets: HashMap<u32, Vec<u32>>,
    /// The routing table mirrored (local-type routes come from the local table too).
    pub table: u32,
    /// Prefixes whose routes changed since the last `take_dirty`.
    dirty: PrefixSet,
    /// Something every route may depend on changed (nexthop objects).
    dirty_all: bool,
    /// A delete left a route whose hops' MTU only the kernel knows (an
    /// IPv6 route first seen in a dump): it must be dumped again.
    ask_kernel: bool,
    /// Resilient groups whose bucket table must be read again: the kernel
    /// moves buckets on member changes without a bucket notification.
    pub stale_buckets: HashSet<u32>,
    /// Policy routing rules other than the kernel's defaults (lookup local,
    /// main, default), by family (false: IPv4): with any, a lookup may
    /// start elsewhere than the tables mirrored, so that family's routes go
    /// to the kernel. Each rule as its message prints, to match deletes.
    pub custom_rules: BTreeSet<(bool, String)>,
    /// Every device's XDP features, by ifindex (`None`: the kernel has no
    /// `netdev` family to say).
    pub xdp_features: Option<HashMap<u32, u64>>,
    /// While an anti-entropy round runs, what events changed (see
    /// `entropy_round`).
    pub touched: Option<Touched>,
}

/// A set of prefixes (as the mirror marks them changed).
pub type PrefixSet = AHashSet<Prefix>;

/// What route and rule events changed since it was set: the mirrored
/// table's prefixes, and whether anything else (the local table, rules).
#[derive(Debug, Clone, Default)]
pub struct Touched {
    pub prefixes: PrefixSet,
    pub other: bool,
}

/// What the reconciler must look at again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dirty {
    /// Every prefix (first sync, re-dump, nexthop objects changed).
    All,
    /// Only these prefixes; groups and next hops are always rechecked.
    Prefixes(PrefixSet),
}

/// What a message changed, so the reconciler knows what to redo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Changed {
    pub links: bool,
    pub neighbours: bool,
    pub routes: bool,
    pub nexthops: bool,
    /// A forwarding or rp_filter switch changed (RTM_NEWNETCONF): the
    /// ports' admission is read again.
    pub switches: bool,
    /// The kernel may have deleted state without a message: a link message
    /// came (down: IPv4 routes through it flushed, nexthop objects on it
    /// removed, neighbours flushed; up: dead IPv6 hops revived), an address went (the last IPv4 address of a
    /// device takes its routes along), or a nexthop object went (its groups
    /// shrink, the routes using it go). The state must be dumped again.
    pub suspect: bool,
}

impl Changed {
    pub fn any(&self) -> bool {
        self.links
            || self.neighbours
            || self.routes
            || self.nexthops
            || self.switches
            || self.suspect
    }
    pub fn merge(&mut self, o: Changed) {
        self.links |= o.links;
        self.neighbours |= o.neighbours;
        self.routes |= o.routes;
        self.nexthops |= o.nexthops;
        self.switches |= o.switches;
        self.suspect |= o.suspect;
    }
}

/// 32 or 128.
pub fn host_len(p: &Prefix) -> u8 {
    if p.addr.is_ipv4() {
        32
    } else {
        128
    }
}

/// `outer` holds every address of `inner` (same family, no longer, same leading bits).
pub fn contains(outer: &Prefix, inner: &Prefix) -> bool {
    if outer.len > inner.len {
        return false;
    }
    let bits = |a: &IpAddr| -> u128 {
        match a {
            IpAddr::V4(v) => u128::from(u32::from(*v)) << 96,
            IpAddr::V6(v) => u128::from(*v),
        }
    };
    if outer.addr.is_ipv4() != inner.addr.is_ipv4() {
        return false;
    }
    // Both families' addresses sit in the top bits.
    let len = u32::from(outer.len);
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    bits(&outer.addr) & mask == bits(&inner.addr) & mask
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

fn mac_of(bytes: &[u8]) -> Option<[u8; 6]> {
    bytes.try_into().ok()
}

/// The gateway of a route or of one multipath hop: RTA_GATEWAY, or RTA_VIA
/// for an IPv4 route through an IPv6 next hop (RFC 5549).
fn gateway_of(attrs: &[RouteAttribute]) -> Option<IpAddr> {
    attrs.iter().find_map(|a| match a {
        RouteAttribute::Gateway(g) => route_addr(g),
        RouteAttribute::Via(RouteVia::Inet(v)) => Some(IpAddr::V4(*v)),
        RouteAttribute::Via(RouteVia::Inet6(v)) => Some(IpAddr::V6(*v)),
        _ => None,
    })
}

impl KernelState {
    pub fn new(table: u32) -> Self {
        KernelState {
            table,
            ..Default::default()
        }
    }

    /// What changed since the last call, for an incremental sync.
    pub fn take_dirty(&mut self) -> Dirty {
        if std::mem::take(&mut self.dirty_all) {
            self.dirty.clear();
            return Dirty::All;
        }
        Dirty::Prefixes(std::mem::take(&mut self.dirty))
    }

    /// Applies a route-family message, nexthop objects included, as a
    /// notification (a route added with `ip route add`).
    pub fn apply_rt(&mut self, msg: &RtMessage) -> Changed {
        self.apply_rt_flags(msg, 0)
    }

    /// Applies a route-family message with its netlink header flags (which
    /// say where a route goes among those of its key, or that it is a dump).
    pub fn apply_rt_flags(&mut self, msg: &RtMessage, flags: u16) -> Changed {
        let mut c = Changed::default();
        match msg {
            RtMessage::Route(m) => return self.apply_flags(m, flags),
            RtMessage::Netconf(_) => c.switches = true,
            RtMessage::NewNexthop(m) => {
                if let Ok(nh) = Nexthop::from_message(m) {
                    let obj = object_of(&nh);
                    if matches!(
                        obj,
                        NexthopObject::Group {
                            resilient: Some(_),
                            ..
                        }
                    ) {
                        self.stale_buckets.insert(nh.id);
                    } else {
                        self.kernel_buckets.remove(&nh.id);
                    }
                    c.nexthops = self.nexthops.insert(nh.id, obj.clone()) != Some(obj);
                }
            }
            RtMessage::DelNexthop(m) => {
                if let Some(id) = m.id() {
                    c.nexthops = self.nexthops.remove(&id).is_some();
                    c.suspect = c.nexthops;
                    self.kernel_buckets.remove(&id);
                }
            }
            RtMessage::NewNexthopBucket(m) => {
                if let Ok(b) = Bucket::from_message(m) {
                    let table = self.kernel_buckets.entry(b.group).or_default();
                    let i = usize::from(b.index);
                    if table.len() <= i {
                        table.resize(i + 1, 0);
                    }
                    c.nexthops = table[i] != b.nh_id;
                    table[i] = b.nh_id;
                }
            }
            _ => {}
        }
        if c.nexthops {
            self.mark_all_dirty();
        }
        c
    }

    /// Replaces the bucket table of a kernel resilient group.
    pub fn set_kernel_buckets(&mut self, group: u32, buckets: Vec<u32>) -> bool {
        let changed = self.kernel_buckets.get(&group) != Some(&buckets);
        if changed {
            self.kernel_buckets.insert(group, buckets);
            self.mark_all_dirty();
        }
        changed
    }

    /// Applies one netlink message as a notification; returns what it changed.
    pub fn apply(&mut self, msg: &RouteNetlinkMessage) -> Changed {
        self.apply_flags(msg, 0)
    }

    /// Applies one netlink message with its header flags; returns what it changed.
    pub fn apply_flags(&mut self, msg: &RouteNetlinkMessage, flags: u16) -> Changed {
        let mut c = Changed::default();
        match msg {
            // Every link message, even one equal to what the mirror holds:
            // the kernel's link watcher acts on a carrier change after the
            // change shows in a dump (reviving dead IPv6 hops, flushing
            // nexthop objects) and announces the link only once it is done,
            // so a dump taken in between already had the link as it is now.
            RouteNetlinkMessage::NewLink(m) => {
                c.links = self.set_link(m);
                c.suspect = true;
            }
            RouteNetlinkMessage::DelLink(m) => {
                c.links = self.links.remove(&m.header.index).is_some();
                c.suspect = true;
            }
            // An address going takes routes along; one coming revives the
            // dead hops of multipath routes on its device: neither says so.
            RouteNetlinkMessage::DelAddress(_) | RouteNetlinkMessage::NewAddress(_) => {
                c.suspect = true
            }
            RouteNetlinkMessage::NewRule(m) => c.routes = self.set_rule(m, true),
            RouteNetlinkMessage::DelRule(m) => c.routes = self.set_rule(m, false),
            RouteNetlinkMessage::NewNeighbour(m) => c.neighbours = self.set_neighbour(m, false),
            RouteNetlinkMessage::DelNeighbour(m) => c.neighbours = self.set_neighbour(m, true),
            RouteNetlinkMessage::NewRoute(m) => {
                c.routes = self.set_route(m, Some(Op::of_flags(flags)))
            }
            RouteNetlinkMessage::DelRoute(m) => {
                c.routes = self.set_route(m, None);
                c.suspect = std::mem::take(&mut self.ask_kernel);
            }
            _ => {}
        }
        c
    }

    fn set_link(&mut self, m: &LinkMessage) -> bool {
        let mut link = Link {
            ifindex: m.header.index,
            name: String::new(),
            mac: [0; 6],
            mtu: 1500,
            up: m.header.flags.contains(LinkFlags::Up)
                && m.header.flags.contains(LinkFlags::LowerUp),
            admin_up: m.header.flags.contains(LinkFlags::Up),
            xdp_tx: self.xdp_tx(m.header.index),
            gro: true,
            ..Default::default()
        };
        let (mut veth, mut peer, mut elsewhere) = (false, None, false);
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(b) => link.mac = mac_of(b).unwrap_or([0; 6]),
                LinkAttribute::Mtu(v) => link.mtu = *v,
                LinkAttribute::Link(p) => peer = Some(*p),
                LinkAttribute::LinkNetNsId(_) => elsewhere = true,
                LinkAttribute::LinkInfo(info) => {
                    veth = info
                        .iter()
                        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)))
                }
                LinkAttribute::Xdp(x) => {
                    link.xdp_attached = x.iter().any(|x| match x {
                        LinkXdp::Attached(a) => *a != XdpAttached::None,
                        LinkXdp::ProgId(id) => *id != 0,
                        _ => false,
                    })
                }
                _ => {}
            }
        }
        if veth {
            link.veth_peer = peer.filter(|_| !elsewhere);
            link.gro = dataplane::ethtool::gro(&link.name).unwrap_or(true);
        }
        self.links.insert(link.ifindex, link.clone()) != Some(link)
    }

    /// The port transmits frames redirected to it; a port the mirror does
    /// not know is left to the kernel. A veth transmits only into a peer
    /// that is up with GRO or an XDP program: its `NDO_XMIT` flag alone can
    /// be stale (GRO switched off on the peer while it was down leaves the
    /// flag set, Linux 6.18), so where the peer is in this namespace its
    /// state decides too.
    pub fn transmits(&self, ifindex: u32) -> bool {
        let Some(l) = self.links.get(&ifindex) else {
            return false;
        };
        let peer_takes = |p: &Link| p.admin_up && (p.xdp_attached || p.gro);
        l.xdp_tx
            && l.veth_peer
                .and_then(|p| self.links.get(&p))
                .is_none_or(peer_takes)
    }

    /// Whether the device transmits redirected frames, by its XDP features.
    fn xdp_tx(&self, ifindex: u32) -> bool {
        match &self.xdp_features {
            None => true,
            Some(f) => f
                .get(&ifindex)
                .is_some_and(|f| f & crate::xdp_features::NDO_XMIT != 0),
        }
    }

    /// Takes every device's XDP features (a dump); true if a link changed.
    pub fn set_xdp_features(&mut self, all: HashMap<u32, u64>) -> bool {
        self.xdp_features = Some(all);
        self.follow_xdp_features()
    }

    /// Takes the features a notification announced (`None`: the device
    /// went); true if a link changed.
    pub fn set_xdp_feature(&mut self, ifindex: u32, features: Option<u64>) -> bool {
        let all = self.xdp_features.get_or_insert_with(HashMap::new);
        match features {
            Some(f) => all.insert(ifindex, f),
            None => all.remove(&ifindex),
        };
        self.follow_xdp_features()
    }

    fn follow_xdp_features(&mut self) -> bool {
        let mut changed = false;
        let idx: Vec<u32> = self.links.keys().copied().collect();
        for i in idx {
            let tx = self.xdp_tx(i);
            if let Some(l) = self.links.get_mut(&i) {
                changed |= l.xdp_tx != tx;
                l.xdp_tx = tx;
            }
        }
        changed
    }

    fn set_neighbour(&mut self, m: &NeighbourMessage, delete: bool) -> bool {
        let mut addr = None;
        let mut mac = None;
        for a in &m.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => {
                    addr = Some(IpAddr::V4(*v))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => {
                    addr = Some(IpAddr::V6(*v))
                }
                NeighbourAttribute::LinkLayerAddress(b) => mac = mac_of(b),
                _ => {}
            }
        }
        // Multicast entries (made by the kernel without a message) are never a gateway.
        let Some(addr) = addr.filter(|a| !a.is_multicast()) else {
            return false;
        };
        let key = (m.header.ifindex, addr);
        if delete {
            return self.neighbours.remove(&key).is_some();
        }
        let usable = matches!(
            m.header.state,
            NeighbourState::Reachable
                | NeighbourState::Stale
                | NeighbourState::Delay
                | NeighbourState::Probe
                | NeighbourState::Permanent
                | NeighbourState::Noarp
        ) && mac.is_some();
        let n = Neighbour { mac, usable };
        self.neighbours.insert(key, n.clone()) != Some(n)
    }

    /// A route added (`op`) or deleted (None); true if what forwards changed.
    fn set_route(&mut self, m: &RouteMessage, op: Option<Op>) -> bool {
        let table = m
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(m.header.table));
        let local = table == TABLE_LOCAL && table != self.table;
        if table != self.table && !local {
            return false;
        }
        let dst = m.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(d) => route_addr(d),
            _ => None,
        });
        let (family_zero, v6) = match m.header.address_family {
            netlink_packet_route::AddressFamily::Inet => {
                (IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), false)
            }
            netlink_packet_route::AddressFamily::Inet6 => {
                (IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), true)
            }
            _ => return false,
        };
        let prefix = Prefix {
            addr: dst.unwrap_or(family_zero),
            len: m.header.destination_prefix_length,
        };
        self.touch((!local).then_some(prefix));
        let metric = m
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Priority(p) => Some(*p),
                _ => None,
            })
            .unwrap_or(0);
        let oif = m
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            })
            .unwrap_or(0);
        let target = match (m.header.kind, local) {
            (RouteType::Local, _) => RouteTarget::Local,
            // This host receives what goes to a broadcast, anycast or
            // multicast address of the local table (and refuses it as a
            // source, as its own addresses).
            (RouteType::Broadcast | RouteType::Anycast | RouteType::Multicast, true) => {
                RouteTarget::Local
            }
            // A unicast (or any other) route put in the local table: the kernel decides.
            (_, true) => RouteTarget::KernelOnly,
            (RouteType::BlackHole, _) => RouteTarget::Blackhole,
            (RouteType::Unreachable, _) => RouteTarget::Unreachable,
            (RouteType::Prohibit, _) => RouteTarget::Prohibit,
            (RouteType::Unicast, _) => route_unicast_target(m),
            _ => RouteTarget::KernelOnly,
        };
        let target = match target {
            // IPv6 lists the hops of one route in the order they came,
            // which a dump and the notification of an `append` do not
            // agree on: they are a set.
            RouteTarget::Paths(mut p) if v6 => {
                p.sort();
                RouteTarget::Paths(p)
            }
            t => t,
        };
        let dead = match (m.header.kind, local, &target) {
            (RouteType::Unicast, false, RouteTarget::Paths(_)) => dead_hops(m),
            _ => Vec::new(),
        };
        // A route through a nexthop object lists the object's device, which
        // changes with the object (`ip nexthop replace`): not the route's own.
        let oif = if matches!(target, RouteTarget::Nexthop(_)) {
            0
        } else {
            oif
        };
        let mut alias = Alias {
            metric,
            tos: m.header.tos,
            oif,
            target,
            own_mtu: own_mtu(m),
            mtu_hops: Vec::new(),
            mtu_unsure: false,
            dead,
        };
        if v6 && alias.own_mtu {
            // The message shows the MTU of its first hop; on an add it is
            // every hop's (see aliases::add); in a dump, the others' are
            // not shown.
            alias.mtu_hops = aliases::hops(&alias);
            alias.mtu_hops.sort();
            alias.mtu_unsure = op == Some(Op::Dump) && alias.mtu_hops.len() > 1;
        }
        let (all, derived) = if local {
            (&mut self.local_aliases, None)
        } else {
            (&mut self.aliases, Some(&mut self.routes))
        };
        // Room for one: a Vec's first push would make room for four.
        let list = all.entry(prefix).or_insert_with(|| Vec::with_capacity(1));
        let changed = match op {
            Some(op) => aliases::add(list, alias, op, v6),
            None => {
                let d = aliases::delete_hops(list, &alias, v6);
                self.ask_kernel |= d.ask;
                d.changed
            }
        };
        if !changed {
            if list.is_empty() {
                all.remove(&prefix);
            }
            return false;
        }
        let effective = aliases::effective(list, v6);
        if list.is_empty() {
            all.remove(&prefix);
        }
        let changed = match derived {
            Some(routes) if effective.is_empty() => routes.remove(&prefix).is_some(),
            // Compared in place: a copy per route cost a dump of 1M routes
            // two allocations each.
            Some(routes) => match routes.entry(prefix) {
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    let differs = *o.get() != effective;
                    if differs {
                        o.insert(effective);
                    }
                    differs
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(effective);
                    true
                }
            },
            None => {
                let first = effective.values().next().cloned();
                let before = match &first {
                    Some(t) => self.local_routes.insert(prefix, t.clone()),
                    None => self.local_routes.remove(&prefix),
                };
                let now = self.local_routes.get(&prefix).cloned();
                if before != now {
                    self.mark_dirty(prefix);
                    self.local_wide_changed(&prefix);
                }
                return before != now;
            }
        };
        if changed {
            self.mark_dirty(prefix);
        }
        changed
    }

    /// `prefix` is to be synced again; nothing to note when every prefix is.
    fn mark_dirty(&mut self, prefix: Prefix) {
        if !self.dirty_all {
            self.dirty.insert(prefix);
        }
    }

    /// Every prefix is to be synced again (a dump fills this state: listing
    /// each of a million prefixes would cost more than the dump's parse).
    pub fn mark_all_dirty(&mut self) {
        self.dirty_all = true;
        self.dirty.clear();
    }

    /// Follows a policy routing rule; true (every route to be looked at
    /// again) when the set of non-default rules changed.
    /// Notes, while a round runs, that an event changed the mirrored
    /// table's `prefix`, or (None) something else.
    fn touch(&mut self, prefix: Option<Prefix>) {
        if let Some(t) = &mut self.touched {
            match prefix {
                Some(p) => {
                    t.prefixes.insert(p);
                }
                None => t.other = true,
            }
        }
    }

    fn set_rule(&mut self, m: &RuleMessage, add: bool) -> bool {
        self.touch(None);
        if default_rule(m) {
            return false;
        }
        let key = (
            m.header.family == netlink_packet_route::AddressFamily::Inet6,
            format!("{:?} {:?}", m.header, m.attributes),
        );
        let v6 = key.0;
        let family = if v6 { "IPv6" } else { "IPv4" };
        let changed = if add {
            let first = self.custom_rules(v6).is_none();
            let new = self.custom_rules.insert(key.clone());
            if new && first {
                tracing::warn!(
                    rule = key.1,
                    "a policy routing rule is in place: {family} routes go to the kernel"
                );
            }
            new
        } else {
            let gone = self.custom_rules.remove(&key);
            if gone && self.custom_rules(v6).is_none() {
                tracing::info!("no policy routing rule left: {family} routes forward again");
            }
            gone
        };
        if changed {
            self.mark_all_dirty();
        }
        changed
    }

    /// A non-default policy routing rule of this family is in place.
    pub fn custom_rules(&self, v6: bool) -> Option<&str> {
        self.custom_rules
            .iter()
            .find(|(f, _)| *f == v6)
            .map(|(_, r)| r.as_str())
    }

    /// A local-table entry shorter than a host route decides for every
    /// route of the mirrored table inside it: those must be looked at again.
    fn local_wide_changed(&mut self, p: &Prefix) {
        if p.len < host_len(p) {
            self.mark_all_dirty();
        }
    }

    /// The route that forwards for `prefix`: the local table's entry for it
    /// or for a wider prefix holding it, else the lowest metric.
    pub fn best_route(&self, prefix: &Prefix) -> Option<&RouteTarget> {
        self.local_target(prefix)
            .or_else(|| self.routes.get(prefix)?.values().next())
    }

    /// The local table's entry that decides for `prefix` before the
    /// mirrored table's routes: its own, or a wider one covering it.
    pub fn local_target(&self, prefix: &Prefix) -> Option<&RouteTarget> {
        self.local_routes.get(prefix).or_else(|| {
            self.local_routes
                .iter()
                .find(|(l, _)| l.len < host_len(l) && contains(l, prefix))
                .map(|(_, t)| t)
        })
    }

    /// Every prefix with a route, of the mirrored table or local.
    pub fn prefixes(&self) -> impl Iterator<Item = &Prefix> {
        self.routes.keys().chain(
            self.local_routes
                .keys()
                .filter(|p| !self.routes.contains_key(*p)),
        )
    }
}

/// One of the rules every namespace starts with: from all, lookup local
/// (priority 0), main (32766) or default (32767).
fn default_rule(m: &RuleMessage) -> bool {
    let h = &m.header;
    if h.dst_len != 0 || h.src_len != 0 || h.tos != 0 || h.action != RuleAction::ToTable {
        return false;
    }
    let (mut prio, mut table) = (0, u32::from(h.table));
    for a in &m.attributes {
        match a {
            RuleAttribute::Priority(p) => prio = *p,
            RuleAttribute::Table(t) => table = *t,
            // Unset (-1) suppressors are what the kernel lists for every rule.
            RuleAttribute::Protocol(_)
            | RuleAttribute::SuppressPrefixLen(u32::MAX)
            | RuleAttribute::SuppressIfGroup(u32::MAX) => {}
            _ => return false,
        }
    }
    matches!(
        (prio, table),
        (0, TABLE_LOCAL) | (32766, TABLE_MAIN) | (32767, 253)
    )
}

/// A unicast route with an MTU of its own (`ip route ... mtu N`): the
/// kernel checks packets against it, the program only against the port's.
fn own_mtu(m: &RouteMessage) -> bool {
    m.attributes.iter().any(|a| match a {
        RouteAttribute::Metrics(ms) => ms.iter().any(|x| matches!(x, RouteMetric::Mtu(_))),
        _ => false,
    })
}

/// The hops the kernel marked dead (their device went down or lost its last
/// address, and they were not revived), sorted: they carry nothing, but
/// they are part of the route (deleting its live hops leaves it in place).
fn dead_hops(m: &RouteMessage) -> Vec<PathKey> {
    let attrs = &m.attributes;
    let mut dead: Vec<PathKey> = match attrs.iter().find_map(|a| match a {
        RouteAttribute::MultiPath(h) => Some(h),
        _ => None,
    }) {
        Some(hops) => hops
            .iter()
            .filter(|h| h.flags.contains(RouteNextHopFlags::Dead))
            .map(|h| PathKey {
                ifindex: h.interface_index,
                gateway: gateway_of(&h.attributes),
            })
            .collect(),
        None if m.header.flags.contains(RouteFlags::Dead) => vec![PathKey {
            ifindex: attrs
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                })
                .unwrap_or(0),
            gateway: gateway_of(attrs),
        }],
        None => Vec::new(),
    };
    dead.sort();
    dead
}

/// The live hops of a unicast route (or its nexthop object).
fn route_unicast_target(m: &RouteMessage) -> RouteTarget {
    let attrs = &m.attributes;
    if let Some(id) = attrs.iter().find_map(|a| match a {
        RouteAttribute::NhId(id) => Some(*id),
        _ => None,
    }) {
        return RouteTarget::Nexthop(id);
    }
    if let Some(hops) = attrs.iter().find_map(|a| match a {
        RouteAttribute::MultiPath(h) => Some(h),
        _ => None,
    }) {
        // A hop the kernel marked dead (its device went down or lost its
        // last address, and it has not been revived) carries nothing.
        let paths = hops
            .iter()
            .filter(|h| !h.flags.contains(RouteNextHopFlags::Dead))
            .map(|h| WeightedPath {
                path: PathKey {
                    ifindex: h.interface_index,
                    gateway: gateway_of(&h.attributes),
                },
                weight: u32::from(h.hops) + 1,
            })
            .collect();
        return RouteTarget::Paths(paths);
    }
    if m.header.flags.contains(RouteFlags::Dead) {
        return RouteTarget::Paths(Vec::new());
    }
    let oif = attrs
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        })
        .unwrap_or(0);
    RouteTarget::Paths(vec![WeightedPath {
        path: PathKey {
            ifindex: oif,
            gateway: gateway_of(attrs),
        },
        weight: 1,
    }])
}

/// The mirror's view of a kernel nexthop object.
fn object_of(nh: &Nexthop) -> NexthopObject {
    match &nh.kind {
        NexthopKind::Single {
            oif,
            gateway,
            blackhole,
            ..
        } => NexthopObject::Single {
            path: PathKey {
                ifindex: oif.unwrap_or(0),
                gateway: *gateway,
            },
            blackhole: *blackhole,
        },
        NexthopKind::Group { kind, members } => NexthopObject::Group {
            members: members.clone(),
            resilient: match kind {
                GroupKind::Resilient {
                    buckets,
                    idle_timer,
                    unbalanced_timer,
                    ..
                } => Some(ResilientParams {
                    buckets: *buckets,
                    idle_timer_s: idle_timer / 100,
                    unbalanced_timer_s: unbalanced_timer / 100,
                }),
                _ => None,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        let (a, l) = s.split_once('/').unwrap();
        Prefix {
            addr: a.parse().unwrap(),
            len: l.parse().unwrap(),
        }
    }

    #[test]
    fn prefixes_contain_what_lies_inside_them_in_both_families() {
        assert!(contains(&p("192.0.2.0/24"), &p("192.0.2.1/32")));
        assert!(contains(&p("192.0.2.0/24"), &p("192.0.2.128/25")));
        assert!(contains(&p("0.0.0.0/0"), &p("10.1.2.3/32")));
        assert!(!contains(&p("192.0.2.0/24"), &p("192.0.3.1/32")));
        assert!(!contains(&p("192.0.2.0/25"), &p("192.0.2.0/24")));
        assert!(contains(&p("2001:db8::/32"), &p("2001:db8:1::/48")));
        assert!(!contains(&p("2001:db8::/32"), &p("2001:db9::/48")));
        assert!(!contains(&p("::/0"), &p("10.0.0.0/8")));
        assert!(!contains(&p("0.0.0.0/0"), &p("::/0")));
    }

    #[test]
    fn a_wide_local_ipv4_entry_decides_for_the_routes_inside_it() {
        let mut ks = KernelState::new(254);
        ks.local_routes
            .insert(p("192.0.2.0/24"), RouteTarget::Local);
        ks.routes
            .insert(p("192.0.2.7/32"), Metrics::one(0, RouteTarget::Blackhole));
        assert_eq!(ks.best_route(&p("192.0.2.7/32")), Some(&RouteTarget::Local));
    }

    /// A blackhole route message for `prefix` in `table`.
    fn blackhole(prefix: &str, table: u8) -> RouteNetlinkMessage {
        let pr = p(prefix);
        let mut m = RouteMessage::default();
        m.header.address_family = netlink_packet_route::AddressFamily::Inet;
        m.header.destination_prefix_length = pr.len;
        m.header.table = table;
        m.header.kind = RouteType::BlackHole;
        let IpAddr::V4(a) = pr.addr else {
            panic!("an IPv4 prefix")
        };
        m.attributes.push(RouteAttribute::Destination(
            netlink_packet_route::route::RouteAddress::Inet(a),
        ));
        RouteNetlinkMessage::NewRoute(m)
    }

    #[test]
    fn while_a_round_runs_the_mirror_notes_what_route_events_change() {
        let mut ks = KernelState::new(254);
        ks.apply(&blackhole("192.0.2.0/24", 254));
        ks.touched = Some(Touched::default());
        ks.apply(&blackhole("198.51.100.0/24", 254));
        // Another table's route is not mirrored: nothing to note.
        ks.apply(&blackhole("203.0.113.0/24", 7));
        let t = ks.touched.clone().expect("noting");
        assert_eq!(t.prefixes, [p("198.51.100.0/24")].into_iter().collect());
        assert!(!t.other);
        assert!(ks.routes.contains_key(&p("198.51.100.0/24")));
        ks.apply(&blackhole("198.51.100.7/32", 255));
        assert!(
            ks.touched.as_ref().is_some_and(|t| t.other),
            "the local table"
        );
    }
}
