//! Loading, pinning, attaching and test-running the XDP program, with typed access to its maps.

use std::ffi::CString;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{libbpf_sys, MapCore, MapFlags, MapMut, OpenObject, ProgramInput};

use crate::abi::{
    bytes_of, read_from, xe_config, xe_counter, xe_decision, xe_group, xe_inport, xe_lpm_v4,
    xe_lpm_v6, xe_nexthop, xe_route, Verdict, XdpEcmpSkel, XdpEcmpSkelBuilder, DIR_CHUNK_SIZE,
    LAYOUT_VERSION, MAX_DIR_CHUNKS, MAX_GROUPS, MAX_NEXTHOPS, MAX_ROUTES_V4, MAX_ROUTES_V6,
    MAX_SLOTS,
};
use crate::dir24::{Dir248, TBL24_ENTRIES};
use crate::error::{Error, Result};
use crate::grace::GracePeriods;
use crate::insns::{value_accesses, Insn, ValueAccess};
use crate::mmap::MmapCells;
use crate::tables::{
    check_group, check_prefix, check_range, check_route_v4, check_slots, TableWriter,
};

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
    /// Sizes of the maps whose size is a choice. None: those of maps found
    /// pinned, else the defaults; given, they must match maps found pinned.
    pub sizes: Option<MapSizes>,
    /// Pin the maps under this bpffs directory, reusing maps already pinned there.
    pub pin_dir: Option<PathBuf>,
}

/// The sizes of the maps that can be chosen at load, where memory allows:
/// the route tries (no preallocation: memory grows with the routes) and
/// the slot pool every group's window is cut from (8 bytes a slot, and as
/// much again for the bucket stamps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSizes {
    pub routes_v4: u32,
    pub routes_v6: u32,
    pub slots: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        MapSizes {
            routes_v4: MAX_ROUTES_V4,
            routes_v6: MAX_ROUTES_V6,
            slots: MAX_SLOTS,
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
                size("xe_routes_v4")?,
                size("xe_routes_v6")?,
                size("xe_slots")?,
            ) {
                (Some(routes_v4), Some(routes_v6), Some(slots)) => Some(MapSizes {
                    routes_v4,
                    routes_v6,
                    slots,
                }),
                _ => None,
            },
        )
    }
}

/// What one BPF_PROG_TEST_RUN returned.
#[derive(Debug, Clone, Copy)]
pub struct RunOutput {
    /// XDP return code.
    pub action: u32,
    /// Bytes written to the output buffer.
    pub len: usize,
    /// Kernel-measured time per repetition.
    pub duration: Duration,
}

/// XDP attach mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic (skb) mode where the driver has none.
    Auto,
    Native,
    Generic,
}

const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// An XDP program attached to an interface through a BPF link.
#[derive(Debug)]
pub struct XdpLink {
    fd: OwnedFd,
    pub ifindex: u32,
    /// "native" or "generic"; "pinned" for a link opened from bpffs.
    pub mode: &'static str,
}

impl XdpLink {
    /// Pins the link so it outlives this process.
    pub fn pin(&self, path: &Path) -> Result<()> {
        let c = cpath(path)?;
        // SAFETY: valid fd and NUL-terminated path.
        let rc = unsafe { libbpf_sys::bpf_obj_pin(self.fd.as_raw_fd(), c.as_ptr()) };
        if rc < 0 {
            return Err(Error::Pin {
                what: "pinning XDP link at",
                path: path.to_owned(),
                source: std::io::Error::from_raw_os_error(-rc),
            });
        }
        Ok(())
    }

