//! The route writes of a sync: deletes first (they make room), then adds and changes; a route with no room of its own stays out, and the prefix covering it passes, so its packets reach the kernel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ahash::{AHashMap as HashMap, AHashSet as HashSet};
use dataplane::abi::{
    xe_route, ROUTE_PIN, RT_BLACKHOLE, RT_LOCAL, RT_PROHIBIT, RT_UNICAST, RT_UNREACHABLE,
};
use dataplane::TableWriter;

use super::{Reconciler, SyncStats};
use crate::capacity::Limit;
use crate::state::Prefix;
use crate::translate::{DesiredRoute, GroupKey};

const ROUTE_STATUS: &str =
    "is not written: its packets go to the kernel (the prefix covering it in the maps passes them)";
const COVER_STATUS: &str =
    "passes packets to the kernel while a longer prefix under it is not written";
const OLD_ENTRY_STATUS: &str = "is not rewritten: the maps keep its old entry";

/// Routes written per batch: the batch and its results are built in memory
/// the first sync of 1M routes would otherwise touch fresh (~70 MB).
const WRITE_CHUNK: usize = 16_384;

/// An entry whose packets the program passes to the kernel (pass-no-route),
/// where the kernel's own route decides.
fn pass() -> xe_route {
    xe_route {
        kind: RT_UNREACHABLE,
        ..Default::default()
    }
}

/// The /24 of an IPv4 prefix longer than /24: it takes a DIR-24-8 chunk.
fn chunk_of(p: &Prefix) -> Option<u32> {
    match p.addr {
        IpAddr::V4(a) if p.len > 24 => Some(u32::from(a) >> 8),
        _ => None,
    }
}

/// The prefix of length `len` that covers `p`.
fn covering(p: &Prefix, len: u8) -> Prefix {
    let addr = match p.addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    };
    Prefix { addr, len }
}

fn write(dp: &mut dyn TableWriter, p: &Prefix, r: &xe_route) -> dataplane::Result<()> {
    match p.addr {
        IpAddr::V4(a) => dp.set_route_v4(a, p.len, r),
        IpAddr::V6(a) => dp.set_route_v6(a, p.len, r),
    }
}

/// Writes each `(prefix, route, _)`, the IPv4 ones in one call (the maps
/// batch them); the result of each, in order.
fn write_all(
    dp: &mut dyn TableWriter,
    routes: &[(Prefix, xe_route, bool)],
) -> Vec<dataplane::Result<()>> {
    let v4: Vec<(Ipv4Addr, u8, xe_route)> = routes
        .iter()
        .filter_map(|(p, r, _)| match p.addr {
            IpAddr::V4(a) => Some((a, p.len, *r)),
            IpAddr::V6(_) => None,
        })
        .collect();
    let mut v4 = dp.set_routes_v4(&v4).into_iter();
    routes
        .iter()
        .map(|(p, r, _)| match p.addr {
            IpAddr::V4(_) => v4.next().expect("a result per IPv4 route"),
            IpAddr::V6(a) => dp.set_route_v6(a, p.len, r),
        })
        .collect()
}

/// Deletes each prefix, the IPv4 ones in one call; the result of each.
fn delete_all(dp: &mut dyn TableWriter, prefixes: &[Prefix]) -> Vec<dataplane::Result<()>> {
    let v4: Vec<(Ipv4Addr, u8)> = prefixes
        .iter()
        .filter_map(|p| match p.addr {
            IpAddr::V4(a) => Some((a, p.len)),
            IpAddr::V6(_) => None,
        })
        .collect();
    let mut v4 = dp.delete_routes_v4(&v4).into_iter();
    prefixes
        .iter()
        .map(|p| match p.addr {
            IpAddr::V4(_) => v4.next().expect("a result per IPv4 prefix"),
            IpAddr::V6(a) => dp.delete_route_v6(a, p.len),
        })
        .collect()
}

/// What a route write comes to.
enum Plan {
    /// The maps hold the entry already.
    Holds,
    /// A new route without room: it stays out.
    NoRoom,
    /// To be written; whether the route is new.
    Write(bool),
}

