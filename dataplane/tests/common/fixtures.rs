//! The golden fixtures: named packets with their expected verdict and egress, one per behaviour of the verdict table.

use super::packets::*;
use super::*;
use dataplane::abi::{xe_flow, Verdict};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMP6: u8 = 58;
const Q: u16 = 0x8100;
const AD: u16 = 0x88a8;

/// Where a fixture must go.
pub enum Egress {
    /// Not forwarded: output equals input.
    None,
    /// Forwarded to this next hop.
    Nh(u32),
    /// Forwarded by hashing this flow in this group (`true`: L3 only).
    Hashed(u32, xe_flow, bool),
}

pub struct Fixture {
    pub name: &'static str,
    pub pkt: Vec<u8>,
    pub verdict: Verdict,
    pub egress: Egress,
}

fn fx(name: &'static str, pkt: Vec<u8>, verdict: Verdict, egress: Egress) -> Fixture {
    Fixture {
        name,
        pkt,
        verdict,
        egress,
    }
}

const CLIENT: &str = "10.2.0.100";
const ANYCAST: &str = "172.16.255.66";
const C6: &str = "2001:db8:2::100";
const A6: &str = "2001:db8:66::66";

fn e4(ip: &Ip4, l4: &[u8]) -> Vec<u8> {
    eth(IN_MAC, &[], ETH_IP, &ip.packet(l4))
}

fn e4v(vlans: &[(u16, u16)], ip: &Ip4, l4: &[u8]) -> Vec<u8> {
    eth(IN_MAC, vlans, ETH_IP, &ip.packet(l4))
}

