#!/usr/bin/env bash
# The anycast design guide's network in veth namespaces: client, 2 spines, 4 leaves, 4 servers announcing 172.16.255.66/32.
# Usage: testbed.sh up [--mode static|bgp] [--engine xdp|afxdp] | down | status | daemon NODE [flags] | stop-daemon NODE | fail LEAF | restore LEAF
#        | withdraw SERVER | announce SERVER | exec NODE CMD... | xdp-ecmp NODE ARGS...
# Everything it creates is named xe-tb-*: namespaces xe-tb-<node> (its veths live only inside them),
# bpffs pins /sys/fs/bpf/xe-tb-<node>, FRR run dirs /var/run/frr/xe-tb-<node>, the daemons' status for
# show and top (/run/xdp-ecmp/sys_fs_bpf_xe-tb-<node>), state (PIDs, logs) under /run/xe-testbed. `down` removes all of it, on a whole or a partly built testbed, as often as it is run:
# it ends the processes whose PIDs the testbed recorded (daemons, anycast services, FRR), then any other
# process still inside an xe-tb-* namespace, then deletes the namespaces, pins and state, and says what
# is left if anything is.
# When `up` fails (a command fails, a daemon does not start) or gets SIGINT, SIGTERM or SIGHUP, it tears
# down everything it built so far and exits non-zero with a line naming the last step it completed.
# Test only: XE_TESTBED_FAIL_AT=STEP makes `up` fail on purpose right after STEP, one of namespaces,
# links, frr (bgp mode: FRR started in every node), routes, services, daemons (scripts/cleanup-test.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=/run/xe-testbed
ANYCAST=172.16.255.66
SPINES=(spine01 spine02)
LEAVES=(leaf01 leaf02 leaf03 leaf04)
SERVERS=(server01 server02 server03 server04)
NODES=(client "${SPINES[@]}" "${LEAVES[@]}" "${SERVERS[@]}")
XDP_ECMP=${XDP_ECMP:-$ROOT/target/release/xdp-ecmp}

ns() { echo "xe-tb-$1"; }
in_ns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }
die() { echo "testbed: $*" >&2; exit 1; }
need_root() { [[ $(id -u) -eq 0 ]] || die "needs root (network namespaces, XDP)"; }

