//! Golden fixtures: named packets with the expected verdict, egress and exact output bytes, run through the XDP program (BPF_PROG_TEST_RUN) and the model; admission (ingress port, MAC, tags, forwarding switches) on a program that checks it.

mod common;

use common::fixtures::{fixtures, Egress};
use common::packets::*;
use common::*;
use dataplane::abi::{xe_inport, Verdict, INPORT_FWD_V4, INPORT_FWD_V6, INPORT_INDEXES};
use testnet::require_root;

#[test]
fn golden_fixtures() {
    if !require_root("golden_fixtures") {
        return;
    }
    let world = World::new("golden");
    let fixtures = fixtures();
    let mut classes = std::collections::BTreeMap::new();
    for f in &fixtures {
        let (action, out, d) = world.run(&f.pkt);
        let verdict = verdict_of(&d);
        assert_eq!(verdict, f.verdict, "{}: verdict", f.name);
        let expect_nh = match &f.egress {
            Egress::None => None,
            Egress::Nh(n) => Some(*n),
            Egress::Hashed(g, flow, l3) => Some(world.expected_nexthop(*g, flow, *l3)),
        };
        match expect_nh {
            None => {
                assert_eq!(action, f.verdict.action(), "{}: action", f.name);
                assert_eq!(
                    hex(&out),
                    hex(&f.pkt),
                    "{}: a packet not forwarded must leave untouched",
                    f.name
                );
            }
            Some(nh_id) => {
                let nh = world.nexthop(nh_id);
                assert_eq!(d.nexthop, nh_id, "{}: next hop", f.name);
                assert_eq!(d.ifindex, nh.ifindex, "{}: egress", f.name);
                if f.verdict == Verdict::Forward {
                    let in_l2 = f.pkt.len() + if nh.vlan != 0 { 18 } else { 14 } - out.len();
                    let want = forwarded(&f.pkt, in_l2, nh.dmac, nh.smac, nh.vlan);
                    assert_eq!(hex(&out), hex(&want), "{}: output bytes", f.name);
                }
            }
        }
        // The model must agree on everything.
        let (md, mout) = world.model(&f.pkt);
        assert_eq!(fields(&md), fields(&d), "{}: model decision", f.name);
        assert_eq!(hex(&mout), hex(&out), "{}: model output bytes", f.name);
        *classes.entry(f.verdict.name()).or_insert(0) += 1;
    }
    assert!(fixtures.len() >= 60, "only {} fixtures", fixtures.len());
    println!(
        "golden: {} fixtures, program == expected == model",
        fixtures.len()
    );
    for (k, n) in &classes {
        println!("  {k:<20} {n}");
    }
    // The admission verdicts need a program that checks admission and an
    // ingress port: `admission_decides_before_the_route` covers them.
    assert_eq!(
        classes.len(),
        Verdict::ALL.len() - Verdict::ADMISSION.len(),
        "every verdict class but admission needs a fixture: {classes:?}"
    );
}

