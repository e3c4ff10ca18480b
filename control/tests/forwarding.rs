//! The kernel's forwarding switches, port by port: with IPv4 forwarding off on one ingress port only that port's frames go to the kernel while another port still forwards; IPv6 follows `all.forwarding` and a port's `force_forwarding`.

use std::process::Command;

use support::{
    add_ingress, anycast_route, anycast_verdict_on, fabric, mac_str, text, wait_for_verdict_on,
    xdp_ecmp, Daemon, PinDir,
};
use testnet::{require_root, TestNet};

mod support;

/// The second ingress port's MAC.
const IN1_MAC: [u8; 6] = [2, 0, 0, 0, 0xaa, 2];

fn sysctl(net: &TestNet, setting: &str) {
    let st = Command::new("ip")
        .args(["netns", "exec", net.name(), "sysctl", "-qw", setting])
        .status()
        .expect("sysctl");
    assert!(st.success(), "{setting}");
}

/// A namespace with two ingress ports (xe-in, xe-in1), the anycast route
/// over two egress ports, and the daemon attached to both ingress ports.
fn two_ports(tag: &str) -> (TestNet, PinDir, Daemon) {
    let net = fabric(tag, 2);
    add_ingress(&net, "xe-h1", "xe-in1", IN1_MAC);
    anycast_route(&net, &[0, 1]);
    let pins = PinDir::new(tag);
    let d = Daemon::start(
        &net,
        &pins,
        &["-p", "xe-in", "-p", "xe-in1", "--run-for", "60"],
        true,
    );
    (net, pins, d)
}

