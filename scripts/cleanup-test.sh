#!/usr/bin/env bash
# Tests that the testbed and the demo leave nothing behind when they fail or are interrupted: `testbed.sh up` made to fail at three points (static and BGP), interrupted with SIGINT part-way, and the demo stopped with SIGTERM once the testbed is up.
#
# After each run it checks that nothing of the testbed is left: no xe-tb-*
# namespace, no veth of the testbed (MAC 02:5e:..., swpN) in this namespace,
# none of the processes it saw during the run (every PID the testbed recorded
# under /run/xe-testbed and every process inside an xe-tb-* namespace, told
# apart from a later process with the same PID by its start time), no process
# whose command line names the testbed (xe-tb-*, /run/xe-testbed, its
# anycast.py), no /run/xe-testbed, no FRR run directory /var/run/frr/xe-tb-*,
# no bpffs pin /sys/fs/bpf/xe-tb-*. It also checks that each run got as far as
# it should (its exit status and message, the namespaces and processes seen).
#
# As root; `scripts/test.sh` runs it. Without root it prints "skipped: needs
# root" (with CI=true that is a failure). It refuses to run while a testbed is
# up: it would have to destroy it. The xdp-ecmp binary is $XDP_ECMP, else the
# workspace's release binary (built if missing). The BGP point needs FRR
# (/usr/lib/frr/bgpd); without it that point is skipped (with CI=true, a
# failure). About 25 s.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TB=$ROOT/scripts/testbed.sh
STATE=/run/xe-testbed

if [[ $(id -u) -ne 0 ]]; then
    if [[ ${CI:-} == true ]]; then
        echo "cleanup test: needs root, and CI=true forbids skipping it" >&2
        exit 1
    fi
    echo "cleanup test: skipped: needs root"
    exit 0
fi

T0=$(date +%s%N)
ms() { echo $((($(date +%s%N) - $1) / 1000000)); }
fail() { echo "cleanup test: FAIL: $*" >&2; exit 1; }
our_netns() { ip netns list 2>/dev/null | awk '{print $1}' | grep '^xe-tb-' || true; }

if [[ -n $(our_netns) || -e $STATE ]]; then
    fail "a testbed is up or half built ($(our_netns | tr '\n' ' ')$STATE): this test brings testbeds up and tears them down, and will not destroy this one; scripts/testbed.sh down first"
fi

