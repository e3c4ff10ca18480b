//! Packet rate through veth: a live-frames generator -> forwarder -> 4-way ECMP -> counting sinks; xdp-ecmp vs Linux forwarding vs a bpf_fib_lookup forwarder vs the bare forwarder, on one CPU and with the forwarder on its own CPU.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dataplane::abi::GROUP_RESILIENT;
use dataplane::afxdp::{Engine, EngineConfig};
use dataplane::{ifindex_of, pin_thread_to_cpu, AttachMode, XdpLink};
use dataplane::{Dataplane, LoadOptions};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject, ProgramInput, TcHookBuilder, TC_EGRESS};
use std::os::fd::AsFd;
use testnet::TestNet;

use crate::report::{num, pct, text, Table};

#[allow(clippy::all, clippy::pedantic, non_camel_case_types, dead_code, unused)]
pub(crate) mod traffic {
    include!(concat!(env!("OUT_DIR"), "/traffic.skel.rs"));
}
use crate::compare::skel as peers;

/// BPF_F_TEST_XDP_LIVE_FRAMES: the test run transmits what the program redirects.
pub(crate) const LIVE_FRAMES: u32 = 2;
/// Distinct flows (source ports) the generator cycles through.
pub(crate) const FLOWS: u32 = 1024;
use crate::ANYCAST;
pub(crate) const SINKS: usize = 4;

/// Settings of one packet-rate run.
pub struct RateOptions {
    /// Runs per forwarder and CPU layout (min/median/max over them).
    pub runs: usize,
    /// Seconds over which the sinks' counters are sampled, per run.
    pub window: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Forwarder {
    Ecmp,
    /// As the daemon runs it: with the redirect-failure tracepoints attached.
    EcmpCounted,
    /// The program steering to the AF_XDP engine (one worker, copy mode).
    Afxdp,
    Linux,
    Fib,
    Bare,
    /// XDP_DROP at the forwarder's port: the generator's own ceiling.
    Drop,
}

impl Forwarder {
    const ALL: [Forwarder; 7] = [
        Forwarder::Ecmp,
        Forwarder::EcmpCounted,
        Forwarder::Afxdp,
        Forwarder::Linux,
        Forwarder::Fib,
        Forwarder::Bare,
        Forwarder::Drop,
    ];
    fn name(self) -> &'static str {
        match self {
            Forwarder::Ecmp => "xdp-ecmp (resilient, 128 buckets)",
            Forwarder::EcmpCounted => {
                "the same, redirect failures counted (xdp_redirect_err tracepoint, as the daemon runs it)"
            }
            Forwarder::Afxdp => {
                "xdp-ecmp, AF_XDP engine (1 queue, 1 worker on the forwarder's CPU, copy mode)"
            }
            Forwarder::Linux => "Linux forwarding (fib_multipath_hash_policy 1)",
            Forwarder::Fib => "bpf_fib_lookup forwarder",
            Forwarder::Bare => "bare rewrite+redirect",
            Forwarder::Drop => "none: XDP_DROP at the input (generator ceiling)",
        }
    }
}

pub(crate) fn mac(kind: u8, i: u8) -> [u8; 6] {
    [2, 0, 0, 0, kind, i]
}

pub(crate) fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The generator's 42-byte header: Ethernet to the forwarder, IPv4 UDP
/// 10.2.0.100 -> anycast, 64-byte frame, TTL 64, UDP checksum 0.
fn gen_header(dst_mac: [u8; 6]) -> [u8; 42] {
    let f = crate::frame_to(ANYCAST);
    let mut h = [0u8; 42];
    h.copy_from_slice(&f[..42]);
    h[0..6].copy_from_slice(&dst_mac);
    // TTL 64 with the checksum adjusted (frame_to builds TTL 255).
    h[22] = 64;
    let sum = crate::ipv4_checksum(&mut h[14..34]);
    h[24..26].copy_from_slice(&sum.to_be_bytes());
    h
}

