//! Build script of the xdp-ecmp binary: records the git commit it is built from for `xdp-ecmp --version` ("unknown" in a tree without git, such as a source tarball).

use std::path::Path;
use std::process::Command;

/// Runs git with `args` in the crate's directory; its trimmed output on success.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // A packager building from a tarball can name the commit.
    println!("cargo:rerun-if-env-changed=XDP_ECMP_GIT_COMMIT");
    let commit = std::env::var("XDP_ECMP_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["describe", "--always", "--dirty", "--abbrev=12"]))
        .unwrap_or_else(|| "unknown".to_string());
    // Built again when HEAD moves or the branch it names gets a commit; only
    // paths that exist are named (a missing one would rebuild every time).
    for rel in ["HEAD", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", rel]) {
            watch(&p);
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(p) = git(&["rev-parse", "--git-path", &branch]) {
            watch(&p);
        }
    }
    // `--dirty` follows the index and the sources the binary is built from.
    if let Some(p) = git(&["rev-parse", "--git-path", "index"]) {
        watch(&p);
    }
    for dir in [
        "src",
        "Cargo.toml",
        "../dataplane/src",
        "../dataplane/Cargo.toml",
        "../bpf",
    ] {
        watch(dir);
    }
    println!("cargo:rustc-env=XDP_ECMP_GIT_COMMIT={commit}");
}

/// Asks cargo to run this script again when `path` (relative to the crate) changes.
fn watch(path: &str) {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if p.exists() {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}
