//! Torn-state stress run: live frames from both CPUs through xdp-ecmp while the in-process reconciler churns next hops, group windows, group ids and DIR-24-8 chunks; sinks check that every frame left by a port of route A's group with a MAC valid for that port.
//!
//! The world (all in one namespace, `rate::veth_chain`): the generator sends
//! to 172.16.255.66, inside route A (172.16.255.0/24), which forwards over
//! next hops on out_1..out_4. Each of A's neighbours flips between two MACs,
//! both valid for its port; A's members leave and come back, so its group
//! moves to new slot windows under the same id (A is a nexthop-object group
//! in modulo mode, the hardest case: every member change resizes it), and
//! now and then A's route turns into an equivalent multipath route and back
//! (a new group id; the old one is retired). Routes B use other next hops,
//! on the same ports and on out_5 (which A never uses), whose MACs are never
//! valid for A; they are resized, replaced, deleted and re-added, and each
//! change is scheduled right after an A change, so that B picks up at once
//! what A just retired (next-hop ids are reused last-freed-first, slot
//! windows first-fit). B toggles 172.16.255.128/25 (A's /24 then needs a
//! DIR-24-8 chunk, freed again on delete) and adds and deletes /25-/32s in
//! 10.9.k.0/24, while filler routes hold all but a few chunks, so a freed
//! chunk is handed out again within a few allocations. An XDP program on
//! every sink checks every frame of the run; one that left with a MAC A
//! never had on that port is wrong. A is always forwardable, so a frame of
//! the run that xdp-ecmp passes to the kernel met retired or torn state too.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use control::reconcile::Reconciler;
use control::state::{
    Dirty, KernelState, Link, Neighbour, NexthopObject, PathKey, Prefix, RouteTarget, WeightedPath,
    TABLE_MAIN,
};
use control::translate::PlainGroupMode;
use dataplane::abi::{
    xe_config, xe_group, xe_nexthop, xe_route, GROUP_UNUSED, MAX_DIR_CHUNKS, NH_TXPORT, NH_USABLE,
    RT_UNREACHABLE, XDP_PASS,
};
use dataplane::grace::GracePeriods;
use dataplane::loader::{ifindex_of, pin_thread_to_cpu, AttachMode};
use dataplane::{Dataplane, LoadOptions, TableWriter};
use libbpf_rs::{MapCore, MapFlags};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::rate::{self, generate, mac, mac_str, percpu_sum, set_gen, traffic};
use crate::ANYCAST;

/// Ports A forwards over (out_1..out_4); out_5 carries only B's next hops.
const A_PORTS: usize = 4;
const PORTS: usize = 5;
/// A's member weights (sum 7, so the program divides by the size; with the
/// heavy member out, 4 of 7 buckets of the old size are past the new window).
const A_WEIGHTS: [u16; A_PORTS] = [1, 1, 1, 4];
/// A's nexthop-object group; its single next hops are 1..=4.
const A_NHID: u32 = 100;
/// B's nexthop-object group (resized under one id); B's singles are 1000 + i.
const B_NHID: u32 = 200;
const B_SINGLE: u32 = 1000;
/// B gateways per port.
const B_GWS: usize = 3;
/// B's multipath /24s (10.8.j.0/24; j = 0 always uses B_NHID).
const B_ROUTES: u8 = 4;
/// /24s where B adds and deletes one prefix longer than /24 (10.9.k.0/24).
const CHUNK_NETS: u8 = 8;
/// Chunks left free beyond what the world can hold at once.
const CHUNK_FLOAT: u32 = 4;
/// Source ports the generator cycles through (per CPU).
const FLOWS: u32 = 4096;
/// Frames per generator call (a call ends early once the run is over).
const GEN_CALL: u32 = 1 << 20;
/// Frames of the run checked at the sinks must be at least this share of
/// those generated (the rest were dropped on the way by full veth rings, or
/// passed to the kernel). Measured: all but a handful, with one veth queue
/// per CPU (about half with a single queue, which both CPUs share).
pub const MIN_CHECKED_SHARE: f64 = 0.9;
/// Changes per second the churn must reach.
pub const MIN_CHANGES_PER_S: f64 = 1000.0;
/// The seed of the change schedule when none is given.
pub const DEFAULT_SEED: u64 = 0x746f_726e;

/// Settings of one run.
pub struct TornOptions {
    /// Seconds of churn under traffic.
    pub seconds: f64,
    /// Seed of the change schedule's choices.
    pub seed: u64,
}

/// What the sinks saw of a wrong frame.
#[derive(Debug, Clone)]
pub struct WrongFrame {
    pub sink: usize,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub sport: u16,
    pub ttl: u8,
    pub cpu: u8,
}

