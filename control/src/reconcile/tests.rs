//! The reconciler over in-memory tables that are as small as a test needs: duplicate hops, weights past 16 bits, every full table (its routes pass to the kernel, then recover), stamps across the jiffies wrap and in reused slot windows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dataplane::abi::{
    xe_config, xe_decision, xe_group, xe_nexthop, xe_route, Verdict, HASH_POLICY_L4, ROUTE_PIN,
};
use dataplane::grace::GracePeriods;
use dataplane::{Error, MemoryFlows, Pins, StampClock, TableReader, TableWriter, Tables};

use super::Reconciler;
use crate::aliases::Metrics;
use crate::capacity::{Limit, Limits};
use crate::state::{
    Dirty, KernelState, Link, Neighbour, NexthopObject, PathKey, Prefix, RouteTarget, WeightedPath,
};
use crate::translate::PlainGroupMode;

/// The model's tables, refusing what does not fit `limits` as the maps do,
/// and keeping what was written for the tests to read back.
struct Mem {
    t: Tables,
    limits: Limits,
    routes: BTreeMap<Prefix, xe_route>,
    groups: HashMap<u32, xe_group>,
    slots: HashMap<u32, u32>,
    nexthops: HashMap<u32, xe_nexthop>,
    txports: BTreeSet<u32>,
    /// IPv6 routes the writer itself takes before its search is full
    /// (markers share the slot table with routes).
    v6_slots_for: Option<usize>,
}

fn out_of_range(what: &'static str, value: u32, max: u32) -> Error {
    Error::OutOfRange {
        what,
        value: value.into(),
        max: u64::from(max) - 1,
    }
}

fn prefix(addr: IpAddr, len: u8) -> Prefix {
    Prefix { addr, len }
}

impl Mem {
    fn new(limits: Limits) -> Mem {
        let mut t = Tables::default();
        t.set_config(&xe_config {
            hash_fields: HASH_POLICY_L4,
            ..Default::default()
        })
        .expect("config");
        Mem {
            t,
            limits,
            routes: BTreeMap::new(),
            groups: HashMap::new(),
            slots: HashMap::new(),
            nexthops: HashMap::new(),
            txports: BTreeSet::new(),
            v6_slots_for: None,
        }
    }

    fn room_for(&self, p: &Prefix) -> dataplane::Result<()> {
        if self.routes.contains_key(p) {
            return Ok(());
        }
        let v4 = p.addr.is_ipv4();
        let same_family = self
            .routes
            .keys()
            .filter(|r| r.addr.is_ipv4() == v4)
            .count() as u32;
        let (max, what) = if v4 {
            (self.limits.routes_v4, "IPv4 route table")
        } else {
            (self.limits.routes_v6, "IPv6 route table")
        };
        if same_family >= max {
            return Err(Error::TableFull {
                what,
                max: max.into(),
            });
        }
        if !v4 && self.v6_slots_for.is_some_and(|n| same_family as usize >= n) {
            return Err(Error::TableFull {
                what: "IPv6 search slots",
                max: 0,
            });
        }
        let slash24 = |r: &Prefix| match r.addr {
            IpAddr::V4(a) if r.len > 24 => Some(u32::from(a) >> 8),
            _ => None,
        };
        if let Some(c) = slash24(p) {
            let chunks: BTreeSet<u32> = self.routes.keys().filter_map(slash24).collect();
            if !chunks.contains(&c) && chunks.len() as u32 >= self.limits.dir_chunks {
                return Err(Error::TableFull {
                    what: "IPv4 DIR-24-8 chunk table",
                    max: self.limits.dir_chunks.into(),
                });
            }
        }
        Ok(())
    }

    /// The decision for a UDP packet to `dst` from source port `sport`.
    fn decide(&self, dst: IpAddr, sport: u16) -> xe_decision {
        self.decide_with(None, dst, sport)
    }

