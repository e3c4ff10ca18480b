//! Resilient bucket allocator with the kernel's semantics (pure Rust, no privileges).
