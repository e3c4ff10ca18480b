//! Torn-state stress run: live frames from both CPUs through xdp-ecmp while the in-process reconciler churns next hops, group windows, group ids and DIR-24-8 chunks; sinks check that every frame left by a port of route A's group with a MAC valid for that port.
//!
//! The world (all in one namespace, `rate::veth_chain`): the generator sends
//! to 172.16.255.66, inside route A (172.16.255.0/24), which forwards over
//! next hops on out_1..out_4. Each of A's neighbours flips between two MACs,
//! both valid for its port; A's members leave and come back, so its group
//! moves to new slot windows under the same id (A is a nexthop-object group
//! in modulo mode, the hardest case: every member change resizes it), and
//! now and then A's route turns into an equivalent multipath route and back
//! (a new group id; the old one is retired). Routes B use other next hops,
//! on the same ports and on out_5 (which A never uses), whose MACs are never
//! valid for A; they are resized, replaced, deleted and re-added, and each
//! change is scheduled right after an A change, so that B picks up at once
//! what A just retired (next-hop ids are reused last-freed-first, slot
//! windows first-fit). B toggles 172.16.255.128/25 (A's /24 then needs a
//! DIR-24-8 chunk, freed again on delete) and adds and deletes /25-/32s in
//! 10.9.k.0/24, while filler routes hold all but a few chunks, so a freed
//! chunk is handed out again within a few allocations. An XDP program on
//! every sink checks every frame of the run; one that left with a MAC A
//! never had on that port is wrong. A is always forwardable, so a frame of
//! the run that xdp-ecmp passes to the kernel met retired or torn state too.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use control::reconcile::Reconciler;
use control::state::{
    Dirty, KernelState, Link, Neighbour, NexthopObject, PathKey, Prefix, PrefixSet, RouteTarget,
    WeightedPath, TABLE_MAIN,
};
use control::translate::PlainGroupMode;
use dataplane::abi::{
    xe_config, xe_group, xe_nexthop, xe_route, GROUP_UNUSED, MAX_DIR_CHUNKS, NH_TXPORT, NH_USABLE,
    RT_UNREACHABLE, XDP_PASS,
};
use dataplane::grace::GracePeriods;
use dataplane::{ifindex_of, pin_thread_to_cpu, AttachMode};
use dataplane::{Dataplane, LoadOptions, TableWriter};
use libbpf_rs::{MapCore, MapFlags};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::rate::{self, generate, mac, mac_str, percpu_sum, set_gen, traffic};

mod tap;
mod world;
use crate::ANYCAST;
use tap::Tap;
use world::{a_mac, port_mac, World, A_PORTS, CHUNK_FLOAT, CHUNK_NETS, CYCLE, PORTS};

/// Source ports the generator cycles through (per CPU).
const FLOWS: u32 = 4096;
/// Frames per generator call (a call ends early once the run is over).
const GEN_CALL: u32 = 1 << 20;
/// Frames of the run checked at the sinks must be at least this share of
/// those generated (the rest were dropped on the way by full veth rings, or
/// passed to the kernel). Measured: all but a handful, with one veth queue
/// per CPU (about half with a single queue, which both CPUs share).
pub const MIN_CHECKED_SHARE: f64 = 0.9;
/// Changes per second the churn must reach.
pub const MIN_CHANGES_PER_S: f64 = 1000.0;
/// The seed of the change schedule when none is given.
pub const DEFAULT_SEED: u64 = 0x746f_726e;

/// Settings of one run.
pub struct TornOptions {
    /// Seconds of churn under traffic.
    pub seconds: f64,
    /// Seed of the change schedule's choices.
    pub seed: u64,
}

/// What the sinks saw of a wrong frame.
#[derive(Debug, Clone)]
pub struct WrongFrame {
    pub sink: usize,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub sport: u16,
    pub ttl: u8,
    pub cpu: u8,
}

