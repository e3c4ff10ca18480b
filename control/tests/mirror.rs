//! The mirror end to end in a namespace: routes written with `ip` reach the maps (every form), link-down moves only its buckets, unresolved neighbours go live, the checker agrees, and a backlog of events is applied as it is read.

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use control::check::check;
use control::daemon::now_ms;
use control::mirror::{Event, Mirror};
use control::reconcile::Reconciler;
use control::state::{KernelState, PathKey, Prefix};
use control::translate::{GroupKey, PlainGroupMode};
use dataplane::abi::Verdict;
use dataplane::{current_cpu, ifindex_of, pin_thread_to_cpu};
use dataplane::{Dataplane, LoadOptions};
use testnet::{require_root, TestNet};

struct Env {
    net: TestNet,
    dp: Dataplane,
    mirror: Mirror,
    state: KernelState,
    rec: Reconciler,
    mode: PlainGroupMode,
    cpu: usize,
}

const PORTS: usize = 4;

impl Env {
    fn new(tag: &str, mode: PlainGroupMode) -> Env {
        let pairs: Vec<(String, String)> = (0..PORTS)
            .map(|i| (format!("xe-a{i}"), format!("xe-b{i}")))
            .collect();
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let net = TestNet::new(tag, &refs).expect("namespace");
        net.enter().expect("enter");
        let cpu = current_cpu();
        pin_thread_to_cpu(cpu).expect("pin");
        for i in 0..PORTS {
            let dev = format!("xe-a{i}");
            net.ip(&["addr", "add", &format!("10.0.{i}.1/24"), "dev", &dev])
                .expect("addr");
            net.ip(&[
                "addr",
                "add",
                &format!("2001:db8:{i}::1/64"),
                "dev",
                &dev,
                "nodad",
            ])
            .expect("addr6");
            // A veth transmits redirected frames when its peer has GRO (or
            // XDP): without, the daemon leaves its next hops to the kernel.
            support::gro(&net, &format!("xe-b{i}"), true);
        }
        // Test runs over the mirrored tables, no port attached: every frame
        // is admitted.
        let dp = Dataplane::load(&LoadOptions {
            trace_decisions: true,
            admit_any: true,
            ..Default::default()
        })
        .expect("load");
        let mut mirror = Mirror::open(4 << 20).expect("mirror");
        let mut state = KernelState::new(254);
        mirror.dump(&mut state).expect("dump");
        let mut env = Env {
            net,
            dp,
            mirror,
            state,
            rec: Reconciler::new(mode),
            mode,
            cpu,
        };
        env.sync();
        env
    }

    fn ip(&self, args: &str) {
        let a: Vec<&str> = args.split_whitespace().collect();
        self.net.ip(&a).unwrap_or_else(|e| panic!("ip {args}: {e}"));
    }

    /// Drains pending events, then reconciles.
    fn sync(&mut self) {
        loop {
            match self
                .mirror
                .poll(&mut self.state, Duration::from_millis(30))
                .expect("poll")
            {
                Event::Idle => break,
                Event::Overrun => self.state = self.mirror.resync(254).expect("resync"),
                Event::Changed(_) => {}
            }
        }
        let stamps = self.dp.stamp_reader().expect("stamps");
        let now = now_ms();
        let clock = self.dp.stamp_clock().expect("stamp clock");
        let last_used = |s: u32| clock.last_used_ms(stamps.get(s), now);
        let dirty = self.state.take_dirty();
        self.rec
            .sync(&self.state, &dirty, &mut self.dp, now, &last_used);
    }

    fn consistent(&self) {
        let diffs = check(&self.state, &self.dp, self.mode).expect("check");
        assert!(
            diffs.is_empty(),
            "maps differ from the kernel:\n{}",
            diffs.join("\n")
        );
    }

    fn route(&self, prefix: &str) -> Option<dataplane::abi::xe_route> {
        let (a, l) = prefix.split_once('/').expect("prefix");
        let (a, l): (IpAddr, u8) = (a.parse().expect("addr"), l.parse().expect("len"));
        match a {
            IpAddr::V4(v) => self
                .dp
                .routes_v4()
                .expect("routes")
                .into_iter()
                .find(|(x, y, _)| *x == v && *y == l)
                .map(|r| r.2),
            IpAddr::V6(v) => self
                .dp
                .routes_v6()
                .expect("routes")
                .into_iter()
                .find(|(x, y, _)| *x == v && *y == l)
                .map(|r| r.2),
        }
    }

