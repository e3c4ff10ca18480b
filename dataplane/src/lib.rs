//! xdp-ecmp dataplane: the XDP program's skeleton and ABI types, its loading and attaching, typed maps, and the forwarding decision in Rust.

pub mod abi;
pub mod afxdp;
pub mod attach;
mod batch;
pub mod capacity;
pub mod clock;
pub mod dir24;
pub mod error;
pub mod ethtool;
pub mod flows;
pub mod forward;
pub mod grace;
pub mod insns;
pub mod lensearch;
pub mod live;
mod maps;
pub mod memory;
mod mmap;
pub mod pins;
pub mod program;
pub mod readback;
pub mod tables;
pub mod testrun;
pub mod txfail;
mod v6maps;
pub mod v6slots;
pub mod writer;

pub use attach::{ifindex_of, AttachMode, XdpLink};
pub use batch::BATCH;
pub use clock::{StampClock, StampReader};
pub use error::{Error, Result};
pub use forward::{FlowTable, MemoryFlows, Pins, TableReader};
pub use live::LiveTables;
pub use maps::{
    pinned_engine_counters, pinned_nexthop_counters, pinned_remove_inport, pinned_verdict_counters,
};
pub use memory::Tables;
pub use program::{Dataplane, LoadOptions, MapSizes, StampMode};
pub use tables::TableWriter;
pub use testrun::{current_cpu, pin_thread_to_cpu, test_run_prog, RunOutput};
pub use v6maps::V6Differences;
pub use writer::Repaired;
