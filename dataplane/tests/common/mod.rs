//! Shared test world: one description of routes, groups and next hops written to both the program's maps and the model, plus packet builders.
#![allow(dead_code)]

pub mod fixtures;
pub mod packets;
pub mod random;

use std::net::{Ipv4Addr, Ipv6Addr};

use dataplane::abi::{
    xe_config, xe_decision, xe_flow, xe_group, xe_nexthop, xe_route, Verdict, GROUP_MODULO,
    GROUP_RESILIENT, NH_LINK_UP, NH_RESOLVED, NH_TXPORT, NH_USABLE, NH_VALID, RT_BLACKHOLE,
    RT_LOCAL, RT_PROHIBIT, RT_UNICAST, RT_UNREACHABLE,
};
use dataplane::{current_cpu, ifindex_of, pin_thread_to_cpu};
use dataplane::{Dataplane, LoadOptions, TableReader, TableWriter, Tables};
use testnet::TestNet;

/// Egress ports (veth ends inside the test namespace).
pub const PORTS: [&str; 3] = ["xe-p0", "xe-p1", "xe-p2"];
/// A port that exists but is not in the tx port map.
pub const UNLISTED_PORT: &str = "xe-q0";

pub const SEED: [u32; 2] = [0x0123_4567, 0x89ab_cdef];
pub const RES_BUCKETS: u16 = 64;

/// Next hop ids.
pub const NH_P0: u32 = 1;
pub const NH_P1: u32 = 2;
pub const NH_VLAN: u32 = 3;
pub const NH_UNRESOLVED: u32 = 4;
pub const NH_DOWN: u32 = 5;
pub const NH_MTU1280: u32 = 6;
pub const NH_UNLISTED: u32 = 7;
pub const NH_P2: u32 = 8;

/// Group ids.
pub const G_ANYCAST: u32 = 1; // resilient, 64 buckets over NH_P0/NH_P1
pub const G_MODULO: u32 = 2; // modulo over NH_P0, NH_P1, NH_P2
pub const G_UNRESOLVED: u32 = 3;
pub const G_DOWN: u32 = 4;
pub const G_MTU: u32 = 5;
pub const G_UNLISTED: u32 = 6;
pub const G_VLAN: u32 = 7;
pub const G_EMPTY: u32 = 8;
pub const G_SINGLE: u32 = 9;
pub const G_UNUSED: u32 = 10;

pub fn mac(last: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, last]
}

/// The port MAC of the host under test, and the neighbour MACs.
pub const IN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xaa, 0x01];

pub struct World {
    pub dp: Dataplane,
    pub model: Tables,
    pub ifindex: [u32; 3],
    pub unlisted_ifindex: u32,
    pub nexthops: Vec<(u32, xe_nexthop)>,
    pub groups: Vec<(u32, xe_group, Vec<u32>)>,
    pub cpu: usize,
    _net: TestNet,
}

fn nh(ifindex: u32, last: u8, mtu: u16, vlan: u16, state: u8) -> xe_nexthop {
    xe_nexthop {
        ifindex,
        mtu,
        vlan,
        dmac: mac(last),
        smac: [0x02, 0, 0, 0, 0xee, last],
        state,
        ..Default::default()
    }
}

fn unicast(group: u32) -> xe_route {
    xe_route {
        group,
        kind: RT_UNICAST,
        ..Default::default()
    }
}

fn kind(kind: u8) -> xe_route {
    xe_route {
        kind,
        ..Default::default()
    }
}

impl World {
    /// Builds the namespace, loads the program with decision tracing, and
    /// writes the same tables to the maps and the model. Pins this thread to
    /// a CPU so the per-CPU trace entry is the one the test run wrote. The
    /// program admits every frame (`admit_any`): the fixtures test what
    /// comes after admission, and the world has no ingress ports.
    pub fn new(tag: &str) -> World {
        World::load(tag, true)
    }

    /// The same world in a program that checks admission, as an attached
    /// one does; no ingress port is admitted yet.
    pub fn admitting(tag: &str) -> World {
        World::load(tag, false)
    }

    /// The `new` world with a flow table of `flows` entries.
    pub fn with_flows(tag: &str, flows: u32) -> World {
        World::load_with(tag, true, Some(flows))
    }

    fn load(tag: &str, admit_any: bool) -> World {
        World::load_with(tag, admit_any, None)
    }