    /// The same with a flow table (flows to pinned routes keep their path).
    fn decide_with(&self, flows: Option<&mut MemoryFlows>, dst: IpAddr, sport: u16) -> xe_decision {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 9]);
        let b = match dst {
            IpAddr::V4(d) => b.ipv4([10, 2, 0, 100], d.octets(), 64),
            IpAddr::V6(d) => b.ipv6(
                Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1).octets(),
                d.octets(),
                64,
            ),
        }
        .udp(sport, 53);
        let mut pkt = Vec::new();
        b.write(&mut pkt, &[0; 8]).expect("packet");
        let mut out = vec![0; pkt.len() + 64];
        match flows {
            Some(table) => {
                let mut pins = Pins { table, now: 1 };
                self.t.decide_pinned(&mut pins, None, &pkt, &mut out).0
            }
            None => self.t.decide(&pkt, &mut out).0,
        }
    }

    fn verdict(&self, dst: &str) -> Verdict {
        let v = self.decide(dst.parse().expect("address"), 40000).verdict;
        *Verdict::ALL
            .iter()
            .find(|x| **x as u32 == v)
            .expect("a verdict")
    }

    /// The egress port (ifindex) a packet to `dst` leaves by, if forwarded.
    fn egress(&self, dst: &str) -> Option<u32> {
        let d = self.decide(dst.parse().expect("address"), 40000);
        (d.verdict == Verdict::Forward as u32).then_some(d.ifindex)
    }

    /// The slots of the group `dst`'s route forwards through, as egress
    /// ports (0: a slot whose packets pass to the kernel).
    fn buckets(&self, p: &str) -> Vec<u32> {
        let (a, l) = p.split_once('/').expect("prefix");
        let r = self.routes[&prefix(a.parse().expect("addr"), l.parse().expect("len"))];
        let g = self.groups[&r.group];
        (g.base..g.base + u32::from(g.size))
            .map(|s| {
                let id = self.slots.get(&s).copied().unwrap_or(0);
                self.nexthops.get(&id).map_or(0, |nh| nh.ifindex)
            })
            .collect()
    }

    /// Buckets per egress port of the group of `p`.
    fn split(&self, p: &str) -> BTreeMap<u32, usize> {
        let mut n = BTreeMap::new();
        for port in self.buckets(p) {
            *n.entry(port).or_default() += 1;
        }
        n
    }
}

impl TableWriter for Mem {
    fn set_route_v4(&mut self, addr: Ipv4Addr, len: u8, route: &xe_route) -> dataplane::Result<()> {
        let p = prefix(IpAddr::V4(addr), len);
        self.room_for(&p)?;
        self.t.set_route_v4(addr, len, route)?;
        self.routes.insert(p, *route);
        Ok(())
    }
    fn delete_route_v4(&mut self, addr: Ipv4Addr, len: u8) -> dataplane::Result<()> {
        self.routes.remove(&prefix(IpAddr::V4(addr), len));
        self.t.delete_route_v4(addr, len)
    }
    fn set_route_v6(&mut self, addr: Ipv6Addr, len: u8, route: &xe_route) -> dataplane::Result<()> {
        let p = prefix(IpAddr::V6(addr), len);
        self.room_for(&p)?;
        self.t.set_route_v6(addr, len, route)?;
        self.routes.insert(p, *route);
        Ok(())
    }
    fn delete_route_v6(&mut self, addr: Ipv6Addr, len: u8) -> dataplane::Result<()> {
        self.routes.remove(&prefix(IpAddr::V6(addr), len));
        self.t.delete_route_v6(addr, len)
    }
    fn set_group(&mut self, id: u32, group: &xe_group) -> dataplane::Result<()> {
        if id >= self.limits.groups {
            return Err(out_of_range("group id", id, self.limits.groups));
        }
        let end = group.base + u32::from(group.size);
        if end > self.limits.slots {
            return Err(out_of_range("slot window end", end, self.limits.slots + 1));
        }
        self.t.set_group(id, group)?;
        self.groups.insert(id, *group);
        Ok(())
    }
    fn set_slots(&mut self, base: u32, nexthops: &[u32]) -> dataplane::Result<()> {
        let end = base + nexthops.len() as u32;
        if end > self.limits.slots {
            return Err(out_of_range("slot window end", end, self.limits.slots + 1));
        }
        self.t.set_slots(base, nexthops)?;
        for (i, nh) in nexthops.iter().enumerate() {
            self.slots.insert(base + i as u32, *nh);
        }
        Ok(())
    }
    fn set_nexthop(&mut self, id: u32, nh: &xe_nexthop) -> dataplane::Result<()> {
        if id >= self.limits.nexthops {
            return Err(out_of_range("next-hop id", id, self.limits.nexthops));
        }
        self.t.set_nexthop(id, nh)?;
        self.nexthops.insert(id, *nh);
        Ok(())
    }
    fn add_txport(&mut self, ifindex: u32) -> dataplane::Result<()> {
        if !self.txports.contains(&ifindex) && self.txports.len() as u32 >= self.limits.txports {
            return Err(Error::TableFull {
                what: "redirect port map",
                max: self.limits.txports.into(),
            });
        }
        self.t.add_txport(ifindex)?;
        self.txports.insert(ifindex);
        Ok(())
    }
    fn remove_txport(&mut self, ifindex: u32) -> dataplane::Result<()> {
        self.txports.remove(&ifindex);
        self.t.remove_txport(ifindex)
    }
    fn set_inport(
        &mut self,
        ifindex: u32,
        port: &dataplane::abi::xe_inport,
    ) -> dataplane::Result<()> {
        self.t.set_inport(ifindex, port)
    }
    fn remove_inport(&mut self, ifindex: u32) -> dataplane::Result<()> {
        self.t.remove_inport(ifindex)
    }
    fn set_config(&mut self, cfg: &xe_config) -> dataplane::Result<()> {
        self.t.set_config(cfg)
    }
    fn set_pin_member(&mut self, group: u32, path: u32, nh: Option<u32>) -> dataplane::Result<()> {
        self.t.set_pin_member(group, path, nh)
    }
    fn set_group_gen(&mut self, group: u32, gen: u32) -> dataplane::Result<()> {
        self.t.set_group_gen(group, gen)
    }
    fn grace(&self) -> GracePeriods {
        GracePeriods::immediate()
    }
}

