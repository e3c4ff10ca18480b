//! The nexthop netlink messages against a real kernel in a test namespace: dumps of nexthops and buckets, requests, and notifications, all through RtMessage.

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use control::nexthop_msg::{
    clock_t_to_duration, dump, dump_nexthop_buckets, dump_nexthops, request, route_socket,
    split_datagram, Bucket, GroupKind, Nexthop, NexthopAttribute, NexthopGroupEntry,
    NexthopGroupType, NexthopHeader, NexthopKind, NexthopMessage, RtMessage, RTM_DELNEXTHOP,
    RTM_GETNEXTHOP, RTM_NEWNEXTHOP, RTM_NEWNEXTHOPBUCKET, RTNLGRP_NEXTHOP,
};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr};
use testnet::{require_root, TestNet};

/// RTNLGRP_IPV4_ROUTE: joined with RTNLGRP_NEXTHOP on the same socket.
const RTNLGRP_IPV4_ROUTE: u32 = 7;

fn ip(net: &TestNet, args: &[&str]) {
    net.ip(args)
        .unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")));
}

/// `ip -n NS -j ARGS`, parsed.
fn ip_json(net: &TestNet, args: &[&str]) -> serde_json::Value {
    let out = Command::new("ip")
        .args(["-n", net.name(), "-j"])
        .args(args)
        .output()
        .expect("running ip");
    assert!(
        out.status.success(),
        "ip -j {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ip -j output is JSON")
}

/// Decodes every message of a datagram and checks that it serializes back to
/// the bytes the kernel sent. Returns the messages and how many were checked.
fn decode_round_trip(datagram: &[u8]) -> Vec<NetlinkMessage<RtMessage>> {
    split_datagram(datagram)
        .map(|frame| {
            let frame = frame.expect("framing");
            let message = NetlinkMessage::<RtMessage>::deserialize(frame)
                .unwrap_or_else(|e| panic!("{e}: {frame:02x?}"));
            let mut again = vec![0; message.buffer_len()];
            message.serialize(&mut again);
            assert_eq!(again, frame, "re-serialized {message:?}");
            message
        })
        .collect()
}

/// A GETNEXTHOP dump done by hand, to see the kernel's bytes: returns how
/// many messages decoded and re-serialized identically.
fn raw_nexthop_dump_round_trip() -> usize {
    let socket = route_socket().expect("socket");
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = 4242;
    let mut message = NetlinkMessage::new(
        header,
        RtMessage::GetNexthop(NexthopMessage::default()).into(),
    );
    message.finalize();
    assert_eq!(message.header.message_type, RTM_GETNEXTHOP);
    let mut buf = vec![0; message.buffer_len()];
    message.serialize(&mut buf);
    socket
        .send_to(&buf, &SocketAddr::new(0, 0), 0)
        .expect("send");
    let mut checked = 0;
    loop {
        let (datagram, _) = socket.recv_from_full().expect("recv");
        for message in decode_round_trip(&datagram) {
            checked += 1;
            match message.payload {
                NetlinkPayload::Done(_) => return checked,
                NetlinkPayload::InnerMessage(RtMessage::NewNexthop(_)) => {}
                other => panic!("unexpected in a nexthop dump: {other:?}"),
            }
        }
    }
}

/// Link indexes by name, through the RtMessage dump (netlink-packet-route's
/// part of it).
fn link_indexes(socket: &Socket) -> BTreeMap<String, u32> {
    dump(
        socket,
        RouteNetlinkMessage::GetLink(LinkMessage::default()).into(),
    )
    .expect("link dump")
    .into_iter()
    .filter_map(|message| match message {
        RtMessage::Route(RouteNetlinkMessage::NewLink(link)) => {
            link.attributes.iter().find_map(|attr| match attr {
                LinkAttribute::IfName(name) => Some((name.clone(), link.header.index)),
                _ => None,
            })
        }
        _ => None,
    })
    .collect()
}

