//! The mirror stays faithful where the kernel changes state without a message (routes flushed on link down or with the last address, nexthop objects removed with their link) and where it keys routes its own way (IPv6 hop-by-hop deletes, IPv4 append, TOS, route MTU, policy rules); one test per point, each checked against the kernel's own `ip route get`.

use std::process::Command;
use std::time::{Duration, Instant};

use support::{fabric, gro, mac_str, neighbour_mac, text, xdp_ecmp, Daemon, PinDir};
use testnet::{require_root, TestNet};

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

/// Stops the daemon: it must never have repaired anything.
fn finish(net: &TestNet, pins: &PinDir, d: Daemon) -> String {
    let log = d.stop();
    assert!(
        !log.contains("anti-entropy repaired"),
        "anti-entropy found missed changes:\n{log}"
    );
    xdp_ecmp(net, pins, &["detach", "xe-in"]);
    log
}

/// Ports with IPv6 addresses and permanent IPv6 neighbours 2001:db8:i::2 too.
fn with_ipv6(net: &TestNet, ports: usize) {
    for i in 0..ports {
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
}

/// `ip -6 route add 2001:db8:99::/64 metric METRIC` through 2001:db8:0::2
/// (xe-o0) and 2001:db8:1::2 (xe-o1).
fn v6_pair_route(net: &TestNet, metric: &str) {
    net.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:99::/64",
        "metric",
        metric,
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
}

/// Two IPv6 ports, 2001:db8:99::/64 through both (`v6_pair_route`) and the
/// daemon forwarding it.
fn v6_world(tag: &str, metric: &str) -> (TestNet, PinDir, Daemon) {
    let net = fabric(tag, 2);
    with_ipv6(&net, 2);
    v6_pair_route(&net, metric);
    let pins = PinDir::new(tag);
    let d = daemon(&net, &pins);
    wait_for(&net, &pins, "2001:db8:99::5", "start", |v, _| {
        v == "forward"
    });
    (net, pins, d)
}

/// Deletes the hop of 2001:db8:99::/64 through xe-o`i`.
fn v6_del_hop(net: &TestNet, i: usize, what: &str) {
    let (gw, dev) = (format!("2001:db8:{i}::2"), format!("xe-o{i}"));
    net.ip(&[
        "-6",
        "route",
        "del",
        "2001:db8:99::/64",
        "via",
        &gw,
        "dev",
        &dev,
    ])
    .expect(what);
}

/// `ip -6 route show 2001:db8:99::/64`.
fn v6_shown(net: &TestNet) -> String {
    let o = Command::new("ip")
        .args(["-n", net.name(), "-6", "route", "show", "2001:db8:99::/64"])
        .output()
        .expect("ip route show");
    text(&o)
}

fn forwards_via(port: &'static str) -> impl Fn(&str, &str) -> bool {
    move |v, e| v == "forward" && e == port
}

#[test]
fn a_route_the_kernel_flushed_on_admin_down_stays_gone() {
    if !require_root("a_route_the_kernel_flushed_on_admin_down_stays_gone") {
        return;
    }
    let net = fabric("flushdown", 1);
    net.ip(&["route", "add", "172.16.1.1/32", "via", "10.0.0.2"])
        .expect("route");
    let pins = PinDir::new("flushdown");
    let d = daemon(&net, &pins);
    wait_for(&net, &pins, "172.16.1.1", "start", forwards_via("xe-o0"));
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
    finish(&net, &pins, d);
}

/// Found by the oracle: with the carrier already gone the link was "down"
/// to the mirror before and after the admin down, which went unnoticed: the
/// mirror kept the flushed route (anti-entropy repaired it) until the link
/// came back.
#[test]
fn an_admin_down_after_carrier_loss_still_flushes() {
    if !require_root("an_admin_down_after_carrier_loss_still_flushes") {
        return;
    }
    let net = fabric("carrier", 1);
    net.ip(&["route", "add", "172.16.1.1/32", "via", "10.0.0.2"])
        .expect("route");
    // No IPv6 on the port: no address event comes with the admin down.
    let st = Command::new("ip")
        .args(["netns", "exec", net.name(), "sysctl", "-qw"])
        .arg("net.ipv6.conf.xe-o0.disable_ipv6=1")
        .status()
        .expect("sysctl");
    assert!(st.success());
    let pins = PinDir::new("carrier");
    let d = daemon(&net, &pins);
    wait_for(&net, &pins, "172.16.1.1", "start", forwards_via("xe-o0"));
    net.ip(&["link", "set", "xe-p0", "down"])
        .expect("carrier down");
    wait_for(&net, &pins, "172.16.1.1", "carrier down", not_forwarded);
    net.ip(&["link", "set", "xe-o0", "down"])
        .expect("admin down");
    // Long enough for anti-entropy (every 0.5 s) to compare while it is down.
    std::thread::sleep(Duration::from_millis(1500));
    net.ip(&["link", "set", "xe-o0", "up"]).expect("admin up");
    net.ip(&["link", "set", "xe-p0", "up"]).expect("carrier up");
    support::set_neighbour(&net, 0, 0);
    assert!(!kernel(&net, "172.16.1.1").contains("via 10.0.0.2"));
    std::thread::sleep(Duration::from_millis(500));
    wait_for(&net, &pins, "172.16.1.1", "up again", |v, _| {
        v == "pass-no-route"
    });
    finish(&net, &pins, d);
}

#[test]
fn routes_flushed_with_the_last_address_stay_gone() {
    if !require_root("routes_flushed_with_the_last_address_stay_gone") {
        return;
    }
    let net = fabric("flushaddr", 1);
    net.ip(&["route", "add", "172.16.1.2/32", "via", "10.0.0.2"])
        .expect("route");
    let pins = PinDir::new("flushaddr");
    let d = daemon(&net, &pins);
    wait_for(&net, &pins, "172.16.1.2", "start", forwards_via("xe-o0"));
    // The last IPv4 address of xe-o0 goes: its routes go with it, the link stays up.
    net.ip(&["addr", "flush", "dev", "xe-o0"]).expect("flush");
    wait_for(&net, &pins, "172.16.1.2", "address gone", not_forwarded);
    net.ip(&["addr", "add", "10.0.0.1/24", "dev", "xe-o0"])
        .expect("addr");
    support::set_neighbour(&net, 0, 0);
    std::thread::sleep(Duration::from_millis(500));
    wait_for(&net, &pins, "172.16.1.2", "address back", |v, _| {
        v == "pass-no-route"
    });
    finish(&net, &pins, d);
}

#[test]
fn a_nexthop_object_removed_with_its_link_takes_its_route() {
    if !require_root("a_nexthop_object_removed_with_its_link_takes_its_route") {
        return;
    }
    let net = fabric("flushnh", 1);
    net.ip(&[
        "nexthop", "add", "id", "12", "via", "10.0.0.2", "dev", "xe-o0",
    ])
    .expect("nexthop");
    net.ip(&["route", "add", "172.16.1.3/32", "nhid", "12"])
        .expect("route");
    let pins = PinDir::new("flushnh");
    let d = daemon(&net, &pins);
    wait_for(&net, &pins, "172.16.1.3", "start", forwards_via("xe-o0"));
    net.ip(&["link", "set", "xe-o0", "down"]).expect("down");
    net.ip(&["link", "set", "xe-o0", "up"]).expect("up");
    support::set_neighbour(&net, 0, 0);
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
    finish(&net, &pins, d);
}

#[test]
fn an_ipv6_multipath_route_loses_only_the_deleted_hop() {
    if !require_root("an_ipv6_multipath_route_loses_only_the_deleted_hop") {
        return;
    }
    let (net, pins, d) = v6_world("v6hop", "1024");
    v6_del_hop(&net, 1, "del one hop");
    assert!(kernel(&net, "2001:db8:99::5").contains("dev xe-o0"));
    std::thread::sleep(Duration::from_millis(300));
    wait_for(
        &net,
        &pins,
        "2001:db8:99::5",
        "one hop deleted",
        forwards_via("xe-o0"),
    );
    finish(&net, &pins, d);
}

/// Found by the oracle: the kernel announces the delete of a dead hop with
/// the route's dead flag; the mirror read that as a route with no hops and
/// dropped the whole metric's route, live hop and all.
#[test]
fn deleting_a_dead_ipv6_hop_keeps_the_live_one() {
    if !require_root("deleting_a_dead_ipv6_hop_keeps_the_live_one") {
        return;
    }
    let (net, pins, d) = v6_world("v6dead", "10");
    net.ip(&["link", "set", "xe-o1", "down"]).expect("down");
    let shown = v6_shown(&net);
    assert!(shown.contains("dead"), "the hop via xe-o1 is dead: {shown}");
    wait_for(
        &net,
        &pins,
        "2001:db8:99::5",
        "xe-o1 down",
        forwards_via("xe-o0"),
    );
    v6_del_hop(&net, 1, "del the dead hop");
    assert!(kernel(&net, "2001:db8:99::5").contains("dev xe-o0"));
    // Anti-entropy (every 0.5 s) compares meanwhile: it must find nothing.
    std::thread::sleep(Duration::from_millis(1200));
    wait_for(
        &net,
        &pins,
        "2001:db8:99::5",
        "dead hop deleted",
        forwards_via("xe-o0"),
    );
    finish(&net, &pins, d);
}

/// Found by the oracle: deleting the live hop of a route whose other hop is
/// dead leaves the route in the kernel, dead (it forwards nothing, and comes
/// back with its port); the mirror had dropped it.
#[test]
fn deleting_the_live_hop_of_a_half_dead_route_leaves_it_dead() {
    if !require_root("deleting_the_live_hop_of_a_half_dead_route_leaves_it_dead") {
        return;
    }
    let (net, pins, d) = v6_world("v6half", "1024");
    net.ip(&["link", "set", "xe-o1", "down"]).expect("down");
    wait_for(
        &net,
        &pins,
        "2001:db8:99::5",
        "xe-o1 down",
        forwards_via("xe-o0"),
    );
    v6_del_hop(&net, 0, "del the live hop");
    let shown = v6_shown(&net);
    assert!(shown.contains("dead"), "the kernel keeps it, dead: {shown}");
    // Anti-entropy (every 0.5 s) compares meanwhile: it must find nothing.
    std::thread::sleep(Duration::from_millis(1200));
    wait_for(
        &net,
        &pins,
        "2001:db8:99::5",
        "live hop deleted",
        not_forwarded,
    );
    finish(&net, &pins, d);
}

/// Found by the oracle: a dump taken after the carrier changed but before
/// the kernel's link watcher acted on it (reviving dead IPv6 hops, flushing
/// nexthop objects) already showed the new link state, so the watcher's own
/// link message, equal to it, was not taken as a sign to read back: the
/// revived hops stayed missing until anti-entropy repaired them.
#[test]
fn hops_revived_by_the_link_watcher_are_seen() {
    if !require_root("hops_revived_by_the_link_watcher_are_seen") {
        return;
    }
    let net = fabric("revive", 2);
    with_ipv6(&net, 2);
    v6_pair_route(&net, "1024");
    // IPv6 addresses stay on a port that goes down, as on a router.
    let st = Command::new("ip")
        .args(["netns", "exec", net.name(), "sysctl", "-qw"])
        .arg("net.ipv6.conf.all.keep_addr_on_down=1")
        .status()
        .expect("sysctl");
    assert!(st.success());
    let pins = PinDir::new("revive");
    let d = Daemon::start(
        &net,
        &pins,
        &["-p", "xe-in", "--anti-entropy", "0.1", "--run-for", "120"],
        true,
    );
    wait_for(&net, &pins, "2001:db8:99::5", "start", |v, _| {
        v == "forward"
    });
    // Each round: the hop dies (admin down), the port comes up without a
    // carrier (the hop stays dead), then the carrier returns: the link
    // watcher revives the hop, after the peer's message set off a dump.
    for _ in 0..60 {
        for c in [
            ["link", "set", "xe-o1", "down"],
            ["link", "set", "xe-p1", "down"],
            ["link", "set", "xe-o1", "up"],
            ["link", "set", "xe-p1", "up"],
        ] {
            net.ip(&c).expect("link");
        }
        // Time for an anti-entropy round (every 0.1 s) with nothing pending.
        std::thread::sleep(Duration::from_millis(250));
    }
    finish(&net, &pins, d);
}

/// Found by the oracle: replacing a nexthop object makes the kernel announce
/// each route using it again (NLM_F_REPLACE), naming the object's new device;
/// the mirror took that for a new route replacing the first of its metric
/// (here a `throw`), and forwarded what the kernel leaves to another table.
#[test]
fn a_replaced_nexthop_object_leaves_its_route_where_it_was() {
    if !require_root("a_replaced_nexthop_object_leaves_its_route_where_it_was") {
        return;
    }
    let net = fabric("nhrepl", 2);
    net.ip(&[
        "nexthop", "add", "id", "1", "via", "10.0.0.2", "dev", "xe-o0",
    ])
    .expect("nexthop");
    net.ip(&["route", "add", "throw", "172.16.1.0/24"])
        .expect("throw");
    net.ip(&["route", "append", "172.16.1.0/24", "nhid", "1"])
        .expect("route behind it");
    let pins = PinDir::new("nhrepl");
    let d = daemon(&net, &pins);
    wait_for(&net, &pins, "172.16.1.1", "start", not_forwarded);
    net.ip(&[
        "nexthop", "replace", "id", "1", "via", "10.0.1.2", "dev", "xe-o1",
    ])
    .expect("nexthop replace");
    assert!(
        !kernel(&net, "172.16.1.1").contains("xe-o1"),
        "the throw route still decides: {}",
        kernel(&net, "172.16.1.1")
    );
    // Anti-entropy (every 0.5 s) compares meanwhile: it must find nothing.
    std::thread::sleep(Duration::from_millis(1200));
    wait_for(&net, &pins, "172.16.1.1", "nexthop replaced", not_forwarded);
    finish(&net, &pins, d);
}

#[test]
fn an_appended_ipv4_route_leaves_the_first_in_use() {
    if !require_root("an_appended_ipv4_route_leaves_the_first_in_use") {
        return;
    }
    let net = fabric("append", 2);
    net.ip(&["route", "add", "172.16.2.0/24", "via", "10.0.0.2"])
        .expect("route");
    let pins = PinDir::new("append");
    let d = daemon(&net, &pins);
    wait_for(&net, &pins, "172.16.2.5", "start", forwards_via("xe-o0"));
    net.ip(&["route", "append", "172.16.2.0/24", "via", "10.0.1.2"])
        .expect("append");
    std::thread::sleep(Duration::from_millis(300));
    assert!(kernel(&net, "172.16.2.5").contains("dev xe-o0"));
    wait_for(&net, &pins, "172.16.2.5", "appended", forwards_via("xe-o0"));
    net.ip(&["route", "del", "172.16.2.0/24", "via", "10.0.0.2"])
        .expect("del the first");
    assert!(kernel(&net, "172.16.2.5").contains("dev xe-o1"));
    wait_for(
        &net,
        &pins,
        "172.16.2.5",
        "first deleted",
        forwards_via("xe-o1"),
    );
    finish(&net, &pins, d);
}

#[test]
fn a_tos_route_leaves_its_prefix_to_the_kernel() {
    if !require_root("a_tos_route_leaves_its_prefix_to_the_kernel") {
        return;
    }
    let net = fabric("tos", 2);
    net.ip(&["route", "add", "172.16.3.0/24", "via", "10.0.0.2"])
        .expect("route");
    let pins = PinDir::new("tos");
    let d = daemon(&net, &pins);
    wait_for(&net, &pins, "172.16.3.5", "start", forwards_via("xe-o0"));
    // The kernel chooses by TOS, the program cannot.
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
    wait_for(
        &net,
        &pins,
        "172.16.3.5",
        "tos route gone",
        forwards_via("xe-o0"),
    );
    finish(&net, &pins, d);
}

#[test]
fn a_route_with_its_own_mtu_goes_to_the_kernel() {
    if !require_root("a_route_with_its_own_mtu_goes_to_the_kernel") {
        return;
    }
    let net = fabric("mtu", 1);
    net.ip(&["route", "add", "172.16.3.0/24", "via", "10.0.0.2"])
        .expect("route");
    let pins = PinDir::new("mtu");
    let d = daemon(&net, &pins);
    wait_for(&net, &pins, "172.16.3.5", "start", forwards_via("xe-o0"));
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
    wait_for(
        &net,
        &pins,
        "172.16.3.5",
        "route mtu gone",
        forwards_via("xe-o0"),
    );
    finish(&net, &pins, d);
}

#[test]
fn a_policy_rule_leaves_its_family_to_the_kernel() {
    if !require_root("a_policy_rule_leaves_its_family_to_the_kernel") {
        return;
    }
    let net = fabric("rule", 2);
    net.ip(&["route", "add", "172.16.3.0/24", "via", "10.0.0.2"])
        .expect("route");
    let pins = PinDir::new("rule");
    let d = daemon(&net, &pins);
    wait_for(&net, &pins, "172.16.3.5", "start", forwards_via("xe-o0"));
    // The rule sends the lookup to another table.
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
    wait_for(
        &net,
        &pins,
        "172.16.3.5",
        "rule gone",
        forwards_via("xe-o0"),
    );
    let log = finish(&net, &pins, d);
    assert!(log.contains("a policy routing rule is in place"), "{log}");
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

/// A port that cannot transmit a redirected frame drops it: a veth whose
/// peer has neither an XDP program nor GRO, and a macvlan device (as bridges,
/// bonds, VLAN and tunnel devices, it has no `ndo_xdp_xmit`). Their next hops
/// go to the kernel, and follow the peer's GRO as it changes, also where the
/// kernel's flag goes stale (GRO off while the peer was down).
#[test]
fn a_port_that_cannot_transmit_redirects_goes_to_the_kernel() {
    if !require_root("a_port_that_cannot_transmit_redirects_goes_to_the_kernel") {
        return;
    }
    let net = fabric("noxmit", 2);
    net.ip(&["route", "add", "172.16.1.1/32", "via", "10.0.0.2"])
        .expect("route");
    net.ip(&[
        "link", "add", "link", "xe-o1", "name", "xe-o1m", "type", "macvlan",
    ])
    .expect("macvlan");
    net.ip(&["link", "set", "xe-o1m", "up"])
        .expect("macvlan up");
    net.ip(&["addr", "add", "10.5.0.1/24", "dev", "xe-o1m"])
        .expect("macvlan addr");
    net.ip(&[
        "neigh",
        "replace",
        "10.5.0.2",
        "lladdr",
        "02:00:00:00:05:02",
        "dev",
        "xe-o1m",
        "nud",
        "permanent",
    ])
    .expect("macvlan neighbour");
    net.ip(&["route", "add", "172.16.1.2/32", "via", "10.5.0.2"])
        .expect("route via the macvlan");
    assert!(kernel(&net, "172.16.1.2").contains("dev xe-o1m"));
    let pins = PinDir::new("noxmit");
    let d = daemon(&net, &pins);
    wait_for(&net, &pins, "172.16.1.1", "start", forwards_via("xe-o0"));
    wait_for(&net, &pins, "172.16.1.2", "via the macvlan", |v, _| {
        v == "pass-no-txport"
    });
    gro(&net, "xe-p0", false);
    wait_for(&net, &pins, "172.16.1.1", "peer without GRO", |v, _| {
        v == "pass-no-txport"
    });
    gro(&net, "xe-p0", true);
    wait_for(
        &net,
        &pins,
        "172.16.1.1",
        "peer with GRO again",
        forwards_via("xe-o0"),
    );
    // GRO switched off while the peer is down leaves the port's NDO_XMIT
    // flag set (Linux 6.18): once the peer is up again the flag says the
    // port transmits, and a redirect into it is dropped. The peer's own
    // state decides.
    net.ip(&["link", "set", "xe-p0", "down"])
        .expect("peer down");
    gro(&net, "xe-p0", false);
    net.ip(&["link", "set", "xe-p0", "up"]).expect("peer up");
    wait_for(
        &net,
        &pins,
        "172.16.1.1",
        "peer up without GRO, flag stale",
        |v, _| v == "pass-no-txport",
    );
    gro(&net, "xe-p0", true);
    wait_for(
        &net,
        &pins,
        "172.16.1.1",
        "peer with GRO once more",
        forwards_via("xe-o0"),
    );
    let log = finish(&net, &pins, d);
    assert!(
        log.contains("port does not transmit redirected XDP frames"),
        "the daemon says which ports go to the kernel and why:\n{log}"
    );
}

/// Found by the oracle (seed 20261201, step 84089): a dump shows only the
/// first hop's metrics for an IPv6 multipath route, so a route whose first
/// hop had `mtu 1300` and whose appended hop had none read, after a re-dump,
/// as all hops with the MTU; when the MTU hop was deleted the mirror kept
/// the route the kernel's while the kernel had it forward without an MTU
/// (an anti-entropy repair). Such a delete now reads the kernel again.
#[test]
fn deleting_the_mtu_hop_of_a_dumped_ipv6_route_forwards_by_the_rest() {
    if !require_root("deleting_the_mtu_hop_of_a_dumped_ipv6_route_forwards_by_the_rest") {
        return;
    }
    let net = fabric("v6mtu", 2);
    with_ipv6(&net, 2);
    net.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:99::/64",
        "via",
        "2001:db8:0::2",
        "dev",
        "xe-o0",
        "mtu",
        "1300",
    ])
    .expect("route with an MTU");
    net.ip(&[
        "-6",
        "route",
        "append",
        "2001:db8:99::/64",
        "via",
        "2001:db8:1::2",
        "dev",
        "xe-o1",
    ])
    .expect("hop without one");
    // The daemon starts from a dump of the route.
    let pins = PinDir::new("v6mtu");
    let d = daemon(&net, &pins);
    wait_for(
        &net,
        &pins,
        "2001:db8:99::5",
        "route with an MTU",
        not_forwarded,
    );
    v6_del_hop(&net, 0, "del the MTU hop");
    assert!(
        !v6_shown(&net).contains("mtu"),
        "the kernel keeps no MTU: {}",
        v6_shown(&net)
    );
    wait_for(
        &net,
        &pins,
        "2001:db8:99::5",
        "MTU hop deleted",
        forwards_via("xe-o1"),
    );
    // Anti-entropy (every 0.5 s) has had time to compare.
    std::thread::sleep(Duration::from_millis(1200));
    finish(&net, &pins, d);
}
