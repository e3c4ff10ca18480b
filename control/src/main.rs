//! The `xdp-ecmp` command: daemon and CLI of the ECMP forwarding plane.
fn main() {}
