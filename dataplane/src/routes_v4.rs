//! IPv4 route writes: the DIR-24-8 tables packets use and the record beside them (xe_routes_v4, through mmap), in an order a stop at any point leaves safe, each route's own result kept.

use std::net::Ipv4Addr;

use crate::abi::xe_route;
use crate::error::{Error, Result};
use crate::program::Dataplane;
use crate::tables::{check_prefix, check_route_v4};

/// Routes ahead whose record slot a write of many asks the CPU for.
const AHEAD: usize = 8;

impl Dataplane {
    /// Writes IPv4 routes as [`crate::TableWriter::set_route_v4`] does, one
    /// result per route. A new prefix the record has no room for is refused
    /// before anything is written; then the DIR-24-8 tables (each route
    /// checked for room as it is added), then the record. Packets never
    /// read the record and a restart rewrites the tables from it, so a stop
    /// between the two takes the route out of the tables (its packets go to
    /// the kernel) until the restarted daemon writes it again.
    pub(crate) fn write_routes_v4(
        &mut self,
        routes: &[(Ipv4Addr, u8, xe_route)],
    ) -> Vec<Result<()>> {
        routes
            .iter()
            .enumerate()
            .map(|(i, (a, l, r))| {
                if let Some((pa, pl, _)) = routes.get(i + AHEAD) {
                    self.record.prefetch(u32::from(*pa), *pl);
                }
                check_prefix("IPv4", *l, 32)?;
                check_route_v4(r)?;
                let addr = u32::from(*a);
                self.record.check_room(addr, *l)?;
                let dir = self.dir()?;
                let old = dir.route(addr, *l);
                dir.add(addr, *l, r)?;
                if let Err(e) = self.record.insert(addr, *l, r) {
                    // Not reached after the room check; never leave the
                    // tables ahead of the record.
                    let dir = self.dir()?;
                    match old {
                        Some(o) => dir.add(addr, *l, &o)?,
                        None => {
                            dir.delete(addr, *l);
                        }
                    }
                    return Err(e);
                }
                Ok(())
            })
            .collect()
    }

    /// Deletes IPv4 routes as [`crate::TableWriter::delete_route_v4`] does,
    /// one result per route (a prefix not held is an error): the record
    /// first, then the tables (a stop between leaves the tables a route the
    /// record lacks, which a restart takes out).
    pub(crate) fn remove_routes_v4(&mut self, prefixes: &[(Ipv4Addr, u8)]) -> Vec<Result<()>> {
        prefixes
            .iter()
            .map(|(a, l)| {
                check_prefix("IPv4", *l, 32)?;
                // The tables must open before the record changes.
                self.dir()?;
                let addr = u32::from(*a);
                if self.record.remove(addr, *l).is_none() {
                    return Err(Error::Map {
                        map: "xe_routes_v4",
                        op: "delete",
                        source: libbpf_rs::Error::from(std::io::Error::from(
                            std::io::ErrorKind::NotFound,
                        )),
                    });
                }
                self.dir()?.delete(addr, *l);
                Ok(())
            })
            .collect()
    }
}
