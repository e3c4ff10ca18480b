//! Loading the XDP program and pinning its maps: load options, map sizes and the `Dataplane` handle.

use std::mem::{ManuallyDrop, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapMut, OpenObject};

use crate::abi::{
    XdpEcmpSkel, XdpEcmpSkelBuilder, LAYOUT_VERSION, MAX_GROUPS, MAX_ROUTES_V4, MAX_ROUTES_V6,
    MAX_SLOTS,
};
use crate::dir24::Dir248;
use crate::error::{Error, Result};
use crate::grace::GracePeriods;
use crate::insns::{value_accesses, Insn, ValueAccess};
use crate::lensearch::LenSearch;
use crate::maps::map_err;
use crate::mmap::MmapCells;
use crate::pinsets::FlowSets;
use crate::record::Record;
use crate::v6maps::V6Maps;

/// How the program stamps the last-used time of resilient buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StampMode {
    /// Write only when the jiffy changed (the default).
    #[default]
    OnChange = 0,
    /// Write on every packet (for measuring what OnChange saves).
    Always = 1,
    /// Never (for measuring the cost of stamping).
    Never = 2,
}

/// Options fixed at load time.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Record each decision in the trace map (tests, `xdp-ecmp calc`).
    pub trace_decisions: bool,
    pub stamp_mode: StampMode,
    /// Leave the packet counters alone (a copy of the program that answers
    /// questions over the live maps, as `xdp-ecmp calc` does).
    pub no_counters: bool,
    /// Take every frame as admitted: no `xe_inports` lookup, no check of
    /// the destination MAC, VLAN tags or the ingress port's forwarding
    /// switches. Only for a program that is test-run over tables without
    /// ports and never attached; off by default, so whatever is attached to
    /// a port routes only what the kernel would route from that port.
    pub admit_any: bool,
    /// For the AF_XDP engine: frames to be forwarded go, unrewritten, to
    /// the engine's socket of their receive queue ([`Dataplane::set_xsk`]);
    /// with none there, to the kernel. The engine counts what it forwards.
    pub steer_xsk: bool,
    /// Sizes of the maps whose size is a choice. None: those of maps found
    /// pinned, else the defaults; given, they must match maps found pinned
    /// (but for `flows`, which `flows` below sets).
    pub sizes: Option<MapSizes>,
    /// Entries of each family's flow table. None: that of a pinned table,
    /// else the smallest; given, pinned tables of another size are made
    /// anew.
    pub flows: Option<u32>,
    /// Pin the maps under this bpffs directory, reusing maps already pinned there.
    pub pin_dir: Option<PathBuf>,
}

/// The sizes of the maps that can be chosen at load, where memory allows:
/// the route records (the IPv6 trie grows with its routes, the IPv4
/// record takes 16 bytes per route of capacity) and
/// the slot pool every group's window is cut from (8 bytes a slot, and as
/// much again for the bucket stamps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSizes {
    pub routes_v4: u32,
    pub routes_v6: u32,
    pub slots: u32,
    /// Flows each family's flow table (`xe_flows4` and `xe_flows6`) is
    /// sized for, a power of two: twice as many ways, 48 and 80 bytes
    /// each (`pinsets::sets_for`). The smallest size unless flows are
    /// pinned.
    pub flows: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        MapSizes {
            routes_v4: MAX_ROUTES_V4,
            routes_v6: MAX_ROUTES_V6,
            slots: MAX_SLOTS,
            flows: *Self::RANGE.start(),
        }
    }
}

impl MapSizes {
    /// The range of each size: at least a little, at most what an mmapped
    /// pool and a 24-bit-indexed world need.
    pub const RANGE: std::ops::RangeInclusive<u32> = 1024..=(1 << 24);

    /// Checks every size against [`MapSizes::RANGE`], naming the config key.
    pub fn check(&self) -> Result<()> {
        for (key, v) in [
            ("max_routes_v4", self.routes_v4),
            ("max_routes_v6", self.routes_v6),
            ("slot_pool", self.slots),
            ("pin_capacity", self.flows),
        ] {
            if !Self::RANGE.contains(&v) {
                return Err(Error::OutOfRange {
                    what: key,
                    value: v.into(),
                    max: (*Self::RANGE.end()).into(),
                });
            }
        }
        Ok(())
    }

