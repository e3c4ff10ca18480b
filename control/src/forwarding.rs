//! Admission of each attached port, kept equal to the kernel's: the port's MAC and forwarding switches in `xe_inports`, so the program routes only what the kernel would route from that port.
//!
//! The kernel routes a unicast frame only if it is addressed to the MAC of
//! the port it came in by (any other is PACKET_OTHERHOST, dropped). It
//! forwards IPv4 only if forwarding is on for that port
//! (`net.ipv4.conf.PORT.forwarding`, which `ip_forward` sets for every
//! port), and IPv6 only if `net.ipv6.conf.all.forwarding` is on (ip6_forward
//! reads the global switch; a port's own `forwarding` only makes it act as
//! a router on the link) or, on kernels that have it (6.17 on), the port's
//! `force_forwarding` is; never on a port with `disable_ipv6`. The MAC
//! comes from the link mirror; the switches from their files, read in the
//! daemon's namespace every 100 ms (and at once when links or netconf
//! change): seven small reads per port. A port that is detached or gone loses its entry: its
//! frames go to the kernel.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dataplane::abi::{xe_inport, INPORT_FWD_V4, INPORT_FWD_V6, INPORT_RPF};
use dataplane::{Dataplane, TableWriter};

use crate::state::KernelState;

/// Where the kernel's switches are read (`/proc/sys/net`; another root in tests).
#[derive(Debug, Clone)]
pub struct Sysctls(pub PathBuf);

impl Default for Sysctls {
    fn default() -> Self {
        Sysctls(PathBuf::from("/proc/sys/net"))
    }
}

impl Sysctls {
    /// A switch: Some(true) when its file holds a non-zero value, None when
    /// it cannot be read (absent: the port has no such configuration).
    fn on(&self, rel: &str) -> Option<bool> {
        std::fs::read_to_string(self.0.join(rel))
            .ok()
            .map(|v| v.trim() != "0")
    }

    /// The `INPORT_FWD_*` bits of `port` now. A switch that cannot be read
    /// counts as off: the kernel then decides.
    pub fn flags(&self, port: &str) -> u8 {
        let mut flags = 0;
        if self.on(&format!("ipv4/conf/{port}/forwarding")) == Some(true) {
            flags |= INPORT_FWD_V4;
        }
        let v6_enabled = self.on(&format!("ipv6/conf/{port}/disable_ipv6")) == Some(false);
        let v6_forwarding = self.on("ipv6/conf/all/forwarding") == Some(true)
            || self.on(&format!("ipv6/conf/{port}/force_forwarding")) == Some(true);
        if v6_enabled && v6_forwarding {
            flags |= INPORT_FWD_V6;
        }
        // The kernel's reverse-path filter is the larger of `all` and the
        // port's; an unreadable one counts as on.
        let rpf = |rel: &str| {
            std::fs::read_to_string(self.0.join(rel))
                .ok()
                .and_then(|v| v.trim().parse::<u8>().ok())
        };
        match (
            rpf("ipv4/conf/all/rp_filter"),
            rpf(&format!("ipv4/conf/{port}/rp_filter")),
        ) {
            (Some(0), Some(0)) => {}
            _ => flags |= INPORT_RPF,
        }
        flags
    }
}

/// The entries of `xe_inports` this daemon keeps.
#[derive(Debug, Default)]
pub struct Admission {
    sysctls: Sysctls,
    /// What the map holds now, by ifindex.
    written: BTreeMap<u32, xe_inport>,
    /// The switches last logged per port, so a change is logged once.
    logged: BTreeMap<u32, u8>,
}

impl Admission {
    /// Takes over the entries the map holds (a previous run's): they stay
    /// in place while they are right, so a restart never stops admission.
    pub fn adopt(dp: &Dataplane, sysctls: Sysctls) -> dataplane::Result<Admission> {
        Ok(Admission {
            sysctls,
            written: dp.inports()?.into_iter().collect(),
            logged: BTreeMap::new(),
        })
    }

