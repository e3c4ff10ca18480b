//! Benchmarks of xdp-ecmp: program cost, packet rate through veth, control-plane rate and latency, split accuracy and flow disruption; `full` runs them all and writes a report.

use std::net::Ipv4Addr;
use std::time::Duration;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use dataplane::abi::{
    xe_config, xe_inport, xe_nexthop, GROUP_MODULO, GROUP_RESILIENT, INPORT_FWD_V4, INPORT_FWD_V6,
    NH_USABLE, XDP_REDIRECT,
};
use dataplane::pin_thread_to_cpu;
use dataplane::tables::multipath;
use dataplane::{Dataplane, LoadOptions, StampMode, TableWriter};

mod calls;
mod charts;
mod compare;
mod control_plane;
mod flows;
mod pinning;
mod rate;
mod rate_queues;
mod report;
mod restart;
mod route_socket;
mod torn;
mod v6_levels;

use report::{num, text, Table};

/// Repetitions per test-run call: the kernel feeds the rewritten frame back,
/// so a frame starting at TTL 255 stays forwardable for 254 runs.
const REPEAT: u32 = 200;
/// Test-run calls per measurement. With repeat > 1 the kernel switches the
/// XDP dispatcher to the program and back around every call (~16 ms of wall
/// time here, none of it in the measured duration), so calls are few.
const CALLS: u32 = 100;

/// The anycast address every benchmark forwards to.
pub(crate) const ANYCAST: Ipv4Addr = Ipv4Addr::new(172, 16, 255, 66);

/// An ECMP world in xdp-ecmp's maps: next hop k+1 leaves by `ports[k]`
/// (MACs 02:00:00:00:01:k+1 -> 02:00:00:00:02:k+1), group 1 of `size` slots
/// over them round robin, a /32 route to ANYCAST through it.
pub(crate) fn ecmp_world(
    dp: &mut Dataplane,
    ports: &[u32],
    mode: u8,
    size: u16,
    seed: [u32; 2],
) -> Result<()> {
    let nhs: Vec<xe_nexthop> = (1..)
        .zip(ports)
        .map(|(id, &ifindex)| xe_nexthop {
            ifindex,
            mtu: 1500,
            dmac: [2, 0, 0, 0, 2, id],
            smac: [2, 0, 0, 0, 1, id],
            state: NH_USABLE,
            ..Default::default()
        })
        .collect();
    multipath(dp, ANYCAST, &nhs, mode, size)?;
    dp.set_config(&xe_config {
        seed,
        ..Default::default()
    })?;
    Ok(())
}

/// Admits frames received on `ifindex` to `mac`, both families forwarded:
/// the benchmarks measure the program as it runs attached, admission included.
pub(crate) fn admit(dp: &mut Dataplane, ifindex: u32, mac: [u8; 6]) -> Result<()> {
    dp.set_inport(
        ifindex,
        &xe_inport {
            mac,
            flags: INPORT_FWD_V4 | INPORT_FWD_V6,
            ..Default::default()
        },
    )?;
    Ok(())
}

fn world(dp: &mut Dataplane, mode: u8) -> Result<()> {
    // Loopback exists in every namespace and is accepted by the tx port map;
    // test runs never transmit, so no frame goes anywhere. A test run
    // without an ingress device is received on it (ifindex 1).
    let size: u16 = if mode == GROUP_RESILIENT { 64 } else { 4 };
    admit(dp, 1, IN_MAC)?;
    ecmp_world(dp, &[1; 4], mode, size, [0x1234, 0x5678])?;
    // A repeated test run feeds the rewritten frame back: it must be
    // admitted again, so the next hops' MAC is the ingress port's.
    for id in 1..=4u32 {
        let nh = dp.nexthop(id)?;
        dp.set_nexthop(id, &xe_nexthop { dmac: IN_MAC, ..nh })?;
    }
    Ok(())
}

/// A 64-byte UDP frame to the anycast address with TTL 255.
fn frame() -> Vec<u8> {
    frame_to(ANYCAST)
}

/// The MAC of the forwarder's ingress port, where the benchmark frames go.
pub(crate) const IN_MAC: [u8; 6] = [2, 0, 0, 0, 0xaa, 1];

/// A 64-byte UDP frame to `dst`, TTL 255 (so 200 repetitions all forward).
pub(crate) fn frame_to(dst: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[0..6].copy_from_slice(&IN_MAC);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0xcc, 1]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&50u16.to_be_bytes());
    ip[8] = 255;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 2, 0, 100]);
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = ipv4_checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f[34..36].copy_from_slice(&32700u16.to_be_bytes());
    f[36..38].copy_from_slice(&53u16.to_be_bytes());
    f[38..40].copy_from_slice(&30u16.to_be_bytes());
    f
}

/// The IPv4 header checksum of `ip` (its checksum field is zeroed first).
pub(crate) fn ipv4_checksum(ip: &mut [u8]) -> u16 {
    ip[10..12].fill(0);
    let mut sum: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A 64-byte IPv6 UDP frame to `dst`, hop limit 255.
pub(crate) fn frame6_to(dst: std::net::Ipv6Addr) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[0..6].copy_from_slice(&IN_MAC);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0xcc, 1]);
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    let ip = &mut f[14..54];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&10u16.to_be_bytes());
    ip[6] = 17;
    ip[7] = 255;
    ip[8..24].copy_from_slice(
        &"fd00:2::100"
            .parse::<std::net::Ipv6Addr>()
            .expect("address")
            .octets(),
    );
    ip[24..40].copy_from_slice(&dst.octets());
    f[54..56].copy_from_slice(&32700u16.to_be_bytes());
    f[56..58].copy_from_slice(&53u16.to_be_bytes());
    f[58..60].copy_from_slice(&10u16.to_be_bytes());
    // UDP over IPv6 needs a checksum; the programs do not check it.
    f[60..62].copy_from_slice(&0xffffu16.to_be_bytes());
    f
}

