//! The oracle's operational events: a seeded random sequence of what operators and routing daemons do to a router (routes of every kind, nexthop objects, links, addresses, neighbours, forwarding switches, rules), as `ip`/sysctl commands over a small universe of prefixes so that events collide.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

/// How many egress ports the oracle's namespace has.
pub const PORTS: usize = 4;

/// Prefixes in play, both families: nested, overlapping, and a default.
pub const PREFIXES_V4: &[&str] = &[
    "172.16.0.0/16",
    "172.16.1.0/24",
    "172.16.1.128/25",
    "172.16.1.7/32",
    "172.16.2.0/24",
    "172.16.3.3/32",
    "0.0.0.0/0",
];
pub const PREFIXES_V6: &[&str] = &[
    "2001:db8:99::/48",
    "2001:db8:99:1::/64",
    "2001:db8:99:1::7/128",
    "2001:db8:98::/64",
    "::/0",
];

/// The addresses a local address event puts on `lo` (inside prefixes in play).
const LOCAL_V4: &[&str] = &["172.16.1.7/32", "172.16.2.9/32"];
const LOCAL_V6: &[&str] = &["2001:db8:99:1::7/128", "2001:db8:98::9/128"];

/// One event: the commands (each an `ip` argument list, or `sysctl` or
/// `ethtool` when that is the first word) and a line saying what it is.
pub struct Event {
    pub what: String,
    pub commands: Vec<Vec<String>>,
}

/// A gateway on port `i`: `.2` is resolved at start, `.3` only by an event.
pub fn gateway(v6: bool, port: usize, host: u8) -> String {
    if v6 {
        format!("2001:db8:10{port}::{host}")
    } else {
        format!("10.0.{port}.{host}")
    }
}

/// The MAC of gateway `host` on `port` in `version`.
pub fn mac(port: usize, host: u8, version: u8) -> String {
    format!("02:00:{host:02x}:{version:02x}:{port:02x}:99")
}

/// The commands that resolve both gateways of `port` (permanent entries,
/// as a routing daemon's neighbours would be), both families.
pub fn resolve(port: usize, version: u8) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for v6 in [false, true] {
        for host in [2, 3] {
            out.push(words(&format!(
                "neigh replace {} lladdr {} dev xe-o{port} nud permanent",
                gateway(v6, port, host),
                mac(port, host, version)
            )));
        }
    }
    out
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

/// The seeded event source.
pub struct Events {
    rng: StdRng,
    count: u64,
}

/// Every this many events the namespace is brought back towards its start
/// (links and addresses up, neighbours resolved, switches on, no rule), so
/// that a long run keeps forwarding something to check.
const HEAL_EVERY: u64 = 40;

/// `ethtool -K xe-p<p> gro on|off` (run in the namespace).
pub fn gro(p: usize, state: &str) -> Vec<String> {
    words(&format!("ethtool -K xe-p{p} gro {state}"))
}

/// The commands that bring the namespace back towards its start.
pub fn heal() -> Event {
    let mut commands = Vec::new();
    for p in 0..PORTS {
        commands.push(gro(p, "on"));
        commands.push(words(&format!("link set xe-o{p} up")));
        commands.push(words(&format!("link set xe-p{p} up")));
        commands.push(words(&format!("addr replace 10.0.{p}.1/24 dev xe-o{p}")));
        commands.push(words(&format!(
            "-6 addr replace 2001:db8:10{p}::1/64 dev xe-o{p} nodad"
        )));
        commands.extend(resolve(p, 0));
    }
    for s in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.xe-in.forwarding=1",
        "net.ipv6.conf.all.forwarding=1",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.xe-in.rp_filter=0",
    ] {
        commands.push(vec!["sysctl".into(), "-qw".into(), s.into()]);
    }
    for _ in 0..2 {
        commands.push(words("rule del pref 100"));
        commands.push(words("-6 rule del pref 100"));
    }
    Event {
        what: "heal: ports up, addressed and resolved, switches on, rules gone".into(),
        commands,
    }
}

impl Events {
    pub fn new(seed: u64) -> Events {
        Events {
            rng: StdRng::seed_from_u64(seed),
            count: 0,
        }
    }

    fn port(&mut self) -> usize {
        self.rng.random_range(0..PORTS)
    }

