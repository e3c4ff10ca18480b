//! The AF_XDP engine on veth: frames really sent through the program, steered to the engine's sockets, decided, rewritten and sent out of the egress port, byte for byte what the Rust decision says; kernel-bound frames never reach it; bad set-ups fail naming the port.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::packets::*;
use common::{mac, IN_MAC};
use dataplane::abi::{
    xe_config, xe_inport, xe_nexthop, xe_route, Verdict, GROUP_RESILIENT, INPORT_FWD_V4,
    INPORT_FWD_V6, NH_USABLE, RT_UNICAST, XDP_REDIRECT,
};
use dataplane::afxdp::{Engine, EngineConfig};
use dataplane::tables::multipath;
use dataplane::{ifindex_of, AttachMode, Dataplane, LoadOptions, TableReader, TableWriter, Tables};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use testnet::{packet_socket, recv_frame, require_root, send_frame, TestNet};

const PORTS: [&str; 3] = ["xe-p0", "xe-p1", "xe-p2"];

/// Port xe-p0 admitted (MAC IN_MAC), 172.16.255.66/32 and 2001:db8:66::/64
/// over two next hops, one out of xe-p1 and one out of xe-p2.
fn world(t: &mut dyn TableWriter, p: [u32; 3]) {
    t.set_inport(
        p[0],
        &xe_inport {
            mac: IN_MAC,
            flags: INPORT_FWD_V4 | INPORT_FWD_V6,
            ..Default::default()
        },
    )
    .expect("inport");
    let nh = |port: u32, last: u8| xe_nexthop {
        ifindex: port,
        mtu: 1500,
        dmac: mac(last),
        smac: mac(last + 0x10),
        state: NH_USABLE,
        ..Default::default()
    };
    multipath(
        t,
        "172.16.255.66".parse().expect("addr"),
        &[nh(p[1], 0x31), nh(p[2], 0x32)],
        GROUP_RESILIENT,
        64,
    )
    .expect("routes");
    t.set_route_v6(
        "2001:db8:66::".parse().expect("addr"),
        64,
        &xe_route {
            group: 1,
            kind: RT_UNICAST,
            ..Default::default()
        },
    )
    .expect("IPv6 route");
    t.set_config(&xe_config {
        seed: [7, 11],
        ..Default::default()
    })
    .expect("config");
}

/// A random UDP or TCP flow to the routed prefixes, IPv4 or IPv6, to the
/// port's MAC; every tenth with TTL 1 (the kernel's to answer).
fn frame(rng: &mut SmallRng) -> Vec<u8> {
    let ttl = if rng.random_ratio(1, 10) { 1 } else { 64 };
    let sport = rng.random_range(1024..65535);
    let tcp_ = rng.random_bool(0.5);
    let l4 = if tcp_ {
        tcp(sport, 80, 5)
    } else {
        udp(sport, 53, &[0x5a; 40])
    };
    let proto = if tcp_ { 6 } else { 17 };
    if rng.random_bool(0.5) {
        let mut ip = Ip4::new(
            &format!(
                "10.2.{}.{}",
                rng.random_range(0..255),
                rng.random_range(1..255)
            ),
            "172.16.255.66",
            proto,
        );
        ip.ttl = ttl;
        eth(IN_MAC, &[], ETH_IP, &ip.packet(&l4))
    } else {
        let mut src = v6("2001:db8:2::1");
        src[14] = rng.random();
        src[15] = rng.random();
        let mut dst = v6("2001:db8:66::1");
        dst[15] = rng.random();
        eth(
            IN_MAC,
            &[],
            ETH_IPV6,
            &ip6(src, dst, ttl, proto, rng.random_range(0..0xfffff), &l4),
        )
    }
}

/// A namespace with the three ports, the steering program attached to
/// xe-p0 over `world`, and the engine serving all three ports with the same
/// tables. `kernel` runs (as `ip` arguments) before the program is loaded.
struct Served {
    engine: Engine,
    tables: dataplane::afxdp::SnapshotWriter,
    _link: dataplane::XdpLink,
    dp: Dataplane,
    p: [u32; 3],
    _net: TestNet,
}

fn served(tag: &str, kernel: &[&[&str]]) -> Served {
    let net = TestNet::new(
        tag,
        &[("xe-p0", "xe-r0"), ("xe-p1", "xe-r1"), ("xe-p2", "xe-r2")],
    )
    .expect("namespace");
    net.enter().expect("enter");
    net.ip(&["link", "set", "xe-p0", "address", "02:00:00:00:aa:01"])
        .expect("MAC");
    for args in kernel {
        net.ip(args).expect("kernel set-up");
    }
    let p = PORTS.map(|n| ifindex_of(n).expect("port"));
    let mut dp = Dataplane::load(&LoadOptions {
        steer_xsk: true,
        ..Default::default()
    })
    .expect("load");
    world(&mut dp, p);
    let link = dp.attach(p[0], AttachMode::Native).expect("attach");
    let names: Vec<String> = PORTS.iter().map(|s| s.to_string()).collect();
    let (engine, mut tables) =
        Engine::start(&dp, &names, &EngineConfig::default(), Tables::default()).expect("engine");
    world(&mut tables, p);
    tables.publish();
    Served {
        engine,
        tables,
        _link: link,
        dp,
        p,
        _net: net,
    }
}