/// Mean ns/packet over `calls` test-run calls of REPEAT packets each,
/// checking that every packet was forwarded.
fn ns_per_packet(dp: &Dataplane, calls: u32) -> Result<f64> {
    ns_per_packet_of(dp, &frame(), 14 + 8, calls)
}

/// As [`ns_per_packet`] for the frame `pkt`, whose TTL or hop limit is at
/// `ttl_at`.
pub(crate) fn ns_per_packet_of(
    dp: &Dataplane,
    pkt: &[u8],
    ttl_at: usize,
    calls: u32,
) -> Result<f64> {
    let mut out = vec![0u8; 128];
    let mut total = Duration::ZERO;
    for _ in 0..calls {
        let r = dp.test_run_repeat(pkt, &mut out, REPEAT)?;
        if r.action != XDP_REDIRECT || out[ttl_at] != 255 - REPEAT as u8 {
            bail!("the benchmark frame was not forwarded on every repetition");
        }
        total += r.duration;
    }
    Ok(total.as_nanos() as f64 / f64::from(calls))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn load(stamp_mode: StampMode, mode: u8) -> Result<Dataplane> {
    let mut dp = Dataplane::load(&LoadOptions {
        stamp_mode,
        ..Default::default()
    })
    .context("loading the XDP program (run as root)")?;
    world(&mut dp, mode)?;
    Ok(dp)
}

fn prog_cost(rounds: usize) -> Result<Table> {
    pin_thread_to_cpu(0)?;
    let variants = [
        (
            "resilient, stamp on change",
            load(StampMode::OnChange, GROUP_RESILIENT)?,
        ),
        (
            "resilient, stamp always",
            load(StampMode::Always, GROUP_RESILIENT)?,
        ),
        (
            "resilient, no stamp",
            load(StampMode::Never, GROUP_RESILIENT)?,
        ),
        ("modulo", load(StampMode::OnChange, GROUP_MODULO)?),
    ];
    // One CPU: rounds interleave the variants so drift hits them alike.
    let mut single: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for _ in 0..rounds {
        for (i, (_, dp)) in variants.iter().enumerate() {
            single[i].push(ns_per_packet(dp, CALLS)?);
        }
    }
    // Two CPUs hitting the same bucket: the stamp's cache line is shared.
    let mut shared: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for _ in 0..rounds {
        for (i, (_, dp)) in variants.iter().take(3).enumerate() {
            let other = std::thread::scope(|s| {
                let h = s.spawn(|| -> Result<f64> {
                    pin_thread_to_cpu(1)?;
                    ns_per_packet(dp, CALLS)
                });
                let mine = ns_per_packet(dp, CALLS);
                (mine, h.join())
            });
            let (a, b) = other;
            let b = b.map_err(|_| anyhow::anyhow!("benchmark thread panicked"))??;
            shared[i].push((a? + b) / 2.0);
        }
    }
    let base = median(&mut single[0].clone());
    let mut t = Table::new(
        "prog_cost_variants",
        format!("cost of bucket stamping (resilient idle timer) and of modulo mode, BPF_PROG_TEST_RUN, 64-byte IPv4 UDP, 1 route, {rounds} rounds x {CALLS} calls x {REPEAT} packets, median ns/packet"),
        &["variant", "1 CPU ns/packet", "vs stamp on change", "2 CPUs, same bucket, ns/packet"],
    );
    for (i, (name, _)) in variants.iter().enumerate() {
        let one = median(&mut single[i]);
        let two = shared
            .get_mut(i)
            .map_or_else(|| text("-"), |v| num(median(v), 1));
        t.row(vec![text(*name), num(one, 1), num(one / base, 2), two]);
    }
    t.note("'stamp on change' is the shipped program: a resilient bucket's last-used tick is written only when it changes, so two CPUs hitting one bucket do not bounce its cache line on every packet ('stamp always' shows the cost of doing so).");
    Ok(t)
}

/// Tests that load both CPUs with live frames take turns.
#[cfg(test)]
pub(crate) static LIVE_TRAFFIC: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The `xdp-ecmp` binary next to this one (cargo puts both in
/// target/<profile>; a test binary sits one level down, in deps/).
pub(crate) fn xdp_ecmp_binary() -> Result<std::path::PathBuf> {
    let me = std::env::current_exe()?;
    let here = me.with_file_name("xdp-ecmp");
    let bin = match me.parent().and_then(|d| d.parent()) {
        Some(up) if !here.exists() => up.join("xdp-ecmp"),
        _ => here,
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p xdp-ecmp)",
            bin.display()
        );
    }
    Ok(bin)
}

/// How big each benchmark runs.
struct Sizes {
    quick: bool,
    compare_routes: Vec<u32>,
    compare_rounds: usize,
    prog_cost_rounds: usize,
    rate: rate::RateOptions,
    control: control_plane::ControlOptions,
    flows: usize,
}

impl Sizes {
    fn full() -> Self {
        Sizes {
            quick: false,
            compare_routes: vec![1, 10_000, 1_000_000],
            compare_rounds: 5,
            prog_cost_rounds: 5,
            rate: rate::RateOptions {
                runs: 3,
                window: 1.5,
            },
            control: control_plane::ControlOptions {
                routes: 1_000_000,
                churn_rates: vec![1_000, 10_000],
                churn_seconds: 10.0,
                burst_rate: Some(10_000),
            },
            flows: 32_768,
        }
    }

