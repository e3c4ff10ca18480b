//! Reading the pinned maps back for `show`, and asking the loaded program about a packet, as received on a port, for `calc`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use dataplane::abi::{
    xe_group, xe_nexthop, PinEvent, Verdict, GROUP_MODULO, GROUP_RESILIENT, INPORT_FWD_V4,
    INPORT_FWD_V6, INPORT_RPF, ROUTE_PIN, RT_BLACKHOLE, RT_LOCAL, RT_PROHIBIT, RT_UNICAST,
    RT_UNREACHABLE,
};
use dataplane::{current_cpu, pin_thread_to_cpu};
use dataplane::{Dataplane, LoadOptions, StampMode};
use serde::Serialize;

/// A route as the maps hold it.
#[derive(Debug, Clone, Serialize)]
pub struct RouteRow {
    pub prefix: String,
    pub kind: &'static str,
    pub group: Option<u32>,
    /// Its flows keep their next hop (flow pinning).
    pub pinned: bool,
}

/// A group as the maps hold it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupRow {
    pub id: u32,
    pub mode: &'static str,
    pub base: u32,
    pub size: u16,
    /// Next-hop id -> slots it holds.
    pub members: BTreeMap<u32, usize>,
}

/// A next hop as the maps hold it.
#[derive(Debug, Clone, Serialize)]
pub struct NexthopRow {
    pub id: u32,
    pub dev: String,
    pub ifindex: u32,
    pub lladdr: String,
    pub src_mac: String,
    pub mtu: u16,
    pub vlan: u16,
    pub usable: bool,
    pub state: Vec<&'static str>,
}

/// An attached port as the program admits frames from it.
#[derive(Debug, Clone, Serialize)]
pub struct PortRow {
    pub dev: String,
    pub ifindex: u32,
    /// Frames to any other unicast MAC go to the kernel.
    pub mac: String,
    pub ipv4_forwarding: bool,
    pub ipv6_forwarding: bool,
    /// rp_filter on: the kernel checks IPv4 sources by a reverse lookup,
    /// so IPv4 from this port goes to it.
    pub ipv4_rp_filter: bool,
}

/// A bucket of a group.
#[derive(Debug, Clone, Serialize)]
pub struct BucketRow {
    pub index: u32,
    pub nexthop: u32,
    pub dev: String,
    /// Last-used stamp: the kernel's jiffies (low 32 bits, | 1), 0 = never.
    pub last_used_tick: u32,
}

pub fn mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn ifname(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buffer of IF_NAMESIZE bytes as the call requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("if{ifindex}");
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn kind_name(k: u8) -> &'static str {
    match k {
        RT_UNICAST => "unicast",
        RT_LOCAL => "local",
        RT_BLACKHOLE => "blackhole",
        RT_UNREACHABLE => "to-kernel",
        RT_PROHIBIT => "to-kernel-refused",
        _ => "unknown",
    }
}

/// Opens the pinned maps (loading a traced copy of the program over them
/// that neither stamps buckets nor counts packets: asking where a flow goes
/// leaves the idle timers and the statistics as they were; it checks
/// admission as the attached program does).
pub fn open(pin_dir: &Path) -> Result<Dataplane> {
    if !pin_dir.join("xe_routes_v4").exists() {
        bail!("no xdp-ecmp maps pinned under {} (is `xdp-ecmp run` or `attach` using this --pin-dir?)", pin_dir.display());
    }
    Ok(Dataplane::load(&LoadOptions {
        trace_decisions: true,
        stamp_mode: StampMode::Never,
        no_counters: true,
        admit_any: false,
        // Asks the decision itself: a forward is answered, not steered.
        steer_xsk: false,
        pin_dir: Some(pin_dir.to_owned()),
        sizes: None,
        flows: None,
    })?)
}

