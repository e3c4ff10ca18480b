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

#[test]
fn the_daemon_runs_unprivileged_with_the_units_capabilities() {
    if !require_root("the_daemon_runs_unprivileged_with_the_units_capabilities") {
        return;
    }
    let net = fabric("priv", 2);
    anycast_route(&net, &[0, 1]);
    let pins = PinDir::new("priv");
    // What the unit's ExecStartPre and StateDirectory prepare as root.
    dataplane::pins::ensure_bpffs(&pins.0).expect("bpffs");
    for dir in [pins.0.clone(), pins.state()] {
        std::fs::create_dir_all(&dir).expect("dir");
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).expect("chown to nobody");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).expect("mode");
    }
    let caps: Vec<String> = capabilities()
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let caps = caps.join(",");
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", net.name()))
        .args([
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
        .args(["run", "-p", "xe-in", "--run-for", "20"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux)");
    let t0 = Instant::now();
    let routed = loop {
        let o = xdp_ecmp(&net, &pins, &["show", "routes"]);
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
    let log = String::from_utf8_lossy(&out.stderr);
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