    fn prefix(&mut self, v6: bool) -> &'static str {
        let pool = if v6 { PREFIXES_V6 } else { PREFIXES_V4 };
        pool.choose(&mut self.rng).copied().unwrap_or(pool[0])
    }

    /// `via GW dev PORT`, most often through a resolved gateway.
    fn via(&mut self, v6: bool) -> String {
        let p = self.port();
        let host = if self.rng.random_bool(0.8) { 2 } else { 3 };
        format!("via {} dev xe-o{p}", gateway(v6, p, host))
    }

    fn metric(&mut self) -> String {
        match self.rng.random_range(0..4) {
            0 => " metric 10".into(),
            1 => " metric 20".into(),
            _ => String::new(),
        }
    }

    /// The next event.
    pub fn next(&mut self) -> Event {
        self.count += 1;
        if self.count.is_multiple_of(HEAL_EVERY) {
            return heal();
        }
        let v6 = self.rng.random_bool(0.4);
        let fam = if v6 { "-6 " } else { "" };
        let r: u32 = self.rng.random_range(0..100);
        let one = |what: String, cmd: String| Event {
            what,
            commands: vec![words(&cmd)],
        };
        match r {
            // Single-path routes: add, replace, append, prepend.
            0..=17 => {
                let verb = *["add", "replace", "replace", "append", "prepend"]
                    .choose(&mut self.rng)
                    .unwrap_or(&"add");
                let (p, via, m) = (self.prefix(v6), self.via(v6), self.metric());
                let cmd = format!("{fam}route {verb} {p} {via}{m}");
                one(cmd.clone(), cmd)
            }
            // Multipath routes, weighted.
            18..=29 => {
                let verb = if self.rng.random_bool(0.5) {
                    "replace"
                } else {
                    "add"
                };
                let (p, m) = (self.prefix(v6), self.metric());
                let n = self.rng.random_range(2..=PORTS);
                let mut cmd = format!("{fam}route {verb} {p}{m}");
                let mut ports: Vec<usize> = (0..PORTS).collect();
                for _ in 0..PORTS - n {
                    let i = self.rng.random_range(0..ports.len());
                    ports.remove(i);
                }
                for port in ports {
                    let w = self.rng.random_range(1..=3);
                    cmd += &format!(
                        " nexthop via {} dev xe-o{port} weight {w}",
                        gateway(v6, port, 2)
                    );
                }
                one(cmd.clone(), cmd)
            }
            // Deletes: a whole route, one hop, one metric.
            30..=39 => {
                let p = self.prefix(v6);
                let cmd = match self.rng.random_range(0..3) {
                    0 => format!("{fam}route del {p}"),
                    1 => {
                        let via = self.via(v6);
                        format!("{fam}route del {p} {via}")
                    }
                    _ => {
                        let m = self.metric();
                        format!("{fam}route del {p}{m}")
                    }
                };
                one(cmd.clone(), cmd)
            }
            // Routes of other types, in main or another table; TOS; MTU.
            40..=47 => {
                let p = self.prefix(v6);
                let cmd = match self.rng.random_range(0..7) {
                    0 => format!("{fam}route replace blackhole {p}"),
                    1 => format!("{fam}route replace unreachable {p}"),
                    2 => format!("{fam}route replace prohibit {p}"),
                    3 => format!("{fam}route replace throw {p}"),
                    4 => {
                        let via = self.via(v6);
                        format!("{fam}route replace {p} {via} table 100")
                    }
                    5 if !v6 => {
                        let via = self.via(v6);
                        format!("route add {p} tos 0x10 {via}")
                    }
                    _ => {
                        let via = self.via(v6);
                        format!("{fam}route replace {p} {via} mtu 1300")
                    }
                };
                one(cmd.clone(), cmd)
            }
            // Nexthop objects and routes over them.
            48..=59 => {
                let cmd = match self.rng.random_range(0..6) {
                    0 | 1 => {
                        let id = self.rng.random_range(1..=6);
                        let via = self.via(id > 3);
                        format!("nexthop replace id {id} {via}")
                    }
                    2 => {
                        let id = self.rng.random_range(20..=22);
                        let base = if self.rng.random_bool(0.5) { 1 } else { 4 };
                        let members = format!("{}/{}", base, base + 1);
                        let kind = if self.rng.random_bool(0.5) {
                            " type resilient buckets 32 idle_timer 0"
                        } else {
                            ""
                        };
                        format!("nexthop replace id {id} group {members}{kind}")
                    }
                    3 => {
                        let id = *[1u32, 2, 3, 4, 5, 6, 20, 21, 22]
                            .choose(&mut self.rng)
                            .unwrap_or(&1);
                        format!("nexthop del id {id}")
                    }
                    _ => {
                        let id = *[1u32, 2, 4, 5, 20, 21, 22]
                            .choose(&mut self.rng)
                            .unwrap_or(&1);
                        // Objects 1-3 and group 20 are IPv4, 4-6 and 21 IPv6;
                        // 22 is whichever it was made of.
                        let v6 = matches!(id, 4..=6 | 21) || (id == 22 && v6);
                        let p = self.prefix(v6);
                        let fam = if v6 { "-6 " } else { "" };
                        format!("{fam}route replace {p} nhid {id}")
                    }
                };
                one(cmd.clone(), cmd)
            }
            // Links: admin down/up, carrier down/up, MTU.
            60..=69 => {
                let p = self.port();
                match self.rng.random_range(0..6) {
                    0 => one(format!("xe-o{p} down"), format!("link set xe-o{p} down")),
                    // The peer's GRO decides whether xe-o<p> transmits
                    // redirected frames (a veth needs XDP or GRO behind it).
                    5 => {
                        let state = if self.rng.random_bool(0.5) {
                            "off"
                        } else {
                            "on"
                        };
                        Event {
                            what: format!("GRO {state} on xe-p{p}"),
                            commands: vec![gro(p, state)],
                        }
                    }
                    1 | 2 => {
                        let mut commands = vec![words(&format!("link set xe-o{p} up"))];
                        commands.extend(resolve(p, 0));
                        Event {
                            what: format!("xe-o{p} up, neighbours resolved"),
                            commands,
                        }
                    }
                    3 => {
                        let state = if self.rng.random_bool(0.5) {
                            "down"
                        } else {
                            "up"
                        };
                        one(
                            format!("carrier {state} on xe-o{p}"),
                            format!("link set xe-p{p} {state}"),
                        )
                    }
                    _ => {
                        let mtu = *[1300u32, 1400, 1500, 1500]
                            .choose(&mut self.rng)
                            .unwrap_or(&1500);
                        one(
                            format!("xe-o{p} mtu {mtu}"),
                            format!("link set xe-o{p} mtu {mtu}"),
                        )
                    }
                }
            }
            // Port addresses.
            70..=74 => {
                let p = self.port();
                let a = if v6 {
                    format!("2001:db8:10{p}::1/64")
                } else {
                    format!("10.0.{p}.1/24")
                };
                if self.rng.random_bool(0.5) {
                    one(
                        format!("address {a} removed"),
                        format!("{fam}addr del {a} dev xe-o{p}"),
                    )
                } else {
                    let nodad = if v6 { " nodad" } else { "" };
                    let mut commands =
                        vec![words(&format!("{fam}addr add {a} dev xe-o{p}{nodad}"))];
                    commands.extend(resolve(p, 0));
                    Event {
                        what: format!("address {a} added"),
                        commands,
                    }
                }
            }
            // Local addresses over prefixes in play.
            75..=79 => {
                let a = (if v6 { LOCAL_V6 } else { LOCAL_V4 })
                    .choose(&mut self.rng)
                    .copied()
                    .unwrap_or("172.16.1.7/32");
                let verb = if self.rng.random_bool(0.5) {
                    "add"
                } else {
                    "del"
                };
                one(
                    format!("local address {a} {verb}"),
                    format!("{fam}addr {verb} {a} dev lo"),
                )
            }
            // Neighbours: new MAC, deleted, flushed, re-resolved.
            80..=89 => {
                let p = self.port();
                match self.rng.random_range(0..4) {
                    0 => {
                        let version = self.rng.random_range(0..3);
                        Event {
                            what: format!("neighbours of xe-o{p} move to MAC version {version}"),
                            commands: resolve(p, version),
                        }
                    }
                    1 => {
                        let host = if self.rng.random_bool(0.5) { 2 } else { 3 };
                        let g = gateway(v6, p, host);
                        one(
                            format!("neighbour {g} deleted"),
                            format!("{fam}neigh del {g} dev xe-o{p}"),
                        )
                    }
                    2 => one(
                        format!("neighbours of xe-o{p} flushed"),
                        format!("neigh flush dev xe-o{p} nud permanent"),
                    ),
                    _ => Event {
                        what: format!("neighbours of xe-o{p} resolved"),
                        commands: resolve(p, 0),
                    },
                }
            }
            // Forwarding switches (back on far more often than off).
            90..=94 => {
                let on = u8::from(self.rng.random_bool(0.85));
                let s = match self.rng.random_range(0..5) {
                    0 => format!("net.ipv4.ip_forward={on}"),
                    1 => format!("net.ipv4.conf.xe-in.forwarding={on}"),
                    2 => format!("net.ipv6.conf.all.forwarding={on}"),
                    // Reverse-path filtering: off, strict, loose.
                    3 => format!(
                        "net.ipv4.conf.xe-in.rp_filter={}",
                        if on == 1 {
                            0
                        } else {
                            self.rng.random_range(1..=2)
                        }
                    ),
                    _ => format!(
                        "net.ipv4.conf.all.rp_filter={}",
                        if on == 1 {
                            0
                        } else {
                            self.rng.random_range(1..=2)
                        }
                    ),
                };
                Event {
                    what: format!("sysctl {s}"),
                    commands: vec![vec!["sysctl".into(), "-qw".into(), s]],
                }
            }
            // Policy routing rules.
            _ => {
                let cmd = if self.rng.random_bool(0.25) {
                    format!("{fam}rule add pref 100 lookup 100")
                } else {
                    format!("{fam}rule del pref 100")
                };
                one(cmd.clone(), cmd)
            }
        }
    }
}
