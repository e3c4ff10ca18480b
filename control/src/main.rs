//! The `xdp-ecmp` command: the daemon (`run`), attach/detach, `show`, `calc`, `stats` and `doctor`.

mod cli;
mod doctor;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use control::config::{check_rcvbuf, parse_seed, parse_table, plain_mode, FileConfig};
use control::daemon::{run, RunConfig};
use control::{inspect, seed};
use dataplane::abi::{xe_config, xe_inport, CFG_SYMMETRIC, HASH_POLICY_L3, HASH_POLICY_L4};
use dataplane::{ifindex_of, pinned_remove_inport, pinned_verdict_counters};
use dataplane::{AttachMode, Dataplane, LoadOptions, TableWriter, XdpLink};

#[derive(Parser)]
#[command(
    name = "xdp-ecmp",
    version = cli::version::SHORT,
    about = "ECMP forwarding plane in XDP for Linux leaf/spine hosts"
)]
struct Cli {
    /// bpffs directory holding the pinned maps and links.
    #[arg(long, global = true, default_value = "/sys/fs/bpf/xdp-ecmp")]
    pin_dir: PathBuf,
    /// Directory where the hash seed is kept across reboots (default
    /// /var/lib/xdp-ecmp; `state_dir` in the config file).
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// Native (driver) XDP, generic where the driver has none.
    Auto,
    Native,
    Generic,
}

#[derive(Clone, Copy, ValueEnum)]
enum Policy {
    /// Source and destination address.
    L3,
    /// Addresses, protocol and ports.
    L4,
}

#[derive(Subcommand)]
enum ShowWhat {
    /// Routes in the dataplane and their verdict.
    Routes,
    /// ECMP groups: mode, window and members.
    Groups,
    /// Next hops: egress, neighbour MAC, state.
    Nexthops,
    /// Attached ports: the MAC frames are admitted to, the forwarding switches.
    Ports,
    /// The buckets of one group.
    Buckets { group: u32 },
    /// Packets and bytes per verdict.
    Stats,
    /// Used and limit of every table.
    Capacity,
    /// The flow table (flow pinning): fill, events, flows per next hop and
    /// the entries seen last.
    Flows {
        /// Entries to list, most recently seen first.
        #[arg(long, default_value_t = 20)]
        top: usize,
    },
}

/// `--engine`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum EngineKind {
    Xdp,
    Afxdp,
}

impl EngineKind {
    fn name(self) -> &'static str {
        match self {
            EngineKind::Xdp => "xdp",
            EngineKind::Afxdp => "afxdp",
        }
    }
}