impl Reconciler {
    /// Writes the routes of `updates` (None: deleted in the kernel). A route
    /// whose group is in `failed` is written as a pass.
    pub(super) fn sync_routes(
        &mut self,
        updates: &[(Prefix, Option<DesiredRoute>)],
        failed: &HashSet<GroupKey>,
        dp: &mut dyn TableWriter,
        st: &mut SyncStats,
    ) {
        // Deletes first: they make room for what follows.
        let mut gone = Vec::new();
        for (prefix, _) in updates.iter().filter(|u| u.1.is_none()) {
            self.passed.remove(prefix);
            self.unwritten.remove(prefix);
            self.demoted.remove(prefix);
            if self.routes.contains_key(prefix) {
                gone.push(*prefix);
            }
        }
        let results = delete_all(dp, &gone);
        for (prefix, r) in gone.iter().zip(results) {
            match r {
                Ok(()) => {
                    self.routes.remove(prefix);
                    self.counted(prefix, false);
                    st.routes_deleted += 1;
                }
                Err(e) => {
                    let what = format!("route {prefix}");
                    self.short
                        .note(Limit::Write, what, OLD_ENTRY_STATUS, Some(e.to_string()));
                    self.retry.insert(*prefix);
                }
            }
        }
        let mut pending = Vec::new();
        // Each prefix comes once: with none held at the start (the first
        // sync), each is new, and is not looked up (a cache miss each).
        let none_held = self.routes.is_empty();
        for (prefix, r) in updates {
            let Some(r) = r else { continue };
            self.passed.remove(prefix);
            let want = match r {
                DesiredRoute::Forward(key) => match self.groups.get(key) {
                    Some(g) if !failed.contains(key) => xe_route {
                        group: g.id,
                        kind: RT_UNICAST,
                        flags: if self.pins(prefix) { ROUTE_PIN } else { 0 },
                        ..Default::default()
                    },
                    _ => {
                        if failed.contains(key) {
                            self.passed.insert(*prefix);
                        }
                        pass()
                    }
                },
                DesiredRoute::Local => xe_route {
                    kind: RT_LOCAL,
                    ..Default::default()
                },
                DesiredRoute::Blackhole => xe_route {
                    kind: RT_BLACKHOLE,
                    ..Default::default()
                },
                DesiredRoute::ToKernel => pass(),
                DesiredRoute::Refuse => xe_route {
                    kind: RT_PROHIBIT,
                    ..Default::default()
                },
            };
            if let Some(w) = self.demoted.get_mut(prefix) {
                // Passes while a longer prefix waits; then gets this.
                *w = want;
                continue;
            }
            if let Plan::Write(new) = self.plan_route(prefix, want, none_held) {
                pending.push((*prefix, want, new));
                if pending.len() == WRITE_CHUNK {
                    self.write_pending(&mut pending, dp, st);
                }
            }
        }
        self.write_pending(&mut pending, dp, st);
        self.demote_covers(dp, st);
        self.retry.extend(self.passed.iter().copied());
        self.retry.extend(self.unwritten.keys().copied());
    }

    /// Writes the planned routes in one batch and records the outcome;
    /// `pending` is left empty.
    fn write_pending(
        &mut self,
        pending: &mut Vec<(Prefix, xe_route, bool)>,
        dp: &mut dyn TableWriter,
        st: &mut SyncStats,
    ) {
        let results = write_all(dp, pending);
        for ((prefix, want, new), r) in pending.drain(..).zip(results) {
            self.finish_route(&prefix, want, new, r, st);
        }
    }

    /// Writes `want` for `prefix` unless the maps hold it already; a new
    /// route that finds no room stays out (and is retried). Whether the maps
    /// now hold `want`.
    fn write_route(
        &mut self,
        prefix: &Prefix,
        want: xe_route,
        dp: &mut dyn TableWriter,
        st: &mut SyncStats,
    ) -> bool {
        match self.plan_route(prefix, want, false) {
            Plan::Holds => true,
            Plan::NoRoom => false,
            Plan::Write(new) => {
                let r = write(dp, prefix, &want);
                self.finish_route(prefix, want, new, r, st)
            }
        }
    }

    /// Whether `want` for `prefix` is to be written: not if the maps hold it
    /// already, nor if it is new and finds no room (it stays out and is
    /// retried). A new route to be written is counted at once, so the next
    /// one planned sees the room it takes. With `known_new` the maps are
    /// known to hold nothing for it, and it is not looked up.
    fn plan_route(&mut self, prefix: &Prefix, want: xe_route, known_new: bool) -> Plan {
        let held = if known_new {
            None
        } else {
            self.routes.get(prefix)
        };
        let new = match held {
            Some(w) if w.group == want.group && w.kind == want.kind && w.flags == want.flags => {
                return Plan::Holds
            }
            Some(_) => false,
            None => true,
        };
        if new {
            if let Some(limit) = self.no_room_for(prefix) {
                self.unwritten.insert(*prefix, limit);
                self.short
                    .note(limit, format!("route {prefix}"), ROUTE_STATUS, None);
                return Plan::NoRoom;
            }
            self.counted(prefix, true);
        }
        Plan::Write(new)
    }

