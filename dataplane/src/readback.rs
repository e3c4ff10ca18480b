//! Reading back what the maps hold: routes, groups, slots, next hops, ports, config and counters.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering;

use libbpf_rs::MapCore;

use crate::abi::{
    read_from, xe_config, xe_counter, xe_group, xe_lpm_v6, xe_nexthop, xe_route, Verdict,
    MAX_GROUPS, MAX_NEXTHOPS,
};
use crate::dir24::Dir248;
use crate::dump;
use crate::error::Result;
use crate::grace::GracePeriods;
use crate::maps::{self, add, counter, sum_percpu};
use crate::memory::Tables;
use crate::program::Dataplane;
use crate::tables::{check_prefix, check_range, check_slots, TableWriter};
use crate::v6maps::{self, V6Differences};

/// Counters by verdict or by next-hop id.
pub type Counts<K> = Vec<(K, xe_counter)>;

impl Dataplane {
    /// The IPv4 route stored under exactly this prefix.
    pub fn route_v4(&self, addr: Ipv4Addr, len: u8) -> Result<Option<xe_route>> {
        check_prefix("IPv4", len, 32)?;
        Ok(self.record.get(u32::from(addr), len))
    }

    /// The IPv6 routes of the trie (the record) as (address, length, route).
    pub(crate) fn trie_routes_v6(&self) -> Result<Vec<(u128, u8, xe_route)>> {
        Ok(self
            .routes_v6()?
            .into_iter()
            .map(|(a, l, r)| (u128::from(a), l, r))
            .collect())
    }

    /// The entries (prefix and length) of the IPv6 length search packets
    /// use that disagree with the routes in the LPM trie (the record), and
    /// the lengths of the record it does not search; empty when consistent.
    /// Only reads.
    pub fn v6_differences(&self) -> Result<V6Differences> {
        v6maps::differences(&self.v6_reader()?, &self.trie_routes_v6()?)
    }

    /// The /24s where the DIR-24-8 tables packets use disagree with the
    /// routes in the record; empty when consistent. Only
    /// reads, so it can check tables another process writes.
    pub fn dir_differences(&self) -> Result<Vec<Ipv4Addr>> {
        let (tbl24, tbl8) = self.dir_cells()?;
        Ok(Dir248::new(tbl24, tbl8, GracePeriods::immediate())
            .differences(&self.record.entries())?
            .into_iter()
            .map(|i| Ipv4Addr::from((i as u32) << 8))
            .collect())
    }

    /// Every IPv4 route in the record (prefix, length, route).
    pub fn routes_v4(&self) -> Result<Vec<(Ipv4Addr, u8, xe_route)>> {
        Ok(self
            .record
            .entries()
            .into_iter()
            .map(|(a, l, r)| (Ipv4Addr::from(a), l, r))
            .collect())
    }

    /// Every IPv6 route in the map (prefix, length, route), read in batches.
    pub fn routes_v6(&self) -> Result<Vec<(Ipv6Addr, u8, xe_route)>> {
        let all =
            dump::entries::<xe_lpm_v6, xe_route>(&self.skel.maps.xe_routes_v6, "xe_routes_v6")?;
        Ok(all
            .into_iter()
            .map(|(k, r)| (Ipv6Addr::from(k.addr), k.prefixlen as u8, r))
            .collect())
    }

    pub fn group(&self, id: u32) -> Result<xe_group> {
        check_range("group id", id, crate::abi::MAX_GROUPS)?;
        Ok(maps::lookup(&self.skel.maps.xe_groups, "xe_groups", &id)?.unwrap_or_default())
    }

    /// Next-hop ids in slots [base, base + count).
    pub fn slots(&self, base: u32, count: u32) -> Result<Vec<u32>> {
        check_slots(base, count as usize, self.sizes.slots)?;
        (base..base + count)
            .map(|i| Ok(maps::lookup(&self.skel.maps.xe_slots, "xe_slots", &i)?.unwrap_or(0)))
            .collect()
    }

    pub fn nexthop(&self, id: u32) -> Result<xe_nexthop> {
        check_range("next-hop id", id, MAX_NEXTHOPS)?;
        Ok(maps::lookup(&self.skel.maps.xe_nexthops, "xe_nexthops", &id)?.unwrap_or_default())
    }