/// Names unique to this process: NAPI threads are named after the device.
pub(crate) struct Names {
    pub(crate) gen: String,
    pub(crate) inp: String,
    pub(crate) out: Vec<String>,
    pub(crate) sink: Vec<String>,
}

impl Names {
    /// The generator pair, and `sinks` (at most 9) out/sink pairs.
    pub(crate) fn new(sinks: usize) -> Self {
        let tag = format!("{:x}", std::process::id() & 0xffff);
        Names {
            gen: format!("xe-g{tag}"),
            inp: format!("xe-i{tag}"),
            out: (1..=sinks).map(|k| format!("xe-o{k}{tag}")).collect(),
            sink: (1..=sinks).map(|k| format!("xe-s{k}{tag}")).collect(),
        }
    }
}

/// The chain's ports by ifindex (in the namespace the thread is in).
pub(crate) struct Ports {
    pub(crate) gen_if: u32,
    pub(crate) in_if: u32,
    pub(crate) outs: Vec<u32>,
    pub(crate) sinks: Vec<u32>,
}

impl Names {
    pub(crate) fn ports(&self) -> Result<Ports> {
        let all = |names: &[String]| -> Result<Vec<u32>> {
            Ok(names
                .iter()
                .map(|d| ifindex_of(d))
                .collect::<Result<_, _>>()?)
        };
        let sinks = all(&self.sink)?;
        if let Some(big) = sinks.iter().find(|i| **i >= 1024) {
            bail!("sink ifindex {big} is past the sinks' 1024-entry counter array");
        }
        Ok(Ports {
            gen_if: ifindex_of(&self.gen)?,
            in_if: ifindex_of(&self.inp)?,
            outs: all(&self.out)?,
            sinks,
        })
    }
}

/// The chain the packet-rate and torn-state runs share, in a namespace of
/// its own: generator veth gen -> inp (the forwarder's port), and one veth
/// pair out_k -> sink_k per sink, every device up with checksum offload off
/// and `queues` queues (a frame redirected into a veth lands in the queue of
/// the sending CPU, so with one queue per CPU every CPU forwards its own).
/// MACs: inp 02:00:00:00:00:01, gen ..:00:02, out_k ..:01:k, sink_k ..:02:k.
pub(crate) fn veth_chain(tag: &str, sinks: usize, queues: usize) -> Result<(TestNet, Names)> {
    let n = Names::new(sinks);
    let mut pairs: Vec<(&str, &str)> = vec![(&n.gen, &n.inp)];
    for k in 0..sinks {
        pairs.push((&n.out[k], &n.sink[k]));
    }
    let net = TestNet::new(tag, &[])?;
    let q = queues.to_string();
    for (a, b) in pairs {
        net.ip(&[
            "link",
            "add",
            a,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            b,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ])?;
        net.ip(&["link", "set", a, "up"])?;
        net.ip(&["link", "set", b, "up"])?;
    }
    net.ip(&["link", "set", &n.gen, "address", &mac_str(mac(0, 2))])?;
    net.ip(&["link", "set", &n.inp, "address", &mac_str(mac(0, 1))])?;
    for k in 0..sinks {
        let id = k as u8 + 1;
        net.ip(&["link", "set", &n.out[k], "address", &mac_str(mac(1, id))])?;
        net.ip(&["link", "set", &n.sink[k], "address", &mac_str(mac(2, id))])?;
    }
    let offload: Vec<String> = std::iter::once(&n.gen)
        .chain(std::iter::once(&n.inp))
        .chain(&n.out)
        .chain(&n.sink)
        .map(|d| format!("ethtool -K {d} tx off rx off >/dev/null"))
        .collect();
    sh(&net, &offload.join(" && "))?;
    Ok((net, n))
}

