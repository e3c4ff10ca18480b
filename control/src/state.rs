//! The kernel's routing state as the control plane mirrors it: links, neighbours, routes and nexthop objects, updated from netlink messages.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia,
};
use netlink_packet_route::RouteNetlinkMessage;

use crate::nexthop_msg::{Bucket, GroupKind, Nexthop, NexthopKind, RtMessage};

/// The kernel's main table and local table ids.
pub const TABLE_MAIN: u32 = 254;
pub const TABLE_LOCAL: u32 = 255;

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// Administratively up and carrier present.
    pub up: bool,
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
    /// Routes by prefix, then by metric (the lowest metric wins).
    pub routes: BTreeMap<Prefix, BTreeMap<u32, RouteTarget>>,
    /// Local routes of the local table (this host's addresses): the kernel
    /// looks in the local table before main, so one wins over any route of
    /// the mirrored table to the same prefix.
    pub local_routes: BTreeMap<Prefix, RouteTarget>,
    pub nexthops: HashMap<u32, NexthopObject>,
    /// The kernel's bucket -> nexthop id assignment of its resilient groups.
    pub kernel_buckets: HashMap<u32, Vec<u32>>,
    /// The routing table mirrored (local-type routes come from the local table too).
    pub table: u32,
    /// Prefixes whose routes changed since the last `take_dirty`.
    dirty: HashSet<Prefix>,
    /// Something every route may depend on changed (nexthop objects).
    dirty_all: bool,
    /// Resilient groups whose bucket table must be read again: the kernel
    /// moves buckets on member changes without a bucket notification.
    pub stale_buckets: HashSet<u32>,
}

/// What the reconciler must look at again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dirty {
    /// Every prefix (first sync, re-dump, nexthop objects changed).
    All,
    /// Only these prefixes; groups and next hops are always rechecked.
    Prefixes(HashSet<Prefix>),
}

/// What a message changed, so the reconciler knows what to redo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Changed {
    pub links: bool,
    pub neighbours: bool,
    pub routes: bool,
    pub nexthops: bool,
}

impl Changed {
    pub fn any(&self) -> bool {
        self.links || self.neighbours || self.routes || self.nexthops
    }
    pub fn merge(&mut self, o: Changed) {
        self.links |= o.links;
        self.neighbours |= o.neighbours;
        self.routes |= o.routes;
        self.nexthops |= o.nexthops;
    }
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

    /// Applies a route-family message, nexthop objects included.
    pub fn apply_rt(&mut self, msg: &RtMessage) -> Changed {
        let mut c = Changed::default();
        match msg {
            RtMessage::Route(m) => return self.apply(m),
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
            self.dirty_all = true;
        }
        c
    }

    /// Replaces the bucket table of a kernel resilient group.
    pub fn set_kernel_buckets(&mut self, group: u32, buckets: Vec<u32>) -> bool {
        let changed = self.kernel_buckets.get(&group) != Some(&buckets);
        if changed {
            self.kernel_buckets.insert(group, buckets);
            self.dirty_all = true;
        }
        changed
    }

    /// Applies one netlink message; returns what it changed.
    pub fn apply(&mut self, msg: &RouteNetlinkMessage) -> Changed {
        let mut c = Changed::default();
        match msg {
            RouteNetlinkMessage::NewLink(m) => c.links = self.set_link(m),
            RouteNetlinkMessage::DelLink(m) => {
                c.links = self.links.remove(&m.header.index).is_some()
            }
            RouteNetlinkMessage::NewNeighbour(m) => c.neighbours = self.set_neighbour(m, false),
            RouteNetlinkMessage::DelNeighbour(m) => c.neighbours = self.set_neighbour(m, true),
            RouteNetlinkMessage::NewRoute(m) => c.routes = self.set_route(m, false),
            RouteNetlinkMessage::DelRoute(m) => c.routes = self.set_route(m, true),
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
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(b) => link.mac = mac_of(b).unwrap_or([0; 6]),
                LinkAttribute::Mtu(v) => link.mtu = *v,
                _ => {}
            }
        }
        self.links.insert(link.ifindex, link.clone()) != Some(link)
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
        let Some(addr) = addr else { return false };
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

    fn set_route(&mut self, m: &RouteMessage, delete: bool) -> bool {
        let table = m
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(m.header.table));
        let kind = m.header.kind;
        let wanted = table == self.table || (table == TABLE_LOCAL && kind == RouteType::Local);
        if !wanted {
            return false;
        }
        let dst = m.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(d) => route_addr(d),
            _ => None,
        });
        let family_zero = match m.header.address_family {
            netlink_packet_route::AddressFamily::Inet => {
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
            }
            netlink_packet_route::AddressFamily::Inet6 => {
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
            }
            _ => return false,
        };
        let prefix = Prefix {
            addr: dst.unwrap_or(family_zero),
            len: m.header.destination_prefix_length,
        };
        let metric = m
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Priority(p) => Some(*p),
                _ => None,
            })
            .unwrap_or(0);
        if table == TABLE_LOCAL && table != self.table {
            let changed = if delete {
                self.local_routes.remove(&prefix).is_some()
            } else {
                self.local_routes
                    .insert(prefix, RouteTarget::Local)
                    .is_none()
            };
            if changed {
                self.dirty.insert(prefix);
            }
            return changed;
        }
        if delete {
            let Some(by_metric) = self.routes.get_mut(&prefix) else {
                return false;
            };
            let removed = by_metric.remove(&metric).is_some();
            if by_metric.is_empty() {
                self.routes.remove(&prefix);
            }
            if removed {
                self.dirty.insert(prefix);
            }
            return removed;
        }
        let target = match kind {
            RouteType::Local => RouteTarget::Local,
            RouteType::BlackHole => RouteTarget::Blackhole,
            RouteType::Unreachable => RouteTarget::Unreachable,
            RouteType::Prohibit => RouteTarget::Prohibit,
            RouteType::Unicast => route_unicast_target(m),
            _ => return false,
        };
        let changed = self
            .routes
            .entry(prefix)
            .or_default()
            .insert(metric, target.clone())
            != Some(target);
        if changed {
            self.dirty.insert(prefix);
        }
        changed
    }

    /// The route that forwards for `prefix`: the lowest metric.
    pub fn best_route(&self, prefix: &Prefix) -> Option<&RouteTarget> {
        self.local_routes
            .get(prefix)
            .or_else(|| self.routes.get(prefix)?.values().next())
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
        let paths = hops
            .iter()
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