/// One admission case: what it shows, the ingress ifindex, the flags of the
/// loopback's entry (None: no entry), the frame and the verdict.
type Case = (&'static str, u32, Option<u8>, Vec<u8>, Verdict);

/// A program that checks admission routes a frame only when it came in by
/// a port with an xe_inports entry, to that port's MAC, untagged, with its
/// family's forwarding on; the model decides every case alike.
#[test]
fn admission_decides_before_the_route() {
    if !require_root("admission_decides_before_the_route") {
        return;
    }
    let mut world = World::admitting("admit");
    // Test runs need an ingress device of this namespace: the loopback
    // (ifindex 1) is the admitted port; xe-p0 exists but has no entry.
    const LO: u32 = 1;
    let unlisted = world.ifindex[0];
    let port = |flags| xe_inport {
        mac: IN_MAC,
        flags,
        ..Default::default()
    };
    let both = INPORT_FWD_V4 | INPORT_FWD_V6;
    let v4 = |dst: &str| {
        let ip = Ip4::new("10.2.0.100", dst, 17);
        eth(IN_MAC, &[], ETH_IP, &ip.packet(&udp(4000, 53, b"")))
    };
    let v6 = |dst: &str| {
        let ip = ip6(
            packets::v6("2001:db8:2::100"),
            packets::v6(dst),
            64,
            17,
            0,
            &udp(4000, 53, b""),
        );
        eth(IN_MAC, &[], ETH_IPV6, &ip)
    };
    let to = |mac: [u8; 6], mut f: Vec<u8>| {
        f[..6].copy_from_slice(&mac);
        f
    };
    let tagged = |vlans: &[(u16, u16)]| {
        let ip = Ip4::new("10.2.0.100", "172.16.255.66", 17);
        eth(IN_MAC, vlans, ETH_IP, &ip.packet(&udp(4000, 53, b"")))
    };
    let anycast = v4("172.16.255.66");
    // (what, ingress ifindex, the loopback's flags (None: no entry), frame, verdict)
    let cases: Vec<Case> = vec![
        (
            "no entry for the loopback yet",
            LO,
            None,
            anycast.clone(),
            Verdict::PassNotPort,
        ),
        (
            "admitted: forwarded",
            LO,
            Some(both),
            anycast.clone(),
            Verdict::Forward,
        ),
        (
            "admitted v6: forwarded",
            LO,
            Some(both),
            v6("2001:db8:66::66"),
            Verdict::Forward,
        ),
        (
            "a port without an entry",
            unlisted,
            Some(both),
            anycast.clone(),
            Verdict::PassNotPort,
        ),
        (
            "another unicast MAC",
            LO,
            Some(both),
            to([2, 0, 0, 0, 0xaa, 2], anycast.clone()),
            Verdict::PassOtherhost,
        ),
        (
            "the MAC's last two bytes differ",
            LO,
            Some(both),
            to([2, 0, 0, 0, 0xab, 1], anycast.clone()),
            Verdict::PassOtherhost,
        ),
        (
            "the MAC's first four bytes differ",
            LO,
            Some(both),
            to([2, 0, 1, 0, 0xaa, 1], anycast.clone()),
            Verdict::PassOtherhost,
        ),
        (
            "broadcast, before any port check",
            unlisted,
            Some(both),
            to([0xff; 6], anycast.clone()),
            Verdict::PassMulticast,
        ),
        (
            "802.1Q tag",
            LO,
            Some(both),
            tagged(&[(0x8100, 100)]),
            Verdict::PassVlan,
        ),
        (
            "802.1ad + 802.1Q tags",
            LO,
            Some(both),
            tagged(&[(0x88a8, 3), (0x8100, 4)]),
            Verdict::PassVlan,
        ),
        (
            "IPv4 forwarding off",
            LO,
            Some(INPORT_FWD_V6),
            anycast.clone(),
            Verdict::PassNoForwarding,
        ),
        (
            "IPv4 forwarding off: a blackhole route is the kernel's too (it answers)",
            LO,
            Some(INPORT_FWD_V6),
            v4("198.51.100.1"),
            Verdict::PassNoForwarding,
        ),
        (
            "IPv4 forwarding off, IPv6 still forwarded",
            LO,
            Some(INPORT_FWD_V6),
            v6("2001:db8:66::66"),
            Verdict::Forward,
        ),
        (
            "IPv6 forwarding off",
            LO,
            Some(INPORT_FWD_V4),
            v6("2001:db8:66::66"),
            Verdict::PassNoForwarding,
        ),
        (
            "IPv6 forwarding off, IPv4 still forwarded",
            LO,
            Some(INPORT_FWD_V4),
            anycast.clone(),
            Verdict::Forward,
        ),
        (
            "both off",
            LO,
            Some(0),
            anycast.clone(),
            Verdict::PassNoForwarding,
        ),
        (
            "not IP, admitted",
            LO,
            Some(both),
            eth(IN_MAC, &[], 0x0806, &[0; 28]),
            Verdict::PassNotIp,
        ),
        (
            "admitted again: forwarded",
            LO,
            Some(both),
            anycast.clone(),
            Verdict::Forward,
        ),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (what, ingress, flags, pkt, want) in &cases {
        match flags {
            Some(f) => world.both(|t| t.set_inport(LO, &port(*f))),
            None => world.both(|t| t.remove_inport(LO)),
        }
        let (action, out, d) = world.run_from(*ingress, pkt);
        assert_eq!(verdict_of(&d), *want, "{what}: verdict");
        assert_eq!(action, want.action(), "{what}: action");
        if *want == Verdict::Forward {
            // Admitted, the frame leaves as it would from a program that
            // admits everything (the model of one: equal to the program
            // on every golden fixture).
            let (any_d, any_out) = world.model(pkt);
            assert_eq!(fields(&d), fields(&any_d), "{what}: decision");
            assert_eq!(hex(&out), hex(&any_out), "{what}: output bytes");
        } else {
            assert_eq!(hex(&out), hex(pkt), "{what}: passed untouched");
        }
        let (md, mout) = world.model_from(Some(*ingress), pkt);
        assert_eq!(fields(&md), fields(&d), "{what}: model decision");
        assert_eq!(hex(&mout), hex(&out), "{what}: model output bytes");
        seen.insert(*want);
    }
    for v in Verdict::ADMISSION {
        assert!(seen.contains(&v), "no case for {v}");
    }
    // The entry for ifindex 1 is the one the maps list.
    let listed = world.dp.inports().expect("inports");
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].0, listed[0].1.mac), (LO, IN_MAC));
    println!(
        "admission: {} cases, program == model; verdicts {:?}",
        cases.len(),
        seen.iter().map(|v| v.name()).collect::<Vec<_>>()
    );
}

