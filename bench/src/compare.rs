//! Program cost side by side: xdp-ecmp (resilient, modulo) vs the bare forwarder (the limit) vs a bpf_fib_lookup forwarder, at 1, 10k and 1M routes, IPv4.

use std::mem::MaybeUninit;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use dataplane::abi::{
    xe_config, xe_nexthop, xe_route, GROUP_MODULO, GROUP_RESILIENT, NH_USABLE, RT_UNICAST,
    XDP_REDIRECT,
};
use dataplane::loader::{ifindex_of, pin_thread_to_cpu, test_run_prog};
use dataplane::tables::single_path;
use dataplane::testnet::TestNet;
use dataplane::{Dataplane, LoadOptions, TableWriter};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject};

#[allow(clippy::all, clippy::pedantic, non_camel_case_types, dead_code, unused)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/peers.skel.rs"));
}

const REPEAT: u32 = 200;
const CALLS: u32 = 50;
const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x22];

/// One test run of a program: the frame in, the frame out.
type Runner<'a> = dyn FnMut(&[u8], &mut [u8]) -> Result<(u32, Duration)> + 'a;

/// Mean ns/packet over CALLS runs of REPEAT packets, all of which must redirect.
fn cost(run: &mut Runner<'_>, pkt: &[u8]) -> Result<f64> {
    let mut out = vec![0u8; 128];
    let mut total = Duration::ZERO;
    for _ in 0..CALLS {
        let (action, d) = run(pkt, &mut out)?;
        if action != XDP_REDIRECT {
            bail!("a measured program did not forward the frame (action {action})");
        }
        total += d;
    }
    Ok(total.as_nanos() as f64 / f64::from(CALLS))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ours(mode: u8, egress: u32, smac: [u8; 6]) -> Result<Dataplane> {
    let mut dp =
        Dataplane::load(&LoadOptions::default()).context("loading xdp-ecmp (run as root)")?;
    let nh = xe_nexthop {
        ifindex: egress,
        mtu: 1500,
        dmac: GW_MAC,
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

/// Runs the comparison; prints a Markdown table.
pub fn compare(route_counts: &[u32], rounds: usize) -> Result<()> {
    let net = TestNet::new("cmp", &[("xe-c0", "xe-c1"), ("xe-e0", "xe-e1")])?;
    net.ip(&["addr", "add", "10.9.0.1/24", "dev", "xe-c0"])?;
    net.ip(&["addr", "add", "10.0.0.1/24", "dev", "xe-e0"])?;
    net.ip(&[
        "neigh",
        "add",
        "10.0.0.2",
        "lladdr",
        "02:00:00:00:00:22",
        "dev",
        "xe-e0",
        "nud",
        "permanent",
    ])?;
    std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            net.name(),
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])
        .status()?;
    net.enter()?;
    pin_thread_to_cpu(0)?;
    let (ingress, egress) = (ifindex_of("xe-c0")?, ifindex_of("xe-e0")?);
    let smac = [2, 0, 0, 0, 0, 0x11];

    let mut res = ours(GROUP_RESILIENT, egress, smac)?;
    let mut modulo = ours(GROUP_MODULO, egress, smac)?;
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

    println!("program cost, BPF_PROG_TEST_RUN, 64-byte IPv4 UDP, {rounds} rounds x {CALLS} calls x {REPEAT} packets, median ns/packet (an empty program measures ~26 ns here)");
    println!("| routes | xdp-ecmp resilient | xdp-ecmp modulo | bare forwarder | bpf_fib_lookup forwarder | resilient / bare | resilient / fib |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut have = 0u32;
    let route = xe_route {
        group: 1,
        kind: RT_UNICAST,
        ..Default::default()
    };
    for &n in route_counts {
        // Same /32s in the kernel (for the FIB peer) and in our maps.
        let mut batch = String::new();
        for i in have..n {
            let a = Ipv4Addr::from(0x6440_0000u32 + i);
            batch.push_str(&format!("route add {a}/32 via 10.0.0.2\n"));
            res.set_route_v4(a, 32, &route)?;
            modulo.set_route_v4(a, 32, &route)?;
        }
        let file = std::env::temp_dir().join(format!("xe-cmp-{}.batch", std::process::id()));
        std::fs::write(&file, batch)?;
        let st = std::process::Command::new("ip")
            .args(["-n", net.name(), "-batch"])
            .arg(&file)
            .status()?;
        let _ = std::fs::remove_file(&file);
        if !st.success() {
            bail!("ip -batch of {n} routes failed");
        }
        have = n;
        let pkt = crate::frame_to(Ipv4Addr::from(0x6440_0000u32 + n / 2));
        let mut cols: [Vec<f64>; 4] = Default::default();
        for _ in 0..rounds {
            cols[0].push(cost(
                &mut |p, o| {
                    let r = res.test_run_from(ingress, p, o, REPEAT)?;
                    Ok((r.action, r.duration))
                },
                &pkt,
            )?);
            cols[1].push(cost(
                &mut |p, o| {
                    let r = modulo.test_run_from(ingress, p, o, REPEAT)?;
                    Ok((r.action, r.duration))
                },
                &pkt,
            )?);
            cols[2].push(cost(
                &mut |p, o| {
                    let r = test_run_prog(&peers.progs.xdp_bare, ingress, p, o, REPEAT)?;
                    Ok((r.action, r.duration))
                },
                &pkt,
            )?);
            cols[3].push(cost(
                &mut |p, o| {
                    let r = test_run_prog(&peers.progs.xdp_fib, ingress, p, o, REPEAT)?;
                    Ok((r.action, r.duration))
                },
                &pkt,
            )?);
        }
        let m: Vec<f64> = cols.into_iter().map(median).collect();
        println!(
            "| {n} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} |",
            m[0],
            m[1],
            m[2],
            m[3],
            m[0] / m[2],
            m[0] / m[3]
        );
    }
    Ok(())
}
