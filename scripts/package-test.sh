#!/usr/bin/env bash
# Tests the Debian package as an operator meets it: built from the release binary, installed into a clean root (files, conffile, maintainer scripts, purge), run (--version, --help, doctor, show, calc, stats, metrics), its unit verified, then upgraded in place under a running daemon and live traffic on a throw-away veth namespace: forwarding goes on and no flow moves.
#
# As root; `scripts/test.sh` runs it. Without root it prints "skipped: needs
# root" (with CI=true that is a failure). What it makes is named xe-t<pid>-pkg
# (the namespace, the temporary directory /tmp/xe-t<pid>-pkg) and removed on
# exit, even on failure. The upgrade runs in a private mount namespace over
# overlays of /usr, /etc and /var whose writable layers are in the temporary
# directory, with a bpf filesystem of its own (its pins go with it) and a
# stand-in for systemctl, as this machine runs no systemd: the maintainer
# scripts run unchanged, as on a leaf.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$(pwd)

if [[ $(id -u) -ne 0 ]]; then
    if [[ ${CI:-} == true ]]; then
        echo "package test: needs root, and CI=true forbids skipping it" >&2
        exit 1
    fi
    echo "package test: skipped: needs root"
    exit 0
fi

fail() { echo "package test: FAIL: $*" >&2; exit 1; }
step() { echo "== package test: $* ($(( ($(date +%s%N) - T0) / 1000000 )) ms)"; }
# xdp-ecmp (installed) in the test namespace; nsenter keeps this mount
# namespace's /sys and so its bpffs.
xe() { nsenter --net="/run/netns/$NS" /usr/bin/xdp-ecmp "$@"; }
alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $s != Z* ]]; }
json() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }

# The stand-in for systemctl: runs a unit's ExecStartPre= ("+": as root)
# and ExecStart= as User=/Group= with exactly AmbientCapabilities= (the
# bounding set too) and no new privileges, hands it StateDirectory= and
# RuntimeDirectory= (the status `show` reads), stops
# it with SIGTERM (systemd's default KillSignal=), enables it by its
# WantedBy= link, and records every call.
# The daemon runs in the test's network namespace.
write_systemctl() {
    cat > "$1" <<EOF
#!/usr/bin/env bash
# Stand-in for systemctl in the package test (no systemd on the test machine): enable, start, stop, restart and try-restart of a unit as its unit file says, and every call recorded.
set -euo pipefail
SVC=$SVC NS=$NS
EOF
    cat >> "$1" <<'EOF'
echo "$*" >> "$SVC/calls"
words=() now=false
for a in "$@"; do
    [[ $a == --now ]] && now=true
    [[ $a == -* ]] || words+=("$a")
done
verb=${words[0]:-} unit=${words[1]:-}
unit=${unit%.service}
file=/lib/systemd/system/$unit.service
pidf=$SVC/$unit.pid
key() { sed -n "s/^$1=//p" "$file" | tail -1; }
alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $s != Z* ]]; }
active() { [[ -f $pidf ]] && alive "$(cat "$pidf")"; }
start() {
    active && return 0
    [[ -f $file ]] || { echo "Unit $unit.service not found." >&2; exit 5; }
    local line
    while IFS= read -r line; do
        [[ $line == +* ]] || { echo "stand-in systemctl: only ExecStartPre=+ is supported: $line" >&2; exit 1; }
        eval "set -- ${line#+}"
        "$@"
    done < <(sed -n 's/^ExecStartPre=//p' "$file")
    local user group caps dir
    user=$(key User) group=$(key Group)
    caps=$(key AmbientCapabilities | tr ' ' '\n' | sed 's/^CAP_/+/' | tr 'A-Z' 'a-z' | paste -sd,)
    dir=/var/lib/$(key StateDirectory)
    mkdir -p "$dir"
    chown "$user:$group" "$dir"
    chmod "$(key StateDirectoryMode)" "$dir"
    if [[ -n $(key RuntimeDirectory) ]]; then
        dir=/run/$(key RuntimeDirectory)
        mkdir -p "$dir"
        chown "$user:$group" "$dir"
        chmod "$(key RuntimeDirectoryMode)" "$dir"
    fi
    eval "set -- $(key ExecStart)"
    echo "=== started $(date +%T.%N): $*" >> "$SVC/$unit.log"
    nsenter --net="/run/netns/$NS" setpriv --reuid="$user" --regid="$group" --init-groups \
        --inh-caps="-all,$caps" --ambient-caps="-all,$caps" --bounding-set="-all,$caps" \
        --no-new-privs "$@" >> "$SVC/$unit.log" 2>&1 < /dev/null &
    echo $! > "$pidf"
}
stop() {
    if active; then
        local pid
        pid=$(cat "$pidf")
        kill -TERM "$pid"
        for _ in $(seq 100); do alive "$pid" || break; sleep 0.05; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidf"
}
case $verb in
daemon-reload) ;;
enable)
    # As systemctl does for WantedBy=multi-user.target.
    wants=/etc/systemd/system/$(key WantedBy).wants
    mkdir -p "$wants"
    ln -sf "$file" "$wants/$unit.service"
    if $now; then start; fi
    ;;
