//! Reference model of the XDP program's forwarding decision: same verdict, egress and output bytes, bit for bit, without allocating per packet.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::err::{ip_auth, ipv4, ipv6, tcp};
use etherparse::{
    Ethernet2HeaderSlice, IpAuthHeaderSlice, Ipv4HeaderSlice, Ipv6FragmentHeaderSlice,
    Ipv6HeaderSlice, Ipv6RawExtHeaderSlice, SingleVlanHeaderSlice, TcpHeaderSlice, UdpHeaderSlice,
};

use crate::abi::{
    xe_config, xe_decision, xe_flow, xe_group, xe_inport, xe_nexthop, xe_route, Verdict,
    GROUP_UNUSED, HASH_POLICY_L4, HASH_PORTS, INPORT_FWD_V4, INPORT_FWD_V6, INPORT_RPF,
    MAX_EXT_HEADERS, MAX_GROUPS, MAX_NEXTHOPS, MAX_SLOTS, NH_TXPORT, NH_USABLE, RT_BLACKHOLE,
    RT_LOCAL, RT_PROHIBIT, RT_UNICAST, XDP_PASS,
};
use crate::error::Result;
use crate::hash::flow_hash;
use crate::tables::{
    check_group, check_prefix, check_range, check_route_v4, check_slots, TableWriter,
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_SCTP: u8 = 132;
const IPPROTO_ICMPV6: u8 = 58;
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DSTOPTS: u8 = 60;

/// Longest-prefix-match table with one hash map per prefix length present.
#[derive(Debug, Clone, Default)]
struct Lpm<const N: usize> {
    by_len: HashMap<u8, HashMap<[u8; N], xe_route>>,
    /// Prefix lengths present, longest first.
    lens: Vec<u8>,
}

fn mask<const N: usize>(mut addr: [u8; N], len: u8) -> [u8; N] {
    for (i, b) in addr.iter_mut().enumerate() {
        let keep = (usize::from(len)).saturating_sub(i * 8).min(8);
        *b &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
    }
    addr
}

impl<const N: usize> Lpm<N> {
    fn insert(&mut self, addr: [u8; N], len: u8, route: xe_route) {
        self.by_len
            .entry(len)
            .or_default()
            .insert(mask(addr, len), route);
        if !self.lens.contains(&len) {
            self.lens.push(len);
            self.lens.sort_unstable_by(|a, b| b.cmp(a));
        }
    }

    fn remove(&mut self, addr: [u8; N], len: u8) {
        if let Some(m) = self.by_len.get_mut(&len) {
            m.remove(&mask(addr, len));
            if m.is_empty() {
                self.by_len.remove(&len);
                self.lens.retain(|l| *l != len);
            }
        }
    }

    fn lookup(&self, addr: [u8; N]) -> Option<&xe_route> {
        self.lens
            .iter()
            .find_map(|len| self.by_len.get(len)?.get(&mask(addr, *len)))
    }
}

/// The model's copy of the program's maps.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    routes_v4: Lpm<4>,
    routes_v6: Lpm<16>,
    groups: HashMap<u32, xe_group>,
    slots: HashMap<u32, u32>,
    nexthops: HashMap<u32, xe_nexthop>,
    txports: HashSet<u32>,
    inports: HashMap<u32, xe_inport>,
    config: xe_config,
}

