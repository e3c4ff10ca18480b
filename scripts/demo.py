#!/usr/bin/env python3
# The design guide, live: flows over the anycast testbed, failures and returns under modulo and resilient hashing, TCP across a rehash, and flow pinning.
"""Walks the anycast design guide on the veth testbed (scripts/testbed.sh).

Every figure printed is measured on the testbed in this run. `--check` turns
each claim of the guide into an assertion (the scenario tests); `--json`
prints one JSON document instead of tables.

Whatever way it ends (done, a failed step or claim, SIGINT, SIGTERM, SIGHUP)
it ends what it started and brings the testbed down; `--keep` keeps it up
after a run that succeeded, `--keep-on-failure` after a failed one too.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTBED = os.path.join(ROOT, "scripts", "testbed.sh")
ANYCAST_PY = os.path.join(ROOT, "scripts", "anycast.py")
ANYCAST = "172.16.255.66"
CLIENT = "10.2.0.100"
SEED = "5eed0001"
FLOWS = (20000, 20999)  # one UDP flow per client source port
ON_LEAF03 = "server03"
# Seconds flows stay active around a change; BGP needs longer to bring a
# leaf's sessions back than static routing needs to restore its links.
WINDOW = {"static": 3, "bgp": 8}
MODE = "static"
ENGINE = "xdp"


def sh(*args, check=True):
    r = subprocess.run(args, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"demo: {' '.join(args)} failed: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def testbed(*args):
    return sh(TESTBED, *args)


def client(*args):
    out = testbed("exec", "client", "python3", ANYCAST_PY, *args)
    return json.loads(out)


def query(lo=FLOWS[0], hi=FLOWS[1]):
    return client("query", "--dst", ANYCAST, "--src", CLIENT, "--sports", f"{lo}-{hi}")["flows"]


def spine02_daemon(*flags):
    testbed("daemon", "spine02", "--hash-seed", SEED, "-p", "swp51", "-p", "swp1", "-p", "swp2",
            "-p", "swp3", "-p", "swp4", *flags)


MODES = {
    "modulo": ["--plain-groups", "modulo"],
    "resilient, idle timer 0": ["--plain-groups", "resilient", "--idle-timer", "0"],
    "resilient, idle-aware": ["--plain-groups", "resilient", "--idle-timer", "3"],
}
IDLE_AWARE_TIMER = 3.0  # seconds, as in MODES


def leaf03(state):
    # leaf03 fails (its uplinks go down) or returns (testbed.sh restores what the links took).
    testbed("fail" if state == "down" else "restore", "leaf03")
    time.sleep(0.3)


def moved(before, after, only=None):
    keys = [k for k in before if before[k] and after.get(k) and (only is None or only(k))]
    return sum(1 for k in keys if before[k] != after[k]), len(keys)


def table(title, header, rows):
    print(f"\n{title}")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths))
    print(line(header))
    print("  " + "  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


def pct(a, b):
    return f"{a}/{b} ({100.0 * a / b:.1f}%)" if b else "0/0"


class Report:
    def __init__(self, check, as_json):
        self.check, self.json = check, as_json
        self.data, self.results = {}, []

    def claim(self, name, ok, detail):
        self.results.append((name, bool(ok), detail))
        if not self.json:
            print(f"  [{'ok' if ok else 'FAILED'}] {name}: {detail}")


def step_split(r):
    flows = query()
    split = {}
    for s in flows.values():
        split[s] = split.get(s, 0) + 1
    total = len(flows)
    r.data["split"] = split
    if not r.json:
        table(f"1. {total} client flows (UDP, source ports {FLOWS[0]}-{FLOWS[1]}) over the four anycast servers",
              ["server", "flows", "share"], [[k, v, f"{100.0 * v / total:.1f}%"] for k, v in sorted(split.items(), key=lambda x: str(x[0]))])
    r.claim("fig. 1: every server takes a share", len([k for k in split if k]) == 4 and min(split.values()) > total * 0.15,
            f"{len(split)} servers, smallest share {min(split.values())}/{total}")
    if ENGINE == "afxdp":
        time.sleep(0.5)  # the daemon stores the engine's counters every 200 ms
        stats = json.loads(testbed("xdp-ecmp", "spine02", "stats", "--json"))
        by = {(x.get("engine", "xdp"), x.get("verdict")): x.get("packets", 0) for x in stats}
        engine, total_fwd = by.get(("afxdp", "forward"), 0), by.get(("xdp", "forward"), 0)
        r.data["spine02_forwarded"] = dict(total=total_fwd, afxdp=engine)
        r.claim("the AF_XDP engine forwards on spine02 (every query crosses it)", engine >= total,
                f"{engine} of {total_fwd} forwarded frames by the engine, for {total} queries")
    return flows


def step_two_flows(r):
    rows, servers = [], []
    for sport in (32700, 31884):
        calc = json.loads(testbed("xdp-ecmp", "spine02", "calc", "-p", "udp", "-s", CLIENT, "--sport", str(sport),
                                  "-d", ANYCAST, "--dport", "53", "-i", "swp51", "--json"))
        server = query(sport, sport)[str(sport)]
        servers.append(server)
        rows.append([sport, calc["egress"], calc["bucket"], server])
    r.data["two_flows"] = rows
    if not r.json:
        table("2. two flows that differ only in source port (spine02: xdp-ecmp calc, as the guide's cl-ecmpcalc)",
              ["sport", "calc: egress on spine02", "bucket", "answered by"], rows)
    # The guide's pair may share a path under another seed: the claim is about ports in general.
    flows = query(21000, 21063)
    distinct = len(set(flows.values()))
    r.claim("fig. 2: flows differing only in source port take different paths", distinct > 1,
            f"64 source ports of one client reached {distinct} servers")
    ro = testbed("exec", "spine02", "ip", "route", "show", ANYCAST)
    nh = ro.count("nexthop via")
    r.data["ip_route_show"] = ro
    if not r.json:
        print("\n  spine02$ ip route show " + ANYCAST)
        print("".join("  " + l + "\n" for l in ro.strip().splitlines()))
    r.claim("ip route show lists the four next hops", nh == 4, f"{nh} nexthop lines")


PICTURES = "/tmp/xdp-ecmp-demo"  # --pictures
LEAF03_PORT = "swp3"  # spine02's port towards leaf03


def buckets_listing(name):
    # spine02's buckets of the anycast route, listed by its prefix (a
    # multipath route's group changes with its next hops), kept as NAME.json.
    out = testbed("xdp-ecmp", "spine02", "show", "buckets", ANYCAST + "/32", "--json")
    with open(os.path.join(PICTURES, name + ".json"), "w") as f:
        f.write(out)
    return json.loads(out)


def bucket_picture(name, since=None):
    # NAME.png: the bucket map, framing the buckets moved since listing SINCE.
    path = os.path.join(PICTURES, name + ".png")
    args = ["xdp-ecmp", "spine02", "show", "buckets", ANYCAST + "/32", "--png", path]
    if since:
        args += ["--moved-since", os.path.join(PICTURES, since + ".json")]
    line = testbed(*args).strip()
    m = re.search(r", (\d+) moved since ", line)
    return path, int(m.group(1)) if m else 0


def moved_buckets(a, b):
    return [(x, y) for x, y in zip(a, b) if x["nexthop"] != y["nexthop"]]


def pictures(r, stage):
    # The bucket maps of figs. 3-7 (resilient, idle timer 0): before leaf03
    # fails, after, and after it returns; each framing what moved.
    if stage == "before":
        os.makedirs(PICTURES, exist_ok=True)
        r.pics = {"before": buckets_listing("before")}
        bucket_picture("before")
    elif stage == "failed":
        r.pics["failed"] = buckets_listing("failed")
        r.pics["failed_png"] = bucket_picture("failed", "before")
    else:
        # Idle timer 0: leaf03 takes its share back at the next sync.
        t0 = time.time()
        while True:
            now = buckets_listing("returned")
            if any(b["dev"] == LEAF03_PORT for b in now) or time.time() - t0 > 10:
                break
            time.sleep(0.3)
        r.pics["returned"] = now
        r.pics["returned_png"] = bucket_picture("returned", "failed")


def picture_claims(r):
    b0, b1, b2 = r.pics["before"], r.pics["failed"], r.pics["returned"]
    (p1, n1), (p2, n2) = r.pics["failed_png"], r.pics["returned_png"]
    gone = moved_buckets(b0, b1)
    back = moved_buckets(b1, b2)
    on3 = sum(1 for b in b0 if b["dev"] == LEAF03_PORT)
    r.data["pictures"] = dict(dir=PICTURES, before=os.path.join(PICTURES, "before.png"), failed=p1, returned=p2,
                              moved_on_failure=n1, moved_on_return=n2, buckets=len(b0), leaf03_buckets=on3)
    if not r.json:
        print(f"\n  bucket maps of spine02's anycast route ({len(b0)} buckets): {PICTURES}/before.png, "
              f"failed.png ({n1} framed: leaf03's), returned.png ({n2} framed: back to leaf03)")
    r.claim("fig. 7 as a picture: the buckets framed after leaf03 fails are exactly leaf03's",
            on3 > 0 and n1 == len(gone) == on3 and all(x["dev"] == LEAF03_PORT for x, _ in gone),
            f"{n1} framed, {len(gone)} changed, leaf03 held {on3} of {len(b0)}")
    r.claim("the picture after leaf03 returns frames only buckets handed back to leaf03",
            n2 == len(back) > 0 and all(y["dev"] == LEAF03_PORT for _, y in back),
            f"{n2} framed, {len(back)} changed, now on {LEAF03_PORT}: {sum(1 for _, y in back if y['dev'] == LEAF03_PORT)}")


def step_failure(r):
    rows = {}
    for mode in ("modulo", "resilient, idle timer 0"):
        spine02_daemon(*MODES[mode])
        draw = mode == "resilient, idle timer 0"
        before = query()
        if draw:
            pictures(r, "before")
        leaf03("down")
        after = query()
        if draw:
            pictures(r, "failed")
        leaf03("up")
        if draw:
            pictures(r, "returned")
        total_moved, total = moved(before, after)
        unrelated, n_unrelated = moved(before, after, lambda k: before[k] != ON_LEAF03)
        on3 = sum(1 for k in before if before[k] == ON_LEAF03)
        unanswered = sum(1 for v in after.values() if not v)
        rows[mode] = dict(moved=total_moved, total=total, unrelated_moved=unrelated, unrelated=n_unrelated, ideal=on3,
                          unanswered=unanswered)
    r.data["failure"] = rows
    if not r.json:
        table("3. leaf03 fails: which flows moved (1000 flows; ideal: only leaf03's own)",
              ["spine02 hashing", "flows moved", "unrelated flows moved", "ideal (leaf03's flows)"],
              [[m, pct(v["moved"], v["total"]), pct(v["unrelated_moved"], v["unrelated"]), pct(v["ideal"], v["total"])] for m, v in rows.items()])
    m, res = rows["modulo"], rows["resilient, idle timer 0"]
    r.claim("fig. 3: after leaf03 fails its flows are answered by other servers", m["unanswered"] == 0 and res["unanswered"] == 0,
            f"unanswered after failure: modulo {m['unanswered']}, resilient {res['unanswered']}")
    r.claim("figs. 5-6: modulo hashing moves unrelated flows on removal", m["unrelated_moved"] > m["unrelated"] * 0.2,
            f"{pct(m['unrelated_moved'], m['unrelated'])}")
    r.claim("fig. 7: resilient hashing keeps unrelated flows on removal", res["unrelated_moved"] == 0 and res["moved"] == res["ideal"],
            f"unrelated moved {res['unrelated_moved']}, moved {res['moved']} = leaf03's {res['ideal']}")
    picture_claims(r)


def step_return(r):
    rows = {}
    lo, hi = FLOWS
    for mode in MODES:
        # The idle-aware claim is about active flows: a round in which the
        # client fell silent for as long as the idle timer (a starved CPU)
        # proves nothing and is run again (at most twice more).
        for attempt in range(3):
            spine02_daemon(*MODES[mode])
            leaf03("down")
            # Flows stay active (a query every 0.2 s each) while leaf03 returns.
            hold = subprocess.Popen([TESTBED, "exec", "client", "python3", ANYCAST_PY, "hold", "--dst", ANYCAST, "--src", CLIENT,
                                     "--sports", f"{lo}-{hi}", "--seconds", str(WINDOW[MODE]), "--interval", "0.2"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(1.0)
            leaf03("up")
            out, err = hold.communicate(timeout=60)
            if hold.returncode != 0:
                raise SystemExit(f"demo: hold failed: {err}")
            h = json.loads(out)
            rows[mode] = dict(moved=len(h["changed"]), total=len(h["flows"]), max_gap=h["max_gap"], attempts=attempt + 1)
            if mode != "resilient, idle-aware" or h["max_gap"] < IDLE_AWARE_TIMER - 0.1:
                break
            if not r.json:
                print(f"  (idle-aware round {attempt + 1}: the client paused {h['max_gap']} s, as long as the idle timer; again)")
    r.data["return"] = rows
    if not r.json:
        table("4. leaf03 returns while 1000 flows are active: flows moved on addition (ideal: 0)",
              ["spine02 hashing", "active flows moved", "client's longest pause"],
              [[m, pct(v["moved"], v["total"]), f"{v['max_gap']} s"] for m, v in rows.items()])
    r.claim("fig. 4: modulo hashing rehashes flows when a next hop is added", rows["modulo"]["moved"] > 0.3 * rows["modulo"]["total"],
            pct(rows["modulo"]["moved"], rows["modulo"]["total"]))
    r.claim("the guide: resilient hashing cannot prevent rehashing on addition (idle timer 0)",
            0 < rows["resilient, idle timer 0"]["moved"] < rows["modulo"]["moved"], pct(rows["resilient, idle timer 0"]["moved"], rows["resilient, idle timer 0"]["total"]))
    ia = rows["resilient, idle-aware"]
    r.claim("idle-aware resilient hashing moves no active flow on addition", ia["moved"] == 0 and ia["max_gap"] < IDLE_AWARE_TIMER,
            f"{pct(ia['moved'], ia['total'])}, longest client pause {ia['max_gap']} s (idle timer {IDLE_AWARE_TIMER:g} s)"
            + (f", after {ia['attempts']} rounds" if ia["attempts"] > 1 else ""))


def step_tcp(r):
    rows = {}
    for mode in ("modulo", "resilient, idle-aware"):
        spine02_daemon(*MODES[mode])
        leaf03("down")
        sports = "40000-40015"
        stream = subprocess.Popen([TESTBED, "exec", "client", "python3", ANYCAST_PY, "stream", "--dst", ANYCAST, "--src", CLIENT,
                                   "--sports", sports, "--seconds", str(WINDOW[MODE]), "--interval", "0.1"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        leaf03("up")
        out, err = stream.communicate(timeout=60)
        if stream.returncode != 0:
            raise SystemExit(f"demo: stream failed: {err}")
        s = json.loads(out)
        rows[mode] = dict(reset=s["reset"], complete=s["complete"], total=len(s["connections"]))
    r.data["tcp"] = rows
    if not r.json:
        table("5. 16 long TCP transfers while leaf03 returns (the guide's caveat)",
              ["spine02 hashing", "reset", "complete"], [[m, pct(v["reset"], v["total"]), pct(v["complete"], v["total"])] for m, v in rows.items()])
    r.claim("TCP: a rehash resets established transfers (modulo)", rows["modulo"]["reset"] > 0, f"{rows['modulo']['reset']} reset")
    r.claim("TCP: idle-aware resilient hashing keeps every transfer", rows["resilient, idle-aware"]["complete"] == rows["resilient, idle-aware"]["total"],
            f"{rows['resilient, idle-aware']['complete']}/{rows['resilient, idle-aware']['total']} complete")


def step_ftp(r):
    # FTP-like: a control connection, then a data connection from another port.
    control = client("connect", "--dst", ANYCAST, "--src", CLIENT, "--sport", "45000")["server"]
    data = [client("connect", "--dst", ANYCAST, "--src", CLIENT, "--sport", str(p))["server"] for p in range(45001, 45017)]
    elsewhere = sum(1 for d in data if d != control)
    r.data["ftp"] = dict(control=control, data=data)
    if not r.json:
        print(f"\n6. FTP-like: control connection on {control}; of 16 data connections from other ports, {elsewhere} landed on another server")
    r.claim("a second connection of one application may land on another server", elsewhere > 0, f"{elsewhere}/16 elsewhere")


def spine02_paths():
    return testbed("exec", "spine02", "ip", "route", "show", ANYCAST).count("nexthop via")


def wait_paths(n):
    deadline = time.time() + 20
    while spine02_paths() != n:
        if time.time() > deadline:
            raise SystemExit(f"demo: spine02 never reached {n} paths to {ANYCAST}")
        time.sleep(0.2)
    time.sleep(0.5)


def step_withdraw(r):
    # BGP: server03 stops announcing the anycast /32 (e.g. its service is drained).
    spine02_daemon(*MODES["resilient, idle timer 0"])
    before = query()
    testbed("withdraw", "server03")
    wait_paths(3)
    after = query()
    testbed("announce", "server03")
    wait_paths(4)
    total_moved, total = moved(before, after)
    unrelated, n_unrelated = moved(before, after, lambda k: before[k] != "server03")
    on3 = sum(1 for k in before if before[k] == "server03")
    still3 = sum(1 for v in after.values() if v == "server03")
    r.data["withdraw"] = dict(moved=total_moved, total=total, unrelated_moved=unrelated, server03_flows=on3)
    if not r.json:
        table("7. BGP: server03 withdraws its announcement (spine02 resilient)", ["flows moved", "unrelated flows moved", "server03's flows"],
              [[pct(total_moved, total), pct(unrelated, n_unrelated), on3]])
    r.claim("BGP: a withdrawn server leaves the groups and only its flows move",
            still3 == 0 and unrelated == 0 and total_moved == on3, f"moved {total_moved} = server03's {on3}, unrelated {unrelated}")


# 8. Flow pinning. Long TCP connections (the guide's caveat: a rehash resets
# them) across four events that move buckets, each run twice on spine02:
# without pinning, then with --pin-flows over the anycast /32 (same flags).
PIN_FLAGS = ["--pin-flows", f"{ANYCAST}/32"]
PIN_CONNS = 32          # TCP connections per run
PIN_IDLE_TIMER = 1      # s: the idle timer of the idle-aware events
PIN_INTERVAL = 3.0      # s between a stream's lines: every connection idles 2 s past the idle timer
PIN_BUSY_INTERVAL = 0.5  # s: event b's connections stay busy (its idle timer is 30 s)
PIN_ATTEMPTS = 3        # a round the noise of the VM made meaningless is run again, at most twice more
SPINE02_LOG = "/run/xe-testbed/spine02.log"
STAMP_PORTS = [22000]   # next free block of UDP source ports that stamp every bucket (event b)


def spine02_route():
    return testbed("exec", "spine02", "ip", "route", "show", ANYCAST)


def live_paths(route):
    return sum(1 for l in route.splitlines() if "nexthop via" in l and "dead" not in l and "linkdown" not in l)


def weighted(route):
    return any(w != "1" for w in re.findall(r"\bweight (\d+)", route))


def static_route(w1=1):
    # spine02's route as testbed.sh writes it, leaf01's path weighted w1.
    hops = []
    for i in (1, 2, 3, 4):
        hops += ["nexthop", "via", f"10.2.{i}.1", "dev", f"swp{i}"] + (["weight", str(w1)] if i == 1 and w1 != 1 else [])
    return ["exec", "spine02", "ip", "route", "replace", f"{ANYCAST}/32", *hops]


def vtysh(node, *commands):
    # FRR in a testbed node (its pathspace is the node's namespace, xe-tb-NODE).
    args = ["exec", node, "vtysh", "-N", f"xe-tb-{node}"]
    for c in commands:
        args += ["-c", c]
    testbed(*args)


def lbw_out(leaf, bandwidth):
    # The leaf advertises the anycast /32 to spine02 (its swp52) with a BGP
    # link-bandwidth extended community (bandwidth in Mbit/s), or stops (None).
    i = leaf[-1]
    if bandwidth is None:
        vtysh(leaf, "configure terminal", f"router bgp 6500{i}", "address-family ipv4 unicast",
              "no neighbor swp52 route-map XE-LBW out")
    else:
        vtysh(leaf, "configure terminal", "route-map XE-LBW permit 10", f"set extcommunity bandwidth {bandwidth}", "exit",
              f"router bgp 6500{i}", "address-family ipv4 unicast", "neighbor swp52 route-map XE-LBW out")


def until_route(done, timeout=30.0):
    # Polls spine02's route until done(route) holds: the change happened after
    # the start of the last poll that saw the old route and before the end of
    # the first that saw the new one (both CLOCK_MONOTONIC, as anycast.py's --times).
    lo = time.monotonic()
    deadline = lo + timeout
    while True:
        start = time.monotonic()
        route = spine02_route()
        end = time.monotonic()
        if done(route):
            return lo, end
        lo = start
        if end > deadline:
            raise SystemExit(f"demo: spine02's route to {ANYCAST} never changed as expected:\n{route}")
        time.sleep(0.02)


def change(args, done):
    # Runs testbed.sh ARGS in the background and returns when spine02's route shows the change: (after, by).
    p = subprocess.Popen([TESTBED, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lo, hi = until_route(done)
    _, err = p.communicate(timeout=60)
    if p.returncode != 0:
        raise SystemExit(f"demo: testbed.sh {' '.join(args)} failed: {err.strip()}")
    return lo, hi


def route_pinned():
    # Whether spine02's program treats the anycast route as pinned (calc's pin field).
    calc = json.loads(testbed("xdp-ecmp", "spine02", "calc", "-p", "tcp", "-s", CLIENT, "--sport", "49999",
                              "-d", ANYCAST, "--dport", "80", "-i", "swp51", "--json"))
    return calc.get("pin") is not None


def stamp_buckets():
    # 1000 new UDP flows: every bucket of the group carries traffic now (new
    # ports each time: a pinned flow's packets do not stamp its bucket).
    lo = STAMP_PORTS[0]
    STAMP_PORTS[0] += 1000
    query(lo, lo + 999)


def log_mark():
    try:
        return os.path.getsize(SPINE02_LOG)
    except OSError:
        return 0


def buckets_moved_since(mark):
    # Buckets spine02's daemon moved (its log: "... buckets moved ... moved=N") since the mark.
    try:
        with open(SPINE02_LOG, "rb") as f:
            f.seek(mark)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    return sum(int(n) for n in re.findall(r"buckets moved.*?\bmoved=(\d+)", text))


def flow_table():
    return json.loads(testbed("xdp-ecmp", "spine02", "show", "flows", "--json"))


def pin_events():
    def leaf03_down():
        leaf03("down")

    def leaf03_returns():
        return change(["restore", "leaf03"], lambda ro: live_paths(ro) == 4)

    def forced_setup():
        leaf03("down")
        stamp_buckets()  # after the failure: the buckets leaf03 left are busy too

    def weights_up():
        if MODE == "static":
            return change(static_route(3), weighted)
        # BGP: leaf01 advertises 300 Mbit/s and the other leaves 100 (set by
        # weights_setup): with every path carrying a link bandwidth, FRR gives
        # spine02 weighted ECMP (weights 50/16/16/16) in a new nexthop group.
        lo = time.monotonic()
        lbw_out("leaf01", 300)
        return (lo, until_route(weighted)[1])

    def weights_setup():
        if MODE == "bgp":
            # Three of four paths with a link bandwidth: FRR keeps equal weights.
            for leaf in ("leaf02", "leaf03", "leaf04"):
                lbw_out(leaf, 100)

    def weights_back():
        if MODE == "static":
            testbed(*static_route())
        else:
            lbw_out("leaf01", None)
            for leaf in ("leaf02", "leaf03", "leaf04"):
                lbw_out(leaf, None)
        until_route(lambda ro: not weighted(ro))

    def regroup():
        # FRR replaces spine02's group twice: server03 withdraws (4 -> 3 paths)
        # and announces again (3 -> 4); the return is the change that counts.
        testbed("withdraw", "server03")
        until_route(lambda ro: live_paths(ro) == 3)
        lo = time.monotonic()
        testbed("announce", "server03")
        return (lo, until_route(lambda ro: live_paths(ro) == 4)[1])

    idle = ["--plain-groups", "resilient", "--idle-timer", str(PIN_IDLE_TIMER)]
    # BGP: leaf03's sessions are back about 2.3 s after `restore`; a line
    # every 4 s leaves room on both sides of that.
    return_interval = {"static": PIN_INTERVAL, "bgp": PIN_INTERVAL + 1}[MODE]
    events = [
        dict(key="a", name=f"leaf03 returns while the connections idle (idle timer {PIN_IDLE_TIMER} s, a line every {return_interval:g} s)",
             flags=idle, idle=True, interval=return_interval, seconds=return_interval + 0.5,
             lead={"static": 1.9, "bgp": 0.0}, setup=leaf03_down, event=leaf03_returns, cleanup=None),
        dict(key="b", name="leaf03 returns, forced rebalance (idle timer 30 s, unbalanced timer 1 s, busy connections)",
             flags=["--plain-groups", "resilient", "--idle-timer", "30", "--unbalanced-timer", "1"], idle=False,
             interval=PIN_BUSY_INTERVAL, seconds={"static": 5.0, "bgp": 7.0}[MODE], lead={"static": 0.3, "bgp": 0.0},
             setup=forced_setup, event=leaf03_returns, cleanup=None),
        dict(key="c", name=("leaf01's weight 1 -> 3 (ip route replace)" if MODE == "static"
                            else "leaf01's weight up: link bandwidth 300 vs 100 Mbit/s (FRR weighted ECMP)")
             + f", connections idle (idle timer {PIN_IDLE_TIMER} s)",
             flags=idle, idle=True, interval=PIN_INTERVAL, seconds=PIN_INTERVAL + 0.5, lead={"static": 1.9, "bgp": 1.8},
             setup=weights_setup, event=weights_up, cleanup=weights_back),
    ]
    if MODE == "bgp":
        events.append(dict(key="d", name=f"FRR replaces the group: server03 withdraws and announces again, connections idle (idle timer {PIN_IDLE_TIMER} s)",
                           flags=idle, idle=True, interval=PIN_INTERVAL, seconds=PIN_INTERVAL + 0.5, lead={"bgp": 1.4},
                           setup=None, event=regroup, cleanup=None,
                           # Their server left the group for a moment: whether they survive is not the point.
                           exclude="server03"))
    return events


def pin_round(ev, pinned, sports):
    """One batch of connections across one event: restart spine02, set up, stream, change, measure."""
    spine02_daemon(*ev["flags"], *(PIN_FLAGS if pinned else []))
    # A restart applies --pin-flows (or its absence) to the route it
    # adopts from the previous run's maps: checked by a claim below.
    flag_ok = route_pinned() == pinned
    if ev["setup"]:
        ev["setup"]()
    table0 = None
    if pinned:
        testbed("xdp-ecmp", "spine02", "flush-flows")
        table0 = flow_table()
    stream = subprocess.Popen([TESTBED, "exec", "client", "python3", ANYCAST_PY, "stream", "--dst", ANYCAST, "--src", CLIENT,
                               "--sports", sports, "--seconds", str(ev["seconds"]), "--interval", str(ev["interval"]), "--times"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Every connection has its first line: the change is timed from here.
    while True:
        line = stream.stderr.readline()
        if not line or "every connection has its first line" in line:
            break
    ready = time.monotonic()
    time.sleep(max(0.0, ready + ev["lead"][MODE] - time.monotonic()))
    mark = log_mark()
    lo, hi = ev["event"]()
    out, err = stream.communicate(timeout=120)
    if stream.returncode != 0:
        raise SystemExit(f"demo: stream failed: {err}")
    moved = buckets_moved_since(mark)
    table1 = flow_table() if pinned else None
    if ev["cleanup"]:
        ev["cleanup"]()
    s = json.loads(out)
    conns = {sp: c for sp, c in s["connections"].items() if not ev.get("exclude") or c["server"] != ev["exclude"]}
    excluded = len(s["connections"]) - len(conns)
    excluded_reset = sum(1 for sp, c in s["connections"].items() if sp not in conns and c["outcome"] == "reset")
    # Did the round test what it should? Idle events: every connection's last
    # line before the change came more than the idle timer before it, and its
    # next line after it. Event b: the connections ran 2.5 s past the change
    # (the unbalanced timer forces moves within 2 s of it).
    late = []
    for sp, c in conns.items():
        times = c.get("times") or []
        if not times or times[0] > lo:
            late.append(sp)
        elif ev["idle"]:
            before = [t for t in times if t <= lo]
            if before[-1] > lo - PIN_IDLE_TIMER - 0.1 or not any(t > hi for t in times):
                late.append(sp)
        elif c["outcome"] != "reset" and times[-1] < hi + 2.5:
            late.append(sp)
    row = dict(reset=sum(1 for c in conns.values() if c["outcome"] == "reset"),
               complete=sum(1 for c in conns.values() if c["outcome"] == "complete"),
               total=len(conns), excluded=excluded, excluded_reset=excluded_reset, buckets_moved=moved, flag_ok=flag_ok,
               change_s=round(hi - ready, 2), untimely=len(late),
               split=s["split"])
    if table1 is not None:
        ev0, ev1 = table0.get("events", {}), table1.get("events", {})
        row["flow_table"] = dict(entries=table1.get("entries"),
                                 events={k: ev1.get(k, 0) - ev0.get(k, 0) for k in ev1},
                                 per_path=table1.get("per_path"))
    return row


def step_pinning(r):
    rows = {}
    stale = 0
    restarts = 0
    base = 41000
    for ev in pin_events():
        res = {}
        for pinned in (False, True):
            for attempt in range(PIN_ATTEMPTS):
                # New source ports every round: a connection reset by a move
                # leaves its first server holding it (the client's RST went
                # to the new one), and a SYN of the same 5-tuple would meet it.
                sports = f"{base}-{base + PIN_CONNS - 1}"
                base += PIN_CONNS
                row = pin_round(ev, pinned, sports)
                row["sports"] = sports
                restarts += 1
                stale += 0 if row["flag_ok"] else 1
                row["attempts"] = attempt + 1
                if row["untimely"] == 0:
                    break
                if not r.json:
                    print(f"  (8{ev['key']} {'with' if pinned else 'without'} pinning, round {attempt + 1}: "
                          f"{row['untimely']} connections not idle or not running at the change, which came "
                          f"{row['change_s']} s after their first lines; again)")
            res["pinned" if pinned else "unpinned"] = row
        rows[ev["key"]] = dict(event=ev["name"], **res)
    r.data["pinning"] = dict(events=rows, connections=PIN_CONNS, restarts=restarts, stale_pin_flag=stale)
    if not r.json:
        def cnt(v, k):
            return pct(v[k], v["total"])
        table(f"8. {PIN_CONNS} long TCP transfers across bucket moves: spine02 without and with --pin-flows {ANYCAST}/32",
              ["event", "without: reset", "without: complete", "with: reset", "with: complete", "buckets moved (without/with)"],
              [[f"{k}. {v['event']}", cnt(v["unpinned"], "reset"), cnt(v["unpinned"], "complete"),
                cnt(v["pinned"], "reset"), cnt(v["pinned"], "complete"),
                f"{v['unpinned']['buckets_moved']}/{v['pinned']['buckets_moved']}"] for k, v in rows.items()])
        for k, v in rows.items():
            if v["pinned"]["excluded"] or v["unpinned"]["excluded"]:
                u, p = v["unpinned"], v["pinned"]
                print(f"  {k}: not counted, the connections server03 answered (their server left the group for a moment): "
                      f"{u['excluded']} without pinning ({u['excluded_reset']} reset), {p['excluded']} with ({p['excluded_reset']} reset)")
        if ENGINE == "afxdp":
            print("  (the AF_XDP engine pins in a table of its own, which show flows does not read: the program's stays empty)")
        print("  spine02's flow table after each pinned run (xdp-ecmp spine02 show flows --json; events during the run):")
        for k, v in rows.items():
            ft = v["pinned"].get("flow_table") or {}
            evs = ", ".join(f"{e} {n}" for e, n in sorted(ft.get("events", {}).items()))
            print(f"    {k}: {ft.get('entries')} entries; {evs}")
    for k, v in rows.items():
        u, p = v["unpinned"], v["pinned"]
        if k == "d":
            # Not a claim: when server03 announces again it takes back idle
            # buckets, which may or may not be the other connections' (runs
            # saw 0 to 5 of about 25 reset).
            if not r.json:
                print(f"  8d without pinning (not asserted: whether a returning member takes the idle connections' buckets is chance): "
                      f"{pct(u['reset'], u['total'])} reset")
        else:
            r.claim(f"8{k}. without pinning the bucket moves reset long connections ({v['event']})", u["reset"] > 0,
                    f"{pct(u['reset'], u['total'])} reset, {u['buckets_moved']} buckets moved"
                    + (f", after {u['attempts']} rounds" if u["attempts"] > 1 else ""))
        r.claim(f"8{k}. with --pin-flows no connection resets and every one completes", p["reset"] == 0 and p["complete"] == p["total"],
                f"{pct(p['reset'], p['total'])} reset, {pct(p['complete'], p['total'])} complete, {p['buckets_moved']} buckets moved"
                + (f", after {p['attempts']} rounds" if p["attempts"] > 1 else ""))
    r.claim("8. a restart applies --pin-flows (or its absence) to the route it adopts (xdp-ecmp calc: pin)", stale == 0,
            f"{stale} of {restarts} restarts left the route pinned as the run before had it")


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP: unwinds main() so that its clean-up runs."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def on_signal(signum, frame):
    raise Interrupted(signum)


def hold_signals():
    # The clean-up runs to its end: a second Ctrl-C must not leave half a testbed.
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def testbed_up(mode, engine):
    # testbed.sh up removes what it built when it fails or gets a signal: on
    # an interrupt it gets the same signal and is waited for (subprocess.run
    # would SIGKILL it half-way).
    with tempfile.TemporaryFile() as out:
        p = subprocess.Popen([TESTBED, "up", "--mode", mode, "--engine", engine], stdout=out, stderr=subprocess.STDOUT)
        try:
            p.wait()
        except BaseException as e:
            hold_signals()
            p.send_signal(e.signum if isinstance(e, Interrupted) else signal.SIGTERM)
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            raise
        if p.returncode != 0:
            out.seek(0)
            raise SystemExit(f"demo: testbed.sh up failed:\n{out.read().decode(errors='replace').strip()}")


def proc_state(pid):
    # (state, parent PID) of a process, or None once it is gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return None
    fields = st[st.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def end_children():
    # What the demo itself still runs (a client's streams, a testbed.sh
    # change in the background), by PID: SIGTERM, up to 5 s, then SIGKILL.
    me = os.getpid()
    kids = [int(d) for d in os.listdir("/proc") if d.isdigit() and (proc_state(d) or ("Z", 0))[1] == me]

    def running():
        return [k for k in kids if (proc_state(k) or ("Z", 0))[0] != "Z"]

    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        for k in running():
            try:
                os.kill(k, sig)
            except OSError:
                pass
        deadline = time.time() + wait
        while running() and time.time() < deadline:
            time.sleep(0.05)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="one JSON document instead of tables")
    ap.add_argument("--check", action="store_true", help="assert every claim (the scenario tests); exit 1 on a failure")
    ap.add_argument("--keep", action="store_true",
                    help="leave the testbed up to explore after a run that succeeded (a failed or interrupted run brings it down)")
    ap.add_argument("--keep-on-failure", action="store_true",
                    help="as --keep, and also after a failed step or claim, to look into it (an interrupt still brings it down)")
    ap.add_argument("--steps", default="1,2,3,4,5,6,7,8",
                    help="which steps to run, e.g. 1,2,7 (7, the BGP withdrawal, needs --mode bgp; 8 is flow pinning)")
    ap.add_argument("--engine", choices=["xdp", "afxdp"], default="xdp",
                    help="who forwards on every spine and leaf: the XDP program, or the AF_XDP engine it steers to")
    ap.add_argument("--pictures", default="/tmp/xdp-ecmp-demo", metavar="DIR",
                    help="where the bucket maps of step 3 go (before.png, failed.png, returned.png and their listings)")
    ap.add_argument("--mode", choices=["static", "bgp"], default="static",
                    help="static ECMP routes written with ip, or FRR/BGP unnumbered with the servers announcing the anycast /32")
    a = ap.parse_args()
    global MODE, ENGINE, PICTURES
    MODE, ENGINE, PICTURES = a.mode, a.engine, a.pictures
    for s in SIGNALS:
        signal.signal(s, on_signal)
    r = Report(a.check, a.json)
    started = time.time()
    up = ok = kept = False
    interrupted = failure = None
    try:
        if not a.json:
            print(f"xdp-ecmp demo: the anycast design guide on a veth testbed ({a.mode} routing, {a.engine} engine)")
        testbed("down")
        testbed_up(a.mode, a.engine)
        up = True
        r.data["mode"] = a.mode
        r.data["engine"] = a.engine
        spine02_daemon(*MODES["resilient, idle timer 0"])
        steps = {int(x) for x in a.steps.split(",") if x.strip()}
        for n, step in [(1, step_split), (2, step_two_flows), (3, step_failure), (4, step_return), (5, step_tcp), (6, step_ftp)]:
            if n in steps:
                step(r)
        if a.mode == "bgp" and 7 in steps:
            step_withdraw(r)
        if 8 in steps:
            step_pinning(r)
        ok = not (a.check and any(not x[1] for x in r.results))
    except Interrupted as e:
        interrupted = e.signum
    except SystemExit as e:
        # A failed step: its message first, then what became of the testbed.
        failure = e
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            failure = SystemExit(1)
    finally:
        hold_signals()
        end_children()
        if any(not x[1] for x in r.results):
            # What spine02's daemon did to its bucket tables, for the failed claim.
            try:
                with open("/run/xe-testbed/spine02.log") as f:
                    moves = [l.rstrip() for l in f
                             if any(k in l for k in ("=== xdp-ecmp run", "buckets moved", "bucket table", "initial sync done", "adopted the pinned maps", "changes group", "stops forwarding"))]
                print("spine02 daemon runs and their bucket moves:\n  " + "\n  ".join(moves or ["(none)"]), file=sys.stderr)
            except OSError as e:
                print(f"spine02 daemon log: {e}", file=sys.stderr)
        kept = up and interrupted is None and ((a.keep and ok) or a.keep_on_failure)
        if not kept:
            down = subprocess.run([TESTBED, "down"], capture_output=True, text=True)
            if down.returncode != 0:
                print(f"demo: scripts/testbed.sh down failed: {(down.stderr or down.stdout).strip()}", file=sys.stderr)
            elif not ok:
                why = f"interrupted by {signal.Signals(interrupted).name}" if interrupted else "failed"
                print(f"demo: {why}; the testbed is down" + (" (--keep keeps it only after a run that succeeded)" if a.keep else ""),
                      file=sys.stderr)
        elif not ok:
            print("demo: failed; the testbed stays up (--keep-on-failure): scripts/testbed.sh status; scripts/testbed.sh down", file=sys.stderr)
    if interrupted is not None:
        sys.exit(128 + interrupted)
    if failure is not None:
        raise failure
    passed = sum(1 for x in r.results if x[1])
    failed = len(r.results) - passed
    r.data["claims"] = [dict(name=n, ok=o, detail=d) for n, o, d in r.results]
    r.data["seconds"] = round(time.time() - started, 1)
    if a.json:
        print(json.dumps(r.data, indent=2, sort_keys=True))
    else:
        if kept:
            print("\nThe testbed is up: scripts/testbed.sh status | exec NODE CMD | xdp-ecmp spine02 show groups; scripts/testbed.sh down")
        print(f"\ndemo: {r.data['seconds']} s")
    print(f"scenarios: {passed} passed, {failed} failed", file=sys.stderr if a.json else sys.stdout)
    if a.check and failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
