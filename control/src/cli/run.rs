//! `run` and `doctor`: the daemon's configuration from its flags and config file, checked the same way for both.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use control::config::{check_rcvbuf, parse_seed, parse_table, plain_mode, FileConfig};
use control::daemon::{run, RunConfig};
use control::seed;
use dataplane::abi::{xe_config, CFG_SYMMETRIC, HASH_POLICY_L3, HASH_POLICY_L4};
use dataplane::AttachMode;

use super::args::{Cli, EngineKind, Policy, RunArgs, DEFAULT_CONFIG};

/// The map sizes asked for, if any: each one not given is the default.
pub(crate) fn map_sizes(
    routes_v4: Option<u32>,
    routes_v6: Option<u32>,
    slots: Option<u32>,
) -> Result<Option<dataplane::MapSizes>> {
    if routes_v4.is_none() && routes_v6.is_none() && slots.is_none() {
        return Ok(None);
    }
    let d = dataplane::MapSizes::default();
    let s = dataplane::MapSizes {
        routes_v4: routes_v4.unwrap_or(d.routes_v4),
        routes_v6: routes_v6.unwrap_or(d.routes_v6),
        slots: slots.unwrap_or(d.slots),
        flows: d.flows,
    };
    s.check()?;
    Ok(Some(s))
}

/// The state directory: the flag, else the config file's, else the default.
pub(crate) fn state_dir(cli: &Cli, file: Option<&Path>) -> PathBuf {
    cli.state_dir
        .as_deref()
        .or(file)
        .unwrap_or(seed::default_state_dir())
        .to_owned()
}

pub(crate) fn policy_fields(p: Policy) -> u32 {
    match p {
        Policy::L3 => HASH_POLICY_L3,
        Policy::L4 => HASH_POLICY_L4,
    }
}

pub(crate) fn run_cmd(cli: &Cli, args: &RunArgs) -> Result<()> {
    let stats = run(&run_config(cli, args)?)?;
    let (p50, p99, p999) = stats.latency_quantiles();
    let (c50, c99, c999) = stats.change_latency_quantiles();
    tracing::info!(
        syncs = stats.syncs,
        resyncs = stats.resyncs,
        events = stats.events,
        latency_p50_us = p50,
        latency_p99_us = p99,
        latency_p999_us = p999,
        changes = stats.change_latency_us.len(),
        change_p50_us = c50,
        change_p99_us = c99,
        change_p999_us = c999,
        entropy_checks = stats.entropy_checks,
        entropy_repairs = stats.entropy_repairs,
        "stopped"
    );
    Ok(())
}

