//! The decision itself (the program's `xe_decide`): admission, route, source and TTL checks, the flow hash, the bucket, the next hop and its MTU, over any [`TableReader`].

use etherparse::Ethernet2HeaderSlice;

use super::hash::flow_hash;
use super::parse::{
    is_vlan, parse_eth, parse_ipv4, parse_ipv6, parse_l2, parse_l4, Meta, Step, ETH_P_IP,
    ETH_P_IPV6,
};
use super::pin::{pin_expired, pin_key, pin_note, Pins};
use super::rewrite::{rewrite, Forward};
use super::TableReader;
use crate::abi::{
    xe_decision, xe_nexthop, xe_route, Verdict, GROUP_UNUSED, HASH_POLICY_L4, HASH_PORTS,
    INPORT_FWD_V4, INPORT_FWD_V6, INPORT_RPF, NH_TXPORT, NH_USABLE, ROUTE_PIN, RT_BLACKHOLE,
    RT_LOCAL, RT_PROHIBIT, RT_UNICAST, XDP_PASS,
};

fn route<T: TableReader + ?Sized>(t: &T, m: &Meta) -> Option<xe_route> {
    if m.flow.is_v6 != 0 {
        let mut a = [0u8; 16];
        for i in 0..4 {
            a[4 * i..4 * i + 4].copy_from_slice(&m.flow.dst[i].to_ne_bytes());
        }
        t.route_v6(a)
    } else {
        t.route_v4(m.flow.dst[0].to_ne_bytes())
    }
}

/// `xe_admit`: the forwarding flags of the port `ingress` if the frame
/// is the kernel's to route from it.
fn admit<T: TableReader + ?Sized>(t: &T, ingress: u32, eth: &Ethernet2HeaderSlice<'_>) -> Step<u8> {
    let port = t.inport(ingress).ok_or(Verdict::PassNotPort)?;
    if eth.destination() != port.mac {
        return Err(Verdict::PassOtherhost);
    }
    if is_vlan(eth.ether_type().0) {
        return Err(Verdict::PassVlan);
    }
    Ok(port.flags)
}