    fn quick() -> Self {
        Sizes {
            quick: true,
            compare_routes: vec![1, 1000],
            compare_rounds: 1,
            prog_cost_rounds: 1,
            rate: rate::RateOptions {
                runs: 1,
                window: 0.3,
            },
            control: control_plane::ControlOptions {
                routes: 10_000,
                churn_rates: vec![1_000],
                churn_seconds: 2.0,
                burst_rate: Some(1_000),
            },
            flows: 4096,
        }
    }
}

/// Runs every benchmark; prints each table when it is measured.
fn suite(sizes: &Sizes, command: String) -> Result<report::Report> {
    let started = std::time::Instant::now();
    let mut r = report::Report::new(command);
    let step = |name: &str| eprintln!("== [{:>4.0} s] {name}", started.elapsed().as_secs_f64());
    step("split accuracy");
    r.add(vec![flows::split(&[sizes.flows, sizes.flows * 8], 1)]);
    step("flow disruption");
    r.add(vec![flows::disruption(sizes.flows, 1)]);
    step("program cost vs bare and bpf_fib_lookup forwarders (IPv4, IPv6)");
    r.add(compare::compare(
        &sizes.compare_routes,
        sizes.compare_rounds,
    )?);
    step("program cost of stamping and modulo");
    r.add(vec![prog_cost(sizes.prog_cost_rounds)?]);
    step("program cost of flow pinning");
    r.add(pinning::pin_cost(sizes.prog_cost_rounds)?);
    step("packet rate through veth");
    r.add(rate::rate(&sizes.rate)?);
    step("control plane: ingestion, latency under churn, memory");
    r.add(control_plane::control_plane(&sizes.control)?);
    if !sizes.quick {
        judge(&mut r);
    }
    r.seconds = started.elapsed().as_secs_f64();
    Ok(r)
}

/// Column `col` of every row of table `id`, as (first cell, value).
fn column(r: &report::Report, id: &str, col: &str) -> Vec<(String, f64)> {
    r.table(id).map_or_else(Vec::new, |t| {
        (0..t.rows.len())
            .filter_map(|i| Some((t.rows[i][0].text.clone(), t.value(i, col)?)))
            .collect()
    })
}

