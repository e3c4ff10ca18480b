//! Tests of the oracle's kernel side: its answers against `ip route get` itself and the routes each test writes, in namespaces of their own.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::kernel::{Answer, Hop, Kernel, Kind, Mtu, NexthopObject, Query};
use control::nexthop_msg::{
    request, route_socket, NexthopAttribute, NexthopGroupEntry, NexthopHeader, NexthopMessage,
    RtMessage,
};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use testnet::{require_root, TestNet};

use crate::{gw4, gw6, if_name, ifindex, ip, kernel, oracle_net, support, sysctl};

/// A UDP flow to `dst` from `src`, arriving on `xe-in`.
fn udp(src: &str, dst: &str, sport: u16) -> Query {
    Query {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        iif: ifindex("xe-in"),
        proto: 17,
        sport,
        dport: 53,
        tos: 0,
    }
}

/// `ip -j route get [fibmatch] DST from SRC iif xe-in ipproto P sport S dport
/// D [tos T]` run as a process: its JSON answer, or what it printed on
/// failure.
fn ip_route_get(net: &TestNet, q: &Query, fib_match: bool) -> Result<serde_json::Value, String> {
    let mut args = vec!["-n".to_string(), net.name().into(), "-j".into()];
    args.extend(["route".into(), "get".into()]);
    if fib_match {
        args.push("fibmatch".into());
    }
    args.extend([q.dst.to_string(), "from".into(), q.src.to_string()]);
    args.extend(["iif".into(), if_name(q.iif)]);
    args.extend(["ipproto".into(), q.proto.to_string()]);
    args.extend(["sport".into(), q.sport.to_string()]);
    args.extend(["dport".into(), q.dport.to_string()]);
    if q.tos != 0 {
        args.extend(["tos".into(), format!("0x{:x}", q.tos)]);
    }
    let out = Command::new("ip").args(&args).output().expect("running ip");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j prints JSON");
    Ok(v[0].clone())
}

/// (ifindex, gateway) of one `ip -j` route or nexthop object.
fn ip_hop(v: &serde_json::Value) -> (u32, Option<IpAddr>) {
    let dev = v["dev"].as_str().unwrap_or_else(|| panic!("no dev in {v}"));
    let gw = v["gateway"].as_str().map(|g| g.parse().unwrap());
    (ifindex(dev), gw)
}

/// `ip route get` prints a refused request as `RTNETLINK answers: <strerror>`.
fn rtnetlink_answers(errno: i32) -> String {
    // SAFETY: strerror returns a valid C string.
    let text = unsafe { std::ffi::CStr::from_ptr(libc::strerror(errno)) };
    format!("RTNETLINK answers: {}", text.to_string_lossy())
}

fn hop(i: usize, gateway: IpAddr, weight: u32) -> Hop {
    Hop {
        ifindex: ifindex(&format!("xe-o{i}")),
        gateway: Some(gateway),
        weight,
        dead: false,
        linkdown: false,
        onlink: false,
    }
}

fn sorted(hops: &[Hop]) -> Vec<Hop> {
    let mut v = hops.to_vec();
    v.sort();
    v
}

/// Checks `n` flows of a multipath route: the fibmatch hops are `want`, as
/// `ip route get fibmatch` lists them, and the chosen hop of every flow is
/// what `ip route get` answers for it and one of the hops; returns the
/// distinct hops chosen.
fn check_flows(
    net: &TestNet,
    kernel: &mut Kernel,
    flows: &[Query],
    want: &[Hop],
) -> BTreeSet<(u32, Option<IpAddr>)> {
    let mut seen = BTreeSet::new();
    for q in flows {
        let a = kernel.route(q).expect("route");
        assert_eq!(a.kind, Kind::Unicast, "{q:?}: {a:?}");
        assert_eq!(sorted(&a.hops), sorted(want), "{q:?}");
        assert_eq!(a.chosen_kind, Kind::Unicast, "{q:?}: {a:?}");
        let chosen = a.chosen.expect("a chosen hop");
        assert!(
            a.hops.contains(&chosen),
            "{q:?}: {chosen:?} not in the hops"
        );
        let by_ip = ip_hop(&ip_route_get(net, q, false).expect("ip route get"));
        assert_eq!(
            (chosen.ifindex, chosen.gateway),
            by_ip,
            "{q:?}: the kernel answers differently to ip route get"
        );
        // The frame's MAC would be the gateway's neighbour entry.
        let n = kernel
            .neighbour(chosen.ifindex, chosen.gateway.unwrap())
            .expect("neighbour")
            .expect("a neighbour entry for the gateway");
        assert_eq!(n.state, kernel::NUD_PERMANENT);
        seen.insert(by_ip);
    }
    // The fibmatch hop list equals `ip route get fibmatch`'s.
    let v = ip_route_get(net, &flows[0], true).expect("ip route get fibmatch");
    let listed: BTreeSet<(u32, Option<IpAddr>, u32)> = v["nexthops"]
        .as_array()
        .expect("nexthops")
        .iter()
        .map(|h| {
            let (i, g) = ip_hop(h);
            (i, g, h["weight"].as_u64().unwrap_or(1) as u32)
        })
        .collect();
    let ours: BTreeSet<_> = want
        .iter()
        .map(|h| (h.ifindex, h.gateway, h.weight))
        .collect();
    assert_eq!(listed, ours, "ip route get fibmatch");
    seen
}