    /// What `xe_inports` should hold for the attached `ports` (name,
    /// ifindex): the MAC the link mirror has and the switches now. A port
    /// whose link is not mirrored (yet) has no entry.
    pub fn wanted(&self, ports: &[(String, u32)], state: &KernelState) -> BTreeMap<u32, xe_inport> {
        ports
            .iter()
            .filter_map(|(name, ifindex)| {
                let link = state.links.get(ifindex).filter(|l| l.name == *name)?;
                Some((
                    *ifindex,
                    xe_inport {
                        mac: link.mac,
                        flags: self.sysctls.flags(name),
                        ..Default::default()
                    },
                ))
            })
            .collect()
    }

    /// Makes the map hold what `wanted` says: writes the entries that
    /// changed and removes those of ports no longer attached. A write that
    /// fails is logged and tried again on the next call.
    pub fn apply(
        &mut self,
        ports: &[(String, u32)],
        state: &KernelState,
        dp: &mut dyn TableWriter,
    ) {
        let want = self.wanted(ports, state);
        let gone: Vec<u32> = self
            .written
            .keys()
            .filter(|i| !want.contains_key(i))
            .copied()
            .collect();
        for ifindex in gone {
            match dp.remove_inport(ifindex) {
                Ok(()) => {
                    self.written.remove(&ifindex);
                    self.logged.remove(&ifindex);
                    tracing::info!(
                        ifindex,
                        "port no longer attached: its frames go to the kernel"
                    );
                }
                Err(e) => tracing::warn!(ifindex, error = %e, "removing an ingress port entry"),
            }
        }
        for (ifindex, entry) in &want {
            let name = ports
                .iter()
                .find(|(_, i)| i == ifindex)
                .map_or("?", |(n, _)| n.as_str());
            self.log_switches(name, *ifindex, entry.flags);
            let same = self
                .written
                .get(ifindex)
                .is_some_and(|w| w.mac == entry.mac && w.flags == entry.flags);
            if same {
                continue;
            }
            match dp.set_inport(*ifindex, entry) {
                Ok(()) => {
                    self.written.insert(*ifindex, *entry);
                }
                Err(e) => {
                    tracing::warn!(port = name, error = %e, "writing an ingress port entry")
                }
            }
        }
    }

    /// Logs a port's switches when they differ from what was last logged
    /// (off at the first look counts as a change).
    fn log_switches(&mut self, port: &str, ifindex: u32, flags: u8) {
        let before = self
            .logged
            .insert(ifindex, flags)
            .unwrap_or(INPORT_FWD_V4 | INPORT_FWD_V6);
        for (bit, family) in [(INPORT_FWD_V4, "IPv4"), (INPORT_FWD_V6, "IPv6")] {
            match (before & bit != 0, flags & bit != 0) {
                (true, false) => tracing::warn!(
                    port,
                    "{family} forwarding is off on an attached port: its {family} frames go to the kernel"
                ),
                (false, true) => tracing::info!(port, "{family} forwarding is on again"),
                _ => {}
            }
        }
        match (before & INPORT_RPF != 0, flags & INPORT_RPF != 0) {
            (false, true) => tracing::warn!(
                port,
                "rp_filter is on for an attached port: the kernel checks IPv4 sources by a reverse lookup, so its IPv4 frames go to the kernel (set net.ipv4.conf.all/PORT.rp_filter=0 to forward them here)"
            ),
            (true, false) => tracing::info!(port, "rp_filter is off again"),
            _ => {}
        }
    }
}

