//! No torn state: under live traffic, next hops change MAC, links flap and groups resize; every frame that leaves carries a MAC that was valid, never a zero or half-written one.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::inspect::{build_frame, Flow};
use dataplane::ifindex_of;
use support::{anycast_route, fabric, neighbour_mac, set_neighbour, Daemon, PinDir, IN_MAC};
use testnet::{packet_socket, recv_frame, require_root, send_frame};

mod support;

#[test]
fn frames_never_meet_a_half_written_next_hop() {
    if !require_root("frames_never_meet_a_half_written_next_hop") {
        return;
    }
    const PORTS: usize = 3;
    let net = fabric("torn", PORTS);
    anycast_route(&net, &[0, 1, 2]);
    let pins = PinDir::new("torn");
    // Modulo groups resize on every member change: the hardest case.
    let _daemon = Daemon::start(
        &net,
        &pins,
        &["-p", "xe-in", "--plain-groups", "modulo", "--run-for", "60"],
        false,
    );
    std::thread::sleep(Duration::from_millis(500));
    net.enter().expect("enter");

    let valid: HashSet<[u8; 6]> = (0..PORTS)
        .flat_map(|p| (0..2).map(move |v| neighbour_mac(p, v)))
        .collect();
    let (good, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let done = Arc::new(AtomicBool::new(false));
    let receivers: Vec<_> = (0..PORTS)
        .map(|p| {
            let fd = packet_socket(ifindex_of(&format!("xe-p{p}")).expect("if")).expect("rx");
            let (good, bad, done, valid) = (good.clone(), bad.clone(), done.clone(), valid.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                loop {
                    match recv_frame(&fd, &mut buf) {
                        Some(n)
                            if n > 38
                                && buf[12..14] == [0x08, 0x00]
                                && buf[36..38] == 53u16.to_be_bytes() =>
                        {
                            let dmac: [u8; 6] = buf[..6].try_into().expect("mac");
                            // The MAC must be a real neighbour of this very port.
                            if valid.contains(&dmac)
                                && usize::from(dmac[4]) == p
                                && buf[14 + 8] == 63
                            {
                                good.fetch_add(1, Ordering::Relaxed);
                            } else {
                                bad.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Some(_) => {}
                        None if done.load(Ordering::Relaxed) => return,
                        None => {}
                    }
                }
            })
        })
        .collect();
    let tx = packet_socket(ifindex_of("xe-h0").expect("if")).expect("tx");
    let sender_done = done.clone();
    let sent = Arc::new(AtomicU64::new(0));
    let sent2 = sent.clone();
    let sender = std::thread::spawn(move || {
        let mut i = 0u64;
        while !sender_done.load(Ordering::Relaxed) {
            let flow = Flow {
                proto: 17,
                src: format!("10.2.{}.{}", (i >> 8) & 0xff, i & 0xff)
                    .parse()
                    .expect("src"),
                dst: "172.16.255.66".parse().expect("dst"),
                sport: 1024 + (i % 50_000) as u16,
                dport: 53,
            };
            let frame = build_frame(&flow, IN_MAC).expect("frame");
            send_frame(&tx, &frame).expect("send");
            i += 1;
            sent2.store(i, Ordering::Relaxed);
            if i.is_multiple_of(16) {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    });
    // Churn the next hops under the traffic.
    let start = Instant::now();
    let mut rounds = 0;
    while start.elapsed() < Duration::from_secs(4) {
        let v = rounds % 2;
        for p in 0..PORTS {
            set_neighbour(&net, p, (v + 1) % 2);
        }
        anycast_route(&net, if rounds % 2 == 0 { &[0, 2] } else { &[0, 1, 2] });
        rounds += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    done.store(true, Ordering::Relaxed);
    sender.join().expect("sender");
    for r in receivers {
        r.join().expect("receiver");
    }
    let (good, bad, sent) = (
        good.load(Ordering::Relaxed),
        bad.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed),
    );
    println!("torn: {rounds} rounds of MAC changes and group resizes under traffic; {sent} frames sent, {good} left with a valid MAC for their port, {bad} did not");
    assert_eq!(
        bad, 0,
        "a frame left with a MAC that was never valid for its port"
    );
    assert_eq!(
        good, sent,
        "every frame is forwarded: no packet meets a removed or unresolved next hop"
    );
}
