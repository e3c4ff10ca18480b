//! The xdp-ecmp binary end to end in a test namespace: attach, stats, errors that name the thing, detach.

use std::process::Command;

use dataplane::testnet::{require_root, TestNet};
use support::{text, xdp_ecmp, PinDir};

mod support;

fn has_xdp(net: &TestNet, dev: &str) -> bool {
    let o = Command::new("ip")
        .args(["-n", net.name(), "-d", "link", "show", dev])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&o.stdout).contains("prog/xdp")
}

#[test]
fn attach_stats_detach() {
    if !require_root("attach_stats_detach") {
        return;
    }
    let net = TestNet::new("cli", &[("xe-c0", "xe-d0"), ("xe-c1", "xe-d1")]).expect("namespace");
    let pins = PinDir::new("cli");

    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            net.name(),
            env!("CARGO_BIN_EXE_xdp-ecmp"),
            "attach",
            "xe-c0",
        ])
        .output()
        .expect("running xdp-ecmp");
    assert!(
        text(&o).contains("not on a bpf filesystem"),
        "without bpffs: {}",
        text(&o)
    );

    let o = xdp_ecmp(&net, &pins, &["attach", "xe-c0", "xe-nosuch"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("xe-nosuch"),
        "error names the port: {}",
        text(&o)
    );
    assert!(
        !has_xdp(&net, "xe-c0"),
        "nothing attached when one port is unknown"
    );

    let o = xdp_ecmp(
        &net,
        &pins,
        &["attach", "--hash-seed", "0x1234", "xe-c0", "xe-c1"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("xe-c0: attached (native XDP)"),
        "{}",
        text(&o)
    );
    assert!(has_xdp(&net, "xe-c0") && has_xdp(&net, "xe-c1"));

    let o = xdp_ecmp(&net, &pins, &["attach", "xe-c0"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("already attached"), "{}", text(&o));

    let o = xdp_ecmp(&net, &pins, &["attach", "--hash-seed", "zz", "xe-c0"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("hash seed"), "{}", text(&o));

    let o = xdp_ecmp(&net, &pins, &["stats", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stats --json is JSON");
    let names: Vec<&str> = v
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["verdict"].as_str())
        .collect();
    assert_eq!(names.len(), 13);
    assert!(names.contains(&"forward") && names.contains(&"drop-malformed"));

    let o = xdp_ecmp(&net, &pins, &["detach", "xe-c0", "xe-c1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!has_xdp(&net, "xe-c0") && !has_xdp(&net, "xe-c1"));
    let o = xdp_ecmp(&net, &pins, &["detach", "xe-c0"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("not attached"), "{}", text(&o));
    println!("cli: attach (native), stats --json (13 verdicts), detach, and 5 error cases checked");
}
