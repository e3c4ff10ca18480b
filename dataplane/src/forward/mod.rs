//! The forwarding decision, once: parse, hash, decide, rewrite, over any table reader (the in-memory tables of the tests, the live maps, an engine's snapshot), bit for bit the XDP program's.
//!
//! The program and this decision are proven equal by the golden, truncation
//! and differential tests (`dataplane/tests/`). Nothing here allocates per
//! packet.

mod decide;
pub mod hash;
mod parse;
pub mod pin;
mod rewrite;

pub use pin::{FlowTable, MemoryFlows, Pins};

use crate::abi::{xe_config, xe_decision, xe_group, xe_inport, xe_nexthop, xe_route};

/// The tables the decision reads, with the program's map semantics: an
/// array entry in range exists (zeroed until written), one out of range
/// does not; a route lookup is longest-prefix match, `None` (or a route of
/// kind 0) where nothing covers the address.
pub trait TableReader {
    /// The IPv4 route covering `dst` (network order).
    fn route_v4(&self, dst: [u8; 4]) -> Option<xe_route>;
    /// The IPv6 route covering `dst`.
    fn route_v6(&self, dst: [u8; 16]) -> Option<xe_route>;
    fn group(&self, id: u32) -> Option<xe_group>;
    /// The next-hop id in slot `index` of the slot pool.
    fn slot(&self, index: u32) -> Option<u32>;
    fn nexthop(&self, id: u32) -> Option<xe_nexthop>;
    /// The ingress port entry of `ifindex` (admission), if it has one.
    fn inport(&self, ifindex: u32) -> Option<xe_inport>;
    /// Whether `ifindex` is in the redirect map.
    fn is_txport(&self, ifindex: u32) -> bool;
    fn config(&self) -> xe_config;
    /// The next-hop id of `path` if it is a live member of `group`
    /// (`xe_pin_members`).
    fn pin_member(&self, group: u32, path: u32) -> Option<u32>;
    /// The group's membership generation (`xe_group_gen`; 0: none).
    fn group_gen(&self, group: u32) -> u32;

    /// Decides `pkt` as the program loaded with `admit_any` would (every
    /// frame admitted) and writes the frame the program would leave into
    /// `out`, returning the decision and the frame length. `out` must hold
    /// `pkt.len() + 4` bytes (a pushed VLAN tag).
    fn decide(&self, pkt: &[u8], out: &mut [u8]) -> (xe_decision, usize) {
        decide::decide(self, None, None, pkt, out)
    }

    /// Like `decide`, for `pkt` received on `ingress` by a program that
    /// checks admission (the ingress port's entry, MAC, tags and switches)
    /// when `ingress` is given.
    fn decide_from(
        &self,
        ingress: Option<u32>,
        pkt: &[u8],
        out: &mut [u8],
    ) -> (xe_decision, usize) {
        decide::decide(self, None, ingress, pkt, out)
    }

    /// Like `decide_from`, with a flow table: a flow to a pinned route
    /// reads and writes its entry there as the program does `xe_flows`.
    fn decide_pinned(
        &self,
        pins: &mut Pins<'_>,
        ingress: Option<u32>,
        pkt: &[u8],
        out: &mut [u8],
    ) -> (xe_decision, usize) {
        decide::decide(self, Some(pins), ingress, pkt, out)
    }
}
