//! The dataplane crate's error type.

use std::path::PathBuf;

/// Everything the dataplane crate can fail with; each names the thing and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("loading the XDP program failed: {source} (needs root or CAP_BPF+CAP_NET_ADMIN, and a kernel with BPF/XDP)")]
    Load { source: libbpf_rs::Error },
    #[error("map {map}: {op} failed: {source}")]
    Map {
        map: &'static str,
        op: &'static str,
        source: libbpf_rs::Error,
    },
    #[error("BPF_PROG_TEST_RUN failed: {0}")]
    TestRun(libbpf_rs::Error),
    #[error("reading the bucket stamp clock: {0}")]
    Clock(&'static str),
    #[error("interface {0:?} not found (check `ip link`)")]
    NoSuchInterface(String),
    #[error("attaching XDP to ifindex {ifindex} failed in native mode ({native}) and generic mode ({generic})")]
    Attach {
        ifindex: u32,
        native: std::io::Error,
        generic: std::io::Error,
    },
    #[error("attaching XDP to ifindex {ifindex} in {mode} mode failed: {source}")]
    AttachMode {
        ifindex: u32,
        mode: &'static str,
        source: std::io::Error,
    },
    #[error("{what} {path}: {source}")]
    Pin {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {value} is out of range (max {max})")]
    OutOfRange {
        what: &'static str,
        value: u64,
        max: u64,
    },
    #[error("{what} is full ({max}): delete routes, or raise the limit and rebuild")]
    TableFull { what: &'static str, max: u64 },
    #[error("{what}: {source} (grace periods need membarrier(2) or BPF map-in-map support)")]
    Grace {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{path} is in use by another xdp-ecmp writer ({holder}): stop it first, or give this one another --pin-dir")]
    Locked { path: PathBuf, holder: String },
    #[error("the maps pinned under {dir} are {found}, this build uses layout version {want}, and it does not read another layout's maps as its own. To change versions: `xdp-ecmp detach PORTS` (the kernel forwards meanwhile), `rm -r {dir}`, then start this build")]
    Layout {
        dir: PathBuf,
        found: String,
        want: u32,
    },
    #[error("the maps pinned under {dir} have other sizes ({pinned}) than asked for ({want}): give the pinned sizes (or none: they are kept), or `xdp-ecmp detach PORTS` (the kernel forwards meanwhile), `rm -r {dir}`, then start with the new ones")]
    Sizes {
        dir: PathBuf,
        pinned: String,
        want: String,
    },
    #[error("AF_XDP on port {port} queue {queue}: {what}: {source}")]
    Xsk {
        port: String,
        queue: u32,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("the AF_XDP engine: {0}")]
    Engine(String),
    #[error("packet of {0} bytes is larger than the test buffer")]
    PacketTooLarge(usize),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
