//! Attach/detach/pin on real veth ports, map reuse across loads, atomic program replacement, and live frames to the port's MAC forwarded by XDP_REDIRECT (to another MAC, passed).

mod common;

use std::path::PathBuf;

use libbpf_rs::{MapCore, MapFlags};
use std::process::Command;
use std::time::{Duration, Instant};

use common::mac;
use common::packets::*;
use dataplane::abi::{
    xe_config, xe_inport, xe_nexthop, xe_route, Verdict, GROUP_RESILIENT, INPORT_FWD_V4,
    INPORT_FWD_V6, NH_USABLE, RT_UNICAST,
};
use dataplane::tables::single_path;
use dataplane::{current_cpu, ifindex_of, pin_thread_to_cpu};
use dataplane::{AttachMode, Dataplane, Error, LoadOptions, MapSizes, TableWriter, XdpLink};
use testnet::{packet_socket, recv_frame, require_root, send_frame, TestNet};

/// A bpffs directory with the project prefix, removed on drop.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn xdp_shown(net: &TestNet, dev: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", net.name(), "-d", "link", "show", dev])
        .output()
        .expect("ip link show");
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("xdpgeneric") {
        "generic".into()
    } else if text.contains("prog/xdp") {
        "native".into()
    } else {
        "none".into()
    }
}

/// A route to 172.16.255.66 out of `out_if`, and `in_if` admitted as a port
/// with MAC IN_MAC forwarding both families.
fn world(dp: &mut Dataplane, in_if: u32, out_if: u32, dmac: [u8; 6], smac: [u8; 6]) {
    dp.set_inport(
        in_if,
        &xe_inport {
            mac: common::IN_MAC,
            flags: INPORT_FWD_V4 | INPORT_FWD_V6,
            ..Default::default()
        },
    )
    .expect("inport");
    let nh = xe_nexthop {
        ifindex: out_if,
        mtu: 1500,
        dmac,
        smac,
        state: NH_USABLE,
        ..Default::default()
    };
    single_path(
        dp,
        "172.16.255.66".parse().expect("addr"),
        &nh,
        GROUP_RESILIENT,
        8,
    )
    .expect("world");
    // IPv6 routes to the same group, at three lengths, so the length search
    // holds markers as well as routes.
    let route = dp.routes_v4().expect("routes")[0].2;
    for (a, l) in [
        ("2001:db8:66::", 64),
        ("2001:db8:66:0:1::", 80),
        ("2001:db8:77::", 48),
        ("2001:db8:88::1", 128),
    ] {
        dp.set_route_v6(a.parse().expect("v6"), l, &route)
            .expect("IPv6 route");
    }
    dp.set_config(&xe_config {
        seed: [1, 2],
        ..Default::default()
    })
    .expect("config");
}