if [[ -z ${XDP_ECMP:-} ]]; then
    target_dir=$(cargo metadata --format-version 1 --no-deps --offline |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    XDP_ECMP=$target_dir/release/xdp-ecmp
    if [[ ! -x $XDP_ECMP ]]; then
        echo "== cleanup test: no release binary yet: cargo build --release -p xdp-ecmp"
        cargo build --release -p xdp-ecmp
    fi
fi
[[ -x $XDP_ECMP ]] || fail "XDP_ECMP=$XDP_ECMP is not an executable"
export XDP_ECMP

OUT=$(mktemp /tmp/xe-cleanup-test.XXXXXX)
CHILD=
# If this test fails or is interrupted itself, it ends the run it started and
# brings down the testbed that run built (no testbed was up before it).
cleanup() {
    local rc=$?
    trap '' INT TERM HUP
    set +e
    if [[ -n $CHILD ]] && kill -0 "$CHILD" 2>/dev/null; then
        kill -TERM "$CHILD" 2>/dev/null
        wait "$CHILD" 2>/dev/null
    fi
    if [[ -n $(our_netns) || -e $STATE ]]; then
        "$TB" down >&2 || true
    fi
    rm -f "$OUT"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# "PID:start time" of every process of the testbed seen during a run -> where
# it was first seen; REC: those whose PID the testbed recorded.
declare -A SEEN=() REC=()
NS_MAX=0

proc_field() { # proc_field PID N: field N of /proc/PID/stat (3 = state, 22 = start time)
    local s i=$(($2 - 2))
    read -r s 2>/dev/null <"/proc/$1/stat" || return 1
    s=${s##*) }
    # shellcheck disable=SC2086 # the fields after the command name, split on purpose
    set -- $s
    ((i <= $#)) || return 1
    echo "${!i}"
}
note() {
    local st
    [[ $1 =~ ^[0-9]+$ ]] || return 0
    st=$(proc_field "$1" 22) || return 0
    [[ -n ${SEEN[$1:$st]:-} ]] || SEEN[$1:$st]=$2
    [[ $2 != recorded* ]] || REC[$1:$st]=1
}
# look: one look at the testbed: the PIDs it recorded, every process inside its namespaces.
look() {
    local f n c=0
    for f in "$STATE"/*.pid "$STATE"/frr/*/*.pid; do
        [[ -e $f ]] && note "$(cat "$f" 2>/dev/null || true)" "recorded in ${f#"$STATE"/}"
    done
    for n in $(our_netns); do
        c=$((c + 1))
        for pid in $(ip netns pids "$n" 2>/dev/null || true); do note "$pid" "inside $n"; done
    done
    ((c <= NS_MAX)) || NS_MAX=$c
}

# run TRIGGER SIGNAL CMD...: runs CMD in the background (its own process
# group, as a job from a terminal: SIGINT is not ignored), looks at the
# testbed every 0.1 s, and once the command TRIGGER succeeds sends SIGNAL
# (none if empty) to CMD's process group (INT: as Ctrl-C does) or to CMD
# alone (other signals, as kill does). Sets RC, SENT_MS (when it was sent).
run() {
    local trigger=$1 sig=$2 t0 t=0
    shift 2
    SEEN=() REC=() NS_MAX=0 SENT_MS=''
    t0=$(date +%s%N)
    set -m
    "$@" >"$OUT" 2>&1 &
    CHILD=$!
    set +m
    while kill -0 "$CHILD" 2>/dev/null; do
        look
        if [[ -n $sig && -z $SENT_MS ]] && $trigger; then
            if [[ $sig == INT ]]; then kill -INT -- "-$CHILD"; else kill "-$sig" "$CHILD"; fi
            SENT_MS=$(ms "$t0")
        fi
        sleep 0.1
        t=$((t + 1))
        ((t < 1500)) || fail "$* still runs after 150 s: $(tail -5 "$OUT")"
    done
    RC=0
    wait "$CHILD" || RC=$?
    CHILD=
    RUN_MS=$(ms "$t0")
}

# leftovers: what of the testbed is left, one line each (nothing, if clean).
leftovers() {
    local n key pid st
    for n in $(our_netns); do echo "namespace $n"; done
    ip -o link show | grep -E 'link/ether 02:5e:|^[0-9]+: swp[0-9]+[@:]' | sed 's/^/link in the root namespace: /' || true
    for key in "${!SEEN[@]}"; do
        pid=${key%%:*} st=${key#*:}
        if [[ $(proc_field "$pid" 22 || true) == "$st" && $(proc_field "$pid" 3 || true) != Z ]]; then
            echo "process $pid (${SEEN[$key]}) still runs: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
        fi
    done
    # [b], [.]: grep's own command line does not match its pattern.
    local f
    for f in $(grep -l -a -E "xe-t[b]-|/run/xe-test[b]ed|$ROOT/scripts/anycast[.]py" /proc/[0-9]*/cmdline 2>/dev/null || true); do
        pid=${f#/proc/} pid=${pid%/cmdline}
        [[ $pid != "$$" && $(proc_field "$pid" 3 || true) != Z ]] || continue
        echo "process $pid names the testbed: $(tr '\0' ' ' <"$f" 2>/dev/null || true)"
    done
    [[ ! -e $STATE ]] || echo "$STATE: $(find "$STATE" -mindepth 1 -maxdepth 1 -printf '%f ' 2>/dev/null | head -c 200)"
    for f in /var/run/frr/xe-tb-* /sys/fs/bpf/xe-tb-* /run/xdp-ecmp/sys_fs_bpf_xe-tb-*; do
        [[ -e $f ]] && echo "$f"
    done
    true
}

CHECKED=0
# expect LABEL RC MESSAGE MIN_NS MIN_RECORDED: the run ended as expected and
# left nothing; it had at least MIN_NS namespaces and MIN_RECORDED processes
# recorded by the testbed (it got as far as it should).
expect() {
    local label=$1 rc=$2 msg=$3 min_ns=$4 min_rec=$5 left
    left=$(leftovers)
    [[ -z $left ]] || fail "$label: left behind:
$left
its output:
$(cat "$OUT")"
    [[ $RC == "$rc" ]] || fail "$label: exit $RC, expected $rc: $(cat "$OUT")"
    grep -qF -- "$msg" "$OUT" || fail "$label: the output lacks '$msg': $(cat "$OUT")"
    ((NS_MAX >= min_ns)) || fail "$label: saw $NS_MAX xe-tb-* namespaces during the run, expected at least $min_ns (did it get as far as it should?)"
    ((${#REC[@]} >= min_rec)) || fail "$label: saw ${#REC[@]} processes the testbed recorded, expected at least $min_rec (did it get as far as it should?)"
    CHECKED=$((CHECKED + 1))
    echo "$label: exit $RC after $RUN_MS ms${SENT_MS:+ (signal at $SENT_MS ms)}; had $NS_MAX namespaces, ${#SEEN[@]} processes (${#REC[@]} recorded); left nothing"
}

echo "== cleanup test: testbed.sh up failing on purpose (XE_TESTBED_FAIL_AT), interrupted, and the demo stopped; then nothing of the testbed may be left"
echo "   checked after each: xe-tb-* namespaces, root-namespace veths (02:5e:*, swpN), every process seen (recorded PIDs, processes inside the namespaces),"
echo "   command lines naming the testbed, $STATE, /var/run/frr/xe-tb-*, /sys/fs/bpf/xe-tb-*, /run/xdp-ecmp/sys_fs_bpf_xe-tb-*"

# (a) failure on purpose: early (namespaces only), late (services and every
# daemon running), BGP (FRR running in every router).
run "" "" env XE_TESTBED_FAIL_AT=namespaces "$TB" up --mode static
expect "static, fails after 'namespaces'" 1 "after step 'namespaces'; tearing down" 0 0
grep -q "up did not complete; cleaned up" "$OUT" || fail "no clean-up line: $(cat "$OUT")"

run "" "" env XE_TESTBED_FAIL_AT=daemons "$TB" up --mode static
expect "static, fails after 'daemons' (4 services, 6 daemons)" 1 "after step 'daemons'; tearing down" 11 10

if [[ -x /usr/lib/frr/bgpd ]]; then
    run "" "" env XE_TESTBED_FAIL_AT=frr "$TB" up --mode bgp
    expect "bgp, fails after 'frr' (zebra and bgpd in 10 nodes)" 1 "after step 'frr'; tearing down" 11 18
elif [[ ${CI:-} == true ]]; then
    fail "FRR (/usr/lib/frr/bgpd) is missing, and CI=true forbids skipping the BGP point"
else
    echo "bgp, fails after 'frr': skipped: FRR is not installed"
fi

# (b) SIGINT to up's process group (Ctrl-C) while it starts the daemons.
daemons_starting() { [[ -e $STATE/spine02.pid ]]; }
run daemons_starting INT "$TB" up --mode static
expect "static, SIGINT while the daemons start" 130 "interrupted by SIGINT after step 'services'" 11 5

# (c) SIGTERM to the demo 2 s after the testbed is up (step 1 runs).
MODE_AT=
up_for_2s() {
    [[ -e $STATE/mode ]] || return 1
    [[ -n $MODE_AT ]] || MODE_AT=$(date +%s%N)
    (($(date +%s%N) - MODE_AT > 2000000000))
}
run up_for_2s TERM python3 "$ROOT/scripts/demo.py" --mode static
expect "demo (static), SIGTERM 2 s after the testbed is up" 143 "demo: interrupted by SIGTERM; the testbed is down" 11 10

echo "cleanup test: passed: $CHECKED runs, nothing left after any ($(ms "$T0") ms)"