impl TableWriter for Tables {
    fn set_route_v4(&mut self, addr: Ipv4Addr, len: u8, route: &xe_route) -> Result<()> {
        check_prefix("IPv4", len, 32)?;
        check_route_v4(route)?;
        self.routes_v4.insert(addr.octets(), len, *route);
        Ok(())
    }
    fn delete_route_v4(&mut self, addr: Ipv4Addr, len: u8) -> Result<()> {
        check_prefix("IPv4", len, 32)?;
        self.routes_v4.remove(addr.octets(), len);
        Ok(())
    }
    fn set_route_v6(&mut self, addr: Ipv6Addr, len: u8, route: &xe_route) -> Result<()> {
        check_prefix("IPv6", len, 128)?;
        self.routes_v6.insert(addr.octets(), len, *route);
        Ok(())
    }
    fn delete_route_v6(&mut self, addr: Ipv6Addr, len: u8) -> Result<()> {
        check_prefix("IPv6", len, 128)?;
        self.routes_v6.remove(addr.octets(), len);
        Ok(())
    }
    fn set_group(&mut self, id: u32, group: &xe_group) -> Result<()> {
        check_group(id, group, MAX_SLOTS)?;
        self.groups.insert(id, *group);
        Ok(())
    }
    fn set_slots(&mut self, base: u32, nexthops: &[u32]) -> Result<()> {
        check_slots(base, nexthops.len(), MAX_SLOTS)?;
        for (i, nh) in nexthops.iter().enumerate() {
            self.slots.insert(base + i as u32, *nh);
        }
        Ok(())
    }
    fn set_nexthop(&mut self, id: u32, nh: &xe_nexthop) -> Result<()> {
        check_range("next-hop id", id, MAX_NEXTHOPS)?;
        self.nexthops.insert(id, *nh);
        Ok(())
    }
    fn add_txport(&mut self, ifindex: u32) -> Result<()> {
        self.txports.insert(ifindex);
        Ok(())
    }
    fn remove_txport(&mut self, ifindex: u32) -> Result<()> {
        self.txports.remove(&ifindex);
        Ok(())
    }
    fn set_inport(&mut self, ifindex: u32, port: &xe_inport) -> Result<()> {
        self.inports.insert(ifindex, *port);
        Ok(())
    }
    fn remove_inport(&mut self, ifindex: u32) -> Result<()> {
        self.inports.remove(&ifindex);
        Ok(())
    }
    fn set_config(&mut self, cfg: &xe_config) -> Result<()> {
        self.config = *cfg;
        Ok(())
    }

    /// No packet reads these tables while they are written.
    fn grace(&self) -> crate::grace::GracePeriods {
        crate::grace::GracePeriods::immediate()
    }
}

impl Tables {
    // ARRAY map semantics: any in-range key exists (zeroed), out of range does not.
    fn group(&self, id: u32) -> Option<xe_group> {
        (id < MAX_GROUPS).then(|| self.groups.get(&id).copied().unwrap_or_default())
    }
    fn slot(&self, slot: u32) -> Option<u32> {
        (slot < MAX_SLOTS).then(|| self.slots.get(&slot).copied().unwrap_or(0))
    }
    fn nexthop(&self, id: u32) -> Option<xe_nexthop> {
        (id < MAX_NEXTHOPS).then(|| self.nexthops.get(&id).copied().unwrap_or_default())
    }
}

/// What the parsers learn (the program's `struct xe_meta`).
#[derive(Default)]
struct Meta {
    flow: xe_flow,
    l2_len: usize,
    l3_len: usize,
    l4_off: usize,
    ttl: u8,
    frag: bool,
    no_l4: bool,
}

type Step<T = ()> = Result<T, Verdict>;

fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}

/// `xe_parse_eth`.
fn parse_eth(pkt: &[u8]) -> Step<Ethernet2HeaderSlice<'_>> {
    let eth = Ethernet2HeaderSlice::from_slice(pkt).map_err(|_| Verdict::DropTruncated)?;
    if eth.destination()[0] & 1 != 0 {
        return Err(Verdict::PassMulticast);
    }
    Ok(eth)
}

/// `xe_parse_l2` (after `parse_eth`).
fn parse_l2(pkt: &[u8], eth: &Ethernet2HeaderSlice<'_>) -> Step<(u16, usize)> {
    let mut proto = eth.ether_type().0;
    let mut off = eth.slice().len();
    for _ in 0..2 {
        if !is_vlan(proto) {
            break;
        }
        let vlan =
            SingleVlanHeaderSlice::from_slice(&pkt[off..]).map_err(|_| Verdict::DropTruncated)?;
        proto = vlan.ether_type().0;
        off += vlan.slice().len();
    }
    Ok((proto, off))
}