/// Ports 1..=8 (eth1..), up, each with a resolved neighbour 10.0.i.2 and 2001:db8:i::2.
fn world() -> KernelState {
    let mut ks = KernelState::new(254);
    for i in 1..=8u8 {
        let ifindex = u32::from(i);
        ks.links.insert(
            ifindex,
            Link {
                ifindex,
                name: format!("eth{i}"),
                mac: [2, 0, 0, 0, i, 1],
                mtu: 1500,
                up: true,
                admin_up: true,
                xdp_tx: true,
                ..Default::default()
            },
        );
        for gw in [gw4(ifindex), gw6(ifindex)] {
            ks.neighbours.insert(
                (ifindex, gw),
                Neighbour {
                    mac: Some([2, 0, 0, 0, i, 2]),
                    usable: true,
                },
            );
        }
    }
    ks
}

fn gw4(port: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, port as u8, 2))
}

fn gw6(port: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, port as u16, 0, 0, 0, 0, 2))
}

/// A hop through port `port` (to its IPv4 or IPv6 neighbour) with `weight`.
fn hop(port: u32, weight: u16, v6: bool) -> WeightedPath {
    WeightedPath {
        path: PathKey {
            ifindex: port,
            gateway: Some(if v6 { gw6(port) } else { gw4(port) }),
        },
        weight: weight.into(),
    }
}

fn parse(p: &str) -> Prefix {
    let (a, l) = p.split_once('/').expect("prefix");
    prefix(a.parse().expect("addr"), l.parse().expect("len"))
}

/// `p` via the ports listed (weight 1 each; a port listed twice is a hop listed twice).
fn route(ks: &mut KernelState, p: &str, ports: &[u32]) {
    let pf = parse(p);
    let hops = ports
        .iter()
        .map(|i| hop(*i, 1, pf.addr.is_ipv6()))
        .collect();
    ks.routes
        .insert(pf, Metrics::one(0, RouteTarget::Paths(hops)));
}

fn unroute(ks: &mut KernelState, p: &str) {
    ks.routes.remove(&parse(p));
}

fn resilient(buckets: u16, idle_timer_ms: u64) -> PlainGroupMode {
    PlainGroupMode::Resilient {
        buckets,
        max_buckets: buckets,
        idle_timer_ms,
        unbalanced_timer_ms: 0,
    }
}

fn reconciler(mode: PlainGroupMode, limits: Limits) -> Reconciler {
    Reconciler::with_limits(mode, limits)
}

/// A sync of every prefix; stamps from `last_used`.
fn sync_with(
    rec: &mut Reconciler,
    ks: &KernelState,
    mem: &mut Mem,
    now: u64,
    last_used: &dyn Fn(u32) -> Option<u64>,
) {
    rec.sync(ks, &Dirty::All, mem, now, last_used);
}

fn sync(rec: &mut Reconciler, ks: &KernelState, mem: &mut Mem, now: u64) {
    sync_with(rec, ks, mem, now, &|_| None);
}

/// A sync of nothing that changed: what it does, it does by itself (retries).
fn sync_nothing(rec: &mut Reconciler, ks: &KernelState, mem: &mut Mem, now: u64) {
    rec.sync(ks, &Dirty::Prefixes(Default::default()), mem, now, &|_| {
        None
    });
}

fn nothing_waits(rec: &Reconciler) -> bool {
    rec.waiting().is_empty()
}

/// Routes whose packets pass to the kernel for want of room.
fn to_kernel(rec: &Reconciler) -> usize {
    rec.routes_to_kernel()
}

/// The objects waiting for room in `limit`.
fn waiting(rec: &Reconciler, limit: Limit) -> Vec<String> {
    rec.waiting()
        .into_iter()
        .filter(|(l, _)| *l == limit)
        .map(|(_, o)| o)
        .collect()
}