start) start ;;
stop) stop ;;
restart) stop; start ;;
try-restart) if active; then stop; start; fi ;;
is-active) if active; then echo active; else echo inactive; exit 3; fi ;;
is-enabled) echo disabled; exit 1 ;;
*) echo "stand-in systemctl: $verb is not supported" >&2; exit 1 ;;
esac
EOF
    chmod 755 "$1"
}

# Live traffic: UDP flows 10.2.0.100:20000+k -> 172.16.255.66:53 into xe-in
# (to its MAC) at about a frame a millisecond, round robin; every frame is
# caught at the egress peers xe-p0..3 and its flow's port noted. Stops when
# the stop file appears, drains, and writes what it saw as JSON.
write_traffic() {
    cat > "$1" <<'EOF'
# Package test traffic: sends UDP flows into the ingress port and records at which egress peer each flow's frames arrive.
import json, os, socket, struct, sys, time

out_dir, flows = sys.argv[1], int(sys.argv[2])
ETH_P_IP, PACKET_OUTGOING = 0x0800, 4
dst_mac = bytes.fromhex("02000000aa01")
src, dst = socket.inet_aton("10.2.0.100"), socket.inet_aton("172.16.255.66")

def checksum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF

tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
tx.bind(("xe-h0", 0))
src_mac = tx.getsockname()[4]

def frame(sport):
    payload = b"xdp-ecmp package test"
    udp = struct.pack("!HHHH", sport, 53, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return dst_mac + src_mac + b"\x08\x00" + ip + udp

frames = [frame(20000 + k) for k in range(flows)]
sinks = {}
for i in range(4):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    s.bind(("xe-p%d" % i, ETH_P_IP))
    s.setblocking(False)
    sinks["xe-p%d" % i] = s
received = {d: 0 for d in sinks}
ports_of = {}

def drain():
    for dev, s in sinks.items():
        while True:
            try:
                data, addr = s.recvfrom(2048)
            except BlockingIOError:
                break
            if addr[2] == PACKET_OUTGOING or len(data) < 42 or data[23] != 17 or data[30:34] != dst:
                continue
            received[dev] += 1
            ports_of.setdefault(struct.unpack("!H", data[34:36])[0], set()).add(dev)

def write(name, obj):
    with open(os.path.join(out_dir, name + ".tmp"), "w") as f:
        json.dump(obj, f)
    os.rename(os.path.join(out_dir, name + ".tmp"), os.path.join(out_dir, name))

sent, next_at, last_note = 0, time.monotonic(), 0.0
while not os.path.exists(os.path.join(out_dir, "traffic.stop")):
    tx.send(frames[sent % flows])
    sent += 1
    drain()
    now = time.monotonic()
    if now - last_note > 0.05:
        write("traffic.progress", {"sent": sent, "received": sum(received.values())})
        last_note = now
    next_at += 0.001
    time.sleep(max(0.0, next_at - time.monotonic()))
end = time.monotonic() + 0.5
while time.monotonic() < end:
    drain()
    time.sleep(0.01)
write("traffic.json", {
    "sent": sent,
    "received": received,
    "flows_seen": len(ports_of),
    "moved": sorted(p for p, d in ports_of.items() if len(d) > 1),
})
EOF
}

# The anycast route's buckets as `show buckets` lists them: index and egress.
buckets() {
    local g
    g=$(xe show routes --json | json '[r["group"] for r in d if r["prefix"] == "172.16.255.66/32"][0]')
    xe show buckets "$g" --json | json '"\n".join("%d %s" % (b["index"], b["dev"]) for b in d)'
}
forwarded() { xe stats --json | json '[v["packets"] for v in d if v.get("verdict") == "forward"][0]'; }
prog_id() { ip -n "$NS" -d link show dev xe-in | sed -n 's/.*prog\/xdp id \([0-9]*\).*/\1/p'; }
daemon_pid() { cat "$SVC/xdp-ecmp.pid" 2>/dev/null || true; }
# Waits until the daemon's log has its Nth "initial sync done".
wait_synced() {
    local t=0
    until (($(grep -c 'initial sync done' "$SVC/xdp-ecmp.log" 2>/dev/null || true) >= $1)); do
        sleep 0.05
        t=$((t + 1))
        ((t < 400)) || fail "the daemon did not sync within 20 s: $(tail -5 "$SVC/xdp-ecmp.log" 2>/dev/null)"
        [[ -n $(daemon_pid) ]] && alive "$(daemon_pid)" || fail "the daemon exited: $(tail -5 "$SVC/xdp-ecmp.log" 2>/dev/null)"
    done
}

# The upgrade, inside a private mount namespace (this script again, with
# --upgrade-phase): install N, configure, doctor, start, traffic, upgrade to
# N+1 under traffic, remove, purge.
upgrade_phase() {
    trap 'for f in "$SVC"/*.pid "$WORK"/traffic.pid; do [[ -e $f ]] && kill -KILL "$(cat "$f")" 2>/dev/null; done; true' EXIT
    local o
    for o in usr etc var; do
        mkdir -p "$WORK/ovl/$o/u" "$WORK/ovl/$o/w"
        mount -t overlay "xe-$o" -o "lowerdir=/$o,upperdir=$WORK/ovl/$o/u,workdir=$WORK/ovl/$o/w" "/$o"
    done
    mount -t tmpfs xe-systemd /run/systemd
    # The daemon's RuntimeDirectory= (/run/xdp-ecmp): a tmpfs of this
    # namespace over a mount point made on the host if it had none (removed
    # on exit).
    if [[ ! -d /run/xdp-ecmp ]]; then
        mkdir /run/xdp-ecmp
        touch "$WORK/made-run-dir"
    fi
    mount -t tmpfs -o mode=0755 xe-run /run/xdp-ecmp
    mkdir /run/systemd/system # "systemd is running", as maintainer scripts ask
    while mountpoint -q /sys/fs/bpf; do umount /sys/fs/bpf; done
    # This image forbids service actions from maintainer scripts (a
    # container build's policy-rc.d, exit 101); a leaf does not.
    rm -f /usr/sbin/policy-rc.d
    write_systemctl /usr/bin/systemctl

    step "dpkg -i $(basename "$DEB1") (over this host, in overlays)"
    dpkg -i "$DEB1" </dev/null >"$WORK/dpkg.log" 2>&1 || fail "dpkg -i: $(cat "$WORK/dpkg.log")"
    getent passwd xdp-ecmp >/dev/null || fail "postinst did not make the user xdp-ecmp"
    [[ $(cat "$SVC/calls") == "--system daemon-reload" ]] || fail "a first install asked systemd for: $(cat "$SVC/calls")"
    if command -v systemd-analyze >/dev/null; then
        o=$(systemd-analyze verify /lib/systemd/system/xdp-ecmp.service 2>&1) || fail "systemd-analyze verify: $o"
        [[ -z $o ]] || fail "systemd-analyze verify: $o"
        echo "systemd-analyze verify /lib/systemd/system/xdp-ecmp.service: clean"
    else
        echo "systemd-analyze not installed: verify not run"
    fi

    # The operator names the ports (and the metrics endpoint).
    sed -i -e 's/^ports = .*/ports = ["xe-in"]/' -e 's/^# metrics = .*/metrics = "127.0.0.1:9477"/' \
        /etc/xdp-ecmp/xdp-ecmp.toml

    step "xdp-ecmp doctor"
    o=$(xe doctor) || fail "doctor found a failure on a prepared host: $o"
    sed 's/^/  /' <<<"$o"
    for want in '^ok   config: /etc/xdp-ecmp/xdp-ecmp.toml reads as `xdp-ecmp run` reads it: ports xe-in' \
        '^ok   port xe-in: veth: native XDP' '^ok   sysctl: net.ipv4.ip_forward = 1' \
        '^ok   sysctl: net.ipv4.fib_multipath_hash_policy = 1' '^ok   program: ' '^doctor: [0-9]* ok, [0-9]* warn, 0 fail$'; do
        grep -q "$want" <<<"$o" || fail "doctor printed no line like $want"
    done
    o=$(xe doctor xe-nope) && fail "doctor passed an unknown port: $o"
    grep -q '^fail port xe-nope: xe-nope does not exist in this network namespace.*fix: create it or correct the name' <<<"$o" ||
        fail "doctor on an unknown port: $o"
    o=$(xe doctor xe-x0) && fail "doctor passed a port with a foreign XDP program: $o"
    grep -q '^fail port xe-x0: an XDP program that xdp-ecmp did not attach.*fix: remove it: ip link set dev xe-x0 xdp off' <<<"$o" ||
        fail "doctor on a port with a foreign XDP program: $o"
    printf 'ports = ["xe-in"]\nbuckets = 3\n' > "$WORK/bad.toml"
    o=$(xe doctor --config "$WORK/bad.toml") && fail "doctor passed a bad config: $o"
    grep -q "^fail config: $WORK/bad.toml: buckets = 3: must be between 64 and 4096" <<<"$o" || fail "doctor on a bad config: $o"
    echo "doctor: an unknown port, a foreign XDP program and a bad config each fail with their fix"

    ip -n "$NS" link set dev xe-x0 xdpgeneric off
    o=$(xe doctor xe-x0) || fail "doctor on xe-x0 after its program was removed: $o"
    echo "doctor xe-x0 passes once \`ip link set dev xe-x0 xdpgeneric off\` removed the foreign program"

    step "systemctl enable --now xdp-ecmp (the stand-in runs the unit's commands)"
    systemctl enable --now xdp-ecmp.service
    [[ -L /etc/systemd/system/multi-user.target.wants/xdp-ecmp.service ]] || fail "enable made no WantedBy link"
    wait_synced 1
    local pid1 prog1 user
    pid1=$(daemon_pid) prog1=$(prog_id)
    [[ -n $prog1 ]] || fail "no XDP program on xe-in after the start"
    user=$(ps -o user= -p "$pid1")
    [[ $user == xdp-ecmp ]] || fail "the daemon runs as $user, not xdp-ecmp"
    [[ -e /sys/fs/bpf/xdp-ecmp/link_xe-in ]] || fail "no pinned link at /sys/fs/bpf/xdp-ecmp/link_xe-in"

    local fwd0
    fwd0=$(forwarded)
    write_traffic "$WORK/traffic.py"
    ip netns exec "$NS" python3 "$WORK/traffic.py" "$WORK" 64 &
    echo $! > "$WORK/traffic.pid"
    local t=0
    until [[ -f $WORK/traffic.progress ]] && (($(json 'd["received"]' < "$WORK/traffic.progress") >= 100)); do
        sleep 0.05
        t=$((t + 1))
        ((t < 100)) || fail "no traffic through xe-in after 5 s"
    done
    local before sent0 sent1
    before=$(buckets)
    (($(wc -l <<<"$before") == 128)) || fail "the anycast group has $(wc -l <<<"$before") buckets, not 128"

    # What an operator looks at (docs/operations.md names these commands).
    o=$(xe show groups) && grep -q '^group [0-9]* resilient buckets 128 ' <<<"$o" || fail "show groups: $o"
    o=$(xe show nexthops) && (($(grep -c '^id [0-9]* via 10\.0\.[0-3]\.2 dev xe-o[0-3] lladdr 02:00:00:10:0[0-3]:99 ' <<<"$o") == 4)) || fail "show nexthops: $o"
    o=$(xe show ports) && grep -q '^xe-in ifindex [0-9]* mac 02:00:00:00:aa:01 ipv4-forwarding on ' <<<"$o" || fail "show ports: $o"
    o=$(xe show capacity) && grep -q '^table ' <<<"$o" || fail "show capacity: $o"
    o=$(xe calc -p udp -s 10.2.0.100 --sport 32700 -d 172.16.255.66 --dport 53 -i xe-in) &&
        grep -q '^xe-o[0-3]$' <<<"$o" || fail "calc: $o"
    o=$(xe stats) && grep -q '^forward ' <<<"$o" || fail "stats: $o"
    o=$(ip netns exec "$NS" curl -sf --max-time 5 http://127.0.0.1:9477/metrics) || fail "no metrics at 127.0.0.1:9477"
    grep -q '^xdp_ecmp_verdict_packets_total{verdict="forward"} [1-9]' <<<"$o" || fail "the metrics lack forwarded packets: $(head -20 <<<"$o")"
    echo "show groups/nexthops/ports/capacity, calc, stats and the metrics answer"

    # The troubleshooting table's messages (docs/operations.md), as an
    # operator meets them.
    local x=/sys/fs/bpf/$TAG-x
    expect_error() { # expect_error TEXT COMMAND...: fails unless COMMAND fails printing TEXT
        local want=$1 out
        shift
        out=$("$@" 2>&1) && fail "$* succeeded: $out"
        grep -qF -- "$want" <<<"$out" || fail "$* did not say \"$want\": $out"
    }
    expect_error "is in use by another xdp-ecmp writer (pid $pid1: /usr/bin/xdp-ecmp run --config /etc/xdp-ecmp/xdp-ecmp.toml" \
        xe run -p xe-in --run-for 1
    expect_error "port swp9 does not exist (check \`ip link\`); nothing was attached" \
        xe --pin-dir "$x" --state-dir "$WORK/x-state" run -p swp9 --run-for 1
    ip -n "$NS" link set dev xe-x0 xdpgeneric obj "$WORK/pass.o" sec xdp
    expect_error "failed in native mode (File exists (os error 17)) and generic mode (Device or resource busy (os error 16))" \
        xe --pin-dir "$x" --state-dir "$WORK/x-state" run -p xe-x0 --run-for 1
    ip -n "$NS" link set dev xe-x0 xdpgeneric off
    rm -rf "$x"
    expect_error "no xdp-ecmp maps pinned under $x (is \`xdp-ecmp run\` or \`attach\` using this --pin-dir?)" \
        xe --pin-dir "$x" show routes
    expect_error "\`ip netns exec\` remounted /sys and hid it; run as \`nsenter --net=/run/netns/NS xdp-ecmp ...\` instead" \
        ip netns exec "$NS" /usr/bin/xdp-ecmp --pin-dir "$x" --state-dir "$WORK/x-state" run -p xe-in --run-for 1
    o=$(xe --pin-dir "$x" --state-dir "$WORK/x-state" attach xe-x0 2>&1) && grep -q '^xe-x0: attached' <<<"$o" || fail "attach: $o"
    o=$(xe --pin-dir "$x" detach xe-x0) && grep -qx 'xe-x0: detached' <<<"$o" || fail "detach: $o"
    expect_error "no port is attached, so there is no port to receive the packet on: start \`xdp-ecmp run -p PORT\`" \
        xe --pin-dir "$x" calc -p udp -s 10.2.0.100 --sport 32700 -d 172.16.255.66 --dport 53
    rm -rf "$x"
    printf 'ports = ["xe-in"]\nbucket = 64\n' > "$WORK/typo.toml"
    expect_error "unknown field \`bucket\`, expected one of" xe run --config "$WORK/typo.toml" --run-for 1
    rm -rf "$x" "$WORK/x-state"
    echo "troubleshooting messages: second writer, missing port, foreign XDP program, no pins, ip netns exec, calc without a port, unknown config key"

    step "dpkg -i $(basename "$DEB2") under traffic (the upgrade)"
    sent0=$(json 'd["sent"]' < "$WORK/traffic.progress")
    local u0 u1
    u0=$(date +%s%N)
    dpkg -i "$DEB2" </dev/null >>"$WORK/dpkg.log" 2>&1 || fail "dpkg -i (upgrade): $(tail -20 "$WORK/dpkg.log")"
    wait_synced 2
    u1=$(date +%s%N)
    sent1=$(json 'd["sent"]' < "$WORK/traffic.progress")
    grep -qx -- '--system daemon-reload' <(tail -n +2 "$SVC/calls") || fail "the upgrade did not reload systemd: $(cat "$SVC/calls")"
    grep -q 'try-restart xdp-ecmp.service' "$SVC/calls" || fail "postinst did not restart the daemon: $(cat "$SVC/calls")"
    local pid2 prog2
    pid2=$(daemon_pid) prog2=$(prog_id)
    [[ $pid2 != "$pid1" ]] && alive "$pid2" || fail "no new daemon after the upgrade"
    alive "$pid1" && fail "the old daemon ($pid1) still runs"
    [[ -n $prog2 && $prog2 != "$prog1" ]] || fail "the new daemon did not swap its program into the link (program $prog1 -> $prog2)"
    sleep 1
    touch "$WORK/traffic.stop"
    wait "$(cat "$WORK/traffic.pid")" || fail "the traffic generator failed"
    rm -f "$WORK/traffic.pid"
    local after r sent got moved seen fwd1
    after=$(buckets)
    fwd1=$(forwarded)
    r=$(cat "$WORK/traffic.json")
    sent=$(json 'd["sent"]' <<<"$r") got=$(json 'sum(d["received"].values())' <<<"$r")
    moved=$(json 'len(d["moved"])' <<<"$r") seen=$(json 'd["flows_seen"]' <<<"$r")
    echo "upgrade: dpkg -i to the new daemon in sync $(( (u1 - u0) / 1000000 )) ms, $((sent1 - sent0)) frames sent meanwhile;" \
        "in all $sent frames sent, $got received ($(json 'd["received"]' <<<"$r")), $((fwd1 - fwd0)) counted forward;" \
        "$seen flows, $moved left by another port than before; program $prog1 -> $prog2, daemon $pid1 -> $pid2"
    ((sent1 - sent0 > 0)) || fail "no frame was sent during the upgrade"
    ((got == sent)) || fail "$((sent - got)) of $sent frames never reached an egress peer"
    ((fwd1 - fwd0 == sent)) || fail "xdp-ecmp forwarded $((fwd1 - fwd0)) frames of $sent sent: the rest went to the kernel"
    ((seen == 64 && moved == 0)) || fail "flows seen $seen (64 sent), moved $moved: $(json 'd["moved"]' <<<"$r")"
    (($(json 'len([n for n in d["received"].values() if n])' <<<"$r") == 4)) || fail "the flows did not spread over the four ports: $r"
    [[ $before == "$after" ]] || fail "buckets changed across the upgrade: $(diff <(echo "$before") <(echo "$after") | head)"
    echo "the anycast group's 128 buckets: identical before and after"
    dpkg -s xdp-ecmp | grep -q "^Version: $(dpkg-deb -f "$DEB2" Version)$" || fail "the upgrade did not install $(dpkg-deb -f "$DEB2" Version)"
    grep -q '^ports = \["xe-in"\]$' /etc/xdp-ecmp/xdp-ecmp.toml || fail "the upgrade replaced the operator's config"
    echo "the operator's /etc/xdp-ecmp/xdp-ecmp.toml kept across the upgrade"

    step "dpkg -r, dpkg -P"
    dpkg -r xdp-ecmp </dev/null >>"$WORK/dpkg.log" 2>&1 || fail "dpkg -r: $(tail -20 "$WORK/dpkg.log")"
    grep -q 'stop xdp-ecmp.service' "$SVC/calls" || fail "prerm did not stop the daemon"
    alive "$pid2" && fail "the daemon still runs after dpkg -r"
    [[ -z $(prog_id) ]] || fail "dpkg -r left the program on xe-in"
    [[ ! -e /sys/fs/bpf/xdp-ecmp ]] || fail "dpkg -r left the pins"
    [[ -f /etc/xdp-ecmp/xdp-ecmp.toml && ! -e /usr/bin/xdp-ecmp ]] || fail "dpkg -r: the binary stays or the conffile went"
    dpkg -P xdp-ecmp </dev/null >>"$WORK/dpkg.log" 2>&1 || fail "dpkg -P: $(tail -20 "$WORK/dpkg.log")"
    [[ ! -e /etc/xdp-ecmp && ! -e /var/lib/xdp-ecmp ]] || fail "dpkg -P left /etc/xdp-ecmp or /var/lib/xdp-ecmp"
    echo "dpkg -r: daemon stopped, xe-in detached, pins removed; dpkg -P: config and state removed"
}

TAG=xe-t$$-pkg
if [[ ${1:-} == --upgrade-phase ]]; then
    NS=$2 WORK=$3 DEB1=$4 DEB2=$5 T0=$6
    SVC=$WORK/svc
    upgrade_phase
    exit 0
fi

NS=$TAG
WORK=/tmp/$TAG
SVC=$WORK/svc
T0=$(date +%s%N)
cleanup() {
    local rc=$? f
    for f in "$SVC"/*.pid "$WORK"/traffic.pid; do
        [[ -e $f ]] && kill -KILL "$(cat "$f")" 2>/dev/null
    done
    ip netns del "$NS" 2>/dev/null || true
    [[ ! -e $WORK/made-run-dir ]] || rmdir /run/xdp-ecmp 2>/dev/null || true
    rm -rf "$WORK"
    ((rc == 0)) || echo "package test: failed (exit $rc); removed $NS and $WORK" >&2
}
trap cleanup EXIT
mkdir -p "$WORK" "$SVC"
# The metrics are read as the operator's guide reads them.
if ! command -v curl >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl >/dev/null ||
        fail "curl is missing and could not be installed"
fi

# --- the packages (version N and the next Debian revision), from the
# release binary the test run has built.
target_dir=$(cargo metadata --format-version 1 --no-deps --offline |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
BIN=$target_dir/release/xdp-ecmp
if [[ ! -x $BIN ]]; then
    step "no release binary yet: cargo build --release -p xdp-ecmp"
    cargo build --release -p xdp-ecmp
fi
if [[ -z ${DEBEMAIL:-} ]] && ! git config user.email >/dev/null 2>&1; then
    export DEBFULLNAME="xdp-ecmp package test" DEBEMAIL="root@localhost"
fi
step "scripts/package.sh --binary $BIN"
DEB1=$(scripts/package.sh --binary "$BIN" --revision 1 --out "$WORK/debs" 2>"$WORK/package.log" | tail -1) ||
    fail "scripts/package.sh: $(cat "$WORK/package.log")"
DEB2=$(scripts/package.sh --binary "$BIN" --revision 2 --out "$WORK/debs" 2>>"$WORK/package.log" | tail -1) ||
    fail "scripts/package.sh --revision 2: $(cat "$WORK/package.log")"
sort -u "$WORK/package.log" | sed 's/^/  /'
dpkg-deb --info "$DEB1" >/dev/null || fail "dpkg-deb --info refuses $DEB1"
version=$(dpkg-deb -f "$DEB1" Version)
[[ $(dpkg-deb -f "$DEB2" Version) == "${version%-1}-2" ]] || fail "the second package is not the next revision of $version"
echo "$(basename "$DEB1"): $(stat -c %s "$DEB1") bytes, Depends: $(dpkg-deb -f "$DEB1" Depends)"

# --- a clean root: dpkg --root with the maintainer scripts outside a chroot
# and DPKG_ROOT set (they must touch only the root); files, conffile, purge.
step "dpkg --root into a clean root"
CLEAN=$WORK/root
mkdir -p "$CLEAN/var/lib/dpkg/info" "$CLEAN/var/lib/dpkg/updates" "$CLEAN/var/lib/dpkg/triggers"
touch "$CLEAN/var/lib/dpkg/status" "$CLEAN/var/lib/dpkg/available"
host_user=$(getent passwd xdp-ecmp || true)
# The clean root has no libc6, libelf1, ...: those dependencies are unmet there.
cleandpkg() { dpkg --root="$CLEAN" --force-script-chrootless --force-not-root --force-depends "$@" </dev/null; }
cleandpkg -i "$DEB1" >"$WORK/dpkg-clean.log" 2>&1 || fail "dpkg --root -i: $(cat "$WORK/dpkg-clean.log")"
[[ $(getent passwd xdp-ecmp || true) == "$host_user" ]] || fail "installing into $CLEAN changed this host's users"
grep -q '^xdp-ecmp:' "$CLEAN/etc/passwd" || fail "postinst did not make the user xdp-ecmp in the root"
status=$(dpkg --root="$CLEAN" -s xdp-ecmp)
grep -q '^Status: install ok installed' <<<"$status" || fail "not installed: $status"
grep -A1 '^Conffiles:' <<<"$status" | grep -q '^ /etc/xdp-ecmp/xdp-ecmp.toml [0-9a-f]\{32\}$' ||
    fail "/etc/xdp-ecmp/xdp-ecmp.toml is not a conffile: $status"
listing=$(dpkg --root="$CLEAN" -L xdp-ecmp)
missing=0
while read -r f; do
    [[ $f == /. || -e $CLEAN$f ]] || { echo "missing: $f" >&2; missing=$((missing + 1)); }
done <<<"$listing"
((missing == 0)) || fail "$missing files of the package are not under $CLEAN"
for f in /usr/bin/xdp-ecmp /lib/systemd/system/xdp-ecmp.service /usr/lib/sysusers.d/xdp-ecmp.conf \
    /etc/xdp-ecmp/xdp-ecmp.toml /var/lib/xdp-ecmp /usr/share/man/man1/xdp-ecmp.1.gz \
    /usr/share/man/man1/xdp-ecmp-doctor.1.gz /usr/share/bash-completion/completions/xdp-ecmp \
    /usr/share/zsh/vendor-completions/_xdp-ecmp /usr/share/fish/vendor_completions.d/xdp-ecmp.fish \
    /usr/share/doc/xdp-ecmp/changelog.Debian.gz /usr/share/doc/xdp-ecmp/copyright \
    /usr/share/doc/xdp-ecmp/operations.md; do
    grep -qx "$f" <<<"$listing" || fail "the package lacks $f"
done
echo "clean root: $(grep -vc '^/\.$' <<<"$listing") paths installed, the conffile marked, the user made in the root only"
zcat "$CLEAN/usr/share/doc/xdp-ecmp/changelog.Debian.gz" | head -1 | grep -q "^xdp-ecmp ($version) " ||
    fail "changelog.Debian.gz does not start with this version"
grep -q '^ExecStart=/usr/bin/xdp-ecmp run ' "$CLEAN/lib/systemd/system/xdp-ecmp.service" ||
    fail "the installed unit does not start /usr/bin/xdp-ecmp"
v=$("$CLEAN/usr/bin/xdp-ecmp" --version) || fail "xdp-ecmp --version failed"
grep -qx "xdp-ecmp ${version%-*}" <<<"$v" || fail "--version: $v"
for want in '^commit: ' '^bpf layout: [0-9]' '^kernel: ' '^  XDP programs: yes' '^  native XDP: ' '^  AF_XDP: ' '^  BTF: ' '^  bpffs: '; do
    grep -q "$want" <<<"$v" || fail "--version lacks $want: $v"
done
echo "installed xdp-ecmp --version:"
sed 's/^/  /' <<<"$v"
h=$("$CLEAN/usr/bin/xdp-ecmp" --help) || fail "xdp-ecmp --help failed"
for c in run show calc attach detach stats flush-flows doctor; do
    grep -q "^  $c " <<<"$h" || fail "--help does not list $c: $h"
done
! grep -qE 'completions|man-pages' <<<"$h" || fail "--help shows the package build's hidden commands"
zcat "$CLEAN/usr/share/man/man1/xdp-ecmp-doctor.1.gz" | grep -q '^\.TH xdp-ecmp-doctor' || fail "the doctor man page has no title"
cleandpkg -P xdp-ecmp >>"$WORK/dpkg-clean.log" 2>&1 || fail "dpkg --root -P: $(cat "$WORK/dpkg-clean.log")"
for f in /usr/bin/xdp-ecmp /etc/xdp-ecmp /var/lib/xdp-ecmp /lib/systemd/system/xdp-ecmp.service; do
    [[ ! -e $CLEAN$f ]] || fail "purge left $f"
done
echo "clean root: purge removed the files, the conffile and the state directory"

# --- the network: an ingress port xe-in (its peer xe-h0 sends) and four
# egress ports xe-o0..3 towards 10.0.N.2, resolved permanently, whose peers
# xe-p0..3 receive (GRO on: they take redirected frames); an anycast /32
# over the four. xe-x0 carries an XDP program xdp-ecmp did not attach.
step "namespace $NS"
ip netns add "$NS"
n() { ip -n "$NS" "$@"; }
n link set lo up
n link add xe-h0 type veth peer name xe-in
n link set xe-in address 02:00:00:00:aa:01
for i in 0 1 2 3; do n link add "xe-o$i" type veth peer name "xe-p$i"; done
n link add xe-x0 type veth peer name xe-x1
for d in xe-h0 xe-in xe-o0 xe-o1 xe-o2 xe-o3 xe-p0 xe-p1 xe-p2 xe-p3 xe-x0 xe-x1; do n link set "$d" up; done
ip netns exec "$NS" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
    net.ipv4.conf.xe-in.rp_filter=0 net.ipv4.fib_multipath_hash_policy=1 \
    net.ipv6.fib_multipath_hash_policy=1 net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
route=(route replace 172.16.255.66/32)
for i in 0 1 2 3; do
    n addr add "10.0.$i.1/24" dev "xe-o$i"
    n neigh replace "10.0.$i.2" lladdr "02:00:00:10:0$i:99" dev "xe-o$i" nud permanent
    ip netns exec "$NS" ethtool -K "xe-p$i" gro on >/dev/null
    route+=(nexthop via "10.0.$i.2")
done
n "${route[@]}"
printf '%s\n' '__attribute__((section("xdp"), used)) int pass(void *ctx) { return 2; }' \
    'char _license[] __attribute__((section("license"), used)) = "GPL";' > "$WORK/pass.c"
clang -O2 -target bpf -c "$WORK/pass.c" -o "$WORK/pass.o" || fail "clang could not build a test XDP program (scripts/setup.sh installs clang)"
n link set dev xe-x0 xdpgeneric obj "$WORK/pass.o" sec xdp

# --- the upgrade, in a private mount namespace.
unshare --mount --propagation private "$ROOT_DIR/scripts/package-test.sh" --upgrade-phase \
    "$NS" "$WORK" "$DEB1" "$DEB2" "$T0" || fail "the upgrade phase failed"
step "passed"