fn list(v: &[(String, f64)], unit: &str) -> String {
    let prec = if unit == "x" { 2 } else { 0 };
    v.iter()
        .map(|(k, x)| format!("{x:.prec$}{unit} ({k})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The value under `col` in the row of table `id` whose first cell starts with `label`.
fn cell(r: &report::Report, id: &str, label: &str, col: &str) -> Option<f64> {
    let t = r.table(id)?;
    let i = (0..t.rows.len()).find(|&i| t.rows[i][0].text.starts_with(label))?;
    t.value(i, col)
}

/// Marks every goal of the benchmark issue met or not, from the tables;
/// each reason is computed from the same run.
fn judge(r: &mut report::Report) {
    let stamp = cell(
        r,
        "prog_cost_variants",
        "resilient, stamp on change",
        "1 CPU ns/packet",
    );
    let no_stamp = cell(
        r,
        "prog_cost_variants",
        "resilient, no stamp",
        "1 CPU ns/packet",
    );
    for fam in ["ipv4", "ipv6"] {
        let id = format!("prog_cost_{fam}");
        let bare = column(r, &id, "resilient / bare");
        let fib = column(r, &id, "resilient / fib");
        let ours = column(r, &id, "xdp-ecmp resilient");
        let peer = column(r, &id, "bpf_fib_lookup forwarder");
        let bare_ns = column(r, &id, "bare forwarder");
        let loop_ns = column(r, &id, "empty program")
            .first()
            .map_or_else(String::new, |v| {
                format!(
                    ", {:.0} ns of it the test-run loop, as the empty program measures it",
                    v.1
                )
            });
        let span = |v: &[(String, f64)]| match (v.first(), v.last()) {
            (Some(a), Some(b)) => {
                format!("{:.0} -> {:.0} ns from {} to {} routes", a.1, b.1, a.0, b.0)
            }
            _ => "-".into(),
        };
        let why_bare = if fam == "ipv4" {
            format!(
                "the bare program only rewrites MACs ({:.0} ns{loop_ns}); xdp-ecmp parses L3/L4, hashes the 5-tuple with a keyed hash, finds route, group, bucket and next hop, and counts. Stamping the bucket for the idle timer: {:.0} vs {:.0} ns without (prog-cost table)",
                bare_ns.first().map_or(0.0, |v| v.1),
                stamp.unwrap_or(0.0),
                no_stamp.unwrap_or(0.0)
            )
        } else {
            format!(
                "as for IPv4; IPv6 routes by binary search on prefix lengths, one slot-table search per level: xdp-ecmp {}",
                span(&ours)
            )
        };
        r.goal(
            &format!("program cost {fam}, vs bare forwarder (routes)"),
            "<= 1.5x",
            list(&bare, "x"),
            !bare.is_empty() && bare.iter().all(|v| v.1 <= 1.5),
            &why_bare,
        );
        let lookup = if fam == "ipv4" {
            "DIR-24-8 tables (one or two array reads)"
        } else {
            "the length search (one slot-table search per level)"
        };
        r.goal(
            &format!("program cost {fam}, vs bpf_fib_lookup forwarder (routes)"),
            "<= 1.0x",
            list(&fib, "x"),
            !fib.is_empty() && fib.iter().all(|v| v.1 <= 1.0),
            &format!("routes in {lookup}: xdp-ecmp {}; the kernel's FIB lookup with its neighbour step {}", span(&ours), span(&peer)),
        );
    }
    judge_v6_lookup(r);
    if let Some(t) = r.table("packet_rate") {
        let mut vs_linux = Vec::new();
        let mut vs_bare = Vec::new();
        let mut own_cpu = (0.0, 0.0, 0.0);
        let mut afxdp = Vec::new();
        for layout in ["one CPU", "forwarder on its own CPU"] {
            let ours = rate::median_of(t, layout, "xdp-ecmp");
            if let (Some(o), Some(a)) = (ours, rate::median_of(t, layout, "xdp-ecmp, AF_XDP")) {
                afxdp.push((layout.to_string(), a / o));
            }
            let linux = rate::median_of(t, layout, "Linux");
            let bare = rate::median_of(t, layout, "bare");
            if let (Some(o), Some(l), Some(b)) = (ours, linux, bare) {
                vs_linux.push((layout.to_string(), o / l));
                vs_bare.push((layout.to_string(), o / b));
                // ns per frame on the forwarder's CPU
                own_cpu = (1e3 / o, 1e3 / l, 1e3 / b);
            }
        }
        let (o, l, b) = own_cpu;
        r.goal(
            "packet rate vs Linux forwarding",
            ">= 4x",
            list(&vs_linux, "x"),
            !vs_linux.is_empty() && vs_linux.iter().all(|v| v.1 >= 4.0),
            &format!("on its own CPU a frame costs the bare forwarder {b:.0} ns, nearly all of it veth and sink work every forwarder pays; xdp-ecmp adds {:.0} ns to that, Linux forwarding {:.0} ns; this shared floor caps the ratio (Linux's frames even skip the last veth hop)", o - b, l - b),
        );
        if let Some(t2) = r.table("packet_rate_two_queues") {
            if let Some(row) = (0..t2.rows.len()).find(|&i| t2.rows[i][0].text.contains("AF_XDP")) {
                if let Some(v) = t2.value(row, "this / XDP engine (median)") {
                    afxdp.push(("two queues on two CPUs".to_string(), v));
                }
            }
        }
        r.goal(
            "AF_XDP engine vs the XDP engine (packet rate)",
            ">= 0.3x",
            list(&afxdp, "x"),
            !afxdp.is_empty() && afxdp.iter().all(|v| v.1 >= 0.3),
            "copy mode (veth offers no zero-copy): the kernel copies each frame into the socket's memory and builds an skb for every frame it sends; the worker shares its CPU with the input's NAPI, which keeps receiving what the full socket ring then drops",
        );
        r.goal(
            "packet rate vs the bare forwarder",
            ">= 0.9x",
            list(&vs_bare, "x"),
            !vs_bare.is_empty() && vs_bare.iter().all(|v| v.1 >= 0.9),
            &format!("xdp-ecmp's {:.0} ns more per frame than bare ({o:.0} vs {b:.0} ns on the forwarder's CPU) is its program's extra work, as in the program-cost table, plus spreading over 4 out ports instead of 1", o - b),
        );
    }
    let alone = cell(r, "route_ingestion", "kernel alone", "routes/s");
    let with_daemon = cell(r, "route_ingestion", "kernel, daemon running", "routes/s");
    let end_to_end = cell(r, "route_ingestion", "maps hold", "routes/s");
    let cold = cell(r, "route_ingestion", "daemon cold start", "routes/s");
    if let Some(e) = end_to_end {
        r.goal(
            "routes/s into the maps (ip -batch, 1M /32s)",
            ">= 50k",
            format!("{e:.0} routes/s end to end"),
            e >= 50_000.0,
            &format!(
                "the maps keep up with the kernel (no lag); the kernel's ip -batch is the limit: {:.0} routes/s alone, {:.0} with a netlink listener (it builds and queues a notification per route). The daemon's own pace (cold start: dump into empty maps) is {:.0} routes/s",
                alone.unwrap_or(0.0),
                with_daemon.unwrap_or(0.0),
                cold.unwrap_or(0.0)
            ),
        );
    }
    if let Some(c) = cold {
        let part = |what: &str| cell(r, "route_ingestion", what, "seconds").unwrap_or(0.0);
        let (load, dump, sync) = (
            part("cold start, of it: loading"),
            part("cold start, of it: the kernel's dump"),
            part("cold start, of it: the first sync"),
        );
        r.goal(
            "daemon cold start: 1M routes into empty maps",
            ">= 300k routes/s",
            format!("{c:.0} routes/s"),
            c >= 300_000.0,
            &format!("from the daemon's start to its first sync done: loading the program and maps and attaching {load:.2} s, the kernel's dump read and parsed into the mirror {dump:.2} s, the first sync {sync:.2} s (every route written to the DIR-24-8 tables and to the record, both by mmap)"),
        );
    }
    if let Some(t) = r.table("event_latency") {
        // Rows of one measure, paced or in bursts, by rate.
        let rows = |who: &str, bursts: bool| -> Vec<(String, f64)> {
            let col = |i: usize, name: &str| {
                t.columns
                    .iter()
                    .position(|c| c == name)
                    .map_or("", |c| t.rows[i][c].text.as_str())
            };
            (0..t.rows.len())
                .filter(|&i| col(i, "measured by").starts_with(who))
                .filter(|&i| col(i, "pattern").starts_with("bursts") == bursts)
                .filter_map(|i| {
                    // The phase with anti-entropy rounds says so.
                    let pattern = col(i, "pattern");
                    let extra = pattern
                        .find(control_plane::ANTI_ENTROPY)
                        .map_or(String::new(), |at| format!(", {}", &pattern[at..]));
                    Some((
                        format!("{}/s churn{extra}", col(i, "churn (changes/s)")),
                        t.value(i, "p99 us")?,
                    ))
                })
                .collect()
        };
        let (wakeup, change, probe) = (
            rows("daemon: ", false),
            rows("daemon, per change", false),
            rows("probe", false),
        );
        let (burst_change, burst_probe) = (rows("daemon, per change", true), rows("probe", true));
        let bursts = if burst_change.is_empty() {
            String::new()
        } else {
            format!(
                ". In bursts of {} changes back to back (the kernel makes them about as fast as the daemon applies them, so a burst's last change waits for most of the burst): per change p99 {}, probe p99 {}",
                control_plane::BURST,
                list(&burst_change, " us"),
                list(&burst_probe, " us")
            )
        };
        let within = |v: &[(String, f64)]| !v.is_empty() && v.iter().all(|x| x.1 <= 1000.0);
        r.goal(
            "event -> map latency p99 under paced churn, per wake-up and per change",
            "<= 1000 us",
            format!(
                "per wake-up {}; per change {}",
                list(&wakeup, " us"),
                list(&change, " us")
            ),
            within(&wakeup) && within(&change),
            &format!("the daemon's histograms under paced churn (a group of changes every 1 ms): a wake-up from netlink readable to maps written, and each change it applied counted with its wake-up's time; a wake-up reads events for at most {} us and applies at most {} messages, and a change counts from when the socket was last found empty (never too short). Single changes timed from outside (probe, kernel acknowledgement -> route in the map): p99 {}{bursts}", control::mirror::READ_BUDGET.as_micros(), control::mirror::PASS_MESSAGES, list(&probe, " us")),
        );
    }
    if let Some(t) = r.table("map_memory") {
        let per_route = t
            .rows_labelled("all route maps")
            .next()
            .and_then(|i| t.value(i, "per unit"));
        let mib = |m: &str| {
            t.rows_labelled(m)
                .next()
                .and_then(|i| t.value(i, "MiB"))
                .unwrap_or(0.0)
        };
        if let Some(b) = per_route {
            let v6_row = t
                .rows_labelled("IPv6 search slot table (fixed, for max_routes_v6)")
                .next();
            let v6 = v6_row.map_or(String::new(), |i| {
                format!(
                    "; not counted: the IPv6 search's slot table, {:.1} MiB fixed for the IPv6 route capacity ({:.0} B per IPv6 route of it)",
                    t.value(i, "MiB").unwrap_or(0.0),
                    t.value(i, "per unit").unwrap_or(0.0)
                )
            });
            let why = format!(
                "DIR-24-8 tables {:.0} MiB (fixed), the control plane's record of IPv4 routes {:.1} MiB (fixed, two 8-byte slots per route of capacity), IPv6 trie {:.1} MiB{v6}",
                mib("xe_tbl24") + mib("xe_tbl8"),
                mib("xe_routes_v4"),
                mib("xe_routes_v6")
            );
            r.goal(
                "map memory per IPv4 route at 1M routes",
                "<= 128 B",
                format!("{b:.1} B/route"),
                b <= 128.0,
                &why,
            );
        }
    }
    if r.table("split").is_some() {
        judge_split(r);
    }
    if let Some(t) = r.table("disruption") {
        let mut ok = true;
        let mut worst_extra: f64 = 0.0;
        // Pinned: on return no flow moves though buckets do (idle timer 0);
        // on failure only the failed member's.
        let mut worst_pinned: f64 = 0.0;
        for i in 0..t.rows.len() {
            let ideal = t.value(i, "ideal").unwrap_or(0.0);
            let fail = t.rows[i][1].text == "1 fails";
            let col = if fail {
                "resilient, idle timer 0"
            } else {
                "resilient, idle-aware"
            };
            let extra = t.value(i, col).unwrap_or(f64::MAX) - ideal;
            worst_extra = worst_extra.max(extra);
            ok &= extra <= 0.05;
            let pinned = t.value(i, "pinned (idle timer 0)").unwrap_or(f64::MAX);
            worst_pinned = worst_pinned.max((pinned - ideal).abs());
        }
        r.goal(
            "disruption: resilient moves only the failed share; idle-aware moves no active flow on return",
            "= ideal",
            format!("worst excess over the ideal: {worst_extra:.2} percentage points"),
            ok,
            "modulo moves most flows on every change (table)",
        );
        r.goal(
            "disruption with flow pinning: only flows whose next hop left move, through bucket moves",
            "= ideal",
            format!("worst distance from the ideal: {worst_pinned:.2} percentage points"),
            worst_pinned <= 0.05,
            "the pinned column runs the shared decision with the flow table over the idle-timer-0 tables",
        );
    }
    let call = cell(r, "call_cost", "one call and its return", "ns per packet");
    let why = format!(
        "a hit hashes the flow's key to its set, compares the set's ways in place and reads the group's membership generation in place of the hash and the bucket; the table is an array whose lookup the verifier inlines, so a hit makes no call (one would cost {} ns with its return on this CPU, call-cost table)",
        call.map_or("?".to_string(), |c| format!("{c:.1}"))
    );
    for (family, row) in [
        ("IPv4", "known flow (pinned: a hit)"),
        ("IPv6", "known IPv6 flow (pinned: a hit)"),
    ] {
        if let Some(hit) = cell(r, "pin_cost", row, "pinned - unpinned ns") {
            r.goal(
                &format!(
                    "flow pinning, {family}: a hit costs at most 15 ns over the unpinned decision"
                ),
                "<= +15 ns",
                format!("{hit:+.1} ns (pin-cost table, one run side by side)"),
                hit <= 15.0,
                &why,
            );
        }
    }
}

/// IPv6 lookup goals from the program-cost tables of one run: flat in the
/// route count, and within 20 ns of IPv4 at every route count.
fn judge_v6_lookup(r: &mut report::Report) {
    let v4 = column(r, "prog_cost_ipv4", "xdp-ecmp resilient");
    let v6 = column(r, "prog_cost_ipv6", "xdp-ecmp resilient");
    let (Some(first), Some(last)) = (v6.first(), v6.last()) else {
        return;
    };
    let growth = last.1 - first.1;
    let levels = r
        .table("prog_cost_ipv6_lengths")
        .map_or(String::new(), |t| {
            let rows: Vec<String> = (0..t.rows.len())
                .filter_map(|i| {
                    Some(format!(
                        "{:.0} ns at {:.0} lengths",
                        t.value(i, "resilient - empty")?,
                        t.value(i, "prefix lengths")?
                    ))
                })
                .collect();
            format!(
                "; by prefix lengths searched (over the empty program): {}",
                rows.join(", ")
            )
        });
    r.goal(
        "IPv6 lookup cost from 1 to 1M routes",
        "<= +15 ns",
        format!("{growth:+.1} ns ({:.0} -> {:.0} ns from {} to {} routes)", first.1, last.1, first.0, last.0),
        growth <= 15.0,
        &format!("a binary search on the prefix lengths routes have, one slot-table search (array reads, no call) per level: the count of routes does not enter, the count of lengths does{levels}"),
    );
    let gaps: Vec<(String, f64)> = v6
        .iter()
        .filter_map(|(n, ns6)| {
            let ns4 = v4.iter().find(|(m, _)| m == n)?.1;
            Some((n.clone(), ns6 - ns4))
        })
        .collect();
    r.goal(
        "IPv6 within 20 ns of IPv4 at every route count",
        "<= 20 ns",
        gaps.iter()
            .map(|(n, g)| format!("{g:+.1} ns ({n})"))
            .collect::<Vec<_>>()
            .join(", "),
        !gaps.is_empty() && gaps.iter().all(|g| g.1 <= 20.0),
        "IPv6 parses a 40-byte header (and walks extension headers), masks a 128-bit address and searches the slot table, where IPv4 reads one or two DIR-24-8 entries; both then hash, pick the bucket and rewrite alike",
    );
}

/// The split goals, from the split table: the rounding error of the
/// bucket counts chosen, and the total error against the binomial bound.
fn judge_split(r: &mut report::Report) {
    let Some(t) = r.table("split") else { return };
    let label = |i: usize| {
        format!(
            "{} members {}, {} flows",
            t.rows[i][0].text, t.rows[i][1].text, t.rows[i][2].text
        )
    };
    let worst = |col: &str| {
        (0..t.rows.len())
            .filter_map(|i| Some((t.value(i, col)?, label(i))))
            .fold((0.0, String::new()), |a, b| if b.0 > a.0 { b } else { a })
    };
    let (rounding, noise, w128) = (
        worst("rounding error"),
        worst("hash noise"),
        worst("resilient 128 buckets"),
    );
    let rows = t.rows.len();
    let rounded = (0..rows)
        .filter(|&i| t.value(i, "rounding error").is_some_and(|v| v <= 1.0))
        .count();
    let beyond: Vec<String> = (0..rows)
        .filter(|&i| {
            matches!((t.value(i, "total error"), t.value(i, "binomial bound")), (Some(e), Some(b)) if e > 2.0 * b)
        })
        .map(label)
        .collect();
    let most = (0..rows)
        .filter_map(|i| t.value(i, "buckets chosen"))
        .fold(0.0, f64::max);
    let goals = [
        (
            "split rounding error per member (bucket share vs weight share)",
            "<= 1%",
            format!(
                "{rounded} of {rows} groups within 1% at the bucket count chosen (at most {most:.0}); worst {:.2}% ({}); at a fixed 128 buckets the total error reached {:.1}% ({})",
                rounding.0, rounding.1, w128.0, w128.1
            ),
            rounded == rows,
            "a new table takes 128 buckets, or the smallest count up to 4,096 that shares them within 1% of every member's weight (an exact multiple of the weights' total where one fits)".to_string(),
        ),
        (
            "split total error per member within 2x the binomial bound",
            "every group",
            format!(
                "{} of {rows} groups within 2x; worst hash noise {:.1}% ({})",
                rows - beyond.len(),
                noise.0,
                noise.1
            ),
            beyond.is_empty(),
            if beyond.is_empty() {
                "the hash's noise is that of a fair draw: the error left is what the flow count allows".to_string()
            } else {
                format!("beyond 2x the bound: {}", beyond.join("; "))
            },
        ),
    ];
    for (what, goal, measured, met, why) in goals {
        r.goal(what, goal, measured, met, &why);
    }
}

/// Writes the report and its charts into `dir`.
fn write_report(r: &mut report::Report, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    r.charts.clear();
    if let Some(t) = r.table("packet_rate") {
        let f = charts::packet_rate(dir, t)?;
        r.charts.push(f);
    }
    if let Some(t) = r.table("disruption") {
        let f = charts::disruption(dir, t)?;
        r.charts.push(f);
    }
    r.write(dir)?;
    eprintln!(
        "report: {} (also report.json, {})",
        dir.join("report.md").display(),
        r.charts.join(", ")
    );
    Ok(())
}

#[derive(Parser)]
#[command(
    name = "xdp-ecmp-bench",
    about = "Benchmarks of xdp-ecmp (run as root from a release build)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every benchmark at full size; writes report.md, report.json and PNG charts
    Full {
        /// Directory of the report.
        #[arg(long, default_value = "bench/report")]
        out: PathBuf,
        /// Also write this file (BENCHMARKS.md) with the report and how to reproduce it.
        #[arg(long)]
        benchmarks_md: Option<PathBuf>,
    },
    /// Writes the report again (goals, charts, BENCHMARKS.md) from a report.json, measuring nothing
    Render {
        /// The report.json of a full run.
        from: PathBuf,
        #[arg(long, default_value = "bench/report")]
        out: PathBuf,
        #[arg(long)]
        benchmarks_md: Option<PathBuf>,
    },
    /// Every benchmark on small inputs (well under 2 minutes): the CI smoke run
    Quick {
        /// Write the report here too (default: print only).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// xdp-ecmp vs the bare and bpf_fib_lookup forwarders, IPv4 and IPv6
    Compare {
        #[arg(default_value_t = 5)]
        rounds: usize,
        /// Route counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [1u32, 10_000, 1_000_000])]
        routes: Vec<u32>,
    },
    /// Cost of bucket stamping and of modulo mode
    ProgCost {
        #[arg(default_value_t = 7)]
        rounds: usize,
    },
    /// What flow pinning costs per packet (a hit, a new flow) and per flow.
    PinCost {
        #[arg(default_value_t = 5)]
        rounds: usize,
    },
    /// Packet rate through veth: xdp-ecmp vs Linux vs bpf_fib_lookup vs bare
    Rate {
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Seconds of each sampling window.
        #[arg(long, default_value_t = 1.5)]
        window: f64,
    },
    /// Route ingestion, event -> map latency under churn, memory per route
    #[command(alias = "route-rate")]
    ControlPlane {
        #[arg(default_value_t = 1_000_000)]
        routes: u32,
        /// Background churn rates (changes/s), comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [1_000u32, 10_000])]
        churn: Vec<u32>,
        #[arg(long, default_value_t = 10.0)]
        churn_seconds: f64,
        /// Rate (changes/s) of the churn in bursts of 500; 0: none.
        #[arg(long, default_value_t = 10_000)]
        burst_rate: u32,
    },
    /// Split accuracy over 2..64 members and weights
    Split,
    /// Flows moved when one member fails and returns
    Disruption,
    /// Torn-state stress run: live traffic from both CPUs while the in-process reconciler churns next hops, group windows and DIR-24-8 chunks; fails on any frame that leaves with a MAC its route never had
    Torn {
        /// Seconds of churn under traffic.
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
        /// Seed of the change schedule (default: the test's).
        #[arg(long, default_value_t = torn::DEFAULT_SEED)]
        seed: u64,
    },
    /// kill -9 and restart of the daemon (no fixed seed) under over 1 Mpps of live frames: frames lost, flows moved, buckets changed
    Restart {
        /// Seconds of traffic before the kill and after the new daemon's first sync.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
    },
}

fn print_all(tables: Vec<Table>) {
    for t in tables {
        t.print();
    }
}

fn main() -> Result<()> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    match Cli::parse().cmd {
        Cmd::Full { out, benchmarks_md } => {
            let mut r = suite(&Sizes::full(), command)?;
            publish(&mut r, &out, benchmarks_md.as_deref())
        }
        Cmd::Render {
            from,
            out,
            benchmarks_md,
        } => {
            let text = std::fs::read_to_string(&from)
                .with_context(|| format!("reading {}", from.display()))?;
            let mut r: report::Report = serde_json::from_str(&text).with_context(|| {
                format!("{} is not a report.json of xdp-ecmp-bench", from.display())
            })?;
            r.goals.clear();
            judge(&mut r);
            publish(&mut r, &out, benchmarks_md.as_deref())
        }
        Cmd::Quick { out } => {
            let mut r = suite(&Sizes::quick(), command)?;
            // Without --out the report (charts included) is still written, so
            // that code runs too, into a directory removed afterwards.
            let temp = out.is_none();
            let dir = out.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("xe-bench-quick-{}", std::process::id()))
            });
            let written = write_report(&mut r, &dir);
            if temp {
                let _ = std::fs::remove_dir_all(&dir);
            }
            written?;
            eprintln!("quick run: {:.0} s", r.seconds);
            Ok(())
        }
        Cmd::Compare { rounds, routes } => {
            print_all(compare::compare(&routes, rounds)?);
            Ok(())
        }
        Cmd::PinCost { rounds } => {
            for t in pinning::pin_cost(rounds)? {
                t.print();
            }
            Ok(())
        }
        Cmd::ProgCost { rounds } => {
            prog_cost(rounds)?.print();
            Ok(())
        }
        Cmd::Rate { runs, window } => {
            print_all(rate::rate(&rate::RateOptions { runs, window })?);
            Ok(())
        }
        Cmd::ControlPlane {
            routes,
            churn,
            churn_seconds,
            burst_rate,
        } => {
            print_all(control_plane::control_plane(
                &control_plane::ControlOptions {
                    routes,
                    churn_rates: churn,
                    churn_seconds,
                    burst_rate: (burst_rate > 0).then_some(burst_rate),
                },
            )?);
            Ok(())
        }
        Cmd::Split => {
            flows::split(&[32_768, 262_144], 1).print();
            Ok(())
        }
        Cmd::Disruption => {
            flows::disruption(32_768, 1).print();
            Ok(())
        }
        Cmd::Torn { seconds, seed } => {
            let r = torn::torn(&torn::TornOptions { seconds, seed })?;
            println!("{}", r.line());
            let failures = r.failures();
            if !failures.is_empty() {
                bail!("torn-state run failed:\n{}", failures.join("\n"));
            }
            Ok(())
        }
        Cmd::Restart { seconds } => {
            let d = std::time::Duration::from_secs_f64(seconds);
            let r = restart::restart(&restart::RestartOptions {
                before: d,
                after: d,
            })?;
            println!("{}", r.line());
            let failures = r.failures();
            if !failures.is_empty() {
                bail!("restart under load failed:\n{}", failures.join("\n"));
            }
            Ok(())
        }
    }
}