    /// Egress ifindex -> slots, for the group of a prefix.
    fn spread(&self, prefix: &str) -> BTreeMap<u32, usize> {
        let r = self
            .route(prefix)
            .unwrap_or_else(|| panic!("{prefix} not in the maps"));
        let g = self.dp.group(r.group).expect("group");
        let mut m = BTreeMap::new();
        for id in self.dp.slots(g.base, u32::from(g.size)).expect("slots") {
            *m.entry(self.dp.nexthop(id).expect("nh").ifindex)
                .or_default() += 1;
        }
        m
    }

    fn buckets(&self, prefix: &str) -> Vec<u32> {
        let r = self.route(prefix).expect("route");
        let g = self.dp.group(r.group).expect("group");
        self.dp
            .slots(g.base, u32::from(g.size))
            .expect("slots")
            .into_iter()
            .map(|id| self.dp.nexthop(id).expect("nh").ifindex)
            .collect()
    }

    /// Runs one UDP packet to `dst` through the program: verdict and egress.
    fn send(&self, dst: &str, sport: u16) -> (Verdict, u32, [u8; 6]) {
        let flow = control::inspect::Flow {
            proto: 17,
            src: "10.9.0.1".parse().expect("src"),
            dst: dst.parse().expect("dst"),
            sport,
            dport: 53,
        };
        let frame = control::inspect::build_frame(&flow, [2, 0, 0, 0, 0, 1]).expect("frame");
        let mut out = vec![0u8; frame.len() + 64];
        self.dp.test_run(&frame, &mut out).expect("test run");
        let d = self.dp.last_decision(self.cpu).expect("trace");
        let mut dmac = [0u8; 6];
        dmac.copy_from_slice(&out[..6]);
        (
            Verdict::from_u32(d.verdict).expect("verdict"),
            d.ifindex,
            dmac,
        )
    }
}

fn ifx(name: &str) -> u32 {
    ifindex_of(name).expect("ifindex")
}

fn resilient(buckets: u16, idle_ms: u64) -> PlainGroupMode {
    PlainGroupMode::Resilient {
        buckets,
        max_buckets: buckets,
        idle_timer_ms: idle_ms,
        unbalanced_timer_ms: 0,
    }
}