/// Addresses, permanent neighbours and a 4-way route to the anycast address
/// over the chain's out ports, and forwarding on: what Linux forwarding, the
/// fib peer and the daemon read (the rate run gives xdp-ecmp the same set
/// directly).
pub(crate) fn kernel_routes(net: &TestNet, n: &Names) -> Result<()> {
    let sinks = n.out.len();
    // Addresses, neighbours and a 4-way route for the kernel (Linux
    // forwarding and the fib peer use them; xdp-ecmp gets the same set in
    // its maps).
    net.ip(&["addr", "add", "10.2.0.1/24", "dev", &n.inp])?;
    let mut route = vec!["route".to_string(), "add".into(), format!("{ANYCAST}/32")];
    for k in 0..sinks {
        let id = k as u8 + 1;
        net.ip(&["addr", "add", &format!("10.0.{id}.1/24"), "dev", &n.out[k]])?;
        net.ip(&[
            "neigh",
            "add",
            &format!("10.0.{id}.2"),
            "lladdr",
            &mac_str(mac(2, id)),
            "dev",
            &n.out[k],
            "nud",
            "permanent",
        ])?;
        route.extend([
            "nexthop".into(),
            "via".into(),
            format!("10.0.{id}.2"),
            "dev".into(),
            n.out[k].clone(),
        ]);
    }
    let route: Vec<&str> = route.iter().map(String::as_str).collect();
    net.ip(&route)?;
    let mut setup = String::from(
        "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1 \
         net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0",
    );
    setup.push_str(&format!(
        " net.ipv4.conf.{}.rp_filter=0 && ethtool -K {} gro on >/dev/null",
        n.inp, n.inp
    ));
    sh(net, &setup)?;
    Ok(())
}

/// The generator and sink programs, loaded (not attached).
pub(crate) fn load_traffic() -> Result<traffic::TrafficSkel<'static>> {
    let store: &'static mut MaybeUninit<OpenObject> = Box::leak(Box::new(MaybeUninit::uninit()));
    Ok(traffic::TrafficSkelBuilder::default().open(store)?.load()?)
}

pub(crate) fn sh(net: &TestNet, cmd: &str) -> Result<()> {
    let st = std::process::Command::new("ip")
        .args(["netns", "exec", net.name(), "sh", "-c", cmd])
        .status()
        .with_context(|| format!("running {cmd}"))?;
    if !st.success() {
        bail!("`{cmd}` in {} failed: {st}", net.name());
    }
    Ok(())
}

/// The kernel threads polling `dev` when its NAPI is threaded.
fn napi_threads(dev: &str) -> Vec<i32> {
    let prefix = format!("napi/{dev}-");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        comm.starts_with(&prefix).then_some(pid)
    })
    .collect()
}

fn pin_pid(pid: i32, cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET/sched_setaffinity take plain values.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "pinning thread {pid} to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// A per-CPU u64 counter summed over the CPUs (0 when absent).
pub(crate) fn percpu_sum(map: &libbpf_rs::MapMut<'_>, key: u32) -> Result<u64> {
    let per_cpu = map.lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)?;
    Ok(per_cpu.map_or(0, |v| {
        v.iter()
            .map(|b| u64::from_ne_bytes(b[..8].try_into().expect("u64 per CPU")))
            .sum()
    }))
}

/// Frames the sinks have counted, per sink ifindex.
fn sink_counts(t: &traffic::TrafficSkel<'_>, sinks: &[u32]) -> Result<Vec<u64>> {
    sinks
        .iter()
        .map(|i| percpu_sum(&t.maps.sink_count, *i))
        .collect()
}

/// Frames generated so far.
pub(crate) fn generated(t: &traffic::TrafficSkel<'_>) -> Result<u64> {
    percpu_sum(&t.maps.gen_seq, 0)
}

/// One measurement: Mpps at the sinks and the frames per sink in the window.
pub(crate) struct Sample {
    pub(crate) mpps: f64,
    /// Frames the generator sent into the forwarder's veth, per second.
    pub(crate) offered_mpps: f64,
    pub(crate) per_sink: Vec<u64>,
}

