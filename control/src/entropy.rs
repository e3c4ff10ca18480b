//! Anti-entropy: now and then the mirror is compared with a fresh dump of the kernel; what differs is a missed event, logged, counted and repaired.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::net::IpAddr;

use ahash::AHashMap;

use crate::aliases::Metrics;
use crate::state::{KernelState, Prefix, PrefixSet};

/// How the mirror differs from a fresh dump, one line per object; empty
/// when it is faithful. Neighbours compare by what forwarding uses (MAC and
/// whether it may be used), not by their NUD state of the moment; the
/// bucket tables of kernel resilient groups, which the kernel moves on its
/// own timers, are not compared.
pub fn differences(mirror: &KernelState, fresh: &KernelState) -> Vec<String> {
    differences_but(mirror, fresh, &PrefixSet::default())
}

/// [`differences`] but for the routes of the prefixes in `skip`.
pub fn differences_but(mirror: &KernelState, fresh: &KernelState, skip: &PrefixSet) -> Vec<String> {
    let mut out = Vec::new();
    diff(&mut out, "route", &mirror.routes, &fresh.routes, &|p| {
        skip.contains(p)
    });
    out.extend(differences_besides_routes(mirror, fresh));
    out
}

/// The routes a [`Comparison`] step compares: with 1M routes about a
/// microsecond each (two lookups and the routes read, cache misses most),
/// so a step is well under a pass's time budget.
pub const STEP_ROUTES: usize = 64;

/// A comparison of the mirror with a fresh dump, made in steps between the
/// event loop's passes (comparing 1M routes at once held events back for a
/// second). The mirror may take events between steps: the caller passes
/// the prefixes they changed, which the comparison leaves out (for those,
/// the mirror and the dump may each be the newer), and drops the
/// comparison when events change anything else.
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

    /// Compares up to `n` more of the dump's routes with the mirror's, but
    /// those of the prefixes in `skip`; at the end, or at the first that
    /// differs, the whole state. `None`: more steps to go; else the
    /// differences (as [`differences_but`] gives them).
    pub fn step(
        &mut self,
        mirror: &KernelState,
        n: usize,
        skip: &PrefixSet,
    ) -> Option<Vec<String>> {
        let end = self.at.saturating_add(n).min(self.keys.len());
        let fresh = &self.fresh.routes;
        let differs = self.keys[self.at..end]
            .iter()
            .any(|k| !skip.contains(k) && mirror.routes.get(k) != fresh.get(k));
        self.at = end;
        if !differs && self.at < self.keys.len() {
            return None;
        }
        // Every route of the dump found alike, and as many others in the
        // mirror: the mirror has no other.
        let others = |m: &AHashMap<Prefix, Metrics>| {
            m.len() - skip.iter().filter(|p| m.contains_key(*p)).count()
        };
        if differs || others(&mirror.routes) != others(fresh) {
            return Some(differences_but(mirror, &self.fresh, skip));
        }
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
        &|_| false,
    );
    let nexthops = |s: &KernelState| -> BTreeMap<_, _> {
        s.nexthops.iter().map(|(k, v)| (*k, v.clone())).collect()
    };
    diff(
        &mut out,
        "nexthop",
        &nexthops(mirror),
        &nexthops(fresh),
        &|_| false,
    );
    let links = |s: &KernelState| -> BTreeMap<_, _> {
        s.links.iter().map(|(k, v)| (*k, v.clone())).collect()
    };
    diff(&mut out, "link", &links(mirror), &links(fresh), &|_| false);
    let usable = |s: &KernelState| -> BTreeMap<(u32, IpAddr), [u8; 6]> {
        s.neighbours
            .iter()
            .filter(|(_, n)| n.usable)
            .filter_map(|(k, n)| Some((*k, n.mac?)))
            .collect()
    };
    diff(
        &mut out,
        "neighbour",
        &usable(mirror),
        &usable(fresh),
        &|_| false,
    );
    let rules = |s: &KernelState| -> BTreeMap<_, _> {
        s.custom_rules.iter().map(|r| (r.clone(), ())).collect()
    };
    diff(&mut out, "rule", &rules(mirror), &rules(fresh), &|_| false);
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
    skip: &dyn Fn(&K) -> bool,
) {
    let mut lines = Vec::new();
    for (k, v) in mirror.entries().filter(|(k, _)| !skip(k)) {
        match fresh.find(k) {
            Some(f) if f == v => {}
            Some(f) => lines.push(format!("{what} {k:?}: mirror {v:?}, kernel {f:?}")),
            None => lines.push(format!("{what} {k:?}: mirror {v:?}, not in the kernel")),
        }
    }
    for (k, f) in fresh.entries().filter(|(k, _)| !skip(k)) {
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
            if let Some(d) = c.step(mirror, n, &PrefixSet::default()) {
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

    #[test]
    fn routes_events_changed_during_a_round_are_left_out() {
        let a = with_routes(300);
        let mut keys = a.routes.keys().copied();
        let (changed, gone, other) = (
            keys.next().expect("a route"),
            keys.next().expect("a route"),
            keys.next().expect("a route"),
        );
        let added = Prefix {
            addr: "192.0.2.0".parse().expect("addr"),
            len: 24,
        };
        // The mirror took events for three prefixes after the dump.
        let mut mirror = a.clone();
        mirror
            .routes
            .insert(changed, Metrics::one(0, RouteTarget::Unreachable));
        mirror.routes.remove(&gone);
        mirror
            .routes
            .insert(added, Metrics::one(0, RouteTarget::Blackhole));
        let touched: PrefixSet = [changed, gone, added].into_iter().collect();
        let run = |mirror: &KernelState, skip: &PrefixSet| {
            let mut c = Comparison::new(a.clone());
            loop {
                if let Some(d) = c.step(mirror, 32, skip) {
                    return d;
                }
            }
        };
        assert!(run(&mirror, &touched).is_empty());
        assert_eq!(run(&mirror, &PrefixSet::default()).len(), 3);
        // A route it missed is found beside them, named alone; so is one
        // the mirror has and the kernel does not.
        let mut missed = mirror.clone();
        missed.routes.remove(&other);
        let d = run(&missed, &touched);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("not in the mirror"), "{d:?}");
        let mut extra = mirror.clone();
        let stray = Prefix {
            addr: "198.51.100.0".parse().expect("addr"),
            len: 24,
        };
        extra
            .routes
            .insert(stray, Metrics::one(0, RouteTarget::Blackhole));
        let d = run(&extra, &touched);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("198.51.100.0"), "{d:?}");
    }
}
