//! `xdp-ecmp run --engine afxdp`: the daemon's AF_XDP engine forwards the anycast flows over both egress ports, its counters reach the pinned maps `stats` reads, and once it stops the program forwards by itself again.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use control::inspect::{build_frame, Flow};
use dataplane::abi::Verdict;
use dataplane::{ifindex_of, pinned_engine_counters, pinned_verdict_counters};
use support::{anycast_route, fabric, Daemon, PinDir, IN_MAC};
use testnet::{packet_socket, recv_frame, require_root, send_frame};

mod support;

fn forwards(counters: &[(Verdict, dataplane::abi::xe_counter)]) -> u64 {
    counters
        .iter()
        .find(|(v, _)| *v == Verdict::Forward)
        .map_or(0, |(_, c)| c.packets)
}

fn engine_forwards(pins: &PinDir) -> u64 {
    forwards(
        &pinned_engine_counters(&pins.0)
            .expect("counters")
            .unwrap_or_default(),
    )
}

fn total_forwards(pins: &PinDir) -> u64 {
    forwards(&pinned_verdict_counters(&pins.0).expect("counters"))
}

/// Sends UDP flows with source ports `ports` into xe-in (in chunks, the
/// sinks drained in between); returns how many arrived on each egress peer.
fn send(ports: std::ops::Range<u16>) -> [usize; 2] {
    let tx = packet_socket(ifindex_of("xe-h0").expect("xe-h0")).expect("tx");
    let rx =
        [0, 1].map(|i| packet_socket(ifindex_of(&format!("xe-p{i}")).expect("sink")).expect("rx"));
    let mut seen = [HashSet::new(), HashSet::new()];
    let mut buf = [0u8; 2048];
    let all: Vec<u16> = ports.clone().collect();
    for chunk in all.chunks(200) {
        for sport in chunk {
            let flow = Flow {
                proto: 17,
                src: "10.2.0.100".parse().expect("src"),
                dst: "172.16.255.66".parse().expect("dst"),
                sport: *sport,
                dport: 53,
            };
            send_frame(&tx, &build_frame(&flow, IN_MAC).expect("frame")).expect("send");
        }
        let until = Instant::now() + Duration::from_millis(150);
        while Instant::now() < until {
            for (i, fd) in rx.iter().enumerate() {
                while let Some(n) = recv_frame(fd, &mut buf) {
                    if n >= 38 && buf[12..14] == [0x08, 0x00] && buf[23] == 17 {
                        let sport = u16::from_be_bytes([buf[34], buf[35]]);
                        if ports.contains(&sport) {
                            seen[i].insert(sport);
                        }
                    }
                }
            }
        }
    }
    [seen[0].len(), seen[1].len()]
}

#[test]
fn the_afxdp_engine_forwards_and_hands_back_to_the_program() {
    if !require_root("the_afxdp_engine_forwards_and_hands_back_to_the_program") {
        return;
    }
    let net = fabric("afxdp-run", 2);
    anycast_route(&net, &[0, 1]);
    let pins = PinDir::new("afxdp-run");
    let d = Daemon::start(
        &net,
        &pins,
        &[
            "-p",
            "xe-in",
            "-p",
            "xe-o0",
            "-p",
            "xe-o1",
            "--engine",
            "afxdp",
            "--run-for",
            "60",
        ],
        true,
    );
    net.enter().expect("enter");
    // The engine starts after the first sync: until then the program
    // forwards. Wait for its first forward.
    let t0 = Instant::now();
    let mut probe = 60000;
    while engine_forwards(&pins) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the engine never forwarded"
        );
        send(probe..probe + 1);
        probe += 1;
    }
    let (engine0, total0) = (engine_forwards(&pins), total_forwards(&pins));
    const N: u16 = 2000;
    let got = send(1000..1000 + N);
    std::thread::sleep(Duration::from_millis(500)); // the counters are stored every 200 ms
    let (engine1, total1) = (engine_forwards(&pins), total_forwards(&pins));
    println!(
        "afxdp run: {N} flows sent, {} arrived on xe-p0 and {} on xe-p1; engine counted {}, stats' forward {}",
        got[0],
        got[1],
        engine1 - engine0,
        total1 - total0
    );
    assert_eq!(got[0] + got[1], usize::from(N), "every flow arrived");
    assert!(got[0] > 0 && got[1] > 0, "over both next hops");
    assert_eq!(engine1 - engine0, u64::from(N), "the engine forwarded them");
    assert_eq!(
        total1 - total0,
        u64::from(N),
        "and `stats` counts them once"
    );

    let stats = support::text(&support::xdp_ecmp(&net, &pins, &["stats"]));
    println!("{stats}");
    let row = stats
        .lines()
        .find(|l| l.trim_start().starts_with("afxdp forward"))
        .unwrap_or_else(|| panic!("no afxdp row in stats:\n{stats}"));
    assert!(row.contains(&engine1.to_string()), "{row}");
    let log = d.stop();
    assert!(log.contains("AF_XDP engine started"), "{log}");
    // The pinned program stays: with no engine it forwards by itself.
    let got = send(3000..3100);
    std::thread::sleep(Duration::from_millis(100));
    let (engine2, total2) = (engine_forwards(&pins), total_forwards(&pins));
    println!(
        "after the daemon stopped: 100 flows, {} arrived; the program counted {}, the engine {}",
        got[0] + got[1],
        total2 - total1,
        engine2 - engine1
    );
    assert_eq!(got[0] + got[1], 100);
    assert_eq!((total2 - total1, engine2 - engine1), (100, 0));
}