    /// Records the result of writing `want` for `prefix`; whether the maps
    /// now hold it.
    fn finish_route(
        &mut self,
        prefix: &Prefix,
        want: xe_route,
        new: bool,
        written: dataplane::Result<()>,
        st: &mut SyncStats,
    ) -> bool {
        match written {
            Ok(()) => {
                self.unwritten.remove(prefix);
                self.routes.insert(*prefix, want);
                st.routes_written += 1;
                true
            }
            Err(e) => {
                // The writer itself finds two tables full: the DIR-24-8
                // chunks (they return after a grace period) and the IPv6
                // search's entries (routes and their markers; sized from
                // max_routes_v6).
                let limit = match e {
                    dataplane::Error::TableFull { .. } if prefix.addr.is_ipv6() => Limit::RoutesV6,
                    dataplane::Error::TableFull { .. } => Limit::DirChunks,
                    _ => Limit::Write,
                };
                // Named only when something is noted (formatting it for
                // every route written cost each one an allocation).
                let what = format!("route {prefix}");
                if new {
                    self.counted(prefix, false);
                    self.unwritten.insert(*prefix, limit);
                    self.short
                        .note(limit, what, ROUTE_STATUS, Some(e.to_string()));
                } else {
                    self.retry.insert(*prefix);
                    self.short
                        .note(limit, what, OLD_ENTRY_STATUS, Some(e.to_string()));
                }
                false
            }
        }
    }

    /// The table a new route lacks room in, if any.
    fn no_room_for(&self, p: &Prefix) -> Option<Limit> {
        match p.addr {
            IpAddr::V4(_) => {
                if self.count_v4 >= self.limits.routes_v4 {
                    return Some(Limit::RoutesV4);
                }
                let chunk = chunk_of(p)?;
                (!self.chunks.contains_key(&chunk)
                    && self.chunks.len() >= self.limits.dir_chunks as usize)
                    .then_some(Limit::DirChunks)
            }
            IpAddr::V6(_) => (self.count_v6 >= self.limits.routes_v6).then_some(Limit::RoutesV6),
        }
    }

    /// Counts a route added to (or removed from) the maps.
    fn counted(&mut self, p: &Prefix, added: bool) {
        let n = match p.addr {
            IpAddr::V4(_) => &mut self.count_v4,
            IpAddr::V6(_) => &mut self.count_v6,
        };
        *n = if added { *n + 1 } else { n.saturating_sub(1) };
        if let Some(c) = chunk_of(p) {
            let k = self.chunks.entry(c).or_default();
            *k = if added { *k + 1 } else { k.saturating_sub(1) };
            if *k == 0 {
                self.chunks.remove(&c);
            }
        }
    }

    /// Counts the routes of adopted maps.
    pub(super) fn count_routes(&mut self) {
        (self.count_v4, self.count_v6) = (0, 0);
        self.chunks.clear();
        let all: Vec<Prefix> = self.routes.keys().copied().collect();
        for p in &all {
            self.counted(p, true);
        }
    }

    /// Packets to a prefix that is not in the maps meet the longest shorter
    /// prefix that is: that one passes them to the kernel (whose route
    /// decides) instead of forwarding them its own way, until the longer
    /// prefix is written. Then it gets its own entry back.
    fn demote_covers(&mut self, dp: &mut dyn TableWriter, st: &mut SyncStats) {
        if self.unwritten.is_empty() && self.demoted.is_empty() {
            return;
        }
        let mut need: HashMap<Prefix, Limit> = HashMap::new();
        for (u, limit) in &self.unwritten {
            if let Some(c) = (0..u.len)
                .rev()
                .map(|l| covering(u, l))
                .find(|c| self.routes.contains_key(c))
            {
                need.entry(c).or_insert(*limit);
            }
        }
        let restore: Vec<Prefix> = self
            .demoted
            .keys()
            .filter(|c| !need.contains_key(*c))
            .copied()
            .collect();
        for c in restore {
            if let Some(want) = self.demoted.remove(&c) {
                self.write_route(&c, want, dp, st);
            }
        }
        for (c, limit) in need {
            if !self.demoted.contains_key(&c) {
                let Some(cur) = self.routes.get(&c).copied() else {
                    continue;
                };
                if matches!(cur.kind, RT_UNREACHABLE | RT_PROHIBIT | RT_LOCAL) {
                    continue; // it passes already
                }
                if !self.write_route(&c, pass(), dp, st) {
                    continue;
                }
                self.demoted.insert(c, cur);
            }
            self.short
                .note(limit, format!("route {c}"), COVER_STATUS, None);
        }
    }
}
