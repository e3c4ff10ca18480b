//! Benchmarks of xdp-ecmp: program cost (prog-cost), route ingestion (route-rate), split accuracy (split) and flow disruption (disruption).

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use dataplane::abi::{
    xe_config, xe_group, xe_nexthop, xe_route, GROUP_MODULO, GROUP_RESILIENT, NH_TXPORT, NH_USABLE,
    RT_UNICAST, XDP_REDIRECT,
};
use dataplane::loader::pin_thread_to_cpu;
use dataplane::{Dataplane, LoadOptions, StampMode, TableWriter};

mod compare;
mod flows;

/// Repetitions per test-run call: the kernel feeds the rewritten frame back,
/// so a frame starting at TTL 255 stays forwardable for 254 runs.
const REPEAT: u32 = 200;
/// Test-run calls per measurement. With repeat > 1 the kernel switches the
/// XDP dispatcher to the program and back around every call (~16 ms of wall
/// time here, none of it in the measured duration), so calls are few.
const CALLS: u32 = 100;

fn world(dp: &mut Dataplane, mode: u8) -> Result<()> {
    // Loopback exists in every namespace and is accepted by the tx port map;
    // test runs never transmit, so no frame goes anywhere.
    let lo = 1;
    dp.add_txport(lo)?;
    for id in 1..=4u32 {
        dp.set_nexthop(
            id,
            &xe_nexthop {
                ifindex: lo,
                mtu: 1500,
                dmac: [2, 0, 0, 0, 0, id as u8],
                smac: [2, 0, 0, 0, 1, id as u8],
                state: NH_USABLE | NH_TXPORT,
                ..Default::default()
            },
        )?;
    }
    let size: u16 = if mode == GROUP_RESILIENT { 64 } else { 4 };
    let slots: Vec<u32> = (0..u32::from(size)).map(|i| 1 + i % 4).collect();
    dp.set_slots(0, &slots)?;
    dp.set_group(
        1,
        &xe_group {
            base: 0,
            size,
            mode,
            ..Default::default()
        },
    )?;
    dp.set_route_v4(
        Ipv4Addr::new(172, 16, 255, 66),
        32,
        &xe_route {
            group: 1,
            kind: RT_UNICAST,
            ..Default::default()
        },
    )?;
    dp.set_config(&xe_config {
        seed: [0x1234, 0x5678],
        ..Default::default()
    })?;
    Ok(())
}

/// A 64-byte UDP frame to the anycast address with TTL 255.
fn frame() -> Vec<u8> {
    frame_to(Ipv4Addr::new(172, 16, 255, 66))
}

/// A 64-byte UDP frame to `dst`, TTL 255 (so 200 repetitions all forward).
pub(crate) fn frame_to(dst: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0xaa, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0xcc, 1]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&50u16.to_be_bytes());
    ip[8] = 255;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 2, 0, 100]);
    ip[16..20].copy_from_slice(&dst.octets());
    let mut sum: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f[34..36].copy_from_slice(&32700u16.to_be_bytes());
    f[36..38].copy_from_slice(&53u16.to_be_bytes());
    f[38..40].copy_from_slice(&30u16.to_be_bytes());
    f
}

/// Mean ns/packet over `calls` test-run calls of REPEAT packets each,
/// checking that every packet was forwarded.
fn ns_per_packet(dp: &Dataplane, calls: u32) -> Result<f64> {
    let pkt = frame();
    let mut out = vec![0u8; 128];
    let mut total = Duration::ZERO;
    for _ in 0..calls {
        let r = dp.test_run_repeat(&pkt, &mut out, REPEAT)?;
        if r.action != XDP_REDIRECT || out[14 + 8] != 255 - REPEAT as u8 {
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

fn prog_cost(rounds: usize) -> Result<()> {
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
    println!("program cost by BPF_PROG_TEST_RUN, 64-byte IPv4 UDP, {rounds} rounds x {CALLS} calls x {REPEAT} packets, median ns/packet");
    println!("| variant | 1 CPU ns/pkt | ratio | 2 CPUs, same bucket ns/pkt |");
    println!("|---|---:|---:|---:|");
    for (i, (name, _)) in variants.iter().enumerate() {
        let one = median(&mut single[i]);
        let two = shared
            .get_mut(i)
            .map(|v| format!("{:.1}", median(v)))
            .unwrap_or_else(|| "-".into());
        println!("| {name} | {one:.1} | {:.2} | {two} |", one / base);
    }
    Ok(())
}

/// The `xdp-ecmp` binary next to this one (cargo puts both in target/<profile>).
fn xdp_ecmp_binary() -> Result<std::path::PathBuf> {
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("xdp-ecmp");
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p xdp-ecmp)",
            bin.display()
        );
    }
    Ok(bin)
}

