//! Ports follow the kernel: a missing port is an error before anything is attached (or waited for), a port that appears or is re-created is attached again, a stale link pin is replaced.

use std::time::{Duration, Instant};

use dataplane::testnet::{require_root, TestNet};
use support::{fabric, text, xdp_ecmp, xdp_prog_id, Daemon, PinDir};

mod support;

fn add_port(net: &TestNet, name: &str) {
    net.ip(&[
        "link",
        "add",
        name,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{name}p"),
    ])
    .expect("veth");
    net.ip(&["link", "set", name, "up"]).expect("up");
}

/// Waits until `dev` carries an XDP program other than `not`; returns its id.
fn wait_for_xdp(net: &TestNet, dev: &str, not: Option<u32>) -> u32 {
    let t0 = Instant::now();
    loop {
        if let Some(id) = xdp_prog_id(net, dev).filter(|id| Some(*id) != not) {
            println!("{dev}: XDP program {id} after {:?}", t0.elapsed());
            return id;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{dev} was not attached within 5 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ports_are_attached_when_they_appear_and_again_when_re_created() {
    if !require_root("ports_are_attached_when_they_appear_and_again_when_re_created") {
        return;
    }
    let net = fabric("ports", 1);
    let pins = PinDir::new("ports");

    // A missing port without --wait-for-ports: an error naming it, and
    // nothing attached (not even the ports that exist).
    let o = xdp_ecmp(
        &net,
        &pins,
        &["run", "-p", "xe-in", "-p", "xe-late", "--run-for", "5"],
    );
    let t = text(&o);
    assert!(!o.status.success(), "started without xe-late: {t}");
    assert!(
        t.contains("xe-late")
            && t.contains("--wait-for-ports")
            && t.contains("nothing was attached"),
        "{t}"
    );
    assert_eq!(
        xdp_prog_id(&net, "xe-in"),
        None,
        "xe-in was attached anyway"
    );

    // With it: the daemon runs, and attaches xe-late once it exists.
    let daemon = Daemon::start(
        &net,
        &pins,
        &[
            "-p",
            "xe-in",
            "-p",
            "xe-late",
            "--wait-for-ports",
            "--run-for",
            "60",
        ],
        true,
    );
    add_port(&net, "xe-late");
    let first = wait_for_xdp(&net, "xe-late", None);
    assert!(pins.0.join("link_xe-late").exists());

    // Deleted and re-created: attached again (the old link went with the
    // old interface).
    net.ip(&["link", "del", "xe-late"]).expect("del");
    std::thread::sleep(Duration::from_millis(300));
    add_port(&net, "xe-late");
    wait_for_xdp(&net, "xe-late", None);
    let log = daemon.stop();
    assert!(log.contains("port gone"), "{log}");
    let _ = first;

    // Re-created while no daemon runs: the pin now names a link that holds
    // nothing; the next start replaces it instead of adopting it.
    net.ip(&["link", "del", "xe-late"]).expect("del");
    add_port(&net, "xe-late");
    assert_eq!(xdp_prog_id(&net, "xe-late"), None);
    let daemon = Daemon::start(
        &net,
        &pins,
        &["-p", "xe-in", "-p", "xe-late", "--run-for", "60"],
        true,
    );
    wait_for_xdp(&net, "xe-late", None);
    let log = daemon.stop();
    assert!(log.contains("replacing a stale link pin"), "{log}");
    let o = xdp_ecmp(&net, &pins, &["detach", "xe-in", "xe-late"]);
    assert!(o.status.success(), "detach: {}", text(&o));
}
