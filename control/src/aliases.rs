//! How the kernel keys the routes of one prefix: aliases ordered by TOS and metric, prepended, appended or replaced as the netlink flags say, IPv6 hops deleted one by one; and which of them forwards.
//!
//! IPv4 (fib_table_insert): a prefix holds a list of aliases sorted by TOS
//! (highest first) and metric (lowest first). Routes with the same TOS and
//! metric may coexist: `ip route add`/`prepend` puts the new one first (the
//! one lookups use), `append` last, `replace` swaps the first; a delete
//! removes the first alias that matches what the delete names, and its
//! notification carries that alias in full. IPv6 (fib6) keeps one route per
//! metric and gateway-ness: the route through gateways is one (ECMP) route
//! whose notification always lists every hop (an `append` announces the
//! whole grown route) and which is deleted hop by hop (the notification lists
//! only the hops that went); routes without a gateway on different devices
//! coexist beside it, and the kernel then chooses among them by its own
//! scoring, so such a metric is the kernel's.

use crate::state::{PathKey, RouteTarget};

/// One route of a prefix, as the kernel keys it within the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub metric: u32,
    /// The route's TOS (IPv4 `tos`/`dsfield`): it matches only packets with that TOS.
    pub tos: u8,
    /// The route's device when it names one outside its hops (RTA_OIF of a
    /// local, blackhole or device route): two local routes to one address
    /// on two devices are two aliases.
    pub oif: u32,
    pub target: RouteTarget,
    /// The route has an MTU of its own (`mtu N`): the kernel checks packets
    /// against it, the program only against the port's, so it forwards
    /// nothing by this route.
    pub own_mtu: bool,
    /// IPv6 hops with an MTU of their own, sorted: each hop of an IPv6
    /// route keeps the metrics it was added with, and the kernel lists only
    /// the first's, so `own_mtu` holds while any of these is in the route.
    pub mtu_hops: Vec<PathKey>,
    /// `mtu_hops` is a guess: the route came from a dump, which shows only
    /// its first hop's metrics, so every hop was taken to have the MTU.
    /// Once a hop is deleted from it, only the kernel can say whether the
    /// rest has one (see [`delete`]).
    pub mtu_unsure: bool,
    /// Hops the kernel marked dead, sorted (not in `target`): they forward
    /// nothing, but the route stays while it has any, live or dead.
    pub dead: Vec<PathKey>,
}

/// Where a new route goes, from the netlink header flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A dump (NLM_F_MULTI): the kernel lists aliases in order.
    Dump,
    /// `add` or `prepend` (NLM_F_CREATE without APPEND/REPLACE): first among equals.
    Prepend,
    /// `append` (NLM_F_APPEND): last among equals.
    Append,
    /// `replace` (NLM_F_REPLACE): takes the place of the first among equals.
    Replace,
}

const NLM_F_MULTI: u16 = 0x2;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_APPEND: u16 = 0x800;

impl Op {
    pub fn of_flags(flags: u16) -> Op {
        if flags & NLM_F_MULTI != 0 {
            Op::Dump
        } else if flags & NLM_F_REPLACE != 0 {
            Op::Replace
        } else if flags & NLM_F_APPEND != 0 {
            Op::Append
        } else {
            Op::Prepend
        }
    }
}

/// Sort key: TOS descending, then metric ascending (the kernel's order).
fn key(a: &Alias) -> (std::cmp::Reverse<u8>, u32) {
    (std::cmp::Reverse(a.tos), a.metric)
}

