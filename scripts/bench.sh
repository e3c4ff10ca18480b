#!/usr/bin/env bash
# Runs every benchmark at full size (as root, ~10 minutes) and writes bench/report/ (Markdown, JSON, PNG charts) and BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "bench: needs root (XDP programs, namespaces, BPF_PROG_TEST_RUN): sudo $0" >&2
    exit 1
fi
./scripts/setup.sh
echo "== building (release)"
cargo build --release --quiet -p xdp-ecmp -p xdp-ecmp-bench
echo "== running every benchmark; tables print as they are measured"
exec target/release/xdp-ecmp-bench full --out bench/report --benchmarks-md BENCHMARKS.md "$@"
