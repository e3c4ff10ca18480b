//! The shipped systemd unit is hardened and verifies, and the daemon runs as an unprivileged user with exactly the unit's capabilities.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{anycast_route, fabric, xdp_ecmp, xdp_prog_id, PinDir};
use testnet::require_root;

mod support;

const UNIT: &str = include_str!("../dist/xdp-ecmp.service");

/// The value of `key=` in the unit (the last one wins, as in systemd).
fn unit(key: &str) -> String {
    UNIT.lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_default()
        .to_string()
}

fn capabilities() -> Vec<String> {
    unit("AmbientCapabilities")
        .split_whitespace()
        .map(String::from)
        .collect()
}

#[test]
fn the_unit_is_hardened() {
    for (key, want) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectHome", "yes"),
        ("StateDirectory", "xdp-ecmp"),
        ("User", "xdp-ecmp"),
    ] {
        assert_eq!(unit(key), want, "{key}");
    }
    let families = unit("RestrictAddressFamilies");
    for f in ["AF_NETLINK", "AF_INET", "AF_INET6", "AF_UNIX"] {
        assert!(
            families.split_whitespace().any(|x| x == f),
            "{f} in {families}"
        );
    }
    assert_eq!(families.split_whitespace().count(), 4, "{families}");
    assert_eq!(
        capabilities(),
        unit("CapabilityBoundingSet")
            .split_whitespace()
            .collect::<Vec<_>>(),
        "the bounding set is exactly the ambient set"
    );
    assert!(UNIT.contains("--state-dir /var/lib/xdp-ecmp"));
    // Where systemd is installed, it accepts the unit (with the binary the
    // unit names replaced by the one just built).
    let Ok(found) = Command::new("systemd-analyze").arg("--version").output() else {
        println!("systemd-analyze not installed: verify not run");
        return;
    };
    assert!(found.status.success());
    let dir = std::env::temp_dir().join(format!("xe-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("xdp-ecmp.service");
    std::fs::write(
        &path,
        UNIT.replace("/usr/local/bin/xdp-ecmp", env!("CARGO_BIN_EXE_xdp-ecmp")),
    )
    .expect("write unit");
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    println!("systemd-analyze verify: clean");
}

/// The capabilities of `unit` (a unit or a drop-in), as setpriv takes them.
fn setpriv_caps(unit_text: &str) -> Vec<String> {
    unit_text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .unwrap_or_default()
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect()
}

/// A fabric namespace and pin and state directories owned by nobody, as
/// the unit's ExecStartPre and StateDirectory prepare them as root.
fn prepared(tag: &str) -> (testnet::TestNet, PinDir) {
    let net = fabric(tag, 2);
    anycast_route(&net, &[0, 1]);
    let pins = PinDir::new(tag);
    dataplane::pins::ensure_bpffs(&pins.0).expect("bpffs");
    for dir in [pins.0.clone(), pins.state()] {
        std::fs::create_dir_all(&dir).expect("dir");
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).expect("chown to nobody");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).expect("mode");
    }
    (net, pins)
}

/// `xdp-ecmp run ARGS` as nobody with exactly `caps`, in the namespace.
fn run_unprivileged(
    net: &testnet::TestNet,
    pins: &PinDir,
    caps: &str,
    args: &[&str],
) -> std::process::Child {
    run_unprivileged_limited(net, pins, caps, args, 0)
}

/// The same under a locked-memory limit of `memlock` bytes (0: as it is).
fn run_unprivileged_limited(
    net: &testnet::TestNet,
    pins: &PinDir,
    caps: &str,
    args: &[&str],
    memlock: u64,
) -> std::process::Child {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{}", net.name()));
    if memlock != 0 {
        c.arg("prlimit").arg(format!("--memlock={memlock}"));
    }
    c.args([
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ])
    .arg(format!("--inh-caps=-all,{caps}"))
    .arg(format!("--ambient-caps=-all,{caps}"))
    .arg(format!("--bounding-set=-all,{caps}"))
    .arg(env!("CARGO_BIN_EXE_xdp-ecmp"))
    .arg("--pin-dir")
    .arg(&pins.0)
    .arg("--state-dir")
    .arg(pins.state())
    .arg("run")
    .args(args)
    .env("RUST_LOG", "info")
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("setpriv, prlimit (util-linux)")
}

