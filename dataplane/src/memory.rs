//! In-memory tables with the maps' semantics: the table writer and reader the tests, the capacity check and the reconciler's unit tests decide over.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::abi::{
    xe_config, xe_group, xe_inport, xe_nexthop, xe_route, MAX_GROUPS, MAX_NEXTHOPS, MAX_SLOTS,
};
use crate::error::Result;
use crate::forward::TableReader;
use crate::tables::{
    check_group, check_prefix, check_range, check_route_v4, check_slots, TableWriter,
};

/// Longest-prefix-match table with one hash map per prefix length present.
#[derive(Debug, Clone, Default)]
struct Lpm<const N: usize> {
    by_len: HashMap<u8, HashMap<[u8; N], xe_route>>,
    /// Prefix lengths present, longest first.
    lens: Vec<u8>,
}

fn mask<const N: usize>(mut addr: [u8; N], len: u8) -> [u8; N] {
    for (i, b) in addr.iter_mut().enumerate() {
        let keep = (usize::from(len)).saturating_sub(i * 8).min(8);
        *b &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
    }
    addr
}

impl<const N: usize> Lpm<N> {
    fn insert(&mut self, addr: [u8; N], len: u8, route: xe_route) {
        self.by_len
            .entry(len)
            .or_default()
            .insert(mask(addr, len), route);
        if !self.lens.contains(&len) {
            self.lens.push(len);
            self.lens.sort_unstable_by(|a, b| b.cmp(a));
        }
    }

    fn remove(&mut self, addr: [u8; N], len: u8) {
        if let Some(m) = self.by_len.get_mut(&len) {
            m.remove(&mask(addr, len));
            if m.is_empty() {
                self.by_len.remove(&len);
                self.lens.retain(|l| *l != len);
            }
        }
    }

    fn lookup(&self, addr: [u8; N]) -> Option<&xe_route> {
        self.lens
            .iter()
            .find_map(|len| self.by_len.get(len)?.get(&mask(addr, *len)))
    }
}

/// A copy of the program's maps in plain hash maps.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    routes_v4: Lpm<4>,
    routes_v6: Lpm<16>,
    groups: HashMap<u32, xe_group>,
    slots: HashMap<u32, u32>,
    nexthops: HashMap<u32, xe_nexthop>,
    txports: HashSet<u32>,
    inports: HashMap<u32, xe_inport>,
    config: xe_config,
    pin_members: HashMap<(u32, u32), u32>,
    group_gens: HashMap<u32, u32>,
}

impl TableWriter for Tables {
    fn set_route_v4(&mut self, addr: Ipv4Addr, len: u8, route: &xe_route) -> Result<()> {
        check_prefix("IPv4", len, 32)?;
        check_route_v4(route)?;
        self.routes_v4.insert(addr.octets(), len, *route);
        Ok(())
    }
    fn delete_route_v4(&mut self, addr: Ipv4Addr, len: u8) -> Result<()> {
        check_prefix("IPv4", len, 32)?;
        self.routes_v4.remove(addr.octets(), len);
        Ok(())
    }
    fn set_route_v6(&mut self, addr: Ipv6Addr, len: u8, route: &xe_route) -> Result<()> {
        check_prefix("IPv6", len, 128)?;
        self.routes_v6.insert(addr.octets(), len, *route);
        Ok(())
    }
    fn delete_route_v6(&mut self, addr: Ipv6Addr, len: u8) -> Result<()> {
        check_prefix("IPv6", len, 128)?;
        self.routes_v6.remove(addr.octets(), len);
        Ok(())
    }
    fn set_group(&mut self, id: u32, group: &xe_group) -> Result<()> {
        check_group(id, group, MAX_SLOTS)?;
        self.groups.insert(id, *group);
        Ok(())
    }
    fn set_slots(&mut self, base: u32, nexthops: &[u32]) -> Result<()> {
        check_slots(base, nexthops.len(), MAX_SLOTS)?;
        for (i, nh) in nexthops.iter().enumerate() {
            self.slots.insert(base + i as u32, *nh);
        }
        Ok(())
    }
    fn set_nexthop(&mut self, id: u32, nh: &xe_nexthop) -> Result<()> {
        check_range("next-hop id", id, MAX_NEXTHOPS)?;
        self.nexthops.insert(id, *nh);
        Ok(())
    }
    fn add_txport(&mut self, ifindex: u32) -> Result<()> {
        self.txports.insert(ifindex);
        Ok(())
    }
    fn remove_txport(&mut self, ifindex: u32) -> Result<()> {
        self.txports.remove(&ifindex);
        Ok(())
    }
    fn set_inport(&mut self, ifindex: u32, port: &xe_inport) -> Result<()> {
        self.inports.insert(ifindex, *port);
        Ok(())
    }
    fn remove_inport(&mut self, ifindex: u32) -> Result<()> {
        self.inports.remove(&ifindex);
        Ok(())
    }
    fn set_config(&mut self, cfg: &xe_config) -> Result<()> {
        self.config = *cfg;
        Ok(())
    }
    fn set_pin_member(&mut self, group: u32, path: u32, nexthop: Option<u32>) -> Result<()> {
        match nexthop {
            Some(id) => self.pin_members.insert((group, path), id),
            None => self.pin_members.remove(&(group, path)),
        };
        Ok(())
    }
    fn set_group_gen(&mut self, group: u32, gen: u32) -> Result<()> {
        check_range("group id", group, MAX_GROUPS)?;
        self.group_gens.insert(group, gen);
        Ok(())
    }