    /// The sizes of the maps pinned under `dir`, if they are pinned.
    fn pinned(dir: &Path) -> Result<Option<MapSizes>> {
        let size = |name: &str| -> Result<Option<u32>> {
            let path = dir.join(name);
            if !path.exists() {
                return Ok(None);
            }
            let m = libbpf_rs::MapHandle::from_pinned_path(&path).map_err(|e| Error::Pin {
                what: "opening pinned map",
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
            Ok(Some(m.max_entries()))
        };
        Ok(
            match (
                size("xe_routes_v4")?.map(crate::record::capacity_of),
                size("xe_routes_v6")?,
                size("xe_slots")?,
                size("xe_flows4")?,
            ) {
                (Some(routes_v4), Some(routes_v6), Some(slots), sets) => Some(MapSizes {
                    routes_v4,
                    routes_v6,
                    slots,
                    flows: sets.map_or(*Self::RANGE.start(), crate::pinsets::flows_of),
                }),
                _ => None,
            },
        )
    }
}

/// The loaded XDP program and its maps.
pub struct Dataplane {
    /// xe_groups and xe_slots mapped into this process: a group entry is
    /// replaced with one 8-byte store, a slot with one 4-byte store.
    pub(crate) groups: MmapCells,
    pub(crate) slots: MmapCells,
    /// xe_inports mapped into this process: a port's entry is replaced with
    /// one 8-byte store.
    pub(crate) inports: MmapCells,
    /// xe_routes_v4 mapped into this process: the record of the IPv4
    /// routes the DIR-24-8 tables were given, one 8-byte store an entry.
    pub(crate) record: Record<MmapCells>,
    /// The flow tables mapped into this process.
    pub(crate) flows4: FlowSets,
    pub(crate) flows6: FlowSets,
    /// When what packets may still hold can be reused.
    pub(crate) grace: GracePeriods,
    /// The sizes the maps were made (or found pinned) with.
    pub(crate) sizes: MapSizes,
    /// The IPv4 DIR-24-8 tables, mapped on the first IPv4 route write (and
    /// then checked against the record if the maps may come from a pin).
    pub(crate) dir: Option<Dir248<MmapCells>>,
    /// The IPv6 length search, opened on the first IPv6 route write (and
    /// then checked against its LPM trie, as the DIR-24-8 tables are).
    pub(crate) v6: Option<LenSearch<V6Maps>>,
    /// Maps may have been reused from a pin directory.
    pub(crate) pinned: bool,
    /// The kernel's tick rate, measured on first use of the stamp clock.
    pub(crate) hz: Option<u32>,
    pub(crate) skel: ManuallyDrop<XdpEcmpSkel<'static>>,
    /// Backing storage of the skeleton's object, freed after the skeleton.
    storage: *mut MaybeUninit<OpenObject>,
}

// SAFETY: the skeleton is Send + Sync; `storage` is only touched in Drop.
unsafe impl Send for Dataplane {}
unsafe impl Sync for Dataplane {}

impl Drop for Dataplane {
    fn drop(&mut self) {
        // SAFETY: dropped exactly once, before the storage it borrows.
        unsafe {
            ManuallyDrop::drop(&mut self.skel);
            drop(Box::from_raw(self.storage));
        }
    }
}

impl Dataplane {
    /// Opens, configures and loads the program (not yet attached anywhere).
    pub fn load(opts: &LoadOptions) -> Result<Self> {
        let storage: *mut MaybeUninit<OpenObject> = Box::into_raw(Box::new(MaybeUninit::uninit()));
        // SAFETY: storage lives until Drop, after the skeleton that borrows it.
        let storage_ref: &'static mut MaybeUninit<OpenObject> = unsafe { &mut *storage };
        let result = open_and_load(storage_ref, opts).and_then(|(skel, sizes, seed)| {
            let groups = MmapCells::map(&skel.maps.xe_groups, "xe_groups", MAX_GROUPS as usize, 8)?;
            let slots = MmapCells::map(&skel.maps.xe_slots, "xe_slots", sizes.slots as usize, 8)?;
            let inports = crate::inports::map_array(&skel.maps.xe_inports)?;
            let record = MmapCells::map(
                &skel.maps.xe_routes_v4,
                "xe_routes_v4",
                crate::record::words_for(sizes.routes_v4) as usize,
                8,
            )?;
            let record = Record::open(record, crate::pinsets::new_seed);
            let sets = crate::pinsets::sets_for(sizes.flows);
            let flows = (
                FlowSets::map(&skel.maps.xe_flows4, false, sets, seed)?,
                FlowSets::map(&skel.maps.xe_flows6, true, sets, seed)?,
            );
            Ok((
                skel,
                sizes,
                groups,
                slots,
                inports,
                record,
                flows,
                GracePeriods::kernel()?,
            ))
        });
        match result {
            Ok((skel, sizes, groups, slots, inports, record, (flows4, flows6), grace)) => {
                Ok(Dataplane {
                    groups,
                    record,
                    inports,
                    slots,
                    flows4,
                    flows6,
                    grace,
                    sizes,
                    dir: None,
                    v6: None,
                    pinned: opts.pin_dir.is_some(),
                    hz: None,
                    skel: ManuallyDrop::new(skel),
                    storage,
                })
            }
            Err(e) => {
                // SAFETY: nothing borrows the storage any more.
                drop(unsafe { Box::from_raw(storage) });
                Err(e)
            }
        }
    }

    /// How the loaded program reads the values of `map` (one of the maps the
    /// control plane replaces entries of while packets flow): every access
    /// through a pointer a lookup in it returned, in program order.
    pub fn program_reads(&self, map: &str) -> Result<Vec<ValueAccess>> {
        let m = &self.skel.maps;
        let fd = match map {
            "xe_groups" => m.xe_groups.as_fd(),
            "xe_nexthops" => m.xe_nexthops.as_fd(),
            "xe_inports" => m.xe_inports.as_fd(),
            "xe_inports_far" => m.xe_inports_far.as_fd(),
            "xe_slots" => m.xe_slots.as_fd(),
            "xe_tbl24" => m.xe_tbl24.as_fd(),
            "xe_tbl8" => m.xe_tbl8.as_fd(),
            _ => {
                return Err(Error::Pin {
                    what: "program_reads: not a map the control plane replaces entries of:",
                    path: PathBuf::from(map),
                    source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
                })
            }
        };
        let insns: Vec<Insn> = self
            .skel
            .progs
            .xdp_ecmp
            .insns()
            .iter()
            .map(|n| Insn {
                code: n.code,
                dst: n.dst_reg(),
                src: n.src_reg(),
                off: n.off,
                imm: n.imm,
            })
            .collect();
        Ok(value_accesses(&insns, fd.as_raw_fd()))
    }

    /// The sizes the maps have.
    pub fn sizes(&self) -> MapSizes {
        self.sizes
    }

    /// The program's fd (for attaching and link updates).
    pub fn prog_fd(&self) -> BorrowedFd<'_> {
        self.skel.progs.xdp_ecmp.as_fd()
    }

    /// Kernel-reported memory of each map (fdinfo `memlock`), by map name.
    pub fn map_memory(&self) -> Vec<(String, u64)> {
        let maps: [(&str, &MapMut<'_>); 17] = [
            ("xe_routes_v4", &self.skel.maps.xe_routes_v4),
            ("xe_tbl24", &self.skel.maps.xe_tbl24),
            ("xe_tbl8", &self.skel.maps.xe_tbl8),
            ("xe_routes_v6", &self.skel.maps.xe_routes_v6),
            ("xe_v6_slots", &self.skel.maps.xe_v6_slots),
            ("xe_v6_lens", &self.skel.maps.xe_v6_lens),
            ("xe_groups", &self.skel.maps.xe_groups),
            ("xe_slots", &self.skel.maps.xe_slots),
            ("xe_slot_used", &self.skel.maps.xe_slot_used),
            ("xe_nexthops", &self.skel.maps.xe_nexthops),
            ("xe_nh_stats", &self.skel.maps.xe_nh_stats),
            ("xe_txports", &self.skel.maps.xe_txports),
            ("xe_inports", &self.skel.maps.xe_inports),
            ("xe_inports_far", &self.skel.maps.xe_inports_far),
            ("xe_flows4", &self.skel.maps.xe_flows4),
            ("xe_flows6", &self.skel.maps.xe_flows6),
            ("xe_pin_members", &self.skel.maps.xe_pin_members),
        ];
        maps.iter()
            .filter_map(|(n, m)| Some((n.to_string(), m.query_fdinfo().ok()?.memlock?)))
            .collect()
    }
}

/// Loads the program and makes (or reuses from the pin directory) its
/// maps; returns the sizes they have and the flow tables' set-index key.
fn open_and_load(
    storage: &'static mut MaybeUninit<OpenObject>,
    opts: &LoadOptions,
) -> Result<(XdpEcmpSkel<'static>, MapSizes, u64)> {
    let mut open = XdpEcmpSkelBuilder::default()
        .open(storage)
        .map_err(|source| Error::Load { source })?;
    if let Some(rodata) = open.maps.rodata_data.as_deref_mut() {
        rodata.trace_decisions = u8::from(opts.trace_decisions);
        rodata.stamp_mode = opts.stamp_mode as u8;
        rodata.count_packets = u8::from(!opts.no_counters);
        rodata.admit_any = u8::from(opts.admit_any);
        rodata.steer_xsk = u8::from(opts.steer_xsk);
    }
    let mut sizes = opts.sizes.unwrap_or_default();
    // Flow tables come in powers of two.
    let want_flows = opts.flows.map(crate::pinsets::rounded_flows);
    let mut seed = None;
    if let Some(dir) = &opts.pin_dir {
        crate::pins::ensure_bpffs(dir)?;
        crate::pins::check_layout(dir)?;
        if let Some(mut pinned) = MapSizes::pinned(dir)? {
            // The flow tables may change size: they are made anew (the
            // flows they pinned are hashed again).
            if let Some(want) = want_flows.filter(|f| *f != pinned.flows) {
                for name in ["xe_flows4", "xe_flows6"] {
                    let path = dir.join(name);
                    if path.exists() {
                        std::fs::remove_file(&path).map_err(|source| Error::Pin {
                            what: "removing the flow table of another size",
                            path,
                            source,
                        })?;
                        tracing::warn!(
                            table = name,
                            was = pinned.flows,
                            now = want,
                            "flow table resized: the flows it pinned are hashed again"
                        );
                    }
                }
                pinned.flows = want;
            }
            let sizes_given = opts.sizes.map(|s| MapSizes {
                flows: pinned.flows,
                ..s
            });
            if let Some(want) = sizes_given.filter(|w| *w != pinned) {
                return Err(Error::Sizes {
                    dir: dir.clone(),
                    pinned: format!("{pinned:?}"),
                    want: format!("{want:?}"),
                });
            }
            sizes = pinned;
        }
    }
    if let Some(f) = opts.flows {
        sizes.flows = f;
    }
    sizes.check()?;
    sizes.flows = crate::pinsets::rounded_flows(sizes.flows);
    // A pinned flow table's entries sit where the key it was made with
    // puts them: a program that reuses the tables takes that key.
    if let Some(dir) = opts
        .pin_dir
        .as_ref()
        .filter(|d| d.join("xe_flows4").exists())
    {
        if let Ok(m) = libbpf_rs::MapHandle::from_pinned_path(dir.join("xe_pin_seed")) {
            seed = Some(crate::pinsets::read_seed(&m)?);
        }
    }
    let seed = seed.unwrap_or_else(crate::pinsets::new_seed);
    let flow_sets = crate::pinsets::sets_for(sizes.flows);
    if let Some(rodata) = open.maps.rodata_data.as_deref_mut() {
        rodata.v6_slot_bits = crate::v6slots::size_for(sizes.routes_v6).0;
        rodata.pin_seed = seed;
        rodata.pin_set_bits = crate::pinsets::set_bits(flow_sets);
    }
    for mut map in open.open_object_mut().maps_mut() {
        let size = match map.name().to_str() {
            Some("xe_routes_v4") => crate::record::words_for(sizes.routes_v4),
            Some("xe_routes_v6") => sizes.routes_v6,
            Some("xe_v6_slots") => crate::v6slots::size_for(sizes.routes_v6).1,
            Some("xe_slots" | "xe_slot_used") => sizes.slots,
            Some("xe_flows4" | "xe_flows6") => flow_sets,
            _ => continue,
        };
        map.set_max_entries(size)
            .map_err(|source| Error::Load { source })?;
    }
    if let Some(dir) = &opts.pin_dir {
        std::fs::create_dir_all(dir).map_err(|source| Error::Pin {
            what: "creating pin directory",
            path: dir.clone(),
            source,
        })?;
        for mut map in open.open_object_mut().maps_mut() {
            let name = map.name().to_string_lossy().into_owned();
            if name.contains('.') || name.starts_with("xe_xsk") {
                continue; // .rodata, the sockets: this process's own
            }
            map.set_pin_path(dir.join(&name))
                .map_err(|source| Error::Load { source })?;
        }
    }
    let skel = open.load().map_err(|source| Error::Load { source })?;
    // Pinned with the maps: says which layout they have.
    skel.maps
        .xe_layout
        .update(
            &0u32.to_ne_bytes(),
            &LAYOUT_VERSION.to_ne_bytes(),
            MapFlags::ANY,
        )
        .map_err(map_err("xe_layout", "update"))?;
    crate::pinsets::write_seed(&skel.maps.xe_pin_seed, seed)?;
    Ok((skel, sizes, seed))
}