/// Adds a route to the aliases of one prefix; true if they changed.
pub fn add(list: &mut Vec<Alias>, new: Alias, op: Op, v6: bool) -> bool {
    let k = key(&new);
    let first = list.iter().position(|a| key(a) >= k).unwrap_or(list.len());
    let end = list[first..]
        .iter()
        .position(|a| key(a) != k)
        .map_or(list.len(), |i| first + i);
    // An alias equal to one the kernel has changes nothing: the kernel
    // refuses to add it again (EEXIST, `replace` included, unless it is
    // the first of its key, which it keeps), and announces the routes of a
    // replaced nexthop object again with NLM_F_REPLACE, wherever they are.
    if list[first..end].contains(&new) {
        return false;
    }
    if v6 && op == Op::Replace {
        // `replace` takes the place of the first route of the metric that
        // is, like it, through gateways (or not), else of the first route
        // of the metric (fib6_add_rt2node's fallback); else it is added.
        let at = list[first..end]
            .iter()
            .position(|a| ecmp(a) == ecmp(&new))
            .or((first < end).then_some(0));
        return put(list, at.map(|i| first + i), end, new);
    }
    if v6 && ecmp(&new) {
        // One route through gateways per metric, announced whole.
        let at = list[first..end].iter().position(ecmp).map(|i| first + i);
        let mut new = new;
        if let Some(i) = at {
            // The message shows the MTU of its first hop, the one it adds
            // (an append) or of all it adds (an add): hops the route had
            // keep what they had.
            let (had, now) = (hops(&list[i]), hops(&new));
            new.mtu_hops.retain(|h| !had.contains(h));
            new.mtu_hops
                .extend(list[i].mtu_hops.iter().filter(|h| now.contains(h)));
            new.mtu_hops.sort();
            new.mtu_hops.dedup();
            new.own_mtu = !new.mtu_hops.is_empty();
            new.mtu_unsure |= list[i].mtu_unsure;
        }
        return put(list, at, end, new);
    }
    match op {
        Op::Replace if first < end => {
            let changed = list[first] != new;
            list[first] = new;
            changed
        }
        Op::Prepend | Op::Replace => {
            list.insert(first, new);
            true
        }
        Op::Dump | Op::Append => {
            list.insert(end, new);
            true
        }
    }
}

/// Puts `new` in place of the alias at `at`, or inserts it at `end`; true if
/// the list changed.
fn put(list: &mut Vec<Alias>, at: Option<usize>, end: usize, new: Alias) -> bool {
    match at {
        Some(i) => {
            let changed = list[i] != new;
            list[i] = new;
            changed
        }
        None => {
            list.insert(end, new);
            true
        }
    }
}

/// What a delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Deleted {
    /// Anything went.
    pub changed: bool,
    /// Hops went from a route whose remaining hops' MTU the mirror only
    /// guessed (`mtu_unsure`): the route must be read from the kernel again.
    pub ask: bool,
}

/// Removes what a delete notification names; true if anything went.
pub fn delete(list: &mut Vec<Alias>, gone: &Alias, v6: bool) -> bool {
    delete_hops(list, gone, v6).changed
}

/// [`delete`], saying also whether the kernel must be asked again.
pub fn delete_hops(list: &mut Vec<Alias>, gone: &Alias, v6: bool) -> Deleted {
    let changed = |changed| Deleted {
        changed,
        ask: false,
    };
    let same_key = |a: &Alias| a.metric == gone.metric && a.tos == gone.tos;
    if v6 && ecmp(gone) {
        let Some(i) = list.iter().position(|a| same_key(a) && ecmp(a)) else {
            return changed(false);
        };
        // A multipath route loses only the hops named, live or dead (the
        // kernel flags a dead hop's delete dead).
        let named = hops(gone);
        let a = &mut list[i];
        let before = (a.dead.len(), paths_len(&a.target));
        a.dead.retain(|h| !named.contains(h));
        // Its MTU goes with the hop that had it.
        a.mtu_hops.retain(|h| !named.contains(h));
        a.own_mtu = !a.mtu_hops.is_empty();
        if let RouteTarget::Paths(have) = &mut a.target {
            have.retain(|h| !named.contains(&h.path));
            // Down to one hop, the kernel lists a single-path route (weight 1).
            if let ([only], []) = (have.as_mut_slice(), a.dead.as_slice()) {
                only.weight = 1;
            }
        }
        if hops(a).is_empty() {
            list.remove(i);
            return changed(true);
        }
        let went = (a.dead.len(), paths_len(&a.target)) != before;
        return Deleted {
            changed: went,
            ask: went && a.mtu_unsure,
        };
    }
    let at = list
        .iter()
        .position(|a| a == gone)
        .or_else(|| list.iter().position(same_key));
    match at {
        Some(i) => {
            list.remove(i);
            changed(true)
        }
        None => changed(false),
    }
}

/// Every hop of a route, live and dead.
pub fn hops(a: &Alias) -> Vec<PathKey> {
    let live = match &a.target {
        RouteTarget::Paths(p) => p.iter().map(|h| h.path).collect(),
        _ => Vec::new(),
    };
    [live, a.dead.clone()].concat()
}

fn paths_len(t: &RouteTarget) -> usize {
    match t {
        RouteTarget::Paths(p) => p.len(),
        _ => 0,
    }
}

/// An IPv6 route the kernel merges into one multipath route: through
/// gateways (its dead hops too).
fn ecmp(a: &Alias) -> bool {
    let h = hops(a);
    matches!(&a.target, RouteTarget::Paths(_))
        && !h.is_empty()
        && h.iter().all(|p| p.gateway.is_some())
}

