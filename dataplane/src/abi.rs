//! The ABI shared with the XDP program: types generated from bpf/include/xe_abi.h via BTF, with size checks.

#[allow(
    clippy::all,
    clippy::pedantic,
    non_camel_case_types,
    non_upper_case_globals,
    dead_code,
    unused
)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/xdp_ecmp.skel.rs"));
}

pub use skel::types::{
    xe_config, xe_counter, xe_decision, xe_flow, xe_flow4, xe_group, xe_hash_field, xe_inport,
    xe_lpm_v6, xe_nexthop, xe_pin, xe_pin_member, xe_pin_way4, xe_pin_way6, xe_route, xe_v6_lens,
    xe_v6_slot, xe_verdict,
};
pub(crate) use skel::{XdpEcmpSkel, XdpEcmpSkelBuilder};

use skel::types::{
    xe_cfg_flag, xe_dir_entry, xe_group_mode, xe_inport_flag, xe_layout, xe_limits, xe_nh_state,
    xe_pin_event, xe_pin_flag, xe_pin_timeout, xe_route_flag, xe_route_kind, xe_v6_search,
};
use std::mem::size_of;

// The same sizes as the _Static_asserts in xe_abi.h: a layout change on one
// side fails the build on the other.
const _: () = assert!(size_of::<xe_lpm_v6>() == 20);
const _: () = assert!(size_of::<xe_route>() == 8);
const _: () = assert!(size_of::<xe_v6_slot>() == 24);
const _: () = assert!(size_of::<xe_v6_lens>() == 16 + 2 * V6_LENS);
const _: () = assert!(V6_LENS >= crate::lensearch::LENGTHS && V6_LENS.is_multiple_of(8));
const _: () = assert!(V6_STEPS == crate::lensearch::MAX_STEPS);
const _: () = assert!(size_of::<xe_group>() == 8);
const _: () = assert!(size_of::<xe_nexthop>() == 32);
const _: () = assert!(size_of::<xe_config>() == 32);
const _: () = assert!(size_of::<xe_pin>() == 24);
const _: () = assert!(size_of::<xe_pin_member>() == 8);
const _: () = assert!(size_of::<xe_pin_way4>() == 48);
const _: () = assert!(size_of::<xe_pin_way6>() == 80);
const _: () = assert!(size_of::<xe_counter>() == 16);
const _: () = assert!(size_of::<xe_decision>() == 32);
const _: () = assert!(size_of::<xe_flow>() == 44);
const _: () = assert!(size_of::<xe_flow4>() == 16);
const _: () = assert!(size_of::<xe_inport>() == 8);
const _: () = assert!(MAX_GROUPS - 1 <= DIR_GROUP_MASK);
const _: () = assert!(DIR_CHUNK_SIZE == 256);

/// Capacities of the maps.
/// The layout version of the pinned maps this build reads and writes.
pub const LAYOUT_VERSION: u32 = xe_layout::XE_LAYOUT_VERSION.0;
pub const MAX_GROUPS: u32 = xe_limits::XE_MAX_GROUPS.0;
pub const MAX_NEXTHOPS: u32 = xe_limits::XE_MAX_NEXTHOPS.0;
pub const MAX_SLOTS: u32 = xe_limits::XE_MAX_SLOTS.0;
pub const MAX_GROUP_BUCKETS: u32 = xe_limits::XE_MAX_GROUP_BUCKETS.0;
pub const MAX_ROUTES_V4: u32 = xe_limits::XE_MAX_ROUTES_V4.0;
pub const RECORD_V4_WORDS: u32 = xe_limits::XE_RECORD_V4_WORDS.0;
pub const MAX_ROUTES_V6: u32 = xe_limits::XE_MAX_ROUTES_V6.0;
pub const MAX_EXT_HEADERS: u32 = xe_limits::XE_MAX_EXT_HEADERS.0;
pub const MAX_DIR_CHUNKS: u32 = xe_limits::XE_MAX_DIR_CHUNKS.0;
/// Bytes of one set of searched IPv6 lengths, and the search's levels.
pub const V6_LENS: usize = xe_v6_search::XE_V6_LENS.0 as usize;
pub const V6_STEPS: usize = xe_v6_search::XE_V6_STEPS.0 as usize;
pub const V6_PROBES: usize = xe_v6_search::XE_V6_PROBES.0 as usize;
pub const MAX_TXPORTS: u32 = xe_limits::XE_MAX_TXPORTS.0;
pub const MAX_INPORTS: u32 = xe_limits::XE_MAX_INPORTS.0;
/// Ingress ports with an ifindex below this sit in the `xe_inports` array.
pub const INPORT_INDEXES: u32 = xe_limits::XE_INPORT_INDEXES.0;
pub const MAX_QUEUES: u32 = xe_limits::XE_MAX_QUEUES.0;
pub const MAX_XSK_PORTS: u32 = xe_limits::XE_MAX_XSK_PORTS.0;
pub const MAX_PIN_MEMBERS: u32 = xe_limits::XE_MAX_PIN_MEMBERS.0;
pub const DEFAULT_PIN_FLOWS: u32 = xe_limits::XE_DEFAULT_PIN_FLOWS.0;
pub const PIN_WAYS: u32 = xe_limits::XE_PIN_WAYS.0;

