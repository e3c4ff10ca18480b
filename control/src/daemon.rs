//! `xdp-ecmp run`: load and attach, mirror the kernel over netlink, keep the maps reconciled, re-dump after an overrun.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dataplane::abi::xe_config;
use dataplane::loader::ifindex_of;
use dataplane::{AttachMode, Dataplane, LoadOptions, TableWriter, XdpLink};

use crate::mirror::{Event, Mirror};
use crate::reconcile::Reconciler;
use crate::state::KernelState;
use crate::translate::PlainGroupMode;

/// Everything `run` needs, from flags or the config file.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub ports: Vec<String>,
    pub pin_dir: PathBuf,
    pub table: u32,
    pub mode: PlainGroupMode,
    pub attach: AttachMode,
    pub config: xe_config,
    pub rcvbuf: usize,
    /// Stop after this long (tests); None runs until killed.
    pub run_for: Option<Duration>,
}

/// Monotonic time in ms, the clock the program's coarse stamps come from.
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// A slot's last use in ms of `now_ms`'s clock, from the program's 2^20 ns ticks.
pub fn stamp_to_ms(tick: u32, now_ms: u64) -> Option<u64> {
    if tick == 0 {
        return None;
    }
    let now_tick = ((now_ms * 1_000_000) >> 20) as u32;
    let age_ms = (u64::from(now_tick.wrapping_sub(tick)) << 20) / 1_000_000;
    Some(now_ms.saturating_sub(age_ms))
}

/// Statistics the daemon keeps.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunStats {
    pub syncs: u64,
    pub resyncs: u64,
    pub events: u64,
}

/// Attaches to every port (adopting a pinned link by replacing its program).
fn attach_ports(dp: &mut Dataplane, cfg: &RunConfig) -> Result<Vec<XdpLink>> {
    let mut links = Vec::new();
    for port in &cfg.ports {
        let ifindex = ifindex_of(port).with_context(|| format!("port {port}"))?;
        dp.add_txport(ifindex)
            .with_context(|| format!("adding port {port} to the redirect map"))?;
        let pin = cfg.pin_dir.join(format!("link_{port}"));
        let link = if pin.exists() {
            let l = XdpLink::open_pinned(&pin, ifindex)?;
            l.update_program(dp)
                .with_context(|| format!("replacing the program on {port}"))?;
            tracing::info!(port, "adopted pinned XDP link, program replaced");
            l
        } else {
            let l = dp
                .attach(ifindex, cfg.attach)
                .with_context(|| format!("port {port}"))?;
            l.pin(&pin)?;
            tracing::info!(port, mode = l.mode, "attached");
            l
        };
        links.push(link);
    }
    Ok(links)
}

/// Runs the daemon until `run_for` elapses (or forever).
pub fn run(cfg: &RunConfig) -> Result<RunStats> {
    let mut dp = Dataplane::load(&LoadOptions {
        pin_dir: Some(cfg.pin_dir.clone()),
        ..Default::default()
    })?;
    dp.set_config(&cfg.config)?;
    let _links = attach_ports(&mut dp, cfg)?;
    let mut mirror = Mirror::open(cfg.rcvbuf)?;
    let mut state = KernelState::new(cfg.table);
    mirror.dump(&mut state)?;
    let mut rec = Reconciler::new(cfg.mode);
    let mut stats = RunStats::default();
    let stamps = dp.stamp_reader()?;
    let sync = |rec: &mut Reconciler,
                state: &KernelState,
                dp: &mut Dataplane,
                stats: &mut RunStats|
     -> Result<()> {
        let now = now_ms();
        let last_used = |slot: u32| stamp_to_ms(stamps.get(slot), now);
        let st = rec.sync(state, dp, now, &last_used)?;
        stats.syncs += 1;
        tracing::debug!(?st, "synced");
        Ok(())
    };
    sync(&mut rec, &state, &mut dp, &mut stats)?;
    tracing::info!(
        routes = state.routes.len(),
        links = state.links.len(),
        "initial sync done"
    );
    let started = Instant::now();
    let mut last_resync = Instant::now() - Duration::from_secs(10);
    loop {
        if cfg.run_for.is_some_and(|d| started.elapsed() >= d) {
            return Ok(stats);
        }
        match mirror.poll(&mut state, Duration::from_millis(200))? {
            Event::Changed(c) if c.any() => {
                stats.events += 1;
                sync(&mut rec, &state, &mut dp, &mut stats)?;
            }
            Event::Changed(_) => {}
            Event::Idle => sync(&mut rec, &state, &mut dp, &mut stats)?,
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
                let mut fresh = KernelState::new(cfg.table);
                mirror.dump(&mut fresh)?;
                state = fresh;
                sync(&mut rec, &state, &mut dp, &mut stats)?;
            }
        }
    }
}
