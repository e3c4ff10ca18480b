//! `attach` and `detach`: the program on ports by hand, without the daemon (each link pinned under the pin directory).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use control::{inspect, seed};
use dataplane::abi::{xe_config, xe_inport, CFG_SYMMETRIC};
use dataplane::{ifindex_of, pinned_remove_inport};
use dataplane::{AttachMode, Dataplane, LoadOptions, TableWriter, XdpLink};

use super::args::{Cli, Mode, Policy};
use super::run::{policy_fields, state_dir};

pub(crate) fn link_path(pin_dir: &Path, port: &str) -> PathBuf {
    pin_dir.join(format!("link_{port}"))
}

pub(crate) fn attach(
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

pub(crate) fn detach(cli: &Cli, ports: &[String]) -> Result<()> {
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