/// Notifications that arrive on `socket` within `within`, stopping early once
/// `quiet` passes without any (or `enough` says so). Each is checked to
/// re-serialize to the kernel's bytes.
fn collect_notifications(
    socket: &Socket,
    within: Duration,
    quiet: Duration,
    enough: impl Fn(&[RtMessage]) -> bool,
) -> Vec<RtMessage> {
    let start = Instant::now();
    let mut last = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < within && last.elapsed() < quiet && !enough(&seen) {
        match socket.recv_from_full() {
            Ok((datagram, _)) => {
                last = Instant::now();
                for message in decode_round_trip(&datagram) {
                    match message.payload {
                        NetlinkPayload::InnerMessage(inner) => seen.push(inner),
                        other => panic!("unexpected notification {other:?}"),
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
    seen
}

fn nexthops_by_id(socket: &Socket) -> BTreeMap<u32, Nexthop> {
    dump_nexthops(socket)
        .expect("nexthop dump")
        .iter()
        .map(|message| {
            let nexthop = Nexthop::from_message(message).expect("typed view");
            (nexthop.id, nexthop)
        })
        .collect()
}

fn buckets_of(socket: &Socket, group: u32) -> Vec<Bucket> {
    dump_nexthop_buckets(socket, Some(group))
        .expect("bucket dump")
        .iter()
        .map(|message| Bucket::from_message(message).expect("bucket view"))
        .collect()
}

/// Compares our bucket dump of `group` with `ip -j nexthop bucket show`,
/// bucket for bucket. Returns how many matched.
fn compare_buckets_with_iproute2(net: &TestNet, socket: &Socket, group: u32) -> usize {
    let ours: BTreeMap<u16, u32> = buckets_of(socket, group)
        .iter()
        .map(|b| {
            assert_eq!(b.group, group);
            (b.index, b.nh_id)
        })
        .collect();
    let theirs: BTreeMap<u16, u32> = ip_json(
        net,
        &["nexthop", "bucket", "show", "id", &group.to_string()],
    )
    .as_array()
    .expect("JSON array")
    .iter()
    .map(|entry| {
        assert_eq!(entry["id"].as_u64(), Some(group.into()), "{entry}");
        let bucket = &entry["bucket"];
        (
            bucket["index"].as_u64().expect("index") as u16,
            bucket["nhid"].as_u64().expect("nhid") as u32,
        )
    })
    .collect();
    assert_eq!(ours, theirs, "buckets of group {group}: ours vs ip");
    ours.len()
}

fn members_of(nexthop: &Nexthop) -> &[(u32, u16)] {
    match &nexthop.kind {
        NexthopKind::Group { members, .. } => members,
        other => panic!("nexthop {} is not a group: {other:?}", nexthop.id),
    }
}

#[test]
fn nexthop_objects_buckets_and_notifications_from_the_kernel() {
    if !require_root("nexthop_objects_buckets_and_notifications_from_the_kernel") {
        return;
    }
    let net = TestNet::new("nhmsg", &[("xe-n0", "xe-m0"), ("xe-n1", "xe-m1")]).expect("namespace");
    net.enter().expect("entering the namespace");

    ip(&net, &["addr", "add", "10.0.0.1/24", "dev", "xe-n0"]);
    ip(&net, &["addr", "add", "10.0.1.1/24", "dev", "xe-n1"]);
    ip(
        &net,
        &[
            "-6",
            "addr",
            "add",
            "2001:db8::1/64",
            "dev",
            "xe-n0",
            "nodad",
        ],
    );
    for (addr, mac, dev) in [
        ("10.0.0.2", "02:00:00:00:00:02", "xe-n0"),
        ("10.0.1.2", "02:00:00:00:01:02", "xe-n1"),
    ] {
        ip(
            &net,
            &[
                "neigh",
                "add",
                addr,
                "lladdr",
                mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ],
        );
    }
    ip(
        &net,
        &[
            "nexthop", "add", "id", "1", "via", "10.0.0.2", "dev", "xe-n0",
        ],
    );
    ip(
        &net,
        &[
            "nexthop", "add", "id", "2", "via", "10.0.1.2", "dev", "xe-n1",
        ],
    );
    ip(&net, &["nexthop", "add", "id", "3", "dev", "xe-n0"]);
    ip(&net, &["nexthop", "add", "id", "4", "blackhole"]);
    ip(
        &net,
        &[
            "nexthop",
            "add",
            "id",
            "5",
            "via",
            "2001:db8::2",
            "dev",
            "xe-n0",
        ],
    );
    ip(&net, &["nexthop", "add", "id", "10", "group", "1/2,3"]);
    ip(
        &net,
        &[
            "nexthop",
            "add",
            "id",
            "20",
            "group",
            "1/2",
            "type",
            "resilient",
            "buckets",
            "16",
            "idle_timer",
            "0",
            "unbalanced_timer",
            "0",
        ],
    );
    ip(
        &net,
        &[
            "nexthop",
            "add",
            "id",
            "21",
            "group",
            "1,3/2",
            "type",
            "resilient",
            "buckets",
            "32",
            "idle_timer",
            "3",
            "unbalanced_timer",
            "5",
        ],
    );
    // Group 22 carries traffic later, to see bucket notifications.
    ip(
        &net,
        &[
            "nexthop",
            "add",
            "id",
            "22",
            "group",
            "1/3",
            "type",
            "resilient",
            "buckets",
            "8",
            "idle_timer",
            "1",
        ],
    );
    ip(&net, &["route", "add", "198.51.100.0/24", "nhid", "22"]);

    let socket = route_socket().expect("netlink socket in the namespace");
    let links = link_indexes(&socket);
    let (n0, n1) = (links["xe-n0"], links["xe-n1"]);
    assert_ne!(n0, n1);

    // Neighbours come through the same RtMessage (netlink-packet-route).
    let neighbours: BTreeSet<(IpAddr, Vec<u8>)> = dump(
        &socket,
        RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()).into(),
    )
    .expect("neighbour dump")
    .into_iter()
    .filter_map(|message| match message {
        RtMessage::Route(RouteNetlinkMessage::NewNeighbour(neigh)) => {
            let mut dst = None;
            let mut mac = None;
            for attr in &neigh.attributes {
                match attr {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                        dst = Some(IpAddr::V4(*a))
                    }
                    NeighbourAttribute::LinkLayerAddress(m) => mac = Some(m.clone()),
                    _ => {}
                }
            }
            dst.zip(mac)
        }
        _ => None,
    })
    .collect();
    assert!(neighbours.contains(&(Ipv4Addr::new(10, 0, 0, 2).into(), vec![2, 0, 0, 0, 0, 2])));
    assert!(neighbours.contains(&(Ipv4Addr::new(10, 0, 1, 2).into(), vec![2, 0, 0, 0, 1, 2])));

    // A group with a weight above 255 made by our own RTM_NEWNEXTHOP (iproute2
    // 6.1 cannot): the 16-bit weights of Linux 6.12 and later.
    let weight_300 = request(
        &socket,
        RtMessage::NewNexthop(NexthopMessage {
            header: NexthopHeader::default(),
            attributes: vec![
                NexthopAttribute::Id(30),
                NexthopAttribute::GroupType(NexthopGroupType::Mpath),
                NexthopAttribute::Group(vec![
                    NexthopGroupEntry { id: 1, weight: 300 },
                    NexthopGroupEntry { id: 3, weight: 1 },
                ]),
            ],
        }),
        NLM_F_CREATE | NLM_F_EXCL,
    );
    let wide_weights = match weight_300 {
        Ok(()) => true,
        Err(e) if e.errno() == Some(22) => {
            eprintln!("this kernel has no 16-bit nexthop weights ({e}); skipping that part");
            false
        }
        Err(e) => panic!("adding group 30: {e}"),
    };
    // The kernel's refusals carry its explanation.
    let again = request(
        &socket,
        RtMessage::NewNexthop(NexthopMessage {
            header: NexthopHeader {
                family: AddressFamily::Inet,
                ..NexthopHeader::default()
            },
            attributes: vec![NexthopAttribute::Id(1), NexthopAttribute::Blackhole],
        }),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .expect_err("nexthop 1 exists");
    assert_eq!(again.errno(), Some(17), "{again}");
    println!("duplicate nexthop refused: {again}");

    // Every message of a raw dump re-serializes to the kernel's bytes.
    let raw_checked = raw_nexthop_dump_round_trip();

    let nexthops = nexthops_by_id(&socket);
    let expected_ids: BTreeSet<u32> = [1, 2, 3, 4, 5, 10, 20, 21, 22]
        .into_iter()
        .chain(wide_weights.then_some(30))
        .collect();
    assert_eq!(
        nexthops.keys().copied().collect::<BTreeSet<_>>(),
        expected_ids
    );
    let single = |family, oif, gateway: Option<IpAddr>| NexthopKind::Single {
        family,
        oif,
        gateway,
        blackhole: false,
        fdb: false,
    };
    assert_eq!(
        nexthops[&1].kind,
        single(
            AddressFamily::Inet,
            Some(n0),
            Some(Ipv4Addr::new(10, 0, 0, 2).into())
        )
    );
    assert_eq!(
        nexthops[&2].kind,
        single(
            AddressFamily::Inet,
            Some(n1),
            Some(Ipv4Addr::new(10, 0, 1, 2).into())
        )
    );
    assert_eq!(
        nexthops[&3].kind,
        single(AddressFamily::Inet, Some(n0), None)
    );
    assert!(
        matches!(
            nexthops[&4].kind,
            NexthopKind::Single {
                blackhole: true,
                oif: None,
                gateway: None,
                fdb: false,
                ..
            }
        ),
        "{:?}",
        nexthops[&4]
    );
    assert_eq!(
        nexthops[&5].kind,
        single(
            AddressFamily::Inet6,
            Some(n0),
            Some("2001:db8::2".parse::<Ipv6Addr>().unwrap().into())
        )
    );
    assert_eq!(
        nexthops[&10].kind,
        NexthopKind::Group {
            kind: GroupKind::Mpath,
            members: vec![(1, 1), (2, 3)],
        }
    );
    assert_eq!(
        nexthops[&20].kind,
        NexthopKind::Group {
            kind: GroupKind::Resilient {
                buckets: 16,
                idle_timer: 0,
                unbalanced_timer: 0,
                unbalanced_time: 0,
            },
            members: vec![(1, 1), (2, 1)],
        }
    );
    // Timers come back in clock_t (1/100 s): `idle_timer 3` is 300.
    let NexthopKind::Group {
        kind:
            GroupKind::Resilient {
                buckets,
                idle_timer,
                unbalanced_timer,
                ..
            },
        ref members,
    } = nexthops[&21].kind
    else {
        panic!("{:?}", nexthops[&21]);
    };
    assert_eq!((buckets, idle_timer, unbalanced_timer), (32, 300, 500));
    assert_eq!(
        clock_t_to_duration(idle_timer.into()),
        Duration::from_secs(3)
    );
    assert_eq!(members, &[(1, 3), (2, 1)]);
    if wide_weights {
        assert_eq!(members_of(&nexthops[&30]), &[(1, 300), (3, 1)]);
    }

    // Buckets: 16 of group 20, the same as iproute2 sees, 8 per member.
    let buckets_20 = buckets_of(&socket, 20);
    assert_eq!(buckets_20.len(), 16);
    assert_eq!(
        buckets_20.iter().map(|b| b.index).collect::<BTreeSet<_>>(),
        (0..16).collect::<BTreeSet<_>>()
    );
    assert_eq!(buckets_20.iter().filter(|b| b.nh_id == 1).count(), 8);
    assert_eq!(buckets_20.iter().filter(|b| b.nh_id == 2).count(), 8);
    let matched_before = compare_buckets_with_iproute2(&net, &socket, 20);
    let buckets_21 = buckets_of(&socket, 21);
    assert_eq!(buckets_21.iter().filter(|b| b.nh_id == 1).count(), 24);
    let all_buckets = dump_nexthop_buckets(&socket, None).expect("dump of all buckets");
    assert_eq!(all_buckets.len(), 16 + 32 + 8);
    // Bucket dumps of a non-resilient or missing group: errors in NLMSG_DONE.
    let not_resilient = dump_nexthop_buckets(&socket, Some(10)).expect_err("group 10 is mpath");
    assert_eq!(not_resilient.errno(), Some(22), "{not_resilient}");
    let missing = dump_nexthop_buckets(&socket, Some(99)).expect_err("no group 99");
    assert_eq!(missing.errno(), Some(2), "{missing}");
    println!("bucket dump errors: {not_resilient}; {missing}");

    // One socket for nexthop and route notifications.
    let monitor = route_socket().expect("monitor socket");
    monitor
        .add_membership(RTNLGRP_NEXTHOP)
        .expect("join RTNLGRP_NEXTHOP");
    monitor
        .add_membership(RTNLGRP_IPV4_ROUTE)
        .expect("join RTNLGRP_IPV4_ROUTE");
    monitor.set_non_blocking(true).expect("non-blocking");

    ip(&net, &["route", "add", "203.0.113.0/24", "nhid", "10"]);
    ip(&net, &["nexthop", "del", "id", "2"]);
    let after_delete = collect_notifications(
        &monitor,
        Duration::from_secs(3),
        Duration::from_millis(700),
        |_| false,
    );
    let mut deleted = Vec::new();
    let mut updated = BTreeMap::new();
    let mut bucket_notes = 0;
    let mut routes_added = Vec::new();
    let our_route = RouteAttribute::Destination(RouteAddress::Inet(Ipv4Addr::new(203, 0, 113, 0)));
    for message in &after_delete {
        match message {
            RtMessage::DelNexthop(m) => deleted.push(m.id().expect("id")),
            RtMessage::NewNexthop(m) => {
                let nexthop = Nexthop::from_message(m).expect("typed view");
                updated.insert(nexthop.id, nexthop);
            }
            RtMessage::NewNexthopBucket(_) => bucket_notes += 1,
            RtMessage::Route(RouteNetlinkMessage::NewRoute(route))
                if route.attributes.contains(&our_route) =>
            {
                routes_added.push(route.attributes.clone());
            }
            _ => {}
        }
    }
    assert_eq!(routes_added.len(), 1, "{after_delete:#?}");
    assert!(routes_added[0].contains(&RouteAttribute::NhId(10)));
    assert_eq!(deleted, vec![2], "{after_delete:#?}");
    assert_eq!(
        updated.keys().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([10, 20, 21]),
        "{after_delete:#?}"
    );
    assert_eq!(members_of(&updated[&10]), &[(1, 1)]);
    assert_eq!(members_of(&updated[&20]), &[(1, 1)]);
    assert_eq!(members_of(&updated[&21]), &[(1, 3)]);
    // Deleting a member moves its buckets at once and silently: the group's
    // RTM_NEWNEXTHOP is the only news of it.
    assert_eq!(bucket_notes, 0, "{after_delete:#?}");
    let buckets_20 = buckets_of(&socket, 20);
    assert_eq!(buckets_20.len(), 16);
    assert!(buckets_20.iter().all(|b| b.nh_id == 1));
    let matched_after = compare_buckets_with_iproute2(&net, &socket, 20);

    // Bucket notifications come from the kernel's delayed upkeep: buckets of
    // an overweight member that carry traffic migrate only once idle for
    // idle_timer (1 s here).
    let udp = UdpSocket::bind("0.0.0.0:0").expect("UDP socket in the namespace");
    for host in 1..=254u8 {
        // A route lookup marks the group's bucket for this flow busy.
        udp.send_to(b"x", (Ipv4Addr::new(198, 51, 100, host), 9))
            .expect("send through group 22");
    }
    let before = buckets_of(&socket, 22);
    assert!(
        before.iter().all(|b| b.idle_time < 50),
        "traffic should have marked all buckets busy: {before:?}"
    );
    let replaced = Instant::now();
    ip(
        &net,
        &[
            "nexthop",
            "replace",
            "id",
            "22",
            "group",
            "1,3/3",
            "type",
            "resilient",
            "buckets",
            "8",
            "idle_timer",
            "1",
        ],
    );
    let bucket_news = collect_notifications(
        &monitor,
        Duration::from_secs(5),
        Duration::from_secs(5),
        |seen| {
            seen.iter()
                .filter(|m| matches!(m, RtMessage::NewNexthopBucket(_)))
                .count()
                >= 2
        },
    );
    let waited = replaced.elapsed();
    let moved: Vec<Bucket> = bucket_news
        .iter()
        .filter_map(|m| match m {
            RtMessage::NewNexthopBucket(m) => Some(Bucket::from_message(m).expect("bucket view")),
            _ => None,
        })
        .collect();
    assert!(
        bucket_news.iter().any(|m| matches!(
            m,
            RtMessage::NewNexthop(m) if m.id() == Some(22)
        )),
        "{bucket_news:#?}"
    );
    assert_eq!(moved.len(), 2, "{bucket_news:#?}");
    assert!(
        moved.iter().all(|b| b.group == 22 && b.nh_id == 1),
        "{moved:?}"
    );
    assert!(
        waited >= Duration::from_millis(900),
        "migrated after {waited:?}"
    );
    let after = buckets_of(&socket, 22);
    assert_eq!(after.iter().filter(|b| b.nh_id == 1).count(), 6);
    assert_eq!(after.iter().filter(|b| b.nh_id == 3).count(), 2);
    for b in &moved {
        assert_eq!(after[usize::from(b.index)].nh_id, 1);
    }
    let matched_22 = compare_buckets_with_iproute2(&net, &socket, 22);

    // The notification types seen, by message type.
    let kinds = |messages: &[RtMessage]| -> BTreeMap<u16, usize> {
        let mut counts = BTreeMap::new();
        for m in messages {
            *counts.entry(m.message_type()).or_insert(0) += 1;
        }
        counts
    };
    let after_delete_kinds = kinds(&after_delete);
    assert_eq!(after_delete_kinds.get(&RTM_DELNEXTHOP), Some(&1));
    assert_eq!(after_delete_kinds.get(&RTM_NEWNEXTHOP), Some(&3));
    assert_eq!(kinds(&bucket_news).get(&RTM_NEWNEXTHOPBUCKET), Some(&2));

    println!(
        "verified {} nexthops ({} groups{}), {} raw dump messages re-serialized byte for byte, \
         {matched_before}+{matched_after}+{matched_22} buckets equal to `ip -j nexthop bucket show`, \
         {} buckets in all; after `nexthop del id 2`: {} RTM_DELNEXTHOP, {} RTM_NEWNEXTHOP (groups {:?}), \
         {bucket_notes} bucket notifications, {} route notifications; after reweighting group 22: \
         {} RTM_NEWNEXTHOPBUCKET {:.2} s later (buckets {:?})",
        nexthops.len(),
        nexthops.values().filter(|n| matches!(n.kind, NexthopKind::Group { .. })).count(),
        if wide_weights { ", one with weight 300" } else { "" },
        raw_checked,
        all_buckets.len(),
        deleted.len(),
        updated.len(),
        updated.keys().collect::<Vec<_>>(),
        after_delete
            .iter()
            .filter(|m| matches!(m, RtMessage::Route(_)))
            .count(),
        moved.len(),
        waited.as_secs_f64(),
        moved.iter().map(|b| b.index).collect::<Vec<_>>(),
    );
}