#[test]
fn afxdp_engine_forwards_what_the_decision_says() {
    if !require_root("afxdp_engine_forwards_what_the_decision_says") {
        return;
    }
    // Bound whole: the link and the namespace live to the end of the test.
    let Served {
        engine,
        tables,
        dp,
        p,
        _link,
        _net,
    } = served("afxdp", &[]);
    let tx = packet_socket(ifindex_of("xe-r0").expect("if")).expect("tx socket");
    let rx =
        [1, 2].map(|i| packet_socket(ifindex_of(&format!("xe-r{i}")).expect("if")).expect("rx"));
    let seed: u64 = std::env::var("XE_AFXDP_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    let mut rng = SmallRng::seed_from_u64(seed);
    const FRAMES: usize = 12_000;
    // What the decision over the engine's tables says each frame becomes,
    // by egress port: the multiset the peers must receive.
    let mut want: HashMap<(u32, Vec<u8>), usize> = HashMap::new();
    let (mut forwards, mut kernel_bound) = (0usize, 0usize);
    let mut got = 0usize;
    let mut buckets = std::collections::BTreeSet::new();
    let mut stray = Vec::new();
    let mut buf = [0u8; 2048];
    let dmacs = [mac(0x31), mac(0x32)];
    let drain = |rx: &[std::os::fd::OwnedFd; 2],
                 want: &mut HashMap<(u32, Vec<u8>), usize>,
                 got: &mut usize,
                 stray: &mut Vec<String>,
                 buf: &mut [u8; 2048],
                 quiet: Duration| {
        for (i, s) in rx.iter().enumerate() {
            let mut last = Instant::now();
            while last.elapsed() < quiet {
                let Some(n) = recv_frame(s, buf) else {
                    continue;
                };
                if buf[..6] != dmacs[i] {
                    continue; // the kernel's own frames (neighbour discovery)
                }
                last = Instant::now();
                let key = (p[i + 1], buf[..n].to_vec());
                match want.get_mut(&key) {
                    Some(c) if *c > 0 => {
                        *c -= 1;
                        *got += 1;
                    }
                    _ => stray.push(format!("xe-r{}: {}", i + 1, common::hex(&buf[..n]))),
                }
            }
        }
    };
    for chunk in 0..FRAMES / 200 {
        for _ in 0..200 {
            let f = frame(&mut rng);
            let mut out = vec![0u8; f.len() + 4];
            let (d, n) = tables.tables().decide_from(Some(p[0]), &f, &mut out);
            if d.verdict == Verdict::Forward as u32 && d.action == XDP_REDIRECT {
                *want.entry((d.ifindex, out[..n].to_vec())).or_default() += 1;
                forwards += 1;
                buckets.insert(d.bucket); // group 1's window starts at slot 0
            } else {
                kernel_bound += 1;
            }
            send_frame(&tx, &f).expect("send");
        }
        let quiet = if chunk + 1 == FRAMES / 200 { 300 } else { 20 };
        drain(
            &rx,
            &mut want,
            &mut got,
            &mut stray,
            &mut buf,
            Duration::from_millis(quiet),
        );
    }
    let c = engine.counters();
    let counted = |v: Verdict| {
        c.verdicts
            .iter()
            .find(|(x, _)| *x == v)
            .map_or(0, |(_, c)| c.packets)
    };
    let program_fwd = dp
        .verdict_counters()
        .expect("counters")
        .into_iter()
        .find(|(v, _)| *v == Verdict::Forward)
        .map_or(0, |(_, c)| c.packets);
    println!(
        "afxdp: seed {seed} (XE_AFXDP_SEED), {FRAMES} frames into xe-p0: {forwards} to forward, {kernel_bound} for the kernel; {got} arrived rewritten where the decision says, {} stray; engine counted {} forwarded ({:?} per next hop), {} with no sending frame, {} unserved",
        stray.len(),
        counted(Verdict::Forward),
        c.nexthops.iter().map(|(id, c)| (*id, c.packets)).collect::<Vec<_>>(),
        c.tx_full,
        c.unserved
    );
    assert!(
        stray.is_empty(),
        "frames no decision asked for: {:?}",
        &stray[..stray.len().min(3)]
    );
    assert!(forwards >= 10_000, "a sample of at least 10,000 forwards");
    assert_eq!(
        got, forwards,
        "every forward arrived, byte for byte, at its egress"
    );
    assert_eq!(counted(Verdict::Forward), forwards as u64);
    assert_eq!(c.nexthops.len(), 2, "both next hops carried flows");
    assert_eq!(
        c.nexthops.iter().map(|(_, c)| c.packets).sum::<u64>(),
        forwards as u64
    );
    assert_eq!(
        program_fwd, 0,
        "the program leaves forwarded frames to the engine's counters"
    );
    assert_eq!((c.tx_full, c.unserved), (0, 0));
    println!("afxdp: socket modes {:?} (true: zero-copy)", engine.modes());
    assert!(
        engine.modes().iter().all(|(_, zc)| !zc),
        "veth has no zero-copy: every socket fell back to copy mode"
    );
    // The idle timers read the buckets' stamps: the program stamps a bucket
    // before it steers the frame, as before it forwards one itself.
    let unstamped: Vec<u32> = buckets
        .iter()
        .copied()
        .filter(|b| dp.slot_used(*b).expect("stamp") == 0)
        .collect();
    println!(
        "afxdp: {} buckets used, {} unstamped",
        buckets.len(),
        unstamped.len()
    );
    assert!(
        unstamped.is_empty(),
        "buckets the engine used without a stamp: {unstamped:?}"
    );
    engine.stop(&dp).expect("stop");
}

#[test]
fn afxdp_engine_refuses_a_set_up_it_cannot_serve() {
    if !require_root("afxdp_engine_refuses_a_set_up_it_cannot_serve") {
        return;
    }
    let net =
        TestNet::new("afxdp-bad", &[("xe-p0", "xe-r0"), ("xe-p1", "xe-r1")]).expect("namespace");
    net.enter().expect("enter");
    let dp = Dataplane::load(&LoadOptions {
        steer_xsk: true,
        ..Default::default()
    })
    .expect("load");
    let names = vec!["xe-p0".to_string(), "xe-p1".to_string()];
    let err = |cfg: &EngineConfig, ports: &[String]| match Engine::start(
        &dp,
        ports,
        cfg,
        Tables::default(),
    ) {
        Ok(_) => panic!("{ports:?} with {cfg:?} started"),
        Err(e) => e.to_string(),
    };
    // Two workers, ports of one queue each.
    let two = EngineConfig {
        workers: 2,
        ..Default::default()
    };
    let e = err(&two, &names);
    println!("two workers on one-queue ports: {e}");
    assert!(
        e.contains("xe-p0") && e.contains("1 receive queue") && e.contains("ethtool -L"),
        "{e}"
    );
    let e = err(&EngineConfig::default(), &["xe-nosuch".to_string()]);
    println!("unknown port: {e}");
    assert!(e.contains("xe-nosuch"), "{e}");
    // A second engine on queues the first holds.
    let (first, _w) =
        Engine::start(&dp, &names, &EngineConfig::default(), Tables::default()).expect("engine");
    let e = err(&EngineConfig::default(), &names);
    println!("a second engine on the same queues: {e}");
    assert!(e.contains("xe-p0") && e.contains("queue 0"), "{e}");
    first.stop(&dp).expect("stop");
}

/// What a worker that dies leaves: its sockets close, and the program's
/// redirect to them falls back to the kernel, which forwards the frames by
/// its own routes. Dropping the engine without `stop` closes every socket
/// while the ports stay marked as served.
#[test]
fn frames_of_a_dead_engine_go_to_the_kernel() {
    if !require_root("frames_of_a_dead_engine_go_to_the_kernel") {
        return;
    }
    let kernel_mac = mac(0x41);
    let Served {
        engine,
        dp: _dp,
        _link,
        _net,
        ..
    } = served(
        "afxdp-dead",
        &[
            &["addr", "add", "10.0.0.1/24", "dev", "xe-p0"],
            &["addr", "add", "10.0.1.1/24", "dev", "xe-p1"],
            &[
                "neigh",
                "replace",
                "10.0.1.2",
                "lladdr",
                "02:00:00:00:00:41",
                "dev",
                "xe-p1",
                "nud",
                "permanent",
            ],
            &["route", "add", "172.16.255.66/32", "via", "10.0.1.2"],
        ],
    );
    let tx = packet_socket(ifindex_of("xe-r0").expect("if")).expect("tx");
    let rx =
        [1, 2].map(|i| packet_socket(ifindex_of(&format!("xe-r{i}")).expect("if")).expect("rx"));
    let frame = |sport: u16| {
        eth(
            IN_MAC,
            &[],
            ETH_IP,
            &Ip4::new("10.0.0.9", "172.16.255.66", 17).packet(&udp(sport, 53, b"dead")),
        )
    };
    // (by the engine: next-hop MACs; by the kernel: its neighbour's MAC)
    let count = |from: u16| -> (usize, usize) {
        for sport in from..from + 100 {
            send_frame(&tx, &frame(sport)).expect("send");
        }
        let (mut engine, mut kernel) = (0, 0);
        let mut buf = [0u8; 2048];
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            for s in &rx {
                while let Some(n) = recv_frame(s, &mut buf) {
                    if n < 38 || buf[12..14] != [0x08, 0x00] || buf[23] != 17 {
                        continue;
                    }
                    if buf[..6] == kernel_mac {
                        kernel += 1;
                    } else if buf[..6] == mac(0x31) || buf[..6] == mac(0x32) {
                        engine += 1;
                    }
                }
            }
        }
        (engine, kernel)
    };
    let alive = count(2000);
    drop(engine);
    let dead = count(3000);
    println!("100 frames with the engine running: {alive:?} (engine, kernel); after its sockets closed: {dead:?}");
    assert_eq!(alive, (100, 0), "the engine forwards while it runs");
    assert_eq!(dead, (0, 100), "then the kernel forwards every frame");
}

