//! Byte-level packet builders for tests, and the expected frame after forwarding computed the slow way (full checksum).

use dataplane::abi::xe_flow;

pub const ETH_IP: u16 = 0x0800;
pub const ETH_IPV6: u16 = 0x86dd;

pub fn v4(s: &str) -> [u8; 4] {
    s.parse::<std::net::Ipv4Addr>().expect("v4").octets()
}

pub fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().expect("v6").octets()
}

/// Ethernet frame: dst MAC, src MAC, VLAN tags as (TPID, TCI), ethertype, payload.
pub fn eth(dst: [u8; 6], vlans: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(22 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0xcc, 0x01]);
    for (tpid, tci) in vlans {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// One's-complement checksum of a byte string.
pub fn csum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// IPv4 header fields a test may vary.
#[derive(Clone)]
pub struct Ip4 {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub ttl: u8,
    pub proto: u8,
    pub frag: u16, // flags (DF 0x4000, MF 0x2000) | offset in 8-byte units
    pub options: Vec<u8>,
}

impl Ip4 {
    pub fn new(src: &str, dst: &str, proto: u8) -> Ip4 {
        Ip4 {
            src: v4(src),
            dst: v4(dst),
            ttl: 64,
            proto,
            frag: 0,
            options: Vec::new(),
        }
    }

    /// Header + payload with a valid checksum and total length.
    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let hlen = 20 + self.options.len();
        assert!(
            hlen.is_multiple_of(4) && hlen <= 60,
            "options must pad to 4 bytes"
        );
        let tot = hlen + payload.len();
        let mut h = vec![0u8; hlen];
        h[0] = 0x40 | (hlen / 4) as u8;
        h[2..4].copy_from_slice(&(tot as u16).to_be_bytes());
        h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        h[6..8].copy_from_slice(&self.frag.to_be_bytes());
        h[8] = self.ttl;
        h[9] = self.proto;
        h[12..16].copy_from_slice(&self.src);
        h[16..20].copy_from_slice(&self.dst);
        h[20..].copy_from_slice(&self.options);
        let c = csum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(payload);
        h
    }
}

/// IPv6 header + payload.
pub fn ip6(
    src: [u8; 16],
    dst: [u8; 16],
    hop: u8,
    next: u8,
    flowlabel: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    let vtf = (6u32 << 28) | (flowlabel & 0xfffff);
    h[0..4].copy_from_slice(&vtf.to_be_bytes());
    h[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    h[6] = next;
    h[7] = hop;
    h[8..24].copy_from_slice(&src);
    h[24..40].copy_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

/// An extension header counted in 8-byte units (hop-by-hop, routing, destination options).
pub fn ext8(next: u8, units: u8) -> Vec<u8> {
    let mut h = vec![0u8; (usize::from(units) + 1) * 8];
    h[0] = next;
    h[1] = units;
    h[2] = 1; // PadN option filling the rest
    h[3] = (h.len() - 4) as u8;
    h
}

/// IPv6 fragment header.
pub fn frag6(next: u8, offset_units: u16, more: bool) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[0] = next;
    let v = (offset_units << 3) | u16::from(more);
    h[2..4].copy_from_slice(&v.to_be_bytes());
    h[4..8].copy_from_slice(&0xabcd_0001u32.to_be_bytes());
    h
}

/// Authentication header; its length is in 4-byte units minus 2 (RFC 4302).
pub fn ah(next: u8, icv_words: u8) -> Vec<u8> {
    let len = 12 + usize::from(icv_words) * 4;
    let mut h = vec![0u8; len];
    h[0] = next;
    h[1] = (len / 4 - 2) as u8;
    h[4..8].copy_from_slice(&0x100u32.to_be_bytes());
    h
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(payload);
    h
}

pub fn tcp(sport: u16, dport: u16, doff: u8) -> Vec<u8> {
    let mut h = vec![0u8; usize::from(doff.max(5)) * 4];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[12] = doff << 4;
    h[13] = 0x02; // SYN
    h
}

pub fn sctp(sport: u16, dport: u16) -> Vec<u8> {
    let mut h = vec![0u8; 12];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h
}

/// ICMP / ICMPv6 message: type, code, 4 bytes of rest-of-header, body.
pub fn icmp(ty: u8, code: u8, body: &[u8]) -> Vec<u8> {
    let mut h = vec![ty, code, 0, 0, 0, 0, 0x05, 0xdc];
    h.extend_from_slice(body);
    h
}

/// IPv4 flow for the hash (addresses in wire order).
pub fn flow4(src: &str, dst: &str, sport: u16, dport: u16, proto: u8) -> xe_flow {
    let mut f = xe_flow::default();
    f.src[0] = u32::from_ne_bytes(v4(src));
    f.dst[0] = u32::from_ne_bytes(v4(dst));
    f.sport = sport;
    f.dport = dport;
    f.proto = proto;
    f
}

/// IPv6 flow for the hash.
pub fn flow6(src: &str, dst: &str, sport: u16, dport: u16, proto: u8, flowlabel: u32) -> xe_flow {
    let mut f = xe_flow::default();
    let (s, d) = (v6(src), v6(dst));
    for i in 0..4 {
        f.src[i] = u32::from_ne_bytes(s[4 * i..4 * i + 4].try_into().expect("4"));
        f.dst[i] = u32::from_ne_bytes(d[4 * i..4 * i + 4].try_into().expect("4"));
    }
    f.sport = sport;
    f.dport = dport;
    f.proto = proto;
    f.flowlabel = flowlabel;
    f.is_v6 = 1;
    f
}

/// The frame a forwarder must emit: new MACs, the egress tag if any, TTL or
/// hop limit - 1 and, for IPv4, a checksum recomputed from scratch.
pub fn forwarded(input: &[u8], l2_len: usize, dmac: [u8; 6], smac: [u8; 6], vlan: u16) -> Vec<u8> {
    let l3 = &input[l2_len..];
    let v6 = l3[0] >> 4 == 6;
    let ethertype = if v6 { ETH_IPV6 } else { ETH_IP };
    let mut out = Vec::new();
    out.extend_from_slice(&dmac);
    out.extend_from_slice(&smac);
    if vlan != 0 {
        out.extend_from_slice(&0x8100u16.to_be_bytes());
        out.extend_from_slice(&vlan.to_be_bytes());
    }
    out.extend_from_slice(&ethertype.to_be_bytes());
    let start = out.len();
    out.extend_from_slice(l3);
    let ip = &mut out[start..];
    if v6 {
        ip[7] -= 1;
    } else {
        ip[8] -= 1;
        let hlen = usize::from(ip[0] & 0xf) * 4;
        ip[10] = 0;
        ip[11] = 0;
        let c = csum(&ip[..hlen]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
    out
}