fn run(cmd: &mut std::process::Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

/// Route ingestion: N /32 routes by `ip -batch` into a namespace where the
/// daemon runs; time until the kernel has them and until the maps do.
fn route_rate(n: u32) -> Result<()> {
    let ns = format!("xe-b{}", std::process::id());
    let pin = std::path::PathBuf::from(format!("/sys/fs/bpf/{ns}"));
    let ipn = |args: &[&str]| {
        run(std::process::Command::new("ip")
            .arg("-n")
            .arg(&ns)
            .args(args))
    };
    run(std::process::Command::new("ip").args(["netns", "add", &ns]))?;
    struct Cleanup(String, std::path::PathBuf, Option<std::process::Child>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Some(c) = &mut self.2 {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = std::fs::remove_dir_all(&self.1);
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
        }
    }
    let mut cleanup = Cleanup(ns.clone(), pin.clone(), None);
    ipn(&[
        "link", "add", "xe-r0", "type", "veth", "peer", "name", "xe-r1",
    ])?;
    ipn(&["link", "set", "xe-r0", "up"])?;
    ipn(&["link", "set", "xe-r1", "up"])?;
    ipn(&["addr", "add", "10.0.0.1/24", "dev", "xe-r0"])?;
    ipn(&[
        "neigh",
        "add",
        "10.0.0.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "xe-r0",
        "nud",
        "permanent",
    ])?;
    let child = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .arg(xdp_ecmp_binary()?)
        .arg("--pin-dir")
        .arg(&pin)
        .args(["run", "-p", "xe-r1", "--netlink-rcvbuf", "268435456"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    cleanup.2 = Some(child);
    while !pin.join("link_xe-r1").exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut batch = String::with_capacity(n as usize * 40);
    for i in 0..n {
        batch.push_str(&format!(
            "route add {}/32 via 10.0.0.2\n",
            Ipv4Addr::from(0x6440_0000u32 + i)
        ));
    }
    let file = std::env::temp_dir().join(format!("{ns}.batch"));
    std::fs::write(&file, batch)?;
    let dp = Dataplane::load(&LoadOptions {
        pin_dir: Some(pin.clone()),
        ..Default::default()
    })?;
    let last = Ipv4Addr::from(0x6440_0000u32 + n - 1);
    eprintln!("route-rate: adding {n} routes with ip -batch ...");
    let start = std::time::Instant::now();
    run(std::process::Command::new("ip")
        .args(["-n", &ns, "-batch"])
        .arg(&file))?;
    let kernel_s = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&file);
    while dp.route_v4(last, 32)?.is_none() {
        if start.elapsed() > Duration::from_secs(600) {
            bail!("the maps did not reach {n} routes in 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let maps_s = start.elapsed().as_secs_f64();
    let in_maps = dp.routes_v4()?.len();
    let mem = dp.map_memory();
    let lpm = mem
        .iter()
        .find(|(m, _)| m == "xe_routes_v4")
        .map_or(0, |m| m.1);
    println!("route ingestion, {n} IPv4 /32 routes via ip -batch into a namespace with the daemon running");
    println!("| what | figure |");
    println!("|---|---:|");
    println!(
        "| kernel: ip -batch done | {kernel_s:.2} s ({:.0} routes/s) |",
        f64::from(n) / kernel_s
    );
    println!(
        "| maps hold the last route | {maps_s:.2} s ({:.0} routes/s end to end) |",
        f64::from(n) / maps_s
    );
    println!(
        "| daemon lag behind the kernel | {:.2} s |",
        maps_s - kernel_s
    );
    println!("| IPv4 routes in the map | {in_maps} |");
    println!(
        "| LPM map memory (fdinfo memlock) | {:.1} MiB, {:.0} B/route |",
        lpm as f64 / 1048576.0,
        lpm as f64 / in_maps as f64
    );
    for (m, b) in mem {
        println!("| {m} memlock | {:.1} MiB |", b as f64 / 1048576.0);
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("prog-cost") => {
            let rounds = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(7);
            prog_cost(rounds)
        }
        Some("compare") => compare::compare(
            &[1, 10_000, 1_000_000],
            args.get(2).and_then(|r| r.parse().ok()).unwrap_or(5),
        ),
        Some("quick") => {
            // Smoke run for CI: every benchmark on small inputs, so none rots.
            flows::split(4096, 1);
            flows::disruption(4096, 1);
            compare::compare(&[1, 1000], 1)?;
            prog_cost(1)?;
            route_rate(10_000)
        }
        Some("split") => {
            flows::split(32_768, 1);
            Ok(())
        }
        Some("disruption") => {
            flows::disruption(32_768, 1);
            Ok(())
        }
        Some("route-rate") => route_rate(
            args.get(2)
                .and_then(|r| r.parse().ok())
                .unwrap_or(1_000_000),
        ),
        _ => bail!(
            "usage: xdp-ecmp-bench prog-cost [ROUNDS] | route-rate [ROUTES] | split | disruption"
        ),
    }
}