/// The figures of one run.
#[derive(Debug, Clone, Default)]
pub struct TornResult {
    pub seed: u64,
    /// Seconds of churn, and the changes applied in them.
    pub seconds: f64,
    /// Frames the generators sent (both CPUs; this and the next three
    /// cover the whole run, warm-up included).
    pub generated: u64,
    /// Frames of the run the sinks checked.
    pub checked: u64,
    pub wrong: u64,
    /// Frames xdp-ecmp passed to the kernel, and how many for each reason.
    pub passed: u64,
    pub passed_by: Vec<(&'static str, u64)>,
    pub changes: u64,
    pub reuse: Reuse,
    /// The first wrong frames, described.
    pub examples: Vec<String>,
}

/// How often the churn set up each race (counted from the map writes).
#[derive(Debug, Clone, Copy, Default)]
pub struct Reuse {
    /// A's group written to a new window under the same id.
    pub a_moves: u64,
    /// ... to a smaller window ...
    pub a_shrinks: u64,
    /// ... with a next hop of B's (or a port A never uses) in the slots
    /// just past the new window, where a packet that read the old size and
    /// the new base lands.
    pub a_shrinks_exposed: u64,
    /// Next-hop ids A retired that B's next write gave B's contents.
    pub nexthops: u64,
    /// Group ids A retired that became B's groups.
    pub groups: u64,
    /// Slot windows A left that B's slots were written into.
    pub windows: u64,
}

impl TornResult {
    pub fn changes_per_s(&self) -> f64 {
        self.changes as f64 / self.seconds.max(1e-9)
    }

    pub fn checked_share(&self) -> f64 {
        self.checked as f64 / self.generated.max(1) as f64
    }

    /// The run's figures on one line.
    pub fn line(&self) -> String {
        let r = &self.reuse;
        format!(
            "torn (seed {:#x}): {:.1} s, generated {} frames (both CPUs), checked {} ({:.0}%), wrong {}, passed to the kernel {}{}, changes {} ({:.0}/s); set up: A window moves {} (shrinks {}, {} with B past the new window), A's retired ids reused by B: next hops {}, groups {}, windows {}",
            self.seed,
            self.seconds,
            self.generated,
            self.checked,
            100.0 * self.checked_share(),
            self.wrong,
            self.passed,
            if self.passed_by.is_empty() {
                String::new()
            } else {
                let by: Vec<String> = self
                    .passed_by
                    .iter()
                    .map(|(v, n)| format!("{v} {n}"))
                    .collect();
                format!(" ({})", by.join(", "))
            },
            self.changes,
            self.changes_per_s(),
            r.a_moves,
            r.a_shrinks,
            r.a_shrinks_exposed,
            r.nexthops,
            r.groups,
            r.windows,
        )
    }

    /// Every way the run failed (empty: it passed).
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.wrong > 0 {
            f.push(format!(
                "{} frames left with a MAC A never had on their port; the first:\n  {}",
                self.wrong,
                self.examples.join("\n  ")
            ));
        }
        if self.passed > 0 {
            // A always has three or more live, resolved members on ports in
            // the redirect map: a frame of A's the program hands to the
            // kernel met a group, window or next hop already retired (or a
            // torn group, or a chunk reused under it).
            f.push(format!(
                "{} frames of A (always forwardable) were passed to the kernel: they met retired or torn state",
                self.passed
            ));
        }
        if self.changes_per_s() < MIN_CHANGES_PER_S {
            f.push(format!(
                "{:.0} changes/s, below {MIN_CHANGES_PER_S}",
                self.changes_per_s()
            ));
        }
        if self.reuse.a_moves == 0 {
            f.push("A's group never moved to a new window: the churn set up no race".to_string());
        }
        if self.checked_share() < MIN_CHECKED_SHARE {
            f.push(format!(
                "checked {:.1}% of the frames generated, below {:.0}%",
                100.0 * self.checked_share(),
                100.0 * MIN_CHECKED_SHARE
            ));
        }
        f
    }
}

/// Holds all but a few DIR-24-8 chunks with /32 routes in 10.128.0.0/10
/// (one per /24, never looked up), written past the reconciler: the
/// allocator hands out never-used chunks first, so without this a freed
/// chunk would come back only after all 16,384 had been used once.
fn hold_chunks(dp: &mut Dataplane, keep_free: u32) -> Result<u32> {
    let n = MAX_DIR_CHUNKS.saturating_sub(keep_free);
    let unreachable = xe_route {
        kind: RT_UNREACHABLE,
        ..Default::default()
    };
    for i in 0..n {
        let a = Ipv4Addr::new(10, 128 + (i >> 8) as u8, i as u8, 1);
        dp.set_route_v4(a, 32, &unreachable)
            .with_context(|| format!("filler route {a}/32"))?;
    }
    Ok(n)
}

/// Counters of the checking sinks: (valid, wrong, not the run's), over CPUs.
fn check_counts(t: &traffic::TrafficSkel<'_>) -> Result<[u64; 3]> {
    Ok([
        percpu_sum(&t.maps.check_count, 0)?,
        percpu_sum(&t.maps.check_count, 1)?,
        percpu_sum(&t.maps.check_count, 2)?,
    ])
}

