//! `top`'s words and cells, shared by the live view and `--once`: numbers with SI prefixes, the header lines, one table per part (next hops, egress ports, verdicts, groups), and the plain-text sample.

use super::balance::GroupBalance;
use super::sample::{Rate, Sample};
use super::view::View;

/// What the header says beside the sample.
#[derive(Debug, Clone)]
pub struct Meta {
    pub pin_dir: String,
    /// Seconds between samples, as asked.
    pub interval: f64,
    /// Wall-clock ms now (the age of a frozen sample).
    pub now_ms: u64,
    /// Why the last read failed (the pins went away), until one succeeds.
    pub problem: Option<String>,
}

/// Three significant digits with k, M, G: 0.5, 950, 4.01k, 12.3M.
pub fn si(x: f64) -> String {
    let a = x.abs();
    let (v, unit) = match a {
        _ if a < 1e3 => (x, ""),
        _ if a < 1e6 => (x / 1e3, "k"),
        _ if a < 1e9 => (x / 1e6, "M"),
        _ => (x / 1e9, "G"),
    };
    let v_abs = v.abs();
    match () {
        _ if unit.is_empty() && v_abs < 10.0 && v.fract() != 0.0 => format!("{v:.1}"),
        _ if unit.is_empty() => format!("{v:.0}"),
        _ if v_abs < 10.0 => format!("{v:.2}{unit}"),
        _ if v_abs < 100.0 => format!("{v:.1}{unit}"),
        _ => format!("{v:.0}{unit}"),
    }
}

/// A rate's cell: its value, `reset` (the counter went back) or `-` (not known).
pub fn cell(v: Option<f64>, r: &Rate) -> String {
    match v {
        _ if r.reset => "reset".into(),
        Some(v) => si(v),
        None => "-".into(),
    }
}

pub fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{:.1}%", 100.0 * x))
}

/// 5 s, 3 min, 2 h.
pub fn ago(secs: f64) -> String {
    match secs {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s => format!("{:.0} h", s / 3600.0),
    }
}

/// The first line: engine, daemon, interval, pins, sort, filter, FROZEN.
pub fn title(s: Option<&Sample>, meta: &Meta, view: &View) -> String {
    let d = s.map(|s| &s.daemon);
    let engine = d.and_then(|d| d.engine.as_deref()).unwrap_or("?");
    let daemon = match d {
        Some(d) => match d.pid {
            Some(pid) => format!("daemon pid {pid} {}", d.state),
            None => "no daemon".into(),
        },
        None => "daemon ?".into(),
    };
    let mut t = format!(
        "xdp-ecmp top | engine {engine} | {daemon} | every {:.1} s | pins {} | sort {} | filter {}",
        meta.interval,
        meta.pin_dir,
        view.sort.name(),
        view.filter.as_ref().map_or("-", |(t, _)| t.as_str())
    );
    if view.frozen {
        t += " | FROZEN";
        if let Some(s) = s {
            t += &format!(
                " ({} old)",
                ago(meta.now_ms.saturating_sub(s.taken_ms) as f64 / 1e3)
            );
        }
    }
    t
}

/// The daemon's sync activity, or why there is none.
pub fn sync_line(s: &Sample, meta: &Meta) -> String {
    let d = &s.daemon;
    let pid = d.pid.unwrap_or(0);
    let age = d.status_age_s.unwrap_or(0.0);
    match (d.state, &s.sync) {
        ("none", _) | (_, None) => format!(
            "no daemon is running for {} (no status): the counters only, names and weights as last written",
            meta.pin_dir
        ),
        ("ended", _) => format!("the daemon (pid {pid}) has ended: the counters only"),
        (state, Some(y)) => {
            let per_s = |x: Option<f64>| x.map_or_else(|| "-".into(), |x| format!("{x:.1}"));
            let redump = y
                .last_redump_ago_s
                .map_or_else(|| "never".into(), |a| format!("{} ago", ago(a)));
            let mut l = format!(
                "sync: {} events/s, {} syncs/s | last re-dump {redump} ({} in all) | buckets moved {} in the last minute ({} in all) | event->map p50 {} us p99 {} us",
                per_s(y.events_per_s),
                per_s(y.syncs_per_s),
                y.redumps,
                y.buckets_moved_last_minute,
                y.buckets_moved,
                y.latency_p50_us,
                y.latency_p99_us
            );
            if state == "not-updating" {
                l = format!("the daemon (pid {pid}) has not written its status for {}: ", ago(age)) + &l;
            }
            l
        }
    }
}