/// The figures of one run.
#[derive(Debug, Clone, Default)]
pub struct TornResult {
    pub seed: u64,
    /// Seconds of churn, and the changes applied in them.
    pub seconds: f64,
    /// Frames the generators sent (both CPUs; this and the next three
    /// cover the whole run, warm-up included).
    pub generated: u64,
    /// Frames of the run the sinks checked.
    pub checked: u64,
    pub wrong: u64,
    /// Frames xdp-ecmp passed to the kernel, and how many for each reason.
    pub passed: u64,
    pub passed_by: Vec<(&'static str, u64)>,
    pub changes: u64,
    pub reuse: Reuse,
    /// The first wrong frames, described.
    pub examples: Vec<String>,
}

/// How often the churn set up each race (counted from the map writes).
#[derive(Debug, Clone, Copy, Default)]
pub struct Reuse {
    /// A's group written to a new window under the same id.
    pub a_moves: u64,
    /// ... to a smaller window ...
    pub a_shrinks: u64,
    /// ... with a next hop of B's (or a port A never uses) in the slots
    /// just past the new window, where a packet that read the old size and
    /// the new base lands.
    pub a_shrinks_exposed: u64,
    /// Next-hop ids A retired that B's next write gave B's contents.
    pub nexthops: u64,
    /// Group ids A retired that became B's groups.
    pub groups: u64,
    /// Slot windows A left that B's slots were written into.
    pub windows: u64,
}

impl TornResult {
    pub fn changes_per_s(&self) -> f64 {
        self.changes as f64 / self.seconds.max(1e-9)
    }

    pub fn checked_share(&self) -> f64 {
        self.checked as f64 / self.generated.max(1) as f64
    }

    /// The run's figures on one line.
    pub fn line(&self) -> String {
        let r = &self.reuse;
        format!(
            "torn (seed {:#x}): {:.1} s, generated {} frames (both CPUs), checked {} ({:.0}%), wrong {}, passed to the kernel {}{}, changes {} ({:.0}/s); set up: A window moves {} (shrinks {}, {} with B past the new window), A's retired ids reused by B: next hops {}, groups {}, windows {}",
            self.seed,
            self.seconds,
            self.generated,
            self.checked,
            100.0 * self.checked_share(),
            self.wrong,
            self.passed,
            if self.passed_by.is_empty() {
                String::new()
            } else {
                let by: Vec<String> = self
                    .passed_by
                    .iter()
                    .map(|(v, n)| format!("{v} {n}"))
                    .collect();
                format!(" ({})", by.join(", "))
            },
            self.changes,
            self.changes_per_s(),
            r.a_moves,
            r.a_shrinks,
            r.a_shrinks_exposed,
            r.nexthops,
            r.groups,
            r.windows,
        )
    }

    /// Every way the run failed (empty: it passed).
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.wrong > 0 {
            f.push(format!(
                "{} frames left with a MAC A never had on their port; the first:\n  {}",
                self.wrong,
                self.examples.join("\n  ")
            ));
        }
        if self.passed > 0 {
            // A always has three or more live, resolved members on ports in
            // the redirect map: a frame of A's the program hands to the
            // kernel met a group, window or next hop already retired (or a
            // torn group, or a chunk reused under it).
            f.push(format!(
                "{} frames of A (always forwardable) were passed to the kernel: they met retired or torn state",
                self.passed
            ));
        }
        if self.changes_per_s() < MIN_CHANGES_PER_S {
            f.push(format!(
                "{:.0} changes/s, below {MIN_CHANGES_PER_S}",
                self.changes_per_s()
            ));
        }
        if self.reuse.a_moves == 0 {
            f.push("A's group never moved to a new window: the churn set up no race".to_string());
        }
        if self.checked_share() < MIN_CHECKED_SHARE {
            f.push(format!(
                "checked {:.1}% of the frames generated, below {:.0}%",
                100.0 * self.checked_share(),
                100.0 * MIN_CHECKED_SHARE
            ));
        }
        f
    }
}

/// A's gateway on port k (0-based).
fn a_gw(k: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, k as u8 + 1, 2))
}

/// The two MACs A's neighbour on port k takes turns with.
fn a_mac(k: usize, v: u8) -> [u8; 6] {
    [2, 0x0a, 0, 0, k as u8 + 1, v]
}

/// B's gateway j on port k.
fn b_gw(k: usize, j: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, k as u8 + 1, 10 + j as u8))
}

/// B's neighbour MAC for gateway j on port k, generation g (never A's).
fn b_mac(k: usize, j: usize, g: u16) -> [u8; 6] {
    let g = g.to_be_bytes();
    [2, 0x0b, k as u8 + 1, j as u8, g[0], g[1]]
}

/// The source MAC of frames leaving by port k (rate::veth_chain's out_k).
fn port_mac(k: usize) -> [u8; 6] {
    mac(1, k as u8 + 1)
}

fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Prefix {
    Prefix {
        addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        len,
    }
}

fn a_prefix() -> Prefix {
    v4(172, 16, 255, 0, 24)
}

