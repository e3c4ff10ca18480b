//! The compiled program reads each entry the control plane replaces as a whole with one aligned load, so no compiler change can bring back a torn read unnoticed.

use dataplane::insns::ValueAccess;
use dataplane::{Dataplane, LoadOptions};
use testnet::require_root;

/// Loads at a fixed offset, as (offset, size); a load at a computed offset
/// (an index into the value) as offset -1.
fn loads(accesses: &[ValueAccess]) -> Vec<(i16, u8)> {
    accesses
        .iter()
        .filter_map(|a| match a {
            ValueAccess::Load { off, size } => Some((*off, *size)),
            ValueAccess::LoadAt { size } => Some((-1, *size)),
            _ => None,
        })
        .collect()
}

#[test]
fn entries_replaced_whole_are_read_with_one_load() {
    if !require_root("entries_replaced_whole_are_read_with_one_load") {
        return;
    }
    let dp = Dataplane::load(&LoadOptions::default()).expect("load");
    let reads = |map: &str| -> Vec<ValueAccess> {
        let r = dp.program_reads(map).expect(map);
        println!("{map}: {r:?}");
        assert!(
            !r.is_empty(),
            "{map}: no read found: the checker lost track of the program"
        );
        assert!(
            !r.iter()
                .any(|a| matches!(a, ValueAccess::Store { .. } | ValueAccess::StoreAt { .. })),
            "{map}: the program writes an entry the control plane replaces: {r:?}"
        );
        r
    };

    // A group (base, size, mode): one 8-byte load of the whole entry; the
    // control plane switches a group to a new slot window with one 8-byte store.
    assert_eq!(
        loads(&reads("xe_groups")),
        vec![(0, 8)],
        "the group entry must be read with exactly one 8-byte load"
    );
    // An ingress port (MAC and forwarding bits), from the array or the far
    // map: one 8-byte load.
    for map in ["xe_inports", "xe_inports_far"] {
        assert_eq!(
            loads(&reads(map)),
            vec![(0, 8)],
            "{map}: the ingress port entry must be read with exactly one 8-byte load"
        );
    }
    // A slot: one 4-byte load of the next-hop id.
    assert_eq!(loads(&reads("xe_slots")), vec![(0, 4)]);
    // A next hop: its state bits (the one field changed in place) read once;
    // every other field is fixed for the life of the id.
    let nh = loads(&reads("xe_nexthops"));
    assert_eq!(
        nh.iter().filter(|(off, _)| *off == 20).count(),
        1,
        "the next hop's state byte must be read exactly once: {nh:?}"
    );
    assert!(nh.contains(&(20, 1)));
    // DIR-24-8: one 4-byte load of one entry of the 256-entry chunk, at an
    // index computed from the address; two lookups (the destination, and
    // the IPv4 source the kernel would refuse to route from).
    for map in ["xe_tbl24", "xe_tbl8"] {
        assert_eq!(loads(&reads(map)), vec![(-1, 4), (-1, 4)], "{map}");
    }
}
