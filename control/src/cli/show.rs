//! `show` and `stats`: what the pinned maps hold, listed for people or as JSON.

use anyhow::Result;
use control::{inspect, listings, status};
use dataplane::pinned_verdict_counters;

use super::args::{Cli, ShowWhat};

pub(crate) fn stats(cli: &Cli, json: bool) -> Result<()> {
    let counters = pinned_verdict_counters(&cli.pin_dir)?;
    let failed = dataplane::txfail::pinned_tx_failures(&cli.pin_dir)?;
    // The AF_XDP engine's share (in the totals above), where it counted any.
    let engine: Vec<_> = dataplane::pinned_engine_counters(&cli.pin_dir)?
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, c)| c.packets != 0)
        .collect();
    // Flow pinning's table, where one is pinned (maps of this layout).
    let flows = dataplane::flows::PinnedFlows::open(&cli.pin_dir)
        .and_then(|f| f.stats())
        .ok();
    if json {
        let mut v: Vec<_> = counters
            .iter()
            .map(|(v, c)| serde_json::json!({"verdict": v.name(), "packets": c.packets, "bytes": c.bytes}))
            .collect();
        // Redirected, then refused by the kernel: not in `forward`.
        v.push(serde_json::json!({"tx_refused": true, "packets": failed}));
        for (verdict, c) in &engine {
            v.push(serde_json::json!({"engine": "afxdp", "verdict": verdict.name(), "packets": c.packets, "bytes": c.bytes}));
        }
        if let Some(f) = &flows {
            let events: serde_json::Map<String, serde_json::Value> = f
                .events
                .iter()
                .map(|(e, n)| (e.name().to_string(), (*n).into()))
                .collect();
            v.push(serde_json::json!({"flow_table": {"entries": f.entries, "entries_ipv4": f.entries_v4, "entries_ipv6": f.entries_v6, "capacity_per_family": f.capacity, "evicted": f.evicted(), "events": events}}));
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{:<20} {:>14} {:>16}", "verdict", "packets", "bytes");
        for (v, c) in counters {
            println!("{:<20} {:>14} {:>16}", v.name(), c.packets, c.bytes);
        }
        // Redirected, then refused by the kernel: not in `forward`.
        println!("{:<20} {:>14} {:>16}", "tx-refused", failed, "-");
        for (v, c) in &engine {
            let row = format!("  afxdp {}", v.name());
            println!("{row:<20} {:>14} {:>16}", c.packets, c.bytes);
        }
        if let Some(f) = &flows {
            println!(
                "flow tables: IPv4 {} and IPv6 {} of {} entries each, evicted {}",
                f.entries_v4,
                f.entries_v6,
                f.capacity,
                f.evicted()
            );
            for (e, n) in &f.events {
                println!("  {:<18} {:>14}", e.name(), n);
            }
        }
    }
    Ok(())
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub(crate) fn show(cli: &Cli, what: &ShowWhat, json: bool) -> Result<()> {
    if let ShowWhat::Stats = what {
        return stats(cli, json);
    }
    let dp = inspect::open(&cli.pin_dir)?;
    // The daemon's names for what the maps hold (gateways, the kernel's
    // ids, weights, timers), where it wrote them.
    let topology = match what {
        ShowWhat::Groups | ShowWhat::Nexthops | ShowWhat::Buckets { .. } => {
            let t = status::read_topology(&cli.pin_dir)?;
            if !json {
                if let Some(note) = listings::provenance(t.as_ref(), &status::dir_for(&cli.pin_dir))
                {
                    eprintln!("{note}");
                }
            }
            t
        }
        _ => None,
    };
    let known = listings::Known::new(topology.as_ref());
    match what {
        ShowWhat::Routes => {
            let rows = inspect::routes(&dp)?;
            if json {
                return print_json(&rows);
            }
            for r in rows {
                let pinned = if r.pinned { " pinned" } else { "" };
                match r.group {
                    Some(g) => println!("{} group {g}{pinned}", r.prefix),
                    None => println!("{} {}", r.prefix, r.kind),
                }
            }
        }
        ShowWhat::Groups => {
            let rows = known.groups(inspect::groups(&dp)?);
            if json {
                return print_json(&rows);
            }
            for g in &rows {
                for l in listings::group_lines(g) {
                    println!("{l}");
                }
            }
        }
        ShowWhat::Nexthops => {
            let rows = known.nexthops(inspect::nexthops(&dp)?);
            if json {
                return print_json(&rows);
            }
            for n in &rows {
                println!("{}", listings::nexthop_line(n));
            }
        }
        ShowWhat::Ports => {
            let rows = inspect::ports(&dp)?;
            if json {
                return print_json(&rows);
            }
            let on = |b: bool| if b { "on" } else { "off" };
            for p in rows {
                println!(
                    "{} ifindex {} mac {} ipv4-forwarding {} ipv6-forwarding {} ipv4-rp-filter {}",
                    p.dev,
                    p.ifindex,
                    p.mac,
                    on(p.ipv4_forwarding),
                    on(p.ipv6_forwarding),
                    on(p.ipv4_rp_filter)
                );
            }
        }
        ShowWhat::Buckets {
            group,
            png,
            moved_since,
        } => {
            let mut dp = dp;
            let (group, route) = inspect::group_or_route(&dp, group)?;
            let clock = dp.stamp_clock()?;
            let rows = known.buckets(
                group,
                route.as_deref(),
                inspect::buckets(&dp, group)?,
                clock,
            );
            if let Some(out) = png {
                let line = control::bucketmap::write(group, &rows, moved_since.as_deref(), out)?;
                println!("{line}");
                return Ok(());
            }
            if json {
                return print_json(&rows);
            }
            for b in &rows {
                println!("{}", listings::bucket_line(b));
            }
        }
        ShowWhat::Capacity => {
            let rows = dp.capacity()?;
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "table": r.table, "used": r.used, "limit": r.limit, "note": r.note,
                        })
                    })
                    .collect();
                return print_json(&v);
            }
            println!(
                "{:<22} {:>10} {:>10} {:>6}  what fills it",
                "table", "used", "limit", "use"
            );
            for r in rows {
                println!(
                    "{:<22} {:>10} {:>10} {:>5.1}%  {}",
                    r.table,
                    r.used,
                    r.limit,
                    100.0 * r.used as f64 / r.limit.max(1) as f64,
                    r.note
                );
            }
        }
        ShowWhat::Flows { top } => {
            let mut dp = dp;
            let clock = dp.stamp_clock()?;
            let s = control::flows::summary(&dp, *top, clock.jiffies, clock.hz)?;
            if json {
                return print_json(&s);
            }
            control::flows::print(&s);
        }
        ShowWhat::Stats => unreachable!(),
    }
    Ok(())
}
