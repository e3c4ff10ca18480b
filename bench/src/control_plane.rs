//! Control-plane benchmarks: route ingestion from `ip -batch` into the maps, event -> map latency under churn at that table size, map memory per route and per bucket.

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dataplane::abi::MAX_SLOTS;
use dataplane::{Dataplane, LoadOptions};
use hdrhistogram::Histogram;

use crate::report::{num, text, Table};
use crate::route_socket::RouteSocket;

/// Settings of one control-plane run.
pub struct ControlOptions {
    /// /32 routes added by one `ip -batch`.
    pub routes: u32,
    /// Route changes per second of background churn, one latency row each.
    pub churn_rates: Vec<u32>,
    /// Seconds of churn per rate.
    pub churn_seconds: f64,
    /// Also a churn of bursts of [`BURST`] changes at this rate (changes/s).
    pub burst_rate: Option<u32>,
}

/// Changes per burst in the burst churn: as a routing daemon installs a
/// peer's table, back to back at the kernel's pace.
pub const BURST: u32 = 500;

/// Paced churn makes its changes in groups every this often.
const PACE: Duration = Duration::from_millis(1);

/// Seconds between anti-entropy rounds in the churn phase that has them.
const ANTI_ENTROPY_S: u32 = 2;
/// How that phase's pattern says so (before the seconds).
pub const ANTI_ENTROPY: &str = "anti-entropy every ";

