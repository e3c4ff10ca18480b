//! What the reconciler hands out: ids of a map, windows of the slot pool, and the record of when each window was written (so a reused window's old stamps are not read as its new group's).

use std::collections::BTreeMap;

/// First-fit allocator of windows in the slot pool.
#[derive(Debug, Clone)]
pub struct SlotPool {
    /// Free windows: start -> length.
    free: BTreeMap<u32, u32>,
}

impl SlotPool {
    /// A pool of `slots` slots, all free.
    pub fn new(slots: u32) -> Self {
        SlotPool {
            free: BTreeMap::from([(0, slots)]),
        }
    }

    pub fn alloc(&mut self, size: u32) -> Option<u32> {
        let size = size.max(1);
        let (&start, &len) = self.free.iter().find(|(_, l)| **l >= size)?;
        self.free.remove(&start);
        if len > size {
            self.free.insert(start + size, len - size);
        }
        Some(start)
    }

    /// Marks [start, start + size) as taken (a window found in adopted maps).
    pub fn reserve(&mut self, start: u32, size: u32) -> bool {
        let size = size.max(1);
        let Some((&s, &l)) = self.free.range(..=start).next_back() else {
            return false;
        };
        if s + l < start + size {
            return false;
        }
        self.free.remove(&s);
        if start > s {
            self.free.insert(s, start - s);
        }
        if s + l > start + size {
            self.free.insert(start + size, s + l - start - size);
        }
        true
    }

    pub fn release(&mut self, start: u32, size: u32) {
        let size = size.max(1);
        let mut start = start;
        let mut len = size;
        if let Some((&s, &l)) = self.free.range(..start).next_back() {
            if s + l == start {
                self.free.remove(&s);
                start = s;
                len += l;
            }
        }
        if let Some(&l) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            len += l;
        }
        self.free.insert(start, len);
    }
}

/// Small ids handed out and taken back (0 is never used: it means "none").
#[derive(Debug, Clone)]
pub struct IdPool {
    next: u32,
    max: u32,
    free: Vec<u32>,
}

impl IdPool {
    /// Ids 1..max (a map of `max` entries).
    pub fn new(max: u32) -> Self {
        IdPool {
            next: 1,
            max,
            free: Vec::new(),
        }
    }

    pub fn alloc(&mut self) -> Option<u32> {
        if let Some(id) = self.free.pop() {
            return Some(id);
        }
        (self.next < self.max).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    pub fn release(&mut self, id: u32) {
        self.free.push(id);
    }

    /// Marks `id` as taken (found in adopted maps).
    pub fn reserve(&mut self, id: u32) {
        if id == 0 || id >= self.max {
            return;
        }
        if id >= self.next {
            self.free.extend(self.next..id);
            self.next = id + 1;
        } else {
            self.free.retain(|f| *f != id);
        }
    }
}

/// A stamp this much older than its window may still be the window's own
/// (two jiffies at HZ=100: stamps are read at jiffy resolution, the
/// daemon's clock is a coarse one); counting it keeps a bucket busy when in
/// doubt.
const STAMP_SLACK_MS: u64 = 20;

/// One writing of a slot window: where, how long, when (the reconciler's
/// clock), and a number no other writing shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub base: u32,
    pub len: u32,
    pub written_at: u64,
    generation: u64,
}

impl Window {
    /// A window whose stamps are never read: for a table kept while its
    /// group could not be written.
    pub fn none() -> Window {
        Window {
            base: 0,
            len: 0,
            written_at: u64::MAX,
            generation: 0,
        }
    }
}

/// The latest writing of every part of the slot pool. The program stamps a
/// slot when a packet uses it and nothing clears the stamp, so a window cut
/// from slots another group used holds that group's stamps: they count only
/// if they are not older than the window, and only while the window is the
/// latest written there.
#[derive(Debug, Clone, Default)]
pub struct Windows {
    latest: BTreeMap<u32, Window>,
    generation: u64,
}

impl Windows {
    /// Records that [base, base + len) was written at `at`; the windows it
    /// overlaps are gone.
    pub fn written(&mut self, base: u32, len: u32, at: u64) -> Window {
        let end = base + len.max(1);
        let overlapping: Vec<u32> = self
            .latest
            .range(..end)
            .rev()
            .take_while(|(_, w)| w.base + w.len.max(1) > base)
            .map(|(b, _)| *b)
            .collect();
        for b in overlapping {
            self.latest.remove(&b);
        }
        self.generation += 1;
        let w = Window {
            base,
            len,
            written_at: at,
            generation: self.generation,
        };
        self.latest.insert(base, w);
        w
    }

    /// The last use of bucket `i` of `w` that belongs to `w`: `last_used` of
    /// its slot, unless the stamp is older than the window or the slot has
    /// been written again since.
    pub fn last_used(
        &self,
        w: &Window,
        i: usize,
        last_used: &dyn Fn(u32) -> Option<u64>,
    ) -> Option<u64> {
        let slot = w.base + i as u32;
        let current = self
            .latest
            .range(..=slot)
            .next_back()
            .is_some_and(|(_, l)| l == w && slot < l.base + l.len);
        if !current {
            return None;
        }
        last_used(slot).filter(|t| t.saturating_add(STAMP_SLACK_MS) >= w.written_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_window_reads_only_its_own_stamps() {
        let mut ws = Windows::default();
        let old = ws.written(0, 8, 100);
        // Slot 3 was last used at 150 (by the old window's group).
        let stamps = |slot: u32| (slot == 3).then_some(150);
        assert_eq!(ws.last_used(&old, 3, &stamps), Some(150));
        // The slots go to a new window at 200: the stamp is the old group's.
        let new = ws.written(2, 8, 200);
        assert_eq!(
            ws.last_used(&new, 1, &stamps),
            None,
            "older than the window"
        );
        let close = |slot: u32| (slot == 3).then_some(190);
        assert_eq!(
            ws.last_used(&new, 1, &close),
            Some(190),
            "too close to tell: busy"
        );
        assert_eq!(
            ws.last_used(&old, 3, &stamps),
            None,
            "the old window was overwritten"
        );
        assert_eq!(ws.last_used(&old, 0, &stamps), None, "gone as a whole");
        let later = |slot: u32| (slot == 3).then_some(250);
        assert_eq!(ws.last_used(&new, 1, &later), Some(250));
    }

    #[test]
    fn pools_hand_out_what_they_hold() {
        let mut ids = IdPool::new(3);
        assert_eq!(
            (ids.alloc(), ids.alloc(), ids.alloc()),
            (Some(1), Some(2), None)
        );
        ids.release(1);
        assert_eq!(ids.alloc(), Some(1));
        let mut pool = SlotPool::new(10);
        assert_eq!(pool.alloc(6), Some(0));
        assert_eq!(pool.alloc(6), None, "4 slots left");
        pool.release(0, 6);
        assert_eq!(pool.alloc(10), Some(0), "released windows merge");
    }
}