/// DIR-24-8 entry layout (enum xe_dir_entry).
pub const DIR_GROUP_MASK: u32 = xe_dir_entry::XE_DIR_GROUP_MASK.0;
pub const DIR_KIND_SHIFT: u32 = xe_dir_entry::XE_DIR_KIND_SHIFT.0;
pub const DIR_DEPTH_SHIFT: u32 = xe_dir_entry::XE_DIR_DEPTH_SHIFT.0;
pub const DIR_CHUNK: u32 = xe_dir_entry::XE_DIR_CHUNK.0;
pub const DIR_CHUNK_MASK: u32 = xe_dir_entry::XE_DIR_CHUNK_MASK.0;
pub const DIR_CHUNK_SIZE: u32 = xe_dir_entry::XE_DIR_CHUNK_SIZE.0;
pub const DIR_PIN: u32 = xe_dir_entry::XE_DIR_PIN.0;

/// Route flags.
pub const ROUTE_PIN: u8 = xe_route_flag::XE_ROUTE_PIN.0 as u8;

/// Flow pinning: entry flags, the timeouts by kind (indexes of
/// `xe_config.pin_timeout`) and the events counted in `xe_pin_stats`.
pub const PIN_CLOSING: u32 = xe_pin_flag::XE_PIN_CLOSING.0;
pub const PIN_T_TCP: usize = xe_pin_timeout::XE_PIN_T_TCP.0 as usize;
pub const PIN_T_OTHER: usize = xe_pin_timeout::XE_PIN_T_OTHER.0 as usize;
pub const PIN_T_CLOSING: usize = xe_pin_timeout::XE_PIN_T_CLOSING.0 as usize;

/// What the flow table did with a packet (`xe_pin_stats`, and
/// `xe_decision.pin` as 1 + the event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum PinEvent {
    Hit = xe_pin_event::XE_PIN_E_HIT.0,
    Inserted = xe_pin_event::XE_PIN_E_INSERTED.0,
    Repinned = xe_pin_event::XE_PIN_E_REPINNED.0,
    Ended = xe_pin_event::XE_PIN_E_ENDED.0,
    Flushed = xe_pin_event::XE_PIN_E_FLUSHED.0,
}

impl PinEvent {
    /// Every event, in counter order.
    pub const ALL: [PinEvent; xe_pin_event::XE_PIN_E_COUNT.0 as usize] = [
        PinEvent::Hit,
        PinEvent::Inserted,
        PinEvent::Repinned,
        PinEvent::Ended,
        PinEvent::Flushed,
    ];

    /// The event a decision's `pin` field names (1 + the event; 0: none).
    pub fn of_decision(pin: u32) -> Option<PinEvent> {
        Self::ALL.get(pin.checked_sub(1)? as usize).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            PinEvent::Hit => "hit",
            PinEvent::Inserted => "inserted",
            PinEvent::Repinned => "repinned",
            PinEvent::Ended => "ended",
            PinEvent::Flushed => "flushed",
        }
    }
}

/// Route kinds.
pub const RT_UNICAST: u8 = xe_route_kind::XE_RT_UNICAST.0 as u8;
pub const RT_LOCAL: u8 = xe_route_kind::XE_RT_LOCAL.0 as u8;
pub const RT_BLACKHOLE: u8 = xe_route_kind::XE_RT_BLACKHOLE.0 as u8;
pub const RT_UNREACHABLE: u8 = xe_route_kind::XE_RT_UNREACHABLE.0 as u8;
pub const RT_PROHIBIT: u8 = xe_route_kind::XE_RT_PROHIBIT.0 as u8;

/// Group modes.
pub const GROUP_UNUSED: u8 = xe_group_mode::XE_GROUP_UNUSED.0 as u8;
pub const GROUP_RESILIENT: u8 = xe_group_mode::XE_GROUP_RESILIENT.0 as u8;
pub const GROUP_MODULO: u8 = xe_group_mode::XE_GROUP_MODULO.0 as u8;

