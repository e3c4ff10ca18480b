//! The `xdp-ecmp` command: attach the forwarding plane to ports, detach it, and read its counters.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use dataplane::abi::{xe_config, CFG_SYMMETRIC, HASH_POLICY_L3, HASH_POLICY_L4};
use dataplane::loader::{ifindex_of, pinned_verdict_counters};
use dataplane::{AttachMode, Dataplane, LoadOptions, TableWriter, XdpLink};

#[derive(Parser)]
#[command(
    name = "xdp-ecmp",
    version,
    about = "ECMP forwarding plane in XDP for Linux leaf/spine hosts"
)]
struct Cli {
    /// bpffs directory holding the pinned maps and links.
    #[arg(long, global = true, default_value = "/sys/fs/bpf/xdp-ecmp")]
    pin_dir: PathBuf,
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
enum Cmd {
    /// Load the program (adopting maps pinned earlier) and attach it to ports.
    Attach {
        /// Interfaces to attach to.
        #[arg(required = true)]
        ports: Vec<String>,
        #[arg(long, value_enum, default_value = "auto")]
        mode: Mode,
        /// 64-bit hash seed as hex; random when not given.
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
}

fn parse_seed(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .map_err(|e| format!("hash seed {s:?} is not a 64-bit hex number: {e}"))
}

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
    // Resolve every port before touching anything.
    let ifindexes: Vec<u32> = ports
        .iter()
        .map(|p| ifindex_of(p).with_context(|| format!("port {p}")))
        .collect::<Result<_>>()?;
    for p in ports {
        if link_path(&cli.pin_dir, p).exists() {
            bail!(
                "port {p} is already attached (pinned link {}); run `xdp-ecmp detach {p}` first",
                link_path(&cli.pin_dir, p).display()
            );
        }
    }
    let mut dp = Dataplane::load(&LoadOptions {
        pin_dir: Some(cli.pin_dir.clone()),
        ..Default::default()
    })?;
    let seed = seed.unwrap_or_else(rand::random);
    dp.set_config(&xe_config {
        seed: [seed as u32, (seed >> 32) as u32],
        hash_fields: match policy {
            Policy::L3 => HASH_POLICY_L3,
            Policy::L4 => HASH_POLICY_L4,
        },
        flags: if symmetric { CFG_SYMMETRIC } else { 0 },
    })?;
    let mode = match mode {
        Mode::Auto => AttachMode::Auto,
        Mode::Native => AttachMode::Native,
        Mode::Generic => AttachMode::Generic,
    };
    for (port, ifindex) in ports.iter().zip(ifindexes) {
        dp.add_txport(ifindex)
            .with_context(|| format!("adding port {port} to the redirect map"))?;
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
        std::fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
        link.detach().with_context(|| format!("port {port}"))?;
        println!("{port}: detached");
    }
    Ok(())
}

fn stats(cli: &Cli, json: bool) -> Result<()> {
    let counters = pinned_verdict_counters(&cli.pin_dir)?;
    if json {
        let v: Vec<_> = counters
            .iter()
            .map(|(v, c)| serde_json::json!({"verdict": v.name(), "packets": c.packets, "bytes": c.bytes}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{:<20} {:>14} {:>16}", "verdict", "packets", "bytes");
        for (v, c) in counters {
            println!("{:<20} {:>14} {:>16}", v.name(), c.packets, c.bytes);
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match &cli.cmd {
        Cmd::Attach {
            ports,
            mode,
            hash_seed,
            hash_policy,
            symmetric,
        } => attach(&cli, ports, *mode, *hash_seed, *hash_policy, *symmetric),
        Cmd::Detach { ports } => detach(&cli, ports),
        Cmd::Stats { json } => stats(&cli, *json),
    }
}
