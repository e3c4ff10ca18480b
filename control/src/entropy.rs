//! Anti-entropy: now and then the mirror is compared with a fresh dump of the kernel; what differs is a missed event, logged, counted and repaired.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::IpAddr;

use crate::state::KernelState;

/// How the mirror differs from a fresh dump, one line per object; empty
/// when it is faithful. Neighbours compare by what forwarding uses (MAC and
/// whether it may be used), not by their NUD state of the moment; the
/// bucket tables of kernel resilient groups, which the kernel moves on its
/// own timers, are not compared.
pub fn differences(mirror: &KernelState, fresh: &KernelState) -> Vec<String> {
    let mut out = Vec::new();
    let routes = |s: &KernelState| s.routes.iter().map(|(k, v)| (*k, v.clone())).collect();
    diff(&mut out, "route", &routes(mirror), &routes(fresh));
    diff(
        &mut out,
        "local-table entry",
        &mirror.local_routes,
        &fresh.local_routes,
    );
    let nexthops = |s: &KernelState| s.nexthops.iter().map(|(k, v)| (*k, v.clone())).collect();
    diff(&mut out, "nexthop", &nexthops(mirror), &nexthops(fresh));
    let links = |s: &KernelState| s.links.iter().map(|(k, v)| (*k, v.clone())).collect();
    diff(&mut out, "link", &links(mirror), &links(fresh));
    let usable = |s: &KernelState| -> BTreeMap<(u32, IpAddr), [u8; 6]> {
        s.neighbours
            .iter()
            .filter(|(_, n)| n.usable)
            .filter_map(|(k, n)| Some((*k, n.mac?)))
            .collect()
    };
    diff(&mut out, "neighbour", &usable(mirror), &usable(fresh));
    let rules = |s: &KernelState| s.custom_rules.iter().map(|r| (r.clone(), ())).collect();
    diff(&mut out, "rule", &rules(mirror), &rules(fresh));
    out
}

fn diff<K: Ord + Debug, V: PartialEq + Debug>(
    out: &mut Vec<String>,
    what: &str,
    mirror: &BTreeMap<K, V>,
    fresh: &BTreeMap<K, V>,
) {
    for (k, v) in mirror {
        match fresh.get(k) {
            Some(f) if f == v => {}
            Some(f) => out.push(format!("{what} {k:?}: mirror {v:?}, kernel {f:?}")),
            None => out.push(format!("{what} {k:?}: mirror {v:?}, not in the kernel")),
        }
    }
    for (k, f) in fresh {
        if !mirror.contains_key(k) {
            out.push(format!("{what} {k:?}: kernel {f:?}, not in the mirror"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        a.routes
            .entry(p)
            .or_default()
            .insert(0, RouteTarget::Blackhole);
        let fresh = a.clone();
        assert!(differences(&a, &fresh).is_empty());
        let mut missed = fresh.clone();
        missed.routes.remove(&p);
        let d = differences(&a, &missed);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("10.1.0.0"), "{d:?}");
    }
}
