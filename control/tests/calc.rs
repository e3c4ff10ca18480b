//! `xdp-ecmp calc` against the live dataplane: for built flows and for a pcap, its answer is the port real frames leave by.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use control::inspect::{build_frame, Flow};
use dataplane::ifindex_of;
use support::{anycast_route, fabric, xdp_ecmp, Daemon, PinDir, IN_MAC};
use testnet::{packet_socket, recv_frame, require_root, send_frame};

mod support;

/// A classic pcap file (Ethernet) holding `frames`.
fn write_pcap(path: &std::path::Path, frames: &[Vec<u8>]) {
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&65535u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    for f in frames {
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(f);
    }
    std::fs::write(path, b).expect("pcap");
}

#[test]
fn calc_answers_where_real_frames_go() {
    if !require_root("calc_answers_where_real_frames_go") {
        return;
    }
    let net = fabric("calc", 4);
    anycast_route(&net, &[0, 1, 2, 3]);
    let pins = PinDir::new("calc");
    let _daemon = Daemon::start(
        &net,
        &pins,
        &["-p", "xe-in", "--hash-seed", "5eed", "--run-for", "60"],
        false,
    );
    let t0 = Instant::now();
    loop {
        let o = xdp_ecmp(&net, &pins, &["show", "routes"]);
        if String::from_utf8_lossy(&o.stdout).contains("172.16.255.66/32 group") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the daemon never wrote the anycast route"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let before = production_marks(&pins);

    // The guide's two flows, in its own words.
    let mut egress_of_sport = Vec::new();
    for sport in ["32700", "31884"] {
        let o = xdp_ecmp(
            &net,
            &pins,
            &[
                "calc",
                "-p",
                "udp",
                "-s",
                "10.2.0.100",
                "--sport",
                sport,
                "-d",
                "172.16.255.66",
                "--dport",
                "53",
                "-i",
                "xe-in",
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        println!("calc -p udp -s 10.2.0.100 --sport {sport} -d 172.16.255.66 --dport 53 -i xe-in\n{text}");
        egress_of_sport.push(text.lines().next().unwrap_or_default().to_string());
    }
    assert!(
        egress_of_sport.iter().all(|e| e.starts_with("xe-o")),
        "{egress_of_sport:?}"
    );

    // --hash-seed answers for another seed: the running seed gives the running answer.
    let seeded = |seed: &str| {
        let o = xdp_ecmp(
            &net,
            &pins,
            &[
                "calc",
                "-p",
                "udp",
                "-s",
                "10.2.0.100",
                "--sport",
                "32700",
                "-d",
                "172.16.255.66",
                "--dport",
                "53",
                "--hash-seed",
                seed,
                "--json",
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        (
            v["egress"].as_str().unwrap_or("-").to_string(),
            v["hash"].as_str().unwrap_or("-").to_string(),
        )
    };
    let (same_seed, _) = seeded("5eed");
    assert_eq!(
        same_seed, egress_of_sport[0],
        "the running seed gives the running answer"
    );
    let hashes: HashSet<String> = ["1", "2", "3", "4"].iter().map(|s| seeded(s).1).collect();
    assert_eq!(hashes.len(), 4, "other seeds hash the flow differently");
    // Asking changed nothing the daemon and the operator rely on.
    assert_eq!(
        production_marks(&pins),
        before,
        "calc counted packets or stamped buckets of the live maps"
    );

    // 16 flows: calc's answer vs the peer that receives the real frame.
    net.enter().expect("enter");
    let tx = packet_socket(ifindex_of("xe-h0").expect("if")).expect("tx");
    let rx: Vec<_> = (0..4)
        .map(|i| packet_socket(ifindex_of(&format!("xe-p{i}")).expect("if")).expect("rx"))
        .collect();
    let mut frames = Vec::new();
    let mut agree = 0;
    for i in 0..16u16 {
        let flow = Flow {
            proto: 17,
            src: "10.2.0.100".parse().expect("src"),
            dst: "172.16.255.66".parse().expect("dst"),
            sport: 20_000 + i * 7,
            dport: 53,
        };
        let frame = build_frame(&flow, IN_MAC).expect("frame");
        let o = xdp_ecmp(
            &net,
            &pins,
            &[
                "calc",
                "-p",
                "udp",
                "-s",
                "10.2.0.100",
                "--sport",
                &flow.sport.to_string(),
                "-d",
                "172.16.255.66",
                "--dport",
                "53",
                "--json",
            ],
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("calc --json");
        let said = v["egress"].as_str().expect("egress").to_string();
        send_frame(&tx, &frame).expect("send");
        let mut buf = [0u8; 2048];
        let mut got = None;
        let deadline = Instant::now() + Duration::from_secs(2);
        while got.is_none() && Instant::now() < deadline {
            for (p, fd) in rx.iter().enumerate() {
                while let Some(n) = recv_frame(fd, &mut buf) {
                    if n >= 38 && buf[34..36] == flow.sport.to_be_bytes() {
                        got = Some(format!("xe-o{p}"));
                    }
                    if got.is_some() {
                        break;
                    }
                }
            }
        }
        assert_eq!(
            got.as_deref(),
            Some(said.as_str()),
            "flow sport {}: calc said {said}",
            flow.sport
        );
        agree += 1;
        frames.push(frame);
    }

    // The same frames from a capture.
    let pcap = std::env::temp_dir().join(format!("xe-calc-{}.pcap", std::process::id()));
    write_pcap(&pcap, &frames);
    let o = xdp_ecmp(
        &net,
        &pins,
        &["calc", "--pcap", pcap.to_str().expect("path"), "--json"],
    );
    let _ = std::fs::remove_file(&pcap);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 16);
    assert!(lines.iter().all(|l| l["verdict"] == "forward"));
    let bad = xdp_ecmp(&net, &pins, &["calc", "--pcap", "/nonexistent.pcap"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent.pcap"));
    println!("calc: {agree}/16 flows left by the port calc named; --pcap answered 16 frames; guide flows -> {egress_of_sport:?}");
}

/// What calc must leave alone: the packets counted as forwarded (what its
/// questions would be counted as; the port's own chatter, ND and the like,
/// counts as passed), and the anycast group's bucket stamps (the idle timer
/// reads them).
fn production_marks(pins: &PinDir) -> (u64, Vec<u32>) {
    let counted = dataplane::pinned_verdict_counters(&pins.0)
        .expect("counters")
        .iter()
        .filter(|(v, _)| v.name() == "forward")
        .map(|(_, c)| c.packets)
        .sum();
    let dp = control::inspect::open(&pins.0).expect("pins");
    let route = dp
        .routes_v4()
        .expect("routes")
        .into_iter()
        .find(|(a, l, _)| a.octets() == [172, 16, 255, 66] && *l == 32)
        .expect("anycast route")
        .2;
    let g = dp.group(route.group).expect("group");
    let stamps = (g.base..g.base + u32::from(g.size))
        .map(|s| dp.slot_used(s).expect("stamp"))
        .collect();
    (counted, stamps)
}