#[test]
fn a_hop_listed_twice_gets_both_shares() {
    // ip route add 172.16.0.0/24 nexthop via A nexthop via B nexthop via A:
    // the kernel sends 2/3 of the flows to A (measured: 2031 of 3000).
    let mut ks = world();
    route(&mut ks, "172.16.0.0/24", &[1, 2, 1]);
    route(&mut ks, "172.16.1.0/24", &[3, 3]);
    let mut mem = Mem::new(Limits::default());
    let mut rec = reconciler(resilient(128, 0), Limits::default());
    sync(&mut rec, &ks, &mut mem, 0);
    assert_eq!(
        mem.split("172.16.0.0/24"),
        BTreeMap::from([(1, 85), (2, 43)]),
        "weights 2:1"
    );
    assert_eq!(mem.split("172.16.1.0/24"), BTreeMap::from([(3, 128)]));
    assert_eq!(mem.egress("172.16.1.7"), Some(3));

    // Nexthop objects 1 and 2 on the same path, in one group with 3.
    let mut ks = world();
    for (id, port) in [(1, 1), (2, 1), (3, 2)] {
        ks.nexthops.insert(
            id,
            NexthopObject::Single {
                path: hop(port, 1, false).path,
                blackhole: false,
            },
        );
    }
    ks.nexthops.insert(
        10,
        NexthopObject::Group {
            members: vec![(1, 1), (2, 1), (3, 1)],
            resilient: None,
        },
    );
    ks.routes.insert(
        parse("172.16.2.0/24"),
        Metrics::one(0, RouteTarget::Nexthop(10)),
    );
    let mut mem = Mem::new(Limits::default());
    let mut rec = reconciler(resilient(128, 0), Limits::default());
    sync(&mut rec, &ks, &mut mem, 0);
    assert_eq!(
        mem.split("172.16.2.0/24"),
        BTreeMap::from([(1, 85), (2, 43)])
    );
}

#[test]
fn weights_past_16_bits_fit_a_group() {
    // Members of 40,001 and 30,000 (no common divisor): 70,001 modulo
    // slots would not fit the group's 16-bit size; scaled, the split holds.
    let mut ks = world();
    for (id, port) in [(1, 1), (2, 2), (3, 1)] {
        ks.nexthops.insert(
            id,
            NexthopObject::Single {
                path: hop(port, 1, false).path,
                blackhole: false,
            },
        );
    }
    ks.nexthops.insert(
        10,
        NexthopObject::Group {
            members: vec![(1, 40_001), (2, 30_000)],
            resilient: None,
        },
    );
    // And one path twice at the largest weight: 131,070 in all.
    ks.nexthops.insert(
        11,
        NexthopObject::Group {
            members: vec![(1, 65_535), (3, 65_535), (2, 1)],
            resilient: None,
        },
    );
    for (p, nh) in [("172.16.0.0/24", 10), ("172.16.1.0/24", 11)] {
        ks.routes
            .insert(parse(p), Metrics::one(0, RouteTarget::Nexthop(nh)));
    }
    let mut mem = Mem::new(Limits::default());
    let mut rec = reconciler(PlainGroupMode::Modulo, Limits::default());
    sync(&mut rec, &ks, &mut mem, 0);
    let split = mem.split("172.16.0.0/24");
    let size: usize = split.values().sum();
    assert!(size <= 65_535, "{size} slots");
    let share = split[&1] as f64 / size as f64;
    assert!(
        (share - 40_001.0 / 70_001.0).abs() < 1e-4,
        "share {share}, {split:?}"
    );
    let split = mem.split("172.16.1.0/24");
    let size: usize = split.values().sum();
    assert!(size <= 65_535, "{size} slots");
    assert_eq!(split[&2], 1, "weight 1 of 131,071 keeps one slot");

    // The same in resilient groups: shares out of 128 buckets.
    let mut mem = Mem::new(Limits::default());
    let mut rec = reconciler(resilient(128, 0), Limits::default());
    sync(&mut rec, &ks, &mut mem, 0);
    assert_eq!(
        mem.split("172.16.0.0/24"),
        BTreeMap::from([(1, 73), (2, 55)])
    );
    assert_eq!(mem.split("172.16.1.0/24"), BTreeMap::from([(1, 128)]));
}

#[test]
fn a_full_next_hop_table_passes_only_the_new_hops_flows_then_recovers() {
    // Two next-hop entries (ids 1 and 2).
    let limits = Limits {
        nexthops: 3,
        ..Limits::default()
    };
    let mut ks = world();
    route(&mut ks, "172.16.1.0/24", &[1, 2]);
    route(&mut ks, "172.16.2.0/24", &[3]);
    let mut mem = Mem::new(limits);
    let mut rec = reconciler(resilient(64, 0), limits);
    sync(&mut rec, &ks, &mut mem, 0);
    assert!(mem.egress("172.16.1.1").is_some());
    assert_eq!(mem.verdict("172.16.2.1"), Verdict::PassNexthopDown);
    assert_eq!(
        waiting(&rec, Limit::Nexthops),
        ["next hop 10.0.3.2 dev eth3"]
    );
    // Room frees: the next hops of the first route go; the next sync, dirty or not, writes it.
    unroute(&mut ks, "172.16.1.0/24");
    sync(&mut rec, &ks, &mut mem, 1);
    sync_nothing(&mut rec, &ks, &mut mem, 2);
    assert_eq!(mem.egress("172.16.2.1"), Some(3));
    assert!(nothing_waits(&rec));
}

