//! Rust port of bpf/include/xe_hash.h: HalfSipHash-1-3 over the flow's 32-bit words (checked against the C by vectors).

use crate::abi::{
    xe_flow, CFG_SYMMETRIC, HASH_DST_IP, HASH_DST_PORT, HASH_FLOWLABEL, HASH_IP_PROTO,
};
use crate::abi::{HASH_POLICY_L4, HASH_SRC_IP, HASH_SRC_PORT};

#[inline(always)]
fn round(v: &mut [u32; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(5);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(16);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(8);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(7);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(16);
}

#[inline(always)]
fn absorb(v: &mut [u32; 4], m: u32) {
    v[3] ^= m;
    round(v);
    v[0] ^= m;
}

/// HalfSipHash-1-3 of 32-bit words keyed with `seed` (`xe_hsip_words`).
#[inline]
pub fn hsip_words(w: &[u32], seed: [u32; 2]) -> u32 {
    let mut v = [
        seed[0],
        seed[1],
        0x6c79_6765 ^ seed[0],
        0x7465_6462 ^ seed[1],
    ];
    for &m in w {
        absorb(&mut v, m);
    }
    absorb(&mut v, ((w.len() as u32) * 4) << 24);
    v[2] ^= 0xff;
    round(&mut v);
    round(&mut v);
    round(&mut v);
    v[1] ^ v[3]
}

/// The flow hash (`xe_flow_hash`): `fields` 0 means L3+L4.
#[inline]
pub fn flow_hash(f: &xe_flow, seed: [u32; 2], fields: u32, flags: u32) -> u32 {
    let fields = if fields == 0 { HASH_POLICY_L4 } else { fields };
    let n = if f.is_v6 != 0 { 4 } else { 1 };
    let mut w = [0u32; 10];
    for i in 0..n {
        w[i] = if fields & HASH_SRC_IP != 0 {
            f.src[i]
        } else {
            0
        };
        w[n + i] = if fields & HASH_DST_IP != 0 {
            f.dst[i]
        } else {
            0
        };
    }
    let mut sport = if fields & HASH_SRC_PORT != 0 {
        u32::from(f.sport)
    } else {
        0
    };
    let mut dport = if fields & HASH_DST_PORT != 0 {
        u32::from(f.dport)
    } else {
        0
    };
    if flags & CFG_SYMMETRIC != 0 {
        let (src, dst) = w.split_at_mut(n);
        if src[..n] > dst[..n] {
            src[..n].swap_with_slice(&mut dst[..n]);
        }
        if sport > dport {
            std::mem::swap(&mut sport, &mut dport);
        }
    }
    w[2 * n] = (sport << 16) | dport;
    w[2 * n + 1] = (if fields & HASH_IP_PROTO != 0 {
        u32::from(f.proto)
    } else {
        0
    }) | (if fields & HASH_FLOWLABEL != 0 {
        f.flowlabel << 8
    } else {
        0
    });
    hsip_words(&w[..2 * n + 2], seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::HASH_POLICY_L3;

    fn v4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, proto: u8) -> xe_flow {
        let mut f = xe_flow::default();
        f.src[0] = u32::from_ne_bytes(src);
        f.dst[0] = u32::from_ne_bytes(dst);
        f.sport = sport;
        f.dport = dport;
        f.proto = proto;
        f
    }

    #[test]
    fn hsip_is_keyed_and_length_sensitive() {
        let a = hsip_words(&[1, 2, 3, 4], [0, 0]);
        assert_ne!(a, hsip_words(&[1, 2, 3, 4], [0, 1]));
        assert_ne!(a, hsip_words(&[1, 2, 3, 4, 0], [0, 0]));
        assert_eq!(a, hsip_words(&[1, 2, 3, 4], [0, 0]));
    }

    #[test]
    fn symmetric_mode_hashes_both_directions_alike() {
        let f = v4([10, 2, 0, 100], [172, 16, 255, 66], 32700, 53, 17);
        let r = v4([172, 16, 255, 66], [10, 2, 0, 100], 53, 32700, 17);
        let seed = [0x1234_5678, 0x9abc_def0];
        assert_ne!(flow_hash(&f, seed, 0, 0), flow_hash(&r, seed, 0, 0));
        assert_eq!(
            flow_hash(&f, seed, 0, CFG_SYMMETRIC),
            flow_hash(&r, seed, 0, CFG_SYMMETRIC)
        );
    }

    #[test]
    fn l3_policy_ignores_ports_and_proto() {
        let seed = [7, 9];
        let a = v4([10, 2, 0, 100], [172, 16, 255, 66], 32700, 53, 17);
        let b = v4([10, 2, 0, 100], [172, 16, 255, 66], 31884, 80, 6);
        assert_eq!(
            flow_hash(&a, seed, HASH_POLICY_L3, 0),
            flow_hash(&b, seed, HASH_POLICY_L3, 0)
        );
        assert_ne!(flow_hash(&a, seed, 0, 0), flow_hash(&b, seed, 0, 0));
    }

    #[test]
    fn source_port_alone_spreads_flows() {
        // The design guide's fig. 2: flows differing only in source port.
        let seed = [0xdead_beef, 0x0bad_cafe];
        let mut seen = [0u32; 4];
        for sport in 1024..(1024 + 4096) {
            let f = v4([10, 2, 0, 100], [172, 16, 255, 66], sport, 53, 17);
            seen[(flow_hash(&f, seed, 0, 0) % 4) as usize] += 1;
        }
        for n in seen {
            assert!((900..1150).contains(&n), "uneven split {seen:?}");
        }
    }
}
