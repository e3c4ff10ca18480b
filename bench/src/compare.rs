//! Program cost side by side: xdp-ecmp (resilient, modulo) vs the bare forwarder (the limit) vs a bpf_fib_lookup forwarder vs an empty program (the test-run loop's own cost), at 1, 10k and 1M routes, IPv4 and IPv6; and the calls each makes into the kernel.

use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use dataplane::abi::{
    xe_config, xe_nexthop, xe_route, GROUP_MODULO, GROUP_RESILIENT, NH_USABLE, RT_UNICAST,
    XDP_PASS, XDP_REDIRECT,
};
use dataplane::tables::single_path;
use dataplane::{ifindex_of, pin_thread_to_cpu, test_run_prog};
use dataplane::{Dataplane, LoadOptions, TableWriter};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject};
use testnet::TestNet;

use crate::calls::{Calls, Subject, EMPTY};
use crate::report::{num, Table};

#[allow(clippy::all, clippy::pedantic, non_camel_case_types, dead_code, unused)]
pub(crate) mod skel {
    include!(concat!(env!("OUT_DIR"), "/peers.skel.rs"));
}

pub(crate) const REPEAT: u32 = 200;
const CALLS: u32 = 50;
/// Columns of the program-cost tables (the goals read them by name).
pub(crate) const COLUMNS: [&str; 11] = [
    "routes",
    "xdp-ecmp resilient",
    "xdp-ecmp modulo",
    "bare forwarder",
    "bpf_fib_lookup forwarder",
    "empty program",
    "resilient - empty",
    "bare - empty",
    "resilient / bare",
    "(resilient - empty) / (bare - empty)",
    "resilient / fib",
];
const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x22];

/// One test run of a program: the frame in, the frame out.
pub(crate) type Runner<'a> = dyn FnMut(&[u8], &mut [u8]) -> Result<(u32, Duration)> + 'a;

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
    pub(crate) fn ttl_at(self) -> usize {
        match self {
            Family::V4 => 14 + 8,
            Family::V6 => 14 + 7,
        }
    }
    /// The i-th measured destination (a /32 or /128 route each).
    pub(crate) fn dst(self, i: u32) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(0x6440_0000u32 + i)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from((0x2001_0db8_0100u128 << 80) | u128::from(i))),
        }
    }
    pub(crate) fn frame(self, i: u32) -> Vec<u8> {
        match self.dst(i) {
            IpAddr::V4(a) => crate::frame_to(a),
            IpAddr::V6(a) => crate::frame6_to(a),
        }
    }
}

/// What a measured run must end in.
#[derive(Clone, Copy)]
pub(crate) enum Verdict {
    /// XDP_REDIRECT with the TTL / hop limit at `ttl_at` one lower per
    /// repetition (`decrements`; the bare forwarder leaves it alone).
    Forwards { ttl_at: usize, decrements: bool },
    /// The empty program's own verdict, the frame as it came.
    Returns(u32),
}

impl Verdict {
    /// Checks one test run of `repeat` repetitions of `pkt`.
    fn check(self, action: u32, pkt: &[u8], out: &[u8], repeat: u32) -> Result<()> {
        match self {
            Verdict::Forwards { ttl_at, decrements } => {
                let want = if decrements { 255 - repeat as u8 } else { 255 };
                if action != XDP_REDIRECT || out[ttl_at] != want {
                    bail!(
                        "a measured program did not forward every repetition (action {action}, TTL {} not {want})",
                        out[ttl_at]
                    );
                }
            }
            Verdict::Returns(want) => {
                if action != want || out.get(..pkt.len()) != Some(pkt) {
                    bail!("the empty program returned {action} (not {want}) or changed the frame");
                }
            }
        }
        Ok(())
    }
}

/// Mean ns/packet over CALLS runs of REPEAT packets; every run must end in
/// `verdict`.
pub(crate) fn cost(run: &mut Runner<'_>, pkt: &[u8], verdict: Verdict) -> Result<f64> {
    let mut out = vec![0u8; 128];
    let mut total = Duration::ZERO;
    for _ in 0..CALLS {
        let (action, d) = run(pkt, &mut out)?;
        verdict.check(action, pkt, &out, REPEAT)?;
        total += d;
    }
    Ok(total.as_nanos() as f64 / f64::from(CALLS))
}

/// [`cost`] of an xdp-ecmp dataplane's program, frames received on `ingress`.
pub(crate) fn cost_of(dp: &Dataplane, ingress: u32, pkt: &[u8], verdict: Verdict) -> Result<f64> {
    cost(
        &mut |p, o| {
            let r = dp.test_run_from(ingress, p, o, REPEAT)?;
            Ok((r.action, r.duration))
        },
        pkt,
        verdict,
    )
}

/// [`cost`] of a peer program, frames received on `ingress`.
pub(crate) fn cost_of_prog(
    prog: &libbpf_rs::ProgramMut<'_>,
    ingress: u32,
    pkt: &[u8],
    verdict: Verdict,
) -> Result<f64> {
    cost(
        &mut |p, o| {
            let r = test_run_prog(prog, ingress, p, o, REPEAT)?;
            Ok((r.action, r.duration))
        },
        pkt,
        verdict,
    )
}