/// The wrong frames the sinks kept (struct check_wrong, 20 bytes, per CPU).
fn wrong_frames(t: &traffic::TrafficSkel<'_>, sinks: &[u32]) -> Result<Vec<WrongFrame>> {
    let mut v = Vec::new();
    for key in 0..16u32 {
        let Some(per_cpu) = t
            .maps
            .check_wrong
            .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)?
        else {
            continue;
        };
        for b in per_cpu {
            let ifindex = u32::from_ne_bytes(b[0..4].try_into().expect("4 bytes"));
            if ifindex == 0 {
                continue;
            }
            v.push(WrongFrame {
                sink: sinks
                    .iter()
                    .position(|s| *s == ifindex)
                    .map_or(0, |k| k + 1),
                dmac: b[4..10].try_into().expect("6 bytes"),
                smac: b[10..16].try_into().expect("6 bytes"),
                sport: u16::from_be_bytes([b[16], b[17]]),
                ttl: b[18],
                cpu: b[19],
            });
        }
    }
    Ok(v)
}

/// Ends the traffic when dropped: the generators' loops end, and what their
/// current call has left to send is dropped at once.
struct Stop<'a> {
    done: &'a AtomicBool,
    t: &'a traffic::TrafficSkel<'static>,
    gen_if: u32,
}

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Err(e) = set_gen(self.t, self.gen_if, FLOWS, true) {
            eprintln!("torn: stopping the generators: {e:#}");
        }
    }
}

/// Frames xdp-ecmp handed to the kernel, per verdict (those with any).
fn passed(dp: &Dataplane) -> Result<Vec<(&'static str, u64)>> {
    Ok(dp
        .verdict_counters()?
        .iter()
        .filter(|(v, c)| v.action() == XDP_PASS && c.packets > 0)
        .map(|(v, c)| (v.name(), c.packets))
        .collect())
}

/// One run: set-up, warm-up, `seconds` of churn under traffic from both CPUs, figures.
/// Every object of the world fits its table: anything waiting for room (its
/// packets passed to the kernel) would make the run prove less than it says.
fn written_whole(rec: &Reconciler, when: &str) -> Result<()> {
    let waiting = rec.waiting();
    if !waiting.is_empty() {
        bail!("after {when}, objects wait for room in a full table: {waiting:?}");
    }
    Ok(())
}

