//! Restart under load: kill -9 of the daemon, started without a fixed hash seed, and a new start while the live-frames generator offers over a million frames a second; frames lost, flows moved (every flow's egress followed at the sinks) and buckets changed must all be 0.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dataplane::{ifindex_of, pin_thread_to_cpu};
use testnet::TestNet;

use crate::rate::{
    generate, generated, kernel_routes, load_traffic, percpu_sum, set_gen, traffic, veth_chain,
    Names,
};
use crate::ANYCAST;

const SINKS: usize = 4;
/// Flows the generator cycles through (source ports 10000 up).
const FLOWS: u32 = 1024;
/// The load offered while the daemon dies and comes back (the generator
/// reaches ~2.8 Mpps here flat out).
const OFFERED_MPPS: f64 = 1.5;

/// How long traffic runs before the kill and after the new daemon is in sync.
pub struct RestartOptions {
    pub before: Duration,
    pub after: Duration,
}

#[derive(Debug)]
pub struct RestartResult {
    pub generated: u64,
    /// Frames xdp-ecmp forwarded (its own counter).
    pub forwarded: u64,
    pub received: u64,
    /// Forwarded frames the egress veths refused because the sink's ring
    /// was full (the kernel's own `tx_queue_N_xdp_xmit_errors`): the sink
    /// CPU fell behind, a loss of the test bed.
    pub egress_ring_full: u64,
    pub offered_mpps: f64,
    /// Flows seen at the sinks, and frames of a flow that reached another
    /// sink than its first.
    pub flows: u64,
    pub moved_frames: u64,
    /// Buckets of the anycast group whose egress differs after the restart.
    pub buckets_changed: usize,
    /// From the kill to the new daemon's first sync written.
    pub down_and_back: Duration,
    /// Frames xdp-ecmp did not forward during the run, by verdict (the
    /// kernel forwards what it passes, as far as it keeps up).
    pub not_forwarded: Vec<(&'static str, u64)>,
}

impl RestartResult {
    /// Frames offered that never reached xdp-ecmp: dropped by the input
    /// veth's ring when the generator's CPU fell behind. A loss of the test
    /// bed: runs that only kill the daemon, or do nothing, show it too.
    pub fn input_drops(&self) -> u64 {
        let seen: u64 = self.forwarded + self.not_forwarded.iter().map(|(_, n)| n).sum::<u64>();
        self.generated.saturating_sub(seen)
    }

    /// Frames of the run xdp-ecmp saw and did not forward (the port's own
    /// multicast chatter aside).
    pub fn not_forwarded_total(&self) -> u64 {
        self.not_forwarded
            .iter()
            .filter(|(v, _)| *v != "pass-multicast")
            .map(|(_, n)| n)
            .sum()
    }

    /// Frames forwarded that no sink received.
    pub fn dropped_after(&self) -> u64 {
        self.forwarded.saturating_sub(self.received)
    }

    /// Frames forwarded that no sink received and no veth ring accounts
    /// for: lost by xdp-ecmp or the kernel's redirect path.
    pub fn lost_unexplained(&self) -> u64 {
        self.dropped_after().saturating_sub(self.egress_ring_full)
    }

    pub fn line(&self) -> String {
        format!(
            "restart under load: {} frames offered ({:.2} Mpps), {} dropped by the input veth ring before xdp-ecmp, {} forwarded by xdp-ecmp ({} of the run not), {} received ({} dropped after forwarding, {} of them refused by a full sink ring); {} flows followed, {} frames of them left by another port than before; {}/128 buckets changed; kill -9 to the new daemon's first sync {:.0} ms; not forwarded by xdp-ecmp: {:?}",
            self.generated,
            self.offered_mpps,
            self.input_drops(),
            self.forwarded,
            self.not_forwarded_total(),
            self.received,
            self.dropped_after(),
            self.egress_ring_full,
            self.flows,
            self.moved_frames,
            self.buckets_changed,
            self.down_and_back.as_secs_f64() * 1e3,
            self.not_forwarded
        )
    }

