//! Packet rate with two queues on two CPUs: a generator on each CPU fills its own queue of the forwarder's veth; the XDP engine against the AF_XDP engine with a worker per queue, side by side in one run.

use anyhow::{bail, Result};
use dataplane::abi::GROUP_RESILIENT;
use dataplane::{AttachMode, Dataplane, LoadOptions};

use crate::rate::{
    load_traffic, mac, measure, min_med_max, start_engine, veth_chain, Ports, RateOptions, Sample,
    FLOWS, SINKS,
};
use crate::report::{num, pct, text, Table};
use crate::ANYCAST;

const VARIANTS: [&str; 2] = [
    "xdp-ecmp, XDP engine",
    "xdp-ecmp, AF_XDP engine (2 workers, one per queue, pinned to CPUs 0 and 1, copy mode)",
];

/// Measures both engines on a chain whose veths have two queues.
pub fn two_queues(opts: &RateOptions) -> Result<Table> {
    let (net, n) = veth_chain("rate2q", SINKS, 2)?;
    net.enter()?;
    dataplane::pin_thread_to_cpu(0)?;
    let Ports {
        gen_if,
        in_if,
        outs,
        sinks,
    } = n.ports()?;
    let t = load_traffic()?;
    let _sink_links = sinks
        .iter()
        .map(|&i| t.progs.xdp_sink.attach_xdp(i as i32))
        .collect::<Result<Vec<_>, _>>()?;
    let mut xdp = Dataplane::load(&LoadOptions::default())?;
    let mut steer = Dataplane::load(&LoadOptions {
        steer_xsk: true,
        ..Default::default()
    })?;
    for dp in [&mut xdp, &mut steer] {
        crate::ecmp_world(dp, &outs, GROUP_RESILIENT, 128, [0x5eed, 0x0001])?;
        crate::admit(dp, in_if, mac(0, 1))?;
    }
    let ports: Vec<String> = std::iter::once(&n.inp).chain(&n.out).cloned().collect();
    let engine = start_engine(&steer, &ports, &[0, 1])?;
    let frame = crate::frame_to(ANYCAST);
    let mut samples: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
    for run in 0..opts.runs {
        for (vi, name) in VARIANTS.iter().enumerate() {
            eprintln!(
                "packet rate: two queues, run {}/{}, {name} ...",
                run + 1,
                opts.runs
            );
            let _link = if vi == 0 {
                xdp.attach(in_if, AttachMode::Native)?
            } else {
                steer.attach(in_if, AttachMode::Native)?
            };
            let s = measure(&t, gen_if, &sinks, &frame, opts.window, true)?;
            if s.mpps <= 0.0 {
                bail!("{name}: no frame reached the sinks (two queues)");
            }
            samples[vi].push(s);
        }
    }
    engine.stop(&steer)?;
    let mut table = Table::new(
        "packet_rate_two_queues",
        format!(
            "packet rate with two queues on two CPUs, 64-byte IPv4 UDP, {FLOWS} flows, a generator on each CPU -> forwarder -> 4-way ECMP -> 4 sinks; Mpps over {:.1} s windows, {} runs",
            opts.window, opts.runs
        ),
        &[
            "forwarder",
            "min Mpps",
            "median Mpps",
            "max Mpps",
            "this / XDP engine (median)",
            "offered Mpps (median)",
            "busiest sink",
        ],
    );
    let medians: Vec<f64> = samples
        .iter()
        .map(|v| min_med_max(&v.iter().map(|s| s.mpps).collect::<Vec<_>>()).1)
        .collect();
    for (vi, name) in VARIANTS.iter().enumerate() {
        let v: Vec<f64> = samples[vi].iter().map(|s| s.mpps).collect();
        let (lo, med, hi) = min_med_max(&v);
        let offered = min_med_max(
            &samples[vi]
                .iter()
                .map(|s| s.offered_mpps)
                .collect::<Vec<_>>(),
        )
        .1;
        let total: u64 = samples[vi].iter().flat_map(|s| &s.per_sink).sum();
        let busiest = (0..SINKS)
            .map(|k| samples[vi].iter().map(|s| s.per_sink[k]).sum::<u64>())
            .max()
            .unwrap_or(0);
        table.row(vec![
            text(*name),
            num(lo, 2),
            num(med, 2),
            num(hi, 2),
            if vi == 0 {
                text("-")
            } else {
                num(med / medians[0], 2)
            },
            num(offered, 2),
            pct(100.0 * busiest as f64 / total.max(1) as f64),
        ]);
    }
    table.note("Every veth of the chain has two queues; a frame redirected into a veth lands in the queue of the sending CPU, so the generator on CPU 0 fills queue 0 and the one on CPU 1 queue 1. The XDP engine forwards each queue on the CPU that fills it; the AF_XDP engine has a worker per queue, pinned to that CPU. Generators, forwarders and sinks share the two CPUs: the figure is the whole chain's, on a machine with no CPU to spare.");
    Ok(table)
}
