//! The `ip`-style listings against the kernel: every next hop `show nexthops` names has the gateway, port and nhid of a next hop in a fresh kernel dump (an IPv4 and an IPv6 neighbour with one MAC listed apart), each group's members carry the kernel's weights with buckets in proportion, and buckets say how long they have been idle.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use dataplane::ifindex_of;
use support::{fabric, neighbour_mac, text, xdp_ecmp, Daemon, PinDir, IN_MAC};
use testnet::{packet_socket, require_root, send_frame, TestNet};

mod support;

const V4: &str = "172.16.255.66";

fn json(net: &TestNet, pins: &PinDir, args: &[&str]) -> serde_json::Value {
    let o = xdp_ecmp(net, pins, args);
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&o)))
}

fn ip_json(net: &TestNet, args: &[&str]) -> serde_json::Value {
    let o = std::process::Command::new("ip")
        .args(["-n", net.name(), "-j"])
        .args(args)
        .output()
        .expect("ip");
    assert!(o.status.success(), "ip {args:?}: {}", text(&o));
    serde_json::from_slice(&o.stdout).expect("ip -j")
}

/// (gateway, port, nhid or None) of every next hop the kernel forwards the
/// two routes by, from a fresh dump.
fn kernel_hops(net: &TestNet) -> BTreeSet<(String, String, Option<u64>)> {
    let mut hops = BTreeSet::new();
    for n in ip_json(net, &["nexthop", "show"])
        .as_array()
        .expect("nexthops")
    {
        if let (Some(gw), Some(dev)) = (n["gateway"].as_str(), n["dev"].as_str()) {
            hops.insert((gw.to_string(), dev.to_string(), n["id"].as_u64()));
        }
    }
    for r in ip_json(net, &["-6", "route", "show", "2001:db8:66::/64"])
        .as_array()
        .expect("routes")
    {
        for h in r["nexthops"].as_array().expect("multipath") {
            hops.insert((
                h["gateway"].as_str().expect("gw").into(),
                h["dev"].as_str().expect("dev").into(),
                None,
            ));
        }
    }
    hops
}