/// What forwards for the prefix, by metric (the lowest wins): the first
/// alias of each metric (IPv4), the only route of the metric (IPv6, where
/// the kernel scores several by device and neighbour state). A TOS route
/// selects by a field the program does not match on, so any makes the
/// whole prefix the kernel's.
pub fn effective(list: &[Alias], v6: bool) -> Metrics {
    if list.iter().any(|a| a.tos != 0) {
        return Metrics::one(0, RouteTarget::KernelOnly);
    }
    if let [a] = list {
        // Most prefixes: no vector to build.
        return Metrics::one(a.metric, forwarding_target(a));
    }
    let mut out: Vec<(u32, RouteTarget)> = Vec::new();
    for a in list {
        match out.binary_search_by_key(&a.metric, |(m, _)| *m) {
            Ok(i) => {
                if v6 {
                    out[i].1 = RouteTarget::KernelOnly;
                }
            }
            Err(i) => out.insert(i, (a.metric, forwarding_target(a))),
        }
    }
    Metrics::from_sorted(out)
}

/// What an alias does with packets: its target, or the kernel's decision
/// where its own MTU is checked.
fn forwarding_target(a: &Alias) -> RouteTarget {
    if a.own_mtu {
        RouteTarget::KernelOnly
    } else {
        a.target.clone()
    }
}

/// The route that forwards at each metric of a prefix, lowest metric first
/// (what lookups choose from). A prefix usually has one, held in place: a
/// tree's node cost about 400 bytes a prefix, and a vector's allocation a
/// cache miss on every read of a million routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Metrics {
    #[default]
    None,
    One(u32, RouteTarget),
    /// Two or more, sorted by metric.
    Many(Vec<(u32, RouteTarget)>),
}

impl Metrics {
    /// One target, at `metric`.
    pub fn one(metric: u32, target: RouteTarget) -> Self {
        Metrics::One(metric, target)
    }

    /// From targets sorted by metric, each metric once.
    fn from_sorted(mut v: Vec<(u32, RouteTarget)>) -> Self {
        match v.len() {
            0 => Metrics::None,
            1 => {
                let (m, t) = v.pop().expect("one");
                Metrics::One(m, t)
            }
            _ => Metrics::Many(v),
        }
    }

