#!/usr/bin/env bash
# Builds and runs bench/hash_choice: cost and quality of the XDP flow hash against jhash2 and a naive hash, as Markdown.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# -march=native: the numbers describe this host, as the JIT-compiled program runs on it.
# The multiarch include path holds asm/types.h, which linux/types.h needs.
cflags=(-O2 -march=native -I/usr/include/x86_64-linux-gnu -Ibpf/include)
cc "${cflags[@]}" -DHC_CFLAGS="\"${cflags[*]:0:2}\"" -o "$tmp/hash_choice" bench/hash_choice/hash_choice.c
"$tmp/hash_choice" "$@"
