//! The mirror stays faithful where the kernel changes state without a message (routes flushed on link down or with the last address, nexthop objects removed with their link) and where it keys routes its own way (IPv6 hop-by-hop deletes, IPv4 append, TOS); each step is checked against the kernel's own `ip route get`.

use std::process::Command;
use std::time::{Duration, Instant};

use dataplane::testnet::{require_root, TestNet};
use support::{fabric, mac_str, neighbour_mac, text, xdp_ecmp, Daemon, PinDir};

mod support;

/// The program's verdict and egress port for a UDP flow to `dst` (asked with calc).
fn verdict(net: &TestNet, pins: &PinDir, dst: &str) -> (String, String) {
    let src = if dst.contains(':') {
        "2001:db8:ff::100"
    } else {
        "10.2.0.100"
    };
    let o = xdp_ecmp(
        net,
        pins,
        &[
            "calc", "-p", "udp", "-s", src, "--sport", "4000", "-d", dst, "--dport", "53", "--json",
        ],
    );
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("calc answered: {}", text(&o)));
    (
        v["verdict"].as_str().unwrap_or("-").to_string(),
        v["egress"].as_str().unwrap_or("-").to_string(),
    )
}

/// `ip route get DST` (the output path: what the kernel's table says).
fn kernel(net: &TestNet, dst: &str) -> String {
    let o = Command::new("ip")
        .args(["-n", net.name(), "route", "get", dst])
        .output()
        .expect("ip route get");
    text(&o).trim().to_string()
}

