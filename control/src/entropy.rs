//! Anti-entropy: now and then the mirror is compared with a fresh dump of the kernel; what differs is a missed event, logged, counted and repaired.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::net::IpAddr;

use ahash::AHashMap;

use crate::state::KernelState;

/// How the mirror differs from a fresh dump, one line per object; empty
/// when it is faithful. Neighbours compare by what forwarding uses (MAC and
/// whether it may be used), not by their NUD state of the moment; the
/// bucket tables of kernel resilient groups, which the kernel moves on its
/// own timers, are not compared.
pub fn differences(mirror: &KernelState, fresh: &KernelState) -> Vec<String> {
    let mut out = Vec::new();
    diff(&mut out, "route", &mirror.routes, &fresh.routes);
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
    use crate::state::{Link, Prefix, RouteTarget};

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
}
