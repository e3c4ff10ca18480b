//! Shared support of the daemon tests: bpffs pin directories, the daemon process, and a namespace with an ingress port and egress ports towards resolved neighbours.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use testnet::TestNet;

/// A bpffs directory with the project prefix, removed on drop.
pub struct PinDir(pub PathBuf);

impl PinDir {
    pub fn new(tag: &str) -> PinDir {
        PinDir(PathBuf::from(format!(
            "/sys/fs/bpf/xe-t{}-{tag}",
            std::process::id()
        )))
    }
}

impl PinDir {
    /// The state directory (hash seed) of the daemons of this test.
    pub fn state(&self) -> PathBuf {
        std::env::temp_dir().join(self.0.file_name().expect("pin dir name"))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_dir_all(self.state());
        // What its daemons wrote for `show` and `top`.
        control::status::remove_all(&self.0);
    }
}

/// Runs `xdp-ecmp --pin-dir PINS ARGS` in the namespace. nsenter, unlike
/// `ip netns exec`, keeps the host's /sys and so its bpffs mount.
pub fn xdp_ecmp(net: &TestNet, pins: &PinDir, args: &[&str]) -> Output {
    command(net, pins, args).output().expect("running xdp-ecmp")
}

/// `xdp-ecmp --pin-dir PINS --state-dir STATE ARGS` in the namespace, not started.
pub fn command(net: &TestNet, pins: &PinDir, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{}", net.name()))
        .arg(env!("CARGO_BIN_EXE_xdp-ecmp"))
        .arg("--pin-dir")
        .arg(&pins.0)
        .arg("--state-dir")
        .arg(pins.state())
        .args(args);
    c
}

/// The daemon (`xdp-ecmp run ARGS`), ended by its PID when dropped.
pub struct Daemon(pub Child);