    /// No packet reads these tables while they are written.
    fn grace(&self) -> crate::grace::GracePeriods {
        crate::grace::GracePeriods::immediate()
    }
}

/// ARRAY map semantics: any in-range key exists (zeroed), out of range does not.
impl TableReader for Tables {
    fn route_v4(&self, dst: [u8; 4]) -> Option<xe_route> {
        self.routes_v4.lookup(dst).copied()
    }
    fn route_v6(&self, dst: [u8; 16]) -> Option<xe_route> {
        self.routes_v6.lookup(dst).copied()
    }
    fn group(&self, id: u32) -> Option<xe_group> {
        (id < MAX_GROUPS).then(|| self.groups.get(&id).copied().unwrap_or_default())
    }
    fn slot(&self, index: u32) -> Option<u32> {
        (index < MAX_SLOTS).then(|| self.slots.get(&index).copied().unwrap_or(0))
    }
    fn nexthop(&self, id: u32) -> Option<xe_nexthop> {
        (id < MAX_NEXTHOPS).then(|| self.nexthops.get(&id).copied().unwrap_or_default())
    }
    fn inport(&self, ifindex: u32) -> Option<xe_inport> {
        self.inports.get(&ifindex).copied()
    }
    fn is_txport(&self, ifindex: u32) -> bool {
        self.txports.contains(&ifindex)
    }
    fn config(&self) -> xe_config {
        self.config
    }
    fn pin_member(&self, group: u32, path: u32) -> Option<u32> {
        self.pin_members.get(&(group, path)).copied()
    }
    fn group_gen(&self, group: u32) -> u32 {
        self.group_gens.get(&group).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::RT_UNICAST;

    #[test]
    fn lpm_prefers_the_longest_prefix() {
        let mut l = Lpm::<4>::default();
        let r = |g| xe_route {
            group: g,
            kind: RT_UNICAST,
            ..Default::default()
        };
        l.insert([0, 0, 0, 0], 0, r(1));
        l.insert([172, 16, 0, 0], 12, r(2));
        l.insert([172, 16, 255, 66], 32, r(3));
        assert_eq!(l.lookup([172, 16, 255, 66]).map(|r| r.group), Some(3));
        assert_eq!(l.lookup([172, 16, 255, 67]).map(|r| r.group), Some(2));
        assert_eq!(l.lookup([10, 0, 0, 1]).map(|r| r.group), Some(1));
        l.remove([0, 0, 0, 0], 0);
        assert!(l.lookup([10, 0, 0, 1]).is_none());
    }

    #[test]
    fn mask_clears_host_bits() {
        assert_eq!(mask([172, 16, 255, 66], 12), [172, 16, 0, 0]);
        assert_eq!(mask([255; 4], 0), [0; 4]);
        assert_eq!(mask([255; 4], 31), [255, 255, 255, 254]);
    }
}