/// The switches of `port` under the default root (for `attach`).
pub fn flags_now(port: &str) -> u8 {
    Sysctls::default().flags(port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Link;

    /// A sysctl tree under a fresh temporary directory.
    struct Tree(PathBuf);

    impl Tree {
        fn new(tag: &str) -> Tree {
            let d = std::env::temp_dir().join(format!("xe-sysctl-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            Tree(d)
        }
        fn set(&self, rel: &str, v: u8) {
            let p = self.0.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, format!("{v}\n")).expect("write");
        }
        fn sysctls(&self) -> Sysctls {
            Sysctls(self.0.clone())
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_kernels_rules_per_family() {
        let t = Tree::new("rules");
        let s = t.sysctls();
        assert_eq!(
            s.flags("p0"),
            INPORT_RPF,
            "nothing readable: the kernel decides"
        );
        t.set("ipv4/conf/all/rp_filter", 0);
        t.set("ipv4/conf/p0/rp_filter", 0);
        t.set("ipv4/conf/p0/forwarding", 1);
        t.set("ipv6/conf/p0/disable_ipv6", 0);
        t.set("ipv6/conf/p0/forwarding", 1);
        t.set("ipv6/conf/all/forwarding", 0);
        assert_eq!(
            s.flags("p0"),
            INPORT_FWD_V4,
            "IPv6 follows all.forwarding, not the port's own forwarding"
        );
        t.set("ipv6/conf/all/forwarding", 1);
        assert_eq!(s.flags("p0"), INPORT_FWD_V4 | INPORT_FWD_V6);
        t.set("ipv4/conf/p0/forwarding", 0);
        assert_eq!(
            s.flags("p0"),
            INPORT_FWD_V6,
            "IPv4 follows the port's switch"
        );
        t.set("ipv6/conf/all/forwarding", 0);
        t.set("ipv6/conf/p0/force_forwarding", 1);
        assert_eq!(s.flags("p0"), INPORT_FWD_V6, "force_forwarding on the port");
        t.set("ipv6/conf/p0/disable_ipv6", 1);
        assert_eq!(s.flags("p0"), 0, "no IPv6 on a port with disable_ipv6");
        // rp_filter: the larger of all and the port's, loose or strict.
        t.set("ipv4/conf/p0/rp_filter", 2);
        assert_ne!(s.flags("p0") & INPORT_RPF, 0, "loose on the port");
        t.set("ipv4/conf/p0/rp_filter", 0);
        t.set("ipv4/conf/all/rp_filter", 1);
        assert_ne!(s.flags("p0") & INPORT_RPF, 0, "strict for all");
        t.set("ipv4/conf/all/rp_filter", 0);
        assert_eq!(s.flags("p0") & INPORT_RPF, 0);
    }

    /// Records writes, like the map would hold them.
    #[derive(Default)]
    struct Map(BTreeMap<u32, xe_inport>, usize);

    impl TableWriter for Map {
        fn set_route_v4(
            &mut self,
            _: std::net::Ipv4Addr,
            _: u8,
            _: &dataplane::abi::xe_route,
        ) -> dataplane::Result<()> {
            unreachable!()
        }
        fn delete_route_v4(&mut self, _: std::net::Ipv4Addr, _: u8) -> dataplane::Result<()> {
            unreachable!()
        }
        fn set_route_v6(
            &mut self,
            _: std::net::Ipv6Addr,
            _: u8,
            _: &dataplane::abi::xe_route,
        ) -> dataplane::Result<()> {
            unreachable!()
        }
        fn delete_route_v6(&mut self, _: std::net::Ipv6Addr, _: u8) -> dataplane::Result<()> {
            unreachable!()
        }
        fn set_group(&mut self, _: u32, _: &dataplane::abi::xe_group) -> dataplane::Result<()> {
            unreachable!()
        }
        fn set_slots(&mut self, _: u32, _: &[u32]) -> dataplane::Result<()> {
            unreachable!()
        }
        fn set_nexthop(&mut self, _: u32, _: &dataplane::abi::xe_nexthop) -> dataplane::Result<()> {
            unreachable!()
        }
        fn add_txport(&mut self, _: u32) -> dataplane::Result<()> {
            unreachable!()
        }
        fn remove_txport(&mut self, _: u32) -> dataplane::Result<()> {
            unreachable!()
        }
        fn set_inport(&mut self, ifindex: u32, port: &xe_inport) -> dataplane::Result<()> {
            self.0.insert(ifindex, *port);
            self.1 += 1;
            Ok(())
        }
        fn remove_inport(&mut self, ifindex: u32) -> dataplane::Result<()> {
            self.0.remove(&ifindex);
            self.1 += 1;
            Ok(())
        }
        fn set_config(&mut self, _: &dataplane::abi::xe_config) -> dataplane::Result<()> {
            unreachable!()
        }
        fn set_pin_member(&mut self, _: u32, _: u32, _: Option<u32>) -> dataplane::Result<()> {
            unreachable!()
        }
        fn set_group_gen(&mut self, _: u32, _: u32) -> dataplane::Result<()> {
            unreachable!()
        }
        fn grace(&self) -> dataplane::grace::GracePeriods {
            dataplane::grace::GracePeriods::immediate()
        }
    }

    fn link(ifindex: u32, name: &str, last: u8) -> Link {
        Link {
            ifindex,
            name: name.into(),
            mac: [2, 0, 0, 0, 0, last],
            mtu: 1500,
            up: true,
            admin_up: true,
            xdp_tx: true,
            ..Default::default()
        }
    }

    #[test]
    fn entries_follow_ports_macs_and_switches() {
        let t = Tree::new("entries");
        for p in ["p0", "p1"] {
            t.set(&format!("ipv4/conf/{p}/forwarding"), 1);
            t.set(&format!("ipv6/conf/{p}/disable_ipv6"), 0);
            t.set(&format!("ipv4/conf/{p}/rp_filter"), 0);
        }
        t.set("ipv6/conf/all/forwarding", 1);
        t.set("ipv4/conf/all/rp_filter", 0);
        let mut adm = Admission {
            sysctls: t.sysctls(),
            ..Default::default()
        };
        let mut ks = KernelState::default();
        ks.links.insert(5, link(5, "p0", 0x10));
        ks.links.insert(6, link(6, "p1", 0x11));
        let ports = vec![("p0".to_string(), 5), ("p1".to_string(), 6)];
        let both = INPORT_FWD_V4 | INPORT_FWD_V6;
        let mut map = Map::default();
        adm.apply(&ports, &ks, &mut map);
        assert_eq!(map.0.len(), 2);
        assert_eq!((map.0[&5].mac[5], map.0[&5].flags), (0x10, both));
        // Nothing changed: nothing written.
        let writes = map.1;
        adm.apply(&ports, &ks, &mut map);
        assert_eq!(map.1, writes, "an unchanged entry is not rewritten");
        // One port's IPv4 switch off: only its entry changes.
        t.set("ipv4/conf/p0/forwarding", 0);
        adm.apply(&ports, &ks, &mut map);
        assert_eq!(map.0[&5].flags, INPORT_FWD_V6);
        assert_eq!(map.0[&6].flags, both);
        assert_eq!(map.1, writes + 1);
        // A new MAC.
        ks.links.insert(6, link(6, "p1", 0x21));
        adm.apply(&ports, &ks, &mut map);
        assert_eq!(map.0[&6].mac[5], 0x21);
        // p1 detached, p0 re-created under a new ifindex not mirrored yet:
        // no entry for either until the mirror has p0's new link.
        ks.links.remove(&5);
        let ports = vec![("p0".to_string(), 7)];
        adm.apply(&ports, &ks, &mut map);
        assert!(map.0.is_empty(), "{:?}", map.0);
        ks.links.insert(7, link(7, "p0", 0x30));
        adm.apply(&ports, &ks, &mut map);
        assert_eq!(map.0.keys().copied().collect::<Vec<_>>(), vec![7]);
        // An ifindex now held by another interface is not admitted.
        ks.links.insert(7, link(7, "other", 0x30));
        adm.apply(&ports, &ks, &mut map);
        assert!(map.0.is_empty());
    }
}
