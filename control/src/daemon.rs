//! `xdp-ecmp run`: load and attach, mirror the kernel over netlink, keep the maps reconciled (routes, and each port's admission), re-dump after an overrun.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use dataplane::abi::xe_config;
use dataplane::{AttachMode, Dataplane, LoadOptions, TableWriter};

use crate::engine::{Running, Tee};
use crate::entropy_round::{drop_aside, Outcome, Round};
use crate::forwarding::Admission;
use crate::loop_timing::Phases;
use crate::mirror::{Event, Mirror};
use crate::ports::Ports;
use crate::reconcile::Reconciler;
use crate::state::{Dirty, KernelState};
use crate::translate::PlainGroupMode;

/// Everything `run` needs, from flags or the config file.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub ports: Vec<String>,
    pub pin_dir: PathBuf,
    pub table: u32,
    pub mode: PlainGroupMode,
    pub attach: AttachMode,
    /// Hash fields and flags; the seed in it is settled at start (see `seed`).
    pub config: xe_config,
    /// A seed given by flag or config file, or `new_hash_seed` to make a new one;
    /// otherwise the running program's or the stored one is kept.
    pub hash_seed: Option<u64>,
    pub new_hash_seed: bool,
    /// Where the seed is kept across reboots.
    pub state_dir: PathBuf,
    pub rcvbuf: usize,
    /// Stop after this long (tests); None runs until killed.
    pub run_for: Option<Duration>,
    /// Serve Prometheus metrics here.
    pub metrics: Option<std::net::SocketAddr>,
    /// Attach ports missing at start when they appear, instead of failing.
    pub wait_for_ports: bool,
    /// Map sizes asked for (None: those of the pinned maps, else the defaults).
    pub sizes: Option<dataplane::MapSizes>,
    /// How often the mirror is compared with a fresh dump (None: never).
    pub anti_entropy: Option<Duration>,
    /// The AF_XDP engine, for the frames to forward between the ports
    /// (None: the XDP program forwards them itself). Workers 0: as many as
    /// the ports have receive queues.
    pub engine: Option<dataplane::afxdp::EngineConfig>,
    /// Flow pinning (None: off).
    pub pin: Option<crate::config::PinConfig>,
}

/// Time in ms of the daemon's timers (bucket stamps are converted to it
/// through `Dataplane::stamp_clock`).
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// How often the ports' forwarding switches are read when nothing says
/// they changed.
const ADMISSION_EVERY: Duration = Duration::from_millis(100);

/// Statistics the daemon keeps.
#[derive(Debug, Clone)]
pub struct RunStats {
    pub syncs: u64,
    pub resyncs: u64,
    /// Dumps after a change that may have flushed state without a message.
    pub redumps: u64,
    /// Anti-entropy comparisons made, and differences found (and repaired).
    pub entropy_checks: u64,
    pub entropy_repairs: u64,
    pub events: u64,
    /// Netlink messages skipped because they did not decode.
    pub undecodable: u64,
    /// Event (netlink readable) -> maps written, in microseconds, one
    /// count per wake-up with changes.
    pub latency_us: hdrhistogram::Histogram<u64>,
    /// The same, one count per netlink message applied, each counted with
    /// its pass's time (from the oldest moment one of its messages can have
    /// been waiting: every poll reads the socket empty, so a message came
    /// after the previous read ended).
    pub change_latency_us: hdrhistogram::Histogram<u64>,
    /// Buckets moved since start, and over the last minute.
    pub buckets_moved: u64,
    pub moves: crate::status::MoveWindow,
    /// Wall-clock ms of the last full re-dump.
    pub last_redump_ms: Option<u64>,
    /// A sync wrote next hops, groups or buckets since the topology was
    /// last published.
    pub topology_changed: bool,
}

impl Default for RunStats {
    fn default() -> Self {
        RunStats {
            syncs: 0,
            resyncs: 0,
            redumps: 0,
            entropy_checks: 0,
            entropy_repairs: 0,
            events: 0,
            undecodable: 0,
            latency_us: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("histogram bounds"),
            change_latency_us: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("histogram bounds"),
            buckets_moved: 0,
            moves: Default::default(),
            last_redump_ms: None,
            topology_changed: true,
        }
    }
}

