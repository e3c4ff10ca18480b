#!/usr/bin/env bash
# The demo (the README's main command): installs what is missing, builds, brings up the testbed and walks the anycast design guide.
# Usage: scripts/demo.sh [--mode static|bgp] [--engine xdp|afxdp] [--json] [--keep | --keep-on-failure]   (as root)
# The testbed comes down however the demo ends (done, a failed step, Ctrl-C, SIGTERM, SIGHUP); --keep leaves it
# up after a run that succeeded, --keep-on-failure after a failed one too (an interrupt always brings it down).
# Nothing before demo.py (set-up, build) creates namespaces, pins or processes of the testbed; demo.py replaces
# this shell, so the signals reach it directly.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "demo: needs root (network namespaces, XDP): sudo $0 $*" >&2; exit 1; }
./scripts/setup.sh >&2
if [[ " $* " == *" bgp "* || " $* " == *"--mode=bgp"* ]] && [[ ! -x /usr/lib/frr/bgpd ]]; then
    echo "demo: installing FRR" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends frr >/dev/null
fi
echo "demo: building xdp-ecmp (release)" >&2
cargo build --release --quiet -p xdp-ecmp
exec python3 scripts/demo.py "$@"