/// The generator's configuration (struct gen_cfg of traffic.bpf.c, 56 bytes):
/// `flows` source ports from 10000 up.
fn gen_cfg(gen_if: u32, flows: u32, stop: bool) -> Vec<u8> {
    let mut cfg = Vec::with_capacity(56);
    cfg.extend_from_slice(&gen_header(mac(0, 1)));
    cfg.extend_from_slice(&10_000u16.to_ne_bytes());
    cfg.extend_from_slice(&flows.to_ne_bytes());
    cfg.extend_from_slice(&gen_if.to_ne_bytes());
    cfg.extend_from_slice(&u32::from(stop).to_ne_bytes());
    cfg
}

/// Points the generator at `gen_if` with `flows` flows; `stop` makes it drop
/// whatever it has left to send.
pub(crate) fn set_gen(
    t: &traffic::TrafficSkel<'_>,
    gen_if: u32,
    flows: u32,
    stop: bool,
) -> Result<()> {
    t.maps.gen_cfg.update(
        &0u32.to_ne_bytes(),
        &gen_cfg(gen_if, flows, stop),
        MapFlags::ANY,
    )?;
    Ok(())
}

/// Runs the generator on this thread (CPU 0) and samples the sinks from
/// another (CPU 1) over `window` seconds of steady state; then tells the
/// generator to drop the frames it has left.
/// Delivered and offered rate over `window` seconds; with `second`, a
/// second generator thread runs on CPU 1 (its frames land in the input
/// veth's queue 1).
pub(crate) fn measure(
    t: &traffic::TrafficSkel<'_>,
    gen_if: u32,
    sinks: &[u32],
    frame: &[u8],
    window: f64,
    second: bool,
) -> Result<Sample> {
    // Calibrate so that one generator call lasts about a second: each call
    // costs the kernel a dispatcher switch (~16 ms here) without frames.
    set_gen(t, gen_if, FLOWS, false)?;
    let probe = 2_000_000u32;
    let start = Instant::now();
    generate(t, frame, probe)?;
    let per_s = f64::from(probe) / start.elapsed().as_secs_f64();
    let chunk = per_s.clamp(1e6, f64::from(u32::MAX)) as u32;
    let warmup = Duration::from_millis(300);
    let win = Duration::from_secs_f64(window);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let sampler = s.spawn(|| -> Result<(Vec<u64>, Vec<u64>, Duration, u64)> {
            let r = (|| {
                pin_thread_to_cpu(1)?;
                std::thread::sleep(warmup);
                let (a, ga) = (sink_counts(t, sinks)?, generated(t)?);
                let t0 = Instant::now();
                std::thread::sleep(win);
                let (b, gb) = (sink_counts(t, sinks)?, generated(t)?);
                Ok((a, b, t0.elapsed(), gb - ga))
            })();
            // Whatever happened, the generator drops what it has left and stops.
            done.store(true, Ordering::Relaxed);
            set_gen(t, gen_if, FLOWS, true)?;
            r
        });
        let other = second.then(|| {
            s.spawn(|| -> Result<()> {
                pin_thread_to_cpu(1)?;
                while !done.load(Ordering::Relaxed) {
                    generate(t, frame, chunk)?;
                }
                Ok(())
            })
        });
        let mut sent = Ok(());
        while !done.load(Ordering::Relaxed) && sent.is_ok() {
            sent = generate(t, frame, chunk);
        }
        if let Some(o) = other {
            o.join()
                .map_err(|_| anyhow::anyhow!("second generator panicked"))??;
        }
        let (a, b, dt, offered) = sampler
            .join()
            .map_err(|_| anyhow::anyhow!("sampler thread panicked"))??;
        sent?;
        let per_sink: Vec<u64> = b.iter().zip(&a).map(|(b, a)| b - a).collect();
        let total: u64 = per_sink.iter().sum();
        Ok(Sample {
            mpps: total as f64 / dt.as_secs_f64() / 1e6,
            offered_mpps: offered as f64 / dt.as_secs_f64() / 1e6,
            per_sink,
        })
    })
}

