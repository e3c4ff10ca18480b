//! Program cost side by side: xdp-ecmp (resilient, modulo) vs the bare forwarder (the limit) vs a bpf_fib_lookup forwarder, at 1, 10k and 1M routes, IPv4 and IPv6.

use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use dataplane::abi::{
    xe_config, xe_nexthop, xe_route, GROUP_MODULO, GROUP_RESILIENT, NH_USABLE, RT_UNICAST,
    XDP_REDIRECT,
};
use dataplane::tables::single_path;
use dataplane::{ifindex_of, pin_thread_to_cpu, test_run_prog};
use dataplane::{Dataplane, LoadOptions, TableWriter};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject};
use testnet::TestNet;

use crate::report::{num, Table};

#[allow(clippy::all, clippy::pedantic, non_camel_case_types, dead_code, unused)]
pub(crate) mod skel {
    include!(concat!(env!("OUT_DIR"), "/peers.skel.rs"));
}

const REPEAT: u32 = 200;
const CALLS: u32 = 50;
/// Columns of the program-cost tables (the goals read them by name).
pub(crate) const COLUMNS: [&str; 7] = [
    "routes",
    "xdp-ecmp resilient",
    "xdp-ecmp modulo",
    "bare forwarder",
    "bpf_fib_lookup forwarder",
    "resilient / bare",
    "resilient / fib",
];
const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x22];

/// One test run of a program: the frame in, the frame out.
type Runner<'a> = dyn FnMut(&[u8], &mut [u8]) -> Result<(u32, Duration)> + 'a;

/// The address family measured; frames start with TTL / hop limit 255.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
    /// Offset of the TTL / hop limit in the frame.
    fn ttl_at(self) -> usize {
        match self {
            Family::V4 => 14 + 8,
            Family::V6 => 14 + 7,
        }
    }
    /// The i-th measured destination (a /32 or /128 route each).
    fn dst(self, i: u32) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(0x6440_0000u32 + i)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from((0x2001_0db8_0100u128 << 80) | u128::from(i))),
        }
    }
    fn frame(self, i: u32) -> Vec<u8> {
        match self.dst(i) {
            IpAddr::V4(a) => crate::frame_to(a),
            IpAddr::V6(a) => crate::frame6_to(a),
        }
    }
}

