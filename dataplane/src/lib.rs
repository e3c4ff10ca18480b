//! xdp-ecmp dataplane: the XDP program's skeleton and ABI types, the loader, typed maps, and the reference model.

pub mod abi;
pub mod attach;
pub mod capacity;
pub mod clock;
pub mod dir24;
pub mod error;
pub mod grace;
pub mod hash;
pub mod insns;
mod maps;
mod mmap;
pub mod model;
pub mod pins;
pub mod program;
pub mod readback;
pub mod tables;
pub mod testrun;
pub mod txfail;
pub mod writer;

pub use attach::{ifindex_of, AttachMode, XdpLink};
pub use clock::{StampClock, StampReader};
pub use error::{Error, Result};
pub use maps::{pinned_nexthop_counters, pinned_remove_inport, pinned_verdict_counters};
pub use model::Tables;
pub use program::{Dataplane, LoadOptions, MapSizes, StampMode};
pub use tables::TableWriter;
pub use testrun::{current_cpu, pin_thread_to_cpu, test_run_prog, RunOutput};