fn parse_ipv4(pkt: &[u8], m: &mut Meta) -> Step {
    let l3 = &pkt[m.l2_len..];
    let ip = Ipv4HeaderSlice::from_slice(l3).map_err(|e| match e {
        ipv4::HeaderSliceError::Len(_) => Verdict::DropTruncated,
        ipv4::HeaderSliceError::Content(_) => Verdict::DropMalformed,
    })?;
    let hlen = ip.slice().len();
    let tot = usize::from(ip.total_len());
    if tot < hlen || tot > l3.len() {
        return Err(Verdict::DropMalformed);
    }
    m.flow.src[0] = u32::from_ne_bytes(ip.source());
    m.flow.dst[0] = u32::from_ne_bytes(ip.destination());
    m.flow.proto = ip.protocol().0;
    m.l3_len = tot;
    m.l4_off = m.l2_len + hlen;
    m.ttl = ip.ttl();
    m.frag = ip.more_fragments() || ip.fragments_offset().value() != 0;
    m.no_l4 = m.frag;
    let d = ip.destination();
    let s = ip.source();
    if d[0] & 0xf0 == 0xe0 || d == [255; 4] {
        return Err(Verdict::PassMulticast);
    }
    if d[0] == 0 || d[0] == 127 || s[0] == 0 || s[0] == 127 || s[0] >= 224 {
        return Err(Verdict::PassSpecial);
    }
    Ok(())
}

fn v6_special(a: &[u8; 16], is_dst: bool) -> bool {
    let zero_prefix = a[..15].iter().all(|b| *b == 0);
    let loopback = zero_prefix && a[15] == 1;
    let unspecified = zero_prefix && a[15] == 0;
    let link_local = a[0] == 0xfe && a[1] & 0xc0 == 0x80;
    if is_dst {
        unspecified || loopback || link_local
    } else {
        loopback || link_local || a[0] == 0xff
    }
}

fn parse_ipv6(pkt: &[u8], m: &mut Meta) -> Step {
    let l3 = &pkt[m.l2_len..];
    let ip = Ipv6HeaderSlice::from_slice(l3).map_err(|e| match e {
        ipv6::HeaderSliceError::Len(_) => Verdict::DropTruncated,
        ipv6::HeaderSliceError::Content(_) => Verdict::DropMalformed,
    })?;
    let plen = usize::from(ip.payload_length());
    if 40 + plen > l3.len() {
        return Err(Verdict::DropMalformed);
    }
    let (s, d) = (ip.source(), ip.destination());
    for i in 0..4 {
        m.flow.src[i] = u32::from_ne_bytes(s[4 * i..4 * i + 4].try_into().unwrap_or_default());
        m.flow.dst[i] = u32::from_ne_bytes(d[4 * i..4 * i + 4].try_into().unwrap_or_default());
    }
    m.flow.flowlabel = ip.flow_label().value();
    m.flow.proto = ip.next_header().0;
    m.flow.is_v6 = 1;
    m.l3_len = 40 + plen;
    m.l4_off = m.l2_len + 40;
    m.ttl = ip.hop_limit();
    if d[0] == 0xff {
        return Err(Verdict::PassMulticast);
    }
    if v6_special(&d, true) || v6_special(&s, false) {
        return Err(Verdict::PassSpecial);
    }
    Ok(())
}

fn is_ext(nh: u8) -> bool {
    matches!(
        nh,
        IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS | IPV6_FRAGMENT | IPV6_AH
    )
}

/// The result of walking IPv6 extension headers.
struct Walk {
    off: usize,
    next: u8,
    frag: bool,
    no_l4: bool,
}