#[test]
fn every_route_form_reaches_the_maps_and_leaves_with_it() {
    if !require_root("every_route_form_reaches_the_maps_and_leaves_with_it") {
        return;
    }
    let mut e = Env::new("forms", resilient(128, 0));
    for i in 0..PORTS {
        e.ip(&format!(
            "neigh add 10.0.{i}.2 lladdr 02:00:00:00:0{i}:02 dev xe-a{i} nud permanent"
        ));
        e.ip(&format!(
            "neigh add 2001:db8:{i}::2 lladdr 02:00:00:00:0{i}:06 dev xe-a{i} nud permanent"
        ));
    }
    e.ip("neigh add fe80::2 lladdr 02:00:00:00:00:fe dev xe-a0 nud permanent");
    e.ip("route add 192.168.10.0/24 via 10.0.0.2");
    e.ip("route add 192.168.11.0/24 nexthop via 10.0.0.2 weight 1 nexthop via 10.0.1.2 weight 3");
    e.ip("route add 192.168.12.0/24 via inet6 fe80::2 dev xe-a0");
    e.ip("route add blackhole 192.168.15.0/24");
    e.ip("route add unreachable 192.168.16.0/24");
    e.ip("route add prohibit 192.168.17.0/24");
    e.ip("-6 route add 2001:db8:99::/48 via 2001:db8:0::2");
    e.ip("-6 route add 2001:db8:98::/48 nexthop via 2001:db8:1::2 nexthop via 2001:db8:2::2");
    e.sync();
    e.consistent();

    let (a0, a1, a2) = (ifx("xe-a0"), ifx("xe-a1"), ifx("xe-a2"));
    assert_eq!(e.spread("192.168.10.0/24"), BTreeMap::from([(a0, 128)]));
    assert_eq!(
        e.spread("192.168.11.0/24"),
        BTreeMap::from([(a0, 32), (a1, 96)]),
        "weights 1:3"
    );
    assert_eq!(
        e.send("192.168.12.7", 1),
        (Verdict::Forward, a0, [2, 0, 0, 0, 0, 0xfe]),
        "RFC 5549: IPv4 via an IPv6 link-local next hop"
    );
    assert_eq!(e.send("192.168.15.1", 1).0, Verdict::DropBlackhole);
    assert_eq!(e.send("192.168.16.1", 1).0, Verdict::PassNoRoute);
    assert_eq!(e.send("192.168.17.1", 1).0, Verdict::PassNoRoute);
    assert_eq!(e.send("10.0.0.1", 1).0, Verdict::PassLocal, "local table");
    assert_eq!(
        e.send("10.0.1.77", 1).0,
        Verdict::PassNoRoute,
        "on-link: the kernel resolves the host"
    );
    assert_eq!(e.spread("2001:db8:99::/48"), BTreeMap::from([(a0, 128)]));
    assert_eq!(
        e.spread("2001:db8:98::/48"),
        BTreeMap::from([(a1, 64), (a2, 64)])
    );

    for r in [
        "192.168.10.0/24",
        "192.168.11.0/24",
        "192.168.12.0/24",
        "blackhole 192.168.15.0/24",
    ] {
        e.ip(&format!("route del {r}"));
    }
    e.ip("-6 route del 2001:db8:98::/48");
    e.sync();
    e.consistent();
    for p in [
        "192.168.10.0/24",
        "192.168.11.0/24",
        "192.168.12.0/24",
        "192.168.15.0/24",
        "2001:db8:98::/48",
    ] {
        assert!(
            e.route(p).is_none(),
            "{p} left the maps with the kernel route"
        );
    }
    println!("mirror: 9 route forms (single, weighted multipath, RFC 5549, blackhole, unreachable, prohibit, local, v6 single/multipath) in and out, checker clean");
}

#[test]
fn link_down_moves_only_its_buckets_and_busy_buckets_wait_for_the_idle_timer() {
    if !require_root("link_down_moves_only_its_buckets_and_busy_buckets_wait_for_the_idle_timer") {
        return;
    }
    const IDLE_MS: u64 = 1500;
    let mut e = Env::new("linkdown", resilient(128, IDLE_MS));
    for i in 0..PORTS {
        e.ip(&format!(
            "neigh add 10.0.{i}.2 lladdr 02:00:00:00:0{i}:02 dev xe-a{i} nud permanent"
        ));
    }
    e.ip("route add 172.16.255.66/32 nexthop via 10.0.0.2 nexthop via 10.0.1.2 nexthop via 10.0.2.2 nexthop via 10.0.3.2");
    e.sync();
    e.consistent();
    let before = e.buckets("172.16.255.66/32");
    let a2 = ifx("xe-a2");
    assert_eq!(before.iter().filter(|i| **i == a2).count(), 32);

    e.ip("link set xe-a2 down");
    e.sync();
    e.consistent();
    let after = e.buckets("172.16.255.66/32");
    let moved: Vec<usize> = (0..128).filter(|i| before[*i] != after[*i]).collect();
    assert_eq!(moved.len(), 32, "exactly the downed member's buckets move");
    assert!(
        moved.iter().all(|i| before[*i] == a2),
        "and no other bucket"
    );
    assert!(!after.contains(&a2));

    // Traffic on every bucket, then the member returns: nothing busy moves.
    let keep_busy = |e: &Env| {
        for sport in 0..2048u16 {
            e.send("172.16.255.66", sport);
        }
    };
    keep_busy(&e);
    e.ip("link set xe-a2 up");
    e.ip("neigh replace 10.0.2.2 lladdr 02:00:00:00:02:02 dev xe-a2 nud permanent");
    e.sync();
    let readded = e.buckets("172.16.255.66/32");
    let moved_busy = (0..128).filter(|i| after[*i] != readded[*i]).count();
    assert_eq!(moved_busy, 0, "busy buckets stay while the idle timer runs");

    std::thread::sleep(Duration::from_millis(IDLE_MS + 500));
    e.sync();
    e.consistent();
    let balanced = e.buckets("172.16.255.66/32");
    assert_eq!(
        balanced.iter().filter(|i| **i == a2).count(),
        32,
        "after the idle timer the table is balanced"
    );
    let moved_idle = (0..128).filter(|i| readded[*i] != balanced[*i]).count();
    assert_eq!(moved_idle, 32, "and only the buckets it needed moved");
    println!("linkdown: 32/128 buckets moved on link down (all the downed member's), 0 busy buckets moved on re-add, 32 moved after {IDLE_MS} ms idle");
}