# Deterministic MACs: 02:xe:NODE:PORT — node and port numbers from names.
node_no() { case $1 in client) echo 1;; spine0*) echo $((10 + ${1#spine0}));; leaf0*) echo $((20 + ${1#leaf0}));; server0*) echo $((30 + ${1#server0}));; esac; }
mac_of() { printf '02:5e:%02x:00:00:%02x' "$(node_no "$1")" "$2"; }

# link NODE_A IF_A NODE_B IF_B PORTNO_A PORTNO_B: a veth pair straight into two namespaces.
link() {
    ip link add "$2" netns "$(ns "$1")" address "$(mac_of "$1" "$5")" type veth \
        peer name "$4" netns "$(ns "$3")" address "$(mac_of "$3" "$6")"
    for side in "$1 $2" "$3 $4"; do
        # shellcheck disable=SC2086 # "NODE IF", split on purpose
        set -- $side
        in_ns "$1" ip link set "$2" up
        # Checksums computed in software: XDP-redirected frames carry no offload state.
        in_ns "$1" ethtool -K "$2" tx off gro on >/dev/null 2>&1 || true
    done
}

# p2p NODE_A IF_A ADDR_A NODE_B IF_B ADDR_B: /31 addresses and permanent neighbours both ways.
p2p() {
    in_ns "$1" ip addr add "$3/31" dev "$2"
    in_ns "$4" ip addr add "$6/31" dev "$5"
    local mac_a mac_b
    mac_b=$(ip -n "$(ns "$4")" -br link show "$5" | awk '{print $3}')
    mac_a=$(ip -n "$(ns "$1")" -br link show "$2" | awk '{print $3}')
    in_ns "$1" ip neigh replace "$6" lladdr "$mac_b" dev "$2" nud permanent
    in_ns "$4" ip neigh replace "$3" lladdr "$mac_a" dev "$5" nud permanent
}

up() {
    need_root
    local mode=static engine=xdp
    while (($#)); do
        case $1 in
        --mode) mode=$2; shift 2;;
        --engine) engine=$2; shift 2;;
        *) die "unknown option $1 (up [--mode static|bgp] [--engine xdp|afxdp])";;
        esac
    done
    [[ $engine == xdp || $engine == afxdp ]] || die "engine $engine: xdp or afxdp"
    [[ $mode == static || $mode == bgp ]] || die "mode $mode: static or bgp"
    if [[ $mode == bgp && ! -x /usr/lib/frr/bgpd ]]; then
        echo "testbed: installing FRR for bgp mode"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends frr >/dev/null
    fi
    if ip netns list | grep -q '^xe-tb-'; then
        echo "testbed: already up (scripts/testbed.sh down to rebuild)"
        return 0
    fi
    [[ -x $XDP_ECMP ]] || die "$XDP_ECMP missing: cargo build --release -p xdp-ecmp"
    # From here on, whatever ends this shell before the testbed is complete
    # tears down what it built: a failing command (set -e), die, a signal.
    trap 'UP_WHY="interrupted by SIGINT"; exit 130' INT
    trap 'UP_WHY="interrupted by SIGTERM"; exit 143' TERM
    trap 'UP_WHY="interrupted by SIGHUP"; exit 129' HUP
    trap up_abort EXIT
    mkdir -p "$STATE"
    # Every daemon of this testbed, scenario restarts included, runs this engine.
    echo "$engine" > "$STATE/engine"
    for n in "${NODES[@]}"; do
        ip netns add "$(ns "$n")"
        in_ns "$n" ip link set lo up
        in_ns "$n" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
    done
    reached namespaces
    # client <-> spine02 (the guide's remote user behind swp51)
    link client eth0 spine02 swp51 1 51
    in_ns client ip addr add 10.2.0.100/24 dev eth0
    in_ns spine02 ip addr add 10.2.0.1/24 dev swp51
    local cmac s2mac
    cmac=$(ip -n "$(ns client)" -br link show eth0 | awk '{print $3}')
    s2mac=$(ip -n "$(ns spine02)" -br link show swp51 | awk '{print $3}')
    in_ns spine02 ip neigh replace 10.2.0.100 lladdr "$cmac" dev swp51 nud permanent
    in_ns client ip neigh replace 10.2.0.1 lladdr "$s2mac" dev eth0 nud permanent
    in_ns client ip route add "$ANYCAST/32" via 10.2.0.1
    local i s
    for i in 1 2 3 4; do
        # spineNN swpI <-> leaf0I swp5N ; leaf0I swp1 <-> server0I eth0
        for s in 1 2; do
            link "spine0$s" "swp$i" "leaf0$i" "swp5$s" "$i" "5$s"
        done
        link "leaf0$i" swp1 "server0$i" eth0 1 1
        in_ns "server0$i" ip addr add "$ANYCAST/32" dev lo
    done
    reached links
    if [[ $mode == static ]]; then
        static_routes
    else
        bgp_routes
    fi
    reached routes
    for i in 1 2 3 4; do
        start_service "server0$i"
    done
    reached services
    start_daemon spine01 -p swp1 -p swp2 -p swp3 -p swp4
    start_daemon spine02 -p swp51 -p swp1 -p swp2 -p swp3 -p swp4
    for i in 1 2 3 4; do
        start_daemon "leaf0$i" -p swp51 -p swp52 -p swp1
    done
    reached daemons
    trap - EXIT INT TERM HUP
    echo "$mode" > "$STATE/mode"
    echo "testbed: up ($mode): ${#NODES[@]} namespaces xe-tb-*, xdp-ecmp on spines and leaves, services on ${SERVERS[*]}"
}

# reached STEP: `up` has completed STEP (the failure line names it).
# XE_TESTBED_FAIL_AT=STEP (tests only) fails right here, as a failing
# command would.
UP_STEP=start UP_WHY=
reached() {
    UP_STEP=$1
    if [[ ${XE_TESTBED_FAIL_AT:-} == "$1" ]]; then
        echo "testbed: XE_TESTBED_FAIL_AT=$1: failing on purpose (test hook)" >&2
        return 1
    fi
}

# The EXIT trap while `up` builds: tear down everything built so far (down
# copes with a partial testbed), undisturbed by further signals, and exit
# non-zero.
up_abort() {
    local rc=$?
    trap '' INT TERM HUP
    trap - EXIT
    set +e
    ((rc != 0)) || rc=1
    echo "testbed: set-up ${UP_WHY:-failed (exit $rc)} after step '$UP_STEP'; tearing down what it built" >&2
    if down >&2; then
        echo "testbed: up did not complete; cleaned up: no xe-tb-* namespace, process, pin or state of it is left" >&2
    else
        echo "testbed: up did not complete, and the clean-up left something (above)" >&2
    fi
    exit "$rc"
}

# Static mode: /31s, permanent neighbours, ECMP routes written with ip.
static_routes() {
    local i s
    for i in 1 2 3 4; do
        for s in 1 2; do
            p2p "spine0$s" "swp$i" "10.$s.$i.0" "leaf0$i" "swp5$s" "10.$s.$i.1"
        done
        p2p "leaf0$i" swp1 "10.3.$i.0" "server0$i" eth0 "10.3.$i.1"
        in_ns "server0$i" ip route add default via "10.3.$i.0"
        in_ns "leaf0$i" ip route add "$ANYCAST/32" via "10.3.$i.1"
        # The client sits behind spine02 only.
        in_ns "leaf0$i" ip route add 10.2.0.0/24 via "10.2.$i.0"
    done
    for s in 1 2; do
        in_ns "spine0$s" ip route add "$ANYCAST/32" \
            nexthop via "10.$s.1.1" dev swp1 nexthop via "10.$s.2.1" dev swp2 \
            nexthop via "10.$s.3.1" dev swp3 nexthop via "10.$s.4.1" dev swp4
    done
}

# BGP mode: FRR (zebra + bgpd) in every router namespace, BGP unnumbered
# (IPv6 link-local sessions, IPv4 routes via IPv6 next hops, RFC 5549) on the
# fabric, servers announcing the anycast /32 themselves, maximum-paths.
frr_conf() {
    local n=$1 asn=$2; shift 2
    local dir=$STATE/frr/$n
    mkdir -p "$dir"
    {
        echo "frr defaults datacenter"
        echo "hostname $n"
        echo "log file $dir/frr.log"
        echo "!"
        echo "router bgp $asn"
        echo " bgp router-id 10.255.0.$(node_no "$n")"
        echo " no bgp ebgp-requires-policy"
        echo " bgp bestpath as-path multipath-relax"
        local p
        for p in "$@"; do echo " neighbor $p interface remote-as external"; done
        echo " address-family ipv4 unicast"
        case $n in
        server*) echo "  network $ANYCAST/32";;
        spine02) echo "  network 10.2.0.0/24";;
        esac
        echo "  maximum-paths 64"
        echo " exit-address-family"
        echo "!"
    } > "$dir/frr.conf"
    chown -R frr:frr "$dir"
    mkdir -p "/var/run/frr/$(ns "$n")"
    chown frr:frr "/var/run/frr/$(ns "$n")"
    local d
    for d in zebra bgpd; do
        in_ns "$n" "/usr/lib/frr/$d" -d -N "$(ns "$n")" -f "$dir/frr.conf" -i "$dir/$d.pid" \
            >"$dir/$d.out" 2>&1 || die "FRR $d in $n failed: $(cat "$dir/$d.out")"
    done
}