/// Forwarded, to the kernel, dropped, refused.
pub fn totals_line(s: &Sample) -> String {
    let t = &s.totals;
    let both = |r: &Rate| format!("{} pps {} bit/s", cell(r.pps, r), cell(r.bps, r));
    format!(
        "forwarded {} | to the kernel {} | dropped {} | tx-refused {} pps",
        both(&t.forwarded),
        both(&t.kernel),
        both(&t.dropped),
        cell(t.tx_refused.pps, &t.tx_refused)
    )
}

/// A table's heading and rows, as text cells.
#[derive(Debug, Clone, PartialEq)]
pub struct Cells {
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
    /// The columns aligned right (numbers).
    pub right: Vec<usize>,
}

pub fn nexthops(s: &Sample) -> Cells {
    Cells {
        header: vec!["id", "via", "egress", "pps", "bits/s", "packets", "groups"],
        right: vec![0, 3, 4, 5],
        rows: s
            .nexthops
            .iter()
            .map(|n| {
                let mut via = n.gateway.map_or_else(|| "-".into(), |g| g.to_string());
                if !n.usable {
                    via += " (unusable)";
                }
                vec![
                    n.id.to_string(),
                    via,
                    n.dev.clone(),
                    cell(n.rate.pps, &n.rate),
                    cell(n.rate.bps, &n.rate),
                    n.packets.to_string(),
                    join(&n.groups),
                ]
            })
            .collect(),
    }
}

pub fn ports(s: &Sample) -> Cells {
    Cells {
        header: vec!["egress port", "pps", "bits/s", "packets", "next hops"],
        right: vec![1, 2, 3],
        rows: s
            .ports
            .iter()
            .map(|p| {
                vec![
                    p.dev.clone(),
                    cell(p.rate.pps, &p.rate),
                    cell(p.rate.bps, &p.rate),
                    p.packets.to_string(),
                    join(&p.nexthops),
                ]
            })
            .collect(),
    }
}

/// The verdicts that counted anything, busiest first.
pub fn verdicts(s: &Sample) -> Cells {
    let mut v: Vec<_> = s
        .verdicts
        .iter()
        .filter(|v| v.packets > 0 || v.verdict == "forward")
        .collect();
    v.sort_by(|a, b| b.rate.pps_or_zero().total_cmp(&a.rate.pps_or_zero()));
    // The engine's column where it runs or counted something.
    let afxdp = s.daemon.engine.as_deref() == Some("afxdp")
        || s.verdicts
            .iter()
            .any(|v| v.afxdp_pps.is_some_and(|p| p > 0.0));
    let mut header = vec!["verdict", "to", "pps", "bits/s", "packets", "why"];
    let mut right = vec![2, 3, 4];
    if afxdp {
        header.insert(5, "afxdp pps");
        right.push(5);
    }
    Cells {
        header,
        right,
        rows: v
            .into_iter()
            .map(|v| {
                let mut row = vec![
                    v.verdict.to_string(),
                    v.goes.to_string(),
                    cell(v.rate.pps, &v.rate),
                    cell(v.rate.bps, &v.rate),
                    v.packets.to_string(),
                    v.why.to_string(),
                ];
                if afxdp {
                    row.insert(5, v.afxdp_pps.map_or_else(|| "-".into(), si));
                }
                row
            })
            .collect(),
    }
}

/// A group's first line: kind, buckets, routes, rate, imbalance.
pub fn group_title(g: &GroupBalance) -> String {
    let mut t = format!("group {} {} {} buckets", g.id, g.kind, g.buckets);
    if g.empty_buckets > 0 {
        t += &format!(" ({} empty: to the kernel)", g.empty_buckets);
    }
    t += &match g.route_count {
        0 => " | no route".into(),
        1 => format!(" | route {}", g.routes[0]),
        n => format!(" | {n} routes: {}, ...", g.routes[0]),
    };
    t += &format!(" | {} pps", cell(g.rate.pps, &g.rate));
    t += &format!(
        " | imbalance: buckets {} traffic {}",
        pct(g.bucket_imbalance),
        pct(g.traffic_imbalance)
    );
    if let Some(u) = g.unbalanced_for_s {
        t += &format!(" | unbalanced for {}", ago(u));
    }
    t
}