#[test]
fn a_full_group_table_passes_the_routes_to_the_kernel_then_recovers() {
    // One group id.
    let limits = Limits {
        groups: 2,
        ..Limits::default()
    };
    let mut ks = world();
    route(&mut ks, "172.16.1.0/24", &[1]);
    let mut mem = Mem::new(limits);
    let mut rec = reconciler(resilient(64, 0), limits);
    sync(&mut rec, &ks, &mut mem, 0);
    route(&mut ks, "172.16.2.0/24", &[2]);
    sync(&mut rec, &ks, &mut mem, 1);
    assert_eq!(mem.egress("172.16.1.1"), Some(1));
    assert_eq!(mem.verdict("172.16.2.1"), Verdict::PassNoRoute);
    assert_eq!(
        waiting(&rec, Limit::Groups),
        ["the group via 10.0.2.2 dev eth2"]
    );
    assert_eq!(to_kernel(&rec), 1);
    unroute(&mut ks, "172.16.1.0/24");
    sync(&mut rec, &ks, &mut mem, 2);
    sync_nothing(&mut rec, &ks, &mut mem, 3);
    assert_eq!(mem.egress("172.16.2.1"), Some(2));
    assert_eq!(to_kernel(&rec), 0);
}

#[test]
fn a_full_slot_pool_passes_the_routes_to_the_kernel_then_recovers() {
    // Room for one window of 128 buckets.
    let limits = Limits {
        slots: 200,
        ..Limits::default()
    };
    let mut ks = world();
    route(&mut ks, "172.16.1.0/24", &[1, 2]);
    let mut mem = Mem::new(limits);
    let mut rec = reconciler(resilient(128, 0), limits);
    sync(&mut rec, &ks, &mut mem, 0);
    route(&mut ks, "172.16.2.0/24", &[3, 4]);
    sync(&mut rec, &ks, &mut mem, 1);
    assert!(mem.egress("172.16.1.1").is_some());
    assert_eq!(mem.verdict("172.16.2.1"), Verdict::PassNoRoute);
    assert_eq!(waiting(&rec, Limit::Slots).len(), 1);
    unroute(&mut ks, "172.16.1.0/24");
    sync(&mut rec, &ks, &mut mem, 2);
    sync_nothing(&mut rec, &ks, &mut mem, 3);
    assert_eq!(
        mem.split("172.16.2.0/24"),
        BTreeMap::from([(3, 64), (4, 64)])
    );
    assert!(nothing_waits(&rec));
}

#[test]
fn a_full_redirect_map_passes_the_ports_next_hops_then_recovers() {
    let limits = Limits {
        txports: 1,
        ..Limits::default()
    };
    let mut ks = world();
    route(&mut ks, "172.16.1.0/24", &[1]);
    let mut mem = Mem::new(limits);
    let mut rec = reconciler(resilient(64, 0), limits);
    sync(&mut rec, &ks, &mut mem, 0);
    route(&mut ks, "172.16.2.0/24", &[2]);
    sync(&mut rec, &ks, &mut mem, 1);
    assert_eq!(mem.egress("172.16.1.1"), Some(1));
    assert_eq!(mem.verdict("172.16.2.1"), Verdict::PassNoTxport);
    assert_eq!(waiting(&rec, Limit::TxPorts), ["port eth2"]);
    unroute(&mut ks, "172.16.1.0/24");
    sync(&mut rec, &ks, &mut mem, 2);
    sync_nothing(&mut rec, &ks, &mut mem, 3);
    assert_eq!(mem.egress("172.16.2.1"), Some(2));
}

