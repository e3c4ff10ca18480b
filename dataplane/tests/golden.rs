//! Golden fixtures: named packets with the expected verdict, egress and exact output bytes, run through the XDP program (BPF_PROG_TEST_RUN) and the model.

mod common;

use common::fixtures::{fixtures, Egress};
use common::packets::*;
use common::*;
use dataplane::abi::Verdict;
use dataplane::testnet::require_root;

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
    assert_eq!(
        classes.len(),
        Verdict::ALL.len(),
        "every verdict class needs a fixture: {classes:?}"
    );
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
    assert_eq!(verdict_of(&d), Verdict::Forward);
    assert_eq!(action, dataplane::abi::XDP_PASS);
    assert_eq!(d.nexthop, NH_P0);
    let (md, mout) = world.model(&pkt);
    assert_eq!(fields(&md), fields(&d), "model decision");
    assert_eq!(hex(&mout), hex(&out), "model output bytes");
}
