//! Benchmarks of xdp-ecmp.
fn main() {}
