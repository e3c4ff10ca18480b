//! xdp-ecmp control plane: the resilient bucket allocator, the netlink mirror of the kernel's routing state, and the reconciler that writes it to the dataplane.

pub mod nexthop_msg;
pub mod resilient;
