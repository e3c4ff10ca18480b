//! The kernel-differential oracle: the daemon runs in a namespace through a seeded random sequence of operational events; after each, the maps must equal a fresh kernel dump, and for random frames the program's verdict must be one the kernel's own lookup allows (a forward leaves by a live next hop of the kernel's route, to the kernel's neighbour MAC).

use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use control::inspect::Flow;
use control::state::KernelState;
use control::translate::PlainGroupMode;
use dataplane::abi::Verdict;
use dataplane::Dataplane;
use dataplane::{current_cpu, pin_thread_to_cpu};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use testnet::{require_root, TestNet};

use crate::events::{Event, Events, PORTS, PREFIXES_V4, PREFIXES_V6};
use crate::kernel::{Kernel, Kind, Query};
use crate::support::{command, PinDir};

/// The daemon's group mode by default: resilient, 128 buckets, idle 120 s.
/// The daemon's defaults: 128 buckets, more where weights need them.
const MODE: PlainGroupMode = PlainGroupMode::Resilient {
    buckets: 128,
    max_buckets: 4096,
    idle_timer_ms: 120_000,
    unbalanced_timer_ms: 0,
};

/// What a run saw.
#[derive(Default, Debug)]
pub struct Tally {
    pub events: u64,
    pub refused: u64,
    pub flows: u64,
    pub forwarded: u64,
    pub passed: u64,
    pub dropped: u64,
    pub violations: Vec<String>,
    pub settle_ms_max: u128,
}

/// The frame the oracle sends: a flow, its TTL and size, the destination
/// MAC (the port's, or a foreign one) and an optional VLAN tag.
struct Frame {
    flow: Flow,
    ttl: u8,
    payload: usize,
    dst_mac: [u8; 6],
    vlan: Option<u16>,
}

impl Frame {
    fn bytes(&self) -> Vec<u8> {
        use etherparse::PacketBuilder;
        let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0x77], self.dst_mac);
        let ip = match (self.flow.src, self.flow.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), self.ttl),
            (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), self.ttl),
            _ => unreachable!("one family per flow"),
        };
        let payload = vec![0u8; self.payload];
        let mut out = Vec::new();
        let written = match self.flow.proto {
            6 => ip
                .tcp(self.flow.sport, self.flow.dport, 1, 64240)
                .write(&mut out, &payload),
            _ => ip
                .udp(self.flow.sport, self.flow.dport)
                .write(&mut out, &payload),
        };
        written.expect("building a frame");
        if let Some(id) = self.vlan {
            let mut tag = vec![0x81, 0x00];
            tag.extend(id.to_be_bytes());
            out.splice(12..12, tag);
        }
        out
    }

    /// What `ip route get … iif` asks of the kernel for this frame.
    fn query(&self, iif: u32) -> Query {
        Query {
            src: self.flow.src,
            dst: self.flow.dst,
            iif,
            proto: self.flow.proto,
            sport: self.flow.sport,
            dport: self.flow.dport,
            tos: 0,
        }
    }

    /// IP packet length.
    fn l3_len(&self) -> usize {
        let l4 = if self.flow.proto == 6 { 20 } else { 8 };
        let l3 = if self.flow.dst.is_ipv6() { 40 } else { 20 };
        l3 + l4 + self.payload
    }
}

/// A random address inside `prefix`.
fn address_in(rng: &mut StdRng, prefix: &str) -> IpAddr {
    let (a, l) = prefix.split_once('/').expect("a prefix");
    let len: u32 = l.parse().expect("a length");
    match a.parse::<IpAddr>().expect("an address") {
        IpAddr::V4(v) => {
            let host = if len == 32 {
                0
            } else {
                rng.random::<u32>() >> len
            };
            IpAddr::V4(std::net::Ipv4Addr::from(u32::from(v) | host))
        }
        IpAddr::V6(v) => {
            let host = if len == 128 {
                0
            } else {
                rng.random::<u128>() >> len
            };
            IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v) | host))
        }
    }
}