#[derive(Args, Default)]
struct RunArgs {
    /// TOML config file (keys: ports, table, plain_groups, buckets, idle_timer, unbalanced_timer,
    /// hash_seed, hash_policy, symmetric, netlink_rcvbuf, attach_mode, metrics, state_dir,
    /// wait_for_ports, max_routes_v4, max_routes_v6, slot_pool, anti_entropy, engine,
    /// afxdp_workers, afxdp_cpus, busy_poll, pin_flows, pin_capacity, pin_tcp_timeout,
    /// pin_udp_timeout, pin_fin_timeout); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Ports to attach to.
    #[arg(long = "port", short = 'p')]
    ports: Vec<String>,
    /// Routing table to mirror (main, local, default or a number).
    #[arg(long)]
    table: Option<String>,
    /// resilient or modulo, for multipath routes and plain nexthop groups.
    #[arg(long)]
    plain_groups: Option<String>,
    #[arg(long)]
    buckets: Option<u16>,
    /// Seconds a bucket must be idle before it moves.
    #[arg(long)]
    idle_timer: Option<u64>,
    /// Seconds after which busy buckets of an unbalanced group move too (0 = never).
    #[arg(long)]
    unbalanced_timer: Option<u64>,
    /// 64-bit hash seed as hex. Without it the running program's seed
    /// is kept, else the one stored in the state directory, else a new one.
    #[arg(long, value_parser = parse_seed)]
    hash_seed: Option<u64>,
    /// Make a new random hash seed (established flows move).
    #[arg(long)]
    new_hash_seed: bool,
    #[arg(long, value_enum)]
    hash_policy: Option<Policy>,
    #[arg(long)]
    symmetric: bool,
    /// Netlink receive buffer in bytes.
    #[arg(long)]
    netlink_rcvbuf: Option<usize>,
    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given).
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// Attach configured ports that do not exist yet when they appear
    /// (otherwise a missing port is an error before anything is attached).
    #[arg(long)]
    wait_for_ports: bool,
    /// Size of the IPv4 route table (default 2,097,152; taken when the maps
    /// are made: pinned maps keep theirs, and a different size is an error).
    #[arg(long)]
    max_routes_v4: Option<u32>,
    /// Size of the IPv6 route table (default 1,048,576).
    #[arg(long)]
    max_routes_v6: Option<u32>,
    /// Slots of the pool every group's buckets are cut from (default
    /// 2,097,152: 16,384 groups of 128 buckets; 16 bytes a slot).
    #[arg(long)]
    slot_pool: Option<u32>,
    /// Compare the mirror with a fresh dump of the kernel every this many
    /// seconds and repair what differs, logging and counting it (default
    /// 300; 0 turns it off). A dump of 1M routes takes a few seconds of CPU.
    #[arg(long)]
    anti_entropy: Option<f64>,
    /// Who forwards: `xdp` (the XDP program, the default) or `afxdp` (the
    /// program hands the frames to forward between the ports to AF_XDP
    /// workers, which decide, rewrite and send; everything bound for the
    /// kernel stays in the program).
    #[arg(long, value_enum)]
    engine: Option<EngineKind>,
    /// AF_XDP workers, one per receive queue (default: the ports' queue count).
    #[arg(long)]
    afxdp_workers: Option<u32>,
    /// CPUs to pin the AF_XDP workers to, in turn (e.g. 0,1; default: not pinned).
    #[arg(long, value_delimiter = ',')]
    afxdp_cpus: Vec<usize>,
    /// AF_XDP workers spin on empty rings instead of sleeping (a CPU each).
    #[arg(long)]
    busy_poll: bool,
    /// Pin flows to routes inside these prefixes (comma-separated, or
    /// `all`): each flow keeps the next hop it was first sent to through
    /// bucket moves, weight and group changes, until that next hop dies or
    /// leaves the route's group.
    #[arg(long, value_delimiter = ',')]
    pin_flows: Vec<String>,
    /// Flows the flow table holds (default 1,048,576, ~100 bytes each; the
    /// least recently used give way to new ones).
    #[arg(long)]
    pin_capacity: Option<u32>,
    /// Seconds a pinned TCP flow outlives its last packet (default 0: until
    /// its FIN or RST, or until evicted).
    #[arg(long)]
    pin_tcp_timeout: Option<u64>,
    /// Seconds a pinned UDP (or other) flow outlives its last packet (default 120).
    #[arg(long)]
    pin_udp_timeout: Option<u64>,
    /// Seconds a pinned TCP flow outlives its FIN (default 10).
    #[arg(long)]
    pin_fin_timeout: Option<u64>,
    /// Exit after this many seconds (for tests).
    #[arg(long, hide = true)]
    run_for: Option<f64>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon: attach, mirror the kernel's routes/nexthops/neighbours/links, keep the maps in step.
    Run(Box<RunArgs>),
    /// Show what the dataplane holds.
    Show {
        #[command(subcommand)]
        what: ShowWhat,
        #[arg(long, global = true)]
        json: bool,
    },
    /// Which port a flow takes, asked of the loaded program itself (cl-ecmpcalc's flags).
    Calc {
        /// udp, tcp, icmp, icmpv6 or a protocol number.
        #[arg(short = 'p', long = "proto", default_value = "udp")]
        proto: String,
        #[arg(short = 's', long = "src")]
        src: Option<IpAddr>,
        #[arg(short = 'd', long = "dst")]
        dst: Option<IpAddr>,
        #[arg(long, default_value_t = 0)]
        sport: u16,
        #[arg(long, default_value_t = 0)]
        dport: u16,
        /// Ingress port: the packet is asked about as received there, to its
        /// MAC (default: the attached port with the lowest ifindex).
        #[arg(short = 'i', long = "in-port")]
        in_port: Option<String>,
        /// Answer for this hash seed instead of the running one (hex).
        #[arg(long, value_parser = parse_seed)]
        hash_seed: Option<u64>,
        /// Every packet of a pcap file instead of one built flow.
        #[arg(long)]
        pcap: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Load the program (adopting maps pinned earlier) and attach it to
    /// ports, admitting frames to each port's MAC with its forwarding
    /// switches as they are now (only `run` keeps them up to date).
    Attach {
        /// Interfaces to attach to.
        #[arg(required = true)]
        ports: Vec<String>,
        #[arg(long, value_enum, default_value = "auto")]
        mode: Mode,
        /// 64-bit hash seed as hex. Without it the pinned program's seed is
        /// kept, else the one stored in the state directory, else a new one.
        #[arg(long, value_parser = parse_seed)]
        hash_seed: Option<u64>,
        #[arg(long, value_enum, default_value = "l4")]
        hash_policy: Policy,
        /// Hash both directions of a flow alike.
        #[arg(long)]
        symmetric: bool,
    },
    /// Detach the program from ports.
    Detach {
        #[arg(required = true)]
        ports: Vec<String>,
    },
    /// Packets and bytes per verdict.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Empty the flow table (flow pinning), or drop the flows to PREFIX:
    /// their next packets are hashed again and pinned anew. The AF_XDP
    /// engine's own tables are not reached (they end with the daemon).
    FlushFlows {
        /// Only flows whose destination is inside this prefix.
        prefix: Option<String>,
    },
    /// Check this host before a first start: kernel, bpffs and pins,
    /// memlock, the program, the ports (XDP modes, drivers), the forwarding
    /// and multipath-hash sysctls, the config file, FRR's nexthop groups and
    /// multipath settings. One finding per line (ok, warn, fail) with what
    /// to change; exits 1 when any check fails.
    Doctor {
        /// Ports to check (default: `ports` of the config file).
        ports: Vec<String>,
        /// The config file `run` will read (default
        /// /etc/xdp-ecmp/xdp-ecmp.toml, when it exists).
        #[arg(long)]
        config: Option<PathBuf>,
        /// FRR's configuration, checked when FRR is installed.
        #[arg(long, default_value = doctor::DEFAULT_FRR_CONF)]
        frr_conf: PathBuf,
    },
}

