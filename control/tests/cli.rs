//! The xdp-ecmp binary end to end in a test namespace: attach (admitting each port), stats, errors that name the thing, detach.

use std::process::Command;

use dataplane::abi::Verdict;
use support::{text, xdp_ecmp, PinDir};
use testnet::{require_root, TestNet};

mod support;

/// The MAC of `dev` in the namespace, as `ip` prints it.
fn link_mac(net: &TestNet, dev: &str) -> String {
    let o = Command::new("ip")
        .args(["-n", net.name(), "-j", "link", "show", "dev", dev])
        .output()
        .expect("ip link");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("ip -j link");
    v[0]["address"].as_str().expect("address").to_string()
}

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
    // Both admitted, to their own MACs.
    let admitted = |net: &TestNet| -> Vec<(String, String)> {
        let o = xdp_ecmp(net, &pins, &["show", "ports", "--json"]);
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("show ports --json");
        v.as_array()
            .expect("array")
            .iter()
            .map(|p| {
                let s = |k: &str| p[k].as_str().unwrap_or("-").to_string();
                (s("dev"), s("mac"))
            })
            .collect()
    };
    let want: Vec<(String, String)> = ["xe-c0", "xe-c1"]
        .iter()
        .map(|d| (d.to_string(), link_mac(&net, d)))
        .collect();
    let mut got = admitted(&net);
    got.sort();
    assert_eq!(got, want, "attach admits each port with its MAC");

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
    assert_eq!(names.len(), Verdict::ALL.len());
    assert!(
        names.contains(&"forward")
            && names.contains(&"drop-malformed")
            && names.contains(&"pass-otherhost")
    );

    let o = xdp_ecmp(&net, &pins, &["detach", "xe-c0", "xe-c1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!has_xdp(&net, "xe-c0") && !has_xdp(&net, "xe-c1"));
    assert_eq!(admitted(&net), vec![], "detach removes the ports' entries");
    let o = xdp_ecmp(&net, &pins, &["detach", "xe-c0"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("not attached"), "{}", text(&o));
    println!(
        "cli: attach (native, both ports admitted), stats --json ({} verdicts), detach, and 5 error cases checked",
        Verdict::ALL.len()
    );
}
