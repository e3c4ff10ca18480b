//! `xdp-ecmp doctor`: checks a host before a first start (kernel, bpffs and pins, memlock, the program, the ports and their XDP modes, the forwarding and multipath-hash sysctls, FRR's nexthop groups and multipath settings) and prints one finding per line: ok, warn or fail, with what to change.
//!
//! What is read from the host is gathered first ([`gather`]); every verdict
//! is a pure function of it, unit-tested below.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use control::daemon::RunConfig;
use control::state::{KernelState, NexthopObject, RouteTarget, TABLE_MAIN};
use control::translate::PlainGroupMode;
use dataplane::abi::HASH_PORTS;

use crate::cli::probe::{self, xdp_act, Found};

/// How a finding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl Verdict {
    fn name(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

/// One line of the report: what was checked, what was found, what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub verdict: Verdict,
    pub check: String,
    pub what: String,
    pub fix: Option<String>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<4} {}: {}",
            self.verdict.name(),
            self.check,
            self.what
        )?;
        if let Some(fix) = &self.fix {
            write!(f, "; fix: {fix}")?;
        }
        Ok(())
    }
}

fn ok(check: impl Into<String>, what: impl Into<String>) -> Finding {
    Finding {
        verdict: Verdict::Ok,
        check: check.into(),
        what: what.into(),
        fix: None,
    }
}

fn warn(check: impl Into<String>, what: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        verdict: Verdict::Warn,
        check: check.into(),
        what: what.into(),
        fix: Some(fix.into()),
    }
}

fn fail(check: impl Into<String>, what: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        verdict: Verdict::Fail,
        check: check.into(),
        what: what.into(),
        fix: Some(fix.into()),
    }
}

/// What `doctor` was asked to check.
pub struct Options {
    /// Ports named on the command line (else the config file's).
    pub ports: Vec<String>,
    /// The config file and what `run` would make of it (with the ports
    /// above); None when there is none to read.
    pub config: Option<(PathBuf, Result<RunConfig>)>,
    pub pin_dir: PathBuf,
    /// FRR's configuration file.
    pub frr_conf: PathBuf,
    /// Where FRR's zebra is installed (FRR is checked only when it is).
    pub zebra: PathBuf,
    /// Where the sysctls are read (`/proc/sys/net`).
    pub sysctl_root: PathBuf,
}

/// The result of loading the program privately (no pins, attached nowhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgramLoad {
    Loaded(Duration),
    /// Refused for want of privilege: the check could not be made.
    NotPermitted(String),
    Failed(String),
}

/// One port as found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortFacts {
    pub name: String,
    /// None: no such device in this network namespace.
    pub ifindex: Option<u32>,
    pub up: Option<bool>,
    pub driver: Option<String>,
    /// The device's XDP features (None: the kernel cannot say, before 6.3).
    pub features: Option<u64>,
    /// An XDP program is attached, and whether xdp-ecmp's link pin holds it.
    pub xdp_attached: bool,
    pub ours: bool,
    /// A veth's peer in this namespace.
    pub veth_peer: Option<String>,
    /// `net.ipv4.conf.PORT.forwarding`, and the larger of `all` and the
    /// port's `rp_filter`.
    pub ipv4_forwarding: Option<bool>,
    pub rp_filter: Option<u8>,
}

/// How routes use the kernel's nexthop objects now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NexthopUse {
    /// Routes over a nexthop group: plain ones, and kernel-resilient ones.
    pub plain_group_routes: usize,
    pub resilient_group_routes: usize,
    /// Multipath routes listing their hops inline.
    pub inline_multipath_routes: usize,
}

/// Everything read from the host.
pub struct Host {
    pub kernel: String,
    pub bpffs: Found,
    /// The namespace of `ip netns exec NS` when run under it.
    pub ip_netns_exec: Option<String>,
    pub pins: Pins,
    pub memlock: Option<(u64, u64)>,
    pub program: ProgramLoad,
    pub af_xdp: Found,
    pub sysctls: BTreeMap<&'static str, Option<String>>,
    pub ports: Vec<PortFacts>,
    /// FRR's configuration text, when FRR is installed (Err: unreadable).
    pub frr: Option<std::result::Result<String, String>>,
    pub nexthops: Option<NexthopUse>,
}

/// What the pin directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pins {
    pub dir: PathBuf,
    pub maps: bool,
    /// Ports with a pinned link (`link_PORT`).
    pub links: Vec<String>,
    /// `check_layout`'s refusal, if any.
    pub layout_error: Option<String>,
}

const SYSCTLS: [&str; 4] = [
    "ipv4/ip_forward",
    "ipv6/conf/all/forwarding",
    "ipv4/fib_multipath_hash_policy",
    "ipv6/fib_multipath_hash_policy",
];

/// Runs every check, prints the findings and a summary; false when any failed.
pub fn run(opts: &Options) -> Result<bool> {
    let ports = ports_to_check(opts);
    let host = gather(opts, &ports);
    let findings = findings(opts, &host);
    for f in &findings {
        println!("{f}");
    }
    let count = |v| findings.iter().filter(|f| f.verdict == v).count();
    println!(
        "doctor: {} ok, {} warn, {} fail",
        count(Verdict::Ok),
        count(Verdict::Warn),
        count(Verdict::Fail)
    );
    Ok(count(Verdict::Fail) == 0)
}

/// The ports named, else those of a config that read well.
fn ports_to_check(opts: &Options) -> Vec<String> {
    if !opts.ports.is_empty() {
        return opts.ports.clone();
    }
    match &opts.config {
        Some((_, Ok(cfg))) => cfg.ports.clone(),
        _ => Vec::new(),
    }
}