    fn load_with(tag: &str, admit_any: bool, flows: Option<u32>) -> World {
        let net = TestNet::new(
            tag,
            &[
                ("xe-p0", "xe-r0"),
                ("xe-p1", "xe-r1"),
                ("xe-p2", "xe-r2"),
                ("xe-q0", "xe-s0"),
            ],
        )
        .expect("creating the test namespace (needs root and iproute2)");
        net.enter().expect("entering the test namespace");
        let cpu = current_cpu();
        pin_thread_to_cpu(cpu).expect("pinning the test thread");
        let ifindex = PORTS.map(|p| ifindex_of(p).expect("port"));
        let unlisted_ifindex = ifindex_of(UNLISTED_PORT).expect("port");
        let dp = Dataplane::load(&LoadOptions {
            trace_decisions: true,
            admit_any,
            flows,
            ..Default::default()
        })
        .expect("loading the XDP program");
        let mut w = World {
            dp,
            model: Tables::default(),
            ifindex,
            unlisted_ifindex,
            nexthops: Vec::new(),
            groups: Vec::new(),
            cpu,
            _net: net,
        };
        w.populate();
        w
    }

    /// Applies the same write to the maps and to the model.
    pub fn both(&mut self, f: impl Fn(&mut dyn TableWriter) -> dataplane::Result<()>) {
        f(&mut self.dp).expect("writing the maps");
        f(&mut self.model).expect("writing the model");
    }

    pub fn set_config(&mut self, cfg: xe_config) {
        self.both(|t| t.set_config(&cfg));
    }

    fn populate(&mut self) {
        let [p0, p1, p2] = self.ifindex;
        let u = self.unlisted_ifindex;
        // Next hops on the ports added to the tx port map below say so.
        let (usable, tx) = (NH_USABLE | NH_TXPORT, NH_TXPORT);
        self.nexthops = vec![
            (NH_P0, nh(p0, 0x10, 1500, 0, usable)),
            (NH_P1, nh(p1, 0x11, 1500, 0, usable)),
            (NH_VLAN, nh(p2, 0x12, 1500, 100, usable)),
            (
                NH_UNRESOLVED,
                nh(p0, 0x13, 1500, 0, NH_VALID | NH_LINK_UP | tx),
            ),
            (NH_DOWN, nh(p1, 0x14, 1500, 0, NH_VALID | NH_RESOLVED | tx)),
            (NH_MTU1280, nh(p2, 0x15, 1280, 0, usable)),
            (NH_UNLISTED, nh(u, 0x16, 1500, 0, NH_USABLE)),
            (NH_P2, nh(p2, 0x17, 1500, 0, usable)),
        ];
        let anycast: Vec<u32> = (0..RES_BUCKETS)
            .map(|i| if i % 2 == 0 { NH_P0 } else { NH_P1 })
            .collect();
        let g = |base, size, mode| xe_group {
            base,
            size,
            mode,
            ..Default::default()
        };
        self.groups = vec![
            (G_ANYCAST, g(0, RES_BUCKETS, GROUP_RESILIENT), anycast),
            (G_MODULO, g(64, 3, GROUP_MODULO), vec![NH_P0, NH_P1, NH_P2]),
            (G_UNRESOLVED, g(67, 1, GROUP_RESILIENT), vec![NH_UNRESOLVED]),
            (G_DOWN, g(68, 1, GROUP_RESILIENT), vec![NH_DOWN]),
            (G_MTU, g(69, 1, GROUP_MODULO), vec![NH_MTU1280]),
            (G_UNLISTED, g(70, 1, GROUP_MODULO), vec![NH_UNLISTED]),
            (G_VLAN, g(71, 1, GROUP_RESILIENT), vec![NH_VLAN]),
            (G_EMPTY, g(72, 0, GROUP_RESILIENT), vec![]),
            (G_SINGLE, g(73, 1, GROUP_RESILIENT), vec![NH_P0]),
            (G_UNUSED, g(74, 1, 0), vec![NH_P0]),
        ];
        let nexthops = self.nexthops.clone();
        let groups = self.groups.clone();
        self.both(|t| {
            for p in [p0, p1, p2] {
                t.add_txport(p)?;
            }
            for (id, n) in &nexthops {
                t.set_nexthop(*id, n)?;
            }
            for (id, g, slots) in &groups {
                t.set_slots(g.base, slots)?;
                t.set_group(*id, g)?;
            }
            let v4 = |s: &str| s.parse::<Ipv4Addr>().expect("v4");
            let v6 = |s: &str| s.parse::<Ipv6Addr>().expect("v6");
            t.set_route_v4(v4("172.16.255.66"), 32, &unicast(G_ANYCAST))?;
            t.set_route_v4(v4("10.10.0.0"), 16, &unicast(G_MODULO))?;
            t.set_route_v4(v4("10.20.0.0"), 16, &unicast(G_UNRESOLVED))?;
            t.set_route_v4(v4("10.21.0.0"), 16, &unicast(G_DOWN))?;
            t.set_route_v4(v4("10.22.0.0"), 16, &unicast(G_MTU))?;
            t.set_route_v4(v4("10.23.0.0"), 16, &unicast(G_UNLISTED))?;
            t.set_route_v4(v4("10.24.0.0"), 16, &unicast(G_VLAN))?;
            t.set_route_v4(v4("10.24.5.0"), 24, &unicast(G_SINGLE))?;
            t.set_route_v4(v4("10.25.0.0"), 16, &unicast(G_EMPTY))?;
            t.set_route_v4(v4("10.26.0.0"), 16, &unicast(G_UNUSED))?;
            t.set_route_v4(v4("10.27.0.0"), 16, &unicast(60_000))?;
            t.set_route_v4(v4("192.0.2.1"), 32, &kind(RT_LOCAL))?;
            t.set_route_v4(v4("198.51.100.0"), 24, &kind(RT_BLACKHOLE))?;
            t.set_route_v4(v4("203.0.113.0"), 25, &kind(RT_UNREACHABLE))?;
            t.set_route_v4(v4("203.0.113.128"), 25, &kind(RT_PROHIBIT))?;
            t.set_route_v6(v6("2001:db8:66::"), 64, &unicast(G_ANYCAST))?;
            t.set_route_v6(v6("2001:db8:10::"), 48, &unicast(G_MODULO))?;
            t.set_route_v6(v6("2001:db8:20::"), 48, &unicast(G_UNRESOLVED))?;
            t.set_route_v6(v6("2001:db8:22::"), 48, &unicast(G_MTU))?;
            t.set_route_v6(v6("2001:db8:24::"), 48, &unicast(G_VLAN))?;
            t.set_route_v6(v6("2001:db8:ff::1"), 128, &kind(RT_LOCAL))?;
            t.set_route_v6(v6("2001:db8:bad::"), 48, &kind(RT_BLACKHOLE))?;
            t.set_route_v6(v6("2001:db8:dead::"), 48, &kind(RT_UNREACHABLE))?;
            t.set_config(&xe_config {
                seed: SEED,
                ..Default::default()
            })
        });
    }