/// The /25 of A's /24 that B takes and gives back.
fn split_prefix() -> Prefix {
    v4(172, 16, 255, 128, 25)
}

/// The changes, in the order they are applied (round robin). Each change of
/// A is followed by a change of B that allocates what A just released.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// One of A's neighbours flips MAC: a new next-hop id, the old one retired.
    AMac,
    /// One of A's members leaves or returns: A's group moves to a new window.
    AMember,
    /// A's route turns into an equivalent multipath route, or back: a new group id.
    AForm,
    /// A B neighbour gets a new MAC: a new next-hop id (last freed first).
    BMac,
    /// B's nexthop-object group gets another member set (same id, new window).
    BResize,
    /// One of B's multipath routes gets another member set (new group id and window).
    BReplace,
    /// One of B's multipath routes is deleted, or added back.
    BRoute,
    /// B takes 172.16.255.128/25, or gives it back (a DIR-24-8 chunk for A's /24).
    Split,
    /// B adds or deletes a prefix longer than /24 in 10.9.k.0/24 (a chunk).
    Chunk,
}

/// The race that showed most, while the program read a group's fields one
/// by one, was a packet reading A's group half before and half after a move
/// (the old size with the new base): so A's group moves at 7 changes in 20,
/// each right after a change of B's windows, which leaves B's slots behind
/// the holes A's next window takes.
const CYCLE: [Change; 20] = [
    Change::AMember,
    Change::BReplace,
    Change::AMember,
    Change::BResize,
    Change::AMember,
    Change::Chunk,
    Change::AMac,
    Change::BMac,
    Change::AMember,
    Change::BReplace,
    Change::AMember,
    Change::Split,
    Change::AForm,
    Change::BRoute,
    Change::AForm,
    Change::Chunk,
    Change::AMember,
    Change::BReplace,
    Change::AMember,
    Change::BMac,
];

/// The kernel state the reconciler mirrors, built and changed by hand.
struct World {
    ks: KernelState,
    rng: SmallRng,
    outs: [u32; PORTS],
    /// Which of its two MACs each A neighbour has.
    a_mac: [u8; A_PORTS],
    a_in: [bool; A_PORTS],
    /// A's route is a multipath route (else it uses nexthop object A_NHID).
    a_paths: bool,
    /// MAC generation of each B path (port * B_GWS + gateway).
    b_gen: Vec<u16>,
}

impl World {
    fn new(outs: [u32; PORTS], names: &[String], seed: u64) -> Self {
        let mut ks = KernelState::new(TABLE_MAIN);
        for (k, &ifindex) in outs.iter().enumerate() {
            ks.links.insert(
                ifindex,
                Link {
                    ifindex,
                    name: names[k].clone(),
                    mac: port_mac(k),
                    mtu: 1500,
                    up: true,
                },
            );
        }
        let mut w = World {
            ks,
            rng: SmallRng::seed_from_u64(seed),
            outs,
            a_mac: [0; A_PORTS],
            a_in: [true; A_PORTS],
            a_paths: false,
            b_gen: vec![0; PORTS * B_GWS],
        };
        for (k, &out) in outs.iter().enumerate().take(A_PORTS) {
            w.ks.neighbours.insert(
                (out, a_gw(k)),
                Neighbour {
                    mac: Some(a_mac(k, 0)),
                    usable: true,
                },
            );
            w.ks.nexthops.insert(
                k as u32 + 1,
                NexthopObject::Single {
                    path: w.a_path(k),
                    blackhole: false,
                },
            );
        }
        w.set_a_group();
        w.set_route(a_prefix(), RouteTarget::Nexthop(A_NHID));
        w
    }

    fn a_path(&self, k: usize) -> PathKey {
        PathKey {
            ifindex: self.outs[k],
            gateway: Some(a_gw(k)),
        }
    }

    fn b_path(&self, i: usize) -> PathKey {
        PathKey {
            ifindex: self.outs[i / B_GWS],
            gateway: Some(b_gw(i / B_GWS, i % B_GWS)),
        }
    }

    fn set_route(&mut self, p: Prefix, t: RouteTarget) {
        self.ks.routes.insert(p, BTreeMap::from([(0, t)]));
    }

    fn set_a_group(&mut self) {
        let members = (0..A_PORTS)
            .filter(|k| self.a_in[*k])
            .map(|k| (k as u32 + 1, A_WEIGHTS[k]))
            .collect();
        self.ks.nexthops.insert(
            A_NHID,
            NexthopObject::Group {
                members,
                resilient: None,
            },
        );
    }

    fn a_target(&self) -> RouteTarget {
        if !self.a_paths {
            return RouteTarget::Nexthop(A_NHID);
        }
        RouteTarget::Paths(
            (0..A_PORTS)
                .filter(|k| self.a_in[*k])
                .map(|k| WeightedPath {
                    path: self.a_path(k),
                    weight: u32::from(A_WEIGHTS[k]),
                })
                .collect(),
        )
    }

