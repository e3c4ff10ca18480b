//! `top`'s figures, pure: rates between two readings of the counters (per next hop, per egress port, per verdict), each group's balance against its weights, and the daemon's sync activity.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use dataplane::abi::{xe_counter, Verdict};
use serde::Serialize;

use super::balance::{groups, GroupBalance};
use crate::listings::{GroupListing, NexthopListing};
use crate::status::Activity;

/// A daemon whose status is older than this is said not to update it (it
/// writes one about every second).
pub const STALE_MS: u64 = 5_000;

/// One read of the counters and of the daemon's status.
#[derive(Debug, Clone)]
pub struct Reading {
    /// Monotonic time of the read (the rates' clock).
    pub at: Instant,
    /// Wall-clock ms (for the ages of the daemon's timestamps).
    pub wall_ms: u64,
    /// Per verdict, the AF_XDP engine's included.
    pub verdicts: Vec<(Verdict, xe_counter)>,
    /// The AF_XDP engine's share of `verdicts` (empty: no engine counters).
    pub engine: Vec<(Verdict, xe_counter)>,
    /// Redirected frames the kernel refused (not in `forward`).
    pub tx_refused: u64,
    /// Per next hop (the program's and the engine's).
    pub nexthops: BTreeMap<u32, xe_counter>,
    pub activity: Option<Activity>,
    /// Whether the process that wrote `activity` still runs.
    pub daemon_alive: bool,
}

/// What the maps hold, with the daemon's names for it: read less often
/// than the counters.
#[derive(Debug, Clone, Default)]
pub struct Structure {
    /// The next hops of every group.
    pub nexthops: Vec<NexthopListing>,
    pub groups: Vec<GroupListing>,
    /// (prefix, group) of every route through a group.
    pub routes: Vec<(String, u32)>,
    /// Where the names come from, when a running daemon did not write them.
    pub note: Option<String>,
}

/// A counter's rate over one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rate {
    /// Packets per second; None: no rate this time (see `reset`, else the
    /// counter was not read before).
    pub pps: Option<f64>,
    /// Bits per second of the frames as the program saw them (Ethernet
    /// header included, no FCS).
    pub bps: Option<f64>,
    /// The counter went back (the maps were made anew): no rate.
    pub reset: bool,
}

impl Rate {
    /// From `prev` to `cur` over `secs`.
    pub fn between(prev: Option<xe_counter>, cur: xe_counter, secs: f64) -> Rate {
        match prev {
            _ if secs <= 0.0 => Rate::default(),
            None => Rate::default(),
            Some(p) if cur.packets < p.packets || cur.bytes < p.bytes => Rate {
                reset: true,
                ..Rate::default()
            },
            Some(p) => Rate {
                pps: Some((cur.packets - p.packets) as f64 / secs),
                bps: Some(8.0 * (cur.bytes - p.bytes) as f64 / secs),
                reset: false,
            },
        }
    }

    /// The sum of the rates that are known (None if none is); a reset if any is.
    pub fn sum<'a>(rates: impl IntoIterator<Item = &'a Rate>) -> Rate {
        let mut s = Rate::default();
        for r in rates {
            s.pps = add(s.pps, r.pps);
            s.bps = add(s.bps, r.bps);
            s.reset |= r.reset;
        }
        s
    }

    /// For sorting: an unknown rate sorts as zero.
    pub fn pps_or_zero(&self) -> f64 {
        self.pps.unwrap_or(0.0)
    }

    pub fn bps_or_zero(&self) -> f64 {
        self.bps.unwrap_or(0.0)
    }
}

fn add(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

/// Where a verdict's packets go.
pub fn goes(v: Verdict) -> &'static str {
    match v {
        Verdict::Forward => "forwarded",
        Verdict::DropTruncated | Verdict::DropMalformed | Verdict::DropBlackhole => "dropped",
        _ => "kernel",
    }
}

/// Why a verdict's packets go where they go, in a few words (the operator's
/// guide's table has the whole reason).
pub fn why(v: Verdict) -> &'static str {
    match v {
        Verdict::Forward => "redirected to the next hop",
        Verdict::PassNotIp => "not IP (ARP, LLDP, ...)",
        Verdict::PassMulticast => "multicast or broadcast",
        Verdict::PassSpecial => "martian or link-local address",
        Verdict::PassLocal => "to this host",
        Verdict::PassNoRoute => "no route, unreachable/prohibit, or no room",
        Verdict::PassTtl => "TTL <= 1: time exceeded",
        Verdict::PassNexthopDown => "no live member, link down, neighbour unresolved",
        Verdict::PassMtu => "over the MTU",
        Verdict::PassNoTxport => "egress port does not send redirected frames",
        Verdict::PassNotPort => "ingress port not attached",
        Verdict::PassOtherhost => "to another MAC",
        Verdict::PassVlan => "VLAN-tagged",
        Verdict::PassNoForwarding => "forwarding off on the ingress port",
        Verdict::PassSource => "source refused, or rp_filter on",
        Verdict::DropTruncated => "header cut short",
        Verdict::DropMalformed => "malformed header",
        Verdict::DropBlackhole => "blackhole route",
    }
}

