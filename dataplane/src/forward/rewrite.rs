//! The rewrite of a forwarded frame (the program's `xe_rewrite`): the next hop's MACs and VLAN tag, TTL or hop limit less one.

use super::parse::{ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6};
use crate::abi::xe_nexthop;

/// A forwarding decision: where the frame goes and how it is rewritten.
pub(super) struct Forward {
    pub(super) l2_len: usize,
    pub(super) is_v6: bool,
    pub(super) nh: xe_nexthop,
}

/// `xe_rewrite`: new L2 header (MACs, optional 802.1Q tag), TTL/hop limit - 1.
pub(super) fn rewrite(pkt: &[u8], f: &Forward, out: &mut [u8]) -> usize {
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
