// Build script: compiles the benchmark's own XDP programs (the peer forwarders, the traffic generator and sinks) and generates their skeletons.
use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH");
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    for name in ["peers", "traffic"] {
        let src = manifest.join(format!("bpf/{name}.bpf.c"));
        SkeletonBuilder::new()
            .source(&src)
            .clang_args([multiarch.as_str(), "-O2", "-Wall", "-Werror"])
            .build_and_generate(out_dir.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| panic!("building {}: {e:#} (run scripts/setup.sh)", src.display()));
        println!("cargo:rerun-if-changed={}", src.display());
    }
}
