// Build script: compiles the peer XDP programs (bare and bpf_fib_lookup forwarders) and generates their skeleton.
use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let src = manifest.join("bpf/peers.bpf.c");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("peers.skel.rs");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH");
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    SkeletonBuilder::new()
        .source(&src)
        .clang_args([multiarch.as_str(), "-O2", "-Wall", "-Werror"])
        .build_and_generate(&out)
        .unwrap_or_else(|e| panic!("building {}: {e:#} (run scripts/setup.sh)", src.display()));
    println!("cargo:rerun-if-changed={}", src.display());
}