/// Waits (5 s at most) until the anycast flow received on `in_port` is no
/// longer forwarded; returns its verdict then.
fn wait_for_change(net: &TestNet, pins: &PinDir, in_port: Option<&str>, what: &str) -> String {
    let t0 = std::time::Instant::now();
    loop {
        let got = anycast_verdict_on(net, pins, in_port);
        if got != "forward" {
            println!("{what}: {got} after {:?}", t0.elapsed());
            return got;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "{what}: still forwarded"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn forwarding_off_on_one_port_passes_only_its_frames() {
    if !require_root("forwarding_off_on_one_port_passes_only_its_frames") {
        return;
    }
    let (net, pins, d) = two_ports("fwd");
    let (a, b) = (Some("xe-in"), Some("xe-in1"));
    wait_for_verdict_on(&net, &pins, a, "forward", "start, xe-in");
    wait_for_verdict_on(&net, &pins, b, "forward", "start, xe-in1");
    // Off on xe-in only: the kernel would not forward what comes in there,
    // and still forwards what comes in on xe-in1.
    sysctl(&net, "net.ipv4.conf.xe-in.forwarding=0");
    let on_a = wait_for_change(&net, &pins, a, "xe-in forwarding=0");
    assert_eq!(
        anycast_verdict_on(&net, &pins, b),
        "forward",
        "xe-in1 keeps forwarding while xe-in's forwarding is off"
    );
    assert_eq!(on_a, "pass-no-forwarding");
    sysctl(&net, "net.ipv4.conf.xe-in.forwarding=1");
    wait_for_verdict_on(&net, &pins, a, "forward", "xe-in forwarding=1");
    // ip_forward sets every port's switch.
    sysctl(&net, "net.ipv4.ip_forward=0");
    wait_for_verdict_on(&net, &pins, a, "pass-no-forwarding", "ip_forward=0, xe-in");
    wait_for_verdict_on(&net, &pins, b, "pass-no-forwarding", "ip_forward=0, xe-in1");
    sysctl(&net, "net.ipv4.ip_forward=1");
    wait_for_verdict_on(&net, &pins, a, "forward", "ip_forward=1, xe-in");
    wait_for_verdict_on(&net, &pins, b, "forward", "ip_forward=1, xe-in1");
    let log = d.stop();
    assert!(log.contains("IPv4 forwarding is off"), "{log}");
    let o = xdp_ecmp(&net, &pins, &["detach", "xe-in", "xe-in1"]);
    assert!(o.status.success(), "{}", text(&o));
}

/// IPv6 forwarding of each port as `show ports --json` lists it.
fn v6_switches(net: &TestNet, pins: &PinDir) -> Vec<(String, bool)> {
    let o = xdp_ecmp(net, pins, &["show", "ports", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v.as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        r["dev"].as_str().unwrap_or("-").to_string(),
                        r["ipv6_forwarding"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What the program does with an IPv6 UDP flow received on `port`.
fn v6_verdict(net: &TestNet, pins: &PinDir, port: &str) -> String {
    let o = xdp_ecmp(
        net,
        pins,
        &[
            "calc",
            "-p",
            "udp",
            "-s",
            "2001:db8:ff::100",
            "--sport",
            "4000",
            "-d",
            "2001:db8:66::1",
            "--dport",
            "53",
            "-i",
            port,
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v["verdict"].as_str().unwrap_or("-").to_string()
}

/// Waits (5 s at most) until IPv6 flows received on xe-in and xe-in1 get
/// `want` (the program's verdicts) and `show ports` lists the switches so.
fn wait_v6(net: &TestNet, pins: &PinDir, want: [&str; 2], what: &str) {
    let t0 = std::time::Instant::now();
    loop {
        let got = [
            v6_verdict(net, pins, "xe-in"),
            v6_verdict(net, pins, "xe-in1"),
        ];
        let listed = v6_switches(net, pins);
        let listed_ok = ["xe-in", "xe-in1"].iter().zip(want).all(|(p, w)| {
            listed
                .iter()
                .any(|(d, on)| d == p && *on == (w == "forward"))
        });
        if got == want && listed_ok {
            println!("{what}: {want:?} after {:?}", t0.elapsed());
            return;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "{what}: {got:?} (show ports: {listed:?}), want {want:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn ipv6_forwarding_follows_all_and_force_forwarding() {
    if !require_root("ipv6_forwarding_follows_all_and_force_forwarding") {
        return;
    }
    let (net, pins, _d) = two_ports("fwd6");
    // An IPv6 route over xe-o0 to a resolved neighbour.
    net.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:1::1/64",
        "dev",
        "xe-o0",
        "nodad",
    ])
    .expect("addr");
    net.ip(&[
        "-6",
        "neigh",
        "replace",
        "2001:db8:1::2",
        "lladdr",
        &mac_str([2, 0, 0, 0x10, 0, 0x66]),
        "dev",
        "xe-o0",
        "nud",
        "permanent",
    ])
    .expect("neigh");
    net.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:66::/64",
        "via",
        "2001:db8:1::2",
    ])
    .expect("route");
    let (fwd, pass) = ("forward", "pass-no-forwarding");
    wait_v6(&net, &pins, [fwd, fwd], "start");
    // The kernel forwards IPv6 by the global switch (ip6_forward), not by a
    // port's own `forwarding`.
    sysctl(&net, "net.ipv6.conf.xe-in.forwarding=0");
    wait_v6(&net, &pins, [fwd, fwd], "xe-in's own forwarding=0");
    sysctl(&net, "net.ipv6.conf.all.forwarding=0");
    wait_v6(&net, &pins, [pass, pass], "all.forwarding=0");
    // Kernels with per-port force_forwarding (6.17 on) forward from that
    // port even with the global switch off.
    if std::path::Path::new("/proc/sys/net/ipv6/conf/all/force_forwarding").exists() {
        sysctl(&net, "net.ipv6.conf.xe-in1.force_forwarding=1");
        wait_v6(&net, &pins, [pass, fwd], "xe-in1 force_forwarding=1");
    } else {
        println!("this kernel has no force_forwarding: that step is not run");
    }
    sysctl(&net, "net.ipv6.conf.all.forwarding=1");
    wait_v6(&net, &pins, [fwd, fwd], "all.forwarding=1");
}