    /// Whether the only check that failed is the offered rate: the test
    /// bed's pace, not the forwarding plane's.
    #[cfg(test)]
    pub fn only_the_pace_failed(&self) -> bool {
        self.offered_mpps < 1.0 && self.failures().len() == 1
    }

    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.not_forwarded_total() > 0 {
            f.push(format!(
                "{} frames not forwarded by xdp-ecmp: {:?}",
                self.not_forwarded_total(),
                self.not_forwarded
            ));
        }
        if self.lost_unexplained() > 0 {
            f.push(format!(
                "{} of {} forwarded frames never reached a sink, and no full veth ring accounts for them",
                self.lost_unexplained(),
                self.forwarded
            ));
        }
        // The test bed's own drops, at the input ring and at a sink's ring,
        // are reported, not counted against the forwarding plane; more than
        // a sliver means the bed is broken.
        if self.egress_ring_full * 1000 > self.forwarded {
            f.push(format!(
                "{} of {} forwarded frames refused by a full sink ring: the sinks are not keeping up",
                self.egress_ring_full, self.forwarded
            ));
        }
        if self.input_drops() * 50 > self.generated {
            f.push(format!(
                "{} of {} offered frames never reached xdp-ecmp: the generator or the input veth is not keeping up",
                self.input_drops(),
                self.generated
            ));
        }
        if self.moved_frames > 0 {
            f.push(format!(
                "{} frames of established flows moved",
                self.moved_frames
            ));
        }
        if self.buckets_changed > 0 {
            f.push(format!("{} buckets changed", self.buckets_changed));
        }
        if self.flows < 1000 {
            f.push(format!(
                "only {} flows followed (at least 1000)",
                self.flows
            ));
        }
        if self.offered_mpps < 1.0 {
            f.push(format!(
                "offered {:.2} Mpps (at least 1)",
                self.offered_mpps
            ));
        }
        f
    }
}

/// The daemon under test and what it leaves behind, cleaned up on drop.
struct Run {
    net_name: String,
    pins: PathBuf,
    state: PathBuf,
    daemon: Option<Child>,
    logs: Vec<PathBuf>,
}

impl Run {
    fn start(&mut self, inp: &str) -> Result<PathBuf> {
        let log = std::env::temp_dir().join(format!(
            "{}-daemon{}.log",
            self.pins
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("xe"),
            self.logs.len()
        ));
        let file = std::fs::File::create(&log)?;
        // The daemon on CPU 1, traffic on CPU 0.
        let child = Command::new("taskset")
            .args(["-c", "1", "nsenter"])
            .arg(format!("--net=/run/netns/{}", self.net_name))
            .arg(crate::xdp_ecmp_binary()?)
            .arg("--pin-dir")
            .arg(&self.pins)
            .arg("--state-dir")
            .arg(&self.state)
            .args(["run", "-p", inp])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .context("starting xdp-ecmp run")?;
        self.daemon = Some(child);
        self.logs.push(log.clone());
        Ok(log)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            // SAFETY: signalling the child we started, by its PID.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.pins);
        let _ = std::fs::remove_dir_all(&self.state);
        control::status::remove_all(&self.pins);
        for l in &self.logs {
            let _ = std::fs::remove_file(l);
        }
    }
}