#[test]
fn kernel_answers_match_ip_route_get() {
    if !require_root("kernel_answers_match_ip_route_get") {
        return;
    }
    let net = oracle_net("oracle-mp", 3);
    ip(
        &net,
        &[
            "route",
            "add",
            "172.16.9.0/24",
            "nexthop",
            "via",
            "10.0.0.2",
            "weight",
            "1",
            "nexthop",
            "via",
            "10.0.1.2",
            "weight",
            "2",
            "nexthop",
            "via",
            "10.0.2.2",
            "weight",
            "3",
        ],
    );
    ip(
        &net,
        &[
            "-6",
            "route",
            "add",
            "2001:db8:9::/64",
            "nexthop",
            "via",
            "2001:db8:100::2",
            "weight",
            "1",
            "nexthop",
            "via",
            "2001:db8:101::2",
            "weight",
            "1",
            "nexthop",
            "via",
            "2001:db8:102::2",
            "weight",
            "2",
        ],
    );
    let mut kernel = Kernel::open().expect("netlink");

    // IPv4, half of the flows with a TOS (it does not select another route
    // here: the routes have none).
    let flows: Vec<Query> = (0..50)
        .map(|i| Query {
            tos: if i % 2 == 0 { 0 } else { 0x28 },
            ..udp("10.2.0.100", "172.16.9.77", 20000 + 37 * i)
        })
        .collect();
    let want = [hop(0, gw4(0), 1), hop(1, gw4(1), 2), hop(2, gw4(2), 3)];
    let seen = check_flows(&net, &mut kernel, &flows, &want);
    println!("IPv4 3-hop multipath, weights 1/2/3: 50 flows agree with ip route get, {} distinct hops chosen", seen.len());
    assert!(seen.len() > 1, "the source port must move flows: {seen:?}");
    let a = kernel.route(&flows[0]).unwrap();
    assert_eq!(a.prefix, Some(("172.16.9.0".parse().unwrap(), 24)));
    assert_eq!(
        (a.table, a.metric, a.nhid, a.mtu),
        (Some(254), Some(0), None, None)
    );
    assert!(a.exact_flow);

    let flows: Vec<Query> = (0..50)
        .map(|i| udp("2001:db8:2::100", "2001:db8:9::77", 20000 + 37 * i))
        .collect();
    let want = [hop(0, gw6(0), 1), hop(1, gw6(1), 1), hop(2, gw6(2), 2)];
    let seen = check_flows(&net, &mut kernel, &flows, &want);
    println!("IPv6 3-hop multipath, weights 1/1/2: 50 flows agree with ip route get, {} distinct hops chosen", seen.len());
    assert!(seen.len() > 1, "the source port must move flows: {seen:?}");
    let a = kernel.route(&flows[0]).unwrap();
    assert_eq!(a.prefix, Some(("2001:db8:9::".parse().unwrap(), 64)));
    assert_eq!((a.table, a.metric), (Some(254), Some(1024)));

    // TCP and ICMP flows are asked with their protocol too.
    for proto in [6, 58] {
        let q = Query { proto, ..flows[3] };
        let a = kernel.route(&q).unwrap();
        assert!(a.exact_flow);
        let by_ip = ip_hop(&ip_route_get(&net, &q, false).expect("ip route get"));
        let chosen = a.chosen.unwrap();
        assert_eq!((chosen.ifindex, chosen.gateway), by_ip, "proto {proto}");
    }
}

