//! Prometheus endpoint of the daemon (opt-in address): the page (verdict and next-hop counters, group imbalance, syncs, re-dumps, event->map latency) and the HTTP server that answers scrapes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use dataplane::abi::{xe_counter, Verdict};
use dataplane::{pinned_nexthop_counters, pinned_verdict_counters};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

/// What the daemon publishes after each sync.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub syncs: u64,
    pub resyncs: u64,
    pub redumps: u64,
    pub entropy_checks: u64,
    pub entropy_repairs: u64,
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

/// Every connection is closed 5 s after it was accepted, whatever it is
/// doing: a client that sends nothing, trickles its request or never reads
/// the answer holds one task that long, and never delays another scrape.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest request head read, in bytes: a longer one (an endless request
/// line) is answered 431 and the connection closed.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Connections served at once; more are closed as soon as they are accepted,
/// so a flood of clients costs at most this many buffers and descriptors.
pub const MAX_CLIENTS: usize = 256;

/// Renders the metrics page (Prometheus text format 0.0.4) from the counters
/// pinned under `pin_dir` and `snap`; counters that cannot be read (nothing
/// pinned there) are left out.
pub fn render(pin_dir: &Path, snap: &Snapshot) -> String {
    let verdicts = pinned_verdict_counters(pin_dir).unwrap_or_default();
    let tx_failed = dataplane::txfail::pinned_tx_failures(pin_dir).unwrap_or_default();
    let ids: Vec<u32> = snap.nexthops.iter().map(|n| n.0).collect();
    let counters = pinned_nexthop_counters(pin_dir, &ids).unwrap_or_default();
    let nexthops = snap
        .nexthops
        .iter()
        .zip(&counters)
        .map(|((id, dev), (_, c))| (*id, dev.clone(), *c))
        .collect();
    let engine = dataplane::pinned_engine_counters(pin_dir)
        .ok()
        .flatten()
        .unwrap_or_default();
    let flows = dataplane::flows::PinnedFlows::open(pin_dir)
        .and_then(|f| f.stats())
        .ok();
    page(Page {
        snap: snap.clone(),
        verdicts,
        engine,
        nexthops,
        tx_failed,
        flows,
    })
}

/// Everything one page shows, read before it is written.
#[derive(Debug)]
struct Page {
    snap: Snapshot,
    verdicts: Vec<(Verdict, xe_counter)>,
    /// The AF_XDP engine's share of `verdicts`.
    engine: Vec<(Verdict, xe_counter)>,
    /// Redirected frames the kernel refused (not in `forward`).
    tx_failed: u64,
    /// (next-hop id, egress device, counters).
    nexthops: Vec<(u32, String, xe_counter)>,
    /// The flow table (flow pinning), where it could be read.
    flows: Option<dataplane::flows::FlowStats>,
}

fn page(page: Page) -> String {
    let mut registry = Registry::with_prefix("xdp_ecmp");
    registry.register_collector(Box::new(page));
    let mut out = String::new();
    prometheus_text::encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

/// One metric family: a HELP and TYPE line, then one sample per label set.
fn family<L, M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, M)>,
) -> std::fmt::Result
where
    L: prometheus_client::encoding::EncodeLabelSet,
{
    let mut metric = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A metric family with one sample and no labels.
fn single<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: M,
) -> std::fmt::Result {
    value.encode(enc.encode_descriptor(name, help, None, value.metric_type())?)
}