/// The ports the program admits frames from, by ifindex.
pub fn ports(dp: &Dataplane) -> Result<Vec<PortRow>> {
    Ok(dp
        .inports()?
        .into_iter()
        .map(|(ifindex, p)| PortRow {
            dev: ifname(ifindex),
            ifindex,
            mac: mac(&p.mac),
            ipv4_forwarding: p.flags & INPORT_FWD_V4 != 0,
            ipv6_forwarding: p.flags & INPORT_FWD_V6 != 0,
            ipv4_rp_filter: p.flags & INPORT_RPF != 0,
        })
        .collect())
}

/// The port `calc` asks as: (name, ifindex, the MAC its frame goes to).
/// Named: that interface, with the MAC it is admitted with (its link's MAC
/// when it is not admitted: the program then says so); else the attached
/// port with the lowest ifindex.
pub fn ingress(dp: &Dataplane, name: Option<&str>) -> Result<(String, u32, [u8; 6])> {
    let ports = dp.inports()?;
    match name {
        Some(n) => {
            let ifindex = dataplane::ifindex_of(n)
                .with_context(|| format!("ingress port {n} (check `ip link`)"))?;
            let mac = match ports.iter().find(|(i, _)| *i == ifindex) {
                Some((_, p)) => p.mac,
                None => link_mac(n)?,
            };
            Ok((n.to_owned(), ifindex, mac))
        }
        None => match ports.first() {
            Some((ifindex, p)) => Ok((ifname(*ifindex), *ifindex, p.mac)),
            None => bail!(
                "no port is attached, so there is no port to receive the packet on: start `xdp-ecmp run -p PORT` (or `xdp-ecmp attach PORT`) with this --pin-dir, in this network namespace"
            ),
        },
    }
}

/// The MAC of an interface of this network namespace (from a netlink link dump).
pub fn link_mac(port: &str) -> Result<[u8; 6]> {
    let mut state = crate::state::KernelState::new(crate::state::TABLE_MAIN);
    crate::mirror::Mirror::open(1 << 16)?.dump_links(&mut state)?;
    state
        .links
        .values()
        .find(|l| l.name == port)
        .map(|l| l.mac)
        .ok_or_else(|| anyhow::anyhow!("ingress port {port}: no such interface (check `ip link`)"))
}

pub fn routes(dp: &Dataplane) -> Result<Vec<RouteRow>> {
    let mut rows: Vec<RouteRow> = Vec::new();
    let row = |prefix: String, r: &dataplane::abi::xe_route| RouteRow {
        prefix,
        kind: kind_name(r.kind),
        group: (r.kind == RT_UNICAST).then_some(r.group),
        pinned: r.flags & ROUTE_PIN != 0,
    };
    for (a, l, r) in dp.routes_v4()? {
        rows.push(row(format!("{a}/{l}"), &r));
    }
    for (a, l, r) in dp.routes_v6()? {
        rows.push(row(format!("{a}/{l}"), &r));
    }
    rows.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    Ok(rows)
}

fn group_row(dp: &Dataplane, id: u32, g: &xe_group) -> Result<GroupRow> {
    let mut members = BTreeMap::new();
    for nh in dp.slots(g.base, u32::from(g.size))? {
        *members.entry(nh).or_insert(0) += 1;
    }
    Ok(GroupRow {
        id,
        mode: match g.mode {
            GROUP_RESILIENT => "resilient",
            GROUP_MODULO => "modulo",
            _ => "unused",
        },
        base: g.base,
        size: g.size,
        members,
    })
}

/// Groups referenced by routes.
pub fn groups(dp: &Dataplane) -> Result<Vec<GroupRow>> {
    let ids: BTreeSet<u32> = routes(dp)?.into_iter().filter_map(|r| r.group).collect();
    ids.into_iter()
        .map(|id| group_row(dp, id, &dp.group(id)?))
        .collect()
}