/// Waits until the daemon writing `log` has done its first sync.
fn wait_in_sync(log: &Path, run: &mut Run) -> Result<()> {
    let t0 = Instant::now();
    loop {
        let mut text = String::new();
        std::fs::File::open(log)?.read_to_string(&mut text)?;
        if text.contains("initial sync done") {
            return Ok(());
        }
        if let Some(Ok(Some(st))) = run.daemon.as_mut().map(|c| c.try_wait()) {
            bail!("the daemon exited ({st}): {text}");
        }
        if t0.elapsed() > Duration::from_secs(20) {
            bail!("the daemon did not sync within 20 s: {text}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The egress ifindex of each bucket of the anycast route's group.
fn buckets(pins: &Path) -> Result<Vec<u32>> {
    let dp = control::inspect::open(pins)?;
    let r = dp
        .routes_v4()?
        .into_iter()
        .find(|(a, l, _)| *a == ANYCAST && *l == 32)
        .context("the anycast route is not in the maps")?
        .2;
    let g = dp.group(r.group)?;
    dp.slots(g.base, u32::from(g.size))?
        .iter()
        .map(|id| Ok(dp.nexthop(*id)?.ifindex))
        .collect()
}

fn flows_seen(t: &traffic::TrafficSkel<'_>) -> Result<u64> {
    use libbpf_rs::{MapCore, MapFlags};
    let mut n = 0;
    for sport in 10_000..10_000 + FLOWS {
        let v = t
            .maps
            .flow_egress
            .lookup(&sport.to_ne_bytes(), MapFlags::ANY)?
            .unwrap_or_default();
        if v.get(..4).is_some_and(|b| b != [0, 0, 0, 0]) {
            n += 1;
        }
    }
    Ok(n)
}

pub fn restart(opts: &RestartOptions) -> Result<RestartResult> {
    let (net, n): (TestNet, Names) = veth_chain("rst", SINKS, 1)?;
    kernel_routes(&net, &n)?;
    let tag = format!("xe-t{}-rst", std::process::id());
    let mut run = Run {
        net_name: net.name().to_string(),
        pins: PathBuf::from(format!("/sys/fs/bpf/{tag}")),
        state: std::env::temp_dir().join(format!("{tag}-state")),
        daemon: None,
        logs: Vec::new(),
    };
    net.enter()?;
    let gen_if = ifindex_of(&n.gen)?;
    let sinks: Vec<u32> = n
        .sink
        .iter()
        .map(|d| ifindex_of(d))
        .collect::<Result<_, _>>()?;
    let t = load_traffic()?;
    let _sink_links = sinks
        .iter()
        .map(|&i| t.progs.xdp_flow_sink.attach_xdp(i as i32))
        .collect::<Result<Vec<_>, _>>()
        .context("attaching the flow sinks")?;

    // The first daemon: no seed given, so it makes one.
    let log = run.start(&n.inp)?;
    wait_in_sync(&log, &mut run)?;
    let before_table = buckets(&run.pins)?;

    // Traffic from CPU 0 at OFFERED_MPPS, in 50 ms chunks. Paced rather than
    // flat out: at the generator's full rate any disturbance of its CPU
    // overflows the input veth's ring before xdp-ecmp sees the frames (a
    // loss of the test bed, counted apart as input drops).
    pin_thread_to_cpu(0)?;
    set_gen(&t, gen_if, FLOWS, false)?;
    let frame = crate::frame_to(ANYCAST);
    let period = Duration::from_millis(50);
    let chunk = (OFFERED_MPPS * 1e6 * period.as_secs_f64()) as u32;
    let (g0, r0) = (generated(&t)?, received(&t, &sinks)?);
    let e0 = xmit_errors(&n.out)?;
    let v0 = dataplane::pinned_verdict_counters(&run.pins)?;
    let done = AtomicBool::new(false);
    let (down_and_back, after_table, elapsed) = std::thread::scope(|s| -> Result<_> {
        let started = Instant::now();
        let gen = s.spawn(|| -> Result<()> {
            pin_thread_to_cpu(0)?;
            while !done.load(Ordering::Relaxed) {
                let due = Instant::now() + period;
                generate(&t, &frame, chunk)?;
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            Ok(())
        });
        let result = (|| -> Result<_> {
            std::thread::sleep(opts.before);
            let killed = Instant::now();
            run.kill();
            std::thread::sleep(Duration::from_millis(300));
            let log = run.start(&n.inp)?;
            wait_in_sync(&log, &mut run)?;
            let back = killed.elapsed();
            std::thread::sleep(opts.after);
            Ok((back, buckets(&run.pins)?))
        })();
        done.store(true, Ordering::Relaxed);
        let elapsed = started.elapsed();
        gen.join()
            .map_err(|_| anyhow::anyhow!("generator thread panicked"))??;
        let (back, table) = result?;
        Ok((back, table, elapsed))
    })?;
    set_gen(&t, gen_if, FLOWS, true)?;
    std::thread::sleep(Duration::from_millis(300));
    let generated_frames = generated(&t)? - g0;
    let moved_frames = percpu_sum(&t.maps.flow_moved, 0)?;
    let v1 = dataplane::pinned_verdict_counters(&run.pins)?;
    let not_forwarded = v1
        .iter()
        .zip(&v0)
        .filter(|((v, _), _)| v.name() != "forward")
        .map(|((v, b), (_, a))| (v.name(), b.packets - a.packets))
        .filter(|(_, n)| *n > 0)
        .collect();
    let forwarded = v1
        .iter()
        .zip(&v0)
        .find(|((v, _), _)| v.name() == "forward")
        .map_or(0, |((_, b), (_, a))| b.packets - a.packets);
    Ok(RestartResult {
        generated: generated_frames,
        forwarded,
        received: received(&t, &sinks)? - r0,
        egress_ring_full: xmit_errors(&n.out)? - e0,
        offered_mpps: generated_frames as f64 / elapsed.as_secs_f64() / 1e6,
        flows: flows_seen(&t)?,
        moved_frames,
        buckets_changed: before_table
            .iter()
            .zip(&after_table)
            .filter(|(a, b)| a != b)
            .count()
            + before_table.len().abs_diff(after_table.len()),
        down_and_back,
        not_forwarded,
    })
}

/// Frames the egress veths `outs` could not hand to their peers' rings
/// (`ethtool -S`: `tx_queue_N_xdp_xmit_errors`), in total; asked in the
/// calling thread's namespace.
fn xmit_errors(outs: &[String]) -> Result<u64> {
    let mut total = 0;
    for dev in outs {
        let out = Command::new("ethtool")
            .args(["-S", dev])
            .output()
            .context("running ethtool -S (scripts/setup.sh installs it)")?;
        if !out.status.success() {
            bail!(
                "ethtool -S {dev}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut found = false;
        for line in text.lines() {
            let Some((k, v)) = line.trim().split_once(':') else {
                continue;
            };
            if k.starts_with("tx_queue_") && k.ends_with("_xdp_xmit_errors") {
                total += v
                    .trim()
                    .parse::<u64>()
                    .with_context(|| format!("ethtool -S {dev}: {line}"))?;
                found = true;
            }
        }
        if !found {
            bail!("ethtool -S {dev} shows no tx_queue_N_xdp_xmit_errors: not a veth of this kernel's kind");
        }
    }
    Ok(total)
}

/// Frames the sinks received, in total.
fn received(t: &traffic::TrafficSkel<'_>, sinks: &[u32]) -> Result<u64> {
    sinks
        .iter()
        .map(|i| percpu_sum(&t.maps.sink_count, *i))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_and_restart_under_a_million_frames_a_second_moves_no_flow() {
        if !testnet::require_root("kill_and_restart_under_a_million_frames_a_second_moves_no_flow")
        {
            return;
        }
        let _turn = crate::LIVE_TRAFFIC
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // A run whose only failure is the bed's pace (the generator's CPU
        // was slowed, so under 1 Mpps was offered) proves nothing either
        // way: it is run again, twice at most. Any other failure stands.
        let mut runs = 0;
        let r = loop {
            runs += 1;
            let r = restart(&RestartOptions {
                before: Duration::from_millis(800),
                after: Duration::from_millis(800),
            })
            .expect("restart run");
            println!("{}", r.line());
            if !r.only_the_pace_failed() || runs == 3 {
                break r;
            }
            println!(
                "run {runs}: the bed offered {:.2} Mpps, under 1: run again",
                r.offered_mpps
            );
        };
        let f = r.failures();
        assert!(f.is_empty(), "{}\n{}", r.line(), f.join("\n"));
    }
}