/// Mean ns/packet over CALLS runs of REPEAT packets; every run must end in a
/// redirect with the TTL as low as REPEAT forwards leave it (`decrements`).
fn cost(run: &mut Runner<'_>, pkt: &[u8], ttl_at: usize, decrements: bool) -> Result<f64> {
    let mut out = vec![0u8; 128];
    let mut total = Duration::ZERO;
    let want = if decrements { 255 - REPEAT as u8 } else { 255 };
    for _ in 0..CALLS {
        let (action, d) = run(pkt, &mut out)?;
        if action != XDP_REDIRECT || out[ttl_at] != want {
            bail!(
                "a measured program did not forward every repetition (action {action}, TTL {} not {want})",
                out[ttl_at]
            );
        }
        total += d;
    }
    Ok(total.as_nanos() as f64 / f64::from(CALLS))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ours(mode: u8, ingress: u32, egress: u32, smac: [u8; 6]) -> Result<Dataplane> {
    let mut dp =
        Dataplane::load(&LoadOptions::default()).context("loading xdp-ecmp (run as root)")?;
    crate::admit(&mut dp, ingress, crate::IN_MAC)?;
    let nh = xe_nexthop {
        ifindex: egress,
        mtu: 1500,
        // A repeated test run feeds the rewritten frame back: it must be
        // admitted again, so the gateway's MAC here is the ingress port's.
        dmac: crate::IN_MAC,
        smac,
        state: NH_USABLE,
        ..Default::default()
    };
    let size: u16 = if mode == GROUP_RESILIENT { 128 } else { 1 };
    // Route 1 of the table; the measured routes are added next to it.
    single_path(&mut dp, Ipv4Addr::new(100, 63, 255, 255), &nh, mode, size)?;
    dp.set_config(&xe_config {
        seed: [1, 2],
        ..Default::default()
    })?;
    Ok(dp)
}

/// Runs the comparison for both families; one table each.
pub fn compare(route_counts: &[u32], rounds: usize) -> Result<Vec<Table>> {
    let net = TestNet::new("cmp", &[("xe-c0", "xe-c1"), ("xe-e0", "xe-e1")])?;
    net.ip(&["addr", "add", "10.9.0.1/24", "dev", "xe-c0"])?;
    net.ip(&["addr", "add", "10.0.0.1/24", "dev", "xe-e0"])?;
    net.ip(&["-6", "addr", "add", "fd00:9::1/64", "dev", "xe-c0", "nodad"])?;
    net.ip(&["-6", "addr", "add", "fd00::1/64", "dev", "xe-e0", "nodad"])?;
    for gw in ["10.0.0.2", "fd00::2"] {
        net.ip(&[
            "neigh",
            "add",
            gw,
            "lladdr",
            "02:00:00:00:00:22",
            "dev",
            "xe-e0",
            "nud",
            "permanent",
        ])?;
    }
    let st = std::process::Command::new("ip")
        .args(["netns", "exec", net.name(), "sysctl", "-qw"])
        .args(["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])
        .status()?;
    if !st.success() {
        bail!("enabling forwarding in {} failed", net.name());
    }
    net.enter()?;
    pin_thread_to_cpu(0)?;
    let (ingress, egress) = (ifindex_of("xe-c0")?, ifindex_of("xe-e0")?);
    let smac = [2, 0, 0, 0, 0, 0x11];

    let mut res = ours(GROUP_RESILIENT, ingress, egress, smac)?;
    let mut modulo = ours(GROUP_MODULO, ingress, egress, smac)?;
    let storage: &'static mut MaybeUninit<OpenObject> = Box::leak(Box::new(MaybeUninit::uninit()));
    let peers = skel::PeersSkelBuilder::default().open(storage)?.load()?;
    let bare_cfg: Vec<u8> = GW_MAC
        .iter()
        .chain(smac.iter())
        .copied()
        .chain(egress.to_ne_bytes())
        .collect();
    peers
        .maps
        .bare_cfg
        .update(&0u32.to_ne_bytes(), &bare_cfg, MapFlags::ANY)?;
    peers
        .maps
        .peer_tx
        .update(&egress.to_ne_bytes(), &egress.to_ne_bytes(), MapFlags::ANY)?;

    let route = xe_route {
        group: 1,
        kind: RT_UNICAST,
        ..Default::default()
    };
    let mut tables = Vec::new();
    for fam in [Family::V4, Family::V6] {
        let mut t = Table::new(
            &format!("prog_cost_{}", fam.name().to_lowercase()),
            format!(
                "program cost by BPF_PROG_TEST_RUN, 64-byte {} UDP to one of N /{} routes, {rounds} rounds x {CALLS} calls x {REPEAT} packets, median ns/packet",
                fam.name(),
                if fam == Family::V4 { 32 } else { 128 }
            ),
            &COLUMNS,
        );
        let mut have = 0u32;
        for &n in route_counts {
            eprintln!("program cost: {} with {n} routes ...", fam.name());
            // Same routes in the kernel (for the FIB peer) and in our maps.
            let mut batch = String::new();
            for i in have..n {
                let a = fam.dst(i);
                match a {
                    IpAddr::V4(a) => {
                        batch.push_str(&format!("route add {a}/32 via 10.0.0.2\n"));
                        res.set_route_v4(a, 32, &route)?;
                        modulo.set_route_v4(a, 32, &route)?;
                    }
                    IpAddr::V6(a) => {
                        batch.push_str(&format!("route add {a}/128 via fd00::2\n"));
                        res.set_route_v6(a, 128, &route)?;
                        modulo.set_route_v6(a, 128, &route)?;
                    }
                }
            }
            let file = std::env::temp_dir().join(format!("xe-cmp-{}.batch", std::process::id()));
            std::fs::write(&file, batch)?;
            let st = std::process::Command::new("ip")
                .args(["-n", net.name(), "-batch"])
                .arg(&file)
                .status()?;
            let _ = std::fs::remove_file(&file);
            if !st.success() {
                bail!("ip -batch of {n} {} routes failed", fam.name());
            }
            have = n;
            let pkt = fam.frame(n / 2);
            let at = fam.ttl_at();
            let mut cols: [Vec<f64>; 4] = Default::default();
            for _ in 0..rounds {
                cols[0].push(cost(
                    &mut |p, o| {
                        let r = res.test_run_from(ingress, p, o, REPEAT)?;
                        Ok((r.action, r.duration))
                    },
                    &pkt,
                    at,
                    true,
                )?);
                cols[1].push(cost(
                    &mut |p, o| {
                        let r = modulo.test_run_from(ingress, p, o, REPEAT)?;
                        Ok((r.action, r.duration))
                    },
                    &pkt,
                    at,
                    true,
                )?);
                cols[2].push(cost(
                    &mut |p, o| {
                        let r = test_run_prog(&peers.progs.xdp_bare, ingress, p, o, REPEAT)?;
                        Ok((r.action, r.duration))
                    },
                    &pkt,
                    at,
                    false,
                )?);
                cols[3].push(cost(
                    &mut |p, o| {
                        let r = test_run_prog(&peers.progs.xdp_fib, ingress, p, o, REPEAT)?;
                        Ok((r.action, r.duration))
                    },
                    &pkt,
                    at,
                    true,
                )?);
            }
            let m: Vec<f64> = cols.into_iter().map(median).collect();
            t.row(vec![
                num(f64::from(n), 0),
                num(m[0], 1),
                num(m[1], 1),
                num(m[2], 1),
                num(m[3], 1),
                num(m[0] / m[2], 2),
                num(m[0] / m[3], 2),
            ]);
        }
        t.note("Every measured run must end in XDP_REDIRECT with the TTL / hop limit 200 lower (255 at the start): the kernel feeds each rewritten frame back in, so all 200 repetitions were forwarded, none passed. The context names the ingress port (bpf_fib_lookup needs one); the same routes are in the kernel FIB and in xdp-ecmp's maps. An empty XDP program measures ~26 ns the same way (the test-run loop's own cost).");
        tables.push(t);
    }
    Ok(tables)
}