pub fn nexthop_row(id: u32, nh: &xe_nexthop) -> NexthopRow {
    let mut state = Vec::new();
    if nh.state & dataplane::abi::NH_VALID != 0 {
        state.push("valid");
    }
    if nh.state & dataplane::abi::NH_RESOLVED != 0 {
        state.push("resolved");
    }
    if nh.state & dataplane::abi::NH_LINK_UP != 0 {
        state.push("link-up");
    }
    if nh.state & dataplane::abi::NH_TXPORT != 0 {
        state.push("txport");
    }
    NexthopRow {
        id,
        dev: ifname(nh.ifindex),
        ifindex: nh.ifindex,
        lladdr: mac(&nh.dmac),
        src_mac: mac(&nh.smac),
        mtu: nh.mtu,
        vlan: nh.vlan,
        usable: nh.state & (dataplane::abi::NH_USABLE | dataplane::abi::NH_TXPORT)
            == dataplane::abi::NH_USABLE | dataplane::abi::NH_TXPORT,
        state,
    }
}

/// Next hops referenced by groups.
pub fn nexthops(dp: &Dataplane) -> Result<Vec<NexthopRow>> {
    let ids: BTreeSet<u32> = groups(dp)?
        .into_iter()
        .flat_map(|g| g.members.into_keys())
        .filter(|id| *id != 0)
        .collect();
    ids.into_iter()
        .map(|id| Ok(nexthop_row(id, &dp.nexthop(id)?)))
        .collect()
}

/// `show buckets GROUP|PREFIX`: the group id, and the route when a prefix
/// (or an address: its host route) names it.
pub fn group_or_route(dp: &Dataplane, arg: &str) -> Result<(u32, Option<String>)> {
    if let Ok(id) = arg.parse::<u32>() {
        return Ok((id, None));
    }
    let prefix = crate::config::parse_prefix(arg)
        .with_context(|| format!("{arg:?} is neither a group id nor a route's prefix"))?
        .to_string();
    match routes(dp)?.into_iter().find(|r| r.prefix == prefix) {
        Some(RouteRow { group: Some(g), .. }) => Ok((g, Some(prefix))),
        Some(r) => bail!("route {prefix} has no group: it is {}", r.kind),
        None => bail!("no route {prefix} in the dataplane (see `xdp-ecmp show routes`)"),
    }
}

pub fn buckets(dp: &Dataplane, group: u32) -> Result<Vec<BucketRow>> {
    let g = dp.group(group)?;
    if g.mode == 0 {
        bail!("group {group} is not in use (see `xdp-ecmp show groups`)");
    }
    let slots = dp.slots(g.base, u32::from(g.size))?;
    slots
        .iter()
        .enumerate()
        .map(|(i, nh)| {
            Ok(BucketRow {
                index: i as u32,
                nexthop: *nh,
                dev: if *nh == 0 {
                    "-".into()
                } else {
                    ifname(dp.nexthop(*nh)?.ifindex)
                },
                last_used_tick: dp.slot_used(g.base + i as u32)?,
            })
        })
        .collect()
}

/// One flow for `calc`.
#[derive(Debug, Clone)]
pub struct Flow {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

/// Builds the frame `calc` asks the program about (TTL 64, to `dst_mac`).
pub fn build_frame(f: &Flow, dst_mac: [u8; 6]) -> Result<Vec<u8>> {
    use etherparse::PacketBuilder;
    let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], dst_mac);
    let ip = match (f.src, f.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => bail!(
            "source {} and destination {} are of different families",
            f.src,
            f.dst
        ),
    };
    let mut out = Vec::new();
    let payload = [0u8; 8];
    match f.proto {
        17 => ip.udp(f.sport, f.dport).write(&mut out, &payload)?,
        6 => ip
            .tcp(f.sport, f.dport, 1, 64240)
            .syn()
            .write(&mut out, &payload)?,
        1 => ip.icmpv4_echo_request(1, 1).write(&mut out, &payload)?,
        58 => ip.icmpv6_echo_request(1, 1).write(&mut out, &payload)?,
        p => bail!("protocol {p}: calc builds udp, tcp, icmp or icmpv6 packets"),
    }
    Ok(out)
}