/// A random frame arriving on the ingress port: to a prefix in play, from
/// the ingress subnet (now and then from anywhere), now and then with TTL 1,
/// a large payload, a foreign destination MAC or a VLAN tag.
fn random_frame(rng: &mut StdRng, port_mac: [u8; 6]) -> Frame {
    let v6 = rng.random_bool(0.4);
    let pool = if v6 { PREFIXES_V6 } else { PREFIXES_V4 };
    let prefix = pool.choose(rng).copied().unwrap_or(pool[0]);
    let dst = address_in(rng, prefix);
    // Sources the kernel refuses to forward from: its own addresses, a
    // subnet broadcast, loopback, multicast, link-local, unspecified.
    const ODD_V4: &[&str] = &[
        "10.2.0.1",
        "10.0.1.1",
        "172.16.1.7",
        "10.2.0.255",
        "127.0.0.1",
        "0.0.0.7",
        "224.0.0.5",
        "255.255.255.255",
        "240.0.0.1",
    ];
    const ODD_V6: &[&str] = &[
        "2001:db8:2::1",
        "2001:db8:101::1",
        "2001:db8:99:1::7",
        "::1",
        "::",
        "fe80::1",
        "ff02::1",
    ];
    let src = match (v6, rng.random_range(0..100)) {
        (false, 0..=3) => ODD_V4
            .choose(rng)
            .map_or(dst, |a| a.parse().expect("address")),
        (true, 0..=3) => ODD_V6
            .choose(rng)
            .map_or(dst, |a| a.parse().expect("address")),
        (false, 4..=89) => address_in(rng, "10.2.0.0/24"),
        (true, 4..=89) => address_in(rng, "2001:db8:2::/64"),
        (false, _) => address_in(rng, "198.18.0.0/15"),
        (true, _) => address_in(rng, "2001:db8:77::/48"),
    };
    let odd: u32 = rng.random_range(0..100);
    Frame {
        flow: Flow {
            proto: if rng.random_bool(0.5) { 17 } else { 6 },
            src,
            dst,
            sport: rng.random_range(1024..65535),
            dport: *[53u16, 80, 443, 4000].choose(rng).unwrap_or(&53),
        },
        ttl: if odd < 4 { 1 } else { 64 },
        payload: if (4..14).contains(&odd) { 1340 } else { 18 },
        dst_mac: if (14..19).contains(&odd) {
            [2, 0, 0, 0x0f, 0x0f, 0x0f]
        } else {
            port_mac
        },
        vlan: (19..23).contains(&odd).then_some(5),
    }
}

/// The program's decision: (verdict, egress ifindex, next-hop MAC).
fn decide(dp: &Dataplane, ifindex: u32, frame: &[u8]) -> (Verdict, u32, [u8; 6]) {
    let mut out = vec![0u8; frame.len() + 64];
    dp.test_run_from(ifindex, frame, &mut out, 1)
        .expect("BPF_PROG_TEST_RUN");
    let d = dp.last_decision(current_cpu()).expect("the decision trace");
    let v = Verdict::from_u32(d.verdict).expect("a known verdict");
    if v != Verdict::Forward {
        return (v, 0, [0; 6]);
    }
    let nh = dp.nexthop(d.nexthop).expect("the next hop");
    (v, nh.ifindex, nh.dmac)
}

fn sysctl_on(path: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|v| v.trim() != "0")
}

/// The MTU and MAC of an interface of this thread's namespace.
fn link(kernel_links: &KernelState, ifindex: u32) -> Option<(u32, [u8; 6])> {
    kernel_links.links.get(&ifindex).map(|l| (l.mtu, l.mac))
}

/// Why `egress` would drop a redirected frame: a veth port whose peer has
/// no GRO (and no XDP program: the oracle attaches none); None if it sends.
fn transmits(gro: &[bool], egress: u32) -> Option<String> {
    let name = crate::if_name(egress);
    let p: usize = name.strip_prefix("xe-o")?.parse().ok()?;
    (!gro[p]).then(|| format!("redirected to {name}, whose peer has no GRO: dropped"))
}