#[test]
fn kernel_answers_single_path_local_tos_and_mtu() {
    if !require_root("kernel_answers_single_path_local_tos_and_mtu") {
        return;
    }
    let net = oracle_net("oracle-single", 3);
    let o = |i: usize| ifindex(&format!("xe-o{i}"));
    ip(
        &net,
        &[
            "route",
            "add",
            "172.16.1.0/24",
            "via",
            "10.0.0.2",
            "metric",
            "100",
        ],
    );
    ip(
        &net,
        &[
            "-6",
            "route",
            "add",
            "2001:db8:1::/64",
            "via",
            "2001:db8:100::2",
        ],
    );
    ip(
        &net,
        &[
            "route",
            "add",
            "172.16.7.0/24",
            "via",
            "10.0.1.2",
            "mtu",
            "1300",
        ],
    );
    ip(
        &net,
        &[
            "route",
            "add",
            "172.16.8.0/24",
            "via",
            "10.0.1.2",
            "mtu",
            "lock",
            "1300",
        ],
    );
    ip(
        &net,
        &[
            "-6",
            "route",
            "add",
            "2001:db8:7::/64",
            "via",
            "2001:db8:101::2",
            "mtu",
            "1300",
        ],
    );
    ip(
        &net,
        &[
            "route",
            "add",
            "172.16.11.0/24",
            "via",
            "192.0.2.1",
            "dev",
            "xe-o2",
            "onlink",
        ],
    );
    ip(
        &net,
        &[
            "route",
            "add",
            "172.16.12.0/24",
            "via",
            "inet6",
            "2001:db8:102::2",
            "dev",
            "xe-o2",
        ],
    );
    ip(&net, &["route", "add", "172.16.13.0/24", "via", "10.0.0.2"]);
    for (tos, gw) in [("0x10", "10.0.2.2"), ("0x20", "10.0.1.2")] {
        ip(
            &net,
            &["route", "add", "172.16.13.0/24", "tos", tos, "via", gw],
        );
    }
    let mut kernel = Kernel::open().expect("netlink");

    let a = kernel
        .route(&udp("10.2.0.100", "172.16.1.9", 1000))
        .unwrap();
    println!("single path IPv4: {a:?}");
    let want = hop(0, gw4(0), 1);
    assert_eq!(
        a,
        Answer {
            kind: Kind::Unicast,
            prefix: Some(("172.16.1.0".parse().unwrap(), 24)),
            table: Some(254),
            metric: Some(100),
            hops: vec![want],
            nhid: None,
            nexthop: None,
            mtu: None,
            chosen_kind: Kind::Unicast,
            chosen: Some(want),
            exact_flow: true,
        }
    );
    let a = kernel
        .route(&udp("2001:db8:2::100", "2001:db8:1::9", 1000))
        .unwrap();
    let want = hop(0, gw6(0), 1);
    assert_eq!(
        (a.kind, a.table, a.metric),
        (Kind::Unicast, Some(254), Some(1024))
    );
    assert_eq!((a.hops, a.chosen), (vec![want], Some(want)));

    // This host's addresses: delivered on lo; the local table's entry names
    // the device that holds the address. IPv4 reports it in table main while
    // no policy rule has been added (local and main share one trie).
    for (dst, src, table) in [
        ("10.0.1.1", "10.2.0.100", 254),
        ("2001:db8:101::1", "2001:db8:2::100", 255),
    ] {
        let a = kernel.route(&udp(src, dst, 1000)).unwrap();
        println!("local {dst}: {a:?}");
        assert_eq!(
            (a.kind, a.table, a.chosen_kind),
            (Kind::Local, Some(table), Kind::Local)
        );
        let dst: IpAddr = dst.parse().unwrap();
        assert_eq!(a.prefix, Some((dst, if dst.is_ipv4() { 32 } else { 128 })));
        assert_eq!(a.hops.len(), 1);
        assert_eq!((a.hops[0].ifindex, a.hops[0].gateway), (o(1), None));
        let chosen = a.chosen.unwrap();
        assert_eq!((chosen.ifindex, chosen.gateway), (ifindex("lo"), None));
    }

    // MTU metrics.
    let mtu =
        |kernel: &mut Kernel, src: &str, dst: &str| kernel.route(&udp(src, dst, 1)).unwrap().mtu;
    assert_eq!(
        mtu(&mut kernel, "10.2.0.100", "172.16.7.1"),
        Some(Mtu {
            mtu: 1300,
            locked: false
        })
    );
    assert_eq!(
        mtu(&mut kernel, "10.2.0.100", "172.16.8.1"),
        Some(Mtu {
            mtu: 1300,
            locked: true
        })
    );
    assert_eq!(
        mtu(&mut kernel, "2001:db8:2::100", "2001:db8:7::1"),
        Some(Mtu {
            mtu: 1300,
            locked: false
        })
    );
    assert_eq!(mtu(&mut kernel, "10.2.0.100", "172.16.1.1"), None);

    // onlink, and an IPv4 route via an IPv6 gateway (RTA_VIA).
    let a = kernel.route(&udp("10.2.0.100", "172.16.11.1", 1)).unwrap();
    let want = Hop {
        onlink: true,
        ..hop(2, "192.0.2.1".parse().unwrap(), 1)
    };
    assert_eq!((a.hops, a.chosen), (vec![want], Some(want)));
    let a = kernel.route(&udp("10.2.0.100", "172.16.12.1", 1)).unwrap();
    let want = hop(2, gw6(2), 1);
    assert_eq!((a.hops, a.chosen), (vec![want], Some(want)), "via inet6");

    // The TOS selects the route, by the legacy TOS bits (0x1c) of the
    // packet only: the route with tos 0x20 (DSCP CS1) is never matched.
    for (tos, port) in [(0, 0), (0x10, 2), (0x30, 2), (0x20, 0), (0xb8, 0)] {
        let q = Query {
            tos,
            ..udp("10.2.0.100", "172.16.13.1", 1)
        };
        let a = kernel.route(&q).unwrap();
        assert_eq!(a.chosen, Some(hop(port, gw4(port), 1)), "tos {tos:#x}");
        assert_eq!(a.hops, vec![hop(port, gw4(port), 1)], "tos {tos:#x}");
        let by_ip = ip_hop(&ip_route_get(&net, &q, false).unwrap());
        assert_eq!(by_ip, (o(port), Some(gw4(port))));
    }
}

