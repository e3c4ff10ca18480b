//! The flow tables as `show flows` and `flush-flows` see it: fill, events and evictions, flows per next hop, the entries seen last, and flushing by destination.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Result;
use dataplane::abi::{xe_flow, xe_pin, PIN_CLOSING};
use dataplane::Dataplane;
use serde::Serialize;

use crate::inspect::{ifname, mac};
use crate::state::{contains, Prefix};

/// One entry of the flow table.
#[derive(Debug, Clone, Serialize)]
pub struct FlowRow {
    /// The flow's hashed fields (those the policy leaves out read 0).
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// The path it is pinned to, and where that leads now.
    pub path: u32,
    pub egress: Option<String>,
    /// Seconds since its last packet.
    pub idle_s: f64,
    /// A FIN was seen: it ends after the FIN timeout.
    pub closing: bool,
}

/// Flows per path.
#[derive(Debug, Clone, Serialize)]
pub struct PathRow {
    pub path: u32,
    /// Its next hop now (none: the path left every group; its flows are
    /// hashed again by their next packet).
    pub nexthop: Option<u32>,
    pub egress: Option<String>,
    pub lladdr: Option<String>,
    pub flows: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlowSummary {
    /// Entries held, both families, and by family.
    pub entries: u64,
    pub entries_v4: u64,
    pub entries_v6: u64,
    /// Entries each family's table holds at most.
    pub capacity: u32,
    /// What the program's flow table did since it was made, by event.
    pub events: BTreeMap<&'static str, u64>,
    /// Entries that gave way to new flows (the table was full): inserted,
    /// less those ended, flushed and still held.
    pub evicted: u64,
    pub per_path: Vec<PathRow>,
    /// The entries seen last, most recent first.
    pub latest: Vec<FlowRow>,
    /// The AF_XDP engine's own tables (one per worker, in the daemon), as
    /// the daemon last stored them: entries and events (0 without it).
    pub engine_entries: u64,
    pub engine_events: BTreeMap<&'static str, u64>,
}

fn addr(words: &[u32; 4], v6: bool) -> IpAddr {
    if v6 {
        let mut b = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            b[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        IpAddr::V4(Ipv4Addr::from(words[0].to_ne_bytes()))
    }
}

/// The flow's destination as the key holds it.
pub fn destination(k: &xe_flow) -> IpAddr {
    addr(&k.dst, k.is_v6 != 0)
}

/// Where each path leads now: path → (next-hop id, egress, lladdr), from
/// the group memberships.
fn paths(dp: &Dataplane) -> BTreeMap<u32, (u32, String, String)> {
    let mut out = BTreeMap::new();
    for (_, path, id) in dp.pin_members() {
        if let Ok(nh) = dp.nexthop(id) {
            out.insert(path, (id, ifname(nh.ifindex), mac(&nh.dmac)));
        }
    }
    out
}

/// The table's summary with the `latest` entries seen last. `now` and `hz`:
/// the kernel's jiffies and tick rate, which entries are stamped by.
pub fn summary(dp: &Dataplane, latest: usize, now: u32, hz: u32) -> Result<FlowSummary> {
    let entries: Vec<(xe_flow, xe_pin)> = dp.flow_entries();
    let counts = dp.pin_counts()?;
    let v6 = entries.iter().filter(|(k, _)| k.is_v6 != 0).count() as u64;
    let v4 = entries.len() as u64 - v6;
    let evicted = dataplane::flows::FlowStats::new(counts, v4, v6, dp.sizes().flows).evicted();
    let leads = paths(dp);
    let mut per: BTreeMap<u32, u64> = BTreeMap::new();
    for (_, p) in &entries {
        *per.entry(p.path).or_default() += 1;
    }
    let per_path = per
        .into_iter()
        .map(|(path, flows)| {
            let l = leads.get(&path);
            PathRow {
                path,
                nexthop: l.map(|l| l.0),
                egress: l.map(|l| l.1.clone()),
                lladdr: l.map(|l| l.2.clone()),
                flows,
            }
        })
        .collect();
    let mut sorted = entries.clone();
    sorted.sort_by_key(|(_, p)| now.wrapping_sub(p.seen));
    let latest = sorted
        .iter()
        .take(latest)
        .map(|(k, p)| FlowRow {
            proto: k.proto,
            src: addr(&k.src, k.is_v6 != 0),
            dst: destination(k),
            sport: k.sport,
            dport: k.dport,
            path: p.path,
            egress: leads.get(&p.path).map(|l| l.1.clone()),
            idle_s: f64::from(now.wrapping_sub(p.seen)) / f64::from(hz.max(1)),
            closing: p.flags & PIN_CLOSING != 0,
        })
        .collect();
    let (engine, engine_entries) = dp.engine_pin_counts();
    Ok(FlowSummary {
        engine_entries,
        engine_events: engine.iter().map(|(e, n)| (e.name(), *n)).collect(),
        entries: entries.len() as u64,
        entries_v4: v4,
        entries_v6: v6,
        capacity: dp.sizes().flows,
        events: counts.iter().map(|(e, n)| (e.name(), *n)).collect(),
        evicted,
        per_path,
        latest,
    })
}

/// Removes the entries of flows to `within` (every entry if None); their
/// next packets are hashed again. Returns how many went.
pub fn flush(dp: &Dataplane, within: Option<Prefix>) -> Result<u64> {
    Ok(dp.flush_flows(&|k| {
        within.is_none_or(|p| {
            let dst = destination(k);
            let host = Prefix {
                addr: dst,
                len: if dst.is_ipv4() { 32 } else { 128 },
            };
            contains(&p, &host)
        })
    })?)
}

/// The summary as text.
pub fn print(s: &FlowSummary) {
    let ev: Vec<String> = s.events.iter().map(|(e, n)| format!("{e} {n}")).collect();
    println!(
        "flow tables: IPv4 {} and IPv6 {} of {} entries each; {}; evicted {}",
        s.entries_v4,
        s.entries_v6,
        s.capacity,
        ev.join(", "),
        s.evicted
    );
    if s.engine_events.values().any(|n| *n > 0) || s.engine_entries > 0 {
        let ev: Vec<String> = s
            .engine_events
            .iter()
            .map(|(e, n)| format!("{e} {n}"))
            .collect();
        println!(
            "AF_XDP engine's tables: {} entries; {} (listed only in its daemon)",
            s.engine_entries,
            ev.join(", ")
        );
    }
    if !s.per_path.is_empty() {
        println!("flows per next hop:");
    }
    for p in &s.per_path {
        match (&p.nexthop, &p.egress) {
            (Some(id), Some(e)) => println!(
                "  path {} nexthop {id} dev {e} lladdr {}: {} flows",
                p.path,
                p.lladdr.as_deref().unwrap_or("-"),
                p.flows
            ),
            _ => println!(
                "  path {} (in no group now: hashed again by their next packet): {} flows",
                p.path, p.flows
            ),
        }
    }
    if !s.latest.is_empty() {
        println!("seen last:");
    }
    for f in &s.latest {
        let sock = |a: &IpAddr, port: u16| match a {
            IpAddr::V6(_) => format!("[{a}]:{port}"),
            IpAddr::V4(_) => format!("{a}:{port}"),
        };
        println!(
            "  proto {} {} > {} path {} dev {} idle {:.1}s{}",
            f.proto,
            sock(&f.src, f.sport),
            sock(&f.dst, f.dport),
            f.path,
            f.egress.as_deref().unwrap_or("-"),
            f.idle_s,
            if f.closing { " closing" } else { "" }
        );
    }
}