fn run(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

/// A namespace with one port and the daemon; everything goes on drop.
struct Bed {
    ns: String,
    pin: PathBuf,
    log: PathBuf,
    daemon: Option<Child>,
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.stop_daemon();
        let _ = std::fs::remove_dir_all(&self.pin);
        control::status::remove_all(&self.pin);
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_dir_all(self.state());
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

impl Bed {
    /// The daemon's state directory (its hash seed), removed with the bed.
    fn state(&self) -> PathBuf {
        std::env::temp_dir().join(format!("{}-state", self.ns))
    }

    fn new(tag: &str) -> Result<Self> {
        // xe-t<pid>-...: the names the test suite's leftover check knows.
        let ns = format!("xe-t{}-{tag}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &ns]))?;
        // A router: the daemon passes routes of a family the kernel would not forward.
        run(Command::new("ip")
            .args(["netns", "exec", &ns, "sysctl", "-qw"])
            .args(["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]))?;
        let bed = Bed {
            pin: PathBuf::from(format!("/sys/fs/bpf/{ns}")),
            log: std::env::temp_dir().join(format!("{ns}.log")),
            ns,
            daemon: None,
        };
        bed.ip(&[
            "link", "add", "xe-r0", "type", "veth", "peer", "name", "xe-r1",
        ])?;
        bed.ip(&["link", "set", "xe-r0", "up"])?;
        bed.ip(&["link", "set", "xe-r1", "up"])?;
        bed.ip(&["addr", "add", "10.0.0.1/24", "dev", "xe-r0"])?;
        bed.ip(&[
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
        Ok(bed)
    }

    fn ip(&self, args: &[&str]) -> Result<()> {
        run(Command::new("ip").arg("-n").arg(&self.ns).args(args))
    }

    fn batch(&self, lines: &str) -> Result<()> {
        let file = std::env::temp_dir().join(format!(
            "{}-{:?}.batch",
            self.ns,
            std::thread::current().id()
        ));
        std::fs::write(&file, lines)?;
        let r = run(Command::new("ip")
            .args(["-n", &self.ns, "-batch"])
            .arg(&file));
        let _ = std::fs::remove_file(&file);
        r
    }

    /// Waits for the daemon's log to say its first sync is done.
    fn wait_initial_sync(&self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        while !self.log_text().contains("initial sync done") {
            if start.elapsed() > limit {
                bail!("the daemon's first sync did not finish within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Starts the daemon on xe-r1; returns once its program is attached.
    fn start_daemon(&mut self) -> Result<()> {
        self.start_daemon_with(&[])
    }

    /// [`Bed::start_daemon`] with more flags for `run`.
    fn start_daemon_with(&mut self, flags: &[&str]) -> Result<()> {
        let log = std::fs::File::create(&self.log)?;
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .arg(crate::xdp_ecmp_binary()?)
            .arg("--pin-dir")
            .arg(&self.pin)
            .arg("--state-dir")
            .arg(self.state())
            .args(["run", "-p", "xe-r1", "--netlink-rcvbuf", "268435456"])
            .args(flags)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.daemon = Some(child);
        let start = Instant::now();
        while !self.pin.join("link_xe-r1").exists() {
            if start.elapsed() > Duration::from_secs(30) {
                bail!(
                    "the daemon did not attach within 30 s; log: {}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the daemon with SIGTERM; returns its log.
    fn stop_daemon(&mut self) -> String {
        if let Some(mut c) = self.daemon.take() {
            // SAFETY: signalling the child we started, by its PID.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
        self.log_text()
    }

    fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

/// `name=value` from the daemon's "stopped" log line.
fn log_field(log: &str, name: &str) -> Option<u64> {
    line_field(log, "stopped", name)
}

/// `name=value` from the daemon's last log line that says `says`.
fn line_field(log: &str, says: &str, name: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains(says))?;
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn wait_route(dp: &Dataplane, a: Ipv4Addr, present: bool, limit: Duration) -> Result<Duration> {
    let start = Instant::now();
    while dp.route_v4(a, 32)?.is_some() != present {
        if start.elapsed() > limit {
            bail!(
                "route {a}/32 did not {} the maps within {limit:?}",
                if present { "reach" } else { "leave" }
            );
        }
        // Spinning past the first 200 us would take a CPU from the daemon
        // on a 2-CPU machine: after that, look every 100 us.
        if start.elapsed() < Duration::from_micros(200) {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    Ok(start.elapsed())
}

/// What the daemon's log says of its slow passes (those it logs, over
/// `control::loop_timing::SLOW` of work): how many, and the slowest.
fn slow_passes(log: &str) -> String {
    const SAYS: &str = "one pass of the event loop took ";
    let slow: Vec<&str> = log
        .lines()
        .filter_map(|l| l.find(SAYS).map(|at| &l[at + SAYS.len()..]))
        .collect();
    let ms = |l: &str| -> f64 {
        l.split(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    match slow.iter().max_by(|a, b| ms(a).total_cmp(&ms(b))) {
        None => format!(
            "No pass of the daemon's loop took over {} ms of work during the churn.",
            control::loop_timing::SLOW.as_millis()
        ),
        Some(worst) => format!(
            "Passes of the daemon's loop over {} ms of work: {}; the slowest took {worst}.",
            control::loop_timing::SLOW.as_millis(),
            slow.len()
        ),
    }
}

/// Ingestion, latency under churn and memory; three tables.
pub fn control_plane(opts: &ControlOptions) -> Result<Vec<Table>> {
    let n = opts.routes;
    let mut batch = String::with_capacity(n as usize * 40);
    for i in 0..n {
        batch.push_str(&format!(
            "route add {}/32 via 10.0.0.2\n",
            Ipv4Addr::from(0x6440_0000u32 + i)
        ));
    }
    // The kernel's own pace, with no daemon listening.
    eprintln!("control plane: {n} routes with ip -batch, no daemon ...");
    let alone_s = {
        let bare = Bed::new("k")?;
        let start = Instant::now();
        bare.batch(&batch)?;
        start.elapsed().as_secs_f64()
    };
    let mut bed = Bed::new("cp")?;
    bed.start_daemon()?;
    std::thread::sleep(Duration::from_millis(300));
    let dp = Dataplane::load(&LoadOptions {
        pin_dir: Some(bed.pin.clone()),
        ..Default::default()
    })?;
    let last = Ipv4Addr::from(0x6440_0000u32 + n - 1);
    eprintln!("control plane: adding {n} routes with ip -batch ...");
    let start = Instant::now();
    bed.batch(&batch)?;
    drop(batch);
    let kernel_s = start.elapsed().as_secs_f64();
    wait_route(&dp, last, true, Duration::from_secs(600))?;
    let maps_s = start.elapsed().as_secs_f64();
    let in_maps = dp.routes_v4()?.len();

    let mut ingest = Table::new(
        "route_ingestion",
        format!("route ingestion: {n} IPv4 /32 routes by one ip -batch into a namespace where the daemon runs"),
        &["what", "seconds", "routes/s"],
    );
    ingest.row(vec![
        text("kernel alone (no daemon): ip -batch returns"),
        num(alone_s, 2),
        num(f64::from(n) / alone_s, 0),
    ]);
    ingest.row(vec![
        text("kernel, daemon running: ip -batch returns"),
        num(kernel_s, 2),
        num(f64::from(n) / kernel_s, 0),
    ]);
    ingest.row(vec![
        text("maps hold the last route"),
        num(maps_s, 2),
        num(f64::from(n) / maps_s, 0),
    ]);
    ingest.row(vec![
        text("daemon behind the kernel"),
        num(maps_s - kernel_s, 2),
        text("-"),
    ]);
    ingest.note(format!("{in_maps} IPv4 routes in the map at the end (the {n} plus the port's connected and local routes). The kernel's own pace bounds the end-to-end rate; the cold start shows the daemon's own."));

    // Memory, at n routes.
    let mem = dp.map_memory();
    let non_route = [
        "xe_groups",
        "xe_slots",
        "xe_slot_used",
        "xe_nexthops",
        "xe_nh_stats",
        "xe_txports",
    ];
    // The IPv6 search's slot table is sized by the IPv6 route capacity
    // (max_routes_v6), not by the IPv4 routes measured: its own row.
    let v6_search = ["xe_v6_slots", "xe_v6_lens"];
    let route_bytes: u64 = mem
        .iter()
        .filter(|(m, _)| !non_route.contains(&m.as_str()) && !v6_search.contains(&m.as_str()))
        .map(|m| m.1)
        .sum();
    let v6_bytes: u64 = mem
        .iter()
        .filter(|(m, _)| v6_search.contains(&m.as_str()))
        .map(|m| m.1)
        .sum();
    let v6_capacity = dp.sizes().routes_v6;
    let bucket_bytes: u64 = mem
        .iter()
        .filter(|(m, _)| m == "xe_slots" || m == "xe_slot_used")
        .map(|m| m.1)
        .sum();
    let mut memory = Table::new(
        "map_memory",
        format!("map memory (fdinfo memlock) with {in_maps} IPv4 routes"),
        &["map", "MiB", "per unit", "unit"],
    );
    for (m, b) in &mem {
        memory.row(vec![
            text(m.as_str()),
            num(*b as f64 / 1048576.0, 1),
            text("-"),
            text("-"),
        ]);
    }
    memory.row(vec![
        text("all route maps"),
        num(route_bytes as f64 / 1048576.0, 1),
        num(route_bytes as f64 / in_maps as f64, 1),
        text("bytes per IPv4 route"),
    ]);
    memory.row(vec![
        text("IPv6 search slot table (fixed, for max_routes_v6)"),
        num(v6_bytes as f64 / 1048576.0, 1),
        num(v6_bytes as f64 / f64::from(v6_capacity), 1),
        text(format!("bytes per IPv6 route of capacity ({v6_capacity})")),
    ]);
    memory.row(vec![
        text("bucket pool (next hop + last-used stamp)"),
        num(bucket_bytes as f64 / 1048576.0, 1),
        num(bucket_bytes as f64 / f64::from(MAX_SLOTS), 1),
        text("bytes per bucket"),
    ]);
    memory.note("The route maps' memory is everything but the group, bucket, next-hop, counter and port maps and the IPv6 search's slot table (a fixed array sized from max_routes_v6, on its own row); maps that grow with routes are allocated on demand, fixed-size arrays are counted whole, so the per-route figure falls as routes grow.");

    // Latency under churn, at n routes: a fresh daemon (it adopts the pinned
    // maps) so its histogram holds only the churn phase.
    let mut latency = Table::new(
        "event_latency",
        format!("event -> map latency under churn with {n} routes in the table, microseconds"),
        &[
            "churn (changes/s)",
            "pattern",
            "measured by",
            "events",
            "re-dumps",
            "p50 us",
            "p90 us",
            "p99 us",
            "p99.9 us",
            "max us",
        ],
    );
    // Paced at each rate (a group of changes every PACE), then in bursts,
    // then at the lowest rate with an anti-entropy round every
    // ANTI_ENTROPY_S (each dumps and compares every route).
    let phases: Vec<(u32, u32, bool)> = opts
        .churn_rates
        .iter()
        .map(|&r| (r, paced_group(r), false))
        .chain(opts.burst_rate.map(|r| (r, BURST, false)))
        .chain(
            opts.churn_rates
                .iter()
                .min()
                .map(|&r| (r, paced_group(r), true)),
        )
        .collect();
    for (rate, group, entropy) in phases {
        let mut pattern = if group == BURST {
            format!("bursts of {BURST}")
        } else {
            format!("paced, {group} per ms")
        };
        let every = ANTI_ENTROPY_S.to_string();
        let flags: &[&str] = if entropy {
            pattern.push_str(&format!("; {ANTI_ENTROPY}{ANTI_ENTROPY_S} s"));
            &["--anti-entropy", &every]
        } else {
            &[]
        };
        let log = bed.stop_daemon();
        let restart = Instant::now();
        bed.start_daemon_with(flags)?;
        // In sync again once its first sync is done (a route found in the
        // maps before that proves nothing: the sync may still be writing)
        // and a route added now reaches the maps.
        bed.wait_initial_sync(Duration::from_secs(600))?;
        let probe0 = Ipv4Addr::new(198, 18, 255, 254);
        bed.ip(&["route", "add", &format!("{probe0}/32"), "via", "10.0.0.2"])?;
        wait_route(&dp, probe0, true, Duration::from_secs(300))?;
        let adopt_s = restart.elapsed().as_secs_f64();
        bed.ip(&["route", "del", &format!("{probe0}/32")])?;
        drop(log);
        eprintln!(
            "control plane: churn at {rate} changes/s ({pattern}) for {:.0} s ...",
            opts.churn_seconds
        );
        let (probe_hist, changes) = churn(&bed, &dp, rate, group, opts.churn_seconds)?;
        let log = bed.stop_daemon();
        let events = log_field(&log, "events").unwrap_or(0);
        let q = |name| log_field(&log, name).map_or_else(|| text("?"), |v| num(v as f64, 0));
        latency.row(vec![
            num(f64::from(rate), 0),
            text(pattern.as_str()),
            text("daemon: netlink readable -> maps written"),
            num(events as f64, 0),
            q("resyncs"),
            q("latency_p50_us"),
            text("-"),
            q("latency_p99_us"),
            q("latency_p999_us"),
            text("-"),
        ]);
        latency.row(vec![
            num(f64::from(rate), 0),
            text(pattern.as_str()),
            text("daemon, per change: netlink readable -> maps written"),
            q("changes"),
            q("resyncs"),
            q("change_p50_us"),
            text("-"),
            q("change_p99_us"),
            q("change_p999_us"),
            text("-"),
        ]);
        let h = &probe_hist;
        latency.row(vec![
            num(f64::from(rate), 0),
            text(pattern.as_str()),
            text("probe: route add acknowledged -> route in the map"),
            num(h.len() as f64, 0),
            text("-"),
            num(h.value_at_quantile(0.5) as f64, 0),
            num(h.value_at_quantile(0.9) as f64, 0),
            num(h.value_at_quantile(0.99) as f64, 0),
            num(h.value_at_quantile(0.999) as f64, 0),
            num(h.max() as f64, 0),
        ]);
        latency.note(format!(
            "churn {rate}/s, {pattern}: {changes} background changes; the daemon restarted before it and was in sync {adopt_s:.2} s after start (it adopts the pinned maps of {n} routes). {}",
            slow_passes(&log)
        ));
        bed.start_daemon()?;
    }
    latency.note(format!("Background churn: route replaces of 500 /32s (100.127.0.0/16) in turn, then their deletes in turn, over a netlink socket, each acknowledged before the next (as `ip -batch` makes them). Paced: a group of changes every 1 ms (1 at 1000/s, 10 at 10000/s); bursts: 500 back to back at the kernel's pace, the bursts paced to the rate, as a routing daemon installs a peer's table. Probes: one route add of a fresh /32 every 20 ms on a socket of its own, timed from the kernel's acknowledgement (the kernel has the route) until a map lookup finds it. The daemon's own histogram (hdrhistogram) covers every wake-up with changes, churn included. No process is started during the churn: every `ip` run costs the kernel an expedited RCU grace period when it exits (its mount namespace torn down), tens of ms of a CPU on a 2-CPU VM, which took CPU from the daemon measured. The last phase is the lowest paced rate with an anti-entropy round every {ANTI_ENTROPY_S} s: each dumps every route on a thread of its own and compares the dump with the mirror in steps of at most 200 us between the event loop's passes, leaving out the routes the churn changed meanwhile (the daemon's stop line counts the rounds completed)."));
    // Cold start: the daemon alone, the kernel's routes dumped into empty
    // maps (no pinned maps to adopt): its own pace, without the kernel's.
    bed.stop_daemon();
    let _ = std::fs::remove_dir_all(&bed.pin);
    control::status::remove_all(&bed.pin);
    eprintln!("control plane: daemon cold start with {n} routes in the kernel ...");
    let start = Instant::now();
    bed.start_daemon()?;
    bed.wait_initial_sync(Duration::from_secs(600))?;
    let cold_s = start.elapsed().as_secs_f64();
    let log = bed.stop_daemon();
    ingest.row(vec![
        text("daemon cold start: dump of the kernel's routes into empty maps"),
        num(cold_s, 2),
        num(f64::from(n) / cold_s, 0),
    ]);
    // Its parts, as the daemon's log gives them.
    for (what, field) in [
        (
            "cold start, of it: loading the program and maps, attaching",
            "load_ms",
        ),
        (
            "cold start, of it: the kernel's dump, read and parsed",
            "dump_ms",
        ),
        (
            "cold start, of it: the first sync (maps written)",
            "sync_ms",
        ),
    ] {
        if let Some(ms) = line_field(&log, "initial sync done", field) {
            let s = ms as f64 / 1000.0;
            let rate = if field == "load_ms" {
                text("-")
            } else {
                num(f64::from(n) / s.max(1e-3), 0)
            };
            ingest.row(vec![text(what), num(s, 2), rate]);
        }
    }
    Ok(vec![ingest, latency, memory])
}

/// Changes per group of a paced churn at `rate`: one group every [`PACE`].
fn paced_group(rate: u32) -> u32 {
    ((u64::from(rate) * PACE.as_micros() as u64 / 1_000_000) as u32).max(1)
}

/// Background churn at `rate` changes/s, in groups of `group` changes back
/// to back, while probing; returns the probe latency histogram (us) and how
/// many background changes were made.
fn churn(
    bed: &Bed,
    dp: &Dataplane,
    rate: u32,
    group: u32,
    seconds: f64,
) -> Result<(Histogram<u64>, u64)> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| -> Result<(Histogram<u64>, u64)> {
        let bg = s.spawn(|| -> Result<u64> {
            let routes = RouteSocket::open(&bed.ns)?;
            let mut made = 0u64;
            let period = Duration::from_secs_f64(f64::from(group) / f64::from(rate.max(1)));
            // BURST routes, added in turn and deleted in turn, `group` at a time.
            let addrs: Vec<Ipv4Addr> = (0..BURST)
                .map(|i| Ipv4Addr::from(0x647f_0000u32 + i))
                .collect();
            let gateway = Ipv4Addr::new(10, 0, 0, 2);
            let mut next = Instant::now();
            let mut at = 0usize;
            let mut adding = true;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..group {
                    if adding {
                        routes.add(addrs[at], gateway, true)?;
                    } else {
                        routes.del(addrs[at])?;
                    }
                    at += 1;
                    if at == addrs.len() {
                        at = 0;
                        adding = !adding;
                    }
                }
                made += u64::from(group);
                next += period;
                if let Some(w) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(w);
                }
            }
            // What the churn left in the kernel goes.
            let left = if adding { &addrs[..at] } else { &addrs[at..] };
            for &a in left {
                routes.del(a)?;
            }
            Ok(made)
        });
        let start = Instant::now();
        let mut i = 0u32;
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let mut probe = || -> Result<()> {
            let routes = RouteSocket::open(&bed.ns)?;
            while start.elapsed().as_secs_f64() < seconds {
                let a = Ipv4Addr::from(0xc612_0000u32 + i);
                routes.add(a, Ipv4Addr::new(10, 0, 0, 2), false)?;
                let d = wait_route(dp, a, true, Duration::from_secs(60))?;
                hist.record(d.as_micros().max(1) as u64)?;
                if d > Duration::from_millis(50) {
                    // To set beside the daemon's log of the same moment.
                    let at = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default();
                    eprintln!(
                        "control plane: probe {a} took {:.1} ms, reached the map at unix {:.3} s",
                        d.as_secs_f64() * 1e3,
                        at.as_secs_f64()
                    );
                }
                routes.del(a)?;
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        };
        let probed = probe();
        stop.store(true, Ordering::Relaxed);
        let made = bg
            .join()
            .map_err(|_| anyhow::anyhow!("churn thread panicked"))??;
        probed?;
        Ok((hist, made))
    })
}