/// The config file the unit gives `run`.
const DEFAULT_CONFIG: &str = "/etc/xdp-ecmp/xdp-ecmp.toml";

fn link_path(pin_dir: &Path, port: &str) -> PathBuf {
    pin_dir.join(format!("link_{port}"))
}

fn attach(
    cli: &Cli,
    ports: &[String],
    mode: Mode,
    seed: Option<u64>,
    policy: Policy,
    symmetric: bool,
) -> Result<()> {
    // Resolve every port (ifindex and MAC) before touching anything.
    let ifindexes: Vec<(u32, [u8; 6])> = ports
        .iter()
        .map(|p| {
            let ifindex = ifindex_of(p).with_context(|| format!("port {p}"))?;
            Ok((ifindex, inspect::link_mac(p)?))
        })
        .collect::<Result<_>>()?;
    for p in ports {
        if link_path(&cli.pin_dir, p).exists() {
            bail!(
                "port {p} is already attached (pinned link {}); run `xdp-ecmp detach {p}` first",
                link_path(&cli.pin_dir, p).display()
            );
        }
    }
    // A running daemon owns these maps (and its chunk and id allocators).
    let _lock = dataplane::pins::WriterLock::acquire(&cli.pin_dir)?;
    let had_pins = cli.pin_dir.join("xe_config").exists();
    let mut dp = Dataplane::load(&LoadOptions {
        pin_dir: Some(cli.pin_dir.clone()),
        ..Default::default()
    })?;
    // Pinned maps may hold routes: the lookup tables must agree before attaching.
    dp.adopt_lookup_tables()?;
    // Redirected frames the kernel cannot send are counted, never as forwarded.
    if let Err(e) = dp.count_tx_failures(&cli.pin_dir) {
        tracing::warn!("redirect failures will not be counted (the xdp_redirect_err tracepoint could not be attached: {e}); `forward` then includes frames the kernel refused after the redirect");
    }
    let pinned = had_pins.then(|| dp.config()).transpose()?;
    let seed = seed::settle(
        seed,
        false,
        pinned.as_ref(),
        &seed::StateDir(state_dir(cli, None)),
    )?;
    dp.set_config(&xe_config {
        seed: seed::words(seed),
        hash_fields: policy_fields(policy),
        flags: if symmetric { CFG_SYMMETRIC } else { 0 },
        ..Default::default()
    })?;
    let mode = match mode {
        Mode::Auto => AttachMode::Auto,
        Mode::Native => AttachMode::Native,
        Mode::Generic => AttachMode::Generic,
    };
    for (port, (ifindex, mac)) in ports.iter().zip(ifindexes) {
        dp.add_txport(ifindex)
            .with_context(|| format!("adding port {port} to the redirect map"))?;
        dp.set_inport(
            ifindex,
            &xe_inport {
                mac,
                flags: control::forwarding::flags_now(port),
                ..Default::default()
            },
        )
        .with_context(|| format!("admitting frames received on {port}"))?;
        let link = dp
            .attach(ifindex, mode)
            .with_context(|| format!("port {port}"))?;
        link.pin(&link_path(&cli.pin_dir, port))?;
        println!("{port}: attached ({} XDP), ifindex {ifindex}", link.mode);
    }
    Ok(())
}

