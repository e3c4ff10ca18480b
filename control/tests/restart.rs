//! kill -9 and restart of the daemon under live traffic: the pinned program keeps forwarding, no frame is lost, and the adopted bucket table is unchanged.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::ifindex_of;
use support::{anycast_route, fabric, set_neighbour, Daemon, PinDir, IN_MAC};
use testnet::{packet_socket, recv_frame, require_root, send_frame, TestNet};

mod support;

fn start(net: &TestNet, pins: &PinDir, extra: &[&str]) -> Daemon {
    let args = [
        &["-p", "xe-in", "--idle-timer", "0", "--hash-seed", "1234"],
        extra,
    ]
    .concat();
    Daemon::start(net, pins, &args, false)
}

/// The anycast route's buckets as egress ifindexes, once the maps hold it.
fn buckets(pins: &PinDir) -> Option<Vec<u32>> {
    let dp = control::inspect::open(&pins.0).ok()?;
    let r = dp
        .routes_v4()
        .ok()?
        .into_iter()
        .find(|(a, l, _)| a.octets() == [172, 16, 255, 66] && *l == 32)?
        .2;
    let g = dp.group(r.group).ok()?;
    let ids = dp.slots(g.base, u32::from(g.size)).ok()?;
    let out: Vec<u32> = ids
        .iter()
        .map(|id| dp.nexthop(*id).map(|n| n.ifindex).unwrap_or(0))
        .collect();
    // Every bucket written (three equal next hops: 129 of them, 43 each).
    (!out.is_empty() && out.iter().all(|i| *i != 0)).then_some(out)
}

