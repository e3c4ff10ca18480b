//! The daemon's configuration: a TOML file and/or flags; unknown keys and bad values are errors that name the key.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::state::Prefix;
use crate::translate::PlainGroupMode;

/// The `[daemon]`-less flat TOML file of `xdp-ecmp run --config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Ports to attach to.
    pub ports: Option<Vec<String>>,
    /// Routing table to mirror: "main", "local" or a number.
    pub table: Option<String>,
    /// "resilient" or "modulo" for multipath routes and plain nexthop groups.
    pub plain_groups: Option<String>,
    /// Buckets of every group balanced here (64..=4096), fixed; without it
    /// each new table takes 128, or more where 128 cannot share the buckets
    /// by weight within 1%, up to `max_buckets`.
    pub buckets: Option<u16>,
    /// The most buckets a table takes when `buckets` is not set (128..=4096, default 4096).
    pub max_buckets: Option<u16>,
    /// Seconds a bucket must be idle before it may move (resilient).
    pub idle_timer: Option<u64>,
    /// Seconds after which an unbalanced group moves busy buckets too (0 = never).
    pub unbalanced_timer: Option<u64>,
    /// 64-bit hash seed as hex.
    pub hash_seed: Option<String>,
    /// "l3" or "l4".
    pub hash_policy: Option<String>,
    pub symmetric: Option<bool>,
    /// Netlink receive buffer in bytes.
    pub netlink_rcvbuf: Option<usize>,
    /// "auto", "native" or "generic".
    pub attach_mode: Option<String>,
    /// Serve Prometheus metrics at this address, e.g. "127.0.0.1:9477".
    pub metrics: Option<std::net::SocketAddr>,
    /// Where the hash seed is kept across reboots.
    pub state_dir: Option<std::path::PathBuf>,
    /// Attach ports missing at start when they appear.
    pub wait_for_ports: Option<bool>,
    /// Sizes of the IPv4 and IPv6 route tables and of the slot pool (taken
    /// when the maps are made; pinned maps keep theirs).
    pub max_routes_v4: Option<u32>,
    pub max_routes_v6: Option<u32>,
    pub slot_pool: Option<u32>,
    /// Seconds between anti-entropy comparisons (0: off; default 300).
    pub anti_entropy: Option<f64>,
    /// "xdp" (default) or "afxdp".
    pub engine: Option<String>,
    /// AF_XDP workers (default: the ports' receive queue count).
    pub afxdp_workers: Option<u32>,
    /// CPUs to pin the AF_XDP workers to.
    pub afxdp_cpus: Option<Vec<usize>>,
    /// AF_XDP workers spin instead of sleeping.
    pub busy_poll: Option<bool>,
    /// Flow pinning: prefixes whose routes (those inside them) keep each
    /// flow on the next hop it was first sent to; ["all"] for every route.
    pub pin_flows: Option<Vec<String>>,
    /// Flows the flow table holds (default 1,048,576; ~100 bytes each).
    pub pin_capacity: Option<u32>,
    /// Seconds a pinned TCP flow's entry outlives its last packet (0, the
    /// default: until a FIN or RST ends it, or a new flow needs its room).
    pub pin_tcp_timeout: Option<u64>,
    /// The same for UDP and every other protocol (default 120).
    pub pin_udp_timeout: Option<u64>,
    /// The same for a TCP flow after its FIN (default 10).
    pub pin_fin_timeout: Option<u64>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config {}", path.display()))
    }
}

/// The anti-entropy period: seconds, 0 for none, default 300; at least
/// 0.1 s and at most a year.
pub fn anti_entropy_period(secs: Option<f64>) -> Result<Option<std::time::Duration>> {
    match secs.unwrap_or(300.0) {
        0.0 => Ok(None),
        s if (0.1..=MAX_TIMER_S as f64).contains(&s) => {
            Ok(Some(std::time::Duration::from_secs_f64(s)))
        }
        s => anyhow::bail!(
            "anti_entropy = {s}: give seconds between 0.1 and {MAX_TIMER_S}, or 0 to turn it off"
        ),
    }
}