/// Why forwarding `frame` out of `egress` to `dmac` is not what the kernel
/// would do; None when it is.
#[allow(clippy::too_many_arguments)]
fn forward_violation(
    kernel: &mut Kernel,
    links: &KernelState,
    in_if: u32,
    in_mac: [u8; 6],
    f: &Frame,
    egress: u32,
    dmac: [u8; 6],
) -> Option<String> {
    if f.dst_mac != in_mac {
        return Some("forwarded a frame addressed to another host's MAC".into());
    }
    if f.vlan.is_some() {
        return Some("forwarded a VLAN-tagged frame".into());
    }
    if f.ttl <= 1 {
        return Some("forwarded a frame with TTL 1".into());
    }
    if f.flow.dst.is_ipv6() && !sysctl_on("/proc/sys/net/ipv6/conf/all/forwarding") {
        return Some("forwarded IPv6 with IPv6 forwarding off".into());
    }
    let a = match kernel.route(&f.query(in_if)) {
        Ok(a) => a,
        Err(e) => return Some(format!("the kernel's lookup failed: {e:#}")),
    };
    if a.chosen_kind != Kind::Unicast || a.kind != Kind::Unicast {
        return Some(format!(
            "the kernel would not forward it: {:?} / {:?}",
            a.kind, a.chosen_kind
        ));
    }
    let live: Vec<_> = a
        .hops
        .iter()
        .filter(|h| h.ifindex == egress && !h.dead)
        .collect();
    if live.is_empty() {
        return Some(format!(
            "left by ifindex {egress}, not a live hop of the kernel's route {:?} {:?}",
            a.prefix, a.hops
        ));
    }
    // One of the route's live hops on that port must have the kernel's
    // neighbour entry with that MAC (a port may carry several gateways).
    let mut seen = Vec::new();
    for hop in live {
        let target = hop.gateway.unwrap_or(f.flow.dst);
        let n = kernel.neighbour(egress, target);
        if matches!(&n, Ok(Some(n)) if n.usable() && n.mac == Some(dmac)) {
            seen.clear();
            break;
        }
        seen.push(format!("{target}: {n:?}"));
    }
    if !seen.is_empty() {
        return Some(format!(
            "sent to MAC {dmac:02x?} by ifindex {egress}; the kernel's neighbours there: {seen:?}"
        ));
    }
    let mtu = link(links, egress).map_or(0, |l| l.0);
    let mtu = a.mtu.map_or(mtu, |m| m.mtu.min(mtu));
    if f.l3_len() > mtu as usize {
        return Some(format!(
            "forwarded {} bytes where the MTU is {mtu}",
            f.l3_len()
        ));
    }
    None
}

