//! Flow pinning in the decision (the program's `xe_pin.h` and `xe_pin_note`): the flow-table key, ageing, and what a forwarded packet does to its entry.

use std::collections::HashMap;

use crate::abi::{
    xe_flow, xe_pin, PinEvent, HASH_DST_IP, HASH_DST_PORT, HASH_FLOWLABEL, HASH_IP_PROTO,
    HASH_POLICY_L4, HASH_SRC_IP, HASH_SRC_PORT, PIN_CLOSING, PIN_T_CLOSING, PIN_T_OTHER, PIN_T_TCP,
};

pub const TCP_FIN: u8 = 0x01;
pub const TCP_RST: u8 = 0x04;
const IPPROTO_TCP: u8 = 6;

/// A flow table as the program's `xe_flows`: entries by flow key.
pub trait FlowTable {
    fn get(&mut self, key: &xe_flow) -> Option<xe_pin>;
    fn put(&mut self, key: &xe_flow, pin: xe_pin);
    fn remove(&mut self, key: &xe_flow);
}

/// The flow table a decision reads and writes, and the clock it runs by.
pub struct Pins<'a> {
    pub table: &'a mut dyn FlowTable,
    /// Jiffies (low 32 bits), the program's `bpf_jiffies64()`.
    pub now: u32,
}

/// A flow table in memory, unbounded (the tests' model of `xe_flows`).
#[derive(Default, Debug, Clone)]
pub struct MemoryFlows(pub HashMap<[u8; 44], xe_pin>);

/// A flow key as the bytes a table is keyed by.
pub(crate) fn key_bytes(k: &xe_flow) -> [u8; 44] {
    let mut b = [0u8; 44];
    b.copy_from_slice(crate::abi::bytes_of(k));
    b
}

impl MemoryFlows {
    /// Every entry, by flow.
    pub fn entries(&self) -> Vec<(xe_flow, xe_pin)> {
        self.0
            .iter()
            .filter_map(|(k, p)| Some((crate::abi::read_from(k)?, *p)))
            .collect()
    }
}

impl FlowTable for MemoryFlows {
    fn get(&mut self, key: &xe_flow) -> Option<xe_pin> {
        self.0.get(&key_bytes(key)).copied()
    }
    fn put(&mut self, key: &xe_flow, pin: xe_pin) {
        self.0.insert(key_bytes(key), pin);
    }
    fn remove(&mut self, key: &xe_flow) {
        self.0.remove(&key_bytes(key));
    }
}

/// `xe_pin_key`: the flow's hashed fields, the others zeroed.
pub fn pin_key(f: &xe_flow, fields: u32) -> xe_flow {
    let fields = if fields == 0 { HASH_POLICY_L4 } else { fields };
    let on = |bit: u32| fields & bit != 0;
    xe_flow {
        src: if on(HASH_SRC_IP) { f.src } else { [0; 4] },
        dst: if on(HASH_DST_IP) { f.dst } else { [0; 4] },
        flowlabel: if on(HASH_FLOWLABEL) { f.flowlabel } else { 0 },
        sport: if on(HASH_SRC_PORT) { f.sport } else { 0 },
        dport: if on(HASH_DST_PORT) { f.dport } else { 0 },
        proto: if on(HASH_IP_PROTO) { f.proto } else { 0 },
        is_v6: f.is_v6,
        pad: [0; 2],
    }
}

/// `xe_pin_expired`: whether an entry has aged out at `now`, by the
/// timeout (jiffies; 0: never) of its kind.
pub fn pin_expired(timeouts: &[u32; 3], proto: u8, pin: &xe_pin, now: u32) -> bool {
    let t = if pin.flags & PIN_CLOSING != 0 {
        timeouts[PIN_T_CLOSING]
    } else if proto == IPPROTO_TCP {
        timeouts[PIN_T_TCP]
    } else {
        timeouts[PIN_T_OTHER]
    };
    t != 0 && now.wrapping_sub(pin.seen) > t
}