/// Sends `frames` frames (live frames: the generator's redirects are transmitted).
pub(crate) fn generate(t: &traffic::TrafficSkel<'_>, frame: &[u8], frames: u32) -> Result<()> {
    let input = ProgramInput {
        data_in: Some(frame),
        flags: LIVE_FRAMES,
        repeat: frames,
        ..Default::default()
    };
    let out = t
        .progs
        .xdp_gen
        .test_run(input)
        .context("running the live-frames generator (BPF_F_TEST_XDP_LIVE_FRAMES)")?;
    if out.return_value != 0 {
        bail!("the generator returned {}", out.return_value);
    }
    Ok(())
}

/// What is attached to the forwarder's input port while a variant runs.
enum Attached {
    None,
    Ecmp(#[allow(dead_code)] XdpLink),
    EcmpCounted(
        #[allow(dead_code)] XdpLink,
        #[allow(dead_code)] libbpf_rs::Link,
    ),
    Peer(#[allow(dead_code)] libbpf_rs::Link),
}

/// Measures every forwarder on both CPU layouts; returns the rate table.
pub fn rate(opts: &RateOptions) -> Result<Vec<Table>> {
    if opts.runs == 0 {
        bail!("packet rate: runs must be at least 1");
    }
    let (net, n) = veth_chain("rate", SINKS, 1)?;
    kernel_routes(&net, &n)?;
    net.enter()?;
    pin_thread_to_cpu(0)?;

    let Ports {
        gen_if,
        in_if,
        outs,
        sinks,
    } = n.ports()?;

    // The generator and sinks.
    let t = load_traffic()?;
    // The Linux path ends at the out ports' tc egress (see tc_sink).
    let mut tc_hooks = Vec::new();
    for &o in &outs {
        let mut h = TcHookBuilder::new(t.progs.tc_sink.as_fd())
            .ifindex(o as i32)
            .replace(true)
            .handle(1)
            .priority(1)
            .hook(TC_EGRESS);
        h.create()
            .context("creating the clsact qdisc of an out port")?;
        tc_hooks.push(h.attach().context("attaching the tc sink")?);
    }
    let _sink_links = sinks
        .iter()
        .map(|&i| t.progs.xdp_sink.attach_xdp(i as i32))
        .collect::<Result<Vec<_>, _>>()
        .context("attaching the sinks")?;

    // The forwarders.
    let mut ecmp = Dataplane::load(&LoadOptions::default()).context("loading xdp-ecmp")?;
    crate::ecmp_world(&mut ecmp, &outs, GROUP_RESILIENT, 128, [0x5eed, 0x0001])?;
    crate::admit(&mut ecmp, in_if, mac(0, 1))?;
    // The same tables in a program that steers to the AF_XDP engine.
    let mut steer = Dataplane::load(&LoadOptions {
        steer_xsk: true,
        ..Default::default()
    })
    .context("loading xdp-ecmp for the AF_XDP engine")?;
    crate::ecmp_world(&mut steer, &outs, GROUP_RESILIENT, 128, [0x5eed, 0x0001])?;
    crate::admit(&mut steer, in_if, mac(0, 1))?;
    let engine_ports: Vec<String> = std::iter::once(&n.inp).chain(&n.out).cloned().collect();
    let p_store: &'static mut MaybeUninit<OpenObject> = Box::leak(Box::new(MaybeUninit::uninit()));
    let p = peers::PeersSkelBuilder::default().open(p_store)?.load()?;
    let mut bare = Vec::with_capacity(16);
    bare.extend_from_slice(&mac(2, 1));
    bare.extend_from_slice(&mac(1, 1));
    bare.extend_from_slice(&outs[0].to_ne_bytes());
    p.maps
        .bare_cfg
        .update(&0u32.to_ne_bytes(), &bare, MapFlags::ANY)?;
    for o in &outs {
        p.maps
            .peer_tx
            .update(&o.to_ne_bytes(), &o.to_ne_bytes(), MapFlags::ANY)?;
    }
    let frame = crate::frame_to(ANYCAST);

    let layouts = [
        ("one CPU (generator, forwarder, sinks)", false),
        ("forwarder on its own CPU (threaded NAPI)", true),
    ];
    // samples[layout][forwarder] = runs
    let mut samples: Vec<Vec<Vec<Sample>>> = (0..layouts.len())
        .map(|_| (0..Forwarder::ALL.len()).map(|_| Vec::new()).collect())
        .collect();
    for (li, (lname, threaded)) in layouts.iter().enumerate() {
        // The engine's worker runs where the forwarder does: CPU 0 with
        // everything else, or CPU 1 with the input's NAPI thread.
        let engine = start_engine(&steer, &engine_ports, &[usize::from(*threaded)])?;
        sh(
            &net,
            &format!(
                "echo {} > /sys/class/net/{}/threaded",
                u8::from(*threaded),
                n.inp
            ),
        )?;
        for run in 0..opts.runs {
            for (fi, f) in Forwarder::ALL.iter().enumerate() {
                eprintln!(
                    "packet rate: {lname}, run {}/{}, {} ...",
                    run + 1,
                    opts.runs,
                    f.name()
                );
                let _attached = match f {
                    Forwarder::Linux => Attached::None,
                    Forwarder::Ecmp => Attached::Ecmp(ecmp.attach(in_if, AttachMode::Native)?),
                    Forwarder::Afxdp => Attached::Ecmp(steer.attach(in_if, AttachMode::Native)?),
                    Forwarder::EcmpCounted => Attached::EcmpCounted(
                        ecmp.attach(in_if, AttachMode::Native)?,
                        ecmp.attach_tx_failure_counter()?,
                    ),
                    Forwarder::Fib => Attached::Peer(p.progs.xdp_fib.attach_xdp(in_if as i32)?),
                    Forwarder::Bare => Attached::Peer(p.progs.xdp_bare.attach_xdp(in_if as i32)?),
                    Forwarder::Drop => Attached::Peer(t.progs.xdp_sink.attach_xdp(in_if as i32)?),
                };
                if *threaded {
                    let threads = napi_threads(&n.inp);
                    if threads.is_empty() {
                        bail!("threaded NAPI on {} has no kernel thread to pin", n.inp);
                    }
                    for pid in threads {
                        pin_pid(pid, 1)?;
                    }
                }
                let counted = match f {
                    Forwarder::Drop => vec![in_if],
                    Forwarder::Linux => outs.clone(),
                    _ => sinks.clone(),
                };
                let s = measure(&t, gen_if, &counted, &frame, opts.window, false)?;
                if s.mpps <= 0.0 {
                    bail!("{}: no frame reached the sinks ({lname})", f.name());
                }
                samples[li][fi].push(s);
            }
        }
        engine.stop(&steer)?;
    }
    sh(&net, &format!("echo 0 > /sys/class/net/{}/threaded", n.inp))?;
    let one_queue = table(&layouts.map(|l| l.0), &samples, opts);
    drop(net);
    Ok(vec![one_queue, crate::rate_queues::two_queues(opts)?])
}

/// The AF_XDP engine on `ports`, its one worker on `cpu`. A queue whose
/// socket just closed stays busy for a moment: binding is retried for 5 s.
pub(crate) fn start_engine(dp: &Dataplane, ports: &[String], cpus: &[usize]) -> Result<Engine> {
    let cfg = EngineConfig {
        workers: cpus.len() as u32,
        cpus: cpus.to_vec(),
        ..Default::default()
    };
    let t0 = Instant::now();
    loop {
        match Engine::start(dp, ports, &cfg, dp.read_tables()?) {
            Ok((engine, _tables)) => return Ok(engine),
            Err(e) if t0.elapsed() < Duration::from_secs(5) => {
                eprintln!("packet rate: the AF_XDP engine did not start yet ({e}); again");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e).context("starting the AF_XDP engine"),
        }
    }
}

pub(crate) fn min_med_max(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (s[0], s[s.len() / 2], s[s.len() - 1])
}

fn table(layouts: &[&str], samples: &[Vec<Vec<Sample>>], opts: &RateOptions) -> Table {
    let mut t = Table::new(
        "packet_rate",
        format!(
            "packet rate through veth, 64-byte IPv4 UDP, {FLOWS} flows, generator -> forwarder -> 4-way ECMP -> 4 sinks; Mpps at the sinks over {:.1} s windows, {} runs",
            opts.window, opts.runs
        ),
        &[
            "CPU layout",
            "forwarder",
            "min Mpps",
            "median Mpps",
            "max Mpps",
            "xdp-ecmp / this (median)",
            "offered Mpps (median)",
            "busiest sink",
        ],
    );
    for (li, l) in layouts.iter().enumerate() {
        let ours = min_med_max(&samples[li][0].iter().map(|s| s.mpps).collect::<Vec<_>>()).1;
        for (fi, f) in Forwarder::ALL.iter().enumerate() {
            let v: Vec<f64> = samples[li][fi].iter().map(|s| s.mpps).collect();
            let (lo, med, hi) = min_med_max(&v);
            let total: u64 = samples[li][fi].iter().flat_map(|s| &s.per_sink).sum();
            let width = samples[li][fi].first().map_or(0, |s| s.per_sink.len());
            let busiest = (0..width)
                .map(|k| samples[li][fi].iter().map(|s| s.per_sink[k]).sum::<u64>())
                .max()
                .unwrap_or(0);
            t.row(vec![
                text(*l),
                text(f.name()),
                num(lo, 2),
                num(med, 2),
                num(hi, 2),
                if *f == Forwarder::Ecmp || *f == Forwarder::Drop {
                    text("-")
                } else {
                    num(ours / med, 2)
                },
                num(
                    min_med_max(
                        &samples[li][fi]
                            .iter()
                            .map(|s| s.offered_mpps)
                            .collect::<Vec<_>>(),
                    )
                    .1,
                    2,
                ),
                pct(100.0 * busiest as f64 / total.max(1) as f64),
            ]);
        }
    }
    t.note("The generator is an XDP program run by BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES on CPU 0; it writes the whole header of every frame (1024 source ports) and redirects it into the forwarder's veth. Sinks are XDP programs that count and drop. 'one CPU': generator, forwarder and sinks share CPU 0, so the figure is the whole chain's. 'own CPU': the forwarder's veth NAPI is threaded and pinned to CPU 1 (its sinks run there too); the generator outruns it, so the figure is the forwarder's capacity.");
    t.note("Where frames end: frames the XDP forwarders redirect are counted and dropped by an XDP program on the far side of each out veth; frames Linux forwards are counted and dropped at the out port's tc egress (clsact), before the veth. Ending Linux's frames at the far side instead would charge them a copy into an XDP frame (veth does that for an XDP peer): measured 0.77 vs 0.93 Mpps. So the Linux figure is the kinder one, and its frames skip the veth hop the XDP forwarders' frames pay for.");
    t.note("The AF_XDP engine: the same program, loaded to steer the frames it would forward to the engine's socket on the input port's queue; one worker thread decides again over a snapshot of the same tables, rewrites into a frame of the out port's socket and sends (copy mode: the kernel copies each frame into the socket's memory and out of it again). The worker sleeps in poll(2) when its rings are empty (no busy polling) and is pinned to the forwarder's CPU of the layout.");
    t.note("The bare forwarder sends everything to one sink (no route, no hash); the fib_lookup forwarder passes no ports to bpf_fib_lookup (as the kernel's xdp_fwd sample), so its flows hash on addresses only and take one path. The forwarder's input veth has GRO on in every variant (Linux forwarding needs it to accept redirected frames). 'offered' is what the generator sent in the same window: above the delivered rate, the difference was dropped on the way (full veth rings).");
    t
}

/// The median Mpps of `forwarder` (a name prefix) in `layout` from the table.
pub fn median_of(t: &Table, layout_prefix: &str, forwarder_prefix: &str) -> Option<f64> {
    (0..t.rows.len())
        .find(|&r| {
            t.rows[r][0].text.starts_with(layout_prefix)
                && t.rows[r][1].text.starts_with(forwarder_prefix)
        })
        .and_then(|r| t.value(r, "median Mpps"))
}