/// Next-hop state bits.
pub const NH_VALID: u8 = xe_nh_state::XE_NH_VALID.0 as u8;
pub const NH_RESOLVED: u8 = xe_nh_state::XE_NH_RESOLVED.0 as u8;
pub const NH_LINK_UP: u8 = xe_nh_state::XE_NH_LINK_UP.0 as u8;
pub const NH_USABLE: u8 = xe_nh_state::XE_NH_USABLE.0 as u8;
/// Set by whoever writes the next hop: its egress port is in the redirect map.
pub const NH_TXPORT: u8 = xe_nh_state::XE_NH_TXPORT.0 as u8;

/// Hash fields and policies (the kernel's fib_multipath_hash_fields bits).
pub const HASH_SRC_IP: u32 = xe_hash_field::XE_HASH_SRC_IP.0;
pub const HASH_DST_IP: u32 = xe_hash_field::XE_HASH_DST_IP.0;
pub const HASH_IP_PROTO: u32 = xe_hash_field::XE_HASH_IP_PROTO.0;
pub const HASH_FLOWLABEL: u32 = xe_hash_field::XE_HASH_FLOWLABEL.0;
pub const HASH_SRC_PORT: u32 = xe_hash_field::XE_HASH_SRC_PORT.0;
pub const HASH_DST_PORT: u32 = xe_hash_field::XE_HASH_DST_PORT.0;
pub const HASH_PORTS: u32 = xe_hash_field::XE_HASH_PORTS.0;
pub const HASH_ALL_FIELDS: u32 = xe_hash_field::XE_HASH_ALL_FIELDS.0;
pub const HASH_POLICY_L3: u32 = xe_hash_field::XE_HASH_POLICY_L3.0;
pub const HASH_POLICY_L4: u32 = xe_hash_field::XE_HASH_POLICY_L4.0;

/// Config flags.
pub const CFG_SYMMETRIC: u32 = xe_cfg_flag::XE_CFG_SYMMETRIC.0;

/// Ingress-port flags: the kernel forwards that family from the port.
pub const INPORT_FWD_V4: u8 = xe_inport_flag::XE_INPORT_FWD_V4.0 as u8;
pub const INPORT_FWD_V6: u8 = xe_inport_flag::XE_INPORT_FWD_V6.0 as u8;
pub const INPORT_RPF: u8 = xe_inport_flag::XE_INPORT_RPF.0 as u8;
/// Set by the writer on every entry it makes: an array entry without it is
/// no port. Never seen by callers (the read-backs clear it).
pub const INPORT_ON: u8 = xe_inport_flag::XE_INPORT_ON.0 as u8;

/// XDP return codes (UAPI `enum xdp_action`).
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// Verdict classes, in the program's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Verdict {
    Forward = xe_verdict::XE_V_FORWARD.0,
    PassNotIp = xe_verdict::XE_V_PASS_NOT_IP.0,
    PassMulticast = xe_verdict::XE_V_PASS_MULTICAST.0,
    PassSpecial = xe_verdict::XE_V_PASS_SPECIAL.0,
    PassLocal = xe_verdict::XE_V_PASS_LOCAL.0,
    PassNoRoute = xe_verdict::XE_V_PASS_NO_ROUTE.0,
    PassTtl = xe_verdict::XE_V_PASS_TTL.0,
    PassNexthopDown = xe_verdict::XE_V_PASS_NEXTHOP_DOWN.0,
    PassMtu = xe_verdict::XE_V_PASS_MTU.0,
    PassNoTxport = xe_verdict::XE_V_PASS_NO_TXPORT.0,
    PassNotPort = xe_verdict::XE_V_PASS_NOT_PORT.0,
    PassOtherhost = xe_verdict::XE_V_PASS_OTHERHOST.0,
    PassVlan = xe_verdict::XE_V_PASS_VLAN.0,
    PassNoForwarding = xe_verdict::XE_V_PASS_NO_FORWARDING.0,
    PassSource = xe_verdict::XE_V_PASS_SOURCE.0,
    DropTruncated = xe_verdict::XE_V_DROP_TRUNCATED.0,
    DropMalformed = xe_verdict::XE_V_DROP_MALFORMED.0,
    DropBlackhole = xe_verdict::XE_V_DROP_BLACKHOLE.0,
}