#[test]
fn a_full_chunk_table_leaves_the_route_out_and_its_cover_passes_until_room_frees() {
    // One DIR-24-8 chunk: 10.9.1.1/32 takes it, 10.9.2.1/32 finds none.
    let limits = Limits {
        dir_chunks: 1,
        ..Limits::default()
    };
    let mut ks = world();
    route(&mut ks, "10.9.0.0/16", &[3]);
    route(&mut ks, "10.9.1.1/32", &[1]);
    let mut mem = Mem::new(limits);
    let mut rec = reconciler(resilient(64, 0), limits);
    sync(&mut rec, &ks, &mut mem, 0);
    route(&mut ks, "10.9.2.1/32", &[2]);
    sync(&mut rec, &ks, &mut mem, 1);
    assert_eq!(mem.egress("10.9.1.1"), Some(1));
    // Not forwarded by the /16 (the kernel would send it to eth2): passed.
    assert_eq!(mem.verdict("10.9.2.1"), Verdict::PassNoRoute);
    assert_eq!(
        mem.verdict("10.9.3.1"),
        Verdict::PassNoRoute,
        "the cover passes"
    );
    assert_eq!(
        waiting(&rec, Limit::DirChunks),
        ["route 10.9.0.0/16", "route 10.9.2.1/32"]
    );
    assert_eq!(to_kernel(&rec), 2);
    unroute(&mut ks, "10.9.1.1/32");
    sync(&mut rec, &ks, &mut mem, 2);
    sync_nothing(&mut rec, &ks, &mut mem, 3);
    assert_eq!(mem.egress("10.9.2.1"), Some(2));
    assert_eq!(mem.egress("10.9.3.1"), Some(3), "the cover forwards again");
    assert_eq!(to_kernel(&rec), 0);
}

#[test]
fn a_full_ipv6_table_leaves_the_route_to_the_kernel_then_recovers() {
    let limits = Limits {
        routes_v6: 1,
        ..Limits::default()
    };
    let mut ks = world();
    route(&mut ks, "2001:db8:a::/48", &[1]);
    let mut mem = Mem::new(limits);
    let mut rec = reconciler(resilient(64, 0), limits);
    sync(&mut rec, &ks, &mut mem, 0);
    route(&mut ks, "2001:db8:b::/48", &[2]);
    sync(&mut rec, &ks, &mut mem, 1);
    assert_eq!(mem.egress("2001:db8:a::1"), Some(1));
    assert_eq!(mem.verdict("2001:db8:b::1"), Verdict::PassNoRoute);
    assert_eq!(waiting(&rec, Limit::RoutesV6), ["route 2001:db8:b::/48"]);
    unroute(&mut ks, "2001:db8:a::/48");
    sync(&mut rec, &ks, &mut mem, 2);
    sync_nothing(&mut rec, &ks, &mut mem, 3);
    assert_eq!(mem.egress("2001:db8:b::1"), Some(2));
}

#[test]
fn a_full_ipv6_search_leaves_the_route_out_and_its_cover_passes_until_room_frees() {
    // The route table has room; the writer's slot table (routes and
    // markers) has none for a second route.
    let mut ks = world();
    route(&mut ks, "2001:db8:a::/48", &[1]);
    let mut mem = Mem::new(Limits::default());
    mem.v6_slots_for = Some(1);
    let mut rec = reconciler(resilient(64, 0), Limits::default());
    sync(&mut rec, &ks, &mut mem, 0);
    route(&mut ks, "2001:db8:a::5/128", &[2]);
    sync(&mut rec, &ks, &mut mem, 1);
    assert_eq!(mem.verdict("2001:db8:a::5"), Verdict::PassNoRoute);
    assert_eq!(
        mem.verdict("2001:db8:a::1"),
        Verdict::PassNoRoute,
        "the cover passes"
    );
    assert_eq!(
        waiting(&rec, Limit::RoutesV6),
        ["route 2001:db8:a::/48", "route 2001:db8:a::5/128"]
    );
    mem.v6_slots_for = None;
    sync_nothing(&mut rec, &ks, &mut mem, 2);
    assert_eq!(mem.egress("2001:db8:a::5"), Some(2));
    assert_eq!(
        mem.egress("2001:db8:a::1"),
        Some(1),
        "the cover forwards again"
    );
    assert_eq!(to_kernel(&rec), 0);
}

#[test]
fn a_bucket_stamped_over_2_31_jiffies_ago_is_idle_not_busy() {
    // Stamps are the low 32 bits of jiffies: one 2^31 + 5 jiffies old
    // (24.9 days at HZ=1000) looks, wrapped, like one from the future.
    let clock = StampClock {
        jiffies: 1_000,
        hz: 1000,
    };
    let ancient = 1_000u32.wrapping_sub((1 << 31) + 5) | 1;
    let now = 100_000;
    assert!(clock.last_used_ms(ancient, now) < Some(now - 60_000));
    let mut ks = world();
    route(&mut ks, "172.16.0.0/24", &[1, 2]);
    let mut mem = Mem::new(Limits::default());
    let mut rec = reconciler(resilient(64, 10_000), Limits::default());
    sync(&mut rec, &ks, &mut mem, 0);
    // Port 3 joins long after; every bucket was last used 24.9 days ago.
    route(&mut ks, "172.16.0.0/24", &[1, 2, 3]);
    let last_used = |_: u32| clock.last_used_ms(ancient, now);
    sync_with(&mut rec, &ks, &mut mem, now, &last_used);
    assert_eq!(
        mem.split("172.16.0.0/24"),
        BTreeMap::from([(1, 21), (2, 22), (3, 21)]),
        "idle buckets move to the new member"
    );
}