fn wait_for_buckets(pins: &PinDir) -> Vec<u32> {
    let t0 = Instant::now();
    loop {
        if let Some(b) = buckets(pins) {
            return b;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "daemon never wrote the anycast route"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kill_and_restart_under_traffic_loses_nothing() {
    if !require_root("kill_and_restart_under_traffic_loses_nothing") {
        return;
    }
    let net = fabric("restart", 3);
    anycast_route(&net, &[0, 1, 2]);
    let pins = PinDir::new("restart");
    let first = start(&net, &pins, &[]);
    net.enter().expect("enter");
    let initial = wait_for_buckets(&pins);
    // Move the table away from the layout a fresh start would build, so that
    // an unchanged table after the restart proves it was adopted.
    net.ip(&["link", "set", "xe-o1", "down"]).expect("down");
    std::thread::sleep(Duration::from_millis(300));
    net.ip(&["link", "set", "xe-o1", "up"]).expect("up");
    set_neighbour(&net, 1, 0);
    std::thread::sleep(Duration::from_millis(500));
    let before = wait_for_buckets(&pins);
    let reshuffled = initial.iter().zip(&before).filter(|(a, b)| a != b).count();
    assert!(reshuffled > 0, "link down/up changed the layout");

    // Traffic: many flows, paced, counted on both egress peers.
    let tx = packet_socket(ifindex_of("xe-h0").expect("if")).expect("tx");
    let rx: Vec<_> = ["xe-p0", "xe-p1", "xe-p2"]
        .iter()
        .map(|d| packet_socket(ifindex_of(d).expect("if")).expect("rx"))
        .collect();
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let receivers: Vec<_> = rx
        .into_iter()
        .map(|fd| {
            let (received, done) = (received.clone(), done.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let mut quiet_since = None;
                loop {
                    match recv_frame(&fd, &mut buf) {
                        Some(n)
                            if n > 42
                                && buf[12..14] == [0x08, 0x00]
                                && buf[36..38] == 53u16.to_be_bytes() =>
                        {
                            received.fetch_add(1, Ordering::Relaxed);
                            quiet_since = None;
                        }
                        _ => {
                            if done.load(Ordering::Relaxed) {
                                let q = *quiet_since.get_or_insert_with(Instant::now);
                                if q.elapsed() > Duration::from_millis(500) {
                                    return;
                                }
                            }
                        }
                    }
                }
            })
        })
        .collect();
    const FRAMES: u64 = 20_000;
    let sent_at_kill = Arc::new(AtomicU64::new(0));
    let sender = {
        let sent_at_kill = sent_at_kill.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            for i in 0..FRAMES {
                let flow = control::inspect::Flow {
                    proto: 17,
                    src: format!("10.2.{}.{}", (i >> 8) & 0xff, i & 0xff)
                        .parse()
                        .expect("src"),
                    dst: "172.16.255.66".parse().expect("dst"),
                    sport: 1024 + (i % 60_000) as u16,
                    dport: 53,
                };
                let frame = control::inspect::build_frame(&flow, IN_MAC).expect("frame");
                send_frame(&tx, &frame).expect("send");
                // ~8k frames/s: the restart happens in the middle of the run.
                let due = Duration::from_micros(i * 125);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
                sent_at_kill.store(i + 1, Ordering::Relaxed);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    first.kill();
    let killed_after = sent_at_kill.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(500));
    let second = start(&net, &pins, &["--metrics", "127.0.0.1:19477"]);
    std::thread::sleep(Duration::from_millis(600));
    let after = wait_for_buckets(&pins);
    sender.join().expect("sender");
    done.store(true, Ordering::Relaxed);
    for r in receivers {
        r.join().expect("receiver");
    }
    let got = received.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(600));
    let metrics = fetch_metrics("127.0.0.1:19477");
    drop(second);
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let fwd = value("xdp_ecmp_verdict_packets_total{verdict=\"forward\"}");
    let per_nh = value("xdp_ecmp_nexthop_packets_total{");
    println!(
        "metrics: forward counter {fwd}, per-next-hop sum {per_nh}, {} metric lines",
        metrics.lines().count()
    );
    assert!(
        fwd >= FRAMES,
        "forward counter counts every frame of the run"
    );
    assert_eq!(
        per_nh, fwd,
        "next-hop counters add up to the forward counter"
    );
    assert!(metrics.contains("xdp_ecmp_event_to_map_seconds{quantile=\"0.99\"}"));
    assert!(metrics.contains("xdp_ecmp_group_imbalance{group="));
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    let n = before.len();
    println!(
        "restart: {FRAMES} frames sent, {got} forwarded, {} lost; kill -9 after {killed_after} frames, restart 0.5 s later; {moved}/{n} buckets changed across the restart (the table had {reshuffled}/{n} buckets away from a fresh layout)",
        FRAMES - got
    );
    assert_eq!(got, FRAMES, "frames lost across kill -9 + restart");
    assert_eq!(
        moved, 0,
        "the restarted daemon adopts the bucket table as it was"
    );
}

/// GET /metrics over loopback in the test namespace.
fn fetch_metrics(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    out
}

/// The running program's hash seed.
fn running_seed(pins: &PinDir) -> u64 {
    let c = control::inspect::open(&pins.0)
        .and_then(|dp| Ok(dp.config()?))
        .expect("pinned config");
    control::seed::of_config(&c)
}

#[test]
fn the_hash_seed_survives_restarts_and_reboots_and_changes_only_when_asked() {
    if !require_root("the_hash_seed_survives_restarts_and_reboots_and_changes_only_when_asked") {
        return;
    }
    let net = fabric("seed", 2);
    anycast_route(&net, &[0, 1]);
    let pins = PinDir::new("seed");
    let run =
        |extra: &[&str]| Daemon::start(&net, &pins, &[&["-p", "xe-in"], extra].concat(), true);

    let d = run(&[]);
    let first = running_seed(&pins);
    d.kill();
    // kill -9 and a new start: the pinned program's seed is kept.
    let d = run(&[]);
    let after_restart = running_seed(&pins);
    d.kill();
    // A reboot: pins (and the program) are gone; the state file keeps the seed.
    support::xdp_ecmp(&net, &pins, &["detach", "xe-in"]);
    std::fs::remove_dir_all(&pins.0).expect("remove pins");
    let d = run(&[]);
    let after_reboot = running_seed(&pins);
    let log = d.stop();
    assert!(log.contains("hash seed kept from the state file"), "{log}");
    // Only an explicit flag changes it, with a warning.
    let d = run(&["--new-hash-seed"]);
    let renewed = running_seed(&pins);
    let log = d.stop();
    println!(
        "seed: first {first:016x}, after kill -9 {after_restart:016x}, after a reboot {after_reboot:016x}, --new-hash-seed {renewed:016x}"
    );
    assert_eq!(after_restart, first, "a restart keeps the seed");
    assert_eq!(after_reboot, first, "a reboot keeps the seed");
    assert_ne!(renewed, first, "--new-hash-seed makes a new one");
    assert!(
        log.contains("hash seed changes") && log.contains("established flows move"),
        "changing the seed says so: {log}"
    );
    let d = run(&[]);
    assert_eq!(running_seed(&pins), renewed, "and the new one is kept");
    drop(d);
    support::xdp_ecmp(&net, &pins, &["detach", "xe-in"]);
}
