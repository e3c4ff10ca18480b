//! xdp-ecmp dataplane: the XDP program's skeleton and ABI types, the loader, typed maps, and the reference model.

pub mod abi;
pub mod capacity;
pub mod dir24;
pub mod error;
pub mod grace;
pub mod hash;
pub mod insns;
pub mod loader;
mod mmap;
pub mod model;
pub mod pins;
pub mod tables;
pub mod txfail;

pub use error::{Error, Result};
pub use loader::{
    AttachMode, Dataplane, LoadOptions, MapSizes, RunOutput, StampClock, StampMode, StampReader,
    XdpLink,
};
pub use model::Tables;
pub use tables::TableWriter;