impl Collector for Page {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        use MetricType::{Counter, Gauge};
        let verdict = |v: &Verdict| [("verdict", v.name().to_string())];
        let nexthop = |id: &u32, dev: &str| [("nexthop", id.to_string()), ("dev", dev.to_string())];
        let Page {
            snap,
            verdicts,
            engine,
            nexthops,
            tx_failed,
            flows,
        } = self;
        if let Some(f) = flows {
            family(
                &mut enc,
                "flow_table_events",
                "What the program's flow table did (flow pinning): hit, inserted, repinned (its next hop died or left the group, or the entry aged out), ended (TCP RST), flushed.",
                Counter,
                f.events
                    .iter()
                    .map(|(e, n)| ([("event", e.name())], ConstCounter::new(*n))),
            )?;
            family(
                &mut enc,
                "flow_table_entries",
                "Entries in each family's flow table.",
                Gauge,
                [("ipv4", f.entries_v4), ("ipv6", f.entries_v6)]
                    .map(|(fam, n)| ([("family", fam)], ConstGauge::new(n as i64))),
            )?;
            single(
                &mut enc,
                "flow_table_capacity",
                "Entries each family's flow table holds at most.",
                ConstGauge::new(i64::from(f.capacity)),
            )?;
            single(
                &mut enc,
                "flow_table_evicted",
                "Entries that gave way to new flows because the table was full (inserted less ended, flushed and held).",
                ConstCounter::new(f.evicted()),
            )?;
        }
        family(
            &mut enc,
            "verdict_packets",
            "Packets by forwarding verdict.",
            Counter,
            verdicts
                .iter()
                .map(|(v, c)| (verdict(v), ConstCounter::new(c.packets))),
        )?;
        family(
            &mut enc,
            "verdict_bytes",
            "Bytes by forwarding verdict.",
            Counter,
            verdicts
                .iter()
                .map(|(v, c)| (verdict(v), ConstCounter::new(c.bytes))),
        )?;
        family(
            &mut enc,
            "afxdp_verdict_packets",
            "Of verdict_packets, those the AF_XDP engine decided (forwarded, or decided otherwise than the program a moment before and dropped).",
            Counter,
            engine
                .iter()
                .map(|(v, c)| (verdict(v), ConstCounter::new(c.packets))),
        )?;
        family(
            &mut enc,
            "tx_refused_packets",
            "Redirected frames the kernel refused (the port stopped transmitting redirected frames); not counted as forward.",
            Counter,
            [(Vec::<(String, String)>::new(), ConstCounter::new(*tx_failed))],
        )?;
        family(
            &mut enc,
            "nexthop_packets",
            "Packets forwarded per next hop.",
            Counter,
            nexthops
                .iter()
                .map(|(id, dev, c)| (nexthop(id, dev), ConstCounter::new(c.packets))),
        )?;
        family(
            &mut enc,
            "nexthop_bytes",
            "Bytes forwarded per next hop.",
            Counter,
            nexthops
                .iter()
                .map(|(id, dev, c)| (nexthop(id, dev), ConstCounter::new(c.bytes))),
        )?;
        family(
            &mut enc,
            "group_imbalance",
            "Largest |held/wanted - 1| over a group's members (0 = balanced).",
            Gauge,
            snap.imbalance
                .iter()
                .map(|(g, x)| ([("group", *g)], ConstGauge::new(*x))),
        )?;
        single(
            &mut enc,
            "syncs",
            "Reconciliations written to the maps.",
            ConstCounter::new(snap.syncs),
        )?;
        single(
            &mut enc,
            "resyncs",
            "Full re-dumps after netlink overruns.",
            ConstCounter::new(snap.resyncs),
        )?;
        single(
            &mut enc,
            "redumps",
            "Re-dumps after a change that may have flushed kernel state without a message (link, address or nexthop object gone).",
            ConstCounter::new(snap.redumps),
        )?;
        single(
            &mut enc,
            "anti_entropy_checks",
            "Comparisons of the mirror with a fresh kernel dump.",
            ConstCounter::new(snap.entropy_checks),
        )?;
        single(
            &mut enc,
            "anti_entropy_repairs",
            "Differences found by anti-entropy and repaired: each is a missed kernel change.",
            ConstCounter::new(snap.entropy_repairs),
        )?;
        single(
            &mut enc,
            "netlink_events",
            "Netlink event batches applied.",
            ConstCounter::new(snap.events),
        )?;
        single(
            &mut enc,
            "netlink_undecodable",
            "Netlink messages skipped because they did not decode.",
            ConstCounter::new(snap.undecodable),
        )?;
        family(
            &mut enc,
            "capacity_waiting",
            "Objects waiting for room in a full table (their packets go to the kernel), by limit.",
            Gauge,
            snap.shortfalls
                .iter()
                .map(|(limit, n)| ([("limit", *limit)], ConstGauge::new(*n as i64))),
        )?;
        single(
            &mut enc,
            "routes_to_kernel",
            "Routes written as a pass to the kernel because a table is full.",
            ConstGauge::new(snap.routes_to_kernel as i64),
        )?;
        // The quantiles of a summary, typed gauge: the crate has no summary
        // type, and the series (name, `quantile` label) are the same.
        family(
            &mut enc,
            "event_to_map_seconds",
            "Netlink event to maps written, by quantile.",
            Gauge,
            snap.latency
                .iter()
                .map(|(q, v)| ([("quantile", q.to_string())], ConstGauge::new(*v))),
        )
    }
}

