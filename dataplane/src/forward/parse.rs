//! Header parsing of the decision (the program's `xe_parse.h`): Ethernet and VLAN tags, IPv4 and IPv6 with extension headers, L4 ports and the flow an ICMP error quotes.

use etherparse::err::{ip_auth, ipv4, ipv6, tcp};
use etherparse::{
    Ethernet2HeaderSlice, IpAuthHeaderSlice, Ipv4HeaderSlice, Ipv6FragmentHeaderSlice,
    Ipv6HeaderSlice, Ipv6RawExtHeaderSlice, SingleVlanHeaderSlice, TcpHeaderSlice, UdpHeaderSlice,
};

use crate::abi::{xe_flow, Verdict, MAX_EXT_HEADERS};

pub(super) const ETH_P_IP: u16 = 0x0800;
pub(super) const ETH_P_IPV6: u16 = 0x86dd;
pub(super) const ETH_P_8021Q: u16 = 0x8100;
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

/// What the parsers learn (the program's `struct xe_meta`).
#[derive(Default)]
pub(super) struct Meta {
    pub(super) flow: xe_flow,
    pub(super) l2_len: usize,
    pub(super) l3_len: usize,
    pub(super) l4_off: usize,
    pub(super) ttl: u8,
    pub(super) frag: bool,
    pub(super) no_l4: bool,
    /// The TCP flags byte (FIN 0x01, RST 0x04); 0 for any other packet.
    pub(super) tcp_flags: u8,
}

pub(super) type Step<T = ()> = Result<T, Verdict>;

pub(super) fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}

/// `xe_parse_eth`.
pub(super) fn parse_eth(pkt: &[u8]) -> Step<Ethernet2HeaderSlice<'_>> {
    let eth = Ethernet2HeaderSlice::from_slice(pkt).map_err(|_| Verdict::DropTruncated)?;
    if eth.destination()[0] & 1 != 0 {
        return Err(Verdict::PassMulticast);
    }
    Ok(eth)
}

/// `xe_parse_l2` (after `parse_eth`).
pub(super) fn parse_l2(pkt: &[u8], eth: &Ethernet2HeaderSlice<'_>) -> Step<(u16, usize)> {
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

pub(super) fn parse_ipv4(pkt: &[u8], m: &mut Meta) -> Step {
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

pub(super) fn parse_ipv6(pkt: &[u8], m: &mut Meta) -> Step {
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
pub(super) fn parse_l4(pkt: &[u8], m: &mut Meta) -> Step {
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
            m.tcp_flags = l4[13];
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