#[test]
fn a_reused_slot_window_does_not_inherit_the_previous_groups_stamps() {
    let mut ks = world();
    let mut mem = Mem::new(Limits::default());
    let mut rec = reconciler(resilient(64, 1_000), Limits::default());
    // Window [0, 64) for Q's group, [64, 128) for P's.
    route(&mut ks, "172.16.9.0/24", &[5]);
    sync(&mut rec, &ks, &mut mem, 0);
    route(&mut ks, "172.16.0.0/24", &[1, 2]);
    sync(&mut rec, &ks, &mut mem, 1);
    // Q's buckets were busy until it went at 4,900.
    let stale = |slot: u32| (slot < 64).then_some(4_900);
    unroute(&mut ks, "172.16.9.0/24");
    sync_with(&mut rec, &ks, &mut mem, 4_900, &stale);
    // P's next group (port 3 joins) is written where Q's was.
    route(&mut ks, "172.16.0.0/24", &[1, 2, 3]);
    sync_with(&mut rec, &ks, &mut mem, 5_000, &stale);
    let p = parse("172.16.0.0/24");
    assert_eq!(
        mem.groups[&mem.routes[&p].group].base, 0,
        "Q's window reused"
    );
    assert_eq!(
        mem.split("172.16.0.0/24"),
        BTreeMap::from([(1, 21), (2, 22), (3, 21)])
    );
    // Port 4 joins: no bucket of P has carried a packet; Q's stamps are not P's.
    route(&mut ks, "172.16.0.0/24", &[1, 2, 3, 4]);
    sync_with(&mut rec, &ks, &mut mem, 5_500, &stale);
    assert_eq!(
        mem.split("172.16.0.0/24"),
        BTreeMap::from([(1, 16), (2, 16), (3, 16), (4, 16)])
    );
}

#[test]
fn pinned_routes_keep_flows_through_a_member_set_change_and_unpinned_ones_do_not() {
    let mut ks = world();
    let mut mem = Mem::new(Limits::default());
    let mut rec = reconciler(resilient(64, 0), Limits::default());
    rec.set_pinned(vec![parse("192.0.2.0/24")]);
    route(&mut ks, "192.0.2.1/32", &[1, 2, 3, 4]);
    route(&mut ks, "198.51.100.1/32", &[1, 2, 3, 4]);
    sync(&mut rec, &ks, &mut mem, 0);
    let pinned = mem.routes[&parse("192.0.2.1/32")];
    let plain = mem.routes[&parse("198.51.100.1/32")];
    assert_eq!(pinned.flags, ROUTE_PIN);
    assert_eq!(plain.flags, 0);
    // Every live member of the pinned route's group is recorded, by path,
    // with the next hop the path has.
    let members: Vec<u32> = (1..=4)
        .map(|port| {
            let path = rec.path_ids[&hop(port, 1, false).path];
            let nh = mem
                .t
                .pin_member(pinned.group, path)
                .expect("a live member is recorded");
            assert_eq!(mem.nexthops[&nh].path, path);
            nh
        })
        .collect();
    assert_eq!(members.len(), 4);
    let a: IpAddr = "192.0.2.1".parse().unwrap();
    let b: IpAddr = "198.51.100.1".parse().unwrap();
    let mut flows = MemoryFlows::default();
    let egress = |mem: &Mem, flows: &mut MemoryFlows, dst: IpAddr, sport: u16| {
        mem.decide_with(Some(flows), dst, sport).ifindex
    };
    let first_a: Vec<u32> = (0..400)
        .map(|s| egress(&mem, &mut flows, a, 1000 + s))
        .collect();
    let first_b: Vec<u32> = (0..400).map(|s| mem.decide(b, 1000 + s).ifindex).collect();
    // The routing daemon replaces both routes: port 4 leaves, 5 and 6 join.
    // Buckets move to the newcomers (the idle timer is 0).
    route(&mut ks, "192.0.2.1/32", &[1, 2, 3, 5, 6]);
    route(&mut ks, "198.51.100.1/32", &[1, 2, 3, 5, 6]);
    sync(&mut rec, &ks, &mut mem, 1000);
    let mut kept = 0;
    for (s, was) in first_a.iter().enumerate() {
        let now = egress(&mem, &mut flows, a, 1000 + s as u16);
        if *was == 4 {
            assert_ne!(now, 4, "a flow whose path left is hashed again");
        } else {
            assert_eq!(now, *was, "a pinned flow whose path stayed moved");
            kept += 1;
        }
    }
    let moved_b = first_b
        .iter()
        .enumerate()
        .filter(|(s, was)| **was != 4 && mem.decide(b, 1000 + *s as u16).ifindex != **was)
        .count();
    assert!(kept > 250, "{kept}");
    assert!(
        moved_b > 20,
        "unpinned, some flows of staying members move to the new ones: {moved_b}"
    );
    // The member that left is no longer recorded; the routes gone (they
    // share the group), neither is any member of their group.
    let path4 = rec.path_ids[&hop(4, 1, false).path];
    let group = mem.routes[&parse("192.0.2.1/32")].group;
    assert_eq!(mem.t.pin_member(group, path4), None);
    unroute(&mut ks, "192.0.2.1/32");
    unroute(&mut ks, "198.51.100.1/32");
    sync(&mut rec, &ks, &mut mem, 2000);
    for port in [1, 2, 3, 5, 6] {
        let path = rec.path_ids[&hop(port, 1, false).path];
        assert_eq!(mem.t.pin_member(group, path), None, "port {port}");
    }
}