bgp_routes() {
    local i
    frr_conf spine01 65000 swp1 swp2 swp3 swp4
    frr_conf spine02 65000 swp1 swp2 swp3 swp4
    for i in 1 2 3 4; do
        frr_conf "leaf0$i" "6500$i" swp51 swp52 swp1
        frr_conf "server0$i" "6510$i" eth0
    done
    reached frr
    # Converged when spine02 has four paths to the anycast address.
    local t=0
    until [[ $(in_ns spine02 ip route show "$ANYCAST" 2>/dev/null | grep -c nexthop) -ge 4 ]] &&
        in_ns "server01" ip route show 10.2.0.0/24 | grep -q .; do
        sleep 0.5; t=$((t + 1))
        ((t < 120)) || die "BGP did not converge in 60 s: $(in_ns spine02 ip route show "$ANYCAST")"
    done
}

start_service() {
    local n=$1
    ip netns exec "$(ns "$n")" python3 "$ROOT/scripts/anycast.py" serve --name "$n" --addr "$ANYCAST" \
        >"$STATE/$n.svc.log" 2>&1 &
    echo $! > "$STATE/$n.svc.pid"
}

# start_daemon NODE RUN-FLAGS...: xdp-ecmp run in NODE (nsenter keeps bpffs visible).
start_daemon() {
    local n=$1; shift
    stop_daemon "$n"
    # The log keeps every run of the node's daemon (a scenario restarts it).
    local log="$STATE/$n.log" before=0
    [[ -f $log ]] && before=$(wc -l < "$log")
    echo "=== xdp-ecmp run $* ($(date -u +%T.%N))" >> "$log"
    local engine
    engine=$(cat "$STATE/engine" 2>/dev/null || echo xdp)
    RUST_LOG=${RUST_LOG:-info,control::reconcile=debug} nsenter --net="/run/netns/$(ns "$n")" "$XDP_ECMP" --pin-dir "/sys/fs/bpf/$(ns "$n")" --state-dir "$STATE/$n.state" run --engine "$engine" "$@" \
        >>"$log" 2>&1 &
    echo $! > "$STATE/$n.pid"
    echo "$*" > "$STATE/$n.flags"
    # Ready when the last port's link is pinned and the anycast route is in the maps.
    local t=0
    until tail -n +"$((before + 1))" "$log" 2>/dev/null | grep -q "initial sync done"; do
        sleep 0.1; t=$((t + 1))
        ((t < 100)) || die "xdp-ecmp in $n did not start: $(tail -3 "$STATE/$n.log")"
        kill -0 "$(cat "$STATE/$n.pid")" 2>/dev/null || die "xdp-ecmp in $n exited: $(tail -3 "$STATE/$n.log")"
    done
}