/// What `run` does with its flags and config file, checked.
pub(crate) fn run_config(cli: &Cli, args: &RunArgs) -> Result<RunConfig> {
    let RunArgs {
        config,
        ports,
        table,
        plain_groups,
        buckets,
        max_buckets,
        idle_timer,
        unbalanced_timer,
        hash_seed,
        new_hash_seed,
        hash_policy,
        symmetric,
        netlink_rcvbuf,
        metrics,
        wait_for_ports,
        max_routes_v4,
        max_routes_v6,
        slot_pool,
        anti_entropy,
        engine,
        afxdp_workers,
        afxdp_cpus,
        busy_poll,
        pin_flows,
        pin_capacity,
        pin_tcp_timeout,
        pin_udp_timeout,
        pin_fin_timeout,
        run_for,
    } = args;
    let file = match config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let ports = if ports.is_empty() {
        file.ports.clone().unwrap_or_default()
    } else {
        ports.to_vec()
    };
    if ports.is_empty() {
        bail!("no ports: give --port IFACE (repeatable) or `ports = [...]` in the config file");
    }
    let table = parse_table(table.as_deref().or(file.table.as_deref()).unwrap_or("main"))?;
    let (least, most) = bucket_counts(buckets.or(file.buckets), max_buckets.or(file.max_buckets))?;
    let mode = plain_mode(
        plain_groups
            .as_deref()
            .or(file.plain_groups.as_deref())
            .unwrap_or("resilient"),
        least,
        most,
        idle_timer.or(file.idle_timer).unwrap_or(120),
        unbalanced_timer.or(file.unbalanced_timer).unwrap_or(0),
    )?;
    let seed = match (*hash_seed, &file.hash_seed) {
        (Some(s), _) => Some(s),
        (None, Some(s)) => Some(parse_seed(s).map_err(|e| anyhow::anyhow!("hash_seed: {e}"))?),
        (None, None) => None,
    };
    let policy = match (*hash_policy, file.hash_policy.as_deref()) {
        (Some(p), _) => p,
        (None, Some("l3")) => Policy::L3,
        (None, Some("l4") | None) => Policy::L4,
        (None, Some(other)) => bail!("hash_policy = {other:?}: expected \"l3\" or \"l4\""),
    };
    let attach = match file.attach_mode.as_deref().unwrap_or("auto") {
        "auto" => AttachMode::Auto,
        "native" => AttachMode::Native,
        "generic" => AttachMode::Generic,
        other => bail!("attach_mode = {other:?}: expected auto, native or generic"),
    };
    let cfg = RunConfig {
        ports,
        pin_dir: cli.pin_dir.clone(),
        table,
        mode,
        attach,
        hash_seed: seed,
        new_hash_seed: *new_hash_seed,
        state_dir: state_dir(cli, file.state_dir.as_deref()),
        config: xe_config {
            seed: [0; 2],
            hash_fields: policy_fields(policy),
            flags: if *symmetric || file.symmetric == Some(true) {
                CFG_SYMMETRIC
            } else {
                0
            },
            ..Default::default()
        },
        rcvbuf: check_rcvbuf(netlink_rcvbuf.or(file.netlink_rcvbuf).unwrap_or(8 << 20))?,
        run_for: run_for.map(Duration::from_secs_f64),
        metrics: metrics.or(file.metrics),
        wait_for_ports: *wait_for_ports || file.wait_for_ports == Some(true),
        sizes: map_sizes(
            max_routes_v4.or(file.max_routes_v4),
            max_routes_v6.or(file.max_routes_v6),
            slot_pool.or(file.slot_pool),
        )?,
        anti_entropy: control::config::anti_entropy_period(anti_entropy.or(file.anti_entropy))?,
        engine: control::config::engine(
            engine.map(EngineKind::name).or(file.engine.as_deref()),
            afxdp_workers.or(file.afxdp_workers),
            if afxdp_cpus.is_empty() {
                file.afxdp_cpus.clone().unwrap_or_default()
            } else {
                afxdp_cpus.clone()
            },
            *busy_poll || file.busy_poll == Some(true),
        )?,
        pin: control::config::pin_config(
            if pin_flows.is_empty() {
                file.pin_flows.as_deref().unwrap_or_default()
            } else {
                pin_flows
            },
            pin_capacity.or(file.pin_capacity),
            pin_tcp_timeout.or(file.pin_tcp_timeout),
            pin_udp_timeout.or(file.pin_udp_timeout),
            pin_fin_timeout.or(file.pin_fin_timeout),
        )?,
    };
    Ok(cfg)
}

/// `xdp-ecmp doctor`: exits 1 when a check fails.
pub(crate) fn doctor_cmd(
    cli: &Cli,
    ports: &[String],
    config: Option<&Path>,
    frr_conf: &Path,
) -> Result<()> {
    let config = match config {
        Some(p) => Some(p.to_owned()),
        None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
    };
    let checked = config.map(|path| {
        let args = RunArgs {
            config: Some(path.clone()),
            ports: ports.to_vec(),
            ..Default::default()
        };
        let r = if path.exists() {
            run_config(cli, &args)
        } else {
            Err(anyhow::anyhow!(
                "no such file: give the path of the config file `xdp-ecmp run --config` reads"
            ))
        };
        (path, r)
    });
    let passed = crate::doctor::run(&crate::doctor::Options {
        ports: ports.to_vec(),
        config: checked,
        pin_dir: cli.pin_dir.clone(),
        frr_conf: frr_conf.to_owned(),
        zebra: PathBuf::from("/usr/lib/frr/zebra"),
        sysctl_root: PathBuf::from("/proc/sys/net"),
    })?;
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}

/// (a new table's least buckets, its most): `buckets` fixes both; without
/// it, 128 up to `max_buckets` (default 4,096) where weights need more.
fn bucket_counts(buckets: Option<u16>, max_buckets: Option<u16>) -> Result<(u16, u16)> {
    match (buckets, max_buckets) {
        (Some(n), None) => Ok((n, n)),
        (Some(_), Some(_)) => bail!(
            "buckets and max_buckets both given: buckets fixes every table's count; give max_buckets alone to bound the count chosen by weight"
        ),
        (None, m) => Ok((128, m.unwrap_or(4096))),
    }
}
