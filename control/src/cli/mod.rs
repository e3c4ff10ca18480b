//! Parts of the `xdp-ecmp` command beside its subcommands: the version text, the kernel probes behind it and `doctor`, and the completions and man pages written from the CLI definition.

pub mod assets;
pub mod probe;
pub mod version;
