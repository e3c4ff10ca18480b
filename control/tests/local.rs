//! A local address wins over any route to it, as the kernel's local table is looked up before main: a /32 on lo that a main-table /32 also covers is delivered locally, in either order, and forwards again once the address is gone.

use std::time::Duration;

use support::{anycast_route, anycast_verdict, fabric, wait_for_verdict, xdp_ecmp, Daemon, PinDir};
use testnet::require_root;

mod support;

/// The kernel's own answer for a packet to the anycast address coming in by xe-in.
fn kernel_route(net: &testnet::TestNet) -> String {
    let o = std::process::Command::new("ip")
        .args([
            "-n",
            net.name(),
            "route",
            "get",
            "172.16.255.66",
            "from",
            "10.2.0.100",
            "iif",
            "xe-in",
        ])
        .output()
        .expect("ip route get");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn a_local_address_wins_over_a_route_to_it() {
    if !require_root("a_local_address_wins_over_a_route_to_it") {
        return;
    }
    let net = fabric("local", 2);
    anycast_route(&net, &[0, 1]);
    let pins = PinDir::new("local");
    let _d = Daemon::start(&net, &pins, &["-p", "xe-in", "--run-for", "60"], false);
    wait_for_verdict(&net, &pins, "forward", "the route alone");
    // The address after the route.
    net.ip(&["addr", "add", "172.16.255.66/32", "dev", "lo"])
        .expect("addr");
    wait_for_verdict(&net, &pins, "pass-local", "address added");
    assert!(
        kernel_route(&net).starts_with("local "),
        "the kernel delivers it locally too: {}",
        kernel_route(&net)
    );
    net.ip(&["addr", "del", "172.16.255.66/32", "dev", "lo"])
        .expect("addr del");
    wait_for_verdict(&net, &pins, "forward", "address removed");
    assert!(
        kernel_route(&net).contains(" via "),
        "the kernel forwards it again: {}",
        kernel_route(&net)
    );
    // The route after the address (replaced while the address is there).
    net.ip(&["addr", "add", "172.16.255.66/32", "dev", "lo"])
        .expect("addr");
    wait_for_verdict(&net, &pins, "pass-local", "address added again");
    anycast_route(&net, &[0]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        anycast_verdict(&net, &pins),
        "pass-local",
        "a route replaced under a local address stays local"
    );
    net.ip(&["addr", "del", "172.16.255.66/32", "dev", "lo"])
        .expect("addr del");
    wait_for_verdict(&net, &pins, "forward", "address removed again");
    xdp_ecmp(&net, &pins, &["detach", "xe-in"]);
}
