//! Seeded random packets to the test world's prefixes, and mutations of them (flipped bytes, cuts, extensions, rewritten length fields), for the differential tests.

use rand::rngs::SmallRng;
use rand::Rng;

use super::packets::*;
use super::IN_MAC;

/// Random packets shaped like real traffic to the test world's routes.
pub fn random_packet(rng: &mut SmallRng) -> Vec<u8> {
    const V4_DST: [&str; 14] = [
        "172.16.255.66",
        "10.10.3.4",
        "10.20.0.9",
        "10.21.1.1",
        "10.22.0.2",
        "10.23.0.1",
        "10.24.1.1",
        "10.24.5.5",
        "10.25.0.1",
        "10.26.0.1",
        "192.0.2.1",
        "198.51.100.1",
        "203.0.113.9",
        "100.64.1.1",
    ];
    const V6_DST: [&str; 8] = [
        "2001:db8:66::1",
        "2001:db8:10::2",
        "2001:db8:20::3",
        "2001:db8:22::4",
        "2001:db8:24::5",
        "2001:db8:ff::1",
        "2001:db8:bad::1",
        "2001:db8:dead::1",
    ];
    let protos = [6u8, 17, 132, 1, 58, 47, 50];
    let vlans: Vec<(u16, u16)> = (0..rng.random_range(0..3u8))
        .map(|_| {
            (
                if rng.random_bool(0.5) { 0x8100 } else { 0x88a8 },
                rng.random(),
            )
        })
        .collect();
    let proto = protos[rng.random_range(0..protos.len())];
    let body_len = rng.random_range(0..64usize);
    let body: Vec<u8> = (0..body_len).map(|_| rng.random()).collect();
    let l4 = match proto {
        6 => [
            tcp(rng.random(), rng.random(), rng.random_range(4..9)),
            body,
        ]
        .concat(),
        17 => udp(rng.random(), rng.random(), &body),
        132 => [sctp(rng.random(), rng.random()), body].concat(),
        1 | 58 => {
            let ty = [0u8, 1, 2, 3, 4, 8, 11, 12, 128][rng.random_range(0..9)];
            icmp(ty, 0, &body)
        }
        _ => body,
    };
    if rng.random_bool(0.6) {
        let mut ip = Ip4::new(
            "10.2.0.100",
            V4_DST[rng.random_range(0..V4_DST.len())],
            proto,
        );
        ip.src = rng.random();
        if rng.random_bool(0.7) {
            ip.src[0] = 10;
        }
        ip.ttl = rng.random_range(0..4u8).max(1) * if rng.random_bool(0.8) { 60 } else { 0 };
        if rng.random_bool(0.15) {
            ip.frag = rng.random::<u16>() & 0x7fff;
        }
        if rng.random_bool(0.2) {
            ip.options = vec![1; 4 * rng.random_range(0..11usize)];
        }
        let l4 = if proto == 1 && rng.random_bool(0.5) {
            // an ICMP error quoting a random flow
            let q = Ip4::new(
                "172.16.255.66",
                "10.2.0.100",
                [6u8, 17, 132][rng.random_range(0..3)],
            );
            let quoted = q.packet(&udp(rng.random(), rng.random(), &[0; 8]));
            let cut = rng.random_range(0..=quoted.len());
            icmp([3u8, 11, 12][rng.random_range(0..3)], 4, &quoted[..cut])
        } else {
            l4
        };
        eth(IN_MAC, &vlans, ETH_IP, &ip.packet(&l4))
    } else {
        let mut payload = Vec::new();
        let mut next = proto;
        let mut chain = Vec::new();
        for _ in 0..rng.random_range(0..10u8) {
            let kind = [0u8, 43, 60, 44, 51][rng.random_range(0..5)];
            chain.push(kind);
        }
        for (i, kind) in chain.iter().enumerate().rev() {
            let hdr = match kind {
                44 => frag6(next, rng.random_range(0..3), rng.random_bool(0.5)),
                51 => ah(next, rng.random_range(0..3)),
                _ => ext8(next, rng.random_range(0..3)),
            };
            payload = [hdr, payload].concat();
            next = *kind;
            let _ = i;
        }
        payload.extend_from_slice(&l4);
        let dst = v6(V6_DST[rng.random_range(0..V6_DST.len())]);
        let mut src = v6("2001:db8:2::100");
        src[15] = rng.random();
        let hop = [0u8, 1, 2, 64, 255][rng.random_range(0..5)];
        eth(
            IN_MAC,
            &vlans,
            ETH_IPV6,
            &ip6(src, dst, hop, next, rng.random::<u32>() & 0xfffff, &payload),
        )
    }
}

/// Flips, cuts, extends or rewrites length fields of a packet.
pub fn mutate(rng: &mut SmallRng, mut p: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.random_range(0..4u8) {
        match rng.random_range(0..6u8) {
            0 | 1 => {
                // a random byte in the first 80 (where the headers are)
                let i = rng.random_range(0..p.len().min(80));
                p[i] = rng.random();
            }
            2 => {
                let i = rng.random_range(0..p.len());
                p[i] ^= 1 << rng.random_range(0..8);
            }
            3 => {
                let cut = rng.random_range(14..=p.len().max(14));
                p.truncate(cut.max(14));
            }
            4 => p.extend((0..rng.random_range(1..40)).map(|_| rng.random::<u8>())),
            _ => {
                // an IP length field (v4 total length or v6 payload length)
                let off = if p.len() > 20 {
                    16 + rng.random_range(0..3) * 2
                } else {
                    12
                };
                if off + 1 < p.len() {
                    let v: u16 = rng.random_range(0..2000);
                    p[off..off + 2].copy_from_slice(&v.to_be_bytes());
                }
            }
        }
    }
    if p.len() < 14 {
        p.resize(14, 0);
    }
    p
}