/// The engine: None for `xdp` (the default), the AF_XDP engine's settings
/// for `afxdp`; AF_XDP settings without `afxdp` are an error.
pub fn engine(
    name: Option<&str>,
    workers: Option<u32>,
    cpus: Vec<usize>,
    busy_poll: bool,
) -> Result<Option<dataplane::afxdp::EngineConfig>> {
    let afxdp_only = workers.is_some() || !cpus.is_empty() || busy_poll;
    match name.unwrap_or("xdp") {
        "xdp" if afxdp_only => bail!(
            "afxdp_workers, afxdp_cpus and busy_poll are settings of the AF_XDP engine: add `engine = \"afxdp\"` (or --engine afxdp), or leave them out"
        ),
        "xdp" => Ok(None),
        "afxdp" => {
            if workers == Some(0) {
                bail!("afxdp_workers = 0: give at least 1, or leave it out for one per receive queue");
            }
            let max = std::thread::available_parallelism().map_or(1, |n| n.get());
            if let Some(c) = cpus.iter().find(|c| **c >= max) {
                bail!("afxdp_cpus: CPU {c} does not exist here (CPUs 0..{})", max - 1);
            }
            Ok(Some(dataplane::afxdp::EngineConfig {
                workers: workers.unwrap_or(0),
                cpus,
                busy_poll,
                ..Default::default()
            }))
        }
        other => bail!("engine = {other:?}: expected \"xdp\" or \"afxdp\""),
    }
}

/// Flow pinning as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinConfig {
    /// Routes inside any of these pin their flows.
    pub prefixes: Vec<Prefix>,
    /// Entries of the flow table.
    pub capacity: u32,
    /// Seconds by kind (TCP, other, closing TCP); 0: none.
    pub timeouts_s: [u64; 3],
}

/// The longest pin timeout: 7 days (in jiffies it must stay below 2^31).
pub const MAX_PIN_TIMEOUT_S: u64 = 7 * 24 * 3600;

/// Parses the pinning settings: None when no prefix is pinned (then the
/// other settings are an error, as they would do nothing).
pub fn pin_config(
    prefixes: &[String],
    capacity: Option<u32>,
    tcp: Option<u64>,
    udp: Option<u64>,
    fin: Option<u64>,
) -> Result<Option<PinConfig>> {
    if prefixes.is_empty() {
        if capacity.is_some() || tcp.is_some() || udp.is_some() || fin.is_some() {
            bail!("pin_capacity and the pin timeouts are settings of flow pinning: add `pin_flows = [\"all\"]` (or prefixes; --pin-flows), or leave them out");
        }
        return Ok(None);
    }
    let mut out = Vec::new();
    for p in prefixes {
        if p == "all" {
            out.push(parse_prefix("0.0.0.0/0")?);
            out.push(parse_prefix("::/0")?);
            continue;
        }
        out.push(parse_prefix(p).with_context(|| format!("pin_flows: {p:?}"))?);
    }
    let capacity = capacity.unwrap_or(dataplane::abi::DEFAULT_PIN_FLOWS);
    if !dataplane::MapSizes::RANGE.contains(&capacity) {
        bail!(
            "pin_capacity = {capacity}: give between {} and {} flows",
            dataplane::MapSizes::RANGE.start(),
            dataplane::MapSizes::RANGE.end()
        );
    }
    let timeouts_s = [tcp.unwrap_or(0), udp.unwrap_or(120), fin.unwrap_or(10)];
    for (name, t) in ["pin_tcp_timeout", "pin_udp_timeout", "pin_fin_timeout"]
        .iter()
        .zip(timeouts_s)
    {
        if t > MAX_PIN_TIMEOUT_S {
            bail!("{name} = {t}: give seconds up to {MAX_PIN_TIMEOUT_S} (7 days), or 0 for none");
        }
    }
    Ok(Some(PinConfig {
        prefixes: out,
        capacity,
        timeouts_s,
    }))
}

/// The pin timeouts in jiffies at `hz`, as `xe_config.pin_timeout` takes them.
pub fn pin_timeouts(timeouts_s: &[u64; 3], hz: u32) -> [u32; 3] {
    timeouts_s.map(|s| (s * u64::from(hz)).min(u64::from(i32::MAX as u32)) as u32)
}