impl Verdict {
    /// Every verdict, in counter order.
    pub const ALL: [Verdict; xe_verdict::XE_V_COUNT.0 as usize] = [
        Verdict::Forward,
        Verdict::PassNotIp,
        Verdict::PassMulticast,
        Verdict::PassSpecial,
        Verdict::PassLocal,
        Verdict::PassNoRoute,
        Verdict::PassTtl,
        Verdict::PassNexthopDown,
        Verdict::PassMtu,
        Verdict::PassNoTxport,
        Verdict::PassNotPort,
        Verdict::PassOtherhost,
        Verdict::PassVlan,
        Verdict::PassNoForwarding,
        Verdict::PassSource,
        Verdict::DropTruncated,
        Verdict::DropMalformed,
        Verdict::DropBlackhole,
    ];

    /// The verdicts of admission: the frame is not the kernel's to route
    /// from its ingress port (checked only by programs loaded without
    /// `admit_any`).
    pub const ADMISSION: [Verdict; 4] = [
        Verdict::PassNotPort,
        Verdict::PassOtherhost,
        Verdict::PassVlan,
        Verdict::PassNoForwarding,
    ];

    /// The verdict with the program's number `n`.
    pub fn from_u32(n: u32) -> Option<Verdict> {
        Self::ALL.get(n as usize).copied()
    }

    /// The XDP action the program returns for this verdict (a forward
    /// whose redirect succeeds returns XDP_REDIRECT).
    pub fn action(self) -> u32 {
        match self {
            Verdict::Forward => XDP_REDIRECT,
            Verdict::DropTruncated | Verdict::DropMalformed | Verdict::DropBlackhole => XDP_DROP,
            _ => XDP_PASS,
        }
    }

    /// Short name used by the CLI and in test output.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Forward => "forward",
            Verdict::PassNotIp => "pass-not-ip",
            Verdict::PassMulticast => "pass-multicast",
            Verdict::PassSpecial => "pass-special",
            Verdict::PassLocal => "pass-local",
            Verdict::PassNoRoute => "pass-no-route",
            Verdict::PassTtl => "pass-ttl",
            Verdict::PassNexthopDown => "pass-nexthop-down",
            Verdict::PassMtu => "pass-mtu",
            Verdict::PassNoTxport => "pass-no-txport",
            Verdict::PassNotPort => "pass-not-port",
            Verdict::PassOtherhost => "pass-otherhost",
            Verdict::PassVlan => "pass-vlan",
            Verdict::PassNoForwarding => "pass-no-forwarding",
            Verdict::PassSource => "pass-source",
            Verdict::DropTruncated => "drop-truncated",
            Verdict::DropMalformed => "drop-malformed",
            Verdict::DropBlackhole => "drop-blackhole",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Views a generated ABI type as the bytes the kernel copies.
///
/// Only for the `#[repr(C)]` types above, whose sizes are asserted to match
/// the C header (no implicit padding).
pub(crate) fn bytes_of<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: T is a plain-old-data repr(C) ABI struct or integer; every
    // byte is initialised because the C layout has explicit padding fields.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

/// Reads a generated ABI type from bytes the kernel returned.
pub(crate) fn read_from<T: Copy>(b: &[u8]) -> Option<T> {
    if b.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; the ABI types are valid for any bit pattern.
    Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_numbers_round_trip() {
        for (i, v) in Verdict::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
            assert_eq!(Verdict::from_u32(i as u32), Some(*v));
        }
        assert_eq!(Verdict::from_u32(xe_verdict::XE_V_COUNT.0), None);
        for (i, e) in PinEvent::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i);
            assert_eq!(PinEvent::of_decision(i as u32 + 1), Some(*e));
        }
        assert_eq!(PinEvent::of_decision(0), None);
        assert_eq!(PinEvent::of_decision(PinEvent::ALL.len() as u32 + 1), None);
    }

    #[test]
    fn drops_come_last() {
        // The program returns XDP_DROP for every verdict from
        // XE_V_DROP_TRUNCATED on; action() must say the same.
        for v in Verdict::ALL {
            let drop = v as u32 >= xe_verdict::XE_V_DROP_TRUNCATED.0;
            assert_eq!(v.action() == XDP_DROP, drop, "{v}");
        }
    }

    #[test]
    fn policies_are_unions_of_fields() {
        assert_eq!(HASH_POLICY_L3, HASH_SRC_IP | HASH_DST_IP);
        assert_eq!(HASH_POLICY_L4, HASH_POLICY_L3 | HASH_IP_PROTO | HASH_PORTS);
        assert_eq!(NH_USABLE, NH_VALID | NH_RESOLVED | NH_LINK_UP);
    }
}