/// Waits until the maps equal a fresh dump (3 s at most); the differences left.
fn settle(
    mirror: &mut control::mirror::Mirror,
    dp: &Dataplane,
) -> (Vec<String>, KernelState, u128) {
    let t0 = Instant::now();
    loop {
        let fresh = mirror.resync(254).expect("a fresh dump");
        let mut diffs = control::check::check(&fresh, dp, MODE).expect("comparing the maps");
        // The ingress port's admission: its switches as the kernel has them now.
        let want = control::forwarding::flags_now("xe-in");
        let have = dp
            .inports()
            .expect("the ingress ports")
            .into_iter()
            .find(|(i, _)| *i == crate::ifindex("xe-in"))
            .map(|(_, p)| p.flags);
        if have != Some(want) {
            diffs.push(format!(
                "xe-in admitted with flags {have:?}, the kernel's switches say {want}"
            ));
        }
        if diffs.is_empty() || t0.elapsed() > Duration::from_secs(3) {
            return (diffs, fresh, t0.elapsed().as_millis());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs an event's commands; the number the kernel refused. `gro` follows
/// the peers' GRO as the oracle sets it (whether xe-o<p> transmits
/// redirected frames), known without asking the code under test.
fn run_event(net: &TestNet, ev: &Event, gro: &mut [bool]) -> u64 {
    let mut refused = 0;
    for c in &ev.commands {
        let st = if c[0] == "sysctl" || c[0] == "ethtool" {
            Command::new("ip")
                .args(["netns", "exec", net.name()])
                .args(c)
                .stderr(Stdio::null())
                .status()
        } else {
            Command::new("ip")
                .args(["-n", net.name()])
                .args(c)
                .stderr(Stdio::null())
                .status()
        };
        if !st.is_ok_and(|s| s.success()) {
            refused += 1;
        } else if let ["ethtool", "-K", peer, "gro", state] =
            &c.iter().map(String::as_str).collect::<Vec<_>>()[..]
        {
            if let Some(p) = peer
                .strip_prefix("xe-p")
                .and_then(|p| p.parse::<usize>().ok())
            {
                gro[p] = *state == "on";
            }
        }
    }
    refused
}

/// Runs `events` events from `seed` with `frames` frames after each; the
/// daemon's log (`log`) is read after each step for anti-entropy repairs,
/// each reported with the events just before it.
pub fn run(
    net: &TestNet,
    pins: &PinDir,
    log: &std::path::Path,
    seed: u64,
    events: u64,
    frames: u32,
) -> Tally {
    pin_thread_to_cpu(current_cpu()).expect("pinning to one CPU (the decision trace is per CPU)");
    let dp = control::inspect::open(&pins.0).expect("the pinned maps");
    let mut kernel = Kernel::open().expect("a netlink socket");
    let mut mirror = control::mirror::Mirror::open(1 << 16).expect("a netlink socket");
    let in_if = crate::ifindex("xe-in");
    let mut gen = Events::new(seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut t = Tally::default();
    let mut recent: std::collections::VecDeque<String> = Default::default();
    let mut log_seen = 0u64;
    let mut printed = 0;
    // The namespace starts with GRO on every peer (oracle_net).
    let mut gro = [true; crate::events::PORTS];
    let started = Instant::now();
    // XE_ORACLE_TRACE prints every event as it runs.
    let trace = std::env::var("XE_ORACLE_TRACE").is_ok();
    // XE_ORACLE_PAUSE_AT=N stops before step N (to replay it by hand).
    let pause_at: Option<u64> = std::env::var("XE_ORACLE_PAUSE_AT")
        .ok()
        .and_then(|v| v.parse().ok());
    for step in 0..events {
        let ev = gen.next();
        if pause_at == Some(step) {
            eprintln!(
                "PAUSED before step {step} ({}); namespace {}",
                ev.what,
                net.name()
            );
            std::thread::sleep(Duration::from_secs(900));
        }
        t.refused += run_event(net, &ev, &mut gro);
        t.events += 1;
        if trace {
            println!("event {step}: {}", ev.what);
        }
        recent.push_back(format!("{step}: {}", ev.what));
        if recent.len() > 12 {
            recent.pop_front();
        }
        let (diffs, fresh, ms) = settle(&mut mirror, &dp);
        t.settle_ms_max = t.settle_ms_max.max(ms);
        if !diffs.is_empty() && std::env::var("XE_ORACLE_PAUSE").is_ok() {
            eprintln!(
                "PAUSED at step {step} ({}): {diffs:?}; namespace {} pins {}",
                ev.what,
                net.name(),
                pins.0.display()
            );
            std::thread::sleep(Duration::from_secs(900));
        }
        if !diffs.is_empty() {
            t.violations.push(format!(
                "step {step} ({}): the maps differ from a fresh kernel dump: {diffs:?}",
                ev.what
            ));
        }
        let in_mac = link(&fresh, in_if).map_or([0; 6], |l| l.1);
        for _ in 0..frames {
            let f = random_frame(&mut rng, in_mac);
            let (v, egress, dmac) = decide(&dp, in_if, &f.bytes());
            t.flows += 1;
            match v {
                Verdict::Forward => {
                    t.forwarded += 1;
                    if let Some(why) =
                        forward_violation(&mut kernel, &fresh, in_if, in_mac, &f, egress, dmac)
                            .or_else(|| transmits(&gro, egress))
                    {
                        // The kernel asked again a moment later: a transient
                        // answer shows here as a different prefix.
                        std::thread::sleep(Duration::from_millis(100));
                        let again = kernel
                            .route(&f.query(in_if))
                            .map(|a| format!("{:?} {:?}", a.prefix, a.chosen))
                            .unwrap_or_else(|e| format!("{e:#}"));
                        let why = format!("{why} (100 ms later the kernel says {again})");
                        t.violations.push(format!(
                            "step {step} ({}): {} -> {} {} sport {} ttl {} len {} mac {:02x?} vlan {:?}: {why}",
                            ev.what,
                            f.flow.src,
                            f.flow.dst,
                            f.flow.proto,
                            f.flow.sport,
                            f.ttl,
                            f.l3_len(),
                            f.dst_mac,
                            f.vlan
                        ));
                    }
                }
                v if v.name().starts_with("drop") => {
                    t.dropped += 1;
                    if v == Verdict::DropBlackhole {
                        let a = kernel.route(&f.query(in_if)).expect("the kernel's lookup");
                        if a.chosen_kind != Kind::Error(libc::EINVAL) || f.dst_mac != in_mac {
                            t.violations.push(format!(
                                "step {step} ({}): dropped {} -> {} as blackhole; the kernel: {:?}",
                                ev.what, f.flow.src, f.flow.dst, a.chosen_kind
                            ));
                        }
                    }
                }
                _ => t.passed += 1,
            }
        }
        // Only what the daemon logged since the last step (a soak's log grows).
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(log) {
            use std::io::{Read, Seek};
            let _ = f.seek(std::io::SeekFrom::Start(log_seen));
            let _ = f.read_to_string(&mut text);
        }
        for line in text.lines().filter(|l| l.contains("anti-entropy repaired")) {
            t.violations
                .push(format!("{line}\n    after the events {:?}", recent));
        }
        log_seen += text.len() as u64;
        if t.violations.len() > printed && std::env::var("XE_ORACLE_PAUSE").is_ok() {
            eprintln!("PAUSED after step {step}; namespace {}", net.name());
            std::thread::sleep(Duration::from_secs(900));
        }
        // Each violation as it is found (a soak runs for a long time).
        for v in &t.violations[printed..] {
            println!("VIOLATION {v}");
        }
        printed = t.violations.len();
        // A soak goes on (every violation counts); a short run stops early.
        if t.violations.len() > if events >= 10_000 { 1000 } else { 20 } {
            break;
        }
        if events >= 10_000 && (step + 1) % 1000 == 0 {
            println!(
                "oracle progress: {} events, {} flows checked ({} forwarded), {} violations, {:.0} s",
                t.events,
                t.flows,
                t.forwarded,
                t.violations.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    t
}

/// The oracle in CI: XE_ORACLE_EVENTS events (default 5,000) from
/// XE_ORACLE_SEED (default: from the clock, printed), 200 frames after each.
#[test]
fn forwards_only_what_the_kernel_would() {
    if !require_root("forwards_only_what_the_kernel_would") {
        return;
    }
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let events = env("XE_ORACLE_EVENTS").unwrap_or(5000);
    let frames = env("XE_ORACLE_FRAMES").unwrap_or(200) as u32;
    let seed = env("XE_ORACLE_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!("oracle seed {seed} (XE_ORACLE_SEED={seed} reproduces it), {events} events");
    let net = crate::oracle_net("orc", PORTS);
    for p in 0..PORTS {
        for c in crate::events::resolve(p, 0) {
            let args: Vec<&str> = c.iter().map(String::as_str).collect();
            net.ip(&args).expect("neighbours");
        }
    }
    let pins = PinDir::new("orc");
    let log = std::env::temp_dir().join(format!("xe-oracle-{}.log", std::process::id()));
    let mut daemon = command(
        &net,
        &pins,
        &["run", "-p", "xe-in", "--anti-entropy", "0.2"],
    )
    .env("RUST_LOG", "info")
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).expect("a log file"))
    .spawn()
    .expect("starting the daemon");
    let t0 = Instant::now();
    while !pins.0.join("link_xe-in").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the daemon did not attach"
        );
        assert!(
            daemon.try_wait().expect("daemon status").is_none(),
            "the daemon exited"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let t = run(&net, &pins, &log, seed, events, frames);
    let alive = daemon.try_wait().expect("daemon status").is_none();
    // SAFETY: signalling the child we started, by its PID.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let repairs: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("anti-entropy repaired"))
        .collect();
    println!(
        "oracle: {} events ({} commands refused by the kernel), {} flows checked: {} forwarded, {} passed, {} dropped; {} violations; {} anti-entropy repairs; longest settle {} ms; {:.1} s",
        t.events,
        t.refused,
        t.flows,
        t.forwarded,
        t.passed,
        t.dropped,
        t.violations.len(),
        repairs.len(),
        t.settle_ms_max,
        started.elapsed().as_secs_f64()
    );
    for r in repairs.iter().take(20) {
        println!("REPAIR {r}");
    }
    assert!(alive, "the daemon died:\n{text}");
    assert!(t.violations.is_empty(), "seed {seed}: violations (above)");
    assert!(
        repairs.is_empty(),
        "seed {seed}: anti-entropy repairs (above)"
    );
    assert!(
        t.forwarded > t.flows / 10,
        "too few flows forwarded to mean anything: {t:?}"
    );
    let _ = crate::support::xdp_ecmp(&net, &pins, &["detach", "xe-in"]);
}
