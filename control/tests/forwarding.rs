//! The kernel's forwarding switches: with IPv4 forwarding off (globally or on the attached port) the routes go to the kernel, and forward again once it is back on.

use std::process::Command;

use dataplane::testnet::{require_root, TestNet};
use support::{anycast_route, fabric, wait_for_verdict, xdp_ecmp, Daemon, PinDir};

mod support;

fn sysctl(net: &TestNet, setting: &str) {
    let st = Command::new("ip")
        .args(["netns", "exec", net.name(), "sysctl", "-qw", setting])
        .status()
        .expect("sysctl");
    assert!(st.success(), "{setting}");
}

#[test]
fn with_forwarding_off_the_kernel_decides() {
    if !require_root("with_forwarding_off_the_kernel_decides") {
        return;
    }
    let net = fabric("fwd", 2);
    anycast_route(&net, &[0, 1]);
    let pins = PinDir::new("fwd");
    let d = Daemon::start(&net, &pins, &["-p", "xe-in", "--run-for", "60"], true);
    wait_for_verdict(&net, &pins, "forward", "start");
    sysctl(&net, "net.ipv4.ip_forward=0");
    wait_for_verdict(&net, &pins, "pass-no-route", "ip_forward=0");
    sysctl(&net, "net.ipv4.ip_forward=1");
    wait_for_verdict(&net, &pins, "forward", "ip_forward=1");
    // Off on the attached port only: the kernel would not forward what comes in there.
    sysctl(&net, "net.ipv4.conf.xe-in.forwarding=0");
    wait_for_verdict(&net, &pins, "pass-no-route", "xe-in forwarding=0");
    sysctl(&net, "net.ipv4.conf.xe-in.forwarding=1");
    wait_for_verdict(&net, &pins, "forward", "xe-in forwarding=1");
    let log = d.stop();
    assert!(
        log.contains("IPv4 forwarding is off on an attached port"),
        "{log}"
    );
    xdp_ecmp(&net, &pins, &["detach", "xe-in"]);
}
