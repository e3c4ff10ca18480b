//! The engine's tables: written like the maps (a `TableWriter`), published to the workers as one immutable snapshot per batch through an epoch scheme, read without locks.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned};

use crate::abi::{xe_config, xe_group, xe_inport, xe_nexthop, xe_route};
use crate::error::Result;
use crate::grace::GracePeriods;
use crate::memory::Tables;
use crate::tables::TableWriter;

/// The snapshot the workers read: replaced whole, freed once no worker can
/// still hold it (after every worker pinned since has unpinned).
pub(crate) struct Published {
    current: Atomic<Tables>,
}

impl Published {
    fn new(tables: Tables) -> Arc<Self> {
        Arc::new(Published {
            current: Atomic::new(tables),
        })
    }

    /// The snapshot now, valid while `guard` is held.
    pub(crate) fn load<'g>(&self, guard: &'g Guard) -> &'g Tables {
        // SAFETY: never null (set at creation, only ever swapped for
        // another snapshot), and freed only after the guards that could see
        // it are gone.
        unsafe {
            self.current
                .load(Ordering::Acquire, guard)
                .as_ref()
                .expect("a snapshot is always published")
        }
    }

    fn publish(&self, tables: Tables) {
        let guard = epoch::pin();
        let old = self
            .current
            .swap(Owned::new(tables), Ordering::AcqRel, &guard);
        // SAFETY: unreachable from `current` from now on; destroyed after
        // every worker that could have loaded it has unpinned.
        unsafe { guard.defer_destroy(old) };
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        // SAFETY: the last owner; no worker holds a guard any more.
        unsafe {
            let guard = epoch::unprotected();
            let old = self
                .current
                .swap(epoch::Shared::null(), Ordering::AcqRel, guard);
            if !old.is_null() {
                drop(old.into_owned());
            }
        }
    }
}

/// The control plane's side: a master copy written entry by entry, and
/// [`SnapshotWriter::publish`] to hand the workers a copy of it. A worker
/// sees either the snapshot before a publish or the one after, never a
/// half-written table. Each publish copies the tables (a cost that grows
/// with them).
pub struct SnapshotWriter {
    master: Tables,
    published: Arc<Published>,
}

impl SnapshotWriter {
    pub(crate) fn new(tables: Tables) -> (SnapshotWriter, Arc<Published>) {
        let published = Published::new(tables.clone());
        (
            SnapshotWriter {
                master: tables,
                published: published.clone(),
            },
            published,
        )
    }

    /// Makes everything written so far what the workers read.
    pub fn publish(&self) {
        self.published.publish(self.master.clone());
    }

    /// The tables as written so far (not necessarily published).
    pub fn tables(&self) -> &Tables {
        &self.master
    }
}

impl TableWriter for SnapshotWriter {
    fn set_route_v4(&mut self, addr: Ipv4Addr, len: u8, route: &xe_route) -> Result<()> {
        self.master.set_route_v4(addr, len, route)
    }
    fn delete_route_v4(&mut self, addr: Ipv4Addr, len: u8) -> Result<()> {
        self.master.delete_route_v4(addr, len)
    }
    fn set_route_v6(&mut self, addr: Ipv6Addr, len: u8, route: &xe_route) -> Result<()> {
        self.master.set_route_v6(addr, len, route)
    }
    fn delete_route_v6(&mut self, addr: Ipv6Addr, len: u8) -> Result<()> {
        self.master.delete_route_v6(addr, len)
    }
    fn set_group(&mut self, id: u32, group: &xe_group) -> Result<()> {
        self.master.set_group(id, group)
    }
    fn set_slots(&mut self, base: u32, nexthops: &[u32]) -> Result<()> {
        self.master.set_slots(base, nexthops)
    }
    fn set_nexthop(&mut self, id: u32, nh: &xe_nexthop) -> Result<()> {
        self.master.set_nexthop(id, nh)
    }
    fn add_txport(&mut self, ifindex: u32) -> Result<()> {
        self.master.add_txport(ifindex)
    }
    fn remove_txport(&mut self, ifindex: u32) -> Result<()> {
        self.master.remove_txport(ifindex)
    }
    fn set_inport(&mut self, ifindex: u32, port: &xe_inport) -> Result<()> {
        self.master.set_inport(ifindex, port)
    }
    fn remove_inport(&mut self, ifindex: u32) -> Result<()> {
        self.master.remove_inport(ifindex)
    }
    fn set_config(&mut self, cfg: &xe_config) -> Result<()> {
        self.master.set_config(cfg)
    }
    fn set_pin_member(&mut self, group: u32, path: u32, nexthop: Option<u32>) -> Result<()> {
        self.master.set_pin_member(group, path, nexthop)
    }
    fn set_group_gen(&mut self, group: u32, gen: u32) -> Result<()> {
        self.master.set_group_gen(group, gen)
    }
    /// Nothing reads the master copy but this writer.
    fn grace(&self) -> GracePeriods {
        GracePeriods::immediate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::TableReader;

    #[test]
    fn workers_see_a_write_only_once_published() {
        let (mut w, published) = SnapshotWriter::new(Tables::default());
        w.set_nexthop(
            7,
            &xe_nexthop {
                mtu: 1500,
                ..Default::default()
            },
        )
        .unwrap();
        let mtu = |p: &Published| p.load(&epoch::pin()).nexthop(7).map(|n| n.mtu);
        assert_eq!(mtu(&published), Some(0), "not yet published");
        w.publish();
        assert_eq!(mtu(&published), Some(1500));
        // A reader pinned before the next publish keeps its snapshot.
        let guard = epoch::pin();
        let before = published.load(&guard);
        w.set_nexthop(
            7,
            &xe_nexthop {
                mtu: 9000,
                ..Default::default()
            },
        )
        .unwrap();
        w.publish();
        assert_eq!(before.nexthop(7).map(|n| n.mtu), Some(1500));
        drop(guard);
        assert_eq!(mtu(&published), Some(9000));
    }
}
