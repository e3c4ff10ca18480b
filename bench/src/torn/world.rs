//! The torn-state run's world: route A and the routes B churned around it, as the kernel state the reconciler reads, and the cycle of changes.

use super::*;

/// Ports A forwards over (out_1..out_4); out_5 carries only B's next hops.
pub(super) const A_PORTS: usize = 4;
pub(super) const PORTS: usize = 5;
/// A's member weights (sum 7, so the program divides by the size; with the
/// heavy member out, 4 of 7 buckets of the old size are past the new window).
pub(super) const A_WEIGHTS: [u16; A_PORTS] = [1, 1, 1, 4];
/// A's nexthop-object group; its single next hops are 1..=4.
pub(super) const A_NHID: u32 = 100;
/// B's nexthop-object group (resized under one id); B's singles are 1000 + i.
pub(super) const B_NHID: u32 = 200;
pub(super) const B_SINGLE: u32 = 1000;
/// B gateways per port.
pub(super) const B_GWS: usize = 3;
/// B's multipath /24s (10.8.j.0/24; j = 0 always uses B_NHID).
pub(super) const B_ROUTES: u8 = 4;
/// /24s where B adds and deletes one prefix longer than /24 (10.9.k.0/24).
pub(super) const CHUNK_NETS: u8 = 8;
/// Chunks left free beyond what the world can hold at once.
pub(super) const CHUNK_FLOAT: u32 = 4;

/// A's gateway on port k (0-based).
pub(super) fn a_gw(k: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, k as u8 + 1, 2))
}

/// The two MACs A's neighbour on port k takes turns with.
pub(super) fn a_mac(k: usize, v: u8) -> [u8; 6] {
    [2, 0x0a, 0, 0, k as u8 + 1, v]
}

/// B's gateway j on port k.
pub(super) fn b_gw(k: usize, j: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, k as u8 + 1, 10 + j as u8))
}

/// B's neighbour MAC for gateway j on port k, generation g (never A's).
pub(super) fn b_mac(k: usize, j: usize, g: u16) -> [u8; 6] {
    let g = g.to_be_bytes();
    [2, 0x0b, k as u8 + 1, j as u8, g[0], g[1]]
}

/// The source MAC of frames leaving by port k (rate::veth_chain's out_k).
pub(super) fn port_mac(k: usize) -> [u8; 6] {
    mac(1, k as u8 + 1)
}

pub(super) fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Prefix {
    Prefix {
        addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        len,
    }
}

pub(super) fn a_prefix() -> Prefix {
    v4(172, 16, 255, 0, 24)
}

/// The /25 of A's /24 that B takes and gives back.
pub(super) fn split_prefix() -> Prefix {
    v4(172, 16, 255, 128, 25)
}

/// The changes, in the order they are applied (round robin). Each change of
/// A is followed by a change of B that allocates what A just released.
#[derive(Debug, Clone, Copy)]
pub(super) enum Change {
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
pub(super) const CYCLE: [Change; 20] = [
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
pub(super) struct World {
    pub(super) ks: KernelState,
    pub(super) rng: SmallRng,
    pub(super) outs: [u32; PORTS],
    /// Which of its two MACs each A neighbour has.
    pub(super) a_mac: [u8; A_PORTS],
    pub(super) a_in: [bool; A_PORTS],
    /// A's route is a multipath route (else it uses nexthop object A_NHID).
    pub(super) a_paths: bool,
    /// MAC generation of each B path (port * B_GWS + gateway).
    pub(super) b_gen: Vec<u16>,
}

impl World {
    pub(super) fn new(outs: [u32; PORTS], names: &[String], seed: u64) -> Self {
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
                    admin_up: true,
                    xdp_tx: true,
                    ..Default::default()
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

    pub(super) fn a_path(&self, k: usize) -> PathKey {
        PathKey {
            ifindex: self.outs[k],
            gateway: Some(a_gw(k)),
        }
    }

    pub(super) fn b_path(&self, i: usize) -> PathKey {
        PathKey {
            ifindex: self.outs[i / B_GWS],
            gateway: Some(b_gw(i / B_GWS, i % B_GWS)),
        }
    }

    pub(super) fn set_route(&mut self, p: Prefix, t: RouteTarget) {
        self.ks
            .routes
            .insert(p, control::aliases::Metrics::one(0, t));
    }

    pub(super) fn set_a_group(&mut self) {
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

    pub(super) fn a_target(&self) -> RouteTarget {
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
    pub(super) fn add_b(&mut self) {
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

    pub(super) fn resize_b_group(&mut self) {
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
    pub(super) fn b_paths_target(&mut self) -> RouteTarget {
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
    pub(super) fn b_target(&mut self) -> RouteTarget {
        if self.rng.random_bool(0.25) {
            RouteTarget::Nexthop(B_NHID)
        } else {
            self.b_paths_target()
        }
    }

    /// Index of every B path some route uses now.
    pub(super) fn b_paths_in_use(&self) -> Vec<usize> {
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

    pub(super) fn toggle(&mut self, p: Prefix) -> Dirty {
        if self.ks.routes.remove(&p).is_none() {
            let t = self.b_target();
            self.set_route(p, t);
        }
        Dirty::Prefixes(PrefixSet::from([p]))
    }

    /// Applies one change to the kernel state; returns what the reconciler must look at.
    pub(super) fn apply(&mut self, c: Change) -> Dirty {
        let none = || Dirty::Prefixes(PrefixSet::new());
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
                    Dirty::Prefixes(PrefixSet::from([a_prefix()]))
                } else {
                    Dirty::All
                }
            }
            Change::AForm => {
                self.a_paths = !self.a_paths;
                let t = self.a_target();
                self.set_route(a_prefix(), t);
                Dirty::Prefixes(PrefixSet::from([a_prefix()]))
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
                Dirty::Prefixes(PrefixSet::from([p]))
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
                    return Dirty::Prefixes(PrefixSet::from([*p]));
                }
                let len = self.rng.random_range(25..=32u8);
                // The prefix's bits of the last octet, random.
                let host = self.rng.random::<u8>() & (0xff00u16 >> (len - 24)) as u8;
                let p = v4(10, 9, net, host, len);
                let t = self.b_target();
                self.set_route(p, t);
                Dirty::Prefixes(PrefixSet::from([p]))
            }
        }
    }

    /// The frames A may send: (egress ifindex, destination MAC).
    pub(super) fn a_valid(&self) -> HashSet<(u32, [u8; 6])> {
        (0..A_PORTS)
            .flat_map(|k| (0..2).map(move |v| (k, v)))
            .map(|(k, v)| (self.outs[k], a_mac(k, v)))
            .collect()
    }

    /// What a destination MAC seen at a sink is.
    pub(super) fn describe(&self, m: [u8; 6]) -> String {
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