/// Reads what the checks need from this host (nothing is changed).
pub fn gather(opts: &Options, ports: &[String]) -> Host {
    let table = match &opts.config {
        Some((_, Ok(cfg))) => cfg.table,
        _ => TABLE_MAIN,
    };
    // Links (XDP attached, veth peers), routes and nexthop objects.
    let state = control::mirror::Mirror::open(1 << 20).and_then(|mut m| {
        let mut s = KernelState::new(table);
        m.dump(&mut s)?;
        Ok(s)
    });
    let sysctls = SYSCTLS
        .iter()
        .map(|k| (*k, read_trimmed(&opts.sysctl_root.join(k))))
        .collect();
    let ports = ports
        .iter()
        .map(|p| port_facts(p, opts, state.as_ref().ok()))
        .collect();
    // FRR is checked where it is installed, or where its file is named.
    let named = opts.frr_conf != Path::new(DEFAULT_FRR_CONF);
    let frr = (named || opts.zebra.exists()).then(|| {
        std::fs::read_to_string(&opts.frr_conf)
            .map_err(|e| format!("{}: {e}", opts.frr_conf.display()))
    });
    Host {
        kernel: probe::kernel_release(),
        bpffs: probe::bpffs(),
        ip_netns_exec: dataplane::pins::under_ip_netns_exec(),
        pins: pins(&opts.pin_dir),
        memlock: memlock(),
        program: load_program(),
        af_xdp: probe::af_xdp(),
        sysctls,
        ports,
        frr,
        nexthops: state.ok().map(|s| nexthop_use(&s)),
    }
}

/// FRR's usual configuration file.
pub const DEFAULT_FRR_CONF: &str = "/etc/frr/frr.conf";

fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn port_facts(name: &str, opts: &Options, state: Option<&KernelState>) -> PortFacts {
    let ifindex = dataplane::ifindex_of(name).ok();
    let link = ifindex.and_then(|i| state.and_then(|s| s.links.get(&i)));
    let features = ifindex.and_then(|i| {
        state
            .and_then(|s| s.xdp_features.as_ref())
            .and_then(|f| f.get(&i).copied())
    });
    let switch = |rel: String| read_trimmed(&opts.sysctl_root.join(rel));
    let rpf = |rel: String| switch(rel).and_then(|v| v.parse::<u8>().ok());
    PortFacts {
        name: name.to_string(),
        ifindex,
        up: link.map(|l| l.up),
        driver: ifindex.and_then(|_| dataplane::ethtool::driver(name).ok()),
        features,
        xdp_attached: link.is_some_and(|l| l.xdp_attached),
        ours: opts.pin_dir.join(format!("link_{name}")).exists(),
        veth_peer: link.and_then(|l| l.veth_peer).map(control::inspect::ifname),
        ipv4_forwarding: switch(format!("ipv4/conf/{name}/forwarding")).map(|v| v != "0"),
        rp_filter: match (
            rpf("ipv4/conf/all/rp_filter".into()),
            rpf(format!("ipv4/conf/{name}/rp_filter")),
        ) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0).max(b.unwrap_or(0))),
        },
    }
}

fn pins(dir: &Path) -> Pins {
    let mut links = Vec::new();
    let mut maps = false;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(port) = name.strip_prefix("link_") {
                links.push(port.to_string());
            }
            maps |= name.starts_with("xe_");
        }
    }
    links.sort();
    Pins {
        dir: dir.to_owned(),
        maps,
        links,
        layout_error: dataplane::pins::check_layout(dir)
            .err()
            .map(|e| e.to_string()),
    }
}

/// RLIMIT_MEMLOCK (soft, hard); RLIM_INFINITY as u64::MAX.
fn memlock() -> Option<(u64, u64)> {
    // SAFETY: a zeroed out-struct for getrlimit.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    (unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } == 0)
        .then_some((r.rlim_cur as u64, r.rlim_max as u64))
}

/// Loads the program as the daemon would (default map sizes) but privately:
/// nothing is pinned or attached, and it is gone when this returns.
fn load_program() -> ProgramLoad {
    let t0 = Instant::now();
    match dataplane::Dataplane::load(&dataplane::LoadOptions::default()) {
        Ok(dp) => {
            let took = t0.elapsed();
            drop(dp);
            ProgramLoad::Loaded(took)
        }
        Err(e) => {
            let text = format!("{e:#}");
            if text.contains("Operation not permitted") || text.contains("os error 1)") {
                ProgramLoad::NotPermitted(text)
            } else {
                ProgramLoad::Failed(text)
            }
        }
    }
}

fn nexthop_use(s: &KernelState) -> NexthopUse {
    let mut u = NexthopUse::default();
    for t in s.routes.values().flat_map(|m| m.values()) {
        match t {
            RouteTarget::Nexthop(id) => match s.nexthops.get(id) {
                Some(NexthopObject::Group {
                    resilient: Some(_), ..
                }) => u.resilient_group_routes += 1,
                Some(NexthopObject::Group { .. }) => u.plain_group_routes += 1,
                _ => {}
            },
            RouteTarget::Paths(p) if p.len() > 1 => u.inline_multipath_routes += 1,
            _ => {}
        }
    }
    u
}