fn detach(cli: &Cli, ports: &[String]) -> Result<()> {
    for port in ports {
        let path = link_path(&cli.pin_dir, port);
        if !path.exists() {
            bail!(
                "port {port} is not attached by xdp-ecmp (no pinned link at {})",
                path.display()
            );
        }
        let link = XdpLink::open_pinned(&path, 0)?;
        let ifindex = link.attached_ifindex()?;
        std::fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
        link.detach().with_context(|| format!("port {port}"))?;
        if let Some(i) = ifindex {
            pinned_remove_inport(&cli.pin_dir, i)
                .with_context(|| format!("removing {port}'s ingress port entry"))?;
        }
        println!("{port}: detached");
    }
    Ok(())
}

fn stats(cli: &Cli, json: bool) -> Result<()> {
    let counters = pinned_verdict_counters(&cli.pin_dir)?;
    let failed = dataplane::txfail::pinned_tx_failures(&cli.pin_dir)?;
    // The AF_XDP engine's share (in the totals above), where it counted any.
    let engine: Vec<_> = dataplane::pinned_engine_counters(&cli.pin_dir)?
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, c)| c.packets != 0)
        .collect();
    // Flow pinning's table, where one is pinned (maps of this layout).
    let flows = dataplane::flows::PinnedFlows::open(&cli.pin_dir)
        .and_then(|f| f.stats())
        .ok();
    if json {
        let mut v: Vec<_> = counters
            .iter()
            .map(|(v, c)| serde_json::json!({"verdict": v.name(), "packets": c.packets, "bytes": c.bytes}))
            .collect();
        // Redirected, then refused by the kernel: not in `forward`.
        v.push(serde_json::json!({"tx_refused": true, "packets": failed}));
        for (verdict, c) in &engine {
            v.push(serde_json::json!({"engine": "afxdp", "verdict": verdict.name(), "packets": c.packets, "bytes": c.bytes}));
        }
        if let Some(f) = &flows {
            let events: serde_json::Map<String, serde_json::Value> = f
                .events
                .iter()
                .map(|(e, n)| (e.name().to_string(), (*n).into()))
                .collect();
            v.push(serde_json::json!({"flow_table": {"entries": f.entries, "entries_ipv4": f.entries_v4, "entries_ipv6": f.entries_v6, "capacity_per_family": f.capacity, "evicted": f.evicted(), "events": events}}));
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{:<20} {:>14} {:>16}", "verdict", "packets", "bytes");
        for (v, c) in counters {
            println!("{:<20} {:>14} {:>16}", v.name(), c.packets, c.bytes);
        }
        // Redirected, then refused by the kernel: not in `forward`.
        println!("{:<20} {:>14} {:>16}", "tx-refused", failed, "-");
        for (v, c) in &engine {
            let row = format!("  afxdp {}", v.name());
            println!("{row:<20} {:>14} {:>16}", c.packets, c.bytes);
        }
        if let Some(f) = &flows {
            println!(
                "flow tables: IPv4 {} and IPv6 {} of {} entries each, evicted {}",
                f.entries_v4,
                f.entries_v6,
                f.capacity,
                f.evicted()
            );
            for (e, n) in &f.events {
                println!("  {:<18} {:>14}", e.name(), n);
            }
        }
    }
    Ok(())
}

