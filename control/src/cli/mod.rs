//! The `xdp-ecmp` command line: its definition (args), one file per family of subcommands, the version text and the kernel probes behind it, and the completions and man pages written from the definition.

pub mod args;
pub mod assets;
pub mod calc;
pub mod ports;
pub mod probe;
pub mod run;
pub mod show;
pub mod version;
