//! The write interface shared by the live maps and the in-memory tables, with the range checks both apply.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::abi::{xe_config, xe_group, xe_inport, xe_nexthop, xe_route, MAX_GROUPS};
use crate::error::{Error, Result};
use crate::grace::GracePeriods;

/// Writes forwarding state; implemented by the BPF maps (`Dataplane`) and by
/// the in-memory tables (`Tables`), so one description of a world fills both.
pub trait TableWriter {
    fn set_route_v4(&mut self, addr: Ipv4Addr, len: u8, route: &xe_route) -> Result<()>;
    fn delete_route_v4(&mut self, addr: Ipv4Addr, len: u8) -> Result<()>;
    /// Writes many IPv4 routes, as `set_route_v4` does one by one; the
    /// result of each, in order. The live maps write them in batches.
    fn set_routes_v4(&mut self, routes: &[(Ipv4Addr, u8, xe_route)]) -> Vec<Result<()>> {
        routes
            .iter()
            .map(|(a, l, r)| self.set_route_v4(*a, *l, r))
            .collect()
    }
    /// Deletes many IPv4 routes, as `delete_route_v4` does one by one; the
    /// result of each, in order.
    fn delete_routes_v4(&mut self, prefixes: &[(Ipv4Addr, u8)]) -> Vec<Result<()>> {
        prefixes
            .iter()
            .map(|(a, l)| self.delete_route_v4(*a, *l))
            .collect()
    }
    fn set_route_v6(&mut self, addr: Ipv6Addr, len: u8, route: &xe_route) -> Result<()>;
    fn delete_route_v6(&mut self, addr: Ipv6Addr, len: u8) -> Result<()>;
    fn set_group(&mut self, id: u32, group: &xe_group) -> Result<()>;
    /// Writes next-hop ids into the slot pool starting at `base`.
    fn set_slots(&mut self, base: u32, nexthops: &[u32]) -> Result<()>;
    fn set_nexthop(&mut self, id: u32, nh: &xe_nexthop) -> Result<()>;
    /// Allows redirects to `ifindex`. The program does not look the port up:
    /// next hops on it must also carry `NH_TXPORT` to forward.
    fn add_txport(&mut self, ifindex: u32) -> Result<()>;
    fn remove_txport(&mut self, ifindex: u32) -> Result<()>;
    /// Admits frames received on `ifindex`: to `port.mac`, forwarding the
    /// families whose `INPORT_FWD_*` bit is set.
    fn set_inport(&mut self, ifindex: u32, port: &xe_inport) -> Result<()>;
    /// Stops admitting frames received on `ifindex` (their packets go to
    /// the kernel); nothing to do if it was not admitted.
    fn remove_inport(&mut self, ifindex: u32) -> Result<()>;
    fn set_config(&mut self, cfg: &xe_config) -> Result<()>;
    /// Records that `path` is a live member of `group` with next-hop id
    /// `nexthop` (flow pinning keeps flows on a path while it is), or with
    /// None that it no longer is.
    fn set_pin_member(&mut self, group: u32, path: u32, nexthop: Option<u32>) -> Result<()>;
    /// Sets `group`'s membership generation (written after every change of
    /// its members; a number never used before, 0 for none).
    fn set_group_gen(&mut self, group: u32, gen: u32) -> Result<()>;
    /// When memory unlinked from these tables (slot windows, group and
    /// next-hop ids) may be reused: after a grace period for the live maps,
    /// at once for tables no packet reads.
    fn grace(&self) -> GracePeriods;
}

pub(crate) fn check_range(what: &'static str, value: u32, max: u32) -> Result<()> {
    if value >= max {
        return Err(Error::OutOfRange {
            what,
            value: value.into(),
            max: u64::from(max) - 1,
        });
    }
    Ok(())
}

pub(crate) fn check_prefix(family: &'static str, len: u8, max: u8) -> Result<()> {
    if len > max {
        return Err(Error::OutOfRange {
            what: if family == "IPv4" {
                "IPv4 prefix length"
            } else {
                "IPv6 prefix length"
            },
            value: len.into(),
            max: max.into(),
        });
    }
    Ok(())
}

/// An IPv4 route's group id must fit the 16 bits a DIR-24-8 entry keeps for it.
pub(crate) fn check_route_v4(route: &xe_route) -> Result<()> {
    check_range("IPv4 route group id", route.group, MAX_GROUPS)
}

/// A window must end within the slot pool of `slots` slots.
pub(crate) fn check_slots(base: u32, count: usize, slots: u32) -> Result<()> {
    let end = u64::from(base) + count as u64;
    if end > u64::from(slots) {
        return Err(Error::OutOfRange {
            what: "slot window end",
            value: end,
            max: slots.into(),
        });
    }
    Ok(())
}

pub(crate) fn check_group(id: u32, group: &xe_group, slots: u32) -> Result<()> {
    check_range("group id", id, MAX_GROUPS)?;
    check_slots(group.base, group.size.into(), slots)
}

/// Writes the smallest forwarding world: next hop 1 on `nh.ifindex` (also a
/// tx port, so the next hop gets `NH_TXPORT`), group 1 of `size` slots all
/// pointing to it in `mode`, and a /32 route to `dst` through the group.
/// Tests and benchmarks start from it.
pub fn single_path(
    t: &mut dyn TableWriter,
    dst: Ipv4Addr,
    nh: &xe_nexthop,
    mode: u8,
    size: u16,
) -> Result<()> {
    multipath(t, dst, std::slice::from_ref(nh), mode, size)
}

/// Like `single_path` over several next hops: next hop k+1 is `nhs[k]`
/// (its port a tx port, `NH_TXPORT` set), group 1's `size` slots cycle
/// through them.
pub fn multipath(
    t: &mut dyn TableWriter,
    dst: Ipv4Addr,
    nhs: &[xe_nexthop],
    mode: u8,
    size: u16,
) -> Result<()> {
    for (k, nh) in nhs.iter().enumerate() {
        t.add_txport(nh.ifindex)?;
        t.set_nexthop(
            k as u32 + 1,
            &xe_nexthop {
                state: nh.state | crate::abi::NH_TXPORT,
                ..*nh
            },
        )?;
    }
    let n = nhs.len() as u32;
    let slots: Vec<u32> = (0..u32::from(size)).map(|i| 1 + i % n).collect();
    t.set_slots(0, &slots)?;
    t.set_group(
        1,
        &xe_group {
            base: 0,
            size,
            mode,
            ..Default::default()
        },
    )?;
    t.set_route_v4(
        dst,
        32,
        &xe_route {
            group: 1,
            kind: crate::abi::RT_UNICAST,
            ..Default::default()
        },
    )
}