    /// The targets, lowest metric first.
    pub fn values(&self) -> impl Iterator<Item = &RouteTarget> {
        let (one, many) = match self {
            Metrics::None => (None, &[][..]),
            Metrics::One(_, t) => (Some(t), &[][..]),
            Metrics::Many(v) => (None, &v[..]),
        };
        one.into_iter().chain(many.iter().map(|(_, t)| t))
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Metrics::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::WeightedPath;
    use std::net::IpAddr;

    fn via(gw: u8) -> WeightedPath {
        WeightedPath {
            path: PathKey {
                ifindex: 2,
                gateway: Some(IpAddr::from([10, 0, 0, gw])),
            },
            weight: 1,
        }
    }

    fn route(metric: u32, gws: &[u8]) -> Alias {
        Alias {
            metric,
            tos: 0,
            oif: 0,
            own_mtu: false,
            target: RouteTarget::Paths(gws.iter().map(|g| via(*g)).collect()),
            mtu_hops: Vec::new(),
            mtu_unsure: false,
            dead: Vec::new(),
        }
    }

    fn del(list: &mut Vec<Alias>, a: &Alias, v6: bool) -> bool {
        delete(list, a, v6)
    }

    /// Found by the oracle: the delete of a dead hop comes flagged dead (no
    /// live hops); the hop it names goes, the route's live hop stays.
    #[test]
    fn deleting_a_dead_ipv6_hop_keeps_the_route() {
        let mut l = Vec::new();
        let mut r = route(10, &[3]);
        r.dead = vec![via(1).path];
        add(&mut l, r, Op::Dump, true);
        let dead = Alias {
            target: RouteTarget::Paths(Vec::new()),
            dead: vec![via(1).path],
            ..route(10, &[])
        };
        assert!(del(&mut l, &dead, true));
        assert_eq!(winner6(&l), RouteTarget::Paths(vec![via(3)]));
        assert!(l[0].dead.is_empty());
    }

    /// Found by the oracle: a replaced nexthop object makes the kernel
    /// announce each route using it again, NLM_F_REPLACE; one that is the
    /// second alias of its key must not take the first one's place.
    #[test]
    fn a_route_announced_again_stays_where_it_is() {
        let mut l = Vec::new();
        add(&mut l, route(0, &[1]), Op::Dump, false);
        add(&mut l, route(0, &[2]), Op::Dump, false);
        assert!(!add(&mut l, route(0, &[2]), Op::Replace, false));
        assert_eq!(winner(&l), RouteTarget::Paths(vec![via(1)]));
    }

    /// Found by the oracle: deleting the live hop of a route whose other hop
    /// is dead leaves the route, dead, as the kernel keeps it.
    #[test]
    fn deleting_the_live_hop_leaves_the_dead_route() {
        let mut l = Vec::new();
        let mut r = route(1024, &[3]);
        r.dead = vec![via(1).path];
        add(&mut l, r, Op::Dump, true);
        assert!(del(&mut l, &route(1024, &[3]), true));
        assert_eq!(l.len(), 1, "{l:?}");
        assert_eq!(l[0].target, RouteTarget::Paths(Vec::new()));
        assert!(del(
            &mut l,
            &Alias {
                dead: vec![via(1).path],
                ..route(1024, &[])
            },
            true
        ));
        assert!(l.is_empty());
    }

    fn winner(list: &[Alias]) -> RouteTarget {
        effective(list, false)
            .values()
            .next()
            .cloned()
            .expect("a route")
    }

    #[test]
    fn flags_say_where_a_route_goes() {
        assert_eq!(Op::of_flags(0x600), Op::Prepend); // add: CREATE|EXCL
        assert_eq!(Op::of_flags(0x400), Op::Prepend); // prepend: CREATE
        assert_eq!(Op::of_flags(0xc00), Op::Append); // append: CREATE|APPEND
        assert_eq!(Op::of_flags(0x100), Op::Replace);
        assert_eq!(Op::of_flags(0x2), Op::Dump);
    }

    #[test]
    fn ipv4_append_keeps_the_first_prepend_and_replace_take_the_front() {
        let mut l = Vec::new();
        assert!(add(&mut l, route(0, &[2]), Op::Prepend, false));
        assert!(add(&mut l, route(0, &[3]), Op::Append, false));
        assert_eq!(
            winner(&l),
            route(0, &[2]).target,
            "append: the first still forwards"
        );
        assert!(add(&mut l, route(0, &[4]), Op::Prepend, false));
        assert_eq!(
            winner(&l),
            route(0, &[4]).target,
            "prepend: the new one forwards"
        );
        assert!(add(&mut l, route(0, &[5]), Op::Replace, false));
        assert_eq!(l.len(), 3, "replace swaps the first, adds nothing");
        assert_eq!(winner(&l), route(0, &[5]).target);
        // Deleting the forwarding alias uncovers the next one.
        assert!(del(&mut l, &route(0, &[5]), false));
        assert_eq!(winner(&l), route(0, &[2]).target);
        assert!(
            !add(&mut l, route(0, &[2]), Op::Prepend, false),
            "a repeat is no change"
        );
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn a_lower_metric_wins_whatever_the_order() {
        let mut l = Vec::new();
        add(&mut l, route(20, &[2]), Op::Prepend, false);
        add(&mut l, route(10, &[3]), Op::Append, false);
        add(&mut l, route(30, &[4]), Op::Prepend, false);
        assert_eq!(winner(&l), route(10, &[3]).target);
        assert_eq!(effective(&l, false).values().count(), 3);
    }

    #[test]
    fn a_tos_route_makes_the_prefix_the_kernels() {
        let mut l = Vec::new();
        add(&mut l, route(0, &[2]), Op::Prepend, false);
        let mut t = route(0, &[3]);
        t.tos = 0x10;
        add(&mut l, t.clone(), Op::Prepend, false);
        assert_eq!(l.len(), 2, "TOS is part of the key: both stay");
        assert_eq!(winner(&l), RouteTarget::KernelOnly);
        del(&mut l, &t, false);
        assert_eq!(winner(&l), route(0, &[2]).target);
    }

    #[test]
    fn ipv6_hops_go_one_by_one() {
        let mut l = Vec::new();
        add(&mut l, route(1024, &[2, 3]), Op::Prepend, true);
        // `append` announces the whole grown route.
        add(&mut l, route(1024, &[4, 2, 3]), Op::Append, true);
        assert_eq!(l.len(), 1);
        assert!(del(&mut l, &route(1024, &[3]), true));
        assert_eq!(winner(&l), route(1024, &[4, 2]).target);
        // Found by the oracle: the last hop left is a single-path route, weight 1.
        let mut heavy = route(1024, &[4, 2]);
        if let RouteTarget::Paths(p) = &mut heavy.target {
            p[1].weight = 3;
        }
        let mut h = vec![heavy];
        del(&mut h, &route(1024, &[4]), true);
        assert_eq!(winner(&h), route(1024, &[2]).target);
        assert!(
            !del(&mut l, &route(1024, &[9]), true),
            "a hop it does not have"
        );
        assert!(del(&mut l, &route(1024, &[4, 2]), true));
        assert!(l.is_empty());
    }

    /// Found by the oracle: a route with an MTU of its own replaced by a
    /// multipath route of the same metric stayed beside it.
    #[test]
    fn an_ipv6_replace_takes_the_place_of_the_metrics_route() {
        let mut l = Vec::new();
        let mut mtu = route(1024, &[2]);
        mtu.own_mtu = true;
        mtu.mtu_hops = vec![via(2).path];
        add(&mut l, mtu, Op::Prepend, true);
        assert_eq!(winner6(&l), RouteTarget::KernelOnly);
        add(&mut l, route(1024, &[3, 4]), Op::Replace, true);
        assert_eq!(l.len(), 1);
        assert_eq!(winner6(&l), route(1024, &[3, 4]).target);
    }

    fn winner6(list: &[Alias]) -> RouteTarget {
        effective(list, true)
            .values()
            .next()
            .cloned()
            .expect("a route")
    }

    /// A route through via(2) with `mtu` added, then via(3) appended without.
    fn mtu_hop_then_plain_hop() -> Vec<Alias> {
        let mut l = Vec::new();
        let mut mtu = route(1024, &[2]);
        mtu.own_mtu = true;
        mtu.mtu_hops = vec![via(2).path];
        add(&mut l, mtu, Op::Prepend, true);
        add(&mut l, route(1024, &[2, 3]), Op::Append, true);
        l
    }

    /// A hop appended to a route with an MTU of its own keeps the route the
    /// kernel's; found by the oracle: the hop that had the MTU deleted, the
    /// route's other hop forwards (the kernel lists it without an MTU).
    #[test]
    fn an_ipv6_route_keeps_its_mtu_while_the_hop_that_had_it_stays() {
        let mut l = mtu_hop_then_plain_hop();
        assert_eq!(winner6(&l), RouteTarget::KernelOnly);
        assert!(del(&mut l, &route(1024, &[2]), true));
        assert_eq!(winner6(&l), route(1024, &[3]).target);
    }

    /// Found by the oracle (seed 20261201, step 84089): a dump shows a
    /// multipath route's first hop's MTU as the route's; the mirror took it
    /// for every hop, and when that hop went it kept the rest the kernel's
    /// while the kernel had them forward without an MTU. A delete from such
    /// a route asks for the kernel's view.
    #[test]
    fn a_hop_deleted_from_a_dumped_ipv6_route_with_an_mtu_asks_the_kernel() {
        let mut l = Vec::new();
        let mut dumped = route(1024, &[2, 3]);
        dumped.own_mtu = true;
        dumped.mtu_hops = vec![via(2).path, via(3).path];
        dumped.mtu_unsure = true;
        add(&mut l, dumped, Op::Dump, true);
        let d = delete_hops(&mut l, &route(1024, &[2]), true);
        assert_eq!(
            d,
            Deleted {
                changed: true,
                ask: true
            }
        );
        // From notifications the mirror knows: no need to ask.
        let mut l = mtu_hop_then_plain_hop();
        let d = delete_hops(&mut l, &route(1024, &[2]), true);
        assert_eq!(
            d,
            Deleted {
                changed: true,
                ask: false
            }
        );
    }

    #[test]
    fn an_ipv6_device_route_beside_the_gateway_route_leaves_the_choice_to_the_kernel() {
        let mut l = Vec::new();
        add(&mut l, route(1024, &[2]), Op::Prepend, true);
        let dev = Alias {
            metric: 1024,
            tos: 0,
            oif: 3,
            own_mtu: false,
            mtu_hops: Vec::new(),
            mtu_unsure: false,
            dead: Vec::new(),
            target: RouteTarget::Paths(vec![WeightedPath {
                path: PathKey {
                    ifindex: 3,
                    gateway: None,
                },
                weight: 1,
            }]),
        };
        add(&mut l, dev.clone(), Op::Prepend, true);
        assert_eq!(l.len(), 2);
        assert_eq!(
            effective(&l, true).values().next().cloned(),
            Some(RouteTarget::KernelOnly)
        );
        assert!(del(&mut l, &dev, true));
        assert_eq!(
            effective(&l, true).values().next().cloned(),
            Some(route(1024, &[2]).target)
        );
    }
}