/// The map sizes asked for, if any: each one not given is the default.
fn map_sizes(
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
fn state_dir(cli: &Cli, file: Option<&Path>) -> PathBuf {
    cli.state_dir
        .as_deref()
        .or(file)
        .unwrap_or(seed::default_state_dir())
        .to_owned()
}

fn policy_fields(p: Policy) -> u32 {
    match p {
        Policy::L3 => HASH_POLICY_L3,
        Policy::L4 => HASH_POLICY_L4,
    }
}

fn run_cmd(cli: &Cli, args: &RunArgs) -> Result<()> {
    let stats = run(&run_config(cli, args)?)?;
    let (p50, p99, p999) = stats.latency_quantiles();
    tracing::info!(
        syncs = stats.syncs,
        resyncs = stats.resyncs,
        events = stats.events,
        latency_p50_us = p50,
        latency_p99_us = p99,
        latency_p999_us = p999,
        "stopped"
    );
    Ok(())
}

/// What `run` does with its flags and config file, checked.
fn run_config(cli: &Cli, args: &RunArgs) -> Result<RunConfig> {
    let RunArgs {
        config,
        ports,
        table,
        plain_groups,
        buckets,
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
    let mode = plain_mode(
        plain_groups
            .as_deref()
            .or(file.plain_groups.as_deref())
            .unwrap_or("resilient"),
        buckets.or(file.buckets).unwrap_or(128),
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
fn doctor_cmd(cli: &Cli, ports: &[String], config: Option<&Path>, frr_conf: &Path) -> Result<()> {
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
    let passed = doctor::run(&doctor::Options {
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

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn show(cli: &Cli, what: &ShowWhat, json: bool) -> Result<()> {
    if let ShowWhat::Stats = what {
        return stats(cli, json);
    }
    let dp = inspect::open(&cli.pin_dir)?;
    match what {
        ShowWhat::Routes => {
            let rows = inspect::routes(&dp)?;
            if json {
                return print_json(&rows);
            }
            for r in rows {
                let pinned = if r.pinned { " pinned" } else { "" };
                match r.group {
                    Some(g) => println!("{} group {g}{pinned}", r.prefix),
                    None => println!("{} {}", r.prefix, r.kind),
                }
            }
        }
        ShowWhat::Groups => {
            let rows = inspect::groups(&dp)?;
            if json {
                return print_json(&rows);
            }
            for g in rows {
                let members: Vec<String> = g
                    .members
                    .iter()
                    .map(|(nh, n)| format!("{nh}/{n}"))
                    .collect();
                println!(
                    "group {} {} size {} slots {}..{} members {}",
                    g.id,
                    g.mode,
                    g.size,
                    g.base,
                    g.base + u32::from(g.size),
                    members.join(" ")
                );
            }
        }
        ShowWhat::Nexthops => {
            let rows = inspect::nexthops(&dp)?;
            if json {
                return print_json(&rows);
            }
            for n in rows {
                println!(
                    "id {} dev {} lladdr {} mtu {} {}",
                    n.id,
                    n.dev,
                    n.lladdr,
                    n.mtu,
                    n.state.join(",")
                );
            }
        }
        ShowWhat::Ports => {
            let rows = inspect::ports(&dp)?;
            if json {
                return print_json(&rows);
            }
            let on = |b: bool| if b { "on" } else { "off" };
            for p in rows {
                println!(
                    "{} ifindex {} mac {} ipv4-forwarding {} ipv6-forwarding {} ipv4-rp-filter {}",
                    p.dev,
                    p.ifindex,
                    p.mac,
                    on(p.ipv4_forwarding),
                    on(p.ipv6_forwarding),
                    on(p.ipv4_rp_filter)
                );
            }
        }
        ShowWhat::Buckets { group } => {
            let rows = inspect::buckets(&dp, *group)?;
            if json {
                return print_json(&rows);
            }
            for b in rows {
                println!(
                    "id {group} index {} nhid {} dev {} used {}",
                    b.index, b.nexthop, b.dev, b.last_used_tick
                );
            }
        }
        ShowWhat::Capacity => {
            let rows = dp.capacity()?;
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "table": r.table, "used": r.used, "limit": r.limit, "note": r.note,
                        })
                    })
                    .collect();
                return print_json(&v);
            }
            println!(
                "{:<22} {:>10} {:>10} {:>6}  what fills it",
                "table", "used", "limit", "use"
            );
            for r in rows {
                println!(
                    "{:<22} {:>10} {:>10} {:>5.1}%  {}",
                    r.table,
                    r.used,
                    r.limit,
                    100.0 * r.used as f64 / r.limit.max(1) as f64,
                    r.note
                );
            }
        }
        ShowWhat::Flows { top } => {
            let mut dp = dp;
            let clock = dp.stamp_clock()?;
            let s = control::flows::summary(&dp, *top, clock.jiffies, clock.hz)?;
            if json {
                return print_json(&s);
            }
            control::flows::print(&s);
        }
        ShowWhat::Stats => unreachable!(),
    }
    Ok(())
}

fn proto_number(p: &str) -> Result<u8> {
    Ok(match p {
        "udp" => 17,
        "tcp" => 6,
        "icmp" => 1,
        "icmpv6" => 58,
        n => n.parse().with_context(|| {
            format!("protocol {n:?}: expected udp, tcp, icmp, icmpv6 or a number")
        })?,
    })
}

#[allow(clippy::too_many_arguments)]
fn calc(
    cli: &Cli,
    proto: &str,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    sport: u16,
    dport: u16,
    in_port: Option<&str>,
    hash_seed: Option<u64>,
    pcap: Option<&Path>,
    json: bool,
) -> Result<()> {
    let dp = inspect::open(&cli.pin_dir)?;
    // Asked as received on a port, addressed to its MAC.
    let (port, ifindex, port_mac) = inspect::ingress(&dp, in_port)?;
    if let Some(seed) = hash_seed {
        let mut cfg = dp.config()?;
        cfg.seed = [seed as u32, (seed >> 32) as u32];
        // The answer for another seed comes from a private copy of the
        // program whose config map is its own; the routes are shared.
        let (Some(s), Some(d)) = (src, dst) else {
            bail!("calc needs -s SRC and -d DST")
        };
        let frame = flow_frame(proto, s, d, sport, dport, port_mac)?;
        return calc_with_seed(&dp, cfg, ifindex, &frame, json);
    }
    let frames = match pcap {
        Some(p) => inspect::pcap_frames(p)?,
        None => {
            let (Some(s), Some(d)) = (src, dst) else {
                bail!("calc needs -s SRC and -d DST (or --pcap FILE)")
            };
            vec![flow_frame(proto, s, d, sport, dport, port_mac)?]
        }
    };
    if !json && dp.inports()?.iter().all(|(i, _)| *i != ifindex) {
        eprintln!("note: {port} is not attached (no ingress port entry): the program passes what it receives there to the kernel");
    }
    for (i, f) in frames.iter().enumerate() {
        let a = inspect::ask(&dp, ifindex, f)?;
        if json {
            println!("{}", serde_json::to_string(&a)?);
        } else if pcap.is_some() {
            println!(
                "{i}: {} egress {} nexthop {} group {} bucket {}",
                a.verdict,
                a.egress.as_deref().unwrap_or("-"),
                a.nexthop.map_or("-".into(), |n| n.to_string()),
                a.group.map_or("-".into(), |n| n.to_string()),
                a.bucket.map_or("-".into(), |n| n.to_string())
            );
        } else {
            match &a.egress {
                Some(e) => {
                    println!("{e}");
                    println!(
                        "  nexthop {} lladdr {} group {} bucket {} hash {}",
                        a.nexthop.unwrap_or(0),
                        a.lladdr.as_deref().unwrap_or("-"),
                        a.group.unwrap_or(0),
                        a.bucket.map_or("-".into(), |n| n.to_string()),
                        a.hash
                    );
                    if let Some(p) = &a.pin {
                        println!("  {p}");
                    }
                }
                None => println!(
                    "not forwarded: {} (group {} bucket {} nexthop {})",
                    a.verdict,
                    a.group.map_or("-".into(), |n| n.to_string()),
                    a.bucket.map_or("-".into(), |n| n.to_string()),
                    a.nexthop.map_or("-".into(), |n| n.to_string())
                ),
            }
        }
    }
    Ok(())
}

/// Asks a private copy of the program, with the tables of `shared` and
/// the config `cfg`, about `frame` received on `ifindex`.
fn calc_with_seed(
    shared: &Dataplane,
    cfg: xe_config,
    ifindex: u32,
    frame: &[u8],
    json: bool,
) -> Result<()> {
    let mut private = Dataplane::load(&LoadOptions {
        trace_decisions: true,
        ..Default::default()
    })?;
    copy_tables(shared, &mut private)?;
    private.set_config(&cfg)?;
    let a = inspect::ask(&private, ifindex, frame)?;
    if json {
        println!("{}", serde_json::to_string(&a)?);
    } else {
        println!(
            "{}",
            a.egress
                .as_deref()
                .unwrap_or(&format!("not forwarded: {}", a.verdict))
        );
    }
    Ok(())
}

/// Copies routes, groups, slots, next hops and ports (egress and ingress)
/// from the pinned maps into a private program.
fn copy_tables(from: &Dataplane, to: &mut Dataplane) -> Result<()> {
    for (ifindex, p) in from.inports()? {
        to.set_inport(ifindex, &p)?;
    }
    for (a, l, r) in from.routes_v4()? {
        to.set_route_v4(a, l, &r)?;
    }
    for (a, l, r) in from.routes_v6()? {
        to.set_route_v6(a, l, &r)?;
    }
    for g in inspect::groups(from)? {
        let gr = from.group(g.id)?;
        let slots = from.slots(gr.base, u32::from(gr.size))?;
        to.set_slots(gr.base, &slots)?;
        to.set_group(g.id, &gr)?;
        for nh in slots.iter().filter(|n| **n != 0) {
            let n = from.nexthop(*nh)?;
            to.set_nexthop(*nh, &n)?;
            let _ = to.add_txport(n.ifindex);
        }
    }
    Ok(())
}

/// The frame calc asks about: the flow, addressed to the ingress port's MAC.
fn flow_frame(
    proto: &str,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    dst_mac: [u8; 6],
) -> Result<Vec<u8>> {
    let flow = inspect::Flow {
        proto: proto_number(proto)?,
        src,
        dst,
        sport,
        dport,
    };
    inspect::build_frame(&flow, dst_mac)
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if cli::assets::asked() {
        return cli::assets::run(Cli::command());
    }
    // The long version probes the kernel: only when it is asked for.
    let mut command = Cli::command();
    if std::env::args_os().any(|a| a == "--version") {
        command = command.long_version(String::leak(cli::version::long()) as &str);
    }
    let cli = Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
    if !matches!(cli.cmd, Cmd::Run(_)) {
        // A listing piped into `head` ends quietly when the reader goes,
        // as other tools' do (Rust ignores SIGPIPE and println! panics).
        // SAFETY: restores the default disposition; no handler runs.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match &cli.cmd {
        Cmd::Run(args) => run_cmd(&cli, args),
        Cmd::Show { what, json } => show(&cli, what, *json),
        Cmd::Calc {
            proto,
            src,
            dst,
            sport,
            dport,
            in_port,
            hash_seed,
            pcap,
            json,
        } => calc(
            &cli,
            proto,
            *src,
            *dst,
            *sport,
            *dport,
            in_port.as_deref(),
            *hash_seed,
            pcap.as_deref(),
            *json,
        ),
        Cmd::Attach {
            ports,
            mode,
            hash_seed,
            hash_policy,
            symmetric,
        } => attach(&cli, ports, *mode, *hash_seed, *hash_policy, *symmetric),
        Cmd::Detach { ports } => detach(&cli, ports),
        Cmd::Stats { json } => stats(&cli, *json),
        Cmd::FlushFlows { prefix } => {
            let within = prefix
                .as_deref()
                .map(control::config::parse_prefix)
                .transpose()?;
            let dp = inspect::open(&cli.pin_dir)?;
            let n = control::flows::flush(&dp, within)?;
            println!("flushed {n} flows");
            Ok(())
        }
        Cmd::Doctor {
            ports,
            config,
            frr_conf,
        } => doctor_cmd(&cli, ports, config.as_deref(), frr_conf),
    }
}