pub fn torn(opts: &TornOptions) -> Result<TornResult> {
    let (net, n) = rate::veth_chain("torn", PORTS, 2)?;
    // Nothing but the run's frames: no IPv6 neighbour discovery on the ports.
    rate::sh(
        &net,
        "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
    )?;
    net.enter()?;
    let gen_if = ifindex_of(&n.gen)?;
    let in_if = ifindex_of(&n.inp)?;
    let mut outs = [0u32; PORTS];
    let mut sinks = [0u32; PORTS];
    for k in 0..PORTS {
        outs[k] = ifindex_of(&n.out[k])?;
        sinks[k] = ifindex_of(&n.sink[k])?;
    }

    // The checking sinks, told which frames are A's.
    let t = rate::load_traffic()?;
    for (k, sink) in sinks.iter().enumerate().take(A_PORTS) {
        for v in 0..2 {
            let mut key = Vec::with_capacity(12);
            key.extend_from_slice(&sink.to_ne_bytes());
            key.extend_from_slice(&a_mac(k, v));
            key.extend_from_slice(&[0, 0]);
            let mut val = port_mac(k).to_vec();
            val.extend_from_slice(&[0, 0]);
            t.maps.check_valid.update(&key, &val, MapFlags::ANY)?;
        }
    }
    let _sink_links = sinks
        .iter()
        .map(|&i| t.progs.xdp_check.attach_xdp(i as i32))
        .collect::<Result<Vec<_>, _>>()
        .context("attaching the checking sinks")?;

    // xdp-ecmp and its control plane, in this process: A first, then B
    // (first fit puts B's windows right after A's), then the chunk fillers.
    let mut dp = Dataplane::load(&LoadOptions::default()).context("loading xdp-ecmp")?;
    crate::admit(&mut dp, in_if, mac(0, 1))?;
    dp.set_config(&xe_config {
        seed: [opts.seed as u32, (opts.seed >> 32) as u32 | 1],
        ..Default::default()
    })?;
    let mut world = World::new(outs, &n.out, opts.seed);
    let mut rec = Reconciler::new(PlainGroupMode::Modulo);
    let start = Instant::now();
    let now_ms = |at: Instant| at.duration_since(start).as_millis() as u64;
    let mut tap = Tap::new(&mut dp, world.a_valid());
    for first in [true, false] {
        if !first {
            world.add_b();
        }
        rec.sync(
            &world.ks,
            &Dirty::All,
            &mut tap,
            now_ms(Instant::now()),
            &|_| None,
        );
        written_whole(&rec, "the first syncs")?;
    }
    let world_chunks = u32::from(CHUNK_NETS) + 1;
    hold_chunks(tap.dp, world_chunks + CHUNK_FLOAT)?;
    let _ecmp = tap
        .dp
        .attach(in_if, AttachMode::Native)
        .context("attaching xdp-ecmp")?;

    // Traffic from both CPUs, then churn.
    set_gen(&t, gen_if, FLOWS, false)?;
    let frame = crate::frame_to(ANYCAST);
    let done = AtomicBool::new(false);
    let t = &t;
    let mut result = std::thread::scope(|s| -> Result<TornResult> {
        // Whatever happens below (an error, a panic), the generators drop
        // what they have left and stop, so the scope can end.
        let stop = Stop {
            done: &done,
            t,
            gen_if,
        };
        let gens: Vec<_> = (0..2)
            .map(|cpu| {
                let (net, frame, done) = (&net, &frame, &done);
                s.spawn(move || -> Result<()> {
                    net.enter()?;
                    pin_thread_to_cpu(cpu)?;
                    while !done.load(Ordering::Relaxed) {
                        generate(t, frame, GEN_CALL)?;
                    }
                    Ok(())
                })
            })
            .collect();
        let run = (|| -> Result<TornResult> {
            std::thread::sleep(Duration::from_millis(300));
            if check_counts(t)?[0] == 0 {
                bail!("no frame reached the sinks in 300 ms of traffic");
            }
            let churn = Instant::now();
            let deadline = churn + Duration::from_secs_f64(opts.seconds);
            let mut changes = 0u64;
            let mut now = churn;
            while now < deadline {
                let c = CYCLE[changes as usize % CYCLE.len()];
                let dirty = world.apply(c);
                rec.sync(&world.ks, &dirty, &mut tap, now_ms(now), &|_| None);
                written_whole(&rec, &format!("the sync after change {changes} ({c:?})"))?;
                changes += 1;
                if changes.is_multiple_of(1024) && gens.iter().any(|g| g.is_finished()) {
                    bail!("a generator stopped before the end of the run");
                }
                now = Instant::now();
            }
            Ok(TornResult {
                seed: opts.seed,
                seconds: churn.elapsed().as_secs_f64(),
                changes,
                reuse: tap.reuse,
                ..Default::default()
            })
        })();
        drop(stop);
        for g in gens {
            g.join()
                .map_err(|_| anyhow::anyhow!("a generator thread panicked"))??;
        }
        run
    })?;
    // Frames still on their way land; then every figure covers the whole run.
    std::thread::sleep(Duration::from_millis(20));
    let [ok, wrong, _] = check_counts(t)?;
    result.generated = rate::generated(t)?;
    result.checked = ok + wrong;
    result.wrong = wrong;
    result.passed_by = passed(&dp)?;
    result.passed = result.passed_by.iter().map(|(_, n)| n).sum();
    result.examples = wrong_frames(t, &sinks)?
        .iter()
        .map(|w| {
            format!(
                "sink_{} ({}): dst {} ({}), src {}, sport {}, ttl {}, cpu {}",
                w.sink,
                if w.sink == PORTS {
                    "out_5, a port A never uses"
                } else {
                    "A's port"
                },
                mac_str(w.dmac),
                world.describe(w.dmac),
                mac_str(w.smac),
                w.sport,
                w.ttl,
                w.cpu
            )
        })
        .collect();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use testnet::require_root;

    /// About 8 s of churn at >= 1,000 changes/s under traffic from both CPUs:
    /// no frame may leave with a MAC A never had on its port, and none may be
    /// passed to the kernel.
    #[test]
    fn torn_state_never_reaches_the_wire() {
        if !require_root("torn_state_never_reaches_the_wire") {
            return;
        }
        let _turn = crate::LIVE_TRAFFIC
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let r = torn(&TornOptions {
            seconds: 8.0,
            seed: DEFAULT_SEED,
        })
        .expect("torn-state run");
        eprintln!("{}", r.line());
        let failures = r.failures();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