/// Parses `ADDR/LEN` (a bare address is a host prefix); the address must
/// have no bits past the length, as the kernel requires of a route.
pub fn parse_prefix(s: &str) -> Result<Prefix> {
    let (a, l) = s.split_once('/').unwrap_or((s, ""));
    let addr: std::net::IpAddr = a
        .parse()
        .with_context(|| format!("{a:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = if l.is_empty() {
        max
    } else {
        l.parse::<u8>()
            .ok()
            .filter(|n| *n <= max)
            .with_context(|| format!("prefix length {l:?}: give 0..={max}"))?
    };
    let p = Prefix { addr, len };
    if masked(&p) != addr {
        bail!(
            "{s}: bits set past /{len} (did you mean {}/{len}?)",
            masked(&p)
        );
    }
    Ok(p)
}

fn masked(p: &Prefix) -> std::net::IpAddr {
    match p.addr {
        std::net::IpAddr::V4(a) => {
            let m = if p.len == 0 {
                0
            } else {
                u32::MAX << (32 - p.len)
            };
            std::net::IpAddr::V4((u32::from(a) & m).into())
        }
        std::net::IpAddr::V6(a) => {
            let m = if p.len == 0 {
                0
            } else {
                u128::MAX << (128 - p.len)
            };
            std::net::IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// Parses a routing table name or number.
pub fn parse_table(s: &str) -> Result<u32> {
    match s {
        "main" => Ok(254),
        "local" => Ok(255),
        "default" => Ok(253),
        n => n
            .parse()
            .with_context(|| format!("table {n:?}: expected main, local, default or a number")),
    }
}

/// The longest idle or unbalanced timer, in seconds: a year (the timers are
/// kept in milliseconds, compared with 32-bit jiffies stamps).
pub const MAX_TIMER_S: u64 = 365 * 24 * 3600;

/// The netlink receive buffer's range in bytes: the kernel takes an int and
/// doubles it.
pub const RCVBUF_RANGE: std::ops::RangeInclusive<usize> = 4096..=(1 << 30);

/// Checks the netlink receive buffer size.
pub fn check_rcvbuf(bytes: usize) -> Result<usize> {
    if !RCVBUF_RANGE.contains(&bytes) {
        bail!(
            "netlink_rcvbuf = {bytes}: must be between {} and {} bytes",
            RCVBUF_RANGE.start(),
            RCVBUF_RANGE.end()
        );
    }
    Ok(bytes)
}

/// Builds the plain-group mode from its parts, checking ranges.
pub fn plain_mode(
    kind: &str,
    buckets: u16,
    max_buckets: u16,
    idle_s: u64,
    unbalanced_s: u64,
) -> Result<PlainGroupMode> {
    match kind {
        "modulo" => Ok(PlainGroupMode::Modulo),
        "resilient" => {
            if !(64..=4096).contains(&buckets) {
                bail!("buckets = {buckets}: must be between 64 and 4096");
            }
            if !(buckets..=4096).contains(&max_buckets) {
                bail!("max_buckets = {max_buckets}: must be between {buckets} and 4096");
            }
            for (key, v) in [("idle_timer", idle_s), ("unbalanced_timer", unbalanced_s)] {
                if v > MAX_TIMER_S {
                    bail!("{key} = {v}: must be at most {MAX_TIMER_S} seconds (a year)");
                }
            }
            Ok(PlainGroupMode::Resilient {
                buckets,
                max_buckets,
                idle_timer_ms: idle_s * 1000,
                unbalanced_timer_ms: unbalanced_s * 1000,
            })
        }
        other => bail!("plain_groups = {other:?}: expected \"resilient\" or \"modulo\""),
    }
}

/// Parses a 64-bit hex seed.
pub fn parse_seed(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .map_err(|e| format!("hash seed {s:?} is not a 64-bit hex number: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_settings_are_parsed_and_checked() {
        assert_eq!(pin_config(&[], None, None, None, None).unwrap(), None);
        let e = pin_config(&[], Some(4096), None, None, None).unwrap_err();
        assert!(e.to_string().contains("pin_flows"), "{e}");
        let all = pin_config(&["all".into()], None, None, None, None)
            .unwrap()
            .unwrap();
        assert_eq!(all.prefixes.len(), 2);
        assert_eq!(all.capacity, 1 << 20);
        assert_eq!(all.timeouts_s, [0, 120, 10]);
        let some = pin_config(
            &["192.0.2.0/24".into(), "2001:db8::1".into()],
            Some(4096),
            Some(3600),
            None,
            Some(5),
        )
        .unwrap()
        .unwrap();
        assert_eq!(some.prefixes[1].len, 128);
        assert_eq!(some.timeouts_s, [3600, 120, 5]);
        let e = pin_config(&["192.0.2.1/24".into()], None, None, None, None).unwrap_err();
        assert!(format!("{e:#}").contains("192.0.2.0/24"), "{e:#}");
        let e = pin_config(&["10.0.0.0/33".into()], None, None, None, None).unwrap_err();
        assert!(format!("{e:#}").contains("0..=32"), "{e:#}");
        let e = pin_config(&["all".into()], Some(10), None, None, None).unwrap_err();
        assert!(e.to_string().contains("pin_capacity"), "{e}");
        let e = pin_config(
            &["all".into()],
            None,
            None,
            Some(MAX_PIN_TIMEOUT_S + 1),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("pin_udp_timeout"), "{e}");
        assert_eq!(pin_timeouts(&[0, 120, 10], 250), [0, 30_000, 2_500]);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e =
            toml::from_str::<FileConfig>("ports = [\"eth0\"]\nbuckts = 64\n").expect_err("typo");
        assert!(e.to_string().contains("buckts"), "{e}");
    }

    #[test]
    fn ranges_are_checked() {
        assert!(plain_mode("resilient", 128, 4096, 1, 0).is_ok());
        let e = plain_mode("resilient", 128, 100, 1, 0).unwrap_err();
        assert!(e.to_string().contains("max_buckets = 100"), "{e}");
        assert!(plain_mode("resilient", 128, 4097, 1, 0).is_err());
        assert!(plain_mode("resilient", 32, 32, 1, 0).is_err());
        assert!(plain_mode("resilient", 4097, 4097, 1, 0).is_err());
        assert!(plain_mode("hashy", 128, 128, 1, 0)
            .unwrap_err()
            .to_string()
            .contains("hashy"));
        assert_eq!(
            plain_mode("resilient", 128, 128, 2, 0).expect("ok"),
            PlainGroupMode::Resilient {
                buckets: 128,
                max_buckets: 128,
                idle_timer_ms: 2000,
                unbalanced_timer_ms: 0
            }
        );
        let e = plain_mode("resilient", 128, 128, u64::MAX, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("idle_timer") && e.contains("at most"), "{e}");
        let e = plain_mode("resilient", 128, 128, 1, MAX_TIMER_S + 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unbalanced_timer"), "{e}");
        assert!(plain_mode("resilient", 128, 128, MAX_TIMER_S, MAX_TIMER_S).is_ok());
        assert!(check_rcvbuf(usize::MAX)
            .unwrap_err()
            .to_string()
            .contains("netlink_rcvbuf"));
        assert!(check_rcvbuf(100).is_err());
        assert_eq!(check_rcvbuf(8 << 20).expect("8 MiB"), 8 << 20);
        assert_eq!(parse_table("main").expect("main"), 254);
        assert!(parse_table("mian")
            .unwrap_err()
            .to_string()
            .contains("mian"));
        assert_eq!(parse_seed("0x10"), Ok(16));
    }
}

#[cfg(test)]
mod example {
    #[test]
    fn the_shipped_example_config_parses() {
        let text = include_str!("../dist/xdp-ecmp.toml");
        let c: super::FileConfig = toml::from_str(text).expect("dist/xdp-ecmp.toml parses");
        // The bucket count is left to the daemon (128, more where weights need them).
        assert_eq!((c.buckets, c.max_buckets), (None, None));
        assert_eq!(c.plain_groups.as_deref(), Some("resilient"));
        assert_eq!(c.ports.map(|p| p.len()), Some(5));
    }
}