/// Every finding, in the order they are printed.
pub fn findings(opts: &Options, h: &Host) -> Vec<Finding> {
    let version = parse_release(&h.kernel);
    let cfg = opts.config.as_ref().and_then(|(_, r)| r.as_ref().ok());
    let mut out = vec![kernel(&h.kernel)];
    out.push(bpffs(&h.bpffs, h.ip_netns_exec.as_deref()));
    out.push(pins_finding(&h.pins));
    if let Some((soft, hard)) = h.memlock {
        out.push(memlock_finding(version, soft, hard));
    }
    out.push(program(&h.program));
    out.push(af_xdp(&h.af_xdp, cfg.is_some_and(|c| c.engine.is_some())));
    out.extend(config_finding(opts));
    let sysctl = |k: &str| h.sysctls.get(k).cloned().flatten();
    out.push(ip_forward(sysctl("ipv4/ip_forward").as_deref()));
    out.push(ipv6_forwarding(
        sysctl("ipv6/conf/all/forwarding").as_deref(),
    ));
    let hashes_ports = cfg.is_none_or(|c| c.config.hash_fields & HASH_PORTS != 0);
    for v6 in [false, true] {
        let key = if v6 {
            "ipv6/fib_multipath_hash_policy"
        } else {
            "ipv4/fib_multipath_hash_policy"
        };
        out.push(hash_policy(v6, sysctl(key).as_deref(), hashes_ports));
    }
    if h.ports.is_empty() {
        out.push(warn(
            "ports",
            "no ports to check: none named and none in a config file",
            "name them: `xdp-ecmp doctor PORT...`, or put `ports = [...]` in the config",
        ));
    }
    for p in &h.ports {
        out.extend(port(p));
    }
    out.extend(frr(h, cfg.map(|c| c.mode)));
    out
}