/// `xe_walk_ipv6_ext`: bounded walk from `off` (frame offset) to `end`.
fn walk_ipv6_ext(pkt: &[u8], end: usize, mut off: usize, mut next: u8) -> Step<Walk> {
    let mut w = Walk {
        off,
        next,
        frag: false,
        no_l4: false,
    };
    for _ in 0..MAX_EXT_HEADERS {
        if !is_ext(next) {
            w.off = off;
            w.next = next;
            return Ok(w);
        }
        let rest = pkt.get(off..end).unwrap_or_default();
        match next {
            IPV6_FRAGMENT => {
                let f = Ipv6FragmentHeaderSlice::from_slice(rest)
                    .map_err(|_| Verdict::DropTruncated)?;
                w.frag = true;
                w.no_l4 = true;
                w.off = off + 8;
                w.next = f.next_header().0;
                return Ok(w);
            }
            IPV6_AH => {
                let ah = IpAuthHeaderSlice::from_slice(rest).map_err(|e| match e {
                    ip_auth::HeaderSliceError::Len(_) => Verdict::DropTruncated,
                    ip_auth::HeaderSliceError::Content(_) => Verdict::DropMalformed,
                })?;
                next = ah.next_header().0;
                off += ah.slice().len();
            }
            _ => {
                let h =
                    Ipv6RawExtHeaderSlice::from_slice(rest).map_err(|_| Verdict::DropTruncated)?;
                next = h.next_header().0;
                off += h.slice().len();
            }
        }
    }
    w.no_l4 = is_ext(next);
    w.off = off;
    w.next = next;
    Ok(w)
}

fn has_ports(proto: u8) -> bool {
    matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP)
}

fn is_icmp_error(proto: u8, ty: u8) -> bool {
    match proto {
        IPPROTO_ICMP => matches!(ty, 3 | 11 | 12),
        IPPROTO_ICMPV6 => (1..=4).contains(&ty),
        _ => false,
    }
}

fn ports(p: &[u8]) -> (u16, u16) {
    (
        u16::from_be_bytes([p[0], p[1]]),
        u16::from_be_bytes([p[2], p[3]]),
    )
}

/// `xe_parse_quoted`: the flow an ICMP error quotes, reversed. False if unusable.
fn parse_quoted(pkt: &[u8], q: usize, qend: usize, m: &mut Meta) -> bool {
    let quote = pkt.get(q..qend).unwrap_or_default();
    let mut inner = xe_flow::default();
    let (nh, frag, no_l4, l4) = if m.flow.is_v6 == 0 {
        let Ok(ip) = Ipv4HeaderSlice::from_slice(quote) else {
            return false;
        };
        inner.src[0] = u32::from_ne_bytes(ip.source());
        inner.dst[0] = u32::from_ne_bytes(ip.destination());
        let frag = ip.more_fragments() || ip.fragments_offset().value() != 0;
        (ip.protocol().0, frag, frag, q + ip.slice().len())
    } else {
        let Ok(ip) = Ipv6HeaderSlice::from_slice(quote) else {
            return false;
        };
        let (s, d) = (ip.source(), ip.destination());
        for i in 0..4 {
            inner.src[i] = u32::from_ne_bytes(s[4 * i..4 * i + 4].try_into().unwrap_or_default());
            inner.dst[i] = u32::from_ne_bytes(d[4 * i..4 * i + 4].try_into().unwrap_or_default());
        }
        let Ok(w) = walk_ipv6_ext(pkt, qend, q + 40, ip.next_header().0) else {
            return false;
        };
        (w.next, w.frag, w.no_l4, w.off)
    };
    if !no_l4 && has_ports(nh) && l4 + 4 <= qend {
        (inner.sport, inner.dport) = ports(&pkt[l4..l4 + 4]);
    }
    m.flow.src = inner.dst;
    m.flow.dst = inner.src;
    m.flow.sport = inner.dport;
    m.flow.dport = inner.sport;
    m.flow.proto = nh;
    m.flow.flowlabel = 0;
    m.frag = frag;
    true
}