#[test]
fn listings_name_what_the_kernel_names() {
    if !require_root("listings_name_what_the_kernel_names") {
        return;
    }
    let net = fabric("lists", 2);
    // IPv6 on the same ports: neighbour fc00:i::2 has the MAC of 10.0.i.2.
    for i in 0..2 {
        let dev = format!("xe-o{i}");
        net.ip(&[
            "addr",
            "add",
            &format!("fc00:{i}::1/64"),
            "dev",
            &dev,
            "nodad",
        ])
        .expect("addr6");
        net.ip(&[
            "neigh",
            "replace",
            &format!("fc00:{i}::2"),
            "lladdr",
            &support::mac_str(neighbour_mac(i, 0)),
            "dev",
            &dev,
            "nud",
            "permanent",
        ])
        .expect("neigh6");
    }
    net.ip(&[
        "nexthop", "add", "id", "11", "via", "10.0.0.2", "dev", "xe-o0",
    ])
    .expect("nh 11");
    net.ip(&[
        "nexthop", "add", "id", "12", "via", "10.0.1.2", "dev", "xe-o1",
    ])
    .expect("nh 12");
    net.ip(&["nexthop", "add", "id", "20", "group", "11/12,3"])
        .expect("group 20");
    net.ip(&["route", "add", &format!("{V4}/32"), "nhid", "20"])
        .expect("route4");
    net.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:66::/64",
        "nexthop",
        "via",
        "fc00:0::2",
        "dev",
        "xe-o0",
        "weight",
        "2",
        "nexthop",
        "via",
        "fc00:1::2",
        "dev",
        "xe-o1",
    ])
    .expect("route6");
    let pins = PinDir::new("lists");
    let _d = Daemon::start(&net, &pins, &["-p", "xe-in", "--idle-timer", "60"], false);

    // The daemon writes its status about once a second.
    let t0 = Instant::now();
    let nexthops = loop {
        let v = json(&net, &pins, &["show", "nexthops", "--json"]);
        let named = v
            .as_array()
            .expect("rows")
            .iter()
            .all(|r| r["gateway"].is_string());
        if (named && v.as_array().unwrap().len() == 4) || t0.elapsed() > Duration::from_secs(5) {
            break v;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let rows = nexthops.as_array().expect("rows");
    assert_eq!(rows.len(), 4, "two IPv4 and two IPv6 next hops: {nexthops}");
    let kernel = kernel_hops(&net);
    let mut listed = BTreeSet::new();
    for r in rows {
        let gw = r["gateway"]
            .as_str()
            .unwrap_or_else(|| panic!("no gateway: {r}"));
        let dev = r["dev"].as_str().expect("dev");
        let nhid = r["kernel_ids"]
            .as_array()
            .expect("ids")
            .first()
            .and_then(|i| i.as_u64());
        assert!(
            kernel.contains(&(gw.to_string(), dev.to_string(), nhid)),
            "show nexthops lists {gw} dev {dev} nhid {nhid:?}, which the kernel does not have: {kernel:?}"
        );
        listed.insert((gw.to_string(), dev.to_string(), nhid));
    }
    assert_eq!(
        listed, kernel,
        "every next hop the kernel forwards by is listed"
    );
    // One MAC, two next hops, told apart by their gateways.
    let same_mac: Vec<_> = rows
        .iter()
        .filter(|r| r["lladdr"] == support::mac_str(neighbour_mac(0, 0)).as_str())
        .map(|r| r["gateway"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(same_mac.len(), 2, "{nexthops}");
    assert_ne!(same_mac[0], same_mac[1]);
    let o = xdp_ecmp(&net, &pins, &["show", "nexthops"]);
    let out = text(&o);
    assert!(
        out.lines().any(|l| l.starts_with("id ")
            && l.contains(" via 10.0.0.2 dev xe-o0 lladdr ")
            && l.contains(" nhid 11 ")),
        "{out}"
    );

    // Groups: the kernel's weights, buckets in proportion.
    let groups = json(&net, &pins, &["show", "groups", "--json"]);
    let g4 = groups
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["kernel_id"] == 20)
        .unwrap_or_else(|| panic!("no group of nhid 20: {groups}"));
    let kernel_group = ip_json(&net, &["nexthop", "show", "id", "20"]);
    let weights: BTreeSet<(u64, u64)> = kernel_group[0]["group"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| (m["id"].as_u64().unwrap(), m["weight"].as_u64().unwrap_or(1)))
        .collect();
    let size = g4["size"].as_u64().expect("size");
    let mut held = 0;
    let mut listed_weights = BTreeSet::new();
    for m in g4["nexthops"].as_array().expect("members") {
        let nh = m["nexthop"].as_u64().expect("written");
        let row = rows.iter().find(|r| r["id"] == nh).expect("member listed");
        let kid = row["kernel_ids"][0].as_u64().expect("nhid");
        let w = m["weight"].as_u64().expect("weight");
        listed_weights.insert((kid, w));
        let b = m["buckets"].as_u64().expect("buckets");
        held += b;
        assert_eq!(
            b,
            size * w / 4,
            "buckets of nhid {kid} (weight {w} of 4): {g4}"
        );
    }
    assert_eq!(
        listed_weights, weights,
        "the kernel's weights: {kernel_group}"
    );
    assert_eq!(held, size);
    let out = text(&xdp_ecmp(&net, &pins, &["show", "groups"]));
    assert!(
        out.contains(&format!(
            "nexthop {} via 10.0.1.2 dev xe-o1 weight 3 buckets {}",
            rows.iter().find(|r| r["gateway"] == "10.0.1.2").unwrap()["id"],
            size * 3 / 4
        )) && out.contains(" nhid 20 routes 1 ")
            && out.contains(" idle_timer 60 "),
        "{out}"
    );
    let g6 = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["kernel_id"].is_null())
        .expect("the IPv6 route's group");
    let w6: BTreeSet<(String, u64)> = g6["nexthops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["gateway"].as_str().unwrap().to_string(),
                m["weight"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        w6,
        BTreeSet::from([
            (
                "fc00:0::2"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .to_string(),
                2
            ),
            ("fc00:1::2".into(), 1)
        ])
    );

    // Buckets: used ones say how long ago, the rest never.
    let tx = {
        net.enter().expect("enter");
        packet_socket(ifindex_of("xe-h0").expect("if")).expect("tx")
    };
    for sport in 0..64u16 {
        let flow = control::inspect::Flow {
            proto: 17,
            src: "10.2.0.100".parse().unwrap(),
            dst: V4.parse().unwrap(),
            sport: 1000 + sport,
            dport: 53,
        };
        send_frame(&tx, &control::inspect::build_frame(&flow, IN_MAC).unwrap()).expect("send");
    }
    let g = g4["id"].as_u64().unwrap().to_string();
    let buckets = json(&net, &pins, &["show", "buckets", &g, "--json"]);
    let idle: Vec<Option<f64>> = buckets
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["idle_time"].as_f64())
        .collect();
    let used = idle.iter().flatten().count();
    assert!(used > 0 && used <= 64, "buckets used by 64 flows: {used}");
    assert!(
        idle.iter().flatten().all(|t| *t < 10.0),
        "just used: {idle:?}"
    );
    assert_eq!(idle.len() as u64, size);
    let out = text(&xdp_ecmp(&net, &pins, &["show", "buckets", &g]));
    assert!(
        out.lines().any(|l| l.contains(" idle_time never nexthop "))
            && out.lines().any(|l| l.contains(" via 10.0.1.2 dev xe-o1")),
        "{out}"
    );
    println!(
        "show nexthops:\n{}",
        text(&xdp_ecmp(&net, &pins, &["show", "nexthops"]))
    );
    println!(
        "show groups:\n{}",
        text(&xdp_ecmp(&net, &pins, &["show", "groups"]))
    );
}