/// Writes the report, charts and (optionally) BENCHMARKS.md; prints the goals.
fn publish(r: &mut report::Report, out: &Path, benchmarks_md: Option<&Path>) -> Result<()> {
    write_report(r, out)?;
    if let Some(md) = benchmarks_md {
        let body = r.markdown().replace("](", &format!("]({}/", out.display()));
        let text = format!(
            "# Benchmarks\n\nThe latest full run of `scripts/bench.sh` (as root: it builds, then runs `xdp-ecmp-bench full`, about 11 minutes here). It writes `{0}/report.md`, `{0}/report.json` and the PNG charts, and this file. `xdp-ecmp-bench --help` lists the single benchmarks; `xdp-ecmp-bench quick` is the smoke run the test suite does; `xdp-ecmp-bench render {0}/report.json` writes the report again from the JSON.\n\n{1}",
            out.display(),
            body.trim_start_matches("# xdp-ecmp benchmark report\n\n")
        );
        std::fs::write(md, text).with_context(|| format!("writing {}", md.display()))?;
        eprintln!("wrote {}", md.display());
    }
    print_goals(r);
    Ok(())
}

fn print_goals(r: &report::Report) {
    println!("\ngoals:");
    for g in &r.goals {
        println!(
            "  [{}] {}: {} (target {})",
            if g.met { "met" } else { "NOT met" },
            g.what,
            g.measured,
            g.target
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use report::{num, text, Report, Table};

    fn prog_cost(id: &str, rows: &[(f64, f64, f64, f64)]) -> Table {
        let mut t = Table::new(id, "x", &compare::COLUMNS);
        let empty = 20.0;
        for &(n, ours, bare, fib) in rows {
            t.row(vec![
                num(n, 0),
                num(ours, 1),
                num(ours, 1),
                num(bare, 1),
                num(fib, 1),
                num(empty, 1),
                num(ours - empty, 1),
                num(bare - empty, 1),
                num(ours / bare, 2),
                num((ours - empty) / (bare - empty), 2),
                num(ours / fib, 2),
            ]);
        }
        t
    }

    fn goal<'a>(r: &'a Report, what: &str) -> &'a report::Goal {
        r.goals
            .iter()
            .find(|g| g.what.starts_with(what))
            .unwrap_or_else(|| panic!("no goal {what}: {:?}", r.goals))
    }

    #[test]
    fn goals_follow_the_tables() {
        let mut r = Report::new("test".into());
        // IPv4 meets the fib goal everywhere and the bare goal nowhere;
        // IPv6 misses the fib goal at its second route count only.
        r.tables.push(prog_cost(
            "prog_cost_ipv4",
            &[(1.0, 100.0, 50.0, 150.0), (1e6, 110.0, 50.0, 160.0)],
        ));
        r.tables.push(prog_cost(
            "prog_cost_ipv6",
            &[(1.0, 100.0, 80.0, 150.0), (1e6, 200.0, 150.0, 160.0)],
        ));
        let mut rate = Table::new(
            "packet_rate",
            "x",
            &["CPU layout", "forwarder", "median Mpps"],
        );
        for (layout, ours, linux, bare) in [
            ("one CPU", 4.0, 1.0, 4.2),
            ("forwarder on its own CPU", 3.0, 1.0, 4.0),
        ] {
            for (name, v) in [
                ("xdp-ecmp", ours),
                ("Linux forwarding", linux),
                ("bare rewrite", bare),
            ] {
                rate.row(vec![text(layout), text(name), num(v, 2)]);
            }
        }
        r.tables.push(rate);
        judge(&mut r);
        let g = goal(&r, "program cost ipv4, vs bpf_fib_lookup");
        assert!(g.met, "{g:?}");
        assert!(g.measured.contains("0.67x (1)"), "{g:?}");
        let g = goal(&r, "program cost ipv4, vs bare");
        assert!(!g.met, "{g:?}");
        assert!(
            g.why.contains("(50 ns, 20 ns of it the test-run loop"),
            "{g:?}"
        );
        assert!(!goal(&r, "program cost ipv6, vs bpf_fib_lookup").met);
        assert!(goal(&r, "program cost ipv6, vs bare")
            .measured
            .contains("1.25x (1)"));
        // 4.0x and 3.0x Linux: the own-CPU layout misses the goal.
        let g = goal(&r, "packet rate vs Linux");
        assert!(
            !g.met && g.measured.contains("3.00x (forwarder on its own CPU)"),
            "{g:?}"
        );
        let g = goal(&r, "packet rate vs the bare");
        assert!(!g.met && g.measured.contains("0.95x (one CPU)"), "{g:?}");
        // Tables that were not measured give no goal rather than a made-up one.
        assert!(r.goals.iter().all(|g| !g.what.starts_with("routes/s")));
        assert!(r.goals.iter().all(|g| !g.what.starts_with("split")));
        assert!(r.goals.iter().all(|g| !g.what.starts_with("map memory")));
    }
}