    /// Opens a link pinned earlier (by this or a previous process).
    pub fn open_pinned(path: &Path, ifindex: u32) -> Result<Self> {
        let c = cpath(path)?;
        // SAFETY: NUL-terminated path.
        let fd = unsafe { libbpf_sys::bpf_obj_get(c.as_ptr()) };
        if fd < 0 {
            return Err(Error::Pin {
                what: "opening pinned XDP link",
                path: path.to_owned(),
                source: std::io::Error::from_raw_os_error(-fd),
            });
        }
        // SAFETY: bpf_obj_get returned a fresh fd we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(XdpLink {
            fd,
            ifindex,
            mode: "pinned",
        })
    }

    /// Atomically replaces the program behind the link.
    pub fn update_program(&self, dp: &Dataplane) -> Result<()> {
        // SAFETY: both fds are valid; null opts means no expected old program.
        let rc = unsafe {
            libbpf_sys::bpf_link_update(
                self.fd.as_raw_fd(),
                dp.prog_fd().as_raw_fd(),
                std::ptr::null(),
            )
        };
        if rc < 0 {
            return Err(Error::AttachMode {
                ifindex: self.ifindex,
                mode: "link update",
                source: std::io::Error::from_raw_os_error(-rc),
            });
        }
        Ok(())
    }

    /// The interface the link holds the program on; None once the interface
    /// is gone (the kernel then detached it) or the link was detached.
    pub fn attached_ifindex(&self) -> Result<Option<u32>> {
        let mut info = libbpf_sys::bpf_link_info::default();
        let mut len = std::mem::size_of::<libbpf_sys::bpf_link_info>() as u32;
        // SAFETY: valid link fd and an out-struct of the size given.
        let rc = unsafe {
            libbpf_sys::bpf_link_get_info_by_fd(self.fd.as_raw_fd(), &mut info, &mut len)
        };
        if rc < 0 {
            return Err(Error::AttachMode {
                ifindex: self.ifindex,
                mode: "link info",
                source: std::io::Error::from_raw_os_error(-rc),
            });
        }
        // SAFETY: an XDP link's info fills the xdp member of the union.
        let ifindex = unsafe { info.__bindgen_anon_1.xdp.ifindex };
        Ok((ifindex != 0).then_some(ifindex))
    }

    /// Detaches the program from the interface now, even if the link is pinned.
    pub fn detach(self) -> Result<()> {
        // SAFETY: valid link fd.
        let rc = unsafe { libbpf_sys::bpf_link_detach(self.fd.as_raw_fd()) };
        if rc < 0 {
            return Err(Error::AttachMode {
                ifindex: self.ifindex,
                mode: "detach",
                source: std::io::Error::from_raw_os_error(-rc),
            });
        }
        Ok(())
    }
}

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Error::Pin {
        what: "path with a NUL byte",
        path: path.to_owned(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

/// Resolves an interface name to its ifindex.
pub fn ifindex_of(name: &str) -> Result<u32> {
    let c = CString::new(name).map_err(|_| Error::NoSuchInterface(name.to_owned()))?;
    // SAFETY: NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(Error::NoSuchInterface(name.to_owned()));
    }
    Ok(idx)
}

/// The clock of the bucket stamps at one moment: the kernel's jiffies (low
/// 32 bits) and its tick rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StampClock {
    pub jiffies: u32,
    pub hz: u32,
}

impl StampClock {
    /// When a slot stamped `stamp` was last used, in ms of a clock that reads
    /// `now_ms` at this moment; None if never. A use anywhere in a jiffy
    /// counts as at its end (when in doubt a bucket is busy), and a stamp
    /// written after the clock was read (up to a minute: a long sync) counts
    /// as now. Ages are taken modulo 2^32 jiffies, so a stamp further
    /// "ahead" is an old one whose age wrapped (over 2^31 jiffies), not a
    /// busy one; a stamp 2^32 jiffies old reads as new (49.7 days at HZ=1000).
    pub fn last_used_ms(&self, stamp: u32, now_ms: u64) -> Option<u64> {
        if stamp == 0 {
            return None;
        }
        if stamp.wrapping_sub(self.jiffies) <= self.hz.saturating_mul(60) {
            return Some(now_ms);
        }
        let age = self.jiffies.wrapping_sub(stamp);
        Some(now_ms.saturating_sub(u64::from(age) * 1000 / u64::from(self.hz)))
    }
}

/// Reads the last-used stamps of slots through its own map handle.
pub struct StampReader {
    map: libbpf_rs::MapHandle,
}