/// A port whose ifindex lies past the array of ports (a host that has made
/// and removed many devices) is admitted from the far map, as one below it
/// is, and its entry leaves the array alone.
#[test]
fn a_port_past_the_port_array_is_admitted() {
    if !require_root("a_port_past_the_port_array_is_admitted") {
        return;
    }
    let mut world = World::admitting("far");
    let far = INPORT_INDEXES + 4464;
    // The test thread is in the world's namespace; `ip` inherits it.
    let index = far.to_string();
    for args in [
        &[
            "link",
            "add",
            "xe-far",
            "index",
            index.as_str(),
            "type",
            "veth",
            "peer",
            "name",
            "xe-farp",
        ][..],
        &["link", "set", "xe-far", "up"][..],
    ] {
        let st = std::process::Command::new("ip")
            .args(args)
            .status()
            .expect("ip");
        assert!(st.success(), "ip {args:?}");
    }
    assert_eq!(dataplane::ifindex_of("xe-far").expect("xe-far"), far);
    let port = xe_inport {
        mac: IN_MAC,
        flags: INPORT_FWD_V4 | INPORT_FWD_V6,
        ..Default::default()
    };
    let ip = Ip4::new("10.2.0.100", "172.16.255.66", 17);
    let pkt = eth(IN_MAC, &[], ETH_IP, &ip.packet(&udp(4000, 53, b"")));
    let check = |world: &World, what: &str, want: Verdict| {
        let (action, _, d) = world.run_from(far, &pkt);
        assert_eq!((verdict_of(&d), action), (want, want.action()), "{what}");
        let (md, _) = world.model_from(Some(far), &pkt);
        assert_eq!(fields(&md), fields(&d), "{what}: model decision");
    };
    check(&world, "no entry", Verdict::PassNotPort);
    world.both(|t| t.set_inport(far, &port));
    check(&world, "admitted", Verdict::Forward);
    let listed = world.dp.inports().expect("inports");
    assert_eq!(
        listed
            .iter()
            .map(|(i, p)| (*i, p.mac, p.flags))
            .collect::<Vec<_>>(),
        vec![(far, IN_MAC, port.flags)],
        "listed with its entry as written, nothing in the array"
    );
    world.both(|t| t.remove_inport(far));
    check(&world, "removed", Verdict::PassNotPort);
    assert!(world.dp.inports().expect("inports").is_empty());
}

/// A next hop that says its port is in the redirect map when it no longer is
/// (removed after the control plane wrote the next hop): bpf_redirect_map's
/// fallback passes the rewritten frame, and the model says the same.
#[test]
fn port_gone_from_the_redirect_map_passes() {
    if !require_root("port_gone_from_the_redirect_map_passes") {
        return;
    }
    let mut world = World::new("txgone");
    let p0 = world.ifindex[0];
    world.both(|t| t.remove_txport(p0));
    let ip = Ip4::new("10.2.0.100", "10.24.5.9", 17);
    let pkt = eth(IN_MAC, &[], 0x0800, &ip.packet(&udp(1, 2, b"")));
    let (action, out, d) = world.run(&pkt);
    // Rewritten for the next hop, then passed (the kernel drops it): not
    // counted as forwarded.
    assert_eq!(verdict_of(&d), Verdict::PassNoTxport);
    assert_eq!(action, dataplane::abi::XDP_PASS);
    assert_eq!(d.nexthop, NH_P0);
    let (md, mout) = world.model(&pkt);
    assert_eq!(fields(&md), fields(&d), "model decision");
    assert_eq!(hex(&mout), hex(&out), "model output bytes");
}