    /// B's state after A's: every B neighbour, B's nexthop objects, and its /24s.
    fn add_b(&mut self) {
        for i in 0..PORTS * B_GWS {
            let (k, j) = (i / B_GWS, i % B_GWS);
            let path = self.b_path(i);
            self.ks.neighbours.insert(
                (path.ifindex, b_gw(k, j)),
                Neighbour {
                    mac: Some(b_mac(k, j, 0)),
                    usable: true,
                },
            );
            self.ks.nexthops.insert(
                B_SINGLE + i as u32,
                NexthopObject::Single {
                    path,
                    blackhole: false,
                },
            );
        }
        self.resize_b_group();
        self.set_route(v4(10, 8, 0, 0, 24), RouteTarget::Nexthop(B_NHID));
        for j in 1..B_ROUTES {
            let t = self.b_paths_target();
            self.set_route(v4(10, 8, j, 0, 24), t);
        }
    }

    fn resize_b_group(&mut self) {
        let n = self.rng.random_range(1..=6);
        let mut members: Vec<(u32, u16)> = Vec::new();
        while members.len() < n {
            let id = B_SINGLE + self.rng.random_range(0..PORTS * B_GWS) as u32;
            if !members.iter().any(|m| m.0 == id) {
                members.push((id, self.rng.random_range(1..=3)));
            }
        }
        self.ks.nexthops.insert(
            B_NHID,
            NexthopObject::Group {
                members,
                resilient: None,
            },
        );
    }

    /// A random B multipath target: 1-4 B paths, weights 1-3.
    fn b_paths_target(&mut self) -> RouteTarget {
        let n = self.rng.random_range(1..=4);
        let mut paths: Vec<WeightedPath> = Vec::new();
        while paths.len() < n {
            let i = self.rng.random_range(0..PORTS * B_GWS);
            let path = self.b_path(i);
            if !paths.iter().any(|p| p.path == path) {
                paths.push(WeightedPath {
                    path,
                    weight: self.rng.random_range(1..=3),
                });
            }
        }
        RouteTarget::Paths(paths)
    }

    /// A target for a B route: B's nexthop group or B paths.
    fn b_target(&mut self) -> RouteTarget {
        if self.rng.random_bool(0.25) {
            RouteTarget::Nexthop(B_NHID)
        } else {
            self.b_paths_target()
        }
    }

