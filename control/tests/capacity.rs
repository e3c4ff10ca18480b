//! `show capacity` tells how full each table is, counted from the maps: one 3-way anycast route fills one group, 128 slots, 3 next hops.

use std::time::{Duration, Instant};

use support::{anycast_route, fabric, xdp_ecmp, Daemon, PinDir};
use testnet::require_root;

mod support;

#[test]
fn show_capacity_counts_what_the_maps_hold() {
    if !require_root("show_capacity_counts_what_the_maps_hold") {
        return;
    }
    let net = fabric("cap", 3);
    anycast_route(&net, &[0, 1, 2]);
    let pins = PinDir::new("cap");
    let _d = Daemon::start(&net, &pins, &["-p", "xe-in", "--run-for", "60"], false);
    let t0 = Instant::now();
    let rows = loop {
        let o = xdp_ecmp(&net, &pins, &["show", "capacity", "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        let rows: Vec<(String, u64, u64)> = v
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                (
                    r["table"].as_str().expect("table").to_string(),
                    r["used"].as_u64().expect("used"),
                    r["limit"].as_u64().expect("limit"),
                )
            })
            .collect();
        if rows.iter().any(|r| r.0 == "groups" && r.1 == 1) {
            break rows;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{rows:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let used = |t: &str| rows.iter().find(|r| r.0 == t).map(|r| r.1).expect(t);
    println!("{rows:?}");
    // Three equal next hops: 129 buckets, 43 each (128 would give one 42,
    // 1.6% short of its weight's share).
    assert_eq!(used("slot pool"), 129, "one resilient group of 129 buckets");
    assert_eq!(used("next hops"), 3);
    // One chunk per /24 holding a prefix longer than /24, as `show routes` lists them.
    let o = xdp_ecmp(&net, &pins, &["show", "routes", "--json"]);
    let routes: serde_json::Value = serde_json::from_slice(&o.stdout).expect("routes json");
    let slash24s: std::collections::HashSet<[u8; 3]> = routes
        .as_array()
        .expect("routes")
        .iter()
        .filter_map(|r| {
            let (addr, len) = r["prefix"].as_str()?.split_once('/')?;
            let a: std::net::Ipv4Addr = addr.parse().ok()?;
            (len.parse::<u8>().ok()? > 24).then(|| [a.octets()[0], a.octets()[1], a.octets()[2]])
        })
        .collect();
    assert_eq!(
        used("IPv4 DIR-24-8 chunks"),
        slash24s.len() as u64,
        "{slash24s:?}"
    );
    assert!(used("IPv4 routes") >= 1);
    assert!(used("tx ports") >= 4, "xe-in and the three egress ports");
    assert!(rows.iter().all(|r| r.2 > 0 && r.1 <= r.2));
    let text = xdp_ecmp(&net, &pins, &["show", "capacity"]);
    let t = String::from_utf8_lossy(&text.stdout);
    assert!(t.contains("slot pool") && t.contains("16,384"), "{t}");
    support::xdp_ecmp(&net, &pins, &["detach", "xe-in"]);
}

#[test]
fn table_sizes_are_chosen_at_start_and_kept_by_the_pins() {
    if !require_root("table_sizes_are_chosen_at_start_and_kept_by_the_pins") {
        return;
    }
    let net = fabric("sizes", 2);
    anycast_route(&net, &[0, 1]);
    let pins = PinDir::new("sizes");
    let limits = || -> Vec<(String, u64)> {
        let o = xdp_ecmp(&net, &pins, &["show", "capacity", "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        v.as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                (
                    r["table"].as_str().expect("table").to_string(),
                    r["limit"].as_u64().expect("limit"),
                )
            })
            .collect()
    };
    let limit =
        |rows: &[(String, u64)], t: &str| rows.iter().find(|r| r.0 == t).map(|r| r.1).expect(t);
    let sized = [
        "-p",
        "xe-in",
        "--slot-pool",
        "8192",
        "--max-routes-v4",
        "4096",
        "--max-routes-v6",
        "2048",
        "--run-for",
        "30",
    ];
    let d = Daemon::start(&net, &pins, &sized, false);
    let rows = limits();
    assert_eq!(limit(&rows, "slot pool"), 8192);
    assert_eq!(limit(&rows, "IPv4 routes"), 4096);
    assert_eq!(limit(&rows, "IPv6 routes"), 2048);
    d.kill();
    // Other sizes over the same pins: refused, naming both.
    let o = xdp_ecmp(
        &net,
        &pins,
        &[
            "run",
            "-p",
            "xe-in",
            "--slot-pool",
            "16384",
            "--run-for",
            "5",
        ],
    );
    let t = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("other sizes") && t.contains("8192") && t.contains("16384"),
        "{t}"
    );
    // None given: the pinned sizes are kept.
    let d = Daemon::start(&net, &pins, &["-p", "xe-in", "--run-for", "30"], false);
    assert_eq!(limit(&limits(), "slot pool"), 8192);
    drop(d);
    // Out of range: an error naming the key.
    let o = xdp_ecmp(
        &net,
        &pins,
        &["run", "-p", "xe-in", "--slot-pool", "7", "--run-for", "5"],
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("slot_pool"));
    support::xdp_ecmp(&net, &pins, &["detach", "xe-in"]);
}
