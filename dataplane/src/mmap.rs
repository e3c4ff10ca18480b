//! BPF_F_MMAPABLE array maps mapped into this process: entries written with one aligned atomic store each, so the program never reads half of one.

use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::dir24::Cells;
use crate::error::{Error, Result};

/// `len` entries of an mmapped array, `stride` bytes apart: 4 for the
/// DIR-24-8 tables (1 KiB values read as one flat array of 32-bit entries),
/// 8 for maps of 4- or 8-byte values (an array pads each value to 8 bytes).
pub(crate) struct MmapCells {
    ptr: NonNull<u8>,
    len: usize,
    stride: usize,
    bytes: usize,
}

// SAFETY: the mapping is plain shared memory, valid until Drop; all access
// goes through atomics.
unsafe impl Send for MmapCells {}
unsafe impl Sync for MmapCells {}

impl MmapCells {
    pub(crate) fn map(
        map: &impl AsFd,
        name: &'static str,
        len: usize,
        stride: usize,
    ) -> Result<Self> {
        assert!(stride == 4 || stride == 8, "entries of 4 or 8 bytes");
        let bytes = (len * stride).next_multiple_of(4096);
        let err = |source: std::io::Error| Error::Map {
            map: name,
            op: "mmap",
            source: libbpf_rs::Error::from(source),
        };
        // SAFETY: a shared, fresh mapping of the map's fd; the kernel checks
        // the size against the map and that it was created mmapable.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.as_fd().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(err(std::io::Error::last_os_error()));
        }
        let ptr =
            NonNull::new(p.cast()).ok_or_else(|| err(std::io::Error::other("null mapping")))?;
        Ok(MmapCells {
            ptr,
            len,
            stride,
            bytes,
        })
    }

    /// The 32-bit entry `i` (the low half of an 8-byte one on little endian).
    pub(crate) fn cell(&self, i: usize) -> &AtomicU32 {
        assert!(i < self.len, "entry {i} past the map ({})", self.len);
        // SAFETY: in bounds of a live mapping; entries are `stride`-aligned.
        unsafe { &*self.ptr.as_ptr().add(i * self.stride).cast::<AtomicU32>() }
    }

    /// The 8 bytes at 32-bit entry `i` (even) of a map of 4-byte entries,
    /// as one word.
    pub(crate) fn cell64(&self, i: usize) -> &AtomicU64 {
        assert!(
            self.stride == 4 && i.is_multiple_of(2),
            "an 8-byte word of 4-byte entries"
        );
        assert!(i + 1 < self.len, "entry {i} past the map ({})", self.len);
        // SAFETY: in bounds of a live, page-aligned mapping; 8-byte aligned.
        unsafe { &*self.ptr.as_ptr().add(i * 4).cast::<AtomicU64>() }
    }

    /// The 64-bit entry `i` of an array of 8-byte values.
    pub(crate) fn word(&self, i: usize) -> &AtomicU64 {
        assert_eq!(self.stride, 8, "8-byte entries");
        assert!(i < self.len, "entry {i} past the map ({})", self.len);
        // SAFETY: in bounds of a live, page-aligned mapping of 8-byte entries.
        unsafe { &*self.ptr.as_ptr().add(i * 8).cast::<AtomicU64>() }
    }
}

impl Cells for MmapCells {
    fn get(&self, i: usize) -> u32 {
        self.cell(i).load(Ordering::Relaxed)
    }
    fn set(&mut self, i: usize, v: u32) {
        // Release: what the entry points to is visible before the entry.
        self.cell(i).store(v, Ordering::Release);
    }
    fn len(&self) -> usize {
        self.len
    }
}

impl crate::record::Words for MmapCells {
    fn get(&self, i: usize) -> u64 {
        self.word(i).load(Ordering::Relaxed)
    }
    fn set(&mut self, i: usize, v: u64) {
        self.word(i).store(v, Ordering::Release);
    }
    fn len(&self) -> usize {
        self.len
    }
    fn prefetch(&self, i: usize) {
        #[cfg(target_arch = "x86_64")]
        if i < self.len {
            // SAFETY: a prefetch of an address in a live mapping; it reads
            // nothing into the program and cannot fault.
            unsafe {
                std::arch::x86_64::_mm_prefetch(
                    self.ptr.as_ptr().add(i * 8).cast::<i8>(),
                    std::arch::x86_64::_MM_HINT_T0,
                );
            }
        }
    }
}

impl Drop for MmapCells {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.bytes) };
    }
}
