//! Prometheus text endpoint of the daemon (opt-in address): verdict and next-hop counters, group imbalance, resyncs, event->map latency.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use dataplane::loader::{pinned_nexthop_counters, pinned_verdict_counters};
use parking_lot::Mutex;

/// What the daemon publishes after each sync.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub syncs: u64,
    pub resyncs: u64,
    pub events: u64,
    /// (quantile, seconds) of the event -> map latency.
    pub latency: Vec<(f64, f64)>,
    /// (group id, max |held/wanted - 1| over members).
    pub imbalance: Vec<(u32, f64)>,
    /// (next-hop id, egress device) in use.
    pub nexthops: Vec<(u32, String)>,
    /// (limit, objects waiting for room in it now): next hops, groups,
    /// ports or routes not written for want of room (or, under
    /// "map_write", because a write failed); every limit listed.
    pub shortfalls: Vec<(&'static str, u64)>,
    /// Routes whose packets the program passes to the kernel for want of room.
    pub routes_to_kernel: u64,
    /// Netlink messages skipped because they did not decode.
    pub undecodable: u64,
}

pub type Shared = Arc<Mutex<Snapshot>>;

/// Renders the metrics page.
pub fn render(pin_dir: &std::path::Path, snap: &Snapshot) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    };
    metric(
        "xdp_ecmp_verdict_packets_total",
        "counter",
        "Packets by forwarding verdict.",
    );
    let verdicts = pinned_verdict_counters(pin_dir).unwrap_or_default();
    let mut body = String::new();
    for (v, c) in &verdicts {
        body.push_str(&format!(
            "xdp_ecmp_verdict_packets_total{{verdict=\"{}\"}} {}\n",
            v.name(),
            c.packets
        ));
    }
    out.push_str(&body);
    out.push_str("# HELP xdp_ecmp_verdict_bytes_total Bytes by forwarding verdict.\n# TYPE xdp_ecmp_verdict_bytes_total counter\n");
    for (v, c) in &verdicts {
        out.push_str(&format!(
            "xdp_ecmp_verdict_bytes_total{{verdict=\"{}\"}} {}\n",
            v.name(),
            c.bytes
        ));
    }
    let ids: Vec<u32> = snap.nexthops.iter().map(|n| n.0).collect();
    let counters = pinned_nexthop_counters(pin_dir, &ids).unwrap_or_default();
    out.push_str("# HELP xdp_ecmp_nexthop_packets_total Packets forwarded per next hop.\n# TYPE xdp_ecmp_nexthop_packets_total counter\n");
    for ((id, dev), (_, c)) in snap.nexthops.iter().zip(&counters) {
        out.push_str(&format!(
            "xdp_ecmp_nexthop_packets_total{{nexthop=\"{id}\",dev=\"{dev}\"}} {}\n",
            c.packets
        ));
    }
    out.push_str("# HELP xdp_ecmp_nexthop_bytes_total Bytes forwarded per next hop.\n# TYPE xdp_ecmp_nexthop_bytes_total counter\n");
    for ((id, dev), (_, c)) in snap.nexthops.iter().zip(&counters) {
        out.push_str(&format!(
            "xdp_ecmp_nexthop_bytes_total{{nexthop=\"{id}\",dev=\"{dev}\"}} {}\n",
            c.bytes
        ));
    }
    out.push_str("# HELP xdp_ecmp_group_imbalance Largest |held/wanted - 1| over a group's members (0 = balanced).\n# TYPE xdp_ecmp_group_imbalance gauge\n");
    for (g, x) in &snap.imbalance {
        out.push_str(&format!("xdp_ecmp_group_imbalance{{group=\"{g}\"}} {x}\n"));
    }
    for (name, help, v) in [
        (
            "xdp_ecmp_syncs_total",
            "Reconciliations written to the maps.",
            snap.syncs,
        ),
        (
            "xdp_ecmp_resyncs_total",
            "Full re-dumps after netlink overruns.",
            snap.resyncs,
        ),
        (
            "xdp_ecmp_netlink_events_total",
            "Netlink event batches applied.",
            snap.events,
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
        ));
    }
    out.push_str("# HELP xdp_ecmp_event_to_map_seconds Netlink event to maps written.\n# TYPE xdp_ecmp_event_to_map_seconds summary\n");
    for (q, v) in &snap.latency {
        out.push_str(&format!(
            "xdp_ecmp_event_to_map_seconds{{quantile=\"{q}\"}} {v}\n"
        ));
    }
    out
}

/// Serves GET /metrics on `addr` from a thread.
pub fn serve(addr: SocketAddr, pin_dir: PathBuf, shared: Shared) -> Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("metrics address {addr}"))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                // Drain the request headers.
                let mut h = String::new();
                while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
                    h.clear();
                }
                let (status, body) = if line.starts_with("GET /metrics") {
                    let snap = shared.lock().clone();
                    ("200 OK", render(&pin_dir, &snap))
                } else {
                    ("404 Not Found", "try /metrics\n".to_string())
                };
                let mut w = &stream;
                let _ = write!(
                    w,
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        })
        .context("starting the metrics thread")?;
    Ok(())
}