#[test]
fn attach_pin_reuse_replace_detach() {
    if !require_root("attach_pin_reuse_replace_detach") {
        return;
    }
    let net = TestNet::new("attach", &[("xe-p0", "xe-r0"), ("xe-p1", "xe-r1")]).expect("namespace");
    net.enter().expect("enter");
    let pins = PinDir(PathBuf::from(format!(
        "/sys/fs/bpf/xe-t{}-attach",
        std::process::id()
    )));
    let p0 = ifindex_of("xe-p0").expect("xe-p0");
    let p1 = ifindex_of("xe-p1").expect("xe-p1");

    // Unknown interfaces and ifindexes give errors that name them.
    let e = ifindex_of("xe-nosuch").expect_err("no such interface");
    assert!(e.to_string().contains("xe-nosuch"), "{e}");

    let opts = LoadOptions {
        pin_dir: Some(pins.0.clone()),
        // A small IPv6 slot table, to clear by hand below.
        sizes: Some(MapSizes {
            routes_v6: 1024,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut first = Dataplane::load(&opts).expect("load");
    // The loopback (ifindex 1): what test runs without an ingress device
    // are received on.
    world(&mut first, 1, p1, mac(0x21), mac(0x22));
    let e = first
        .attach(999_999, AttachMode::Auto)
        .expect_err("bad ifindex");
    assert!(
        matches!(
            e,
            Error::Attach {
                ifindex: 999_999,
                ..
            }
        ),
        "{e}"
    );

    let link = first.attach(p0, AttachMode::Auto).expect("attach");
    assert_eq!(link.mode, "native", "veth supports native XDP");
    assert_eq!(xdp_shown(&net, "xe-p0"), "native");
    let link_pin = pins.0.join("link_xe-p0");
    link.pin(&link_pin).expect("pin link");
    let generic = first
        .attach(p1, AttachMode::Generic)
        .expect("generic attach");
    assert_eq!(xdp_shown(&net, "xe-p1"), "generic");
    generic.detach().expect("detach generic");
    assert_eq!(xdp_shown(&net, "xe-p1"), "none");

    // The process lets go of everything; the pinned link keeps forwarding.
    drop(link);
    drop(first);
    assert_eq!(
        xdp_shown(&net, "xe-p0"),
        "native",
        "pinned link outlives its loader"
    );
    for map in [
        "xe_routes_v4",
        "xe_inports",
        "xe_groups",
        "xe_slots",
        "xe_nexthops",
        "xe_config",
        "xe_verdicts",
    ] {
        assert!(pins.0.join(map).exists(), "map {map} pinned");
    }

    // A new load adopts the pinned maps: the first instance's routes are there.
    let second = Dataplane::load(&LoadOptions {
        trace_decisions: true,
        pin_dir: Some(pins.0.clone()),
        ..Default::default()
    })
    .expect("reload");
    let cpu = current_cpu();
    pin_thread_to_cpu(cpu).expect("pin thread");
    let pkt = eth(
        common::IN_MAC,
        &[],
        ETH_IP,
        &Ip4::new("10.2.0.100", "172.16.255.66", 17).packet(&udp(1, 53, b"")),
    );
    let mut out = vec![0u8; 256];
    second.test_run(&pkt, &mut out).expect("test run");
    let d = second.last_decision(cpu).expect("trace");
    assert_eq!(
        Verdict::from_u32(d.verdict),
        Some(Verdict::Forward),
        "maps adopted from bpffs"
    );
    assert_eq!(d.ifindex, p1);

    // Writing a route takes over the pinned DIR-24-8 tables: the first
    // instance's route still forwards next to the new ones (a /32 in the same
    // /24, and a /16 around it), and deleting them gives the /32 back its own.
    let mut second = second;
    assert_eq!(
        second
            .adopt_lookup_tables()
            .expect("adopt lookup tables")
            .total(),
        0,
        "the first instance's tables agree with its routes"
    );
    let route = xe_route {
        group: 1,
        kind: RT_UNICAST,
        ..Default::default()
    };
    second
        .set_route_v4("172.16.255.67".parse().expect("v4"), 32, &route)
        .expect("route after adoption");
    second
        .set_route_v4("172.16.0.0".parse().expect("v4"), 16, &route)
        .expect("covering route");
    let verdict_to = |dp: &Dataplane, dst: &str| {
        let pkt = eth(
            common::IN_MAC,
            &[],
            ETH_IP,
            &Ip4::new("10.2.0.100", dst, 17).packet(&udp(1, 53, b"")),
        );
        let mut out = vec![0u8; 256];
        dp.test_run(&pkt, &mut out).expect("test run");
        Verdict::from_u32(dp.last_decision(cpu).expect("trace").verdict)
    };
    for dst in ["172.16.255.66", "172.16.255.67", "172.16.1.1"] {
        assert_eq!(verdict_to(&second, dst), Some(Verdict::Forward), "{dst}");
    }
    second
        .delete_route_v4("172.16.0.0".parse().expect("v4"), 16)
        .expect("delete");
    second
        .delete_route_v4("172.16.255.67".parse().expect("v4"), 32)
        .expect("delete");
    assert_eq!(verdict_to(&second, "172.16.255.66"), Some(Verdict::Forward));
    for dst in ["172.16.255.67", "172.16.1.1"] {
        assert_eq!(
            verdict_to(&second, dst),
            Some(Verdict::PassNoRoute),
            "{dst}"
        );
    }

    // The IPv6 search, emptied as a build that wrote only the trie leaves
    // it, is found by the check and rebuilt from the trie by the next load.
    let verdict6 = |dp: &Dataplane| {
        let pkt = eth(
            common::IN_MAC,
            &[],
            ETH_IPV6,
            &ip6(
                v6("2001:db8:1::1"),
                v6("2001:db8:66::5"),
                64,
                17,
                0,
                &udp(1, 53, b""),
            ),
        );
        let mut out = vec![0u8; 256];
        dp.test_run(&pkt, &mut out).expect("test run");
        Verdict::from_u32(dp.last_decision(cpu).expect("trace").verdict)
    };
    assert_eq!(verdict6(&second), Some(Verdict::Forward));
    assert!(second.v6_differences().expect("check").is_empty());
    let search = libbpf_rs::MapHandle::from_pinned_path(pins.0.join("xe_v6_slots"))
        .expect("pinned IPv6 search");
    let mut cleared = 0;
    for i in 0..search.max_entries() {
        let key = i.to_ne_bytes();
        let v = search
            .lookup(&key, MapFlags::ANY)
            .expect("lookup")
            .expect("an array slot");
        if v[..4] != [0; 4] {
            search
                .update(&key, &vec![0u8; v.len()], MapFlags::ANY)
                .expect("clear a slot");
            cleared += 1;
        }
    }
    // Searched lengths 48, 64, 80, 128 put /80 at the top: the /128 needs a
    // marker there.
    assert_eq!(cleared, 5, "the world's 4 IPv6 routes and 1 marker");
    assert_eq!(
        verdict6(&second),
        Some(Verdict::PassNoRoute),
        "an empty search finds no route: the kernel decides"
    );
    let diffs = second.v6_differences().expect("check");
    assert_eq!(diffs.entries.len(), cleared, "{diffs:?}");
    let mut third = Dataplane::load(&LoadOptions {
        trace_decisions: true,
        pin_dir: Some(pins.0.clone()),
        ..Default::default()
    })
    .expect("third load");
    assert_eq!(
        third.adopt_lookup_tables().expect("adopt").v6_entries,
        cleared,
        "every entry rewritten"
    );
    assert!(third.v6_differences().expect("check").is_empty());
    assert_eq!(verdict6(&third), Some(Verdict::Forward));
    drop(third);

    // Replace the program behind the pinned link in one step, then detach.
    let pinned = XdpLink::open_pinned(&link_pin, p0).expect("open pinned link");
    pinned.update_program(&second).expect("atomic replace");
    assert_eq!(xdp_shown(&net, "xe-p0"), "native");
    std::fs::remove_file(&link_pin).expect("unpin link");
    pinned.detach().expect("detach");
    assert_eq!(xdp_shown(&net, "xe-p0"), "none");
    println!("attach: native and generic attach, link pin, map reuse, link update and detach all checked");
}

/// `ethtool -K PORT gro STATE` in the namespace.
fn gro(net: &TestNet, port: &str, state: &str) {
    let st = Command::new("ip")
        .args([
            "netns",
            "exec",
            net.name(),
            "ethtool",
            "-K",
            port,
            "gro",
            state,
        ])
        .status()
        .expect("ethtool (scripts/setup.sh installs it)");
    assert!(st.success(), "ethtool -K {port} gro {state}");
}

#[test]
fn live_frame_is_redirected_out_the_egress_port() {
    if !require_root("live_frame_is_redirected_out_the_egress_port") {
        return;
    }
    let net = TestNet::new("live", &[("xe-p0", "xe-r0"), ("xe-p1", "xe-r1")]).expect("namespace");
    net.enter().expect("enter");
    // A veth peer without XDP accepts redirected frames only with GRO on.
    gro(&net, "xe-r1", "on");
    let (p0, p1, r0, r1) = (
        ifindex_of("xe-p0").expect("if"),
        ifindex_of("xe-p1").expect("if"),
        ifindex_of("xe-r0").expect("if"),
        ifindex_of("xe-r1").expect("if"),
    );
    net.ip(&[
        "link",
        "set",
        "xe-p0",
        "address",
        "02:00:00:00:aa:01", // common::IN_MAC
    ])
    .expect("MAC");
    let mut dp = Dataplane::load(&LoadOptions::default()).expect("load");
    let (dmac, smac) = (mac(0x31), mac(0x32));
    world(&mut dp, p0, p1, dmac, smac);
    let _link = dp.attach(p0, AttachMode::Native).expect("attach");
    let _counting = dp
        .attach_tx_failure_counter()
        .expect("the redirect-failure tracepoint");

    let rx = packet_socket(r1).expect("rx socket");
    let tx = packet_socket(r0).expect("tx socket");
    let pkt = eth(
        common::IN_MAC,
        &[],
        ETH_IP,
        &Ip4::new("10.2.0.100", "172.16.255.66", 17).packet(&udp(4242, 53, b"live")),
    );
    let want = forwarded(&pkt, 14, dmac, smac, 0);
    const FRAMES: usize = 20;
    for _ in 0..FRAMES {
        send_frame(&tx, &pkt).expect("send");
    }
    // To another host's MAC: the kernel's (PACKET_OTHERHOST), never forwarded.
    let mut other = pkt.clone();
    other[..6].copy_from_slice(&mac(0x77));
    for _ in 0..5 {
        send_frame(&tx, &other).expect("send");
    }
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 2048];
    while got < FRAMES && Instant::now() < deadline {
        if recv_frame(&rx, &mut buf).is_some_and(|n| buf[..n] == want[..]) {
            got += 1;
        }
    }
    // Anything else that arrives in the next 200 ms (a forwarded frame to
    // the other MAC would).
    let mut extra = 0;
    let until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < until {
        if recv_frame(&rx, &mut buf).is_some_and(|n| n > 14 && buf[..6] == dmac) {
            extra += 1;
        }
    }
    let counters = dp.verdict_counters().expect("counters");
    let counter = |v: Verdict| {
        counters
            .iter()
            .find(|(c, _)| *c == v)
            .map(|(_, c)| *c)
            .expect("counter")
    };
    let fwd = counter(Verdict::Forward);
    let otherhost = counter(Verdict::PassOtherhost);
    let per_nh = dp.nexthop_counter(1).expect("next-hop counter");
    println!("live: {FRAMES} frames sent into xe-p0, {got} arrived rewritten on xe-r1; forward counter {} packets / {} bytes", fwd.packets, fwd.bytes);
    assert_eq!(
        got, FRAMES,
        "every frame arrives, rewritten, on the egress peer"
    );
    assert_eq!(fwd.packets, FRAMES as u64);
    assert_eq!(fwd.bytes, (FRAMES * pkt.len()) as u64);
    assert_eq!(per_nh.packets, FRAMES as u64);
    assert_eq!(extra, 0, "frames to another MAC left by the egress port");
    assert_eq!(otherhost.packets, 5, "frames to another MAC passed");
    assert_eq!(dp.tx_failures().expect("failures"), 0);

    // The peer loses GRO behind the maps' back (no control plane here):
    // xe-p1 no longer transmits redirected frames, and the kernel refuses
    // them. They are counted as failures, not as forwarded.
    gro(&net, "xe-r1", "off");
    const REFUSED: usize = 7;
    for _ in 0..REFUSED {
        send_frame(&tx, &pkt).expect("send");
    }
    let until = Instant::now() + Duration::from_millis(300);
    let mut arrived = 0;
    while Instant::now() < until {
        if recv_frame(&rx, &mut buf).is_some_and(|n| buf[..n] == want[..]) {
            arrived += 1;
        }
    }
    let failed = dp.tx_failures().expect("failures");
    let counters = dp.verdict_counters().expect("counters");
    let fwd = counters
        .iter()
        .find(|(c, _)| *c == Verdict::Forward)
        .map(|(_, c)| *c)
        .expect("counter");
    println!("live: {REFUSED} frames redirected to xe-p1 after its peer lost GRO: {arrived} arrived, {failed} counted as refused, forward {} packets", fwd.packets);
    assert_eq!(arrived, 0, "the kernel drops what it cannot send");
    assert_eq!(failed, REFUSED as u64, "each refused frame is counted");
    assert_eq!(fwd.packets, FRAMES as u64, "and none as forwarded");
}

#[test]
fn pins_of_another_layout_are_refused_not_read() {
    if !require_root("pins_of_another_layout_are_refused_not_read") {
        return;
    }
    let pins = PinDir(PathBuf::from(format!(
        "/sys/fs/bpf/xe-t{}-layout",
        std::process::id()
    )));
    let opts = LoadOptions {
        pin_dir: Some(pins.0.clone()),
        ..Default::default()
    };
    drop(Dataplane::load(&opts).expect("fresh pins"));
    drop(Dataplane::load(&opts).expect("pins of this layout are adopted"));

    // Pins that say another version.
    let layout =
        libbpf_rs::MapHandle::from_pinned_path(pins.0.join("xe_layout")).expect("xe_layout pin");
    layout
        .update(
            &0u32.to_ne_bytes(),
            &1u32.to_ne_bytes(),
            libbpf_rs::MapFlags::ANY,
        )
        .expect("write version 1");
    let e = Dataplane::load(&opts)
        .err()
        .expect("version 1 refused")
        .to_string();
    println!("{e}");
    assert!(
        e.contains("layout version 1")
            && e.contains(&format!(
                "layout version {}",
                dataplane::abi::LAYOUT_VERSION
            ))
            && e.contains("detach"),
        "{e}"
    );
    // Pins of a build before versioning (no xe_layout at all).
    std::fs::remove_file(pins.0.join("xe_layout")).expect("unpin");
    let e = Dataplane::load(&opts)
        .err()
        .expect("unversioned refused")
        .to_string();
    assert!(e.contains("older build"), "{e}");
}