#[test]
fn unresolved_neighbour_goes_to_the_kernel_until_resolved() {
    if !require_root("unresolved_neighbour_goes_to_the_kernel_until_resolved") {
        return;
    }
    let mut e = Env::new("neigh", resilient(64, 0));
    e.ip("route add 192.168.20.0/24 via 10.0.0.2");
    e.sync();
    e.consistent();
    assert_eq!(
        e.send("192.168.20.1", 7).0,
        Verdict::PassNexthopDown,
        "no MAC yet: the kernel resolves"
    );
    e.ip("neigh add 10.0.0.2 lladdr 02:00:00:00:00:42 dev xe-a0 nud reachable");
    e.sync();
    e.consistent();
    assert_eq!(
        e.send("192.168.20.1", 7),
        (Verdict::Forward, ifx("xe-a0"), [2, 0, 0, 0, 0, 0x42])
    );
    e.ip("neigh change 10.0.0.2 lladdr 02:00:00:00:00:43 dev xe-a0 nud reachable");
    e.sync();
    assert_eq!(
        e.send("192.168.20.1", 7).2,
        [2, 0, 0, 0, 0, 0x43],
        "a new MAC is used at once"
    );
    e.ip("neigh del 10.0.0.2 dev xe-a0");
    e.sync();
    assert_eq!(e.send("192.168.20.1", 7).0, Verdict::PassNexthopDown);
    let _ = (
        PathKey {
            ifindex: 0,
            gateway: None,
        },
        GroupKey::Nexthop(0),
        Prefix {
            addr: "0.0.0.0".parse().expect("a"),
            len: 0,
        },
    );
    println!("neigh: unresolved -> pass-nexthop-down, resolved -> forward with its MAC, MAC change and removal followed");
}

/// Bucket index -> egress device, as `ip -j nexthop bucket show id ID` says.
fn kernel_buckets(net: &TestNet, id: u32, dev_of: &dyn Fn(u64) -> String) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args([
            "-n",
            net.name(),
            "-j",
            "nexthop",
            "bucket",
            "show",
            "id",
            &id.to_string(),
        ])
        .output()
        .expect("ip nexthop bucket show");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut rows: Vec<(u64, String)> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|b| {
            (
                b["bucket"]["index"].as_u64().expect("index"),
                dev_of(b["bucket"]["nhid"].as_u64().expect("nhid")),
            )
        })
        .collect();
    rows.sort();
    rows.into_iter().map(|r| r.1).collect()
}