/// (major, minor) of a kernel release such as "6.18.44-fc-v657".
pub fn parse_release(r: &str) -> Option<(u32, u32)> {
    let mut parts = r.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

pub fn kernel(release: &str) -> Finding {
    match parse_release(release) {
        None => warn(
            "kernel",
            format!("release {release:?} does not read as a version"),
            "check `uname -r`; xdp-ecmp needs Linux 5.9 or later, 6.3 or later for every check",
        ),
        Some(v) if v < (5, 9) => fail(
            "kernel",
            format!("Linux {release}: xdp-ecmp attaches through BPF links, which XDP has from Linux 5.9"),
            "boot Linux 6.3 or later",
        ),
        Some(v) if v < (6, 3) => warn(
            "kernel",
            format!("Linux {release}: no netdev family XDP features before 6.3, so the daemon cannot tell which ports transmit redirected frames and takes every port to (a veth whose peer has neither XDP nor GRO drops them)"),
            "boot Linux 6.3 or later",
        ),
        Some(_) => ok(
            "kernel",
            format!("Linux {release}: BPF links for XDP (5.9 on) and the netdev family's XDP features (6.3 on)"),
        ),
    }
}

pub fn bpffs(found: &Found, ip_netns_exec: Option<&str>) -> Finding {
    if let Some(ns) = ip_netns_exec {
        return fail(
            "bpffs",
            format!("running under `ip netns exec {ns}`, which remounts /sys and hides the bpf filesystem: pins made here vanish with the process"),
            format!("run as `nsenter --net=/run/netns/{ns} xdp-ecmp ...`"),
        );
    }
    match found {
        Found::Yes(how) => ok("bpffs", how.clone()),
        Found::No(why) => ok(
            "bpffs",
            format!("{why} (the unit's ExecStartPre mounts it too)"),
        ),
        Found::Unknown(why) => warn(
            "bpffs",
            why.clone(),
            "as root: `mount -t bpf bpf /sys/fs/bpf`",
        ),
    }
}

pub fn pins_finding(p: &Pins) -> Finding {
    let dir = p.dir.display();
    if let Some(e) = &p.layout_error {
        return fail(
            "pins",
            e.clone(),
            "see the message: detach, remove the old pins, start afresh (flows move once)",
        );
    }
    match (p.maps, p.links.is_empty()) {
        (false, true) => ok(
            "pins",
            format!("nothing pinned under {dir}: the first start makes the maps"),
        ),
        (true, true) => ok(
            "pins",
            format!("maps of this layout pinned under {dir}, no port attached: a start adopts them"),
        ),
        (_, false) => ok(
            "pins",
            format!(
                "maps of this layout and links of {} pinned under {dir}: the program forwards on them now, and a (re)start adopts them without moving a flow",
                p.links.join(", ")
            ),
        ),
    }
}

fn bytes(n: u64) -> String {
    if n == u64::MAX {
        "unlimited".into()
    } else {
        format!("{} KiB", n / 1024)
    }
}

pub fn memlock_finding(kernel: Option<(u32, u32)>, soft: u64, hard: u64) -> Finding {
    let limits = format!("RLIMIT_MEMLOCK {} (hard {})", bytes(soft), bytes(hard));
    match kernel {
        Some(v) if v >= (5, 11) => ok(
            "memlock",
            format!("{limits}: Linux 5.11 on charges BPF maps to the memory cgroup, not to this limit"),
        ),
        _ if hard == u64::MAX => ok(
            "memlock",
            format!("{limits}: libbpf raises the soft limit for the maps"),
        ),
        _ => warn(
            "memlock",
            format!("{limits}: this kernel counts BPF maps against it (before 5.11), and the maps need tens of MiB"),
            "LimitMEMLOCK=infinity in a drop-in for xdp-ecmp.service (`systemctl edit xdp-ecmp`); `ulimit -l unlimited` by hand",
        ),
    }
}

pub fn program(p: &ProgramLoad) -> Finding {
    match p {
        ProgramLoad::Loaded(t) => ok(
            "program",
            format!(
                "the XDP program and its maps load and pass the verifier here ({} ms, default map sizes; loaded privately and unloaded)",
                t.as_millis()
            ),
        ),
        ProgramLoad::NotPermitted(e) => warn(
            "program",
            format!("not tried: loading was refused for want of privilege ({e})"),
            "run doctor as root (the daemon needs CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_IPC_LOCK; the unit grants them)",
        ),
        ProgramLoad::Failed(e) => fail(
            "program",
            format!("the XDP program does not load here: {e}"),
            "see the error; `xdp-ecmp --version` lists what this kernel offers",
        ),
    }
}

pub fn af_xdp(found: &Found, engine_afxdp: bool) -> Finding {
    match (found, engine_afxdp) {
        (Found::Yes(how), _) => ok("af_xdp", format!("AF_XDP sockets: {how}")),
        (other, true) => fail(
            "af_xdp",
            format!("the config asks for engine = \"afxdp\", and AF_XDP sockets: {other}"),
            "as root with CAP_NET_RAW (the unit's drop-in xdp-ecmp-afxdp.conf), on a kernel with CONFIG_XDP_SOCKETS; or engine = \"xdp\"",
        ),
        (other, false) => ok(
            "af_xdp",
            format!("AF_XDP sockets: {other}; only engine = \"afxdp\" needs them"),
        ),
    }
}

fn config_finding(opts: &Options) -> Option<Finding> {
    let (path, result) = opts.config.as_ref()?;
    Some(match result {
        Ok(cfg) => ok(
            "config",
            format!(
                "{} reads as `xdp-ecmp run` reads it: ports {}, table {}, groups {}, engine {}",
                path.display(),
                cfg.ports.join(" "),
                cfg.table,
                mode_name(&cfg.mode),
                if cfg.engine.is_some() { "afxdp" } else { "xdp" }
            ),
        ),
        Err(e) if !path.exists() => fail(
            "config",
            format!("{}: {e:#}", path.display()),
            "--config FILE naming the file `xdp-ecmp run --config` reads (the package installs /etc/xdp-ecmp/xdp-ecmp.toml)",
        ),
        Err(e) => fail(
            "config",
            format!("{}: {e:#}", path.display()),
            "correct what the message names (the example config, /etc/xdp-ecmp/xdp-ecmp.toml as installed, documents every key)",
        ),
    })
}

fn mode_name(m: &PlainGroupMode) -> String {
    match m {
        PlainGroupMode::Resilient {
            buckets,
            max_buckets,
            idle_timer_ms,
            ..
        } if max_buckets > buckets => format!(
            "resilient ({buckets} buckets, up to {max_buckets} where weights need them; idle timer {} s)",
            idle_timer_ms / 1000
        ),
        PlainGroupMode::Resilient {
            buckets,
            idle_timer_ms,
            ..
        } => format!(
            "resilient ({buckets} buckets, idle timer {} s)",
            idle_timer_ms / 1000
        ),
        PlainGroupMode::Modulo => "modulo".into(),
    }
}

/// A switch's value: Some(true) for anything but "0".
fn on(v: Option<&str>) -> Option<bool> {
    v.map(|v| v != "0")
}

pub fn ip_forward(v: Option<&str>) -> Finding {
    match on(v) {
        Some(true) => ok("sysctl", "net.ipv4.ip_forward = 1"),
        Some(false) => fail(
            "sysctl",
            "net.ipv4.ip_forward = 0: the kernel forwards no IPv4, so neither does xdp-ecmp (pass-no-forwarding)",
            "sysctl -w net.ipv4.ip_forward=1, and keep it in /etc/sysctl.d/",
        ),
        None => warn(
            "sysctl",
            "net.ipv4.ip_forward cannot be read",
            "check /proc/sys/net/ipv4/ip_forward",
        ),
    }
}

pub fn ipv6_forwarding(v: Option<&str>) -> Finding {
    match on(v) {
        Some(true) => ok("sysctl", "net.ipv6.conf.all.forwarding = 1"),
        Some(false) => warn(
            "sysctl",
            "net.ipv6.conf.all.forwarding = 0: IPv6 is not forwarded, by the kernel or by xdp-ecmp (IPv4 over IPv6 next hops, BGP unnumbered, needs only IPv4 forwarding)",
            "if this host routes IPv6: sysctl -w net.ipv6.conf.all.forwarding=1, and keep it in /etc/sysctl.d/",
        ),
        None => warn(
            "sysctl",
            "net.ipv6.conf.all.forwarding cannot be read (IPv6 disabled?)",
            "check /proc/sys/net/ipv6/conf/all/forwarding",
        ),
    }
}

/// The kernel's multipath hash against xdp-ecmp's: both matter, as the
/// kernel forwards what the program passes to it (unresolved neighbours,
/// full tables, ports not attached).
pub fn hash_policy(v6: bool, v: Option<&str>, xdp_ecmp_hashes_ports: bool) -> Finding {
    let family = if v6 { "ipv6" } else { "ipv4" };
    let key = format!("net.{family}.fib_multipath_hash_policy");
    let ours = if xdp_ecmp_hashes_ports {
        "addresses and ports (hash_policy l4)"
    } else {
        "addresses only (hash_policy l3)"
    };
    let kernel_layer = match v {
        Some("0") => Some((false, "addresses only")),
        Some("1") => Some((true, "addresses and ports")),
        Some("2") => Some((false, "addresses, inner ones for encapsulated packets")),
        Some("3") => None, // custom fields
        _ => {
            return warn(
                "sysctl",
                format!("{key} cannot be read"),
                format!("check /proc/sys/net/{family}/fib_multipath_hash_policy"),
            )
        }
    };
    let value = v.unwrap_or_default();
    match kernel_layer {
        None => ok(
            "sysctl",
            format!("{key} = 3: the kernel hashes the fields of fib_multipath_hash_fields for what it forwards itself; xdp-ecmp hashes {ours}"),
        ),
        Some((ports, how)) if ports == xdp_ecmp_hashes_ports => ok(
            "sysctl",
            format!("{key} = {value}: the kernel spreads what it forwards itself by {how}, as xdp-ecmp does"),
        ),
        Some((_, how)) => warn(
            "sysctl",
            format!("{key} = {value}: the kernel spreads what it forwards itself (frames xdp-ecmp passes to it) by {how}, xdp-ecmp by {ours}"),
            format!(
                "sysctl -w {key}={}, and keep it in /etc/sysctl.d/",
                if xdp_ecmp_hashes_ports { 1 } else { 0 }
            ),
        ),
    }
}

/// The findings of one port.
pub fn port(p: &PortFacts) -> Vec<Finding> {
    let check = format!("port {}", p.name);
    if p.ifindex.is_none() {
        return vec![fail(
            check,
            format!("{} does not exist in this network namespace; `xdp-ecmp run` refuses to start with a missing port", p.name),
            format!("create it or correct the name (`ip link` lists the devices), or set wait_for_ports = true (--wait-for-ports) to attach {} when it appears", p.name),
        )];
    }
    let mut out = Vec::new();
    let driver = p.driver.clone().unwrap_or_else(|| "driver unknown".into());
    if p.up == Some(false) {
        out.push(warn(
            check.clone(),
            "down (admin or carrier): nothing to forward on it until it is up",
            format!("ip link set {} up; check the cable or the peer", p.name),
        ));
    }
    match p.features {
        Some(f) if f & xdp_act::BASIC != 0 => out.push(ok(
            check.clone(),
            format!(
                "{driver}: native XDP (attach_mode auto uses it); AF_XDP {}",
                if f & xdp_act::XSK_ZEROCOPY != 0 {
                    "zero-copy"
                } else {
                    "in copy mode (no zero-copy in this driver)"
                }
            ),
        )),
        Some(_) => out.push(warn(
            check.clone(),
            format!("{driver} has no native XDP: attach_mode auto falls back to generic XDP, where every frame costs an skb first"),
            "a NIC whose driver has XDP for this port, or accept generic mode's rate",
        )),
        None => out.push(ok(
            check.clone(),
            format!("{driver}: the kernel cannot say whether the driver has XDP (before 6.3); attach_mode auto tries native, then generic"),
        )),
    }
    if let Some(f) = p.features {
        if f & xdp_act::NDO_XMIT == 0 {
            let fix = match &p.veth_peer {
                Some(peer) => format!("turn GRO on at its peer: ethtool -K {peer} gro on (or attach an XDP program there)"),
                None if p.driver.as_deref() == Some("veth") => "turn GRO on at its peer (ethtool -K PEER gro on), or attach an XDP program there".into(),
                None => "give next hops a port whose driver transmits XDP frames (ndo_xdp_xmit)".into(),
            };
            out.push(warn(
                check.clone(),
                "does not transmit redirected frames (no NDO_XMIT): next hops out of it go through the kernel (pass-no-txport)",
                fix,
            ));
        } else {
            out.push(ok(check.clone(), "transmits redirected frames (NDO_XMIT)"));
        }
    }
    if p.xdp_attached && !p.ours {
        out.push(fail(
            check.clone(),
            "an XDP program that xdp-ecmp did not attach (no link pin of ours) sits on it: the daemon's attach fails (\"failed in native mode (File exists) and generic mode (Device or resource busy)\")",
            format!("remove it: ip link set dev {} xdp off (xdpgeneric off for a generic one), or find who attached it", p.name),
        ));
    } else if p.ours {
        out.push(ok(check.clone(), "attached by xdp-ecmp (link pin present)"));
    }
    if p.ipv4_forwarding == Some(false) {
        out.push(warn(
            check.clone(),
            format!("net.ipv4.conf.{}.forwarding = 0: IPv4 received here is not forwarded (pass-no-forwarding)", p.name),
            format!("sysctl -w net.ipv4.conf.{}.forwarding=1", p.name),
        ));
    }
    if let Some(r) = p.rp_filter.filter(|r| *r > 0) {
        out.push(warn(
            check,
            format!("rp_filter = {r} (the larger of all and the port's): the kernel checks IPv4 sources by a reverse lookup the program does not make, so IPv4 received here goes to the kernel (pass-source)"),
            format!("sysctl -w net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.{}.rp_filter=0, where the fabric does not need the check", p.name),
        ));
    }
    out
}

/// What FRR's configuration says, as far as xdp-ecmp cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrrConf {
    /// `no zebra nexthop kernel enable`: routes carry their hops inline.
    pub no_kernel_nexthops: bool,
    /// `zebra nexthop proto only`.
    pub proto_only: bool,
    /// One entry per `router bgp` block.
    pub bgp: Vec<BgpConf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BgpConf {
    pub asn: String,
    pub multipath_relax: bool,
    /// `maximum-paths N` lines (eBGP), in any address family.
    pub maximum_paths: Vec<u32>,
    /// Neighbours' remote-as: "external", "internal" or a number.
    pub remote_as: Vec<String>,
}

impl BgpConf {
    /// Neighbours in other ASes: paths from two of them differ in AS path.
    fn external_neighbours(&self) -> usize {
        self.remote_as
            .iter()
            .filter(|r| *r == "external" || (r.parse::<u64>().is_ok() && **r != self.asn))
            .count()
    }
}

impl FrrConf {
    /// Reads frr.conf text (vtysh's syntax: a block ends at `!`, `exit`, or
    /// the next top-level line).
    pub fn parse(text: &str) -> FrrConf {
        let mut c = FrrConf::default();
        let mut in_bgp = false;
        for raw in text.lines() {
            let line = raw.trim();
            let top = !raw.starts_with(' ') && !raw.starts_with('\t');
            if line.is_empty() {
                continue;
            }
            // `!` at the left margin ends a block; indented, a section of it.
            if line.starts_with('!') {
                in_bgp &= !top;
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if top {
                in_bgp = false;
                match words.as_slice() {
                    ["no", "zebra", "nexthop", "kernel", "enable"] => c.no_kernel_nexthops = true,
                    ["zebra", "nexthop", "proto", "only"] => c.proto_only = true,
                    ["router", "bgp", asn, ..] => {
                        in_bgp = true;
                        c.bgp.push(BgpConf {
                            asn: asn.to_string(),
                            ..Default::default()
                        });
                    }
                    _ => {}
                }
                continue;
            }
            if !in_bgp {
                continue;
            }
            let Some(b) = c.bgp.last_mut() else { continue };
            match words.as_slice() {
                ["bgp", "bestpath", "as-path", "multipath-relax", ..] => b.multipath_relax = true,
                ["maximum-paths", n, ..] => {
                    if let Ok(n) = n.parse() {
                        b.maximum_paths.push(n);
                    }
                }
                ["neighbor", _, "remote-as", r, ..] => b.remote_as.push(r.to_string()),
                ["neighbor", _, "interface", "remote-as", r, ..] => b.remote_as.push(r.to_string()),
                _ => {}
            }
        }
        c
    }
}

fn frr(h: &Host, mode: Option<PlainGroupMode>) -> Vec<Finding> {
    match &h.frr {
        None => vec![ok(
            "frr",
            "FRR is not installed (no /usr/lib/frr/zebra): nothing of it to check; xdp-ecmp mirrors routes whoever writes them",
        )],
        Some(Err(e)) => vec![warn(
            "frr",
            format!("FRR is installed but its configuration cannot be read: {e}"),
            "point doctor at it: --frr-conf FILE",
        )],
        Some(Ok(text)) => frr_findings(
            &FrrConf::parse(text),
            h.nexthops,
            mode.unwrap_or_default(),
        ),
    }
}

/// FRR's settings against what xdp-ecmp does with the routes zebra writes.
pub fn frr_findings(c: &FrrConf, now: Option<NexthopUse>, mode: PlainGroupMode) -> Vec<Finding> {
    let mut out = Vec::new();
    let kernel_now = match now {
        Some(u) => format!(
            "; the kernel now: {} routes over plain nexthop groups, {} over kernel-resilient groups, {} inline multipath routes",
            u.plain_group_routes, u.resilient_group_routes, u.inline_multipath_routes
        ),
        None => String::new(),
    };
    let how = if c.no_kernel_nexthops {
        "zebra writes multipath routes with their hops inline (`no zebra nexthop kernel enable`): xdp-ecmp makes each hop set a group"
    } else {
        "zebra installs routes over nexthop objects (FRR's default): plain groups, where the kernel picks a member by hash threshold, so any change moves flows of other members too"
    };
    let proto = if c.proto_only {
        "; `zebra nexthop proto only`: zebra keeps to its own nexthop objects"
    } else {
        ""
    };
    match mode {
        PlainGroupMode::Resilient { buckets, .. } => out.push(ok(
            "frr",
            format!("{how}; xdp-ecmp gives them {buckets} resilient buckets, and a group zebra replaces starts from the old one's buckets{proto}{kernel_now}"),
        )),
        PlainGroupMode::Modulo => out.push(warn(
            "frr",
            format!("{how}; plain_groups = modulo hashes them modulo too: a path that fails or returns moves the flows of the others{proto}{kernel_now}"),
            "plain_groups = \"resilient\" in the config (the default)",
        )),
    }
    for b in &c.bgp {
        let check = format!("frr bgp {}", b.asn);
        let external = b.external_neighbours();
        if external >= 2 && !b.multipath_relax {
            out.push(warn(
                check.clone(),
                format!("{external} eBGP neighbours and no `bgp bestpath as-path multipath-relax`: paths through different neighbour ASes are not equal cost, so each prefix gets one path"),
                format!("under `router bgp {}`: bgp bestpath as-path multipath-relax", b.asn),
            ));
        } else if b.multipath_relax {
            out.push(ok(
                check.clone(),
                "bgp bestpath as-path multipath-relax: paths through different neighbour ASes share a prefix",
            ));
        }
        match b.maximum_paths.iter().min() {
            Some(1) => out.push(warn(
                check,
                "maximum-paths 1: one path per prefix, nothing to spread",
                "maximum-paths 64 (or the fabric's width) in the address families",
            )),
            Some(n) => out.push(ok(check, format!("maximum-paths {n}"))),
            None => out.push(ok(
                check,
                "maximum-paths not set: FRR's default applies, the ECMP maximum of its build (`vtysh -c 'show zebra'`; 256 in Debian 12's FRR 8.4)",
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_and_their_verdicts() {
        assert_eq!(parse_release("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(parse_release("5.10.0-28-amd64"), Some((5, 10)));
        assert_eq!(parse_release("garbage"), None);
        assert_eq!(kernel("6.18.44-fc-v657").verdict, Verdict::Ok);
        assert_eq!(kernel("6.3.0").verdict, Verdict::Ok);
        assert_eq!(kernel("6.1.0-18-amd64").verdict, Verdict::Warn);
        assert_eq!(kernel("5.9.1").verdict, Verdict::Warn);
        assert_eq!(kernel("5.4.0").verdict, Verdict::Fail);
        assert_eq!(kernel("x").verdict, Verdict::Warn);
    }

    #[test]
    fn memlock_matters_only_before_memcg_accounting() {
        let small = 8 << 20;
        assert_eq!(
            memlock_finding(Some((6, 1)), small, small).verdict,
            Verdict::Ok
        );
        assert_eq!(
            memlock_finding(Some((5, 10)), small, small).verdict,
            Verdict::Warn
        );
        assert_eq!(
            memlock_finding(Some((5, 10)), small, u64::MAX).verdict,
            Verdict::Ok,
            "libbpf raises the soft limit up to an unlimited hard one"
        );
        let f = memlock_finding(Some((5, 10)), small, small);
        assert!(f.what.contains("8192 KiB"), "{f}");
        assert!(f.fix.as_deref().unwrap_or("").contains("LimitMEMLOCK"));
    }

    #[test]
    fn forwarding_switches() {
        assert_eq!(ip_forward(Some("1")).verdict, Verdict::Ok);
        let off = ip_forward(Some("0"));
        assert_eq!(off.verdict, Verdict::Fail);
        assert!(off
            .fix
            .as_deref()
            .unwrap_or("")
            .contains("net.ipv4.ip_forward=1"));
        assert_eq!(ip_forward(None).verdict, Verdict::Warn);
        assert_eq!(ipv6_forwarding(Some("1")).verdict, Verdict::Ok);
        assert_eq!(ipv6_forwarding(Some("0")).verdict, Verdict::Warn);
    }

    #[test]
    fn the_kernels_hash_policy_against_xdp_ecmps() {
        assert_eq!(hash_policy(false, Some("1"), true).verdict, Verdict::Ok);
        assert_eq!(hash_policy(false, Some("0"), false).verdict, Verdict::Ok);
        let w = hash_policy(false, Some("0"), true);
        assert_eq!(w.verdict, Verdict::Warn);
        assert!(
            w.fix.as_deref()
                == Some(
                    "sysctl -w net.ipv4.fib_multipath_hash_policy=1, and keep it in /etc/sysctl.d/"
                ),
            "{w}"
        );
        let w6 = hash_policy(true, Some("1"), false);
        assert_eq!(w6.verdict, Verdict::Warn);
        assert!(w6
            .to_string()
            .contains("net.ipv6.fib_multipath_hash_policy=0"));
        assert_eq!(hash_policy(true, Some("3"), true).verdict, Verdict::Ok);
        assert_eq!(hash_policy(true, None, true).verdict, Verdict::Warn);
    }

    fn veth(name: &str) -> PortFacts {
        PortFacts {
            name: name.into(),
            ifindex: Some(7),
            up: Some(true),
            driver: Some("veth".into()),
            features: Some(xdp_act::BASIC | xdp_act::NDO_XMIT),
            veth_peer: Some("peer0".into()),
            ipv4_forwarding: Some(true),
            rp_filter: Some(0),
            ..Default::default()
        }
    }

    fn verdicts(f: &[Finding]) -> Vec<Verdict> {
        f.iter().map(|f| f.verdict).collect()
    }

    #[test]
    fn a_missing_port_is_one_failure_naming_it_and_the_way_out() {
        let f = port(&PortFacts {
            name: "swp9".into(),
            ..Default::default()
        });
        assert_eq!(verdicts(&f), [Verdict::Fail]);
        let line = f[0].to_string();
        assert!(
            line.starts_with("fail port swp9: swp9 does not exist"),
            "{line}"
        );
        assert!(
            line.contains("ip link") && line.contains("wait_for_ports"),
            "{line}"
        );
    }

    #[test]
    fn port_verdicts() {
        assert_eq!(verdicts(&port(&veth("p"))), [Verdict::Ok, Verdict::Ok]);
        let mut no_xmit = veth("p");
        no_xmit.features = Some(xdp_act::BASIC);
        let f = port(&no_xmit);
        assert_eq!(verdicts(&f), [Verdict::Ok, Verdict::Warn]);
        assert!(
            f[1].fix.as_deref() == Some("turn GRO on at its peer: ethtool -K peer0 gro on (or attach an XDP program there)"),
            "{}",
            f[1]
        );
        let mut generic = veth("p");
        generic.driver = Some("dummy".into());
        generic.features = Some(0);
        generic.veth_peer = None;
        let f = port(&generic);
        assert_eq!(verdicts(&f), [Verdict::Warn, Verdict::Warn]);
        assert!(f[0].what.contains("generic XDP"), "{}", f[0]);
        let mut foreign = veth("p");
        foreign.xdp_attached = true;
        let f = port(&foreign);
        assert_eq!(verdicts(&f), [Verdict::Ok, Verdict::Ok, Verdict::Fail]);
        assert!(f[2]
            .fix
            .as_deref()
            .unwrap_or("")
            .contains("ip link set dev p xdp off"));
        let mut ours = foreign.clone();
        ours.ours = true;
        assert_eq!(
            verdicts(&port(&ours)),
            [Verdict::Ok, Verdict::Ok, Verdict::Ok]
        );
        let mut strict = veth("p");
        strict.rp_filter = Some(2);
        strict.ipv4_forwarding = Some(false);
        strict.up = Some(false);
        let f = port(&strict);
        assert_eq!(
            verdicts(&f),
            [
                Verdict::Warn,
                Verdict::Ok,
                Verdict::Ok,
                Verdict::Warn,
                Verdict::Warn
            ]
        );
        assert!(f[4].what.contains("rp_filter = 2"), "{}", f[4]);
        let mut old_kernel = veth("p");
        old_kernel.features = None;
        assert_eq!(verdicts(&port(&old_kernel)), [Verdict::Ok]);
    }

    /// The BGP part of the testbed's frr.conf (scripts/testbed.sh `frr_conf`, a leaf).
    const TESTBED_LEAF: &str = "frr defaults datacenter
hostname leaf01
log file /tmp/frr.log
!
router bgp 65001
 bgp router-id 10.255.0.21
 no bgp ebgp-requires-policy
 bgp bestpath as-path multipath-relax
 neighbor swp51 interface remote-as external
 neighbor swp52 interface remote-as external
 neighbor swp1 interface remote-as external
 address-family ipv4 unicast
  maximum-paths 64
 exit-address-family
!
";

    #[test]
    fn frr_conf_as_the_testbed_writes_it() {
        let c = FrrConf::parse(TESTBED_LEAF);
        assert!(!c.no_kernel_nexthops && !c.proto_only);
        assert_eq!(
            c.bgp,
            [BgpConf {
                asn: "65001".into(),
                multipath_relax: true,
                maximum_paths: vec![64],
                remote_as: vec!["external".into(); 3],
            }]
        );
        let f = frr_findings(&c, None, PlainGroupMode::default());
        assert_eq!(verdicts(&f), [Verdict::Ok, Verdict::Ok, Verdict::Ok]);
        assert!(f[0].what.contains("nexthop objects"), "{}", f[0]);
        let modulo = frr_findings(&c, None, PlainGroupMode::Modulo);
        assert_eq!(modulo[0].verdict, Verdict::Warn);
    }

    #[test]
    fn frr_without_multipath_relax_or_with_one_path() {
        let text = "zebra nexthop proto only
no zebra nexthop kernel enable
router bgp 65000
 neighbor 10.0.0.1 remote-as 65001
 neighbor 10.0.0.2 remote-as 65002
 neighbor 10.0.0.3 remote-as 65000
 address-family ipv4 unicast
  maximum-paths 1
 exit-address-family
exit
router bgp 65100 vrf blue
 neighbor 10.9.0.1 remote-as external
";
        let c = FrrConf::parse(text);
        assert!(c.no_kernel_nexthops && c.proto_only);
        assert_eq!(c.bgp.len(), 2);
        assert_eq!(c.bgp[0].external_neighbours(), 2, "65000 is internal");
        let now = NexthopUse {
            plain_group_routes: 0,
            resilient_group_routes: 0,
            inline_multipath_routes: 3,
        };
        let f = frr_findings(&c, Some(now), PlainGroupMode::default());
        assert_eq!(
            verdicts(&f),
            [Verdict::Ok, Verdict::Warn, Verdict::Warn, Verdict::Ok]
        );
        assert!(f[0].what.contains("inline") && f[0].what.contains("3 inline multipath routes"));
        assert!(f[1]
            .fix
            .as_deref()
            .unwrap_or("")
            .contains("multipath-relax"));
        assert!(f[2].what.contains("maximum-paths 1"));
        assert!(
            f[3].what.contains("not set"),
            "one external neighbour: no relax needed"
        );
    }

    #[test]
    fn lines_carry_verdict_check_finding_and_fix() {
        let f = fail("x", "broken", "mend it");
        assert_eq!(f.to_string(), "fail x: broken; fix: mend it");
        assert_eq!(ok("y", "fine").to_string(), "ok   y: fine");
    }

    #[test]
    fn pins_of_another_layout_fail() {
        let p = Pins {
            dir: "/sys/fs/bpf/xdp-ecmp".into(),
            maps: true,
            links: vec![],
            layout_error: Some("maps of layout version 3".into()),
        };
        assert_eq!(pins_finding(&p).verdict, Verdict::Fail);
        let ours = Pins {
            layout_error: None,
            links: vec!["swp1".into(), "swp2".into()],
            ..p
        };
        let f = pins_finding(&ours);
        assert_eq!(f.verdict, Verdict::Ok);
        assert!(f.what.contains("swp1, swp2"), "{f}");
    }

    #[test]
    fn the_engine_decides_whether_af_xdp_is_needed() {
        let no = Found::No("socket(AF_XDP): Address family not supported".into());
        assert_eq!(af_xdp(&no, false).verdict, Verdict::Ok);
        assert_eq!(af_xdp(&no, true).verdict, Verdict::Fail);
        assert_eq!(
            af_xdp(&Found::Yes("a socket opened".into()), true).verdict,
            Verdict::Ok
        );
    }

    #[test]
    fn ip_netns_exec_hides_bpffs() {
        let f = bpffs(&Found::No("not mounted".into()), Some("blue"));
        assert_eq!(f.verdict, Verdict::Fail);
        assert!(f
            .fix
            .as_deref()
            .unwrap_or("")
            .contains("nsenter --net=/run/netns/blue"));
        assert_eq!(
            bpffs(&Found::No("not mounted".into()), None).verdict,
            Verdict::Ok
        );
    }
}
