//! The configured ports: attached at start (all of them or, when waiting for ports, each as it appears), attached again when deleted and re-created, stale link pins replaced.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use dataplane::ifindex_of;
use dataplane::{AttachMode, Dataplane, TableWriter, XdpLink};

use crate::state::KernelState;

/// The ports this daemon attaches to, and their links.
pub struct Ports {
    names: Vec<String>,
    pin_dir: PathBuf,
    mode: AttachMode,
    /// Attached ports: name -> link (its ifindex is the interface it holds).
    links: HashMap<String, XdpLink>,
}

impl Ports {
    /// Attaches to every port. A port missing now is an error before
    /// anything is attached, unless `wait`: then it is attached when it appears.
    pub fn attach(
        names: &[String],
        pin_dir: &Path,
        mode: AttachMode,
        wait: bool,
        dp: &mut Dataplane,
    ) -> Result<Ports> {
        let found: Vec<(String, Option<u32>)> = names
            .iter()
            .map(|n| (n.clone(), ifindex_of(n).ok()))
            .collect();
        let missing: Vec<&str> = found
            .iter()
            .filter(|(_, i)| i.is_none())
            .map(|(n, _)| n.as_str())
            .collect();
        if !missing.is_empty() && !wait {
            bail!(
                "port {} does not exist (check `ip link`); nothing was attached. Start with --wait-for-ports (config: wait_for_ports = true) to attach ports when they appear",
                missing.join(", ")
            );
        }
        let mut ports = Ports {
            names: names.to_vec(),
            pin_dir: pin_dir.to_owned(),
            mode,
            links: HashMap::new(),
        };
        for (name, ifindex) in found {
            match ifindex {
                Some(i) => ports.attach_one(&name, i, dp)?,
                None => tracing::warn!(
                    port = name,
                    "port does not exist yet: attached when it appears"
                ),
            }
        }
        Ok(ports)
    }

    /// The attached ports: (name, ifindex of the interface its link holds), by name.
    pub fn attached(&self) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = self
            .links
            .iter()
            .map(|(n, l)| (n.clone(), l.ifindex))
            .collect();
        v.sort();
        v
    }

    fn pin(&self, name: &str) -> PathBuf {
        self.pin_dir.join(format!("link_{name}"))
    }

    /// Attaches `name` (now `ifindex`): adopts its pinned link when the link
    /// still holds that interface, else replaces the stale pin.
    fn attach_one(&mut self, name: &str, ifindex: u32, dp: &mut Dataplane) -> Result<()> {
        dp.add_txport(ifindex)
            .with_context(|| format!("adding port {name} to the redirect map"))?;
        let pin = self.pin(name);
        if pin.exists() {
            let l = XdpLink::open_pinned(&pin, ifindex)?;
            if l.attached_ifindex()? == Some(ifindex) {
                l.update_program(dp)
                    .with_context(|| format!("replacing the program on {name}"))?;
                tracing::info!(port = name, "adopted pinned XDP link, program replaced");
                self.links.insert(name.to_owned(), l);
                return Ok(());
            }
            // The interface was deleted (and maybe re-created) since the pin
            // was made: the link holds nothing any more.
            tracing::warn!(port = name, pin = %pin.display(), "replacing a stale link pin (the port was deleted or re-created)");
            std::fs::remove_file(&pin)
                .with_context(|| format!("removing stale link pin {}", pin.display()))?;
        }
        let l = dp
            .attach(ifindex, self.mode)
            .with_context(|| format!("port {name}"))?;
        l.pin(&pin)?;
        tracing::info!(port = name, ifindex, mode = l.mode, "attached");
        self.links.insert(name.to_owned(), l);
        Ok(())
    }

    /// Follows the kernel's links: a configured port that appeared or was
    /// re-created (a new ifindex) is attached; one that is gone is
    /// forgotten (the kernel detached it with the interface). A port that
    /// fails to attach is logged and tried again on the next call.
    pub fn follow(&mut self, state: &KernelState, dp: &mut Dataplane) {
        for name in self.names.clone() {
            let now = state
                .links
                .values()
                .find(|l| l.name == name)
                .map(|l| l.ifindex);
            let held = self.links.get(&name).map(|l| l.ifindex);
            if now == held {
                continue;
            }
            if let Some(old) = self.links.remove(&name) {
                tracing::warn!(
                    port = name,
                    ifindex = old.ifindex,
                    "port gone: its XDP link went with it"
                );
                let pin = self.pin(&name);
                if let Err(e) = std::fs::remove_file(&pin) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(pin = %pin.display(), error = %e, "removing the link pin of a gone port");
                    }
                }
            }
            if let Some(ifindex) = now {
                if let Err(e) = self.attach_one(&name, ifindex, dp) {
                    tracing::warn!(
                        port = name,
                        error = format!("{e:#}"),
                        "attaching a port that appeared failed; trying again on the next change"
                    );
                }
            }
        }
    }
}
