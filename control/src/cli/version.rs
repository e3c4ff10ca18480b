//! `xdp-ecmp --version`: the release, the git commit it was built from, the pinned-map layout it speaks, and what this kernel offers, probed now.

use super::probe;

/// The git commit the binary was built from (`git describe`; "unknown"
/// when built outside a git tree, e.g. from a tarball).
pub const COMMIT: &str = env!("XDP_ECMP_GIT_COMMIT");

/// The long version (clap prints "xdp-ecmp " before it). Probes the kernel:
/// built only when `--version` is asked for.
pub fn long() -> String {
    let mut s = format!(
        "{}\ncommit: {COMMIT}\nbpf layout: {} (XE_LAYOUT_VERSION of the pinned maps; pins of another layout are refused)\n",
        env!("CARGO_PKG_VERSION"),
        dataplane::abi::LAYOUT_VERSION
    );
    s += &format!("kernel: {} (features probed now)", probe::kernel_release());
    for (what, found) in [
        ("XDP programs", probe::xdp_programs()),
        ("native XDP", probe::native_xdp()),
        ("AF_XDP", probe::af_xdp()),
        ("BTF", probe::btf()),
        ("bpffs", probe::bpffs()),
    ] {
        s += &format!("\n  {what}: {found}");
    }
    s
}

/// The short version (`-V`): release and commit, nothing probed.
pub const SHORT: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("XDP_ECMP_GIT_COMMIT"),
    ")"
);
