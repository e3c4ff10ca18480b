//! Ports follow the kernel: a missing port is an error before anything is attached (or waited for), a port that appears or is re-created is attached again and admitted under its new ifindex and MAC, a stale link pin is replaced.

use std::time::{Duration, Instant};

use support::{fabric, text, xdp_ecmp, xdp_prog_id, Daemon, PinDir};
use testnet::{require_root, TestNet};

mod support;

fn add_port(net: &TestNet, name: &str) {
    net.ip(&[
        "link",
        "add",
        name,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{name}p"),
    ])
    .expect("veth");
    net.ip(&["link", "set", name, "up"]).expect("up");
}

/// The ports `show ports` lists: (name, ifindex, MAC).
fn admitted(net: &TestNet, pins: &PinDir) -> Vec<(String, u64, String)> {
    let o = xdp_ecmp(net, pins, &["show", "ports", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v.as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        r["dev"].as_str().unwrap_or("-").to_string(),
                        r["ifindex"].as_u64().unwrap_or(0),
                        r["mac"].as_str().unwrap_or("-").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The ifindex and MAC of `dev` in the namespace.
fn link_of(net: &TestNet, dev: &str) -> (u64, String) {
    let o = std::process::Command::new("ip")
        .args(["-n", net.name(), "-j", "link", "show", "dev", dev])
        .output()
        .expect("ip link");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("ip -j link");
    (
        v[0]["ifindex"].as_u64().expect("ifindex"),
        v[0]["address"].as_str().expect("address").to_string(),
    )
}

/// Waits (5 s at most) until what `show ports` lists satisfies `ok`.
fn wait_admitted(
    net: &TestNet,
    pins: &PinDir,
    what: &str,
    ok: impl Fn(&[(String, u64, String)]) -> bool,
) {
    let t0 = Instant::now();
    loop {
        let rows = admitted(net, pins);
        if ok(&rows) {
            println!("{what}: after {:?}", t0.elapsed());
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{what}: show ports lists {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `dev` is listed with its ifindex and MAC of now.
fn listed_as_now(net: &TestNet, dev: &str) -> impl Fn(&[(String, u64, String)]) -> bool {
    let (ifindex, mac) = link_of(net, dev);
    let dev = dev.to_string();
    move |rows| rows.contains(&(dev.clone(), ifindex, mac.clone()))
}

/// Waits until `dev` carries an XDP program other than `not`; returns its id.
fn wait_for_xdp(net: &TestNet, dev: &str, not: Option<u32>) -> u32 {
    let t0 = Instant::now();
    loop {
        if let Some(id) = xdp_prog_id(net, dev).filter(|id| Some(*id) != not) {
            println!("{dev}: XDP program {id} after {:?}", t0.elapsed());
            return id;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{dev} was not attached within 5 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ports_are_attached_when_they_appear_and_again_when_re_created() {
    if !require_root("ports_are_attached_when_they_appear_and_again_when_re_created") {
        return;
    }
    let net = fabric("ports", 1);
    let pins = PinDir::new("ports");

    // A missing port without --wait-for-ports: an error naming it, and
    // nothing attached (not even the ports that exist).
    let o = xdp_ecmp(
        &net,
        &pins,
        &["run", "-p", "xe-in", "-p", "xe-late", "--run-for", "5"],
    );
    let t = text(&o);
    assert!(!o.status.success(), "started without xe-late: {t}");
    assert!(
        t.contains("xe-late")
            && t.contains("--wait-for-ports")
            && t.contains("nothing was attached"),
        "{t}"
    );
    assert_eq!(
        xdp_prog_id(&net, "xe-in"),
        None,
        "xe-in was attached anyway"
    );

    // With it: the daemon runs, and attaches xe-late once it exists.
    let daemon = Daemon::start(
        &net,
        &pins,
        &[
            "-p",
            "xe-in",
            "-p",
            "xe-late",
            "--wait-for-ports",
            "--run-for",
            "60",
        ],
        true,
    );
    add_port(&net, "xe-late");
    let first = wait_for_xdp(&net, "xe-late", None);
    assert!(pins.0.join("link_xe-late").exists());
    let (late, _) = link_of(&net, "xe-late");
    wait_admitted(
        &net,
        &pins,
        "xe-late admitted",
        listed_as_now(&net, "xe-late"),
    );

    // Deleted and re-created: attached again (the old link went with the
    // old interface), admitted under the new ifindex only.
    net.ip(&["link", "del", "xe-late"]).expect("del");
    wait_admitted(&net, &pins, "xe-late's entry removed", |rows| {
        rows.iter().all(|r| r.1 != late)
    });
    add_port(&net, "xe-late");
    wait_for_xdp(&net, "xe-late", None);
    assert_ne!(link_of(&net, "xe-late").0, late, "a new interface");
    wait_admitted(
        &net,
        &pins,
        "xe-late admitted again",
        listed_as_now(&net, "xe-late"),
    );
    // A new MAC on the port is followed.
    net.ip(&["link", "set", "xe-late", "address", "02:00:00:00:aa:77"])
        .expect("MAC");
    wait_admitted(
        &net,
        &pins,
        "xe-late's new MAC",
        listed_as_now(&net, "xe-late"),
    );
    let log = daemon.stop();
    assert!(log.contains("port gone"), "{log}");
    let _ = first;

    // Re-created while no daemon runs: the pin now names a link that holds
    // nothing; the next start replaces it instead of adopting it.
    net.ip(&["link", "del", "xe-late"]).expect("del");
    add_port(&net, "xe-late");
    assert_eq!(xdp_prog_id(&net, "xe-late"), None);
    let daemon = Daemon::start(
        &net,
        &pins,
        &["-p", "xe-in", "-p", "xe-late", "--run-for", "60"],
        true,
    );
    wait_for_xdp(&net, "xe-late", None);
    let log = daemon.stop();
    assert!(log.contains("replacing a stale link pin"), "{log}");
    let o = xdp_ecmp(&net, &pins, &["detach", "xe-in", "xe-late"]);
    assert!(o.status.success(), "detach: {}", text(&o));
}