    /// Index of every B path some route uses now.
    fn b_paths_in_use(&self) -> Vec<usize> {
        let mut used: HashSet<PathKey> = HashSet::new();
        for t in self.ks.routes.values().filter_map(|m| m.values().next()) {
            match t {
                RouteTarget::Paths(p) => used.extend(p.iter().map(|w| w.path)),
                RouteTarget::Nexthop(B_NHID) => {
                    if let Some(NexthopObject::Group { members, .. }) =
                        self.ks.nexthops.get(&B_NHID)
                    {
                        for (id, _) in members {
                            if let Some(NexthopObject::Single { path, .. }) =
                                self.ks.nexthops.get(id)
                            {
                                used.insert(*path);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        (0..PORTS * B_GWS)
            .filter(|i| used.contains(&self.b_path(*i)))
            .collect()
    }

    fn toggle(&mut self, p: Prefix) -> Dirty {
        if self.ks.routes.remove(&p).is_none() {
            let t = self.b_target();
            self.set_route(p, t);
        }
        Dirty::Prefixes(HashSet::from([p]))
    }

    /// Applies one change to the kernel state; returns what the reconciler must look at.
    fn apply(&mut self, c: Change) -> Dirty {
        let none = || Dirty::Prefixes(HashSet::new());
        match c {
            Change::AMac => {
                let k = self.rng.random_range(0..A_PORTS);
                self.a_mac[k] ^= 1;
                let mac = a_mac(k, self.a_mac[k]);
                self.ks.neighbours.insert(
                    (self.outs[k], a_gw(k)),
                    Neighbour {
                        mac: Some(mac),
                        usable: true,
                    },
                );
                none()
            }
            Change::AMember => {
                // At most one member out at a time (A keeps >= 3 members),
                // chosen by weight: a heavier one leaves more of the old
                // size's buckets past the new window.
                let k = match self.a_in.iter().position(|x| !*x) {
                    Some(k) => k,
                    None => {
                        let total: u16 = A_WEIGHTS.iter().sum();
                        let mut r = self.rng.random_range(0..total);
                        (0..A_PORTS)
                            .find(|k| {
                                let hit = r < A_WEIGHTS[*k];
                                r = r.saturating_sub(A_WEIGHTS[*k]);
                                hit
                            })
                            .expect("r < total")
                    }
                };
                self.a_in[k] = !self.a_in[k];
                self.set_a_group();
                if self.a_paths {
                    let t = self.a_target();
                    self.set_route(a_prefix(), t);
                    Dirty::Prefixes(HashSet::from([a_prefix()]))
                } else {
                    Dirty::All
                }
            }
            Change::AForm => {
                self.a_paths = !self.a_paths;
                let t = self.a_target();
                self.set_route(a_prefix(), t);
                Dirty::Prefixes(HashSet::from([a_prefix()]))
            }
            Change::BMac => {
                let used = self.b_paths_in_use();
                if used.is_empty() {
                    return none();
                }
                let i = used[self.rng.random_range(0..used.len())];
                self.b_gen[i] = self.b_gen[i].wrapping_add(1);
                let (k, j) = (i / B_GWS, i % B_GWS);
                self.ks.neighbours.insert(
                    (self.outs[k], b_gw(k, j)),
                    Neighbour {
                        mac: Some(b_mac(k, j, self.b_gen[i])),
                        usable: true,
                    },
                );
                none()
            }
            Change::BResize => {
                self.resize_b_group();
                Dirty::All
            }
            Change::BReplace => {
                let p = v4(10, 8, self.rng.random_range(1..B_ROUTES), 0, 24);
                let t = self.b_paths_target();
                self.set_route(p, t);
                Dirty::Prefixes(HashSet::from([p]))
            }
            Change::BRoute => {
                let j = self.rng.random_range(1..B_ROUTES);
                self.toggle(v4(10, 8, j, 0, 24))
            }
            Change::Split => self.toggle(split_prefix()),
            Change::Chunk => {
                let net = self.rng.random_range(0..CHUNK_NETS);
                let here: Vec<Prefix> = self
                    .ks
                    .routes
                    .keys()
                    .filter(|p| matches!(p.addr, IpAddr::V4(a) if a.octets()[..3] == [10, 9, net]))
                    .copied()
                    .collect();
                if let Some(p) = here.first() {
                    self.ks.routes.remove(p);
                    return Dirty::Prefixes(HashSet::from([*p]));
                }
                let len = self.rng.random_range(25..=32u8);
                // The prefix's bits of the last octet, random.
                let host = self.rng.random::<u8>() & (0xff00u16 >> (len - 24)) as u8;
                let p = v4(10, 9, net, host, len);
                let t = self.b_target();
                self.set_route(p, t);
                Dirty::Prefixes(HashSet::from([p]))
            }
        }
    }

    /// The frames A may send: (egress ifindex, destination MAC).
    fn a_valid(&self) -> HashSet<(u32, [u8; 6])> {
        (0..A_PORTS)
            .flat_map(|k| (0..2).map(move |v| (k, v)))
            .map(|(k, v)| (self.outs[k], a_mac(k, v)))
            .collect()
    }

    /// What a destination MAC seen at a sink is.
    fn describe(&self, m: [u8; 6]) -> String {
        match m {
            [2, 0x0a, 0, 0, p, v] if (1..=A_PORTS as u8).contains(&p) && v < 2 => {
                format!("A's neighbour on out_{p}")
            }
            [2, 0x0b, p, j, g0, g1] if (1..=PORTS as u8).contains(&p) && usize::from(j) < B_GWS => {
                format!(
                    "B's neighbour {} on out_{p}, MAC generation {}",
                    b_gw(usize::from(p) - 1, usize::from(j)),
                    u16::from_be_bytes([g0, g1])
                )
            }
            [0, 0, 0, 0, 0, 0] => "zero".to_string(),
            _ => "unknown".to_string(),
        }
    }
}

/// The maps as the reconciler writes them, watched for the moments a race
/// could show: what A retires and B reuses, and A's shrinking windows.
struct Tap<'a> {
    dp: &'a mut Dataplane,
    a_valid: HashSet<(u32, [u8; 6])>,
    /// Next-hop ids holding one of A's next hops, and those A retired.
    a_nh: HashSet<u32>,
    a_nh_retired: HashSet<u32>,
    /// A's group ids with their window (base, size), and retired ones.
    a_groups: HashMap<u32, (u32, u32)>,
    a_groups_retired: HashSet<u32>,
    /// Windows A left (base, size), newest last.
    a_windows_left: Vec<(u32, u32)>,
    /// The last slots written from `base` (a new window is written just before its group).
    last_slots: (u32, Vec<u32>),
    reuse: Reuse,
}

impl<'a> Tap<'a> {
    fn new(dp: &'a mut Dataplane, a_valid: HashSet<(u32, [u8; 6])>) -> Self {
        Tap {
            dp,
            a_valid,
            a_nh: HashSet::new(),
            a_nh_retired: HashSet::new(),
            a_groups: HashMap::new(),
            a_groups_retired: HashSet::new(),
            a_windows_left: Vec::new(),
            last_slots: (u32::MAX, Vec::new()),
            reuse: Reuse::default(),
        }
    }

    fn is_a(&self, nh: &xe_nexthop) -> bool {
        self.a_valid.contains(&(nh.ifindex, nh.dmac))
    }

    fn leave_window(&mut self, w: (u32, u32)) {
        self.a_windows_left.push(w);
        if self.a_windows_left.len() > 64 {
            self.a_windows_left.remove(0);
        }
    }

    /// True if a slot in [from, to) sends frames out with a MAC A never had there.
    fn wrong_past(&self, from: u32, to: u32) -> dataplane::Result<bool> {
        for id in self.dp.slots(from, to - from)? {
            if id == 0 {
                continue;
            }
            let nh = self.dp.nexthop(id)?;
            if nh.state & NH_USABLE == NH_USABLE && nh.state & NH_TXPORT != 0 && !self.is_a(&nh) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl TableWriter for Tap<'_> {
    fn set_route_v4(&mut self, addr: Ipv4Addr, len: u8, route: &xe_route) -> dataplane::Result<()> {
        self.dp.set_route_v4(addr, len, route)
    }
    fn delete_route_v4(&mut self, addr: Ipv4Addr, len: u8) -> dataplane::Result<()> {
        self.dp.delete_route_v4(addr, len)
    }
    fn set_route_v6(
        &mut self,
        addr: std::net::Ipv6Addr,
        len: u8,
        route: &xe_route,
    ) -> dataplane::Result<()> {
        self.dp.set_route_v6(addr, len, route)
    }
    fn delete_route_v6(&mut self, addr: std::net::Ipv6Addr, len: u8) -> dataplane::Result<()> {
        self.dp.delete_route_v6(addr, len)
    }

    fn set_group(&mut self, id: u32, g: &xe_group) -> dataplane::Result<()> {
        let window = (g.base, u32::from(g.size));
        let is_a = g.mode != GROUP_UNUSED
            && g.size > 0
            && self.last_slots.0 == g.base
            && self.last_slots.1.len() == usize::from(g.size)
            && self.last_slots.1.iter().all(|s| self.a_nh.contains(s));
        if is_a {
            if let Some(&(base, size)) = self.a_groups.get(&id) {
                if base != g.base {
                    self.reuse.a_moves += 1;
                    if window.1 < size {
                        self.reuse.a_shrinks += 1;
                        if self.wrong_past(g.base + window.1, g.base + size)? {
                            self.reuse.a_shrinks_exposed += 1;
                        }
                    }
                    self.leave_window((base, size));
                }
            }
            // A may take back a window it left: it is no longer B's to reuse.
            self.a_windows_left
                .retain(|(b, s)| !(*b < window.0 + window.1 && window.0 < b + s));
            self.a_groups.insert(id, window);
            self.a_groups_retired.remove(&id);
        } else if let Some(w) = self.a_groups.remove(&id) {
            self.leave_window(w);
            self.a_groups_retired.insert(id);
        } else if g.mode != GROUP_UNUSED && self.a_groups_retired.remove(&id) {
            self.reuse.groups += 1;
        }
        self.dp.set_group(id, g)
    }

    fn set_slots(&mut self, base: u32, nexthops: &[u32]) -> dataplane::Result<()> {
        if !nexthops.iter().all(|s| self.a_nh.contains(s)) {
            let end = base + nexthops.len() as u32;
            if let Some(i) = self
                .a_windows_left
                .iter()
                .position(|(b, s)| *b < end && base < b + s)
            {
                self.a_windows_left.remove(i);
                self.reuse.windows += 1;
            }
        }
        self.last_slots = (base, nexthops.to_vec());
        self.dp.set_slots(base, nexthops)
    }

    fn set_nexthop(&mut self, id: u32, nh: &xe_nexthop) -> dataplane::Result<()> {
        if self.is_a(nh) {
            self.a_nh.insert(id);
            self.a_nh_retired.remove(&id);
        } else if self.a_nh.remove(&id) {
            self.a_nh_retired.insert(id);
        } else if nh.state != 0 && self.a_nh_retired.remove(&id) {
            self.reuse.nexthops += 1;
        }
        self.dp.set_nexthop(id, nh)
    }

    fn add_txport(&mut self, ifindex: u32) -> dataplane::Result<()> {
        self.dp.add_txport(ifindex)
    }
    fn remove_txport(&mut self, ifindex: u32) -> dataplane::Result<()> {
        self.dp.remove_txport(ifindex)
    }
    fn set_config(&mut self, cfg: &xe_config) -> dataplane::Result<()> {
        self.dp.set_config(cfg)
    }
    fn grace(&self) -> GracePeriods {
        self.dp.grace()
    }
}

/// Holds all but a few DIR-24-8 chunks with /32 routes in 10.128.0.0/10
/// (one per /24, never looked up), written past the reconciler: the
/// allocator hands out never-used chunks first, so without this a freed
/// chunk would come back only after all 16,384 had been used once.
fn hold_chunks(dp: &mut Dataplane, keep_free: u32) -> Result<u32> {
    let n = MAX_DIR_CHUNKS.saturating_sub(keep_free);
    let unreachable = xe_route {
        kind: RT_UNREACHABLE,
        ..Default::default()
    };
    for i in 0..n {
        let a = Ipv4Addr::new(10, 128 + (i >> 8) as u8, i as u8, 1);
        dp.set_route_v4(a, 32, &unreachable)
            .with_context(|| format!("filler route {a}/32"))?;
    }
    Ok(n)
}

/// Counters of the checking sinks: (valid, wrong, not the run's), over CPUs.
fn check_counts(t: &traffic::TrafficSkel<'_>) -> Result<[u64; 3]> {
    Ok([
        percpu_sum(&t.maps.check_count, 0)?,
        percpu_sum(&t.maps.check_count, 1)?,
        percpu_sum(&t.maps.check_count, 2)?,
    ])
}

/// The wrong frames the sinks kept (struct check_wrong, 20 bytes, per CPU).
fn wrong_frames(t: &traffic::TrafficSkel<'_>, sinks: &[u32]) -> Result<Vec<WrongFrame>> {
    let mut v = Vec::new();
    for key in 0..16u32 {
        let Some(per_cpu) = t
            .maps
            .check_wrong
            .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)?
        else {
            continue;
        };
        for b in per_cpu {
            let ifindex = u32::from_ne_bytes(b[0..4].try_into().expect("4 bytes"));
            if ifindex == 0 {
                continue;
            }
            v.push(WrongFrame {
                sink: sinks
                    .iter()
                    .position(|s| *s == ifindex)
                    .map_or(0, |k| k + 1),
                dmac: b[4..10].try_into().expect("6 bytes"),
                smac: b[10..16].try_into().expect("6 bytes"),
                sport: u16::from_be_bytes([b[16], b[17]]),
                ttl: b[18],
                cpu: b[19],
            });
        }
    }
    Ok(v)
}

/// Ends the traffic when dropped: the generators' loops end, and what their
/// current call has left to send is dropped at once.
struct Stop<'a> {
    done: &'a AtomicBool,
    t: &'a traffic::TrafficSkel<'static>,
    gen_if: u32,
}

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Err(e) = set_gen(self.t, self.gen_if, FLOWS, true) {
            eprintln!("torn: stopping the generators: {e:#}");
        }
    }
}

/// Frames xdp-ecmp handed to the kernel, per verdict (those with any).
fn passed(dp: &Dataplane) -> Result<Vec<(&'static str, u64)>> {
    Ok(dp
        .verdict_counters()?
        .iter()
        .filter(|(v, c)| v.action() == XDP_PASS && c.packets > 0)
        .map(|(v, c)| (v.name(), c.packets))
        .collect())
}

/// One run: set-up, warm-up, `seconds` of churn under traffic from both CPUs, figures.
/// Every object of the world fits its table: anything waiting for room (its
/// packets passed to the kernel) would make the run prove less than it says.
fn written_whole(rec: &Reconciler, when: &str) -> Result<()> {
    let waiting = rec.waiting();
    if !waiting.is_empty() {
        bail!("after {when}, objects wait for room in a full table: {waiting:?}");
    }
    Ok(())
}

pub fn torn(opts: &TornOptions) -> Result<TornResult> {
    let (net, n) = rate::veth_chain("torn", PORTS, 2)?;
    // Nothing but the run's frames: no IPv6 neighbour discovery on the ports.
    rate::sh(
        &net,
        "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
    )?;
    net.enter()?;
    let gen_if = ifindex_of(&n.gen)?;
    let in_if = ifindex_of(&n.inp)?;
    let mut outs = [0u32; PORTS];
    let mut sinks = [0u32; PORTS];
    for k in 0..PORTS {
        outs[k] = ifindex_of(&n.out[k])?;
        sinks[k] = ifindex_of(&n.sink[k])?;
    }

    // The checking sinks, told which frames are A's.
    let t = rate::load_traffic()?;
    for (k, sink) in sinks.iter().enumerate().take(A_PORTS) {
        for v in 0..2 {
            let mut key = Vec::with_capacity(12);
            key.extend_from_slice(&sink.to_ne_bytes());
            key.extend_from_slice(&a_mac(k, v));
            key.extend_from_slice(&[0, 0]);
            let mut val = port_mac(k).to_vec();
            val.extend_from_slice(&[0, 0]);
            t.maps.check_valid.update(&key, &val, MapFlags::ANY)?;
        }
    }
    let _sink_links = sinks
        .iter()
        .map(|&i| t.progs.xdp_check.attach_xdp(i as i32))
        .collect::<Result<Vec<_>, _>>()
        .context("attaching the checking sinks")?;

    // xdp-ecmp and its control plane, in this process: A first, then B
    // (first fit puts B's windows right after A's), then the chunk fillers.
    let mut dp = Dataplane::load(&LoadOptions::default()).context("loading xdp-ecmp")?;
    dp.set_config(&xe_config {
        seed: [opts.seed as u32, (opts.seed >> 32) as u32 | 1],
        ..Default::default()
    })?;
    let mut world = World::new(outs, &n.out, opts.seed);
    let mut rec = Reconciler::new(PlainGroupMode::Modulo);
    let start = Instant::now();
    let now_ms = |at: Instant| at.duration_since(start).as_millis() as u64;
    let mut tap = Tap::new(&mut dp, world.a_valid());
    for first in [true, false] {
        if !first {
            world.add_b();
        }
        rec.sync(
            &world.ks,
            &Dirty::All,
            &mut tap,
            now_ms(Instant::now()),
            &|_| None,
        );
        written_whole(&rec, "the first syncs")?;
    }
    let world_chunks = u32::from(CHUNK_NETS) + 1;
    hold_chunks(tap.dp, world_chunks + CHUNK_FLOAT)?;
    let _ecmp = tap
        .dp
        .attach(in_if, AttachMode::Native)
        .context("attaching xdp-ecmp")?;

    // Traffic from both CPUs, then churn.
    set_gen(&t, gen_if, FLOWS, false)?;
    let frame = crate::frame_to(ANYCAST);
    let done = AtomicBool::new(false);
    let t = &t;
    let mut result = std::thread::scope(|s| -> Result<TornResult> {
        // Whatever happens below (an error, a panic), the generators drop
        // what they have left and stop, so the scope can end.
        let stop = Stop {
            done: &done,
            t,
            gen_if,
        };
        let gens: Vec<_> = (0..2)
            .map(|cpu| {
                let (net, frame, done) = (&net, &frame, &done);
                s.spawn(move || -> Result<()> {
                    net.enter()?;
                    pin_thread_to_cpu(cpu)?;
                    while !done.load(Ordering::Relaxed) {
                        generate(t, frame, GEN_CALL)?;
                    }
                    Ok(())
                })
            })
            .collect();
        let run = (|| -> Result<TornResult> {
            std::thread::sleep(Duration::from_millis(300));
            if check_counts(t)?[0] == 0 {
                bail!("no frame reached the sinks in 300 ms of traffic");
            }
            let churn = Instant::now();
            let deadline = churn + Duration::from_secs_f64(opts.seconds);
            let mut changes = 0u64;
            let mut now = churn;
            while now < deadline {
                let c = CYCLE[changes as usize % CYCLE.len()];
                let dirty = world.apply(c);
                rec.sync(&world.ks, &dirty, &mut tap, now_ms(now), &|_| None);
                written_whole(&rec, &format!("the sync after change {changes} ({c:?})"))?;
                changes += 1;
                if changes.is_multiple_of(1024) && gens.iter().any(|g| g.is_finished()) {
                    bail!("a generator stopped before the end of the run");
                }
                now = Instant::now();
            }
            Ok(TornResult {
                seed: opts.seed,
                seconds: churn.elapsed().as_secs_f64(),
                changes,
                reuse: tap.reuse,
                ..Default::default()
            })
        })();
        drop(stop);
        for g in gens {
            g.join()
                .map_err(|_| anyhow::anyhow!("a generator thread panicked"))??;
        }
        run
    })?;
    // Frames still on their way land; then every figure covers the whole run.
    std::thread::sleep(Duration::from_millis(20));
    let [ok, wrong, _] = check_counts(t)?;
    result.generated = rate::generated(t)?;
    result.checked = ok + wrong;
    result.wrong = wrong;
    result.passed_by = passed(&dp)?;
    result.passed = result.passed_by.iter().map(|(_, n)| n).sum();
    result.examples = wrong_frames(t, &sinks)?
        .iter()
        .map(|w| {
            format!(
                "sink_{} ({}): dst {} ({}), src {}, sport {}, ttl {}, cpu {}",
                w.sink,
                if w.sink == PORTS {
                    "out_5, a port A never uses"
                } else {
                    "A's port"
                },
                mac_str(w.dmac),
                world.describe(w.dmac),
                mac_str(w.smac),
                w.sport,
                w.ttl,
                w.cpu
            )
        })
        .collect();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::testnet::require_root;

    /// About 8 s of churn at >= 1,000 changes/s under traffic from both CPUs:
    /// no frame may leave with a MAC A never had on its port, and none may be
    /// passed to the kernel.
    #[test]
    fn torn_state_never_reaches_the_wire() {
        if !require_root("torn_state_never_reaches_the_wire") {
            return;
        }
        let _turn = crate::LIVE_TRAFFIC
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let r = torn(&TornOptions {
            seconds: 8.0,
            seed: DEFAULT_SEED,
        })
        .expect("torn-state run");
        eprintln!("{}", r.line());
        let failures = r.failures();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