fn e6(src: &str, dst: &str, hop: u8, next: u8, payload: &[u8]) -> Vec<u8> {
    eth(
        IN_MAC,
        &[],
        ETH_IPV6,
        &ip6(v6(src), v6(dst), hop, next, 0, payload),
    )
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Every fixture. Each names one behaviour of the verdict table.
pub fn fixtures() -> Vec<Fixture> {
    use Egress::*;
    use Verdict::*;
    let mut v = Vec::new();
    let udp4 = |dst: &str| Ip4::new(CLIENT, dst, UDP);
    let hashed4 =
        |g, sport, dport, proto| Hashed(g, flow4(CLIENT, ANYCAST, sport, dport, proto), false);

    // --- IPv4 forwarding, every L4 ---
    v.push(fx(
        "v4 udp to anycast",
        e4(&udp4(ANYCAST), &udp(32700, 53, b"query")),
        Forward,
        hashed4(G_ANYCAST, 32700, 53, UDP),
    ));
    v.push(fx(
        "v4 udp sport 31884 (guide fig. 2)",
        e4(&udp4(ANYCAST), &udp(31884, 53, b"query")),
        Forward,
        hashed4(G_ANYCAST, 31884, 53, UDP),
    ));
    v.push(fx(
        "v4 tcp syn to anycast",
        e4(&Ip4::new(CLIENT, ANYCAST, TCP), &tcp(40000, 80, 5)),
        Forward,
        hashed4(G_ANYCAST, 40000, 80, TCP),
    ));
    v.push(fx(
        "v4 tcp with options (doff 8)",
        e4(&Ip4::new(CLIENT, ANYCAST, TCP), &tcp(40001, 443, 8)),
        Forward,
        hashed4(G_ANYCAST, 40001, 443, TCP),
    ));
    v.push(fx(
        "v4 sctp",
        e4(&Ip4::new(CLIENT, ANYCAST, 132), &sctp(5000, 3868)),
        Forward,
        hashed4(G_ANYCAST, 5000, 3868, 132),
    ));
    v.push(fx(
        "v4 icmp echo hashes without ports",
        e4(&Ip4::new(CLIENT, ANYCAST, ICMP), &icmp(8, 0, b"ping")),
        Forward,
        hashed4(G_ANYCAST, 0, 0, ICMP),
    ));
    v.push(fx(
        "v4 gre (no ports)",
        e4(&Ip4::new(CLIENT, ANYCAST, 47), &[0u8; 8]),
        Forward,
        hashed4(G_ANYCAST, 0, 0, 47),
    ));
    v.push(fx(
        "v4 modulo group",
        e4(&udp4("10.10.1.1"), &udp(1234, 53, b"")),
        Forward,
        Hashed(G_MODULO, flow4(CLIENT, "10.10.1.1", 1234, 53, UDP), false),
    ));
    let mut opt = udp4(ANYCAST);
    opt.options = vec![1, 1, 1, 0]; // NOP NOP NOP EOL
    v.push(fx(
        "v4 with options (ihl 6)",
        e4(&opt, &udp(1000, 53, b"x")),
        Forward,
        hashed4(G_ANYCAST, 1000, 53, UDP),
    ));
    let mut opt15 = udp4(ANYCAST);
    opt15.options = vec![1; 40];
    v.push(fx(
        "v4 with 40 bytes of options (ihl 15)",
        e4(&opt15, &udp(1001, 53, b"x")),
        Forward,
        hashed4(G_ANYCAST, 1001, 53, UDP),
    ));
    v.push(fx(
        "v4 802.1Q tagged in, untagged out",
        e4v(&[(Q, 10)], &udp4(ANYCAST), &udp(1002, 53, b"")),
        Forward,
        hashed4(G_ANYCAST, 1002, 53, UDP),
    ));
    v.push(fx(
        "v4 QinQ (802.1ad + 802.1Q) in",
        e4v(&[(AD, 20), (Q, 10)], &udp4(ANYCAST), &udp(1003, 53, b"")),
        Forward,
        hashed4(G_ANYCAST, 1003, 53, UDP),
    ));
    v.push(fx(
        "v4 egress next hop pushes VLAN 100",
        e4(&udp4("10.24.1.1"), &udp(1, 2, b"")),
        Forward,
        Nh(NH_VLAN),
    ));
    v.push(fx(
        "v4 tagged in, other tag out",
        e4v(&[(Q, 7)], &udp4("10.24.1.1"), &udp(1, 2, b"")),
        Forward,
        Nh(NH_VLAN),
    ));
    v.push(fx(
        "v4 QinQ in, one tag out",
        e4v(&[(AD, 5), (Q, 7)], &udp4("10.24.1.1"), &udp(1, 2, b"")),
        Forward,
        Nh(NH_VLAN),
    ));
    v.push(fx(
        "v4 longer prefix wins",
        e4(&udp4("10.24.5.9"), &udp(1, 2, b"")),
        Forward,
        Nh(NH_P0),
    ));
    let mut ttl2 = udp4(ANYCAST);
    ttl2.ttl = 2;
    v.push(fx(
        "v4 ttl 2 forwards with ttl 1",
        e4(&ttl2, &udp(1004, 53, b"")),
        Forward,
        hashed4(G_ANYCAST, 1004, 53, UDP),
    ));
    let mut ttl255 = udp4(ANYCAST);
    ttl255.ttl = 255;
    v.push(fx(
        "v4 ttl 255",
        e4(&ttl255, &udp(1005, 53, b"")),
        Forward,
        hashed4(G_ANYCAST, 1005, 53, UDP),
    ));
    let mut df = udp4(ANYCAST);
    df.frag = 0x4000;
    v.push(fx(
        "v4 DF set is not a fragment",
        e4(&df, &udp(1006, 53, b"")),
        Forward,
        hashed4(G_ANYCAST, 1006, 53, UDP),
    ));
    let mut f1 = udp4(ANYCAST);
    f1.frag = 0x2000;
    v.push(fx(
        "v4 first fragment hashes on L3",
        e4(&f1, &udp(1007, 53, &[0; 16])),
        Forward,
        Hashed(G_ANYCAST, flow4(CLIENT, ANYCAST, 0, 0, UDP), true),
    ));
    let mut f2 = udp4(ANYCAST);
    f2.frag = 0x2000 | 3;
    v.push(fx(
        "v4 middle fragment hashes on L3",
        e4(&f2, &[0xee; 24]),
        Forward,
        Hashed(G_ANYCAST, flow4(CLIENT, ANYCAST, 0, 0, UDP), true),
    ));
    let mut f3 = udp4(ANYCAST);
    f3.frag = 6;
    v.push(fx(
        "v4 last fragment hashes on L3",
        e4(&f3, &[0xee; 3]),
        Forward,
        Hashed(G_ANYCAST, flow4(CLIENT, ANYCAST, 0, 0, UDP), true),
    ));
    let mut small = vec![0u8; 2];
    small[0] = 0xab;
    v.push(fx(
        "v4 fragment too short for ports still forwards",
        e4(&f2, &small),
        Forward,
        Hashed(G_ANYCAST, flow4(CLIENT, ANYCAST, 0, 0, UDP), true),
    ));
    let padded = {
        let mut p = e4(&udp4(ANYCAST), &udp(1008, 53, b""));
        p.extend_from_slice(&[0u8; 18]); // Ethernet minimum-size padding
        p
    };
    v.push(fx(
        "v4 ethernet padding kept",
        padded,
        Forward,
        hashed4(G_ANYCAST, 1008, 53, UDP),
    ));

    // --- ICMP errors hash on the quoted flow, reversed (PMTUD over anycast) ---
    let quoted_udp = Ip4::new(ANYCAST, CLIENT, UDP).packet(&udp(53, 32700, b"answer"));
    let router = "10.9.9.9";
    v.push(fx(
        "v4 frag-needed quoting udp goes where the flow goes",
        e4(&Ip4::new(router, ANYCAST, ICMP), &icmp(3, 4, &quoted_udp)),
        Forward,
        hashed4(G_ANYCAST, 32700, 53, UDP),
    ));
    let quoted_tcp = Ip4::new(ANYCAST, CLIENT, TCP).packet(&tcp(80, 40000, 5));
    v.push(fx(
        "v4 time-exceeded quoting tcp",
        e4(&Ip4::new(router, ANYCAST, ICMP), &icmp(11, 0, &quoted_tcp)),
        Forward,
        hashed4(G_ANYCAST, 40000, 80, TCP),
    ));
    let q8 = quoted_tcp[..28].to_vec(); // IP header + 8 bytes, as RFC 792 guarantees
    v.push(fx(
        "v4 dest-unreachable with ip header + 8 bytes quoted",
        e4(&Ip4::new(router, ANYCAST, ICMP), &icmp(3, 3, &q8)),
        Forward,
        hashed4(G_ANYCAST, 40000, 80, TCP),
    ));
    v.push(fx(
        "v4 parameter-problem quoting udp",
        e4(&Ip4::new(router, ANYCAST, ICMP), &icmp(12, 0, &quoted_udp)),
        Forward,
        hashed4(G_ANYCAST, 32700, 53, UDP),
    ));
    let mut qfrag = Ip4::new(ANYCAST, CLIENT, UDP);
    qfrag.frag = 0x2000;
    v.push(fx(
        "v4 icmp error quoting a fragment hashes its L3",
        e4(
            &Ip4::new(router, ANYCAST, ICMP),
            &icmp(3, 4, &qfrag.packet(&udp(53, 9, b""))),
        ),
        Forward,
        Hashed(G_ANYCAST, flow4(CLIENT, ANYCAST, 0, 0, UDP), true),
    ));
    v.push(fx(
        "v4 icmp error with a cut quote falls back to the outer flow",
        e4(
            &Ip4::new(router, ANYCAST, ICMP),
            &icmp(3, 1, &quoted_udp[..12]),
        ),
        Forward,
        Hashed(G_ANYCAST, flow4(router, ANYCAST, 0, 0, ICMP), false),
    ));

    // --- IPv4 handed to the kernel ---
    let mut ttl1 = udp4(ANYCAST);
    ttl1.ttl = 1;
    v.push(fx("v4 ttl 1", e4(&ttl1, &udp(1, 53, b"")), PassTtl, None));
    let mut ttl0 = udp4(ANYCAST);
    ttl0.ttl = 0;
    v.push(fx("v4 ttl 0", e4(&ttl0, &udp(1, 53, b"")), PassTtl, None));
    v.push(fx(
        "v4 over egress mtu",
        e4(&udp4("10.22.0.1"), &udp(1, 2, &[0u8; 1300])),
        PassMtu,
        None,
    ));
    v.push(fx(
        "v4 exactly egress mtu forwards",
        e4(&udp4("10.22.0.1"), &udp(1, 2, &[0u8; 1280 - 28])),
        Forward,
        Nh(NH_MTU1280),
    ));
    v.push(fx(
        "v4 neighbour unresolved",
        e4(&udp4("10.20.0.1"), &udp(1, 2, b"")),
        PassNexthopDown,
        None,
    ));
    v.push(fx(
        "v4 next hop link down",
        e4(&udp4("10.21.0.1"), &udp(1, 2, b"")),
        PassNexthopDown,
        None,
    ));
    v.push(fx(
        "v4 group with no member",
        e4(&udp4("10.25.0.1"), &udp(1, 2, b"")),
        PassNexthopDown,
        None,
    ));
    v.push(fx(
        "v4 group not in use",
        e4(&udp4("10.26.0.1"), &udp(1, 2, b"")),
        PassNexthopDown,
        None,
    ));
    v.push(fx(
        "v4 route to an unwritten group",
        e4(&udp4("10.27.0.1"), &udp(1, 2, b"")),
        PassNexthopDown,
        None,
    ));
    v.push(fx(
        "v4 egress port not in tx map",
        e4(&udp4("10.23.0.1"), &udp(1, 2, b"")),
        PassNoTxport,
        None,
    ));
    v.push(fx(
        "v4 no route",
        e4(&udp4("100.64.0.1"), &udp(1, 2, b"")),
        PassNoRoute,
        None,
    ));
    v.push(fx(
        "v4 local destination",
        e4(&udp4("192.0.2.1"), &udp(1, 2, b"")),
        PassLocal,
        None,
    ));
    // fib_validate_source: the kernel refuses to route from its own
    // address, or from under a blackhole or refused route.
    for (name, src) in [
        ("v4 source is a local address", "192.0.2.1"),
        ("v4 source under a blackhole route", "198.51.100.7"),
        ("v4 source under a refused route", "203.0.113.200"),
    ] {
        v.push(fx(
            name,
            e4(&Ip4::new(src, ANYCAST, UDP), &udp(1, 2, b"")),
            PassSource,
            None,
        ));
    }
    v.push(fx(
        "v4 source under a to-kernel route still forwards",
        e4(&Ip4::new("203.0.113.5", ANYCAST, UDP), &udp(1, 2, b"")),
        Forward,
        Hashed(G_ANYCAST, flow4("203.0.113.5", ANYCAST, 1, 2, UDP), false),
    ));
    v.push(fx(
        "v4 source 0/8",
        e4(&Ip4::new("0.1.2.3", ANYCAST, UDP), &udp(1, 2, b"")),
        PassSpecial,
        None,
    ));
    v.push(fx(
        "v4 local destination with ttl 1",
        e4(
            &{
                let mut i = udp4("192.0.2.1");
                i.ttl = 1;
                i
            },
            &udp(1, 2, b""),
        ),
        PassLocal,
        None,
    ));
    v.push(fx(
        "v4 unreachable route",
        e4(&udp4("203.0.113.5"), &udp(1, 2, b"")),
        PassNoRoute,
        None,
    ));
    v.push(fx(
        "v4 prohibit route",
        e4(&udp4("203.0.113.200"), &udp(1, 2, b"")),
        PassNoRoute,
        None,
    ));
    v.push(fx(
        "v4 multicast destination",
        e4(&udp4("224.0.0.5"), &udp(1, 2, b"")),
        PassMulticast,
        None,
    ));
    v.push(fx(
        "v4 limited broadcast",
        e4(&udp4("255.255.255.255"), &udp(67, 68, b"")),
        PassMulticast,
        None,
    ));
    v.push(fx(
        "L2 broadcast",
        eth(
            [0xff; 6],
            &[],
            ETH_IP,
            &udp4(ANYCAST).packet(&udp(1, 53, b"")),
        ),
        PassMulticast,
        None,
    ));
    v.push(fx(
        "L2 multicast MAC",
        eth(
            [0x01, 0, 0x5e, 0, 0, 5],
            &[],
            ETH_IP,
            &udp4(ANYCAST).packet(&udp(1, 53, b"")),
        ),
        PassMulticast,
        None,
    ));
    v.push(fx(
        "ARP is not IP",
        eth(IN_MAC, &[], 0x0806, &[0u8; 28]),
        PassNotIp,
        None,
    ));
    v.push(fx(
        "third VLAN tag is not IP",
        e4v(&[(AD, 1), (Q, 2), (Q, 3)], &udp4(ANYCAST), &udp(1, 53, b"")),
        PassNotIp,
        None,
    ));
    v.push(fx(
        "v4 loopback destination",
        e4(&udp4("127.0.0.1"), &udp(1, 2, b"")),
        PassSpecial,
        None,
    ));
    v.push(fx(
        "v4 0/8 destination",
        e4(&udp4("0.1.2.3"), &udp(1, 2, b"")),
        PassSpecial,
        None,
    ));
    v.push(fx(
        "v4 loopback source",
        e4(&Ip4::new("127.0.0.9", ANYCAST, UDP), &udp(1, 2, b"")),
        PassSpecial,
        None,
    ));
    v.push(fx(
        "v4 multicast source",
        e4(&Ip4::new("239.1.1.1", ANYCAST, UDP), &udp(1, 2, b"")),
        PassSpecial,
        None,
    ));

    // --- IPv4 dropped ---
    v.push(fx(
        "v4 blackhole route",
        e4(&udp4("198.51.100.7"), &udp(1, 2, b"")),
        DropBlackhole,
        None,
    ));
    let mut ihl4 = e4(&udp4(ANYCAST), &udp(1, 53, b""));
    ihl4[14] = 0x44;
    v.push(fx("v4 ihl 4", ihl4, DropMalformed, None));
    let mut ver5 = e4(&udp4(ANYCAST), &udp(1, 53, b""));
    ver5[14] = 0x55;
    v.push(fx("v4 header with version 5", ver5, DropMalformed, None));
    let mut long = e4(&udp4(ANYCAST), &udp(1, 53, b""));
    long[16..18].copy_from_slice(&200u16.to_be_bytes());
    v.push(fx(
        "v4 total length past the frame",
        long,
        DropMalformed,
        None,
    ));
    let mut short = e4(&udp4(ANYCAST), &udp(1, 53, b""));
    short[16..18].copy_from_slice(&16u16.to_be_bytes());
    v.push(fx(
        "v4 total length below the header",
        short,
        DropMalformed,
        None,
    ));
    v.push(fx(
        "v4 options cut by the frame end",
        e4(&opt15, &udp(1, 53, b""))[..14 + 40].to_vec(),
        DropTruncated,
        None,
    ));
    v.push(fx(
        "v4 header cut",
        e4(&udp4(ANYCAST), &udp(1, 53, b""))[..24].to_vec(),
        DropTruncated,
        None,
    ));
    v.push(fx(
        "ethernet header alone, IPv4 ethertype",
        eth(IN_MAC, &[], ETH_IP, &[]),
        DropTruncated,
        None,
    ));
    v.push(fx(
        "ethernet header alone, IPv6 ethertype",
        eth(IN_MAC, &[], ETH_IPV6, &[]),
        DropTruncated,
        None,
    ));
    v.push(fx(
        "VLAN tag cut",
        e4v(&[(Q, 10)], &udp4(ANYCAST), &udp(1, 53, b""))[..16].to_vec(),
        DropTruncated,
        None,
    ));
    let mut doff4 = tcp(1, 80, 5);
    doff4[12] = 4 << 4;
    v.push(fx(
        "v4 tcp data offset 4",
        e4(&Ip4::new(CLIENT, ANYCAST, TCP), &doff4),
        DropMalformed,
        None,
    ));
    v.push(fx(
        "v4 tcp header cut",
        e4(&Ip4::new(CLIENT, ANYCAST, TCP), &tcp(1, 80, 5)[..12]),
        DropTruncated,
        None,
    ));
    v.push(fx(
        "v4 tcp options past the packet",
        e4(&Ip4::new(CLIENT, ANYCAST, TCP), &tcp(1, 80, 8)[..24]),
        DropTruncated,
        None,
    ));
    v.push(fx(
        "v4 udp header cut",
        e4(&udp4(ANYCAST), &udp(1, 53, b"")[..6]),
        DropTruncated,
        None,
    ));
    v.push(fx(
        "v4 sctp header cut",
        e4(&Ip4::new(CLIENT, ANYCAST, 132), &sctp(1, 2)[..8]),
        DropTruncated,
        None,
    ));
    v.push(fx(
        "v4 icmp header cut",
        e4(&Ip4::new(CLIENT, ANYCAST, ICMP), &[8, 0, 0, 0]),
        DropTruncated,
        None,
    ));

    // --- IPv6 forwarding ---
    let h6 = |g, sport, dport, proto| Hashed(g, flow6(C6, A6, sport, dport, proto, 0), false);
    let l3h6 = |proto| Hashed(G_ANYCAST, flow6(C6, A6, 0, 0, proto, 0), true);
    v.push(fx(
        "v6 udp to anycast",
        e6(C6, A6, 64, UDP, &udp(32700, 53, b"q")),
        Forward,
        h6(G_ANYCAST, 32700, 53, UDP),
    ));
    v.push(fx(
        "v6 tcp to anycast",
        e6(C6, A6, 64, TCP, &tcp(40000, 443, 5)),
        Forward,
        h6(G_ANYCAST, 40000, 443, TCP),
    ));
    v.push(fx(
        "v6 sctp",
        e6(C6, A6, 64, 132, &sctp(7, 8)),
        Forward,
        h6(G_ANYCAST, 7, 8, 132),
    ));
    v.push(fx(
        "v6 modulo group",
        e6(C6, "2001:db8:10::9", 64, UDP, &udp(9, 53, b"")),
        Forward,
        Hashed(G_MODULO, flow6(C6, "2001:db8:10::9", 9, 53, UDP, 0), false),
    ));
    v.push(fx(
        "v6 flow label not hashed by default",
        eth(
            IN_MAC,
            &[],
            ETH_IPV6,
            &ip6(v6(C6), v6(A6), 64, UDP, 0xabcde, &udp(11, 53, b"")),
        ),
        Forward,
        h6(G_ANYCAST, 11, 53, UDP),
    ));
    v.push(fx(
        "v6 hop-by-hop then udp",
        e6(C6, A6, 64, 0, &cat(&[&ext8(UDP, 0), &udp(12, 53, b"")])),
        Forward,
        h6(G_ANYCAST, 12, 53, UDP),
    ));
    v.push(fx(
        "v6 routing header then tcp",
        e6(C6, A6, 64, 43, &cat(&[&ext8(TCP, 2), &tcp(13, 80, 5)])),
        Forward,
        h6(G_ANYCAST, 13, 80, TCP),
    ));
    v.push(fx(
        "v6 destination options then udp",
        e6(C6, A6, 64, 60, &cat(&[&ext8(UDP, 1), &udp(14, 53, b"")])),
        Forward,
        h6(G_ANYCAST, 14, 53, UDP),
    ));
    v.push(fx(
        "v6 AH (length in 4-byte units) then udp",
        e6(C6, A6, 64, 51, &cat(&[&ah(UDP, 3), &udp(15, 53, b"")])),
        Forward,
        h6(G_ANYCAST, 15, 53, UDP),
    ));
    v.push(fx(
        "v6 every extension header in a chain",
        e6(
            C6,
            A6,
            64,
            0,
            &cat(&[
                &ext8(60, 0),
                &ext8(43, 1),
                &ext8(51, 0),
                &ah(60, 1),
                &ext8(UDP, 0),
                &udp(16, 53, b""),
            ]),
        ),
        Forward,
        h6(G_ANYCAST, 16, 53, UDP),
    ));
    v.push(fx(
        "v6 first fragment hashes on L3",
        e6(
            C6,
            A6,
            64,
            44,
            &cat(&[&frag6(UDP, 0, true), &udp(17, 53, &[0; 8])]),
        ),
        Forward,
        l3h6(UDP),
    ));
    v.push(fx(
        "v6 later fragment hashes on L3",
        e6(C6, A6, 64, 44, &cat(&[&frag6(UDP, 2, false), &[0xee; 10]])),
        Forward,
        l3h6(UDP),
    ));
    v.push(fx(
        "v6 fragment after hop-by-hop",
        e6(
            C6,
            A6,
            64,
            0,
            &cat(&[&ext8(44, 0), &frag6(TCP, 9, true), &[0xee; 16]]),
        ),
        Forward,
        l3h6(TCP),
    ));
    let nine: Vec<u8> = (0..9)
        .flat_map(|i| ext8(if i == 8 { UDP } else { 60 }, 0))
        .collect();
    v.push(fx(
        "v6 more extension headers than walked hashes on L3",
        e6(C6, A6, 64, 60, &cat(&[&nine, &udp(18, 53, b"")])),
        Forward,
        Hashed(G_ANYCAST, flow6(C6, A6, 0, 0, 60, 0), false),
    ));
    v.push(fx(
        "v6 ESP (no ports)",
        e6(C6, A6, 64, 50, &[0u8; 16]),
        Forward,
        h6(G_ANYCAST, 0, 0, 50),
    ));
    v.push(fx(
        "v6 no next header",
        e6(C6, A6, 64, 59, &[]),
        Forward,
        h6(G_ANYCAST, 0, 0, 59),
    ));
    v.push(fx(
        "v6 icmpv6 echo",
        e6(C6, A6, 64, ICMP6, &icmp(128, 0, b"ping")),
        Forward,
        h6(G_ANYCAST, 0, 0, ICMP6),
    ));
    v.push(fx(
        "v6 carrying protocol 1 is not ICMP",
        e6(C6, A6, 64, ICMP, &icmp(3, 4, &[0; 40])),
        Forward,
        h6(G_ANYCAST, 0, 0, ICMP),
    ));
    v.push(fx(
        "v6 hop limit 2 forwards with 1",
        e6(C6, A6, 2, UDP, &udp(19, 53, b"")),
        Forward,
        h6(G_ANYCAST, 19, 53, UDP),
    ));
    v.push(fx(
        "v6 egress next hop pushes VLAN 100",
        e6(C6, "2001:db8:24::1", 64, UDP, &udp(1, 2, b"")),
        Forward,
        Nh(NH_VLAN),
    ));
    v.push(fx(
        "v6 QinQ in",
        eth(
            IN_MAC,
            &[(AD, 3), (Q, 4)],
            ETH_IPV6,
            &ip6(v6(C6), v6(A6), 64, UDP, 0, &udp(20, 53, b"")),
        ),
        Forward,
        h6(G_ANYCAST, 20, 53, UDP),
    ));
    let q6 = ip6(v6(A6), v6(C6), 60, UDP, 0, &udp(53, 32700, &[0; 32]));
    let r6 = "2001:db8:9::1";
    v.push(fx(
        "v6 packet-too-big quoting udp goes where the flow goes",
        e6(r6, A6, 64, ICMP6, &icmp(2, 0, &q6)),
        Forward,
        h6(G_ANYCAST, 32700, 53, UDP),
    ));
    let q6t = ip6(
        v6(A6),
        v6(C6),
        60,
        60,
        0,
        &cat(&[&ext8(TCP, 0), &tcp(443, 40000, 5)]),
    );
    v.push(fx(
        "v6 time-exceeded quoting tcp behind an extension header",
        e6(r6, A6, 64, ICMP6, &icmp(3, 0, &q6t)),
        Forward,
        h6(G_ANYCAST, 40000, 443, TCP),
    ));
    v.push(fx(
        "v6 dest-unreachable quoting udp",
        e6(r6, A6, 64, ICMP6, &icmp(1, 4, &q6)),
        Forward,
        h6(G_ANYCAST, 32700, 53, UDP),
    ));
    v.push(fx(
        "v6 icmp error with a cut quote falls back to the outer flow",
        e6(r6, A6, 64, ICMP6, &icmp(1, 4, &q6[..30])),
        Forward,
        Hashed(G_ANYCAST, flow6(r6, A6, 0, 0, ICMP6, 0), false),
    ));

    // --- IPv6 handed to the kernel ---
    v.push(fx(
        "v6 hop limit 1",
        e6(C6, A6, 1, UDP, &udp(1, 53, b"")),
        PassTtl,
        None,
    ));
    v.push(fx(
        "v6 multicast destination",
        e6(C6, "ff02::1", 64, UDP, &udp(1, 53, b"")),
        PassMulticast,
        None,
    ));
    v.push(fx(
        "v6 link-local destination",
        e6(C6, "fe80::1", 64, UDP, &udp(1, 53, b"")),
        PassSpecial,
        None,
    ));
    v.push(fx(
        "v6 link-local source",
        e6("fe80::2", A6, 64, UDP, &udp(1, 53, b"")),
        PassSpecial,
        None,
    ));
    v.push(fx(
        "v6 loopback destination",
        e6(C6, "::1", 64, UDP, &udp(1, 53, b"")),
        PassSpecial,
        None,
    ));
    v.push(fx(
        "v6 unspecified destination",
        e6(C6, "::", 64, UDP, &udp(1, 53, b"")),
        PassSpecial,
        None,
    ));
    v.push(fx(
        "v6 local destination",
        e6(C6, "2001:db8:ff::1", 64, UDP, &udp(1, 53, b"")),
        PassLocal,
        None,
    ));
    v.push(fx(
        "v6 unreachable route",
        e6(C6, "2001:db8:dead::1", 64, UDP, &udp(1, 53, b"")),
        PassNoRoute,
        None,
    ));
    v.push(fx(
        "v6 no route",
        e6(C6, "2001:db8:4444::1", 64, UDP, &udp(1, 53, b"")),
        PassNoRoute,
        None,
    ));
    v.push(fx(
        "v6 over egress mtu",
        e6(C6, "2001:db8:22::1", 64, UDP, &udp(1, 2, &[0; 1300])),
        PassMtu,
        None,
    ));
    v.push(fx(
        "v6 neighbour unresolved",
        e6(C6, "2001:db8:20::1", 64, UDP, &udp(1, 2, b"")),
        PassNexthopDown,
        None,
    ));

    // --- IPv6 dropped ---
    v.push(fx(
        "v6 blackhole route",
        e6(C6, "2001:db8:bad::1", 64, UDP, &udp(1, 53, b"")),
        DropBlackhole,
        None,
    ));
    let mut bad6 = e6(C6, A6, 64, UDP, &udp(1, 53, b""));
    bad6[14] = 0x40;
    v.push(fx("v6 header with version 4", bad6, DropMalformed, None));
    let mut plen6 = e6(C6, A6, 64, UDP, &udp(1, 53, b""));
    plen6[18..20].copy_from_slice(&500u16.to_be_bytes());
    v.push(fx(
        "v6 payload length past the frame",
        plen6,
        DropMalformed,
        None,
    ));
    v.push(fx(
        "v6 header cut",
        e6(C6, A6, 64, UDP, &udp(1, 53, b""))[..50].to_vec(),
        DropTruncated,
        None,
    ));
    v.push(fx(
        "v6 extension header past the payload",
        e6(C6, A6, 64, 0, &ext8(UDP, 3)[..16]),
        DropTruncated,
        None,
    ));
    let mut ah0 = ah(UDP, 1);
    ah0[1] = 0;
    v.push(fx(
        "v6 AH with length 0",
        e6(C6, A6, 64, 51, &cat(&[&ah0, &udp(1, 53, b"")])),
        DropMalformed,
        None,
    ));
    v.push(fx(
        "v6 fragment header cut",
        e6(C6, A6, 64, 44, &frag6(UDP, 0, true)[..6]),
        DropTruncated,
        None,
    ));
    let mut doff6 = tcp(1, 80, 5);
    doff6[12] = 2 << 4;
    v.push(fx(
        "v6 tcp data offset 2",
        e6(C6, A6, 64, TCP, &doff6),
        DropMalformed,
        None,
    ));
    v.push(fx(
        "v6 udp header cut",
        e6(C6, A6, 64, UDP, &[0, 1, 0, 53]),
        DropTruncated,
        None,
    ));
    v.push(fx(
        "v6 icmpv6 header cut",
        e6(C6, A6, 64, ICMP6, &[128, 0, 0, 0]),
        DropTruncated,
        None,
    ));
    v
}
