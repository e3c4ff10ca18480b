//! Parts of the `xdp-ecmp` command beside its subcommands: the version text and the kernel probes behind it.

pub mod probe;
pub mod version;