/// Serves the page at GET /metrics on `addr` from a thread of its own, and
/// returns the address bound (port 0 picks a free one). Clients are served
/// concurrently, each within [`CLIENT_TIMEOUT`] and [`MAX_REQUEST_HEAD`].
pub fn serve(addr: SocketAddr, pin_dir: PathBuf, shared: Shared) -> Result<SocketAddr> {
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("metrics address {addr}"))?;
    let bound = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("starting the metrics runtime")?;
    let listener = {
        let _in_runtime = runtime.enter();
        tokio::net::TcpListener::from_std(listener)
            .with_context(|| format!("metrics address {addr}"))?
    };
    let source = Arc::new((pin_dir, shared));
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || runtime.block_on(accept(listener, source)))
        .context("starting the metrics thread")?;
    Ok(bound)
}

/// Accepts clients for ever, one task each.
async fn accept(listener: tokio::net::TcpListener, source: Arc<(PathBuf, Shared)>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: wait for some to close.
                tracing::warn!(error = %e, "metrics: accepting a client failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("metrics: {MAX_CLIENTS} clients already open, closing a new one");
            continue;
        };
        let source = source.clone();
        tokio::spawn(async move {
            let service = service_fn(|req: Request<Incoming>| {
                std::future::ready(Ok::<_, Infallible>(answer(&req, &source.0, &source.1)))
            });
            let connection = http1::Builder::new()
                .keep_alive(false)
                .max_buf_size(MAX_REQUEST_HEAD)
                .serve_connection(TokioIo::new(stream), service);
            // On timeout the connection is dropped, which closes it.
            let _ = tokio::time::timeout(CLIENT_TIMEOUT, connection).await;
            drop(slot);
        });
    }
}