impl StampReader {
    /// Last-used stamp of a slot (jiffies | 1; 0: never used).
    pub fn get(&self, slot: u32) -> u32 {
        self.map
            .lookup(&slot.to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()
            .and_then(|b| read_from(&b))
            .unwrap_or(0)
    }
}

/// The loaded XDP program and its maps.
pub struct Dataplane {
    /// xe_groups and xe_slots mapped into this process: a group entry is
    /// replaced with one 8-byte store, a slot with one 4-byte store.
    pub(crate) groups: MmapCells,
    slots: MmapCells,
    /// When what packets may still hold can be reused.
    grace: GracePeriods,
    /// The sizes the maps were made (or found pinned) with.
    sizes: MapSizes,
    /// The IPv4 DIR-24-8 tables, mapped on the first IPv4 route write (and
    /// then checked against the LPM trie if the maps may come from a pin).
    dir: Option<Dir248<MmapCells>>,
    /// Maps may have been reused from a pin directory.
    pinned: bool,
    /// The kernel's tick rate, measured on first use of the stamp clock.
    hz: Option<u32>,
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

fn map_err(map: &'static str, op: &'static str) -> impl FnOnce(libbpf_rs::Error) -> Error {
    move |source| Error::Map { map, op, source }
}

impl Dataplane {
    /// Opens, configures and loads the program (not yet attached anywhere).
    pub fn load(opts: &LoadOptions) -> Result<Self> {
        let storage: *mut MaybeUninit<OpenObject> = Box::into_raw(Box::new(MaybeUninit::uninit()));
        // SAFETY: storage lives until Drop, after the skeleton that borrows it.
        let storage_ref: &'static mut MaybeUninit<OpenObject> = unsafe { &mut *storage };
        let result = open_and_load(storage_ref, opts).and_then(|(skel, sizes)| {
            let groups = MmapCells::map(&skel.maps.xe_groups, "xe_groups", MAX_GROUPS as usize, 8)?;
            let slots = MmapCells::map(&skel.maps.xe_slots, "xe_slots", sizes.slots as usize, 8)?;
            Ok((skel, sizes, groups, slots, GracePeriods::kernel()?))
        });
        match result {
            Ok((skel, sizes, groups, slots, grace)) => Ok(Dataplane {
                groups,
                slots,
                grace,
                sizes,
                dir: None,
                pinned: opts.pin_dir.is_some(),
                hz: None,
                skel: ManuallyDrop::new(skel),
                storage,
            }),
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

    /// Attaches the program to `ifindex` through a BPF link.
    pub fn attach(&self, ifindex: u32, mode: AttachMode) -> Result<XdpLink> {
        let try_mode = |flags: u32| -> std::io::Result<OwnedFd> {
            let opts = libbpf_sys::bpf_link_create_opts {
                sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _,
                flags,
                ..Default::default()
            };
            // SAFETY: valid prog fd; for XDP the target is the ifindex.
            let fd = unsafe {
                libbpf_sys::bpf_link_create(
                    self.prog_fd().as_raw_fd(),
                    ifindex as i32,
                    libbpf_sys::BPF_XDP,
                    &opts,
                )
            };
            if fd < 0 {
                return Err(std::io::Error::from_raw_os_error(-fd));
            }
            // SAFETY: fresh fd owned from here on.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let link = |fd, mode| XdpLink { fd, ifindex, mode };
        match mode {
            AttachMode::Native => try_mode(XDP_FLAGS_DRV_MODE)
                .map(|fd| link(fd, "native"))
                .map_err(|source| Error::AttachMode {
                    ifindex,
                    mode: "native",
                    source,
                }),
            AttachMode::Generic => try_mode(XDP_FLAGS_SKB_MODE)
                .map(|fd| link(fd, "generic"))
                .map_err(|source| Error::AttachMode {
                    ifindex,
                    mode: "generic",
                    source,
                }),
            AttachMode::Auto => match try_mode(XDP_FLAGS_DRV_MODE) {
                Ok(fd) => Ok(link(fd, "native")),
                Err(native) => match try_mode(XDP_FLAGS_SKB_MODE) {
                    Ok(fd) => Ok(link(fd, "generic")),
                    Err(generic) => Err(Error::Attach {
                        ifindex,
                        native,
                        generic,
                    }),
                },
            },
        }
    }

    /// Runs the program once on `input` (BPF_PROG_TEST_RUN); the frame as the
    /// program left it lands in `out`.
    pub fn test_run(&self, input: &[u8], out: &mut [u8]) -> Result<RunOutput> {
        self.test_run_repeat(input, out, 1)
    }

    /// Runs the program `repeat` times on `input`. Note that the kernel feeds
    /// the rewritten frame back on each repetition.
    pub fn test_run_repeat(&self, input: &[u8], out: &mut [u8], repeat: u32) -> Result<RunOutput> {
        self.test_run_from(0, input, out, repeat)
    }

    /// Runs the program `repeat` times on `input` as received on `ingress_ifindex` (0: none).
    pub fn test_run_from(
        &self,
        ingress_ifindex: u32,
        input: &[u8],
        out: &mut [u8],
        repeat: u32,
    ) -> Result<RunOutput> {
        test_run_prog(
            &self.skel.progs.xdp_ecmp,
            ingress_ifindex,
            input,
            out,
            repeat,
        )
    }
}

/// BPF_PROG_TEST_RUN of any XDP program, optionally with an ingress ifindex
/// in the context (a FIB lookup needs one).
pub fn test_run_prog(
    prog: &libbpf_rs::ProgramMut<'_>,
    ingress_ifindex: u32,
    input: &[u8],
    out: &mut [u8],
    repeat: u32,
) -> Result<RunOutput> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let mut ctx = [0u32; 6];
    ctx[1] = input.len() as u32;
    ctx[3] = ingress_ifindex;
    let mut ctx_bytes: Vec<u8> = ctx.iter().flat_map(|v| v.to_ne_bytes()).collect();
    let pi = ProgramInput {
        data_in: Some(input),
        data_out: Some(out),
        context_in: (ingress_ifindex != 0).then_some(&mut ctx_bytes[..]),
        repeat,
        ..Default::default()
    };
    let o = prog.test_run(pi).map_err(Error::TestRun)?;
    Ok(RunOutput {
        action: o.return_value,
        len: o.data.map_or(0, |d| d.len()),
        duration: o.duration,
    })
}

impl Dataplane {
    /// The last decision recorded on `cpu` (needs `trace_decisions`).
    pub fn last_decision(&self, cpu: usize) -> Result<xe_decision> {
        let per_cpu = self
            .skel
            .maps
            .xe_trace
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(map_err("xe_trace", "lookup"))?
            .unwrap_or_default();
        Ok(per_cpu
            .get(cpu)
            .and_then(|b| read_from(b))
            .unwrap_or_default())
    }

    fn update<K: Copy, V: Copy>(
        map: &MapMut<'_>,
        name: &'static str,
        key: &K,
        val: &V,
    ) -> Result<()> {
        map.update(bytes_of(key), bytes_of(val), MapFlags::ANY)
            .map_err(map_err(name, "update"))
    }

    fn delete<K: Copy>(map: &MapMut<'_>, name: &'static str, key: &K) -> Result<()> {
        map.delete(bytes_of(key)).map_err(map_err(name, "delete"))
    }

    fn lookup<K: Copy, V: Copy>(
        map: &MapMut<'_>,
        name: &'static str,
        key: &K,
    ) -> Result<Option<V>> {
        let v = map
            .lookup(bytes_of(key), MapFlags::ANY)
            .map_err(map_err(name, "lookup"))?;
        Ok(v.and_then(|b| read_from(&b)))
    }

    /// The IPv4 route stored under exactly this prefix.
    pub fn route_v4(&self, addr: Ipv4Addr, len: u8) -> Result<Option<xe_route>> {
        check_prefix("IPv4", len, 32)?;
        Self::lookup(
            &self.skel.maps.xe_routes_v4,
            "xe_routes_v4",
            &lpm_v4(addr, len),
        )
    }

    /// The DIR-24-8 tables, mapped on first use; with maps that may come from
    /// a pin, their contents are first checked against the routes in the LPM
    /// trie (the record) and every /24 that differs is rewritten.
    fn dir(&mut self) -> Result<&mut Dir248<MmapCells>> {
        self.adopt_lookup_tables()?;
        Ok(self.dir.as_mut().expect("just set"))
    }

    /// The DIR-24-8 tables mapped into this process.
    pub(crate) fn dir_cells(&self) -> Result<(MmapCells, MmapCells)> {
        let tbl24 = MmapCells::map(&self.skel.maps.xe_tbl24, "xe_tbl24", TBL24_ENTRIES, 4)?;
        let tbl8 = MmapCells::map(
            &self.skel.maps.xe_tbl8,
            "xe_tbl8",
            (MAX_DIR_CHUNKS * DIR_CHUNK_SIZE) as usize,
            4,
        )?;
        Ok((tbl24, tbl8))
    }

    /// The IPv4 routes of the trie (the record) as (address, length, route).
    fn trie_routes_v4(&self) -> Result<Vec<(u32, u8, xe_route)>> {
        Ok(self
            .routes_v4()?
            .into_iter()
            .map(|(a, l, r)| (u32::from(a), l, r))
            .collect())
    }

    /// Takes over the IPv4 lookup tables now rather than at the first IPv4
    /// route write, so a program attached over maps from a pin (a previous
    /// run, or a version that kept routes only in the trie) never reads
    /// tables that disagree with the trie. Returns how many /24s had to be
    /// rewritten (0 when called again).
    pub fn adopt_lookup_tables(&mut self) -> Result<usize> {
        let mut repaired = 0;
        if self.dir.is_none() {
            let (tbl24, tbl8) = self.dir_cells()?;
            let mut dir = Dir248::new(tbl24, tbl8, self.grace.clone());
            if self.pinned {
                repaired = dir.adopt(&self.trie_routes_v4()?)?;
            }
            self.dir = Some(dir);
        }
        Ok(repaired)
    }

    /// The /24s where the DIR-24-8 tables packets use disagree with the
    /// routes in the LPM trie (the record); empty when consistent. Only
    /// reads, so it can check tables another process writes.
    pub fn dir_differences(&self) -> Result<Vec<Ipv4Addr>> {
        let (tbl24, tbl8) = self.dir_cells()?;
        Ok(Dir248::new(tbl24, tbl8, GracePeriods::immediate())
            .differences(&self.trie_routes_v4()?)?
            .into_iter()
            .map(|i| Ipv4Addr::from((i as u32) << 8))
            .collect())
    }

    /// Kernel-reported memory of each map (fdinfo `memlock`), by map name.
    pub fn map_memory(&self) -> Vec<(String, u64)> {
        let maps: [(&str, &MapMut<'_>); 11] = [
            ("xe_routes_v4", &self.skel.maps.xe_routes_v4),
            ("xe_tbl24", &self.skel.maps.xe_tbl24),
            ("xe_tbl8", &self.skel.maps.xe_tbl8),
            ("xe_routes_v6", &self.skel.maps.xe_routes_v6),
            ("xe_groups", &self.skel.maps.xe_groups),
            ("xe_slots", &self.skel.maps.xe_slots),
            ("xe_slot_used", &self.skel.maps.xe_slot_used),
            ("xe_nexthops", &self.skel.maps.xe_nexthops),
            ("xe_nh_stats", &self.skel.maps.xe_nh_stats),
            ("xe_txports", &self.skel.maps.xe_txports),
            ("xe_inports", &self.skel.maps.xe_inports),
        ];
        maps.iter()
            .filter_map(|(n, m)| Some((n.to_string(), m.query_fdinfo().ok()?.memlock?)))
            .collect()
    }

    /// Every IPv4 route in the map (prefix, length, route).
    pub fn routes_v4(&self) -> Result<Vec<(Ipv4Addr, u8, xe_route)>> {
        let map = &self.skel.maps.xe_routes_v4;
        let mut out = Vec::new();
        for k in map.keys() {
            let Some(key) = read_from::<xe_lpm_v4>(&k) else {
                continue;
            };
            if let Some(r) = Self::lookup::<_, xe_route>(map, "xe_routes_v4", &key)? {
                out.push((Ipv4Addr::from(key.addr), key.prefixlen as u8, r));
            }
        }
        Ok(out)
    }

    /// Every IPv6 route in the map (prefix, length, route).
    pub fn routes_v6(&self) -> Result<Vec<(Ipv6Addr, u8, xe_route)>> {
        let map = &self.skel.maps.xe_routes_v6;
        let mut out = Vec::new();
        for k in map.keys() {
            let Some(key) = read_from::<xe_lpm_v6>(&k) else {
                continue;
            };
            if let Some(r) = Self::lookup::<_, xe_route>(map, "xe_routes_v6", &key)? {
                out.push((Ipv6Addr::from(key.addr), key.prefixlen as u8, r));
            }
        }
        Ok(out)
    }

    pub fn group(&self, id: u32) -> Result<xe_group> {
        check_range("group id", id, crate::abi::MAX_GROUPS)?;
        Ok(Self::lookup(&self.skel.maps.xe_groups, "xe_groups", &id)?.unwrap_or_default())
    }

    /// Next-hop ids in slots [base, base + count).
    pub fn slots(&self, base: u32, count: u32) -> Result<Vec<u32>> {
        check_slots(base, count as usize, self.sizes.slots)?;
        (base..base + count)
            .map(|i| Ok(Self::lookup(&self.skel.maps.xe_slots, "xe_slots", &i)?.unwrap_or(0)))
            .collect()
    }

    pub fn nexthop(&self, id: u32) -> Result<xe_nexthop> {
        check_range("next-hop id", id, MAX_NEXTHOPS)?;
        Ok(Self::lookup(&self.skel.maps.xe_nexthops, "xe_nexthops", &id)?.unwrap_or_default())
    }

    /// Every ingress port the program admits frames from: (ifindex, entry),
    /// by ifindex.
    pub fn inports(&self) -> Result<Vec<(u32, xe_inport)>> {
        let map = &self.skel.maps.xe_inports;
        let mut out = Vec::new();
        for k in map.keys() {
            let Some(ifindex) = read_from::<u32>(&k) else {
                continue;
            };
            if let Some(p) = Self::lookup::<_, xe_inport>(map, "xe_inports", &ifindex)? {
                out.push((ifindex, p));
            }
        }
        out.sort_by_key(|(i, _)| *i);
        Ok(out)
    }

    pub fn config(&self) -> Result<xe_config> {
        Ok(Self::lookup(&self.skel.maps.xe_config, "xe_config", &0u32)?.unwrap_or_default())
    }

    /// The kernel's jiffies now, the clock the program stamps buckets with
    /// (their low 32 bits): the xe_clock program, run once, records it.
    pub fn jiffies(&self) -> Result<u64> {
        let frame = [0u8; 64];
        let mut out = [0u8; 64];
        test_run_prog(&self.skel.progs.xe_clock, 0, &frame, &mut out, 1)?;
        let bss = self
            .skel
            .maps
            .bss_data
            .as_deref()
            .ok_or(Error::Clock("the program's .bss is not mapped"))?;
        // SAFETY: a plain u64 of the program's .bss mapping; the kernel wrote it.
        Ok(unsafe { std::ptr::read_volatile(&bss.xe_clock_jiffies) })
    }

    /// The stamp clock now: jiffies and the kernel's tick rate, which is
    /// measured (jiffies against CLOCK_MONOTONIC over ~100 ms) on first use
    /// and kept.
    pub fn stamp_clock(&mut self) -> Result<StampClock> {
        let hz = match self.hz {
            Some(hz) => hz,
            None => {
                let hz = self.measure_hz(Duration::from_millis(100))?;
                self.hz = Some(hz);
                hz
            }
        };
        Ok(StampClock {
            jiffies: self.jiffies()? as u32,
            hz,
        })
    }

    fn measure_hz(&self, over: Duration) -> Result<u32> {
        let t0 = std::time::Instant::now();
        let j0 = self.jiffies()?;
        std::thread::sleep(over);
        let j1 = self.jiffies()?;
        let rate = (j1.wrapping_sub(j0)) as f64 / t0.elapsed().as_secs_f64();
        let hz = [100u32, 250, 300, 1000]
            .into_iter()
            .min_by(|a, b| {
                (f64::from(*a) - rate)
                    .abs()
                    .total_cmp(&(f64::from(*b) - rate).abs())
            })
            .expect("candidates");
        if (rate / f64::from(hz) - 1.0).abs() > 0.15 {
            return Err(Error::Clock(
                "jiffies advance at a rate that is no known HZ (100, 250, 300, 1000)",
            ));
        }
        Ok(hz)
    }

    /// A separate read handle on the slot stamps, usable while the maps are written.
    pub fn stamp_reader(&self) -> Result<StampReader> {
        let map = libbpf_rs::MapHandle::try_from(&self.skel.maps.xe_slot_used)
            .map_err(map_err("xe_slot_used", "dup"))?;
        Ok(StampReader { map })
    }

    /// Last-used stamp of a slot: jiffies (low 32 bits, | 1), 0 = never.
    pub fn slot_used(&self, slot: u32) -> Result<u32> {
        check_range("slot", slot, MAX_SLOTS)?;
        let v = self
            .skel
            .maps
            .xe_slot_used
            .lookup(&slot.to_ne_bytes(), MapFlags::ANY)
            .map_err(map_err("xe_slot_used", "lookup"))?;
        Ok(v.and_then(|b| read_from(&b)).unwrap_or(0))
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
                Ok((*v, c))
            })
            .collect()
    }

    /// Packets and bytes forwarded to a next hop, summed over CPUs.
    pub fn nexthop_counter(&self, id: u32) -> Result<xe_counter> {
        check_range("next-hop id", id, MAX_NEXTHOPS)?;
        sum_percpu(&self.skel.maps.xe_nh_stats, "xe_nh_stats", id)
    }
}

fn open_and_load(
    storage: &'static mut MaybeUninit<OpenObject>,
    opts: &LoadOptions,
) -> Result<(XdpEcmpSkel<'static>, MapSizes)> {
    let mut open = XdpEcmpSkelBuilder::default()
        .open(storage)
        .map_err(|source| Error::Load { source })?;
    if let Some(rodata) = open.maps.rodata_data.as_deref_mut() {
        rodata.trace_decisions = u8::from(opts.trace_decisions);
        rodata.stamp_mode = opts.stamp_mode as u8;
        rodata.count_packets = u8::from(!opts.no_counters);
        rodata.admit_any = u8::from(opts.admit_any);
    }
    let mut sizes = opts.sizes.unwrap_or_default();
    if let Some(dir) = &opts.pin_dir {
        crate::pins::ensure_bpffs(dir)?;
        crate::pins::check_layout(dir)?;
        if let Some(pinned) = MapSizes::pinned(dir)? {
            if let Some(want) = opts.sizes.filter(|w| *w != pinned) {
                return Err(Error::Sizes {
                    dir: dir.clone(),
                    pinned: format!("{pinned:?}"),
                    want: format!("{want:?}"),
                });
            }
            sizes = pinned;
        }
    }
    sizes.check()?;
    for mut map in open.open_object_mut().maps_mut() {
        let size = match map.name().to_str() {
            Some("xe_routes_v4") => sizes.routes_v4,
            Some("xe_routes_v6") => sizes.routes_v6,
            Some("xe_slots" | "xe_slot_used") => sizes.slots,
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
            if name.contains('.') {
                continue; // .rodata: per program, never shared
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
    Ok((skel, sizes))
}

impl TableWriter for Dataplane {
    /// The trie (the record) first, then the DIR-24-8 tables packets use;
    /// a full chunk table fails before either is written.
    fn set_route_v4(&mut self, addr: Ipv4Addr, len: u8, route: &xe_route) -> Result<()> {
        check_prefix("IPv4", len, 32)?;
        check_route_v4(route)?;
        self.dir()?.check_room(u32::from(addr), len)?;
        let key = lpm_v4(addr, len);
        Self::update(&self.skel.maps.xe_routes_v4, "xe_routes_v4", &key, route)?;
        self.dir()?.add(u32::from(addr), len, route)
    }

    fn delete_route_v4(&mut self, addr: Ipv4Addr, len: u8) -> Result<()> {
        check_prefix("IPv4", len, 32)?;
        let key = lpm_v4(addr, len);
        Self::delete(&self.skel.maps.xe_routes_v4, "xe_routes_v4", &key)?;
        self.dir()?.delete(u32::from(addr), len);
        Ok(())
    }

    fn set_route_v6(&mut self, addr: Ipv6Addr, len: u8, route: &xe_route) -> Result<()> {
        check_prefix("IPv6", len, 128)?;
        let key = lpm_v6(addr, len);
        Self::update(&self.skel.maps.xe_routes_v6, "xe_routes_v6", &key, route)
    }

    fn delete_route_v6(&mut self, addr: Ipv6Addr, len: u8) -> Result<()> {
        check_prefix("IPv6", len, 128)?;
        let key = lpm_v6(addr, len);
        Self::delete(&self.skel.maps.xe_routes_v6, "xe_routes_v6", &key)
    }

    /// One 8-byte store (Release: the window's slots, written before, are
    /// visible first); the program reads the entry with one 8-byte load.
    fn set_group(&mut self, id: u32, group: &xe_group) -> Result<()> {
        check_group(id, group, self.sizes.slots)?;
        let word = u64::from_ne_bytes(bytes_of(group).try_into().expect("8-byte xe_group"));
        self.groups.word(id as usize).store(word, Ordering::Release);
        Ok(())
    }

    fn set_slots(&mut self, base: u32, nexthops: &[u32]) -> Result<()> {
        check_slots(base, nexthops.len(), self.sizes.slots)?;
        for (i, nh) in nexthops.iter().enumerate() {
            // Release: the next hop it names is written before.
            self.slots
                .cell(base as usize + i)
                .store(*nh, Ordering::Release);
        }
        Ok(())
    }

    fn set_nexthop(&mut self, id: u32, nh: &xe_nexthop) -> Result<()> {
        check_range("next-hop id", id, MAX_NEXTHOPS)?;
        Self::update(&self.skel.maps.xe_nexthops, "xe_nexthops", &id, nh)
    }

    fn add_txport(&mut self, ifindex: u32) -> Result<()> {
        Self::update(&self.skel.maps.xe_txports, "xe_txports", &ifindex, &ifindex)
    }

    fn remove_txport(&mut self, ifindex: u32) -> Result<()> {
        Self::delete(&self.skel.maps.xe_txports, "xe_txports", &ifindex)
    }

    /// Replaces the whole entry at once (a hash map swaps in a new
    /// element): a packet reads the old entry or the new one.
    fn set_inport(&mut self, ifindex: u32, port: &xe_inport) -> Result<()> {
        Self::update(&self.skel.maps.xe_inports, "xe_inports", &ifindex, port)
    }

    fn remove_inport(&mut self, ifindex: u32) -> Result<()> {
        match self.skel.maps.xe_inports.delete(bytes_of(&ifindex)) {
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
            r => r.map_err(map_err("xe_inports", "delete")),
        }
    }

    fn set_config(&mut self, cfg: &xe_config) -> Result<()> {
        Self::update(&self.skel.maps.xe_config, "xe_config", &0u32, cfg)
    }

    fn grace(&self) -> GracePeriods {
        self.grace.clone()
    }
}

fn lpm_v4(addr: Ipv4Addr, prefix_len: u8) -> xe_lpm_v4 {
    xe_lpm_v4 {
        prefixlen: prefix_len.into(),
        addr: addr.octets(),
    }
}

fn lpm_v6(addr: Ipv6Addr, prefix_len: u8) -> xe_lpm_v6 {
    xe_lpm_v6 {
        prefixlen: prefix_len.into(),
        addr: addr.octets(),
    }
}

/// Packets and bytes per verdict from the counter map pinned in `pin_dir`,
/// summed over CPUs (no program load needed). `forward` leaves out the
/// redirected frames the kernel refused (their packets; their bytes, which
/// the kernel does not report, stay in).
pub fn pinned_verdict_counters(pin_dir: &Path) -> Result<Vec<(Verdict, xe_counter)>> {
    let path = pin_dir.join("xe_verdicts");
    let map = libbpf_rs::MapHandle::from_pinned_path(&path).map_err(|e| Error::Pin {
        what: "opening pinned map (is xdp-ecmp attached with this --pin-dir?)",
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let failed = crate::txfail::pinned_tx_failures(pin_dir)?;
    Verdict::ALL
        .iter()
        .map(|v| {
            let mut c = sum_percpu(&map, "xe_verdicts", *v as u32)?;
            if *v == Verdict::Forward {
                c.packets = c.packets.saturating_sub(failed);
            }
            Ok((*v, c))
        })
        .collect()
}

/// Removes the ingress port entry of `ifindex` from the map pinned in
/// `pin_dir` (no program load needed): frames received there go to the
/// kernel. Nothing to do if there is none.
pub fn pinned_remove_inport(pin_dir: &Path, ifindex: u32) -> Result<()> {
    let path = pin_dir.join("xe_inports");
    let map = libbpf_rs::MapHandle::from_pinned_path(&path).map_err(|e| Error::Pin {
        what: "opening pinned map",
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    match map.delete(&ifindex.to_ne_bytes()) {
        Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
        r => r.map_err(map_err("xe_inports", "delete")),
    }
}

/// Packets and bytes forwarded to each of `ids`, from the pinned per-next-hop map.
pub fn pinned_nexthop_counters(pin_dir: &Path, ids: &[u32]) -> Result<Vec<(u32, xe_counter)>> {
    let path = pin_dir.join("xe_nh_stats");
    let map = libbpf_rs::MapHandle::from_pinned_path(&path).map_err(|e| Error::Pin {
        what: "opening pinned map",
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    ids.iter()
        .map(|id| Ok((*id, sum_percpu(&map, "xe_nh_stats", *id)?)))
        .collect()
}

fn sum_percpu(map: &dyn MapCore, name: &'static str, key: u32) -> Result<xe_counter> {
    let per_cpu = map
        .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)
        .map_err(map_err(name, "lookup"))?
        .unwrap_or_default();
    let mut sum = xe_counter::default();
    for c in per_cpu.iter().filter_map(|b| read_from::<xe_counter>(b)) {
        sum.packets += c.packets;
        sum.bytes += c.bytes;
    }
    Ok(sum)
}

/// Pins the calling thread to `cpu`, so that a test run and the per-CPU
/// trace entry it writes are on the same CPU.
pub fn pin_thread_to_cpu(cpu: usize) -> std::io::Result<()> {
    // SAFETY: plain libc calls on a zeroed cpu_set_t.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The CPU the calling thread runs on now.
pub fn current_cpu() -> usize {
    // SAFETY: no arguments, no memory.
    let c = unsafe { libc::sched_getcpu() };
    usize::try_from(c).unwrap_or(0)
}

#[cfg(test)]
mod stamp_clock_tests {
    use super::StampClock;

    #[test]
    fn stamps_convert_to_the_daemons_clock() {
        let c = StampClock {
            jiffies: 1_000_001,
            hz: 250,
        };
        let now = 5_000_000u64; // ms
        assert_eq!(c.last_used_ms(0, now), None, "never used");
        assert_eq!(c.last_used_ms(1_000_001, now), Some(now), "this jiffy: now");
        // 250 jiffies at 250 Hz: one second ago.
        assert_eq!(c.last_used_ms(1_000_001 - 250, now), Some(now - 1000));
        // Stamped after the clock was read (the | 1 can be a jiffy ahead): now.
        assert_eq!(c.last_used_ms(1_000_002, now), Some(now));
        // Across the 32-bit wrap.
        let w = StampClock {
            jiffies: 5,
            hz: 1000,
        };
        assert_eq!(w.last_used_ms(u32::MAX - 4, now), Some(now - 10));
    }
}