/// The daemon, as its status says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DaemonState {
    pub pid: Option<u32>,
    /// `running`, `not-updating` (its status is older than 5 s), `ended`
    /// (its process is gone) or `none` (no status: maps written by `attach`,
    /// or a daemon that stopped).
    pub state: &'static str,
    /// `xdp` or `afxdp`, as the daemon says.
    pub engine: Option<String>,
    /// Seconds since it last wrote its status.
    pub status_age_s: Option<f64>,
}

impl DaemonState {
    fn of(r: &Reading) -> DaemonState {
        match &r.activity {
            None => DaemonState {
                pid: None,
                state: "none",
                engine: None,
                status_age_s: None,
            },
            Some(a) => {
                let age = r.wall_ms.saturating_sub(a.written_ms);
                DaemonState {
                    pid: Some(a.pid),
                    state: if !r.daemon_alive {
                        "ended"
                    } else if age > STALE_MS {
                        "not-updating"
                    } else {
                        "running"
                    },
                    engine: Some(a.engine.clone()),
                    status_age_s: Some(age as f64 / 1000.0),
                }
            }
        }
    }
}

/// The daemon's sync activity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncActivity {
    /// Netlink events per second between its last two statuses (None: only
    /// one status seen yet, or the daemon changed).
    pub events_per_s: Option<f64>,
    pub syncs_per_s: Option<f64>,
    pub events: u64,
    pub syncs: u64,
    /// Full re-dumps, netlink overruns and anti-entropy repairs since it started.
    pub redumps: u64,
    pub resyncs: u64,
    pub entropy_repairs: u64,
    /// Seconds since the last full re-dump.
    pub last_redump_ago_s: Option<f64>,
    pub buckets_moved: u64,
    pub buckets_moved_last_minute: u64,
    /// Event -> map latency, µs.
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
}

/// Totals by where packets go.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub forwarded: Rate,
    pub kernel: Rate,
    pub dropped: Rate,
    /// Redirected, then refused by the egress port (no bytes counted).
    pub tx_refused: Rate,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerdictRate {
    pub verdict: &'static str,
    /// `forwarded`, `kernel` or `dropped`.
    pub goes: &'static str,
    pub why: &'static str,
    pub packets: u64,
    pub bytes: u64,
    #[serde(flatten)]
    pub rate: Rate,
    /// The AF_XDP engine's part of `pps`.
    pub afxdp_pps: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NexthopRate {
    pub id: u32,
    pub gateway: Option<IpAddr>,
    /// Its egress port.
    pub dev: String,
    pub usable: bool,
    /// The groups it is a member of.
    pub groups: Vec<u32>,
    pub packets: u64,
    pub bytes: u64,
    #[serde(flatten)]
    pub rate: Rate,
}

/// An egress port: the sum of its next hops (nothing counts per ingress port).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortRate {
    pub dev: String,
    pub direction: &'static str,
    pub nexthops: Vec<u32>,
    pub packets: u64,
    pub bytes: u64,
    #[serde(flatten)]
    pub rate: Rate,
}

/// One sample: every figure `top` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds between the two reads (monotonic clock).
    pub interval_s: f64,
    /// Wall-clock ms of the second read.
    pub taken_ms: u64,
    pub daemon: DaemonState,
    pub sync: Option<SyncActivity>,
    pub totals: Totals,
    pub verdicts: Vec<VerdictRate>,
    pub nexthops: Vec<NexthopRate>,
    /// Egress ports: their next hops summed.
    pub ports: Vec<PortRate>,
    pub groups: Vec<GroupBalance>,
    /// Where the names come from when a running daemon did not write them.
    pub note: Option<String>,
}

/// Turns readings into samples: each new reading against the one before.
#[derive(Debug, Default)]
pub struct Sampler {
    prev: Option<Reading>,
    /// The daemon's last two distinct statuses (it writes one a second, so
    /// two reads may see the same one).
    statuses: (Option<Activity>, Option<Activity>),
}

impl Sampler {
    /// Takes `cur`; the sample since the reading before (None for the first).
    pub fn push(&mut self, cur: Reading, s: &Structure) -> Option<Sample> {
        if let Some(a) = &cur.activity {
            let newer = self.statuses.1.as_ref().is_none_or(|b| {
                a.written_ms != b.written_ms || a.pid != b.pid || a.events < b.events
            });
            if newer {
                self.statuses.0 = self.statuses.1.replace(a.clone());
            }
        }
        let sample = self
            .prev
            .as_ref()
            .map(|prev| sample(prev, &cur, s, &self.statuses));
        self.prev = Some(cur);
        sample
    }
}