stop_daemon() {
    local n=$1 pidf="$STATE/$1.pid"
    [[ -f $pidf ]] || return 0
    local pid; pid=$(cat "$pidf")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidf"
}

# alive PID: the process exists and is not a zombie.
alive() {
    local st
    [[ $1 =~ ^[0-9]+$ ]] && read -r st 2>/dev/null <"/proc/$1/stat" || return 1
    st=${st##*) }
    [[ ${st%% *} != Z ]]
}

# our_netns: the testbed's namespaces.
our_netns() { ip netns list 2>/dev/null | awk '{print $1}' | grep '^xe-tb-' || true; }

# ours PID: a recorded PID that is still the testbed's: a live process
# inside one of its namespaces or, the namespace already gone, running one
# of its programs (not a PID the kernel has since handed to another).
ours() {
    alive "$1" || return 1
    local ino cmd
    ino=$(stat -L -c %i "/proc/$1/ns/net" 2>/dev/null) || return 1
    [[ " $OUR_NETS " == *" $ino "* ]] && return 0
    cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
    [[ $cmd == *xe-tb-* || $cmd == *"$ROOT/scripts/anycast.py"* || $cmd == *"$STATE"* ]]
}

# end_pids PID...: SIGTERM, up to 5 s to exit, then SIGKILL; prints the
# PIDs still alive after that (none, normally).
end_pids() {
    (($#)) || return 0
    local pid t left
    kill "$@" 2>/dev/null || true
    for ((t = 0; t < 70; t++)); do
        ((t == 50)) && kill -9 "$@" 2>/dev/null
        left=()
        for pid; do alive "$pid" && left+=("$pid"); done
        ((${#left[@]})) || return 0
        sleep 0.1
    done
    echo "${left[*]}"
}

down() {
    need_root
    local f n pid recorded=() others=() survivors=""
    OUR_NETS=""
    for n in $(our_netns); do OUR_NETS+=" $(stat -L -c %i "/run/netns/$n" 2>/dev/null || true)"; done
    # The processes it started, by the PIDs it recorded.
    for f in "$STATE"/*.pid "$STATE"/frr/*/*.pid; do
        [[ -e $f ]] || continue
        pid=$(cat "$f" 2>/dev/null || true)
        if ours "$pid"; then recorded+=("$pid"); fi
    done
    survivors+=" $(end_pids "${recorded[@]}")"
    # Then any other process still inside a namespace of the testbed: one
    # whose PID was not recorded yet (a service or FRR daemon started just
    # before an interrupt), a client the demo ran. Deleting a namespace ends
    # none of them.
    for n in $(our_netns); do
        for pid in $(ip netns pids "$n" 2>/dev/null); do
            if alive "$pid"; then others+=("$pid"); fi
        done
    done
    if ((${#others[@]})); then
        echo "testbed: ending ${#others[@]} more processes inside xe-tb-* namespaces (pids ${others[*]})"
        survivors+=" $(end_pids "${others[@]}")"
    fi
    for n in $(our_netns); do
        ip netns del "$n" 2>/dev/null || true
    done
    rm -rf /sys/fs/bpf/xe-tb-* 2>/dev/null || true
    rm -rf "$STATE" /var/run/frr/xe-tb-* /run/xdp-ecmp/sys_fs_bpf_xe-tb-*
    rmdir /run/xdp-ecmp 2>/dev/null || true # only if no other daemon wrote there
    local left=()
    [[ -z ${survivors// /} ]] || left+=("processes$survivors")
    [[ -z $(our_netns) ]] || left+=("namespaces $(our_netns | tr '\n' ' ')")
    ! compgen -G '/sys/fs/bpf/xe-tb-*' >/dev/null || left+=("pins $(echo /sys/fs/bpf/xe-tb-*)")
    ! compgen -G '/var/run/frr/xe-tb-*' >/dev/null || left+=("FRR run directories $(echo /var/run/frr/xe-tb-*)")
    ! compgen -G '/run/xdp-ecmp/sys_fs_bpf_xe-tb-*' >/dev/null || left+=("daemon status $(echo /run/xdp-ecmp/sys_fs_bpf_xe-tb-*)")
    [[ ! -e $STATE ]] || left+=("$STATE")
    if ((${#left[@]})); then
        echo "testbed: down, but left: ${left[*]}" >&2
        return 1
    fi
    echo "testbed: down"
}

# fail NODE: a leaf fails. Static mode: its uplinks to both spines go down.
# BGP mode: its sessions to the spines shut down. (FRR 8.4 does not put a
# next hop the kernel dropped from a nexthop group on link down back into
# the group when the link returns, so a link flap would leave spine02 with
# three paths for good; a session failure does not hit that.)
fail() {
    local n=$1
    [[ $n == leaf0[1-4] ]] || die "fail: only leaves (leaf01..leaf04) fail"
    if [[ $(cat "$STATE/mode") == static ]]; then
        in_ns "$n" ip link set swp51 down
        in_ns "$n" ip link set swp52 down
        sleep 0.3
    else
        bgp_neighbors "$n" "neighbor swp51 shutdown" "neighbor swp52 shutdown"
        wait_paths 3
    fi
}

# restore NODE: the leaf returns; static mode writes back what the kernel
# flushed with the links (routes and neighbours), bgp mode reopens the
# sessions and waits for spine02's four paths.
restore() {
    local n=$1 i=${1#leaf0} s
    [[ $n == leaf0[1-4] ]] || die "restore: only leaves (leaf01..leaf04) return"
    if [[ $(cat "$STATE/mode") == static ]]; then
        in_ns "$n" ip link set swp51 up
        in_ns "$n" ip link set swp52 up
        for s in 1 2; do
            local mac_s mac_l
            mac_s=$(ip -n "$(ns "spine0$s")" -br link show "swp$i" | awk '{print $3}')
            mac_l=$(ip -n "$(ns "$n")" -br link show "swp5$s" | awk '{print $3}')
            in_ns "spine0$s" ip neigh replace "10.$s.$i.1" lladdr "$mac_l" dev "swp$i" nud permanent
            in_ns "$n" ip neigh replace "10.$s.$i.0" lladdr "$mac_s" dev "swp5$s" nud permanent
        done
        in_ns "$n" ip route replace 10.2.0.0/24 via "10.2.$i.0"
        sleep 0.3
    else
        bgp_neighbors "$n" "no neighbor swp51 shutdown" "no neighbor swp52 shutdown"
        wait_paths 4
    fi
}

bgp_neighbors() {
    local n=$1; shift
    local args=(-c "configure terminal" -c "router bgp $(bgp_asn "$n")") c
    for c in "$@"; do args+=(-c "$c"); done
    in_ns "$n" vtysh -N "$(ns "$n")" "${args[@]}" >/dev/null 2>&1
}

bgp_asn() {
    case $1 in spine0*) echo 65000;; leaf0*) echo "6500${1#leaf0}";; server0*) echo "6510${1#server0}";; esac
}

# wait_paths N: until spine02 routes the anycast address over N paths.
wait_paths() {
    local t=0
    until [[ $(in_ns spine02 ip route show "$ANYCAST" | grep -c nexthop) -eq $1 ]]; do
        sleep 0.2; t=$((t + 1))
        ((t < 150)) || die "spine02 did not reach $1 paths to $ANYCAST in 30 s"
    done
    sleep 0.3
}

# withdraw SERVER / announce SERVER: the server stops/starts announcing the anycast /32 (bgp mode).
announce() {
    local n=$1 verb=$2
    [[ $(cat "$STATE/mode") == bgp ]] || die "withdraw/announce: only in bgp mode"
    bgp_neighbors "$n" "address-family ipv4 unicast" "$verb network $ANYCAST/32"
}

status() {
    if ! ip netns list | grep -q '^xe-tb-'; then
        echo "testbed: down"; return 0
    fi
    echo "testbed: up ($(cat "$STATE/mode" 2>/dev/null || echo ?))"
    local n
    for n in "${NODES[@]}"; do
        local d="-" s="-"
        [[ -f $STATE/$n.pid ]] && kill -0 "$(cat "$STATE/$n.pid")" 2>/dev/null && d="xdp-ecmp $(cat "$STATE/$n.flags")"
        [[ -f $STATE/$n.svc.pid ]] && kill -0 "$(cat "$STATE/$n.svc.pid")" 2>/dev/null && s="anycast service"
        printf '  %-9s %-40s %s\n' "$n" "$d" "$s"
    done
    echo "spine02: ip route show $ANYCAST"
    in_ns spine02 ip route show "$ANYCAST" | sed 's/^/  /'
}

cmd=${1:-}
shift || true
case $cmd in
up) up "$@";;
down) down;;
status) status;;
daemon) need_root; n=${1:?node}; shift; start_daemon "$n" "$@";;
stop-daemon) need_root; stop_daemon "${1:?node}";;
exec) need_root; n=${1:?node}; shift; in_ns "$n" "$@";;
fail) need_root; fail "${1:?node}";;
restore) need_root; restore "${1:?node}";;
withdraw) need_root; announce "${1:?server}" no;;
announce) need_root; announce "${1:?server}" "";;
xdp-ecmp) need_root; n=${1:?node}; shift; nsenter --net="/run/netns/$(ns "$n")" "$XDP_ECMP" --pin-dir "/sys/fs/bpf/$(ns "$n")" "$@";;
*) die "usage: testbed.sh up [--mode static|bgp] [--engine xdp|afxdp] | down | status | daemon NODE FLAGS... | stop-daemon NODE | fail LEAF | restore LEAF | withdraw SERVER | announce SERVER | exec NODE CMD... | xdp-ecmp NODE ARGS...";;
esac