#[test]
fn a_route_follows_the_pinned_prefixes_as_they_change() {
    let mut ks = world();
    let mut mem = Mem::new(Limits::default());
    let mut rec = reconciler(resilient(64, 0), Limits::default());
    route(&mut ks, "192.0.2.1/32", &[1, 2]);
    rec.set_pinned(vec![parse("192.0.2.0/24")]);
    sync(&mut rec, &ks, &mut mem, 0);
    assert_eq!(mem.routes[&parse("192.0.2.1/32")].flags, ROUTE_PIN);
    // A restart without the prefix (the maps adopted as they are): the
    // route is written again without the flag, though group and kind stay.
    rec.set_pinned(Vec::new());
    sync(&mut rec, &ks, &mut mem, 1);
    assert_eq!(mem.routes[&parse("192.0.2.1/32")].flags, 0);
    rec.set_pinned(vec![parse("192.0.2.1/32")]);
    sync(&mut rec, &ks, &mut mem, 2);
    assert_eq!(mem.routes[&parse("192.0.2.1/32")].flags, ROUTE_PIN);
}

/// Buckets whose port is the same in `a` and `b`.
fn kept(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x == y).count()
}

#[test]
fn a_route_deleted_and_back_with_other_members_starts_from_its_old_table() {
    // Alone in its group: the group goes with the route, and the table it
    // had is what the route's new group starts from.
    let mut ks = world();
    let mut mem = Mem::new(Limits::default());
    let mut rec = reconciler(resilient(64, 0), Limits::default());
    // A table no fresh one looks like: port 4's buckets shared out.
    route(&mut ks, "192.0.2.1/32", &[1, 2, 3, 4]);
    sync(&mut rec, &ks, &mut mem, 0);
    route(&mut ks, "192.0.2.1/32", &[1, 2, 3]);
    sync(&mut rec, &ks, &mut mem, 0);
    let before = mem.buckets("192.0.2.1/32");
    unroute(&mut ks, "192.0.2.1/32");
    sync(&mut rec, &ks, &mut mem, 1_000);
    route(&mut ks, "192.0.2.1/32", &[1, 2, 4]);
    sync(&mut rec, &ks, &mut mem, 2_000);
    let after = mem.buckets("192.0.2.1/32");
    let of_3 = before.iter().filter(|p| **p == 3).count();
    assert_eq!(
        kept(&before, &after),
        before.len() - of_3,
        "{before:?} -> {after:?}"
    );
    assert!(after.iter().all(|p| *p != 3));

    // Sharing its group: the group still forwards, and the route's new
    // group starts from its table as it is now.
    let mut ks = world();
    let mut mem = Mem::new(Limits::default());
    let mut rec = reconciler(resilient(64, 0), Limits::default());
    route(&mut ks, "192.0.2.1/32", &[1, 2, 3, 4]);
    route(&mut ks, "192.0.2.2/32", &[1, 2, 3, 4]);
    sync(&mut rec, &ks, &mut mem, 0);
    route(&mut ks, "192.0.2.1/32", &[1, 2, 3]);
    route(&mut ks, "192.0.2.2/32", &[1, 2, 3]);
    sync(&mut rec, &ks, &mut mem, 0);
    let shared = mem.buckets("192.0.2.2/32");
    unroute(&mut ks, "192.0.2.1/32");
    sync(&mut rec, &ks, &mut mem, 1_000);
    route(&mut ks, "192.0.2.1/32", &[1, 2, 4]);
    sync(&mut rec, &ks, &mut mem, 2_000);
    let after = mem.buckets("192.0.2.1/32");
    let of_3 = shared.iter().filter(|p| **p == 3).count();
    assert_eq!(kept(&shared, &after), shared.len() - of_3);
}