/// Each group's title row, then its members: weight, buckets and traffic,
/// each with its share.
pub fn groups(s: &Sample) -> Cells {
    let mut rows = Vec::new();
    for g in &s.groups {
        rows.push(vec![group_title(g)]);
        for m in &g.members {
            let who = match m.nexthop {
                Some(id) => format!("  nexthop {id}"),
                None => "  nexthop - (not written)".into(),
            };
            let via = match m.gateway {
                Some(gw) => format!("{who} via {gw} dev {}", m.dev),
                None => format!("{who} dev {}", m.dev),
            };
            let weight = match m.weight {
                Some(w) => format!("{w} = {}", pct(m.weight_share)),
                None => "-".into(),
            };
            let mut buckets = format!("{} = {}", m.buckets, pct(Some(m.bucket_share)));
            if let Some(w) = m.wanted.filter(|w| *w != m.buckets) {
                buckets += &format!(" (wants {w})");
            }
            let mut traffic = pct(m.traffic_share);
            if m.shared {
                traffic += " *";
            }
            let r = Rate {
                pps: m.pps,
                bps: m.bps,
                reset: false,
            };
            rows.push(vec![via, weight, buckets, traffic, cell(m.pps, &r)]);
        }
    }
    Cells {
        header: vec!["group / member", "weight", "buckets", "traffic", "pps"],
        rows,
        right: vec![4],
    }
}

/// What the groups' columns mean.
pub const GROUPS_LEGEND: &str = "buckets: its share of the buckets (of the flows hashed); traffic: its share of the members' packets/s; each against its weight's share; * in other groups too";

fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// Cells as aligned columns (a row of one cell spans the line).
pub fn columns(c: &Cells) -> Vec<String> {
    let mut width: Vec<usize> = c.header.iter().map(|h| h.chars().count()).collect();
    for r in c.rows.iter().filter(|r| r.len() > 1) {
        for (i, x) in r.iter().enumerate() {
            if i < width.len() {
                width[i] = width[i].max(x.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        cells
            .iter()
            .enumerate()
            .map(|(i, x)| match () {
                _ if n == 1 => x.to_string(),
                _ if c.right.contains(&i) => format!("{x:>w$}", w = width[i]),
                _ if i + 1 == n => x.to_string(),
                _ => format!("{x:<w$}", w = width[i]),
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = vec![line(c.header.clone())];
    out.extend(
        c.rows
            .iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out
}

/// One sample as plain text (`top --once`).
pub fn plain(s: &Sample, meta: &Meta, view: &View) -> String {
    let mut out = vec![
        format!(
            "{} | one sample over {:.2} s",
            title(Some(s), meta, view),
            s.interval_s
        ),
        sync_line(s, meta),
        totals_line(s),
    ];
    if let Some(n) = &s.note {
        out.push(n.clone());
    }
    for (part, cells) in [
        ("next hops (forwarded by each)", nexthops(s)),
        (
            "egress ports (their next hops summed; nothing counts per ingress port)",
            ports(s),
        ),
        ("verdicts (all ports)", verdicts(s)),
        ("groups", groups(s)),
    ] {
        out.push(String::new());
        out.push(format!("{part}:"));
        out.extend(columns(&cells));
    }
    out.push(GROUPS_LEGEND.into());
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_three_digits() {
        assert_eq!(si(0.0), "0");
        assert_eq!(si(0.5), "0.5");
        assert_eq!(si(950.0), "950");
        assert_eq!(si(4012.0), "4.01k");
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(si(999_000.0), "999k");
        assert_eq!(si(12_300_000.0), "12.3M");
        assert_eq!(si(2.5e9), "2.50G");
    }

    #[test]
    fn a_reset_and_an_unknown_rate_say_so() {
        let reset = Rate {
            reset: true,
            ..Rate::default()
        };
        assert_eq!(cell(None, &reset), "reset");
        assert_eq!(cell(None, &Rate::default()), "-");
        assert_eq!(pct(Some(1.0 / 3.0)), "33.3%");
        assert_eq!(ago(5.2), "5 s");
        assert_eq!(ago(600.0), "10 min");
    }

    #[test]
    fn columns_line_up_and_a_title_row_spans() {
        let c = Cells {
            header: vec!["a", "bb"],
            rows: vec![vec!["xyz".into(), "1".into()], vec!["a long title".into()]],
            right: vec![1],
        };
        assert_eq!(columns(&c), ["a    bb", "xyz   1", "a long title"]);
    }
}