#[test]
fn nexthop_objects_and_kernel_resilient_groups_are_mirrored_bucket_for_bucket() {
    if !require_root("nexthop_objects_and_kernel_resilient_groups_are_mirrored_bucket_for_bucket") {
        return;
    }
    let mut e = Env::new("nhobj", resilient(128, 0));
    for i in 0..PORTS {
        e.ip(&format!(
            "neigh add 10.0.{i}.2 lladdr 02:00:00:00:0{i}:02 dev xe-a{i} nud permanent"
        ));
    }
    e.ip("nexthop add id 1 via 10.0.0.2 dev xe-a0");
    e.ip("nexthop add id 2 via 10.0.1.2 dev xe-a1");
    e.ip("nexthop add id 3 via 10.0.2.2 dev xe-a2");
    e.ip("nexthop add id 4 blackhole");
    e.ip("nexthop add id 10 group 1/2,3");
    e.ip("nexthop add id 20 group 1/2/3 type resilient buckets 64 idle_timer 0 unbalanced_timer 0");
    e.ip("route add 192.168.30.0/24 nhid 10");
    e.ip("route add 192.168.31.0/24 nhid 20");
    e.ip("route add 192.168.32.0/24 nhid 1");
    e.ip("route add 192.168.33.0/24 nhid 4");
    e.sync();
    e.consistent();
    let (a0, a1) = (ifx("xe-a0"), ifx("xe-a1"));
    assert_eq!(
        e.spread("192.168.30.0/24"),
        BTreeMap::from([(a0, 32), (a1, 96)]),
        "plain nexthop group, weights 1:3, made resilient here"
    );
    assert_eq!(
        e.spread("192.168.32.0/24"),
        BTreeMap::from([(a0, 1)]),
        "a single nexthop object needs one slot"
    );
    assert_eq!(
        e.send("192.168.33.1", 1).0,
        Verdict::DropBlackhole,
        "blackhole nexthop"
    );

    let dev_of = |nhid: u64| format!("xe-a{}", nhid - 1);
    let ours = |e: &Env| -> Vec<String> {
        let r = e.route("192.168.31.0/24").expect("route");
        control::inspect::buckets(&e.dp, r.group)
            .expect("buckets")
            .into_iter()
            .map(|b| b.dev)
            .collect()
    };
    let mut compared = 0;
    for step in [
        "as created",
        "after member 2 is deleted",
        "after member 2 is re-added",
    ] {
        match step {
            "after member 2 is deleted" => e.ip("nexthop del id 2"),
            "after member 2 is re-added" => {
                e.ip("nexthop add id 2 via 10.0.1.2 dev xe-a1");
                e.ip("nexthop replace id 20 group 1/2/3 type resilient buckets 64 idle_timer 0 unbalanced_timer 0");
            }
            _ => {}
        }
        e.sync();
        e.consistent();
        let kernel = kernel_buckets(&e.net, 20, &dev_of);
        assert_eq!(kernel.len(), 64);
        assert_eq!(ours(&e), kernel, "buckets {step}");
        compared += kernel.len();
    }
    e.ip("route del 192.168.31.0/24");
    e.ip("nexthop del id 20");
    e.sync();
    e.consistent();
    assert!(e.route("192.168.31.0/24").is_none());
    println!("nhobj: nexthop objects (single, blackhole, plain group 1:3, kernel resilient group) mirrored; {compared} kernel buckets equal ours bucket for bucket across delete and re-add");
}

#[test]
fn a_route_replaced_with_fewer_members_moves_only_their_buckets() {
    if !require_root("a_route_replaced_with_fewer_members_moves_only_their_buckets") {
        return;
    }
    // What a routing daemon does on a withdrawal: the route is replaced
    // with one member less (a new path set, or a new nexthop group id).
    let mut e = Env::new("replace", resilient(128, 0));
    for i in 0..PORTS {
        e.ip(&format!(
            "neigh add 10.0.{i}.2 lladdr 02:00:00:00:0{i}:02 dev xe-a{i} nud permanent"
        ));
    }
    e.ip("route add 172.16.255.66/32 nexthop via 10.0.0.2 nexthop via 10.0.1.2 nexthop via 10.0.2.2 nexthop via 10.0.3.2");
    e.sync();
    let before = e.buckets("172.16.255.66/32");
    e.ip("route replace 172.16.255.66/32 nexthop via 10.0.0.2 nexthop via 10.0.1.2 nexthop via 10.0.3.2");
    e.sync();
    e.consistent();
    let after = e.buckets("172.16.255.66/32");
    let a2 = ifx("xe-a2");
    let moved: Vec<usize> = (0..128).filter(|i| before[*i] != after[*i]).collect();
    assert_eq!(moved.len(), 32);
    assert!(
        moved.iter().all(|i| before[*i] == a2),
        "only the withdrawn member's buckets move"
    );
    // Deleted, synced, and added back with one member less: still only that member's buckets.
    let before = e.buckets("172.16.255.66/32");
    e.ip("route del 172.16.255.66/32");
    e.sync();
    e.ip("route add 172.16.255.66/32 nexthop via 10.0.0.2 nexthop via 10.0.3.2");
    e.sync();
    e.consistent();
    let after = e.buckets("172.16.255.66/32");
    let a1 = ifx("xe-a1");
    let moved_back: Vec<usize> = (0..128).filter(|i| before[*i] != after[*i]).collect();
    assert!(
        !moved_back.is_empty() && moved_back.iter().all(|i| before[*i] == a1),
        "a route that comes back keeps its table"
    );
    // The same through nexthop objects, as FRR installs them.
    e.ip("nexthop add id 1 via 10.0.0.2 dev xe-a0");
    e.ip("nexthop add id 2 via 10.0.1.2 dev xe-a1");
    e.ip("nexthop add id 3 via 10.0.2.2 dev xe-a2");
    e.ip("nexthop add id 10 group 1/2/3");
    e.ip("nexthop add id 11 group 1/3");
    e.ip("route add 192.168.40.0/24 nhid 10");
    e.sync();
    let before = e.buckets("192.168.40.0/24");
    e.ip("route replace 192.168.40.0/24 nhid 11");
    e.sync();
    e.consistent();
    let after = e.buckets("192.168.40.0/24");
    let moved: Vec<usize> = (0..128).filter(|i| before[*i] != after[*i]).collect();
    assert!(
        !moved.is_empty() && moved.iter().all(|i| before[*i] == a1),
        "nhid 10 -> 11: only member 2's buckets move ({} moved)",
        moved.len()
    );
    println!("replace: route replaced without one of 4 members: 32/128 buckets moved, all the withdrawn member's; nhid group swap: {} moved, all member 2's", moved.len());
}