/// Waits (5 s at most) until `ok(verdict, egress)` holds for `dst`.
fn wait_for(net: &TestNet, pins: &PinDir, dst: &str, what: &str, ok: impl Fn(&str, &str) -> bool) {
    let t0 = Instant::now();
    loop {
        let (v, e) = verdict(net, pins, dst);
        if ok(&v, &e) {
            println!("{what}: {v} {e} after {:?}", t0.elapsed());
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{what}: still {v} via {e}; the kernel says: {}",
            kernel(net, dst)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn not_forwarded(v: &str, _: &str) -> bool {
    v != "forward"
}

/// The daemon with anti-entropy every half second: it must never repair.
fn daemon(net: &TestNet, pins: &PinDir) -> Daemon {
    Daemon::start(
        net,
        pins,
        &["-p", "xe-in", "--anti-entropy", "0.5", "--run-for", "60"],
        true,
    )
}

fn no_repairs(log: &str) {
    assert!(
        !log.contains("anti-entropy repaired"),
        "anti-entropy found missed changes:\n{log}"
    );
}

#[test]
fn routes_the_kernel_flushes_without_a_message_leave_the_maps() {
    if !require_root("routes_the_kernel_flushes_without_a_message_leave_the_maps") {
        return;
    }
    let net = fabric("flush", 3);
    // Single-path routes through xe-o0 and xe-o1, and a nexthop object on xe-o2.
    net.ip(&["route", "add", "172.16.1.1/32", "via", "10.0.0.2"])
        .expect("route");
    net.ip(&["route", "add", "172.16.1.2/32", "via", "10.0.1.2"])
        .expect("route");
    net.ip(&[
        "nexthop", "add", "id", "12", "via", "10.0.2.2", "dev", "xe-o2",
    ])
    .expect("nexthop");
    net.ip(&["route", "add", "172.16.1.3/32", "nhid", "12"])
        .expect("route");
    let pins = PinDir::new("flush");
    let d = daemon(&net, &pins);
    for (dst, port) in [
        ("172.16.1.1", "xe-o0"),
        ("172.16.1.2", "xe-o1"),
        ("172.16.1.3", "xe-o2"),
    ] {
        wait_for(&net, &pins, dst, "start", |v, e| {
            v == "forward" && e == port
        });
    }

    // Admin down and up: the kernel flushed the route on the way down.
    net.ip(&["link", "set", "xe-o0", "down"]).expect("down");
    wait_for(&net, &pins, "172.16.1.1", "xe-o0 down", not_forwarded);
    net.ip(&["link", "set", "xe-o0", "up"]).expect("up");
    support::set_neighbour(&net, 0, 0);
    assert!(
        !kernel(&net, "172.16.1.1").contains("via 10.0.0.2"),
        "the kernel flushed the route: {}",
        kernel(&net, "172.16.1.1")
    );
    std::thread::sleep(Duration::from_millis(500));
    wait_for(&net, &pins, "172.16.1.1", "xe-o0 up again", |v, _| {
        v == "pass-no-route"
    });

    // The last IPv4 address of xe-o1 goes: its routes go with it, the link stays up.
    net.ip(&["addr", "flush", "dev", "xe-o1"]).expect("flush");
    wait_for(&net, &pins, "172.16.1.2", "address gone", |v, _| {
        v == "pass-no-route"
    });
    net.ip(&["addr", "add", "10.0.1.1/24", "dev", "xe-o1"])
        .expect("addr");
    support::set_neighbour(&net, 1, 0);
    std::thread::sleep(Duration::from_millis(500));
    wait_for(&net, &pins, "172.16.1.2", "address back", |v, _| {
        v == "pass-no-route"
    });

    // A nexthop object on a link that goes down is removed silently, and
    // the route using it with it.
    net.ip(&["link", "set", "xe-o2", "down"]).expect("down");
    net.ip(&["link", "set", "xe-o2", "up"]).expect("up");
    support::set_neighbour(&net, 2, 0);
    let o = Command::new("ip")
        .args(["-n", net.name(), "nexthop", "show", "id", "12"])
        .output()
        .expect("ip nexthop");
    assert!(
        !o.status.success(),
        "the kernel removed nexthop 12: {}",
        text(&o)
    );
    std::thread::sleep(Duration::from_millis(500));
    wait_for(&net, &pins, "172.16.1.3", "nexthop gone", |v, _| {
        v == "pass-no-route"
    });
    // A route with an MTU of its own: the kernel checks packets against it.
    net.ip(&[
        "route",
        "replace",
        "172.16.3.0/24",
        "via",
        "10.0.0.2",
        "mtu",
        "1300",
    ])
    .expect("mtu route");
    wait_for(&net, &pins, "172.16.3.5", "route mtu 1300", not_forwarded);
    net.ip(&["route", "replace", "172.16.3.0/24", "via", "10.0.0.2"])
        .expect("plain route");
    wait_for(&net, &pins, "172.16.3.5", "route mtu gone", |v, _| {
        v == "forward"
    });

    // A policy routing rule may send the lookup to another table.
    net.ip(&[
        "rule",
        "add",
        "pref",
        "100",
        "from",
        "10.2.0.0/16",
        "lookup",
        "100",
    ])
    .expect("rule");
    net.ip(&[
        "route",
        "add",
        "172.16.3.0/24",
        "via",
        "10.0.1.2",
        "table",
        "100",
    ])
    .expect("route in table 100");
    assert!(kernel_from(&net, "172.16.3.5", "10.2.0.100").contains("dev xe-o1"));
    wait_for(&net, &pins, "172.16.3.5", "rule", not_forwarded);
    net.ip(&["rule", "del", "pref", "100"]).expect("rule del");
    wait_for(&net, &pins, "172.16.3.5", "rule gone", |v, e| {
        v == "forward" && e == "xe-o0"
    });
    let log = d.stop();
    no_repairs(&log);
    assert!(log.contains("a policy routing rule is in place"), "{log}");
    xdp_ecmp(&net, &pins, &["detach", "xe-in"]);
}

/// `ip route get DST from SRC iif xe-in`: the kernel's input path for the flow.
fn kernel_from(net: &TestNet, dst: &str, src: &str) -> String {
    let o = Command::new("ip")
        .args([
            "-n",
            net.name(),
            "route",
            "get",
            dst,
            "from",
            src,
            "iif",
            "xe-in",
        ])
        .output()
        .expect("ip route get");
    text(&o).trim().to_string()
}

#[test]
fn routes_are_keyed_as_the_kernel_keys_them() {
    if !require_root("routes_are_keyed_as_the_kernel_keys_them") {
        return;
    }
    let net = fabric("keyed", 2);
    for i in 0..2 {
        let dev = format!("xe-o{i}");
        net.ip(&[
            "-6",
            "addr",
            "add",
            &format!("2001:db8:{i}::1/64"),
            "dev",
            &dev,
            "nodad",
        ])
        .expect("addr");
        net.ip(&[
            "-6",
            "neigh",
            "replace",
            &format!("2001:db8:{i}::2"),
            "lladdr",
            &mac_str(neighbour_mac(i, 0)),
            "dev",
            &dev,
            "nud",
            "permanent",
        ])
        .expect("neigh");
    }
    net.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:99::/64",
        "nexthop",
        "via",
        "2001:db8:0::2",
        "dev",
        "xe-o0",
        "nexthop",
        "via",
        "2001:db8:1::2",
        "dev",
        "xe-o1",
    ])
    .expect("route");
    net.ip(&["route", "add", "172.16.2.0/24", "via", "10.0.0.2"])
        .expect("route");
    net.ip(&["route", "add", "172.16.3.0/24", "via", "10.0.0.2"])
        .expect("route");
    let pins = PinDir::new("keyed");
    let d = daemon(&net, &pins);
    wait_for(&net, &pins, "2001:db8:99::5", "start", |v, _| {
        v == "forward"
    });

    // One IPv6 hop deleted: the kernel keeps the other.
    net.ip(&[
        "-6",
        "route",
        "del",
        "2001:db8:99::/64",
        "via",
        "2001:db8:1::2",
        "dev",
        "xe-o1",
    ])
    .expect("del one hop");
    std::thread::sleep(Duration::from_millis(300));
    assert!(kernel(&net, "2001:db8:99::5").contains("dev xe-o0"));
    wait_for(&net, &pins, "2001:db8:99::5", "one hop deleted", |v, e| {
        v == "forward" && e == "xe-o0"
    });

    // An appended IPv4 route: the kernel keeps using the first.
    net.ip(&["route", "append", "172.16.2.0/24", "via", "10.0.1.2"])
        .expect("append");
    std::thread::sleep(Duration::from_millis(300));
    assert!(kernel(&net, "172.16.2.5").contains("dev xe-o0"));
    wait_for(&net, &pins, "172.16.2.5", "appended", |v, e| {
        v == "forward" && e == "xe-o0"
    });
    net.ip(&["route", "del", "172.16.2.0/24", "via", "10.0.0.2"])
        .expect("del the first");
    assert!(kernel(&net, "172.16.2.5").contains("dev xe-o1"));
    wait_for(&net, &pins, "172.16.2.5", "first deleted", |v, e| {
        v == "forward" && e == "xe-o1"
    });

    // A TOS route beside the plain one: the kernel chooses by TOS, the
    // program cannot, so the prefix is the kernel's; deleting it gives the
    // plain route back.
    net.ip(&[
        "route",
        "add",
        "172.16.3.0/24",
        "tos",
        "0x10",
        "via",
        "10.0.1.2",
    ])
    .expect("tos route");
    wait_for(&net, &pins, "172.16.3.5", "tos route", not_forwarded);
    net.ip(&[
        "route",
        "del",
        "172.16.3.0/24",
        "tos",
        "0x10",
        "via",
        "10.0.1.2",
    ])
    .expect("del tos route");
    wait_for(&net, &pins, "172.16.3.5", "tos route gone", |v, e| {
        v == "forward" && e == "xe-o0"
    });
    let log = d.stop();
    no_repairs(&log);
    xdp_ecmp(&net, &pins, &["detach", "xe-in"]);
}