/// The engine pins flows as the program does: a flow to a pinned route keeps
/// its egress when every bucket moves, and moves when its path leaves the
/// group. Next hops 1 and 2 (xe-p1, xe-p2) carry paths 101 and 102.
#[test]
fn afxdp_engine_keeps_pinned_flows_on_their_path() {
    if !require_root("afxdp_engine_keeps_pinned_flows_on_their_path") {
        return;
    }
    let Served {
        engine,
        mut tables,
        mut dp,
        p,
        _link,
        _net,
    } = served("afxdp-pin", &[]);
    let pin = |t: &mut dyn TableWriter| {
        for (id, port, last) in [(1u32, p[1], 0x31u8), (2, p[2], 0x32)] {
            let nh = xe_nexthop {
                ifindex: port,
                mtu: 1500,
                dmac: mac(last),
                smac: mac(last + 0x10),
                state: NH_USABLE | dataplane::abi::NH_TXPORT,
                path: 100 + id,
                ..Default::default()
            };
            t.set_nexthop(id, &nh)?;
            t.set_pin_member(1, 100 + id, Some(id))?;
        }
        t.set_group_gen(1, 1)?;
        t.set_route_v4(
            "172.16.255.66".parse().expect("addr"),
            32,
            &xe_route {
                group: 1,
                kind: RT_UNICAST,
                flags: dataplane::abi::ROUTE_PIN,
                ..Default::default()
            },
        )
    };
    let both = |dp: &mut Dataplane,
                tables: &mut dataplane::afxdp::SnapshotWriter,
                f: &dyn Fn(&mut dyn TableWriter) -> dataplane::Result<()>| {
        f(dp).expect("maps");
        f(tables).expect("engine tables");
        tables.publish();
    };
    both(&mut dp, &mut tables, &pin);
    let tx = packet_socket(ifindex_of("xe-r0").expect("if")).expect("tx");
    let rx =
        [1, 2].map(|i| packet_socket(ifindex_of(&format!("xe-r{i}")).expect("if")).expect("rx"));
    // Each flow (source port) to the egress it arrived at.
    let send = |n: u16| -> HashMap<u16, usize> {
        for sport in 3000..3000 + n {
            let f = eth(
                IN_MAC,
                &[],
                ETH_IP,
                &Ip4::new("10.2.0.9", "172.16.255.66", 17).packet(&udp(sport, 53, b"pin")),
            );
            send_frame(&tx, &f).expect("send");
        }
        let mut got = HashMap::new();
        let mut buf = [0u8; 2048];
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until && got.len() < usize::from(n) {
            for (i, s) in rx.iter().enumerate() {
                while let Some(len) = recv_frame(s, &mut buf) {
                    if len > 42 && buf[12..14] == [0x08, 0x00] && buf[23] == 17 {
                        got.insert(u16::from_be_bytes([buf[34], buf[35]]), i + 1);
                    }
                }
            }
        }
        assert_eq!(got.len(), usize::from(n), "every flow arrived");
        got
    };
    let first = send(100);
    assert!(first.values().any(|e| *e == 1) && first.values().any(|e| *e == 2));
    // Every bucket to next hop 1: the flows on xe-p2 stay there.
    both(&mut dp, &mut tables, &|t| t.set_slots(0, &[1; 64]));
    assert_eq!(send(100), first, "a pinned flow moved with the buckets");
    // Next hop 2's path leaves the group: its flows follow the buckets.
    both(&mut dp, &mut tables, &|t| {
        t.set_group_gen(1, 0)?;
        t.set_pin_member(1, 102, None)?;
        t.set_group_gen(1, 2)
    });
    let after = send(100);
    assert!(after.values().all(|e| *e == 1), "{after:?}");
    engine.stop(&dp).expect("stop");
}