/// A poll reads for at most its budget before it applies: with a backlog of
/// 20,000 route events in the socket, the first poll leaves most of them
/// there (reading them all before applying the first is what held a burst's
/// first change back until its last had been read). Nothing is lost: later
/// polls apply every one.
#[test]
fn a_poll_applies_before_it_has_read_a_whole_backlog() {
    if !require_root("a_poll_applies_before_it_has_read_a_whole_backlog") {
        return;
    }
    const ROUTES: u32 = 20_000;
    let net = TestNet::new("mb", &[("xe-a0", "xe-b0")]).expect("namespace");
    net.enter().expect("enter");
    net.ip(&["addr", "add", "10.0.0.1/24", "dev", "xe-a0"])
        .expect("addr");
    let mut mirror = Mirror::open(256 << 20).expect("mirror");
    let mut state = KernelState::new(254);
    mirror.dump(&mut state).expect("dump");
    let batch: String = (0..ROUTES)
        .map(|i| {
            let a = std::net::Ipv4Addr::from(0x0ac8_0000u32 + i);
            format!("route add {a}/32 via 10.0.0.2\n")
        })
        .collect();
    let file = std::env::temp_dir().join(format!("{}.batch", net.name()));
    std::fs::write(&file, batch).expect("batch file");
    let added = net.ip(&["-batch", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    added.expect("ip -batch");
    match mirror
        .poll(&mut state, Duration::from_secs(1))
        .expect("poll")
    {
        Event::Changed(_) => {}
        other => panic!("the first poll found no change: {other:?}"),
    }
    let first = mirror.messages();
    let queued = mirror.queued();
    assert!(
        (1..=control::mirror::PASS_MESSAGES).contains(&first),
        "{first} messages applied by the first poll"
    );
    assert!(
        queued < ROUTES as usize / 4,
        "the first poll read {queued} of {ROUTES} events before applying any (budget {:?})",
        control::mirror::READ_BUDGET
    );
    let mut applied = first;
    while applied < u64::from(ROUTES) {
        match mirror
            .poll(&mut state, Duration::from_secs(1))
            .expect("poll")
        {
            Event::Changed(_) => applied += mirror.messages(),
            other => panic!("after {applied} of {ROUTES} events: {other:?}"),
        }
    }
    let routed = (0..ROUTES)
        .filter(|i| {
            let p = Prefix {
                addr: IpAddr::V4(std::net::Ipv4Addr::from(0x0ac8_0000u32 + i)),
                len: 32,
            };
            state.routes.contains_key(&p)
        })
        .count();
    assert_eq!(routed, ROUTES as usize, "routes the mirror holds");
}