fn sample(
    prev: &Reading,
    cur: &Reading,
    s: &Structure,
    statuses: &(Option<Activity>, Option<Activity>),
) -> Sample {
    let secs = cur.at.duration_since(prev.at).as_secs_f64();
    let verdicts = verdicts(prev, cur, secs);
    let nexthops = nexthops(prev, cur, s, secs);
    let ports = ports(&nexthops);
    let groups = groups(s, &nexthops);
    let by = |goes_to: &str| {
        Rate::sum(
            verdicts
                .iter()
                .filter(|v| v.goes == goes_to)
                .map(|v| &v.rate),
        )
    };
    let refused = |r: &Reading| xe_counter {
        packets: r.tx_refused,
        bytes: 0,
    };
    let tx_refused = Rate {
        bps: None,
        ..Rate::between(Some(refused(prev)), refused(cur), secs)
    };
    Sample {
        interval_s: secs,
        taken_ms: cur.wall_ms,
        daemon: DaemonState::of(cur),
        sync: cur
            .activity
            .as_ref()
            .map(|a| sync(a, cur.wall_ms, statuses)),
        totals: Totals {
            forwarded: by("forwarded"),
            kernel: by("kernel"),
            dropped: by("dropped"),
            tx_refused,
        },
        verdicts,
        nexthops,
        ports,
        groups,
        note: s.note.clone(),
    }
}

fn verdicts(prev: &Reading, cur: &Reading, secs: f64) -> Vec<VerdictRate> {
    let find = |list: &[(Verdict, xe_counter)], v: Verdict| {
        list.iter().find(|(w, _)| *w == v).map(|(_, c)| *c)
    };
    cur.verdicts
        .iter()
        .map(|(v, c)| {
            let engine = find(&cur.engine, *v)
                .map(|e| Rate::between(find(&prev.engine, *v), e, secs).pps)
                .unwrap_or_default();
            VerdictRate {
                verdict: v.name(),
                goes: goes(*v),
                why: why(*v),
                packets: c.packets,
                bytes: c.bytes,
                rate: Rate::between(find(&prev.verdicts, *v), *c, secs),
                afxdp_pps: engine,
            }
        })
        .collect()
}

fn nexthops(prev: &Reading, cur: &Reading, s: &Structure, secs: f64) -> Vec<NexthopRate> {
    let mut groups_of: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    for g in &s.groups {
        for nh in g.row.members.keys().filter(|nh| **nh != 0) {
            groups_of.entry(*nh).or_default().insert(g.row.id);
        }
    }
    s.nexthops
        .iter()
        .filter_map(|n| {
            let id = n.row.id;
            let c = *cur.nexthops.get(&id)?;
            Some(NexthopRate {
                id,
                gateway: n.gateway,
                dev: n.row.dev.clone(),
                usable: n.row.usable,
                groups: groups_of
                    .get(&id)
                    .map(|g| g.iter().copied().collect())
                    .unwrap_or_default(),
                packets: c.packets,
                bytes: c.bytes,
                rate: Rate::between(prev.nexthops.get(&id).copied(), c, secs),
            })
        })
        .collect()
}

fn ports(nexthops: &[NexthopRate]) -> Vec<PortRate> {
    let mut by_dev: BTreeMap<&str, Vec<&NexthopRate>> = BTreeMap::new();
    for n in nexthops {
        by_dev.entry(&n.dev).or_default().push(n);
    }
    by_dev
        .into_iter()
        .map(|(dev, ns)| PortRate {
            dev: dev.to_string(),
            direction: "egress",
            nexthops: ns.iter().map(|n| n.id).collect(),
            packets: ns.iter().map(|n| n.packets).sum(),
            bytes: ns.iter().map(|n| n.bytes).sum(),
            rate: Rate::sum(ns.iter().map(|n| &n.rate)),
        })
        .collect()
}

fn sync(
    a: &Activity,
    wall_ms: u64,
    statuses: &(Option<Activity>, Option<Activity>),
) -> SyncActivity {
    let per_s = |f: fn(&Activity) -> u64| -> Option<f64> {
        let (Some(old), Some(new)) = statuses else {
            return None;
        };
        let ms = new.written_ms.checked_sub(old.written_ms)?;
        (new.pid == old.pid && ms > 0 && f(new) >= f(old))
            .then(|| (f(new) - f(old)) as f64 * 1000.0 / ms as f64)
    };
    SyncActivity {
        events_per_s: per_s(|a| a.events),
        syncs_per_s: per_s(|a| a.syncs),
        events: a.events,
        syncs: a.syncs,
        redumps: a.redumps,
        resyncs: a.resyncs,
        entropy_repairs: a.entropy_repairs,
        last_redump_ago_s: a
            .last_redump_ms
            .map(|t| wall_ms.saturating_sub(t) as f64 / 1000.0),
        buckets_moved: a.buckets_moved,
        buckets_moved_last_minute: a.buckets_moved_last_minute,
        latency_p50_us: a.latency_p50_us,
        latency_p99_us: a.latency_p99_us,
    }
}

#[cfg(test)]
#[path = "sample_tests.rs"]
mod tests;
