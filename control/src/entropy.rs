//! Anti-entropy: now and then the mirror is compared with a fresh dump of the kernel; what differs is a missed event, logged, counted and repaired.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::net::IpAddr;

use ahash::AHashMap;

use crate::state::{KernelState, Prefix};

/// How the mirror differs from a fresh dump, one line per object; empty
/// when it is faithful. Neighbours compare by what forwarding uses (MAC and
/// whether it may be used), not by their NUD state of the moment; the
/// bucket tables of kernel resilient groups, which the kernel moves on its
/// own timers, are not compared.
pub fn differences(mirror: &KernelState, fresh: &KernelState) -> Vec<String> {
    let mut out = Vec::new();
    diff(&mut out, "route", &mirror.routes, &fresh.routes);
    out.extend(differences_besides_routes(mirror, fresh));
    out
}

/// The routes a [`Comparison`] step compares: about a millisecond's work
/// (two lookups each), so the event loop's passes stay short.
pub const STEP_ROUTES: usize = 4096;

/// A comparison of the mirror with a fresh dump, made in steps between the
/// event loop's passes (comparing 1M routes at once held events back for a
/// second). Each step must see the mirror the dump was compared against:
/// the caller drops the comparison when events change it.
pub struct Comparison {
    fresh: KernelState,
    /// The fresh dump's route prefixes; those before `at` are compared.
    keys: Vec<Prefix>,
    at: usize,
}

impl Comparison {
    pub fn new(fresh: KernelState) -> Self {
        let keys = fresh.routes.keys().copied().collect();
        Comparison { fresh, keys, at: 0 }
    }

    /// Compares up to `n` more of the dump's routes with the mirror's; at
    /// the end, or at the first that differs, the whole state. `None`: more
    /// steps to go; else the differences (as [`differences`] gives them).
    pub fn step(&mut self, mirror: &KernelState, n: usize) -> Option<Vec<String>> {
        let end = self.at.saturating_add(n).min(self.keys.len());
        let fresh = &self.fresh.routes;
        let differs = self.keys[self.at..end]
            .iter()
            .any(|k| mirror.routes.get(k) != fresh.get(k));
        self.at = end;
        if differs || mirror.routes.len() != fresh.len() {
            return Some(differences(mirror, &self.fresh));
        }
        if self.at < self.keys.len() {
            return None;
        }
        // Every route of the dump found alike, and as many in the mirror:
        // the mirror has no other.
        Some(differences_besides_routes(mirror, &self.fresh))
    }

    /// The dump compared, for the caller to adopt.
    pub fn into_fresh(self) -> KernelState {
        self.fresh
    }
}

/// [`differences`] in all but the routes of the mirrored table.
fn differences_besides_routes(mirror: &KernelState, fresh: &KernelState) -> Vec<String> {
    let mut out = Vec::new();
    diff(
        &mut out,
        "local-table entry",
        &mirror.local_routes,
        &fresh.local_routes,
    );
    let nexthops = |s: &KernelState| -> BTreeMap<_, _> {
        s.nexthops.iter().map(|(k, v)| (*k, v.clone())).collect()
    };
    diff(&mut out, "nexthop", &nexthops(mirror), &nexthops(fresh));
    let links = |s: &KernelState| -> BTreeMap<_, _> {
        s.links.iter().map(|(k, v)| (*k, v.clone())).collect()
    };
    diff(&mut out, "link", &links(mirror), &links(fresh));
    let usable = |s: &KernelState| -> BTreeMap<(u32, IpAddr), [u8; 6]> {
        s.neighbours
            .iter()
            .filter(|(_, n)| n.usable)
            .filter_map(|(k, n)| Some((*k, n.mac?)))
            .collect()
    };
    diff(&mut out, "neighbour", &usable(mirror), &usable(fresh));
    let rules = |s: &KernelState| -> BTreeMap<_, _> {
        s.custom_rules.iter().map(|r| (r.clone(), ())).collect()
    };
    diff(&mut out, "rule", &rules(mirror), &rules(fresh));
    out
}

/// A map compared entry by entry.
trait Keyed<K, V> {
    fn entries(&self) -> Box<dyn Iterator<Item = (&K, &V)> + '_>;
    fn find(&self, k: &K) -> Option<&V>;
}

impl<K: Ord, V> Keyed<K, V> for BTreeMap<K, V> {
    fn entries(&self) -> Box<dyn Iterator<Item = (&K, &V)> + '_> {
        Box::new(self.iter())
    }
    fn find(&self, k: &K) -> Option<&V> {
        self.get(k)
    }
}