/// `xe_pin_note`: after a pinned route's flow is forwarded by `path` to
/// next hop `nexthop` under the group's generation `gen`, what becomes of
/// its entry (`entry` as found; `hit` Some if it chose, true if its next
/// hop and generation are to be rewritten). None for a RST of a flow
/// without an entry. Writes only when `pins` is given.
pub fn pin_note(
    pins: Option<&mut Pins<'_>>,
    key: &xe_flow,
    entry: Option<xe_pin>,
    hit: Option<bool>,
    (path, nexthop, gen): (u32, u32, u32),
    tcp_flags: u8,
    now: u32,
) -> Option<PinEvent> {
    let (event, write) = if tcp_flags & TCP_RST != 0 {
        entry?;
        (PinEvent::Ended, None)
    } else if let Some(stale) = hit {
        let mut e = entry.unwrap_or_default();
        e.seen = now;
        if tcp_flags & TCP_FIN != 0 {
            e.flags |= PIN_CLOSING;
        }
        if stale {
            (e.nexthop, e.gen) = (nexthop, gen);
        }
        (PinEvent::Hit, Some(e))
    } else {
        let e = xe_pin {
            path,
            seen: now,
            nexthop,
            gen,
            flags: if tcp_flags & TCP_FIN != 0 {
                PIN_CLOSING
            } else {
                0
            },
            pad: 0,
        };
        let event = if entry.is_some() {
            PinEvent::Repinned
        } else {
            PinEvent::Inserted
        };
        (event, Some(e))
    };
    if let Some(p) = pins {
        match write {
            Some(e) => p.table.put(key, e),
            None => p.table.remove(key),
        }
    }
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{HASH_POLICY_L3, HASH_PORTS};

    fn flow() -> xe_flow {
        xe_flow {
            src: [1, 0, 0, 0],
            dst: [2, 0, 0, 0],
            flowlabel: 7,
            sport: 1000,
            dport: 80,
            proto: 6,
            is_v6: 0,
            pad: [0; 2],
        }
    }

    #[test]
    fn key_keeps_only_hashed_fields() {
        let f = flow();
        let l4 = pin_key(&f, 0);
        assert_eq!(
            (l4.sport, l4.dport, l4.proto, l4.flowlabel),
            (1000, 80, 6, 0)
        );
        let l3 = pin_key(&f, HASH_POLICY_L3);
        assert_eq!((l3.src[0], l3.dst[0]), (1, 2));
        assert_eq!((l3.sport, l3.dport, l3.proto), (0, 0, 0));
        // A fragment hashes without ports: its key has none either.
        let frag = pin_key(&f, HASH_POLICY_L4 & !HASH_PORTS);
        assert_eq!((frag.sport, frag.dport, frag.proto), (0, 0, 6));
    }

    #[test]
    fn entries_age_by_kind() {
        let t = [100, 10, 5];
        let mut p = xe_pin {
            seen: u32::MAX - 3,
            ..Default::default()
        };
        // Ages are taken modulo 2^32.
        assert!(!pin_expired(&t, 6, &p, 96));
        assert!(pin_expired(&t, 6, &p, 97));
        assert!(pin_expired(&t, 17, &p, 7));
        assert!(!pin_expired(&t, 17, &p, 6));
        p.flags = PIN_CLOSING;
        assert!(pin_expired(&t, 6, &p, 2));
        assert!(!pin_expired(&[0, 0, 0], 6, &p, 1 << 30));
    }

    #[test]
    fn rst_ends_fin_closes_miss_inserts() {
        let mut t = MemoryFlows::default();
        let k = flow();
        let mut pins = Pins {
            table: &mut t,
            now: 50,
        };
        assert_eq!(
            pin_note(Some(&mut pins), &k, None, None, (3, 1, 9), TCP_RST, 50),
            None
        );
        assert_eq!(
            pin_note(Some(&mut pins), &k, None, None, (3, 1, 9), 0, 50),
            Some(PinEvent::Inserted)
        );
        let e = pins.table.get(&k).unwrap();
        assert_eq!(
            (e.path, e.seen, e.nexthop, e.gen, e.flags),
            (3, 50, 1, 9, 0)
        );
        assert_eq!(
            pin_note(
                Some(&mut pins),
                &k,
                Some(e),
                Some(false),
                (3, 1, 9),
                TCP_FIN,
                60
            ),
            Some(PinEvent::Hit)
        );
        let e = pins.table.get(&k).unwrap();
        assert_eq!((e.path, e.seen, e.flags), (3, 60, PIN_CLOSING));
        assert_eq!(
            pin_note(Some(&mut pins), &k, Some(e), None, (4, 2, 9), 0, 61),
            Some(PinEvent::Repinned)
        );
        let e = pins.table.get(&k).unwrap();
        assert_eq!((e.path, e.nexthop), (4, 2));
        // A hit under a new generation rewrites the entry's next hop and generation.
        assert_eq!(
            pin_note(Some(&mut pins), &k, Some(e), Some(true), (4, 5, 10), 0, 62),
            Some(PinEvent::Hit)
        );
        let e = pins.table.get(&k).unwrap();
        assert_eq!((e.path, e.nexthop, e.gen), (4, 5, 10));
        let e = pins.table.get(&k);
        assert_eq!(
            pin_note(Some(&mut pins), &k, e, Some(false), (4, 2, 9), TCP_RST, 62),
            Some(PinEvent::Ended)
        );
        assert!(pins.table.get(&k).is_none());
        // Without a table nothing is written.
        assert_eq!(
            pin_note(None, &k, None, None, (4, 2, 9), 0, 63),
            Some(PinEvent::Inserted)
        );
    }
}
