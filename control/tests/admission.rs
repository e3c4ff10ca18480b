//! Admission: the program routes only frames the kernel would route from their ingress port; a frame to another unicast MAC and a VLAN-tagged frame go to the kernel, which drops them here.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use control::inspect::{build_frame, Flow};
use dataplane::{ifindex_of, pinned_verdict_counters};
use support::{anycast_route, fabric, wait_for_verdict, Daemon, PinDir, IN_MAC};
use testnet::{packet_socket, recv_frame, require_root, send_frame, TestNet};

mod support;

const EGRESS: usize = 2;
const FRAMES: u16 = 16;

/// Sends FRAMES UDP frames to the anycast address on xe-h0 (flows with
/// source ports from `base`), each the frame to xe-in's MAC as `edit`
/// changes it, and counts the flows whose frame left by an egress port. The
/// calling thread must be in the namespace.
fn forwarded(base: u16, edit: impl Fn(&mut Vec<u8>)) -> usize {
    let tx = packet_socket(ifindex_of("xe-h0").expect("xe-h0")).expect("tx");
    let rx: Vec<_> = (0..EGRESS)
        .map(|i| packet_socket(ifindex_of(&format!("xe-p{i}")).expect("sink")).expect("rx"))
        .collect();
    for i in 0..FRAMES {
        let flow = Flow {
            proto: 17,
            src: "10.2.0.100".parse().expect("src"),
            dst: "172.16.255.66".parse().expect("dst"),
            sport: base + i,
            dport: 53,
        };
        let mut frame = build_frame(&flow, IN_MAC).expect("frame");
        edit(&mut frame);
        send_frame(&tx, &frame).expect("send");
    }
    let mut seen = HashSet::new();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline && seen.len() < usize::from(FRAMES) {
        for fd in &rx {
            while let Some(n) = recv_frame(fd, &mut buf) {
                // Untagged IPv4 UDP (a forwarded frame leaves untagged here).
                if n >= 38 && buf[12..14] == [0x08, 0x00] && buf[23] == 17 {
                    let sport = u16::from_be_bytes([buf[34], buf[35]]);
                    if (base..base + FRAMES).contains(&sport) {
                        seen.insert(sport);
                    }
                }
            }
        }
    }
    seen.len()
}

/// Packets the pinned program counted under the verdict `name`.
fn counted(pins: &PinDir, name: &str) -> u64 {
    pinned_verdict_counters(&pins.0)
        .expect("counters")
        .iter()
        .filter(|(v, _)| v.name() == name)
        .map(|(_, c)| c.packets)
        .sum()
}

/// A daemon on xe-in, forwarding the anycast route over two egress ports.
fn setup(tag: &str) -> (TestNet, PinDir, Daemon) {
    let net = fabric(tag, EGRESS);
    anycast_route(&net, &[0, 1]);
    let pins = PinDir::new(tag);
    let d = Daemon::start(&net, &pins, &["-p", "xe-in", "--run-for", "60"], false);
    wait_for_verdict(&net, &pins, "forward", "start");
    (net, pins, d)
}

#[test]
fn a_frame_to_another_mac_is_not_forwarded() {
    if !require_root("a_frame_to_another_mac_is_not_forwarded") {
        return;
    }
    let (net, pins, _daemon) = setup("adm-mac");
    net.enter().expect("enter");
    // Addressed to the port: every flow is forwarded.
    let to_port = forwarded(20_000, |_| {});
    assert_eq!(to_port, usize::from(FRAMES), "frames to xe-in's own MAC");
    // Addressed to another host on the segment (the kernel marks them
    // PACKET_OTHERHOST and drops them): none may be forwarded.
    let before = counted(&pins, "pass-otherhost");
    let other = forwarded(21_000, |f| f[..6].copy_from_slice(&[2, 0, 0, 0, 0x77, 1]));
    let passed = counted(&pins, "pass-otherhost") - before;
    println!("admission: to the port's MAC {to_port}/{FRAMES} forwarded; to another MAC {other}/{FRAMES} forwarded, {passed} passed to the kernel");
    assert_eq!(other, 0, "frames to another MAC left by an egress port");
    assert_eq!(passed, u64::from(FRAMES), "passed as pass-otherhost");
}

#[test]
fn a_vlan_tagged_frame_is_not_forwarded() {
    if !require_root("a_vlan_tagged_frame_is_not_forwarded") {
        return;
    }
    let (net, pins, _daemon) = setup("adm-vlan");
    net.enter().expect("enter");
    // 802.1Q, VLAN 100, after the MACs.
    let tag = |f: &mut Vec<u8>| {
        f.splice(12..12, [0x81, 0x00, 0x00, 100]);
    };
    assert_eq!(forwarded(22_000, |_| {}), usize::from(FRAMES), "untagged");
    // xe-in has no VLAN 100: the kernel drops what is tagged with it.
    let before = counted(&pins, "pass-vlan");
    let no_subif = forwarded(23_000, tag);
    let passed = counted(&pins, "pass-vlan") - before;
    println!("admission: tagged VLAN 100, no subinterface: {no_subif}/{FRAMES} forwarded, {passed} passed to the kernel");
    assert_eq!(
        no_subif, 0,
        "tagged frames without a VLAN device were forwarded"
    );
    assert_eq!(passed, u64::from(FRAMES), "passed as pass-vlan");
    // With a VLAN 100 subinterface its own switches apply: forwarding off
    // there, the kernel forwards nothing that comes in on it either.
    let vlan = Command::new("ip")
        .args([
            "-n",
            net.name(),
            "link",
            "add",
            "link",
            "xe-in",
            "name",
            "xe-in.100",
        ])
        .args(["type", "vlan", "id", "100"])
        .output()
        .expect("ip");
    if !vlan.status.success() {
        // Kernels without 802.1Q devices (CONFIG_VLAN_8021Q) drop every tagged frame.
        println!(
            "admission: no VLAN devices on this kernel ({}): the subinterface step is not run",
            String::from_utf8_lossy(&vlan.stderr).trim()
        );
        return;
    }
    net.ip(&["link", "set", "xe-in.100", "up"]).expect("up");
    let st = Command::new("ip")
        .args(["netns", "exec", net.name(), "sysctl", "-qw"])
        .arg("net.ipv4.conf.xe-in/100.forwarding=0")
        .status()
        .expect("sysctl");
    assert!(st.success());
    let off_subif = forwarded(24_000, tag);
    println!("admission: tagged VLAN 100 on a subinterface with forwarding off: {off_subif}/{FRAMES} forwarded");
    assert_eq!(
        off_subif, 0,
        "tagged frames of a VLAN device with forwarding off were forwarded"
    );
}