    pub fn config(&self) -> Result<xe_config> {
        Ok(maps::lookup(&self.skel.maps.xe_config, "xe_config", &0u32)?.unwrap_or_default())
    }

    /// Packets and bytes per verdict, summed over CPUs; `forward` leaves
    /// out the redirected frames the kernel refused (as
    /// `pinned_verdict_counters`).
    pub fn verdict_counters(&self) -> Result<Vec<(Verdict, xe_counter)>> {
        let failed = self.tx_failures()?;
        Verdict::ALL
            .iter()
            .map(|v| {
                let mut c = sum_percpu(&self.skel.maps.xe_verdicts, "xe_verdicts", *v as u32)?;
                if *v == Verdict::Forward {
                    c.packets = c.packets.saturating_sub(failed);
                }
                let engine = &self.skel.maps.xe_engine_verdicts;
                add(&mut c, counter(engine, "xe_engine_verdicts", *v as u32)?);
                Ok((*v, c))
            })
            .collect()
    }

    /// Packets and bytes forwarded to a next hop, summed over CPUs, the
    /// AF_XDP engine's included.
    pub fn nexthop_counter(&self, id: u32) -> Result<xe_counter> {
        check_range("next-hop id", id, MAX_NEXTHOPS)?;
        let mut c = sum_percpu(&self.skel.maps.xe_nh_stats, "xe_nh_stats", id)?;
        add(
            &mut c,
            counter(&self.skel.maps.xe_engine_nh, "xe_engine_nh", id)?,
        );
        Ok(c)
    }

    /// The AF_XDP engine's counters as stored: per verdict, and every next
    /// hop with a count.
    pub fn engine_counters(&self) -> Result<(Counts<Verdict>, Counts<u32>)> {
        let m = &self.skel.maps;
        let verdicts = Verdict::ALL
            .iter()
            .map(|v| {
                Ok((
                    *v,
                    counter(&m.xe_engine_verdicts, "xe_engine_verdicts", *v as u32)?,
                ))
            })
            .collect::<Result<_>>()?;
        let mut nexthops = Vec::new();
        for id in 0..MAX_NEXTHOPS {
            let c = counter(&m.xe_engine_nh, "xe_engine_nh", id)?;
            if c.packets != 0 {
                nexthops.push((id, c));
            }
        }
        Ok((verdicts, nexthops))
    }
}

impl Dataplane {
    /// Everything the decision reads, copied into in-memory tables: the
    /// routes of both records, every group in use with the slots of its
    /// window, the next hops those slots name, the tx and ingress ports and
    /// the config. (An engine starting over maps a previous run wrote.)
    pub fn read_tables(&self) -> Result<Tables> {
        let mut t = Tables::default();
        for (a, l, r) in self.routes_v4()? {
            t.set_route_v4(a, l, &r)?;
        }
        for (a, l, r) in self.routes_v6()? {
            t.set_route_v6(a, l, &r)?;
        }
        let mut nexthops = std::collections::BTreeSet::new();
        for id in 0..MAX_GROUPS {
            let word = self.groups.word(id as usize).load(Ordering::Acquire);
            let g: xe_group = read_from(&word.to_ne_bytes()).unwrap_or_default();
            if g.size == 0 {
                continue;
            }
            let end = (g.base + u32::from(g.size)).min(self.sizes.slots);
            let slots: Vec<u32> = (g.base..end)
                .map(|i| self.slots.cell(i as usize).load(Ordering::Acquire))
                .collect();
            nexthops.extend(slots.iter().copied());
            t.set_slots(g.base, &slots)?;
            t.set_group(id, &g)?;
        }
        for id in nexthops {
            t.set_nexthop(id, &self.nexthop(id)?)?;
        }
        for k in self.skel.maps.xe_txports.keys() {
            if let Some(ifindex) = read_from::<u32>(&k) {
                t.add_txport(ifindex)?;
            }
        }
        for (ifindex, p) in self.inports()? {
            t.set_inport(ifindex, &p)?;
        }
        for (group, path, id) in self.pin_members() {
            t.set_pin_member(group, path, Some(id))?;
        }
        for (group, gen) in self.group_gens() {
            t.set_group_gen(group, gen)?;
        }
        t.set_config(&self.config()?)?;
        Ok(t)
    }
}