impl Daemon {
    /// Starts it; its log is kept for `stop` when `keep_log`.
    pub fn start(net: &TestNet, pins: &PinDir, args: &[&str], keep_log: bool) -> Daemon {
        let mut c = command(net, pins, &[&["run"], args].concat());
        c.env("RUST_LOG", "info").stdout(Stdio::null());
        c.stderr(if keep_log {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let port = args
            .iter()
            .position(|a| *a == "-p")
            .map(|i| args[i + 1])
            .expect("a -p PORT");
        // Every start loads a new program and attaches it (or swaps it into
        // the pinned link): a new program id on the port means this daemon
        // has settled its config and attached.
        let before = xdp_prog_id(net, port);
        let mut d = Daemon(c.spawn().expect("starting xdp-ecmp run"));
        let t0 = std::time::Instant::now();
        while !pins.0.join(format!("link_{port}")).exists() || xdp_prog_id(net, port) == before {
            if let Ok(Some(st)) = d.0.try_wait() {
                panic!("the daemon exited before attaching to {port} ({st}); args {args:?}");
            }
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(10),
                "the daemon did not attach to {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        d
    }

    /// SIGTERM, then its log.
    pub fn stop(mut self) -> String {
        use std::io::Read;
        // SAFETY: signalling the child we started, by its PID.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let mut log = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            let _ = e.read_to_string(&mut log);
        }
        let _ = self.0.wait();
        log
    }

    /// SIGKILL, as a crash would.
    pub fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The id of the XDP program attached to `dev`, if any.
pub fn xdp_prog_id(net: &TestNet, dev: &str) -> Option<u32> {
    let o = Command::new("ip")
        .args(["-n", net.name(), "-d", "link", "show", "dev", dev])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let after = text.split("prog/xdp id ").nth(1)?;
    after.split_whitespace().next()?.parse().ok()
}

/// The MAC of neighbour 10.0.`port`.2, in its `version`.
pub fn neighbour_mac(port: usize, version: usize) -> [u8; 6] {
    [0x02, 0, 0, 0x10 + version as u8, port as u8, 0x99]
}

pub fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The MAC of the ingress port `xe-in`: frames the tests send there are
/// addressed to it, as a neighbour that resolved the port would address them.
pub const IN_MAC: [u8; 6] = [2, 0, 0, 0, 0xaa, 1];

/// A namespace with an ingress port `xe-in` (MAC [`IN_MAC`]; its peer
/// `xe-h0` sends) and egress ports `xe-o<i>` towards 10.0.i.2, resolved
/// permanently, whose peers `xe-p<i>` receive (GRO on, so they take
/// redirected frames).
pub fn fabric(tag: &str, egress: usize) -> TestNet {
    let mut pairs = vec![("xe-h0".to_string(), "xe-in".to_string())];
    pairs.extend((0..egress).map(|i| (format!("xe-o{i}"), format!("xe-p{i}"))));
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let net = TestNet::new(tag, &refs).expect("namespace");
    net.ip(&["link", "set", "xe-in", "address", &mac_str(IN_MAC)])
        .expect("ingress MAC");
    for i in 0..egress {
        let dev = format!("xe-o{i}");
        net.ip(&["addr", "add", &format!("10.0.{i}.1/24"), "dev", &dev])
            .expect("addr");
        set_neighbour(&net, i, 0);
        // A veth transmits redirected frames when its peer has GRO (or XDP).
        gro(&net, &format!("xe-p{i}"), true);
    }
    net
}

/// `ethtool -K PORT gro on|off` in the namespace.
pub fn gro(net: &TestNet, port: &str, on: bool) {
    let st = Command::new("ip")
        .args(["netns", "exec", net.name(), "ethtool", "-K", port, "gro"])
        .arg(if on { "on" } else { "off" })
        .status()
        .expect("ethtool (scripts/setup.sh installs it)");
    assert!(st.success(), "ethtool -K {port} gro");
}

/// Adds another ingress port `port` (MAC `mac`) whose peer `host` sends.
pub fn add_ingress(net: &TestNet, host: &str, port: &str, mac: [u8; 6]) {
    net.ip(&["link", "add", host, "type", "veth", "peer", "name", port])
        .expect("veth");
    net.ip(&["link", "set", port, "address", &mac_str(mac)])
        .expect("MAC");
    for dev in [host, port] {
        net.ip(&["link", "set", dev, "up"]).expect("up");
    }
}

/// Points neighbour 10.0.`port`.2 at its MAC `version`.
pub fn set_neighbour(net: &TestNet, port: usize, version: usize) {
    net.ip(&[
        "neigh",
        "replace",
        &format!("10.0.{port}.2"),
        "lladdr",
        &mac_str(neighbour_mac(port, version)),
        "dev",
        &format!("xe-o{port}"),
        "nud",
        "permanent",
    ])
    .expect("neigh");
}

/// `ip route replace 172.16.255.66/32` over the given egress ports.
pub fn anycast_route(net: &TestNet, ports: &[usize]) {
    let mut args: Vec<String> = ["route", "replace", "172.16.255.66/32"]
        .map(String::from)
        .to_vec();
    for p in ports {
        args.extend(["nexthop".into(), "via".into(), format!("10.0.{p}.2")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    net.ip(&args).expect("route");
}

/// stdout and stderr of a command, together.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// What the program does with a UDP flow to the anycast address, asked with calc.
pub fn anycast_verdict(net: &TestNet, pins: &PinDir) -> String {
    anycast_verdict_on(net, pins, None)
}

/// The same, for the flow received on `in_port` (calc's default port when None).
pub fn anycast_verdict_on(net: &TestNet, pins: &PinDir, in_port: Option<&str>) -> String {
    let v = calc_udp(net, pins, "172.16.255.66", "4000", in_port);
    v["verdict"].as_str().unwrap_or("-").to_string()
}

/// `xdp-ecmp calc --json` for the UDP flow 10.2.0.100:`sport` -> `dst`:53
/// (received on `in_port`, calc's default port when None); null if calc
/// printed no JSON.
pub fn calc_udp(
    net: &TestNet,
    pins: &PinDir,
    dst: &str,
    sport: &str,
    in_port: Option<&str>,
) -> serde_json::Value {
    let mut args = vec![
        "calc",
        "-p",
        "udp",
        "-s",
        "10.2.0.100",
        "--sport",
        sport,
        "-d",
        dst,
        "--dport",
        "53",
        "--json",
    ];
    if let Some(p) = in_port {
        args.extend(["-i", p]);
    }
    let o = xdp_ecmp(net, pins, &args);
    serde_json::from_slice(&o.stdout).unwrap_or_default()
}

/// Waits (5 s at most) until the anycast flow gets `want`; prints how long it took after `what`.
pub fn wait_for_verdict(net: &TestNet, pins: &PinDir, want: &str, what: &str) {
    wait_for_verdict_on(net, pins, None, want, what);
}

/// The same, for the flow received on `in_port`.
pub fn wait_for_verdict_on(
    net: &TestNet,
    pins: &PinDir,
    in_port: Option<&str>,
    want: &str,
    what: &str,
) {
    let t0 = std::time::Instant::now();
    loop {
        let got = anycast_verdict_on(net, pins, in_port);
        if got == want {
            println!("{what}: {want} after {:?}", t0.elapsed());
            return;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "{what}: still {got}, want {want}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