/// GET (or HEAD) /metrics gets the page; anything else 404.
fn answer(req: &Request<Incoming>, pin_dir: &Path, shared: &Shared) -> Response<String> {
    let is_page =
        matches!(*req.method(), Method::GET | Method::HEAD) && req.uri().path() == "/metrics";
    let (status, body) = if is_page {
        let snap = shared.lock().clone();
        (StatusCode::OK, render(pin_dir, &snap))
    } else {
        (StatusCode::NOT_FOUND, "try GET /metrics\n".to_string())
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if is_page {
        response.headers_mut().insert(
            CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(packets: u64, bytes: u64) -> xe_counter {
        xe_counter { packets, bytes }
    }

    fn sample_page(dev: &str) -> String {
        page(Page {
            snap: Snapshot {
                syncs: 3,
                resyncs: 1,
                redumps: 6,
                entropy_checks: 7,
                entropy_repairs: 8,
                events: 2,
                latency: vec![(0.5, 0.001), (0.99, 0.002), (0.999, 0.004)],
                imbalance: vec![(100, 0.25)],
                nexthops: vec![(7, dev.to_string())],
                shortfalls: vec![("nexthops", 2), ("slots", 0)],
                routes_to_kernel: 4,
                undecodable: 5,
            },
            verdicts: vec![
                (Verdict::Forward, counter(10, 1000)),
                (Verdict::PassNoRoute, counter(1, 60)),
            ],
            engine: vec![(Verdict::Forward, counter(6, 600))],
            nexthops: vec![(7, dev.to_string(), counter(10, 1000))],
            tx_failed: 2,
            flows: Some(dataplane::flows::FlowStats {
                // hit 7, inserted 100, repinned 9, ended 5, flushed 10.
                events: dataplane::abi::PinEvent::ALL.map(|e| (e, [7, 100, 9, 5, 10][e as usize])),
                entries: 3,
                entries_v4: 2,
                entries_v6: 1,
                capacity: 1024,
            }),
        })
    }

    /// A sample line: (name, unescaped labels, value).
    type Sample = (String, Vec<(String, String)>, f64);

    /// Panics on a line that is not `name{label="value",...} number` in the
    /// text format.
    fn parse_sample(line: &str) -> Sample {
        let is_name = |s: &str| {
            s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        let mut it = line.chars().peekable();
        let mut name = String::new();
        while let Some(c) = it.next_if(|c| *c != '{' && *c != ' ') {
            name.push(c);
        }
        assert!(is_name(&name), "bad metric name in {line:?}");
        let mut labels = Vec::new();
        if it.next_if_eq(&'{').is_some() {
            while it.next_if_eq(&'}').is_none() {
                it.next_if_eq(&',');
                let key: String = it.by_ref().take_while(|c| *c != '=').collect();
                assert!(is_name(&key), "bad label name {key:?} in {line:?}");
                assert_eq!(it.next(), Some('"'), "label value not quoted in {line:?}");
                let mut value = String::new();
                loop {
                    match it.next().expect("a closing quote") {
                        '"' => break,
                        '\\' => match it.next() {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            c => panic!("bad escape {c:?} in {line:?}"),
                        },
                        c => value.push(c),
                    }
                }
                labels.push((key, value));
            }
        }
        let rest: String = it.collect();
        let value = rest
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        (name, labels, value)
    }

    /// Every line of `page` as a sample, checking that the others are HELP
    /// or TYPE lines of this daemon.
    fn samples(page: &str) -> Vec<Sample> {
        page.lines()
            .filter(|line| {
                let comment = line.starts_with('#');
                assert!(
                    !comment
                        || line.starts_with("# HELP xdp_ecmp_")
                        || line.starts_with("# TYPE xdp_ecmp_"),
                    "stray line {line:?}"
                );
                !comment
            })
            .map(parse_sample)
            .collect()
    }

    #[test]
    fn label_values_with_quotes_backslashes_and_newlines_are_escaped() {
        let dev = "we\"ird\\dev\nname";
        let page = sample_page(dev);
        assert!(
            page.contains(
                r#"xdp_ecmp_nexthop_packets_total{nexthop="7",dev="we\"ird\\dev\nname"} 10"#
            ),
            "{page}"
        );
        let samples = samples(&page);
        let nexthop: Vec<_> = samples
            .iter()
            .filter(|s| s.0.starts_with("xdp_ecmp_nexthop_"))
            .collect();
        assert_eq!(nexthop.len(), 2, "{page}");
        for (_, labels, _) in nexthop {
            assert_eq!(
                labels,
                &[
                    ("nexthop".to_string(), "7".to_string()),
                    ("dev".to_string(), dev.to_string())
                ]
            );
        }
    }

    #[test]
    fn every_metric_family_is_present_with_its_values() {
        let page = sample_page("eth0");
        let families = [
            ("xdp_ecmp_verdict_packets_total", "counter"),
            ("xdp_ecmp_verdict_bytes_total", "counter"),
            ("xdp_ecmp_tx_refused_packets_total", "counter"),
            ("xdp_ecmp_afxdp_verdict_packets_total", "counter"),
            ("xdp_ecmp_flow_table_events_total", "counter"),
            ("xdp_ecmp_flow_table_entries", "gauge"),
            ("xdp_ecmp_flow_table_capacity", "gauge"),
            ("xdp_ecmp_flow_table_evicted_total", "counter"),
            ("xdp_ecmp_nexthop_packets_total", "counter"),
            ("xdp_ecmp_nexthop_bytes_total", "counter"),
            ("xdp_ecmp_group_imbalance", "gauge"),
            ("xdp_ecmp_syncs_total", "counter"),
            ("xdp_ecmp_resyncs_total", "counter"),
            ("xdp_ecmp_redumps_total", "counter"),
            ("xdp_ecmp_anti_entropy_checks_total", "counter"),
            ("xdp_ecmp_anti_entropy_repairs_total", "counter"),
            ("xdp_ecmp_netlink_events_total", "counter"),
            ("xdp_ecmp_netlink_undecodable_total", "counter"),
            ("xdp_ecmp_capacity_waiting", "gauge"),
            ("xdp_ecmp_routes_to_kernel", "gauge"),
            ("xdp_ecmp_event_to_map_seconds", "gauge"),
        ];
        let types: Vec<&str> = page.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        assert_eq!(types.len(), families.len(), "{page}");
        for (name, kind) in families {
            assert!(
                types.contains(&format!("# TYPE {name} {kind}").as_str()),
                "{name}: {page}"
            );
            assert!(page.contains(&format!("# HELP {name} ")), "{name}: {page}");
        }
        let value = |name: &str, labels: &[(&str, &str)]| {
            let labels: Vec<(String, String)> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            samples(&page)
                .into_iter()
                .find(|s| s.0 == name && s.1 == labels)
                .unwrap_or_else(|| panic!("{name} {labels:?} missing: {page}"))
                .2
        };
        assert_eq!(
            value("xdp_ecmp_verdict_packets_total", &[("verdict", "forward")]),
            10.0
        );
        assert_eq!(
            value(
                "xdp_ecmp_verdict_bytes_total",
                &[("verdict", "pass-no-route")]
            ),
            60.0
        );
        let eth0 = [("nexthop", "7"), ("dev", "eth0")];
        assert_eq!(value("xdp_ecmp_nexthop_packets_total", &eth0), 10.0);
        assert_eq!(value("xdp_ecmp_nexthop_bytes_total", &eth0), 1000.0);
        assert_eq!(value("xdp_ecmp_group_imbalance", &[("group", "100")]), 0.25);
        assert_eq!(value("xdp_ecmp_syncs_total", &[]), 3.0);
        assert_eq!(value("xdp_ecmp_tx_refused_packets_total", &[]), 2.0);
        assert_eq!(
            value(
                "xdp_ecmp_afxdp_verdict_packets_total",
                &[("verdict", "forward")]
            ),
            6.0
        );
        assert_eq!(value("xdp_ecmp_resyncs_total", &[]), 1.0);
        assert_eq!(value("xdp_ecmp_anti_entropy_repairs_total", &[]), 8.0);
        assert_eq!(value("xdp_ecmp_netlink_undecodable_total", &[]), 5.0);
        assert_eq!(
            value("xdp_ecmp_capacity_waiting", &[("limit", "nexthops")]),
            2.0
        );
        assert_eq!(value("xdp_ecmp_routes_to_kernel", &[]), 4.0);
        assert_eq!(
            value("xdp_ecmp_flow_table_events_total", &[("event", "inserted")]),
            100.0
        );
        assert_eq!(
            value("xdp_ecmp_flow_table_entries", &[("family", "ipv4")]),
            2.0
        );
        assert_eq!(
            value("xdp_ecmp_flow_table_entries", &[("family", "ipv6")]),
            1.0
        );
        assert_eq!(value("xdp_ecmp_flow_table_capacity", &[]), 1024.0);
        // Inserted 100, less ended 5, flushed 10 and 3 held.
        assert_eq!(value("xdp_ecmp_flow_table_evicted_total", &[]), 82.0);
        assert_eq!(value("xdp_ecmp_netlink_events_total", &[]), 2.0);
        assert_eq!(
            value("xdp_ecmp_event_to_map_seconds", &[("quantile", "0.99")]),
            0.002
        );
    }

    #[test]
    fn without_pinned_maps_the_families_are_still_described() {
        let page = render(Path::new("/nonexistent/xdp-ecmp"), &Snapshot::default());
        assert_eq!(
            page.lines().filter(|l| l.starts_with("# TYPE ")).count(),
            17,
            "{page}"
        );
        samples(&page);
    }
}