/// Waits (10 s at most) until the anycast route is in the maps or the
/// daemon exits; then stops it and returns (routed, its log).
fn routed_then_stop(
    net: &testnet::TestNet,
    pins: &PinDir,
    mut child: std::process::Child,
) -> (bool, String) {
    let t0 = Instant::now();
    let routed = loop {
        let o = xdp_ecmp(net, pins, &["show", "routes"]);
        if String::from_utf8_lossy(&o.stdout).contains("172.16.255.66/32 group") {
            break true;
        }
        if t0.elapsed() > Duration::from_secs(10) || child.try_wait().ok().flatten().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // SAFETY: signalling the child we started, by its PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().expect("daemon");
    (routed, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_daemon_runs_unprivileged_with_the_units_capabilities() {
    if !require_root("the_daemon_runs_unprivileged_with_the_units_capabilities") {
        return;
    }
    let (net, pins) = prepared("priv");
    let caps = setpriv_caps(UNIT).join(",");
    let child = run_unprivileged(&net, &pins, &caps, &["-p", "xe-in", "--run-for", "20"]);
    let (routed, log) = routed_then_stop(&net, &pins, child);
    println!("unprivileged daemon with {caps}: routed {routed}\n{log}");
    assert!(
        routed,
        "the daemon as nobody with {caps} did not write the route: {log}"
    );
    assert!(
        xdp_prog_id(&net, "xe-in").is_some(),
        "xe-in carries the program"
    );
    assert!(
        pins.state().join("hash-seed").exists(),
        "the seed was stored"
    );
    let o = xdp_ecmp(&net, &pins, &["detach", "xe-in"]);
    assert!(o.status.success());
}

const AFXDP_DROP_IN: &str = include_str!("../dist/xdp-ecmp-afxdp.conf");

/// The AF_XDP engine as nobody: the unit's capabilities alone are refused
/// with an error that names the drop-in; with the drop-in's added it runs.
#[test]
fn the_afxdp_engine_runs_unprivileged_with_the_drop_ins_capabilities() {
    if !require_root("the_afxdp_engine_runs_unprivileged_with_the_drop_ins_capabilities") {
        return;
    }
    let (net, pins) = prepared("priv-afxdp");
    let args = [
        "-p",
        "xe-in",
        "-p",
        "xe-o0",
        "-p",
        "xe-o1",
        "--engine",
        "afxdp",
        "--run-for",
        "20",
    ];
    let unit_only = setpriv_caps(UNIT).join(",");
    let child = run_unprivileged(&net, &pins, &unit_only, &args);
    let out = child.wait_with_output().expect("daemon");
    let log = String::from_utf8_lossy(&out.stderr);
    println!("the unit's capabilities only: {}\n{log}", out.status);
    assert!(!out.status.success(), "it ran without CAP_NET_RAW: {log}");
    assert!(
        log.contains("CAP_NET_RAW") && log.contains("xdp-ecmp-afxdp.conf"),
        "the error names the capability and the drop-in: {log}"
    );
    // Without CAP_IPC_LOCK, under a 64 KiB locked-memory limit, the UMEM
    // cannot be registered: the error says what to raise.
    let no_lock: Vec<String> = [setpriv_caps(UNIT), setpriv_caps(AFXDP_DROP_IN)]
        .concat()
        .into_iter()
        .filter(|c| c != "+ipc_lock")
        .collect();
    let mut child = run_unprivileged_limited(&net, &pins, &no_lock.join(","), &args, 65536);
    let status = child.wait().expect("daemon");
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut log).ok();
    println!("without CAP_IPC_LOCK under 64 KiB memlock: {status}\n{log}");
    assert!(!status.success(), "it ran: {log}");
    assert!(
        log.contains("locked-memory limit") && log.contains("xe-in"),
        "{log}"
    );
    let caps = [setpriv_caps(UNIT), setpriv_caps(AFXDP_DROP_IN)]
        .concat()
        .join(",");
    let child = run_unprivileged(&net, &pins, &caps, &args);
    let (routed, log) = routed_then_stop(&net, &pins, child);
    println!("with the drop-in ({caps}): routed {routed}\n{log}");
    assert!(routed, "{log}");
    assert!(log.contains("AF_XDP engine started"), "{log}");
    for port in ["xe-in", "xe-o0", "xe-o1"] {
        assert!(xdp_ecmp(&net, &pins, &["detach", port]).status.success());
    }
}