    pub fn nexthop(&self, id: u32) -> xe_nexthop {
        self.nexthops
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, n)| *n)
            .expect("next hop")
    }

    /// The next hop a flow takes in a group, computed from the hash port.
    pub fn expected_nexthop(&self, group: u32, flow: &xe_flow, l3_only: bool) -> u32 {
        let (_, g, slots) = self
            .groups
            .iter()
            .find(|(i, _, _)| *i == group)
            .expect("group");
        let fields = if l3_only {
            dataplane::abi::HASH_POLICY_L4 & !dataplane::abi::HASH_PORTS
        } else {
            0
        };
        let h = dataplane::forward::hash::flow_hash(flow, SEED, fields, 0);
        slots[(h % u32::from(g.size)) as usize]
    }

    /// Runs the program on `pkt`: (action, output bytes, decision).
    pub fn run(&self, pkt: &[u8]) -> (u32, Vec<u8>, xe_decision) {
        self.run_from(0, pkt)
    }

    /// Runs the program on `pkt` as received on `ingress` (0: none, which
    /// the kernel takes as the namespace's loopback, ifindex 1).
    pub fn run_from(&self, ingress: u32, pkt: &[u8]) -> (u32, Vec<u8>, xe_decision) {
        let mut out = vec![0u8; pkt.len() + 64];
        let r = self
            .dp
            .test_run_from(ingress, pkt, &mut out, 1)
            .unwrap_or_else(|e| panic!("test run of {} bytes {}: {e}", pkt.len(), hex(pkt)));
        out.truncate(r.len);
        let d = self.dp.last_decision(self.cpu).expect("trace");
        assert_eq!(
            d.action, r.action,
            "trace and test run disagree on the action"
        );
        (r.action, out, d)
    }

    /// Runs the model on `pkt`.
    pub fn model(&self, pkt: &[u8]) -> (xe_decision, Vec<u8>) {
        self.model_from(None, pkt)
    }

    /// Runs the model on `pkt` received on `ingress` (None: every frame admitted).
    pub fn model_from(&self, ingress: Option<u32>, pkt: &[u8]) -> (xe_decision, Vec<u8>) {
        let mut out = vec![0u8; pkt.len() + 4];
        let (d, n) = self.model.decide_from(ingress, pkt, &mut out);
        out.truncate(n);
        (d, out)
    }
}

pub fn verdict_of(d: &xe_decision) -> Verdict {
    Verdict::from_u32(d.verdict).unwrap_or_else(|| panic!("unknown verdict {}", d.verdict))
}

pub fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join("")
}

/// A decision as a comparable tuple: (verdict, action, hash, group, bucket, next hop, ifindex).
pub fn fields(d: &xe_decision) -> (u32, u32, u32, u32, u32, u32, u32) {
    (
        d.verdict, d.action, d.hash, d.group, d.bucket, d.nexthop, d.ifindex,
    )
}
