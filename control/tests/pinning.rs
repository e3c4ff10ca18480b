//! Flow pinning end to end: the daemon pins the flows of one anycast route and not another's; when a next hop joins (buckets move) every pinned flow stays on its port, unpinned ones move; when one leaves its flows go elsewhere; `show flows`, `calc`, `stats` and `flush-flows` say so, and a restart keeps the table.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dataplane::ifindex_of;
use support::{calc_udp, fabric, text, xdp_ecmp, Daemon, PinDir, IN_MAC};
use testnet::{packet_socket, recv_frame, require_root, send_frame, TestNet};

mod support;

const PINNED: &str = "172.16.255.66";
const PLAIN: &str = "172.16.255.67";
const FLOWS: u16 = 200;

fn route(net: &TestNet, dst: &str, ports: &[usize]) {
    let mut args: Vec<String> = vec!["route".into(), "replace".into(), format!("{dst}/32")];
    for p in ports {
        args.extend(["nexthop".into(), "via".into(), format!("10.0.{p}.2")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    net.ip(&args).expect("route");
}

fn start(net: &TestNet, pins: &PinDir, engine: &str) -> Daemon {
    let pin = format!("{PINNED}/32");
    let mut args = vec![
        "-p",
        "xe-in",
        "--idle-timer",
        "0",
        "--hash-seed",
        "1234",
        "--pin-flows",
        &pin,
        "--pin-capacity",
        "4096",
        "--engine",
        engine,
    ];
    if engine == "afxdp" {
        // The AF_XDP engine serves every port it forwards between.
        args.extend([
            "-p", "xe-o0", "-p", "xe-o1", "-p", "xe-o2", "-p", "xe-o3", "-p", "xe-o4",
        ]);
    }
    Daemon::start(net, pins, &args, false)
}

/// Entries in the flow tables (the program's and the AF_XDP engine's, as
/// its daemon stores them every 200 ms), once they reach `want` (5 s at most).
fn wait_for_entries(net: &TestNet, pins: &PinDir, want: u64) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        let f = json(net, pins, &["show", "flows", "--json"]);
        let n = f["entries"].as_u64().unwrap_or(0) + f["engine_entries"].as_u64().unwrap_or(0);
        if n == want || t0.elapsed() > Duration::from_secs(5) {
            return f;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends one UDP frame of each flow (source port 2000 + i) to `dst` and
/// returns the egress port each came out of (every flow must come out).
fn egress(ports: usize, dst: &str) -> BTreeMap<u16, usize> {
    let tx = packet_socket(ifindex_of("xe-h0").expect("if")).expect("tx");
    let rx: Vec<_> = (0..ports)
        .map(|i| packet_socket(ifindex_of(&format!("xe-p{i}")).expect("if")).expect("rx"))
        .collect();
    for i in 0..FLOWS {
        let flow = control::inspect::Flow {
            proto: 17,
            src: "10.2.0.100".parse().expect("src"),
            dst: dst.parse().expect("dst"),
            sport: 2000 + i,
            dport: 53,
        };
        let frame = control::inspect::build_frame(&flow, IN_MAC).expect("frame");
        send_frame(&tx, &frame).expect("send");
    }
    let mut seen = BTreeMap::new();
    let t0 = Instant::now();
    let mut buf = [0u8; 2048];
    while seen.len() < usize::from(FLOWS) && t0.elapsed() < Duration::from_secs(5) {
        for (port, fd) in rx.iter().enumerate() {
            while let Some(n) = recv_frame(fd, &mut buf) {
                let udp_to_dst = n > 42
                    && buf[12..14] == [0x08, 0x00]
                    && buf[23] == 17
                    && buf[30..34] == dst.parse::<std::net::Ipv4Addr>().unwrap().octets();
                if udp_to_dst {
                    let sport = u16::from_be_bytes([buf[34], buf[35]]);
                    if let Some(old) = seen.insert(sport, port) {
                        assert_eq!(old, port, "flow {sport} came out of two ports");
                    }
                }
            }
        }
    }
    assert_eq!(
        seen.len(),
        usize::from(FLOWS),
        "not every flow to {dst} was forwarded"
    );
    seen
}

fn json(net: &TestNet, pins: &PinDir, args: &[&str]) -> serde_json::Value {
    let o = xdp_ecmp(net, pins, args);
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&o)))
}

/// Waits until the buckets of `dst`'s route reach every port in `ports`.
fn wait_for_ports(net: &TestNet, pins: &PinDir, dst: &str, ports: &[usize]) {
    let t0 = Instant::now();
    loop {
        let v = json(net, pins, &["show", "routes", "--json"]);
        let group = v
            .as_array()
            .and_then(|a| a.iter().find(|r| r["prefix"] == format!("{dst}/32")))
            .and_then(|r| r["group"].as_u64());
        if let Some(g) = group {
            let b = json(net, pins, &["show", "buckets", &g.to_string(), "--json"]);
            let text = b.to_string();
            if ports.iter().all(|p| text.contains(&format!("xe-o{p}")))
                && (0..6)
                    .filter(|p| !ports.contains(p))
                    .all(|p| !text.contains(&format!("xe-o{p}\"")))
            {
                return;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the buckets of {dst} never reached ports {ports:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn pinned_flows_stay_when_next_hops_join_and_move_when_theirs_leaves() {
    if !require_root("pinned_flows_stay_when_next_hops_join_and_move_when_theirs_leaves") {
        return;
    }
    scenario("pinning", "xdp");
}

/// The same with the AF_XDP engine, which pins in tables of its own and
/// hands them to the program's when it stops (so a restart keeps them).
#[test]
fn the_afxdp_engine_pins_flows_and_a_restart_keeps_them() {
    if !require_root("the_afxdp_engine_pins_flows_and_a_restart_keeps_them") {
        return;
    }
    scenario("pin-afxdp", "afxdp");
}

fn scenario(tag: &str, engine: &str) {
    let xdp = engine == "xdp";
    let net = fabric(tag, 5);
    route(&net, PINNED, &[0, 1, 2]);
    route(&net, PLAIN, &[0, 1, 2]);
    let pins = PinDir::new(tag);
    let daemon = start(&net, &pins, engine);
    net.enter().expect("enter");
    wait_for_ports(&net, &pins, PINNED, &[0, 1, 2]);
    wait_for_ports(&net, &pins, PLAIN, &[0, 1, 2]);
    // show routes says which routes pin their flows.
    let routes = json(&net, &pins, &["show", "routes", "--json"]);
    let pinned_flag = |dst: &str| {
        routes
            .as_array()
            .and_then(|a| a.iter().find(|r| r["prefix"] == format!("{dst}/32")))
            .map(|r| r["pinned"].clone())
    };
    assert_eq!(pinned_flag(PINNED), Some(true.into()), "{routes}");
    assert_eq!(pinned_flag(PLAIN), Some(false.into()), "{routes}");
    let pinned0 = egress(5, PINNED);
    let plain0 = egress(5, PLAIN);
    let flows = wait_for_entries(&net, &pins, u64::from(FLOWS));
    let events = if xdp { "events" } else { "engine_events" };
    let entries = if xdp { "entries" } else { "engine_entries" };
    assert_eq!(flows[entries], u64::from(FLOWS), "{flows}");
    assert_eq!(flows[events]["inserted"], u64::from(FLOWS), "{flows}");

    // Two next hops join: buckets move to them (the idle timer is 0).
    route(&net, PINNED, &[0, 1, 2, 3, 4]);
    route(&net, PLAIN, &[0, 1, 2, 3, 4]);
    wait_for_ports(&net, &pins, PINNED, &[0, 1, 2, 3, 4]);
    wait_for_ports(&net, &pins, PLAIN, &[0, 1, 2, 3, 4]);
    let pinned1 = egress(5, PINNED);
    let plain1 = egress(5, PLAIN);
    let moved = |a: &BTreeMap<u16, usize>, b: &BTreeMap<u16, usize>| {
        a.iter().filter(|(f, p)| b[*f] != **p).count()
    };
    println!(
        "next hops joined: pinned flows moved {} of {FLOWS}, unpinned {}",
        moved(&pinned0, &pinned1),
        moved(&plain0, &plain1)
    );
    assert_eq!(moved(&pinned0, &pinned1), 0, "a pinned flow moved");
    assert!(
        moved(&plain0, &plain1) > usize::from(FLOWS) / 10,
        "unpinned flows should move to the new next hops"
    );
    // A pinned flow is what calc says (calc asks the program, which does
    // not see the AF_XDP engine's tables).
    if xdp {
        calc_checks(&net, &pins, &pinned0);
    }
    leave_and_restart(&net, &pins, engine, daemon, &pinned0);
}

fn calc_checks(net: &TestNet, pins: &PinDir, pinned0: &BTreeMap<u16, usize>) {
    let c = calc_udp(net, pins, PINNED, "2000", None);
    assert_eq!(c["egress"], format!("xe-o{}", pinned0[&2000]), "{c}");
    assert!(c["pin"].as_str().unwrap_or("").starts_with("pinned"), "{c}");
    // Asking about a new flow pins nothing.
    let c = calc_udp(net, pins, PINNED, "9999", None);
    assert!(
        c["pin"]
            .as_str()
            .unwrap_or("")
            .starts_with("not pinned yet"),
        "{c}"
    );
    let flows = json(net, pins, &["show", "flows", "--json"]);
    assert_eq!(
        flows["entries"],
        u64::from(FLOWS),
        "calc wrote an entry: {flows}"
    );
}

fn leave_and_restart(
    net: &TestNet,
    pins: &PinDir,
    engine: &str,
    daemon: Daemon,
    pinned0: &BTreeMap<u16, usize>,
) {
    // The next hop of port 0 leaves: its flows go elsewhere, the others stay.
    route(net, PINNED, &[1, 2, 3, 4]);
    wait_for_ports(net, pins, PINNED, &[1, 2, 3, 4]);
    let pinned2 = egress(5, PINNED);
    for (f, p) in pinned0 {
        if *p == 0 {
            assert_ne!(pinned2[f], 0, "flow {f} still on the next hop that left");
        } else {
            assert_eq!(pinned2[f], *p, "flow {f} moved though its next hop stayed");
        }
    }
    let stats = xdp_ecmp(net, pins, &["stats"]);
    assert!(
        text(&stats).contains("flow tables: IPv4 "),
        "{}",
        text(&stats)
    );

    // A restart keeps the table: the flows stay where they were.
    let log = daemon.stop();
    let daemon = start(net, pins, engine);
    wait_for_ports(net, pins, PINNED, &[1, 2, 3, 4]);
    let pinned3 = egress(5, PINNED);
    assert_eq!(pinned3, pinned2, "a restart moved pinned flows\n{log}");

    // Flushing empties it; the flows are pinned anew by their next packet.
    let o = xdp_ecmp(net, pins, &["flush-flows", &format!("{PINNED}/32")]);
    assert!(
        text(&o).contains(&format!("flushed {FLOWS} flows")),
        "{}",
        text(&o)
    );
    let flows = json(net, pins, &["show", "flows", "--json"]);
    assert_eq!(flows["entries"], 0, "{flows}");
    drop(daemon);
}