/// `xe_decide` up to the rewrite; `ingress` None as the program loaded
/// with `admit_any`; `pins` None as over an empty flow table never written.
fn decide_inner<T: TableReader + ?Sized>(
    t: &T,
    mut pins: Option<&mut Pins<'_>>,
    ingress: Option<u32>,
    pkt: &[u8],
    d: &mut xe_decision,
) -> Step<Forward> {
    let eth = parse_eth(pkt)?;
    let fwd = match ingress {
        Some(i) => admit(t, i, &eth)?,
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
    let rt = route(t, &m).ok_or(Verdict::PassNoRoute)?;
    match rt.kind {
        RT_LOCAL => return Err(Verdict::PassLocal),
        RT_BLACKHOLE => return Err(Verdict::DropBlackhole),
        RT_UNICAST => {}
        _ => return Err(Verdict::PassNoRoute),
    }
    // `fib_validate_source`: not from the host's own, broadcast or
    // refused addresses, and no reverse-path check the program cannot make.
    if m.flow.is_v6 == 0 {
        let src = t
            .route_v4(m.flow.src[0].to_ne_bytes())
            .map_or(0, |r| r.kind);
        if fwd & INPORT_RPF != 0 || matches!(src, RT_LOCAL | RT_BLACKHOLE | RT_PROHIBIT) {
            return Err(Verdict::PassSource);
        }
    }
    if m.ttl <= 1 {
        return Err(Verdict::PassTtl);
    }
    parse_l4(pkt, &mut m)?;
    let cfg = &t.config();
    let fields = if m.frag {
        (if cfg.hash_fields == 0 {
            HASH_POLICY_L4
        } else {
            cfg.hash_fields
        }) & !HASH_PORTS
    } else {
        cfg.hash_fields
    };
    d.group = rt.group;
    let grp = t.group(rt.group).ok_or(Verdict::PassNexthopDown)?;
    if grp.mode == GROUP_UNUSED || grp.size == 0 {
        return Err(Verdict::PassNexthopDown);
    }
    // A flow to a pinned route keeps the path of its entry while that is
    // valid (the bucket is then not looked at).
    let pinned = rt.flags & ROUTE_PIN != 0;
    // Only a pinned route's flow needs its key (and the group's generation).
    let key = pinned.then(|| pin_key(&m.flow, fields));
    let now = pins.as_ref().map_or(0, |p| p.now);
    let gen = if pinned { t.group_gen(rt.group) } else { 0 };
    let entry = match (pins.as_deref_mut(), &key) {
        (Some(p), Some(k)) => p.table.get(k),
        _ => None,
    };
    // (next-hop id, next hop, whether the entry's id and generation are stale)
    let kept = entry
        .filter(|e| !pin_expired(&cfg.pin_timeout, m.flow.proto, e, now))
        .and_then(|e| {
            if gen != 0 && e.gen == gen {
                Some((e.nexthop, false))
            } else {
                Some((t.pin_member(rt.group, e.path)?, true))
            }
        })
        .and_then(|(id, stale)| Some((id, t.nexthop(id)?, stale)))
        .filter(|(_, nh, _)| usable(nh));
    let nh = match kept {
        Some((id, nh, _)) => {
            d.nexthop = id;
            nh
        }
        None => {
            // A pinned flow's hit needs no hash.
            d.hash = flow_hash(&m.flow, cfg.seed, fields, cfg.flags);
            d.bucket = d.hash % u32::from(grp.size);
            let nhid = t
                .slot(grp.base.wrapping_add(d.bucket))
                .ok_or(Verdict::PassNexthopDown)?;
            d.nexthop = nhid;
            t.nexthop(nhid).ok_or(Verdict::PassNexthopDown)?
        }
    };
    if !usable(&nh) {
        return Err(Verdict::PassNexthopDown);
    }
    if m.l3_len > usize::from(nh.mtu) {
        return Err(Verdict::PassMtu);
    }
    d.ifindex = nh.ifindex;
    if nh.state & NH_TXPORT == 0 {
        return Err(Verdict::PassNoTxport);
    }
    if let Some(key) = &key {
        let event = pin_note(
            pins,
            key,
            entry,
            kept.map(|k| k.2),
            (nh.path, d.nexthop, gen),
            m.tcp_flags,
            now,
        );
        d.pin = event.map_or(0, |e| e as u32 + 1);
    }
    Ok(Forward {
        l2_len: m.l2_len,
        is_v6: m.flow.is_v6 != 0,
        nh,
    })
}

fn usable(nh: &xe_nexthop) -> bool {
    nh.state & NH_USABLE == NH_USABLE
}

/// `xe_decide` whole: the decision, and the frame the program leaves in
/// `out` (see [`TableReader::decide_from`]).
pub(super) fn decide<T: TableReader + ?Sized>(
    t: &T,
    pins: Option<&mut Pins<'_>>,
    ingress: Option<u32>,
    pkt: &[u8],
    out: &mut [u8],
) -> (xe_decision, usize) {
    let mut d = xe_decision::default();
    match decide_inner(t, pins, ingress, pkt, &mut d) {
        Err(v) => {
            d.verdict = v as u32;
            d.action = v.action();
            out[..pkt.len()].copy_from_slice(pkt);
            (d, pkt.len())
        }
        Ok(fwd) => {
            // bpf_redirect_map's fallback: a port missing from the map
            // although the next hop claims it passes the rewritten frame,
            // counted as not forwarded.
            (d.verdict, d.action) = if t.is_txport(fwd.nh.ifindex) {
                (Verdict::Forward as u32, Verdict::Forward.action())
            } else {
                (Verdict::PassNoTxport as u32, XDP_PASS)
            };
            (d, rewrite(pkt, &fwd, out))
        }
    }
}