/// `xe_parse_l4`: the ports, or the quoted flow of an ICMP error.
fn parse_l4(pkt: &[u8], m: &mut Meta) -> Step {
    let end = m.l2_len + m.l3_len;
    let mut off = m.l4_off;
    let mut proto = m.flow.proto;
    if m.flow.is_v6 != 0 {
        let w = walk_ipv6_ext(pkt, end, off, proto)?;
        off = w.off;
        proto = w.next;
        m.frag |= w.frag;
        m.no_l4 |= w.no_l4;
        m.flow.proto = proto;
    }
    if m.no_l4 {
        return Ok(());
    }
    let l4 = pkt.get(off..end).unwrap_or_default();
    match proto {
        IPPROTO_TCP => {
            let t = TcpHeaderSlice::from_slice(l4).map_err(|e| match e {
                tcp::HeaderSliceError::Len(_) => Verdict::DropTruncated,
                tcp::HeaderSliceError::Content(_) => Verdict::DropMalformed,
            })?;
            (m.flow.sport, m.flow.dport) = (t.source_port(), t.destination_port());
        }
        IPPROTO_UDP => {
            let u = UdpHeaderSlice::from_slice(l4).map_err(|_| Verdict::DropTruncated)?;
            (m.flow.sport, m.flow.dport) = (u.source_port(), u.destination_port());
        }
        IPPROTO_SCTP => {
            if l4.len() < 12 {
                return Err(Verdict::DropTruncated);
            }
            (m.flow.sport, m.flow.dport) = ports(l4);
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 if (proto == IPPROTO_ICMPV6) == (m.flow.is_v6 != 0) => {
            if l4.len() < 8 {
                return Err(Verdict::DropTruncated);
            }
            if is_icmp_error(proto, l4[0]) {
                parse_quoted(pkt, off + 8, end, m);
            }
        }
        _ => {}
    }
    Ok(())
}

/// A forwarding decision: where the frame goes and how it is rewritten.
struct Forward {
    l2_len: usize,
    is_v6: bool,
    nh: xe_nexthop,
}

impl Tables {
    fn route(&self, m: &Meta) -> Option<xe_route> {
        if m.flow.is_v6 != 0 {
            let mut a = [0u8; 16];
            for i in 0..4 {
                a[4 * i..4 * i + 4].copy_from_slice(&m.flow.dst[i].to_ne_bytes());
            }
            self.routes_v6.lookup(a).copied()
        } else {
            self.routes_v4.lookup(m.flow.dst[0].to_ne_bytes()).copied()
        }
    }

    /// `xe_admit`: the forwarding flags of the port `ingress` if the frame
    /// is the kernel's to route from it.
    fn admit(&self, ingress: u32, eth: &Ethernet2HeaderSlice<'_>) -> Step<u8> {
        let port = self.inports.get(&ingress).ok_or(Verdict::PassNotPort)?;
        if eth.destination() != port.mac {
            return Err(Verdict::PassOtherhost);
        }
        if is_vlan(eth.ether_type().0) {
            return Err(Verdict::PassVlan);
        }
        Ok(port.flags)
    }

    /// `xe_decide` up to the rewrite; `ingress` None as the program loaded
    /// with `admit_any`.
    fn decide_inner(&self, ingress: Option<u32>, pkt: &[u8], d: &mut xe_decision) -> Step<Forward> {
        let eth = parse_eth(pkt)?;
        let fwd = match ingress {
            Some(i) => self.admit(i, &eth)?,
            None => INPORT_FWD_V4 | INPORT_FWD_V6,
        };
        let (proto, l2_len) = parse_l2(pkt, &eth)?;
        let mut m = Meta {
            l2_len,
            ..Meta::default()
        };
        match proto {
            ETH_P_IP if fwd & INPORT_FWD_V4 == 0 => return Err(Verdict::PassNoForwarding),
            ETH_P_IPV6 if fwd & INPORT_FWD_V6 == 0 => return Err(Verdict::PassNoForwarding),
            ETH_P_IP => parse_ipv4(pkt, &mut m)?,
            ETH_P_IPV6 => parse_ipv6(pkt, &mut m)?,
            _ => return Err(Verdict::PassNotIp),
        }
        let rt = self.route(&m).ok_or(Verdict::PassNoRoute)?;
        match rt.kind {
            RT_LOCAL => return Err(Verdict::PassLocal),
            RT_BLACKHOLE => return Err(Verdict::DropBlackhole),
            RT_UNICAST => {}
            _ => return Err(Verdict::PassNoRoute),
        }
        // `fib_validate_source`: not from the host's own, broadcast or
        // refused addresses, and no reverse-path check the program cannot make.
        if m.flow.is_v6 == 0 {
            let src = self
                .routes_v4
                .lookup(m.flow.src[0].to_ne_bytes())
                .map_or(0, |r| r.kind);
            if fwd & INPORT_RPF != 0 || matches!(src, RT_LOCAL | RT_BLACKHOLE | RT_PROHIBIT) {
                return Err(Verdict::PassSource);
            }
        }
        if m.ttl <= 1 {
            return Err(Verdict::PassTtl);
        }
        parse_l4(pkt, &mut m)?;
        let cfg = &self.config;
        let fields = if m.frag {
            (if cfg.hash_fields == 0 {
                HASH_POLICY_L4
            } else {
                cfg.hash_fields
            }) & !HASH_PORTS
        } else {
            cfg.hash_fields
        };
        d.hash = flow_hash(&m.flow, cfg.seed, fields, cfg.flags);
        d.group = rt.group;
        let grp = self.group(rt.group).ok_or(Verdict::PassNexthopDown)?;
        if grp.mode == GROUP_UNUSED || grp.size == 0 {
            return Err(Verdict::PassNexthopDown);
        }
        d.bucket = d.hash % u32::from(grp.size);
        let nhid = self
            .slot(grp.base.wrapping_add(d.bucket))
            .ok_or(Verdict::PassNexthopDown)?;
        d.nexthop = nhid;
        let nh = self.nexthop(nhid).ok_or(Verdict::PassNexthopDown)?;
        if nh.state & NH_USABLE != NH_USABLE {
            return Err(Verdict::PassNexthopDown);
        }
        if m.l3_len > usize::from(nh.mtu) {
            return Err(Verdict::PassMtu);
        }
        d.ifindex = nh.ifindex;
        if nh.state & NH_TXPORT == 0 {
            return Err(Verdict::PassNoTxport);
        }
        Ok(Forward {
            l2_len: m.l2_len,
            is_v6: m.flow.is_v6 != 0,
            nh,
        })
    }

    /// Decides `pkt` as the program loaded with `admit_any` would (every
    /// frame admitted) and writes the frame the program would leave into
    /// `out`, returning the decision and the frame length. `out` must hold
    /// `pkt.len() + 4` bytes (a pushed VLAN tag).
    pub fn decide(&self, pkt: &[u8], out: &mut [u8]) -> (xe_decision, usize) {
        self.decide_from(None, pkt, out)
    }

    /// Like `decide`, for `pkt` received on `ingress` by a program that
    /// checks admission (the ingress port's entry, MAC, tags and switches)
    /// when `ingress` is given.
    pub fn decide_from(
        &self,
        ingress: Option<u32>,
        pkt: &[u8],
        out: &mut [u8],
    ) -> (xe_decision, usize) {
        let mut d = xe_decision::default();
        match self.decide_inner(ingress, pkt, &mut d) {
            Err(v) => {
                d.verdict = v as u32;
                d.action = v.action();
                out[..pkt.len()].copy_from_slice(pkt);
                (d, pkt.len())
            }
            Ok(fwd) => {
                d.verdict = Verdict::Forward as u32;
                // bpf_redirect_map's fallback: a port missing from the map
                // although the next hop claims it passes the rewritten frame.
                d.action = if self.txports.contains(&fwd.nh.ifindex) {
                    Verdict::Forward.action()
                } else {
                    XDP_PASS
                };
                (d, rewrite(pkt, &fwd, out))
            }
        }
    }
}

/// `xe_rewrite`: new L2 header (MACs, optional 802.1Q tag), TTL/hop limit - 1.
fn rewrite(pkt: &[u8], f: &Forward, out: &mut [u8]) -> usize {
    let l3 = &pkt[f.l2_len..];
    let new_l2 = if f.nh.vlan != 0 { 18 } else { 14 };
    let len = new_l2 + l3.len();
    let ethertype = if f.is_v6 { ETH_P_IPV6 } else { ETH_P_IP };
    out[0..6].copy_from_slice(&f.nh.dmac);
    out[6..12].copy_from_slice(&f.nh.smac);
    if f.nh.vlan != 0 {
        out[12..14].copy_from_slice(&ETH_P_8021Q.to_be_bytes());
        out[14..16].copy_from_slice(&f.nh.vlan.to_be_bytes());
    }
    out[new_l2 - 2..new_l2].copy_from_slice(&ethertype.to_be_bytes());
    let ip = &mut out[new_l2..len];
    ip.copy_from_slice(l3);
    if f.is_v6 {
        ip[7] -= 1;
    } else {
        // The kernel's ip_decrease_ttl, on the checksum as stored (network order).
        let mut check = u32::from(u16::from_ne_bytes([ip[10], ip[11]]));
        check += u32::from(0x0100u16.to_be());
        let check = (check + u32::from(check >= 0xffff)) as u16;
        ip[10..12].copy_from_slice(&check.to_ne_bytes());
        ip[8] -= 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lpm_prefers_the_longest_prefix() {
        let mut l = Lpm::<4>::default();
        let r = |g| xe_route {
            group: g,
            kind: RT_UNICAST,
            ..Default::default()
        };
        l.insert([0, 0, 0, 0], 0, r(1));
        l.insert([172, 16, 0, 0], 12, r(2));
        l.insert([172, 16, 255, 66], 32, r(3));
        assert_eq!(l.lookup([172, 16, 255, 66]).map(|r| r.group), Some(3));
        assert_eq!(l.lookup([172, 16, 255, 67]).map(|r| r.group), Some(2));
        assert_eq!(l.lookup([10, 0, 0, 1]).map(|r| r.group), Some(1));
        l.remove([0, 0, 0, 0], 0);
        assert!(l.lookup([10, 0, 0, 1]).is_none());
    }

    #[test]
    fn mask_clears_host_bits() {
        assert_eq!(mask([172, 16, 255, 66], 12), [172, 16, 0, 0]);
        assert_eq!(mask([255; 4], 0), [0; 4]);
        assert_eq!(mask([255; 4], 31), [255, 255, 255, 254]);
    }

    #[test]
    fn ttl_decrement_keeps_the_checksum_valid() {
        // A valid IPv4 header; after the rewrite the header must still sum to 0xffff.
        let mut hdr = etherparse::Ipv4Header::new(
            8,
            64,
            etherparse::IpNumber::UDP,
            [10, 2, 0, 100],
            [172, 16, 255, 66],
        )
        .expect("header");
        hdr.header_checksum = hdr.calc_header_checksum();
        let mut pkt = vec![0u8; 14];
        pkt[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        pkt.extend_from_slice(&hdr.to_bytes());
        pkt.extend_from_slice(&[0; 8]);
        let f = Forward {
            l2_len: 14,
            is_v6: false,
            nh: xe_nexthop::default(),
        };
        let mut out = vec![0u8; pkt.len() + 4];
        let n = rewrite(&pkt, &f, &mut out);
        let ip = etherparse::Ipv4HeaderSlice::from_slice(&out[14..n]).expect("ip");
        assert_eq!(ip.ttl(), 63);
        assert_eq!(ip.header_checksum(), ip.to_header().calc_header_checksum());
    }
}
