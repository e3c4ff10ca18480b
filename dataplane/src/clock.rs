//! The clock the program stamps resilient buckets with (jiffies), and reading the stamps.

use std::time::Duration;

use libbpf_rs::{MapCore, MapFlags};

use crate::abi::{read_from, MAX_SLOTS};
use crate::error::{Error, Result};
use crate::maps::map_err;
use crate::program::Dataplane;
use crate::tables::check_range;
use crate::testrun::test_run_prog;

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

impl Dataplane {
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