impl RunStats {
    /// p50/p99/p999 of the event -> map latency per wake-up, in microseconds.
    pub fn latency_quantiles(&self) -> (u64, u64, u64) {
        quantiles(&self.latency_us)
    }

    /// p50/p99/p999 of the event -> map latency per change, in microseconds.
    pub fn change_latency_quantiles(&self) -> (u64, u64, u64) {
        quantiles(&self.change_latency_us)
    }

    /// Records a wake-up that read `changes` messages and wrote the maps
    /// `took` after they became readable.
    fn record_latency(&mut self, took: Duration, changes: u64) {
        let us = took.as_micros().max(1) as u64;
        let _ = self.latency_us.record(us);
        let _ = self.change_latency_us.record_n(us, changes.max(1));
    }
}

fn quantiles(h: &hdrhistogram::Histogram<u64>) -> (u64, u64, u64) {
    (
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
    )
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

fn stop_requested() -> bool {
    STOP.load(std::sync::atomic::Ordering::SeqCst)
}

/// SIGTERM/SIGINT end the loop cleanly; the XDP links stay pinned.
fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
}

/// Runs the daemon until `run_for` elapses (or forever).
pub fn run(cfg: &RunConfig) -> Result<RunStats> {
    let began = Instant::now();
    install_signal_handlers();
    match crate::sched::short_slice(crate::sched::SLICE) {
        Ok(Some(slice)) => tracing::debug!(?slice, "scheduling slice set"),
        Ok(None) => tracing::debug!("this kernel has no per-thread slices (6.12+): the default slice stays"),
        Err(e) => tracing::warn!("asking for a {:?} scheduling slice failed ({e}); events may wait for another task's slice", crate::sched::SLICE),
    }
    // One writer at a time: a second daemon or an `attach` on the same pin
    // directory is told who holds it.
    let _lock = dataplane::pins::WriterLock::acquire(&cfg.pin_dir)?;
    let had_pins = cfg.pin_dir.join("xe_config").exists();
    let mut dp = Dataplane::load(&LoadOptions {
        pin_dir: Some(cfg.pin_dir.clone()),
        sizes: cfg.sizes,
        steer_xsk: cfg.engine.is_some(),
        flows: cfg.pin.as_ref().map(|p| p.capacity),
        ..Default::default()
    })?;
    // Redirected frames the kernel cannot send are counted, never as forwarded.
    if let Err(e) = dp.count_tx_failures(&cfg.pin_dir) {
        tracing::warn!("redirect failures will not be counted (the xdp_redirect_err tracepoint could not be attached: {e}); `forward` then includes frames the kernel refused after the redirect");
    }
    let pinned = had_pins.then(|| dp.config()).transpose()?;
    let seed = crate::seed::settle(
        cfg.hash_seed,
        cfg.new_hash_seed,
        pinned.as_ref(),
        &crate::seed::StateDir(cfg.state_dir.clone()),
    )?;
    let hz = dp.stamp_clock()?.hz;
    dp.set_config(&xe_config {
        seed: crate::seed::words(seed),
        pin_timeout: cfg
            .pin
            .as_ref()
            .map_or([0; 3], |p| crate::config::pin_timeouts(&p.timeouts_s, hz)),
        ..cfg.config
    })?;
    // Before the program goes live on the ports: tables pinned by a previous
    // run are checked against its routes.
    let repaired = dp.adopt_lookup_tables()?;
    if repaired.total() > 0 {
        tracing::info!(
            slash24s = repaired.slash24s,
            ipv6_entries = repaired.v6_entries,
            "rewrote lookup tables that disagreed with the pinned routes"
        );
    }
    let mut ports = Ports::attach(
        &cfg.ports,
        &cfg.pin_dir,
        cfg.attach,
        cfg.wait_for_ports,
        &mut dp,
    )?;
    let mut mirror = Mirror::open(cfg.rcvbuf)?;
    let mut state = KernelState::new(cfg.table);
    let loaded = began.elapsed();
    mirror.dump(&mut state)?;
    let dumped = began.elapsed();
    // Each port's MAC and switches (entries pinned by a previous run stay
    // while they are right; those of ports not attached now go).
    let mut admission = Admission::adopt(&dp, Default::default())?;
    admission.apply(&ports.attached(), &state, &mut dp);
    let sizes = dp.sizes();
    let mut rec = Reconciler::with_limits(
        cfg.mode,
        crate::capacity::Limits {
            slots: sizes.slots,
            routes_v4: sizes.routes_v4,
            routes_v6: sizes.routes_v6,
            ..Default::default()
        },
    );
    if let Some(p) = &cfg.pin {
        rec.set_pinned(p.prefixes.clone());
        tracing::info!(
            prefixes = ?p.prefixes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            capacity = p.capacity,
            "pinning flows"
        );
    }
    let adopted = rec.adopt(&state, &dp, now_ms())?;
    if adopted > 0 {
        tracing::info!(
            groups = adopted,
            "adopted the pinned maps of a previous run"
        );
    }
    let mut stats = RunStats::default();
    let stamps = dp.stamp_reader()?;
    let shared: crate::metrics::Shared = Default::default();
    if let Some(addr) = cfg.metrics {
        let addr = crate::metrics::serve(addr, cfg.pin_dir.clone(), shared.clone())?;
        tracing::info!(%addr, "serving metrics at /metrics");
    }
    let publish = |rec: &Reconciler, stats: &RunStats| {
        let mut s = shared.lock();
        s.syncs = stats.syncs;
        s.resyncs = stats.resyncs;
        s.redumps = stats.redumps;
        s.entropy_checks = stats.entropy_checks;
        s.entropy_repairs = stats.entropy_repairs;
        s.events = stats.events;
        s.latency = [0.5, 0.99, 0.999]
            .iter()
            .map(|q| (*q, stats.latency_us.value_at_quantile(*q) as f64 / 1e6))
            .collect();
        s.imbalance = rec.imbalance();
        s.shortfalls = rec.shortfalls();
        s.routes_to_kernel = rec.routes_to_kernel() as u64;
        s.undecodable = stats.undecodable;
        s.nexthops = rec
            .nexthops_in_use()
            .into_iter()
            .map(|(id, ifx)| (id, crate::inspect::ifname(ifx)))
            .collect();
    };
    // `all`: every prefix (first sync, after a re-dump); else what changed.
    let sync = |rec: &mut Reconciler,
                state: &mut KernelState,
                dp: &mut Dataplane,
                engine: Option<&mut Running>,
                stats: &mut RunStats,
                all: bool|
     -> Result<()> {
        let now = now_ms();
        let clock = dp.stamp_clock()?;
        let last_used = |slot: u32| clock.last_used_ms(stamps.get(slot), now);
        let dirty = state.take_dirty();
        let dirty = if all { Dirty::All } else { dirty };
        let st = rec.sync(state, &dirty, &mut Tee { dp, engine }, now, &last_used);
        stats.syncs += 1;
        stats.buckets_moved += st.buckets_moved as u64;
        stats.moves.record(now, st.buckets_moved as u64);
        if all {
            stats.last_redump_ms = Some(crate::status::unix_ms());
        }
        if st.nexthops_written + st.slots_written + st.groups_written + st.buckets_moved > 0 {
            stats.topology_changed = true;
        }
        tracing::debug!(?st, "synced");
        Ok(())
    };
    sync(&mut rec, &mut state, &mut dp, None, &mut stats, true)?;
    publish(&rec, &stats);
    // The engine starts over the maps as synced: from here every write
    // reaches both.
    let mut engine = match &cfg.engine {
        Some(e) => {
            let names: Vec<String> = ports.attached().into_iter().map(|(n, _)| n).collect();
            let flows = cfg.pin.as_ref().map_or(0, |p| p.capacity);
            Some(Running::start(&dp, &names, e, flows, hz)?)
        }
        None => None,
    };
    let mut last_counters = Instant::now();
    // Where the start's time went: loading and attaching, the kernel's
    // dump (read and parsed), then adopting and the first sync.
    let ms = |d: Duration| d.as_millis() as u64;
    tracing::info!(
        routes = state.routes.len(),
        links = state.links.len(),
        stamp_clock_hz = dp.stamp_clock()?.hz,
        load_ms = ms(loaded),
        dump_ms = ms(dumped - loaded),
        sync_ms = ms(began.elapsed() - dumped),
        "initial sync done"
    );
    let started = Instant::now();
    let mut last_resync = Instant::now() - Duration::from_secs(10);
    let mut last_upkeep = Instant::now();
    let mut last_publish = Instant::now();
    let mut last_entropy = Instant::now();
    let mut entropy = Round::Idle;
    let mut last_admission = Instant::now() - ADMISSION_EVERY;
    // What `show` and `top` read beside the maps (see `status`).
    let status_dir = crate::status::dir_for(&cfg.pin_dir);
    let started_ms = crate::status::unix_ms();
    let engine_name = if cfg.engine.is_some() { "afxdp" } else { "xdp" };
    let mut last_status = Instant::now() - Duration::from_secs(1);
    let mut status_failed = false;
    loop {
        let mut phases = Phases::new();
        if last_status.elapsed() >= Duration::from_secs(1) {
            last_status = Instant::now();
            let wrote = publish_status(
                &status_dir,
                &rec,
                &state,
                &mut stats,
                started_ms,
                engine_name,
            );
            match (wrote, status_failed) {
                (Err(e), false) => {
                    tracing::warn!("the status for `show` and `top` is not written ({e:#}); forwarding is not affected");
                    status_failed = true;
                }
                (Ok(()), true) => status_failed = false,
                _ => {}
            }
            phases.mark("status");
        }
        if cfg.run_for.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        if stop_requested() {
            tracing::info!("signal received, stopping (the pinned program keeps forwarding)");
            break;
        }
        if cfg.metrics.is_some() && last_publish.elapsed() >= Duration::from_millis(500) {
            last_publish = Instant::now();
            publish(&rec, &stats);
        }
        if cfg
            .anti_entropy
            .is_some_and(|p| last_entropy.elapsed() >= p)
            && !entropy.busy()
        {
            last_entropy = Instant::now();
            // Events waiting now would make the dump newer than the mirror.
            if !mirror.has_pending() {
                entropy = Round::start(cfg.table, &mut state);
            }
        }
        let mut skipped = 0;
        match entropy.advance(&mut state, mirror.emptied(), &mut skipped) {
            Outcome::Nothing => {}
            Outcome::Faithful => stats.entropy_checks += 1,
            Outcome::Differs(diffs, fresh) => {
                stats.entropy_checks += 1;
                stats.entropy_repairs += diffs.len() as u64;
                for d in diffs.iter().take(20) {
                    tracing::warn!("anti-entropy repaired a missed change: {d}");
                }
                if diffs.len() > 20 {
                    tracing::warn!("anti-entropy: ... and {} more", diffs.len() - 20);
                }
                match fresh {
                    Some(fresh) => drop_aside(std::mem::replace(&mut state, *fresh)),
                    // Events came during the round: the dump may be older
                    // than the mirror on what they changed.
                    None => drop_aside(std::mem::replace(&mut state, mirror.resync(cfg.table)?)),
                }
                ports.follow(&state, &mut dp);
                sync(
                    &mut rec,
                    &mut state,
                    &mut dp,
                    engine.as_mut(),
                    &mut stats,
                    true,
                )?;
                publish(&rec, &stats);
            }
        }
        mirror.add_undecodable(skipped);
        phases.mark("anti-entropy");
        // A comparison goes on between polls that do not wait.
        let wait = if entropy.comparing() {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(200)
        };
        let polled = mirror.poll(&mut state, wait)?;
        // Only route events can be left out of a round's comparison.
        let beyond_routes = match polled {
            Event::Changed(c) => c.links || c.neighbours || c.nexthops || c.suspect,
            Event::Overrun => true,
            Event::Idle => false,
        };
        if beyond_routes {
            entropy.drop_round(&mut state);
        }
        phases.wait_ended(mirror.readable_at());
        phases.mark("netlink read");
        stats.undecodable = mirror.undecodable();
        // An event's latency runs from the moment it could be read.
        let woke = mirror.readable_at().unwrap_or_else(Instant::now);
        match polled {
            Event::Changed(c) if c.suspect => {
                // What the kernel may have flushed without a message is
                // read back before anything forwards through it again.
                stats.events += 1;
                stats.redumps += 1;
                state = mirror.resync(cfg.table)?;
                ports.follow(&state, &mut dp);
                sync(
                    &mut rec,
                    &mut state,
                    &mut dp,
                    engine.as_mut(),
                    &mut stats,
                    true,
                )?;
                stats.record_latency(woke.elapsed(), mirror.messages());
            }
            Event::Changed(c) if c.any() => {
                stats.events += 1;
                ports.follow(&state, &mut dp);
                sync(
                    &mut rec,
                    &mut state,
                    &mut dp,
                    engine.as_mut(),
                    &mut stats,
                    false,
                )?;
                stats.record_latency(woke.elapsed(), mirror.messages());
            }
            Event::Changed(_) => {}
            // Idle: resilient groups may have buckets that became idle.
            Event::Idle if last_upkeep.elapsed() >= Duration::from_secs(1) => {
                last_upkeep = Instant::now();
                sync(
                    &mut rec,
                    &mut state,
                    &mut dp,
                    engine.as_mut(),
                    &mut stats,
                    false,
                )?;
            }
            Event::Idle => {}
            Event::Overrun => {
                // Rate-limited: at most one full re-dump per 100 ms.
                let wait = Duration::from_millis(100).saturating_sub(last_resync.elapsed());
                std::thread::sleep(wait);
                last_resync = Instant::now();
                stats.resyncs += 1;
                tracing::warn!(
                    resyncs = stats.resyncs,
                    "netlink overrun: dumping the kernel state again"
                );
                state = mirror.resync(cfg.table)?;
                ports.follow(&state, &mut dp);
                sync(
                    &mut rec,
                    &mut state,
                    &mut dp,
                    engine.as_mut(),
                    &mut stats,
                    true,
                )?;
            }
        }
        phases.mark("sync");
        // The forwarding switches change without a message this daemon
        // follows: read again every 100 ms, and at once when links or
        // netconf changed (ports and MACs come with the mirror). Reading
        // them at every wake-up cost a sixth of the daemon's time under a
        // stream of route changes.
        let ports_changed = match polled {
            Event::Changed(c) => c.links || c.switches || c.suspect,
            Event::Overrun => true,
            Event::Idle => false,
        };
        if ports_changed || last_admission.elapsed() >= ADMISSION_EVERY {
            last_admission = Instant::now();
            admission.apply(
                &ports.attached(),
                &state,
                &mut Tee {
                    dp: &mut dp,
                    engine: engine.as_mut(),
                },
            );
        }
        if let Some(e) = engine.as_mut() {
            e.publish();
            if last_counters.elapsed() >= Duration::from_millis(200) {
                last_counters = Instant::now();
                if let Err(err) = e.store_counters(&dp) {
                    tracing::warn!("storing the AF_XDP engine's counters: {err}");
                }
            }
        }
        phases.mark("admission and engine");
        phases.report(mirror.messages());
    }
    if let Some(e) = engine {
        // The program forwards by itself again (it steers only to ports the
        // engine serves, and none are left).
        e.stop(&dp)?;
    }
    // What an ended daemon did tells nothing; the topology still names
    // what the maps hold.
    crate::status::remove_activity(&cfg.pin_dir);
    Ok(stats)
}

/// Writes the activity, and the topology when a sync changed it.
fn publish_status(
    dir: &std::path::Path,
    rec: &Reconciler,
    state: &KernelState,
    stats: &mut RunStats,
    started_ms: u64,
    engine: &str,
) -> Result<()> {
    let now = now_ms();
    if stats.topology_changed {
        crate::status::write_topology(dir, &rec.describe(state, now))?;
        stats.topology_changed = false;
    }
    let (p50, p99, _) = stats.latency_quantiles();
    crate::status::write_activity(
        dir,
        &crate::status::Activity {
            pid: std::process::id(),
            written_ms: crate::status::unix_ms(),
            started_ms,
            engine: engine.into(),
            events: stats.events,
            syncs: stats.syncs,
            redumps: stats.redumps,
            resyncs: stats.resyncs,
            entropy_checks: stats.entropy_checks,
            entropy_repairs: stats.entropy_repairs,
            last_redump_ms: stats.last_redump_ms,
            buckets_moved: stats.buckets_moved,
            buckets_moved_last_minute: stats.moves.total(now),
            latency_p50_us: p50,
            latency_p99_us: p99,
        },
    )
}
