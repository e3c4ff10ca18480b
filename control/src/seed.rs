//! The hash seed: made once and kept (in the pinned config and a state file), so restarts, upgrades and reboots move no flow; changed only when asked for, with a log line.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Where the seed may come from, strongest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeedSources {
    /// Given with --hash-seed or `hash_seed` in the config file.
    pub asked: Option<u64>,
    /// --new-hash-seed: make a new random one.
    pub renew: bool,
    /// The running program's (from the pinned config).
    pub pinned: Option<u64>,
    /// Kept in the state directory by an earlier run (survives a reboot).
    pub stored: Option<u64>,
}

/// Where the chosen seed came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Asked,
    Renewed,
    Pinned,
    Stored,
    Made,
}

impl Origin {
    pub fn describe(self) -> &'static str {
        match self {
            Origin::Asked => "as configured",
            Origin::Renewed => "new, as asked with --new-hash-seed",
            Origin::Pinned => "kept from the running program",
            Origin::Stored => "kept from the state file",
            Origin::Made => "new (first start on this host)",
        }
    }
}

/// Picks the seed: what was asked for, else the running program's, else the
/// stored one, else a new random one. Returns it, its origin, and the seed it
/// replaces when that differs (flows then move).
pub fn choose(s: &SeedSources, random: impl FnOnce() -> u64) -> Result<(u64, Origin, Option<u64>)> {
    if s.asked.is_some() && s.renew {
        bail!("--new-hash-seed and a given hash seed (--hash-seed or hash_seed) contradict each other: give one");
    }
    let (seed, origin) = match (s.asked, s.renew, s.pinned, s.stored) {
        (Some(a), ..) => (a, Origin::Asked),
        (None, true, ..) => (random(), Origin::Renewed),
        (None, false, Some(p), _) => (p, Origin::Pinned),
        (None, false, None, Some(st)) => (st, Origin::Stored),
        (None, false, None, None) => (random(), Origin::Made),
    };
    let previous = s.pinned.or(s.stored).filter(|p| *p != seed);
    Ok((seed, origin, previous))
}

/// The daemon's state directory (default /var/lib/xdp-ecmp).
#[derive(Debug, Clone)]
pub struct StateDir(pub PathBuf);

impl StateDir {
    fn seed_file(&self) -> PathBuf {
        self.0.join("hash-seed")
    }

    /// The stored seed; None when there is none yet.
    pub fn load_seed(&self) -> Result<Option<u64>> {
        let path = self.seed_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => crate::config::parse_seed(text.trim())
                .map(Some)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "{}: {e} (remove the file to make a new seed, or fix it)",
                        path.display()
                    )
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Stores the seed (written to a new file, then renamed over the old one).
    pub fn store_seed(&self, seed: u64) -> Result<()> {
        std::fs::create_dir_all(&self.0)
            .with_context(|| format!("creating the state directory {}", self.0.display()))?;
        let path = self.seed_file();
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, format!("{seed:016x}\n"))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Settles the seed for a writer that just loaded the maps: `pinned` is the
/// running program's config when the maps came from a pin. Logs the choice,
/// warns when flows move, and stores it (a state directory that cannot be
/// written is a warning: the pinned config still keeps it across restarts).
pub fn settle(
    asked: Option<u64>,
    renew: bool,
    pinned: Option<&dataplane::abi::xe_config>,
    state: &StateDir,
) -> Result<u64> {
    let pinned = pinned.map(of_config);
    let stored = state.load_seed()?;
    let (seed, origin, previous) = choose(
        &SeedSources {
            asked,
            renew,
            pinned,
            stored,
        },
        rand::random,
    )?;
    match previous {
        Some(p) => tracing::warn!(
            seed = format!("{seed:016x}"),
            previous = format!("{p:016x}"),
            "hash seed changes ({}): established flows move to other next hops",
            origin.describe()
        ),
        None => tracing::info!(
            seed = format!("{seed:016x}"),
            "hash seed {}",
            origin.describe()
        ),
    }
    if stored != Some(seed) {
        if let Err(e) = state.store_seed(seed) {
            tracing::warn!(error = format!("{e:#}"), "the hash seed is not stored: a reboot will make a new one and move flows (see --state-dir)");
        }
    }
    Ok(seed)
}

/// The seed of a config entry.
pub fn of_config(c: &dataplane::abi::xe_config) -> u64 {
    u64::from(c.seed[0]) | u64::from(c.seed[1]) << 32
}

/// The seed as the config entry holds it.
pub fn words(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// The default state directory.
pub fn default_state_dir() -> &'static Path {
    Path::new("/var/lib/xdp-ecmp")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(
        asked: Option<u64>,
        renew: bool,
        pinned: Option<u64>,
        stored: Option<u64>,
    ) -> (u64, Origin, Option<u64>) {
        choose(
            &SeedSources {
                asked,
                renew,
                pinned,
                stored,
            },
            || 99,
        )
        .expect("choose")
    }

    #[test]
    fn the_seed_is_kept_unless_asked_otherwise() {
        // A restart (pins) or a reboot (state file) keeps the seed; nothing moves.
        assert_eq!(
            pick(None, false, Some(7), Some(7)),
            (7, Origin::Pinned, None)
        );
        assert_eq!(pick(None, false, None, Some(7)), (7, Origin::Stored, None));
        // The running program wins over a stale file (and the file is then rewritten).
        assert_eq!(
            pick(None, false, Some(7), Some(8)),
            (7, Origin::Pinned, None)
        );
        // First start: a new one.
        assert_eq!(pick(None, false, None, None), (99, Origin::Made, None));
        // Asked for: it changes, and says what it replaces.
        assert_eq!(
            pick(Some(5), false, Some(7), None),
            (5, Origin::Asked, Some(7))
        );
        assert_eq!(
            pick(Some(7), false, Some(7), None),
            (7, Origin::Asked, None)
        );
        assert_eq!(
            pick(None, true, Some(7), Some(7)),
            (99, Origin::Renewed, Some(7))
        );
        assert!(choose(
            &SeedSources {
                asked: Some(1),
                renew: true,
                ..Default::default()
            },
            || 0
        )
        .is_err());
    }

    #[test]
    fn the_state_file_round_trips_and_names_itself_when_broken() {
        let dir = StateDir(std::env::temp_dir().join(format!("xe-seed-{}", std::process::id())));
        assert_eq!(dir.load_seed().expect("missing is fine"), None);
        dir.store_seed(0xdead_beef_0123_4567).expect("store");
        assert_eq!(dir.load_seed().expect("load"), Some(0xdead_beef_0123_4567));
        std::fs::write(dir.0.join("hash-seed"), "not hex").expect("write");
        let e = format!("{:#}", dir.load_seed().expect_err("broken file"));
        assert!(
            e.contains("hash-seed") && e.contains("remove the file"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir.0).expect("cleanup");
    }
}
