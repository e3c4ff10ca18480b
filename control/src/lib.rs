//! xdp-ecmp control plane: the resilient bucket allocator, the netlink mirror of the kernel's routing state, and the reconciler that writes it to the dataplane.

pub mod aliases;
pub mod bucket_count;
pub mod bucketmap;
pub mod capacity;
pub mod check;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod entropy;
pub mod flows;
pub mod forwarding;
pub mod inspect;
pub mod listings;
pub mod loop_timing;
pub mod metrics;
pub mod mirror;
pub mod nexthop_msg;
mod pools;
pub mod ports;
pub mod reconcile;
pub mod resilient;
pub mod seed;
pub mod state;
pub mod status;
pub mod top;
pub mod translate;
pub mod xdp_features;