impl<K: Hash + Eq, V> Keyed<K, V> for AHashMap<K, V> {
    fn entries(&self) -> Box<dyn Iterator<Item = (&K, &V)> + '_> {
        Box::new(self.iter())
    }
    fn find(&self, k: &K) -> Option<&V> {
        self.get(k)
    }
}

/// One line per entry that differs, sorted (a hash map's order is not).
fn diff<K: Debug, V: PartialEq + Debug>(
    out: &mut Vec<String>,
    what: &str,
    mirror: &dyn Keyed<K, V>,
    fresh: &dyn Keyed<K, V>,
) {
    let mut lines = Vec::new();
    for (k, v) in mirror.entries() {
        match fresh.find(k) {
            Some(f) if f == v => {}
            Some(f) => lines.push(format!("{what} {k:?}: mirror {v:?}, kernel {f:?}")),
            None => lines.push(format!("{what} {k:?}: mirror {v:?}, not in the kernel")),
        }
    }
    for (k, f) in fresh.entries() {
        if mirror.find(k).is_none() {
            lines.push(format!("{what} {k:?}: kernel {f:?}, not in the mirror"));
        }
    }
    lines.sort();
    out.extend(lines);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aliases::Metrics;
    use crate::state::{Link, RouteTarget};

    #[test]
    fn a_faithful_mirror_has_no_differences_and_a_missed_delete_is_one() {
        let mut a = KernelState::new(254);
        a.links.insert(
            2,
            Link {
                ifindex: 2,
                name: "x".into(),
                mac: [2, 0, 0, 0, 0, 1],
                mtu: 1500,
                up: true,
                admin_up: true,
                xdp_tx: true,
                ..Default::default()
            },
        );
        let p = Prefix {
            addr: "10.1.0.0".parse().expect("addr"),
            len: 16,
        };
        a.routes.insert(p, Metrics::one(0, RouteTarget::Blackhole));
        let fresh = a.clone();
        assert!(differences(&a, &fresh).is_empty());
        let mut missed = fresh.clone();
        missed.routes.remove(&p);
        let d = differences(&a, &missed);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("10.1.0.0"), "{d:?}");
    }

    fn with_routes(n: u32) -> KernelState {
        let mut ks = KernelState::new(254);
        for i in 0..n {
            let p = Prefix {
                addr: std::net::Ipv4Addr::from(0x0a00_0000 + i).into(),
                len: 32,
            };
            ks.routes.insert(p, Metrics::one(0, RouteTarget::Blackhole));
        }
        ks
    }

    /// Steps of `n` until the comparison ends: its differences and steps.
    fn compare(mirror: &KernelState, fresh: &KernelState, n: usize) -> (Vec<String>, usize) {
        let mut c = Comparison::new(fresh.clone());
        for steps in 1.. {
            if let Some(d) = c.step(mirror, n) {
                return (d, steps);
            }
        }
        unreachable!()
    }

    #[test]
    fn a_comparison_in_steps_finds_what_the_whole_one_finds() {
        let a = with_routes(1000);
        let (d, steps) = compare(&a, &a.clone(), 64);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(steps, 16, "1000 routes in steps of 64");
        // A route that differs, one missing from either side, a link: each
        // as the whole comparison names it.
        let some = *a.routes.keys().nth(700).expect("a route");
        let mut changed = a.clone();
        changed
            .routes
            .insert(some, Metrics::one(0, RouteTarget::Unreachable));
        let mut fewer = a.clone();
        fewer.routes.remove(&some);
        let mut more = a.clone();
        more.routes.insert(
            Prefix {
                addr: "192.0.2.0".parse().expect("addr"),
                len: 24,
            },
            Metrics::one(0, RouteTarget::Blackhole),
        );
        let mut linked = a.clone();
        linked.links.insert(7, Link::default());
        for (what, kernel) in [
            ("changed", &changed),
            ("fewer", &fewer),
            ("more", &more),
            ("linked", &linked),
        ] {
            for (mirror, fresh) in [(&a, kernel), (kernel, &a)] {
                let whole = differences(mirror, fresh);
                assert_eq!(whole.len(), 1, "{what}: {whole:?}");
                assert_eq!(compare(mirror, fresh, 64).0, whole, "{what}");
            }
        }
        // A difference ends the comparison at its step.
        let (_, steps) = compare(&changed, &a, 1);
        let at = Comparison::new(a.clone())
            .keys
            .iter()
            .position(|k| *k == some);
        assert_eq!(Some(steps - 1), at);
    }
}
