#!/usr/bin/env bash
# Installs every Debian package and tool that building and testing xdp-ecmp needs (idempotent).
set -euo pipefail

PKGS=(clang llvm libelf-dev zlib1g-dev pkg-config bpftool iproute2 ethtool tcpdump libbpf-dev linux-libc-dev make util-linux python3 iputils-ping
      tmux  # the test of `xdp-ecmp top` drives it in a real terminal
      libfontconfig-dev libfreetype-dev fonts-dejavu-core)  # the last three: text in the benchmark charts

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: missing packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "setup: all ${#PKGS[@]} packages present"
fi

command -v cargo >/dev/null || { echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2; exit 1; }

# Pins live on the bpf filesystem; a fresh machine has none mounted (the
# daemon and the CLI also mount it themselves when it is missing).
if [[ $(id -u) -eq 0 ]] && ! mountpoint -q /sys/fs/bpf; then
    mount -t bpf bpf /sys/fs/bpf && echo "setup: mounted the bpf filesystem at /sys/fs/bpf"
fi
# Tracepoints (the daemon counts redirect failures on one) are found on
# tracefs, which a fresh machine may not have mounted either (the daemon
# mounts it too when missing).
if [[ $(id -u) -eq 0 ]] && [[ -d /sys/kernel/tracing ]] && ! [[ -d /sys/kernel/tracing/events ]]; then
    mount -t tracefs tracefs /sys/kernel/tracing && echo "setup: mounted tracefs at /sys/kernel/tracing"
fi