/// The program's answer for one frame.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub verdict: String,
    pub egress: Option<String>,
    pub nexthop: Option<u32>,
    pub lladdr: Option<String>,
    pub group: Option<u32>,
    pub bucket: Option<u32>,
    pub hash: String,
    /// For a flow to a pinned route: what its flow-table entry says.
    pub pin: Option<String>,
}

/// What a flow-table event means to someone asking about one flow.
fn pin_meaning(e: PinEvent) -> &'static str {
    match e {
        PinEvent::Hit => "pinned: its flow-table entry holds it on this next hop",
        PinEvent::Inserted => "not pinned yet: its next packet pins it to this next hop",
        PinEvent::Repinned => {
            "its entry's next hop died, left the group or aged out: its next packet pins it here"
        }
        PinEvent::Ended => "a RST: its next packet ends its entry",
        PinEvent::Flushed => "flushed",
    }
}

/// Runs the loaded program on `frame` as received on `ingress` (an ifindex
/// of this network namespace; BPF_PROG_TEST_RUN) and reads its decision.
pub fn ask(dp: &Dataplane, ingress: u32, frame: &[u8]) -> Result<Answer> {
    let cpu = current_cpu();
    pin_thread_to_cpu(cpu).context("pinning to a CPU to read the per-CPU trace")?;
    let mut out = vec![0u8; frame.len() + 64];
    dp.test_run_from(ingress, frame, &mut out, 1)?;
    let d = dp.last_decision(cpu)?;
    let v = Verdict::from_u32(d.verdict).context("unknown verdict from the program")?;
    let fwd = v == Verdict::Forward;
    let reached_group = d.group != 0 || fwd;
    Ok(Answer {
        verdict: v.name().to_string(),
        egress: fwd.then(|| ifname(d.ifindex)),
        nexthop: (fwd || d.nexthop != 0).then_some(d.nexthop),
        lladdr: if fwd {
            Some(mac(&dp.nexthop(d.nexthop)?.dmac))
        } else {
            None
        },
        group: reached_group.then_some(d.group),
        // A pinned flow's entry chose, not a bucket.
        bucket: (reached_group && PinEvent::of_decision(d.pin) != Some(PinEvent::Hit))
            .then_some(d.bucket),
        hash: format!("{:#010x}", d.hash),
        pin: PinEvent::of_decision(d.pin).map(|e| pin_meaning(e).to_string()),
    })
}

/// Frames of a pcap file (classic format, Ethernet link type).
pub fn pcap_frames(path: &Path) -> Result<Vec<Vec<u8>>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if data.len() < 24 {
        bail!("{}: too short for a pcap header", path.display());
    }
    let magic = u32::from_le_bytes(data[0..4].try_into()?);
    let le = match magic {
        0xa1b2c3d4 | 0xa1b23c4d => true,
        0xd4c3b2a1 | 0x4d3cb2a1 => false,
        _ => bail!(
            "{}: not a pcap file (pcapng is not read; convert with `tcpdump -r IN -w OUT`)",
            path.display()
        ),
    };
    let rd = |b: &[u8]| -> u32 {
        let a: [u8; 4] = b.try_into().unwrap_or_default();
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    if rd(&data[20..24]) != 1 {
        bail!(
            "{}: link type {} is not Ethernet",
            path.display(),
            rd(&data[20..24])
        );
    }
    let mut frames = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() {
        let caplen = rd(&data[off + 8..off + 12]) as usize;
        let start = off + 16;
        if start + caplen > data.len() {
            bail!(
                "{}: record at byte {off} runs past the end of the file",
                path.display()
            );
        }
        frames.push(data[start..start + caplen].to_vec());
        off = start + caplen;
    }
    Ok(frames)
}
