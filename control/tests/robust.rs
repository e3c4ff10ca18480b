//! No valid kernel state stops the daemon: a multipath route that lists a hop twice (the kernel accepts it) is forwarded with both shares, as the kernel does, while the daemon keeps syncing other routes, also after a restart with the route in place.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dataplane::ifindex_of;
use support::{fabric, Daemon, PinDir};
use testnet::{require_root, TestNet};

mod support;

/// Buckets per egress port of the route `a.b.c.d/len` in the pinned maps.
fn split(pins: &PinDir, dst: [u8; 4], len: u8) -> Option<BTreeMap<String, usize>> {
    let dp = control::inspect::open(&pins.0).ok()?;
    let r = dp
        .routes_v4()
        .ok()?
        .into_iter()
        .find(|(a, l, _)| a.octets() == dst && *l == len)?
        .2;
    let g = dp.group(r.group).ok()?;
    let mut n = BTreeMap::new();
    for id in dp.slots(g.base, u32::from(g.size)).ok()? {
        let port = match dp.nexthop(id).ok()?.ifindex {
            0 => "none".to_string(),
            i if Some(i) == ifindex_of("xe-o0").ok() => "xe-o0".to_string(),
            i if Some(i) == ifindex_of("xe-o1").ok() => "xe-o1".to_string(),
            i => format!("ifindex {i}"),
        };
        *n.entry(port).or_default() += 1;
    }
    Some(n)
}

/// Waits until the route's buckets are split as `want` (port, buckets).
fn wait_for(pins: &PinDir, daemon: &mut Daemon, dst: [u8; 4], len: u8, want: &[(&str, usize)]) {
    let want: BTreeMap<String, usize> = want.iter().map(|(p, n)| (p.to_string(), *n)).collect();
    let t0 = Instant::now();
    loop {
        let got = split(pins, dst, len);
        if got.as_ref() == Some(&want) {
            return;
        }
        if let Ok(Some(status)) = daemon.0.try_wait() {
            panic!("the daemon exited ({status}) before writing {dst:?}/{len}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{dst:?}/{len}: buckets {got:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Of 3,000 UDP flows, how many the kernel sends out of each port.
fn kernel_split(net: &TestNet, dst: &str) -> BTreeMap<String, usize> {
    let mut ip = Command::new("ip")
        .args(["-n", net.name(), "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("ip -batch");
    let mut batch = String::new();
    for sport in 10_000..13_000 {
        batch.push_str(&format!(
            "route get {dst} ipproto udp sport {sport} dport 53\n"
        ));
    }
    // Written beside the read: ip's answers would fill the pipe first.
    let mut stdin = ip.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(batch.as_bytes()));
    let out = ip.wait_with_output().expect("ip -batch output");
    writer.join().expect("writer").expect("batch");
    let mut n = BTreeMap::new();
    for word in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if word.starts_with("xe-o") {
            *n.entry(word.to_string()).or_default() += 1;
        }
    }
    n
}

#[test]
fn a_hop_listed_twice_neither_stops_the_daemon_nor_its_restart() {
    if !require_root("a_hop_listed_twice_neither_stops_the_daemon_nor_its_restart") {
        return;
    }
    let net = fabric("dup", 2);
    net.enter().expect("enter");
    // In the kernel before the daemon starts, as after a crash.
    net.ip(&[
        "route",
        "add",
        "172.16.0.0/24",
        "nexthop",
        "via",
        "10.0.0.2",
        "nexthop",
        "via",
        "10.0.1.2",
        "nexthop",
        "via",
        "10.0.0.2",
    ])
    .expect("the kernel accepts a hop listed twice");
    // The kernel's own choice: the hop listed twice gets two shares.
    let ns = net.name().to_string();
    let sysctl = Command::new("ip")
        .args(["netns", "exec", &ns, "sysctl", "-qw"])
        .arg("net.ipv4.fib_multipath_hash_policy=1")
        .status()
        .expect("sysctl");
    assert!(sysctl.success());
    let kernel = kernel_split(&net, "172.16.0.5");
    let share = kernel["xe-o0"] as f64 / 3000.0;
    println!(
        "kernel: {kernel:?} ({:.1}% to the hop listed twice)",
        share * 100.0
    );
    assert!((share - 2.0 / 3.0).abs() < 0.05, "kernel split {kernel:?}");

    let pins = PinDir::new("dup");
    let mut daemon = Daemon::start(&net, &pins, &["-p", "xe-in"], false);
    wait_for(
        &pins,
        &mut daemon,
        [172, 16, 0, 0],
        24,
        &[("xe-o0", 85), ("xe-o1", 43)],
    );
    // Other routes keep being synced, and another duplicate while running.
    net.ip(&["route", "add", "172.16.1.0/24", "via", "10.0.1.2"])
        .expect("route");
    net.ip(&[
        "route",
        "add",
        "172.16.2.0/24",
        "nexthop",
        "via",
        "10.0.1.2",
        "nexthop",
        "via",
        "10.0.1.2",
    ])
    .expect("route");
    wait_for(&pins, &mut daemon, [172, 16, 1, 0], 24, &[("xe-o1", 128)]);
    wait_for(&pins, &mut daemon, [172, 16, 2, 0], 24, &[("xe-o1", 128)]);
    daemon.kill();

    // A restart with both in the kernel: it runs, adopts and goes on syncing.
    let mut again = Daemon::start(&net, &pins, &["-p", "xe-in"], false);
    net.ip(&["route", "add", "172.16.3.0/24", "via", "10.0.0.2"])
        .expect("route");
    wait_for(&pins, &mut again, [172, 16, 3, 0], 24, &[("xe-o0", 128)]);
    wait_for(
        &pins,
        &mut again,
        [172, 16, 0, 0],
        24,
        &[("xe-o0", 85), ("xe-o1", 43)],
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        matches!(again.0.try_wait(), Ok(None)),
        "the restarted daemon keeps running"
    );
    net.ip(&["route", "del", "172.16.1.0/24"])
        .expect("route del");
    let t0 = Instant::now();
    while split(&pins, [172, 16, 1, 0], 24).is_some() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the delete reached the maps"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