#[test]
fn kernel_answers_nhid_groups() {
    if !require_root("kernel_answers_nhid_groups") {
        return;
    }
    let net = oracle_net("oracle-nhid", 3);
    for i in 0..3 {
        let dev = format!("xe-o{i}");
        for (id, gw) in [(i + 1, gw4(i)), (i + 21, gw6(i))] {
            let (id, gw) = (id.to_string(), gw.to_string());
            ip(
                &net,
                &["nexthop", "add", "id", &id, "via", &gw, "dev", &dev],
            );
        }
    }
    ip(
        &net,
        &[
            "nexthop",
            "add",
            "id",
            "10",
            "group",
            "1/2,2/3,3",
            "type",
            "resilient",
            "buckets",
            "64",
        ],
    );
    // A weight over 256, which iproute2 6.1 cannot write: made over netlink.
    let socket = route_socket().expect("netlink");
    request(
        &socket,
        RtMessage::NewNexthop(NexthopMessage {
            header: NexthopHeader::default(),
            attributes: vec![
                NexthopAttribute::Id(11),
                NexthopAttribute::Group(vec![
                    NexthopGroupEntry { id: 1, weight: 300 },
                    NexthopGroupEntry { id: 2, weight: 1 },
                ]),
            ],
        }),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .expect("nexthop group 11");
    ip(
        &net,
        &[
            "nexthop",
            "add",
            "id",
            "20",
            "group",
            "21/22/23,2",
            "type",
            "resilient",
            "buckets",
            "32",
        ],
    );
    ip(&net, &["nexthop", "add", "id", "4", "blackhole"]);
    ip(&net, &["route", "add", "172.16.6.0/24", "nhid", "10"]);
    ip(&net, &["route", "add", "172.16.7.0/24", "nhid", "11"]);
    ip(&net, &["route", "add", "172.16.8.0/24", "nhid", "2"]);
    ip(&net, &["route", "add", "172.16.10.0/24", "nhid", "4"]);
    ip(
        &net,
        &["-6", "route", "add", "2001:db8:6::/64", "nhid", "20"],
    );
    let mut kernel = Kernel::open().expect("netlink");

    let cases = [
        (
            "172.16.6.1",
            "10.2.0.100",
            10,
            NexthopObject::Group { resilient: true },
            vec![hop(0, gw4(0), 1), hop(1, gw4(1), 2), hop(2, gw4(2), 3)],
        ),
        (
            "172.16.7.1",
            "10.2.0.100",
            11,
            NexthopObject::Group { resilient: false },
            vec![hop(0, gw4(0), 300), hop(1, gw4(1), 1)],
        ),
        (
            "172.16.8.1",
            "10.2.0.100",
            2,
            NexthopObject::Single,
            vec![hop(1, gw4(1), 1)],
        ),
        (
            "2001:db8:6::1",
            "2001:db8:2::100",
            20,
            NexthopObject::Group { resilient: true },
            vec![hop(0, gw6(0), 1), hop(1, gw6(1), 1), hop(2, gw6(2), 2)],
        ),
    ];
    for (dst, src, id, object, want) in cases {
        let mut chosen = BTreeSet::new();
        for sport in 0..20 {
            let q = udp(src, dst, 3000 + sport);
            let a = kernel.route(&q).unwrap();
            assert_eq!(
                (a.kind, a.nhid, a.nexthop),
                (Kind::Unicast, Some(id), Some(object)),
                "{dst}"
            );
            assert_eq!(
                a.hops, want,
                "{dst}: members in group order, with their weights"
            );
            let c = a.chosen.unwrap();
            assert!(want.contains(&c), "{dst}: chosen {c:?}");
            assert_eq!(
                (c.ifindex, c.gateway),
                ip_hop(&ip_route_get(&net, &q, false).unwrap()),
                "{q:?}"
            );
            chosen.insert(c);
        }
        println!(
            "{dst} nhid {id} ({object:?}): hops {want:?}; 20 flows on {} of them, as ip route get",
            chosen.len()
        );
    }

    // A blackhole nexthop object: resolved as one; the route via it is
    // refused as a blackhole route is.
    assert_eq!(
        kernel.nexthop(4).unwrap(),
        (NexthopObject::Blackhole, vec![])
    );
    let a = kernel.route(&udp("10.2.0.100", "172.16.10.1", 1)).unwrap();
    assert_eq!(
        (a.kind, a.chosen_kind),
        (Kind::Error(libc::EINVAL), Kind::Error(libc::EINVAL))
    );
    assert!(
        kernel.nexthop(999).is_err(),
        "an unknown nexthop id is an error"
    );
}

/// A nexthop's per-CPU cached route is shared by every IPv6 route through
/// it: after `::/0` (group [5]) is looked up, a flow into the /64 (group
/// [4, 5]) that the hash sends over nexthop 5 must still be answered with the
/// /64, the route the FIB matched (see the kernel module's note).
#[test]
fn kernel_answers_the_matched_ipv6_route_not_the_cached_one() {
    if !require_root("kernel_answers_the_matched_ipv6_route_not_the_cached_one") {
        return;
    }
    let net = oracle_net("oracle-pcpu", 2);
    for (id, i) in [("4", 0), ("5", 1)] {
        let (gw, dev) = (gw6(i).to_string(), format!("xe-o{i}"));
        ip(&net, &["nexthop", "add", "id", id, "via", &gw, "dev", &dev]);
    }
    ip(&net, &["nexthop", "add", "id", "21", "group", "4/5"]);
    ip(&net, &["nexthop", "add", "id", "22", "group", "5"]);
    ip(&net, &["-6", "route", "add", "::/0", "nhid", "22"]);
    ip(
        &net,
        &["-6", "route", "add", "2001:db8:98::/64", "nhid", "21"],
    );
    let mut kernel = Kernel::open().expect("netlink");
    let p64 = Some(("2001:db8:98::".parse().unwrap(), 64));
    let mut over_shared = 0;
    for sport in 0..40 {
        let d = kernel
            .route(&udp("2001:db8:2::100", "2001:db8:77::1", 4000 + sport))
            .unwrap();
        assert_eq!(
            (d.prefix, d.nhid),
            (Some(("::".parse().unwrap(), 0)), Some(22))
        );
        let q = udp("2001:db8:2::100", "2001:db8:98::1", 4000 + sport);
        let a = kernel.route(&q).unwrap();
        assert_eq!((a.prefix, a.nhid), (p64, Some(21)), "{q:?}");
        if a.chosen.map(|c| c.gateway) == Some(Some(gw6(1))) {
            over_shared += 1;
        }
    }
    println!("40 flows into the /64 after one into ::/0 each: {over_shared} over the shared nexthop 5, all answered with the /64");
    assert!(
        over_shared > 0,
        "no flow took the shared hop: the test shows nothing"
    );
}

#[test]
fn kernel_answers_refusals_as_errno() {
    if !require_root("kernel_answers_refusals_as_errno") {
        return;
    }
    let net = oracle_net("oracle-errors", 1);
    for (route, family) in [
        ("172.16.1.0/24 via 10.0.0.2", "-4"),
        ("blackhole 172.16.2.0/24", "-4"),
        ("unreachable 172.16.3.0/24", "-4"),
        ("prohibit 172.16.4.0/24", "-4"),
        ("throw 172.16.5.0/24", "-4"),
        ("2001:db8:1::/64 via 2001:db8:100::2", "-6"),
        ("blackhole 2001:db8:3:2::/64", "-6"),
        ("unreachable 2001:db8:3:3::/64", "-6"),
        ("prohibit 2001:db8:3:4::/64", "-6"),
        ("throw 2001:db8:3:5::/64", "-6"),
    ] {
        let mut args = vec![family, "route", "add"];
        args.extend(route.split(' '));
        ip(&net, &args);
    }
    let mut kernel = Kernel::open().expect("netlink");
    let refused = |kernel: &mut Kernel, what: &str, q: &Query, errno: i32| {
        let a = kernel.route(q).unwrap();
        let printed = ip_route_get(&net, q, false).unwrap_err();
        let printed_fib = ip_route_get(&net, q, true).unwrap_err();
        println!(
            "{what:<42} {}: errno {errno} ({:?}), both lookups; ip route get: {printed:?}",
            q.dst, a.kind
        );
        assert_eq!(a.kind.errno(), Some(errno), "{what}: {a:?}");
        assert_eq!(a.chosen_kind, Kind::Error(errno), "{what}: {a:?}");
        assert_eq!((a.hops.len(), a.chosen, a.table), (0, None, None));
        assert_eq!(printed, rtnetlink_answers(errno), "{what}");
        assert_eq!(printed_fib, rtnetlink_answers(errno), "{what} (fibmatch)");
    };
    for (what, src, dst, errno) in [
        ("blackhole route", "10.2.0.100", "172.16.2.1", libc::EINVAL),
        (
            "unreachable route",
            "10.2.0.100",
            "172.16.3.1",
            libc::EHOSTUNREACH,
        ),
        ("prohibit route", "10.2.0.100", "172.16.4.1", libc::EACCES),
        ("throw route", "10.2.0.100", "172.16.5.1", libc::ENETUNREACH),
        ("no route", "10.2.0.100", "198.51.100.1", libc::ENETUNREACH),
        (
            "blackhole route",
            "2001:db8:2::100",
            "2001:db8:3:2::1",
            libc::EINVAL,
        ),
        (
            "unreachable route",
            "2001:db8:2::100",
            "2001:db8:3:3::1",
            libc::EHOSTUNREACH,
        ),
        (
            "prohibit route",
            "2001:db8:2::100",
            "2001:db8:3:4::1",
            libc::EACCES,
        ),
        (
            "throw route",
            "2001:db8:2::100",
            "2001:db8:3:5::1",
            libc::ENETUNREACH,
        ),
        (
            "no route",
            "2001:db8:2::100",
            "2001:db8:ff::1",
            libc::ENETUNREACH,
        ),
    ] {
        refused(&mut kernel, what, &udp(src, dst, 1), errno);
    }

    // IPv4 forwarding off on the ingress device: every non-local
    // destination, routed or not, is refused as unreachable; local delivery
    // still answers.
    let routed4 = udp("10.2.0.100", "172.16.1.1", 1);
    assert_eq!(kernel.route(&routed4).unwrap().kind, Kind::Unicast);
    sysctl(&net, &["net.ipv4.conf.xe-in.forwarding=0"]);
    refused(
        &mut kernel,
        "IPv4 forwarding off on xe-in, routed",
        &routed4,
        libc::EHOSTUNREACH,
    );
    refused(
        &mut kernel,
        "IPv4 forwarding off on xe-in, no route",
        &udp("10.2.0.100", "198.51.100.1", 1),
        libc::EHOSTUNREACH,
    );
    refused(
        &mut kernel,
        "IPv4 forwarding off on xe-in, blackhole",
        &udp("10.2.0.100", "172.16.2.1", 1),
        libc::EHOSTUNREACH,
    );
    let local = kernel.route(&udp("10.2.0.100", "10.0.0.1", 1)).unwrap();
    assert_eq!((local.kind, local.chosen_kind), (Kind::Local, Kind::Local));
    sysctl(&net, &["net.ipv4.conf.xe-in.forwarding=1"]);
    assert_eq!(kernel.route(&routed4).unwrap().chosen_kind, Kind::Unicast);

    // IPv6 forwarding off globally: the kernel answers as if it were on (it
    // drops the packet later, in ip6_forward).
    let routed6 = udp("2001:db8:2::100", "2001:db8:1::1", 1);
    let on = kernel.route(&routed6).unwrap();
    sysctl(&net, &["net.ipv6.conf.all.forwarding=0"]);
    let off = kernel.route(&routed6).unwrap();
    let printed = ip_route_get(&net, &routed6, false).expect("ip route get answers");
    sysctl(&net, &["net.ipv6.conf.all.forwarding=1"]);
    println!("IPv6 forwarding off (all): {off:?}; ip route get: {printed}");
    assert_eq!(off, on);
    assert_eq!(off.chosen, Some(hop(0, gw6(0), 1)));
    assert_eq!(ip_hop(&printed), (ifindex("xe-o0"), Some(gw6(0))));

    // A protocol the kernel does not take in a route request: ip route get
    // fails, the oracle asks without it and says so.
    let gre = Query {
        proto: 47,
        ..routed4
    };
    let printed = ip_route_get(&net, &gre, false).unwrap_err();
    assert_eq!(printed, "Error: Unsupported ip proto.");
    let a = kernel.route(&gre).unwrap();
    assert!(!a.exact_flow);
    assert_eq!((a.kind, a.chosen), (Kind::Unicast, Some(hop(0, gw4(0), 1))));
}

#[test]
fn kernel_answers_linkdown_and_dead_hops() {
    if !require_root("kernel_answers_linkdown_and_dead_hops") {
        return;
    }
    let net = oracle_net("oracle-down", 3);
    ip(
        &net,
        &[
            "route",
            "add",
            "172.16.9.0/24",
            "nexthop",
            "via",
            "10.0.0.2",
            "nexthop",
            "via",
            "10.0.1.2",
            "nexthop",
            "via",
            "10.0.2.2",
        ],
    );
    ip(
        &net,
        &[
            "-6",
            "route",
            "add",
            "2001:db8:9::/64",
            "nexthop",
            "via",
            "2001:db8:100::2",
            "nexthop",
            "via",
            "2001:db8:101::2",
        ],
    );
    ip(&net, &["route", "add", "172.16.1.0/24", "via", "10.0.1.2"]);
    ip(
        &net,
        &[
            "nexthop", "add", "id", "1", "via", "10.0.0.2", "dev", "xe-o0",
        ],
    );
    ip(
        &net,
        &[
            "nexthop", "add", "id", "2", "via", "10.0.1.2", "dev", "xe-o1",
        ],
    );
    ip(&net, &["nexthop", "add", "id", "10", "group", "1/2"]);
    ip(&net, &["route", "add", "172.16.6.0/24", "nhid", "10"]);
    let mut kernel = Kernel::open().expect("netlink");
    let v4 = udp("10.2.0.100", "172.16.9.1", 1);
    let v6 = udp("2001:db8:2::100", "2001:db8:9::1", 1);
    let single = udp("10.2.0.100", "172.16.1.1", 1);
    let nhid = udp("10.2.0.100", "172.16.6.1", 1);
    assert!(kernel
        .route(&v4)
        .unwrap()
        .hops
        .iter()
        .all(|h| !h.linkdown && !h.dead));
    assert_eq!(kernel.route(&nhid).unwrap().hops.len(), 2);

    // The peer of xe-o1 goes down: xe-o1 loses its carrier. The kernel
    // learns it from its link watch, after `ip link set` has returned: wait
    // (5 s at most) until the hop says linkdown and the nexthop object on
    // xe-o1 has left its group, both done on that one device event.
    let down = |hops: &[Hop]| -> Vec<(u32, bool, bool)> {
        hops.iter()
            .map(|h| (h.ifindex, h.linkdown, h.dead))
            .collect()
    };
    let (o0, o1, o2) = (ifindex("xe-o0"), ifindex("xe-o1"), ifindex("xe-o2"));
    ip(&net, &["link", "set", "xe-p1", "down"]);
    let t0 = Instant::now();
    loop {
        let a = kernel.route(&v4).unwrap();
        let seen = a.hops.iter().any(|h| h.ifindex == o1 && h.linkdown);
        if seen && kernel.route(&nhid).unwrap().hops.len() == 1 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no linkdown after 5 s: {:?}",
            a.hops
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let a = kernel.route(&v4).unwrap();
    println!(
        "carrier down on xe-o1, seen after {:?}: {:?}",
        t0.elapsed(),
        a.hops
    );
    assert_eq!(
        down(&a.hops),
        vec![(o0, false, false), (o1, true, false), (o2, false, false)]
    );
    let a6 = kernel.route(&v6).unwrap();
    assert_eq!(
        down(&sorted(&a6.hops)),
        down(&sorted(&[
            Hop {
                linkdown: true,
                ..hop(1, gw6(1), 1)
            },
            hop(0, gw6(0), 1)
        ]))
    );
    let a = kernel.route(&single).unwrap();
    assert_eq!(
        down(&a.hops),
        vec![(o1, true, false)],
        "single path: the header's flags"
    );
    assert_eq!(
        a.chosen_kind,
        Kind::Unicast,
        "a linkdown route still forwards (ignore_routes_with_linkdown=0)"
    );
    // The nexthop object on xe-o1 is deleted, and leaves its group.
    let a = kernel.route(&nhid).unwrap();
    println!("nhid 10 after carrier loss on xe-o1: {:?}", a.hops);
    assert_eq!(a.hops, vec![hop(0, gw4(0), 1)]);
    assert!(kernel.nexthop(2).is_err(), "nexthop 2 is gone");

    // xe-o1 itself goes down: its hop is dead too.
    ip(&net, &["link", "set", "xe-o1", "down"]);
    let a = kernel.route(&v4).unwrap();
    println!("xe-o1 down: {:?}", a.hops);
    assert_eq!(
        down(&a.hops),
        vec![(o0, false, false), (o1, true, true), (o2, false, false)]
    );
    for sport in 0..30 {
        let c = kernel
            .route(&Query { sport, ..v4 })
            .unwrap()
            .chosen
            .unwrap();
        assert_ne!(c.ifindex, o1, "a dead hop is never chosen");
    }
}

#[test]
fn kernel_neighbour_entries_both_families() {
    if !require_root("kernel_neighbour_entries_both_families") {
        return;
    }
    let net = oracle_net("oracle-neigh", 2);
    let o1 = ifindex("xe-o1");
    let mac = [0x02, 0, 0, 0, 0x07, 0x07];
    for (stale, failed, incomplete) in [
        ("10.0.1.7", "10.0.1.8", "10.0.1.9"),
        ("2001:db8:101::7", "2001:db8:101::8", "2001:db8:101::9"),
    ] {
        ip(
            &net,
            &[
                "neigh",
                "add",
                stale,
                "dev",
                "xe-o1",
                "lladdr",
                &support::mac_str(mac),
                "nud",
                "stale",
            ],
        );
        ip(
            &net,
            &["neigh", "add", failed, "dev", "xe-o1", "nud", "failed"],
        );
        ip(
            &net,
            &[
                "neigh",
                "add",
                incomplete,
                "dev",
                "xe-o1",
                "nud",
                "incomplete",
            ],
        );
    }
    let mut kernel = Kernel::open().expect("netlink");
    for (gw, stale, failed, incomplete, missing) in [
        (gw4(1), "10.0.1.7", "10.0.1.8", "10.0.1.9", "10.0.1.10"),
        (
            gw6(1),
            "2001:db8:101::7",
            "2001:db8:101::8",
            "2001:db8:101::9",
            "2001:db8:101::10",
        ),
    ] {
        let n = |kernel: &mut Kernel, a: &str| kernel.neighbour(o1, a.parse().unwrap()).unwrap();
        let permanent = kernel.neighbour(o1, gw).unwrap().unwrap();
        assert_eq!(
            permanent,
            kernel::Neighbour {
                mac: Some(support::neighbour_mac(1, 0)),
                state: kernel::NUD_PERMANENT
            }
        );
        assert_eq!(
            n(&mut kernel, stale),
            Some(kernel::Neighbour {
                mac: Some(mac),
                state: kernel::NUD_STALE
            })
        );
        assert_eq!(
            n(&mut kernel, failed),
            Some(kernel::Neighbour {
                mac: None,
                state: kernel::NUD_FAILED
            })
        );
        // An entry added as incomplete starts solicitations and, unanswered,
        // turns failed after three (about 3 s): either state, never a MAC.
        let inc = n(&mut kernel, incomplete).expect("the incomplete entry");
        println!("{incomplete}: {inc:?}");
        assert_eq!(inc.mac, None);
        assert!(
            [kernel::NUD_INCOMPLETE, kernel::NUD_FAILED].contains(&inc.state),
            "{inc:?}"
        );
        assert!(permanent.usable() && n(&mut kernel, stale).unwrap().usable());
        assert!(!n(&mut kernel, failed).unwrap().usable() && !inc.usable());
        assert_eq!(n(&mut kernel, missing), None);
        // The entry belongs to its device: on another one there is none.
        assert_eq!(
            kernel
                .neighbour(ifindex("xe-o0"), stale.parse().unwrap())
                .unwrap(),
            None
        );
    }
}
