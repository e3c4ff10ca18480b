//! The maps as the torn-state run's reconciler writes them, watched for the moments a race could show.

use super::*;

/// The maps as the reconciler writes them, watched for the moments a race
/// could show: what A retires and B reuses, and A's shrinking windows.
pub(super) struct Tap<'a> {
    pub(super) dp: &'a mut Dataplane,
    pub(super) a_valid: HashSet<(u32, [u8; 6])>,
    /// Next-hop ids holding one of A's next hops, and those A retired.
    pub(super) a_nh: HashSet<u32>,
    pub(super) a_nh_retired: HashSet<u32>,
    /// A's group ids with their window (base, size), and retired ones.
    pub(super) a_groups: HashMap<u32, (u32, u32)>,
    pub(super) a_groups_retired: HashSet<u32>,
    /// Windows A left (base, size), newest last.
    pub(super) a_windows_left: Vec<(u32, u32)>,
    /// The last slots written from `base` (a new window is written just before its group).
    pub(super) last_slots: (u32, Vec<u32>),
    pub(super) reuse: Reuse,
}

impl<'a> Tap<'a> {
    pub(super) fn new(dp: &'a mut Dataplane, a_valid: HashSet<(u32, [u8; 6])>) -> Self {
        Tap {
            dp,
            a_valid,
            a_nh: HashSet::new(),
            a_nh_retired: HashSet::new(),
            a_groups: HashMap::new(),
            a_groups_retired: HashSet::new(),
            a_windows_left: Vec::new(),
            last_slots: (u32::MAX, Vec::new()),
            reuse: Reuse::default(),
        }
    }

    pub(super) fn is_a(&self, nh: &xe_nexthop) -> bool {
        self.a_valid.contains(&(nh.ifindex, nh.dmac))
    }

    pub(super) fn leave_window(&mut self, w: (u32, u32)) {
        self.a_windows_left.push(w);
        if self.a_windows_left.len() > 64 {
            self.a_windows_left.remove(0);
        }
    }

    /// True if a slot in [from, to) sends frames out with a MAC A never had there.
    pub(super) fn wrong_past(&self, from: u32, to: u32) -> dataplane::Result<bool> {
        for id in self.dp.slots(from, to - from)? {
            if id == 0 {
                continue;
            }
            let nh = self.dp.nexthop(id)?;
            if nh.state & NH_USABLE == NH_USABLE && nh.state & NH_TXPORT != 0 && !self.is_a(&nh) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl TableWriter for Tap<'_> {
    fn set_route_v4(&mut self, addr: Ipv4Addr, len: u8, route: &xe_route) -> dataplane::Result<()> {
        self.dp.set_route_v4(addr, len, route)
    }
    fn delete_route_v4(&mut self, addr: Ipv4Addr, len: u8) -> dataplane::Result<()> {
        self.dp.delete_route_v4(addr, len)
    }
    fn set_route_v6(
        &mut self,
        addr: std::net::Ipv6Addr,
        len: u8,
        route: &xe_route,
    ) -> dataplane::Result<()> {
        self.dp.set_route_v6(addr, len, route)
    }
    fn delete_route_v6(&mut self, addr: std::net::Ipv6Addr, len: u8) -> dataplane::Result<()> {
        self.dp.delete_route_v6(addr, len)
    }

    fn set_group(&mut self, id: u32, g: &xe_group) -> dataplane::Result<()> {
        let window = (g.base, u32::from(g.size));
        let is_a = g.mode != GROUP_UNUSED
            && g.size > 0
            && self.last_slots.0 == g.base
            && self.last_slots.1.len() == usize::from(g.size)
            && self.last_slots.1.iter().all(|s| self.a_nh.contains(s));
        if is_a {
            if let Some(&(base, size)) = self.a_groups.get(&id) {
                if base != g.base {
                    self.reuse.a_moves += 1;
                    if window.1 < size {
                        self.reuse.a_shrinks += 1;
                        if self.wrong_past(g.base + window.1, g.base + size)? {
                            self.reuse.a_shrinks_exposed += 1;
                        }
                    }
                    self.leave_window((base, size));
                }
            }
            // A may take back a window it left: it is no longer B's to reuse.
            self.a_windows_left
                .retain(|(b, s)| !(*b < window.0 + window.1 && window.0 < b + s));
            self.a_groups.insert(id, window);
            self.a_groups_retired.remove(&id);
        } else if let Some(w) = self.a_groups.remove(&id) {
            self.leave_window(w);
            self.a_groups_retired.insert(id);
        } else if g.mode != GROUP_UNUSED && self.a_groups_retired.remove(&id) {
            self.reuse.groups += 1;
        }
        self.dp.set_group(id, g)
    }

    fn set_slots(&mut self, base: u32, nexthops: &[u32]) -> dataplane::Result<()> {
        if !nexthops.iter().all(|s| self.a_nh.contains(s)) {
            let end = base + nexthops.len() as u32;
            if let Some(i) = self
                .a_windows_left
                .iter()
                .position(|(b, s)| *b < end && base < b + s)
            {
                self.a_windows_left.remove(i);
                self.reuse.windows += 1;
            }
        }
        self.last_slots = (base, nexthops.to_vec());
        self.dp.set_slots(base, nexthops)
    }

    fn set_nexthop(&mut self, id: u32, nh: &xe_nexthop) -> dataplane::Result<()> {
        if self.is_a(nh) {
            self.a_nh.insert(id);
            self.a_nh_retired.remove(&id);
        } else if self.a_nh.remove(&id) {
            self.a_nh_retired.insert(id);
        } else if nh.state != 0 && self.a_nh_retired.remove(&id) {
            self.reuse.nexthops += 1;
        }
        self.dp.set_nexthop(id, nh)
    }

    fn add_txport(&mut self, ifindex: u32) -> dataplane::Result<()> {
        self.dp.add_txport(ifindex)
    }
    fn remove_txport(&mut self, ifindex: u32) -> dataplane::Result<()> {
        self.dp.remove_txport(ifindex)
    }
    fn set_inport(
        &mut self,
        ifindex: u32,
        port: &dataplane::abi::xe_inport,
    ) -> dataplane::Result<()> {
        self.dp.set_inport(ifindex, port)
    }
    fn remove_inport(&mut self, ifindex: u32) -> dataplane::Result<()> {
        self.dp.remove_inport(ifindex)
    }
    fn set_config(&mut self, cfg: &xe_config) -> dataplane::Result<()> {
        self.dp.set_config(cfg)
    }
    fn set_pin_member(&mut self, group: u32, path: u32, nh: Option<u32>) -> dataplane::Result<()> {
        self.dp.set_pin_member(group, path, nh)
    }
    fn set_group_gen(&mut self, group: u32, gen: u32) -> dataplane::Result<()> {
        self.dp.set_group_gen(group, gen)
    }
    fn grace(&self) -> GracePeriods {
        self.dp.grace()
    }
}