/// [`cost`] of the empty program (the test-run loop's own), which must
/// return XDP_PASS with the frame as it came.
pub(crate) fn cost_of_empty(peers: &skel::PeersSkel<'_>, ingress: u32, pkt: &[u8]) -> Result<f64> {
    cost_of_prog(
        &peers.progs.xdp_empty,
        ingress,
        pkt,
        Verdict::Returns(XDP_PASS),
    )
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(crate) fn ours(mode: u8, ingress: u32, egress: u32, smac: [u8; 6]) -> Result<Dataplane> {
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
    let mut calls = Calls::new();
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
        let at = fam.ttl_at();
        let forwards = Verdict::Forwards {
            ttl_at: at,
            decrements: true,
        };
        let mut pkt = Vec::new();
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
            pkt = fam.frame(n / 2);
            // One round runs every program once, one after the other, so
            // drift hits them alike; the differences from the empty
            // program are each round's own.
            let mut cols: [Vec<f64>; 5] = Default::default();
            let (mut over_res, mut over_bare) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                let r = cost_of(&res, ingress, &pkt, forwards)?;
                let m = cost_of(&modulo, ingress, &pkt, forwards)?;
                let b = cost_of_prog(
                    &peers.progs.xdp_bare,
                    ingress,
                    &pkt,
                    Verdict::Forwards {
                        ttl_at: at,
                        decrements: false,
                    },
                )?;
                let f = cost_of_prog(&peers.progs.xdp_fib, ingress, &pkt, forwards)?;
                let e = cost_of_empty(&peers, ingress, &pkt)?;
                for (c, v) in cols.iter_mut().zip([r, m, b, f, e]) {
                    c.push(v);
                }
                over_res.push(r - e);
                over_bare.push(b - e);
            }
            let m: Vec<f64> = cols.into_iter().map(median).collect();
            let (over_res, over_bare) = (median(over_res), median(over_bare));
            t.row(vec![
                num(f64::from(n), 0),
                num(m[0], 1),
                num(m[1], 1),
                num(m[2], 1),
                num(m[3], 1),
                num(m[4], 1),
                num(over_res, 1),
                num(over_bare, 1),
                num(m[0] / m[2], 2),
                num(over_res / over_bare, 2),
                num(m[0] / m[3], 2),
            ]);
        }
        let empty_ns: Vec<String> = (0..t.rows.len())
            .filter_map(|i| t.value(i, "empty program"))
            .map(|v| format!("{v:.1}"))
            .collect();
        t.note(format!("Every measured run of a forwarder must end in XDP_REDIRECT with the TTL / hop limit {REPEAT} lower (255 at the start; the bare forwarder leaves it alone): the kernel feeds each rewritten frame back in, so all {REPEAT} repetitions were forwarded, none passed. The context names the ingress port (bpf_fib_lookup needs one); the same routes are in the kernel FIB and in xdp-ecmp's maps."));
        t.note(format!("The empty program (it returns XDP_PASS, nothing else) runs through the same test-run loop with the same frame and context, in every round beside the others; each of its runs must return XDP_PASS with the frame unchanged. It measures the loop's own cost per packet: {} ns here, by route count. 'resilient - empty' and 'bare - empty' are what each program costs over that loop (the median of each round's own difference); their ratio is the programs' cost without the loop, where 'resilient / bare' keeps the loop in both.", empty_ns.join(", ")));
        tables.push(t);
        // The calls each program makes, at this family's largest tables.
        let mut subjects = vec![
            Subject {
                name: "xdp-ecmp resilient",
                fd: res.prog_fd(),
                run: forwarded(&pkt, at, |p, o| {
                    Ok(res.test_run_from(ingress, p, o, 1)?.action)
                }),
            },
            Subject {
                name: "xdp-ecmp modulo",
                fd: modulo.prog_fd(),
                run: forwarded(&pkt, at, |p, o| {
                    Ok(modulo.test_run_from(ingress, p, o, 1)?.action)
                }),
            },
            Subject {
                name: "bare forwarder",
                fd: peers.progs.xdp_bare.as_fd(),
                run: once(
                    &pkt,
                    Verdict::Forwards {
                        ttl_at: at,
                        decrements: false,
                    },
                    |p, o| Ok(test_run_prog(&peers.progs.xdp_bare, ingress, p, o, 1)?.action),
                ),
            },
            Subject {
                name: "bpf_fib_lookup forwarder",
                fd: peers.progs.xdp_fib.as_fd(),
                run: forwarded(&pkt, at, |p, o| {
                    Ok(test_run_prog(&peers.progs.xdp_fib, ingress, p, o, 1)?.action)
                }),
            },
            Subject {
                name: EMPTY,
                fd: peers.progs.xdp_empty.as_fd(),
                run: once(&pkt, Verdict::Returns(XDP_PASS), |p, o| {
                    Ok(test_run_prog(&peers.progs.xdp_empty, ingress, p, o, 1)?.action)
                }),
            },
        ];
        calls.family(fam.name(), have, &mut subjects)?;
    }
    tables.push(calls.table());
    tables.push(crate::v6_levels::levels(
        ingress, egress, smac, &peers, rounds,
    )?);
    Ok(tables)
}

/// One test run of one packet (`run` gives its verdict), checked against
/// `verdict`.
fn once<'a>(
    pkt: &'a [u8],
    verdict: Verdict,
    mut run: impl FnMut(&[u8], &mut [u8]) -> Result<u32> + 'a,
) -> Box<dyn FnMut() -> Result<()> + 'a> {
    Box::new(move || {
        let mut out = vec![0u8; 128];
        let action = run(pkt, &mut out)?;
        verdict.check(action, pkt, &out, 1)
    })
}

/// [`once`] for a forwarder that lowers the TTL / hop limit at `ttl_at`.
fn forwarded<'a>(
    pkt: &'a [u8],
    ttl_at: usize,
    run: impl FnMut(&[u8], &mut [u8]) -> Result<u32> + 'a,
) -> Box<dyn FnMut() -> Result<()> + 'a> {
    once(
        pkt,
        Verdict::Forwards {
            ttl_at,
            decrements: true,
        },
        run,
    )
}
