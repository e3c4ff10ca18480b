//! One writer at a time per pin directory: while the daemon runs, `attach` and a second daemon are refused with the holder's PID; once it dies, the lock is free.

use support::{fabric, text, xdp_ecmp, Daemon, PinDir};
use testnet::require_root;

mod support;

#[test]
fn a_second_writer_is_told_who_holds_the_pin_directory() {
    if !require_root("a_second_writer_is_told_who_holds_the_pin_directory") {
        return;
    }
    let net = fabric("lock", 2);
    let pins = PinDir::new("lock");
    let daemon = Daemon::start(&net, &pins, &["-p", "xe-in", "--run-for", "30"], false);
    let holder = format!("pid {}", daemon.0.id());

    for args in [
        &["attach", "xe-p0"][..],
        &["run", "-p", "xe-p1", "--run-for", "5"],
    ] {
        let o = xdp_ecmp(&net, &pins, args);
        let t = text(&o);
        println!("xdp-ecmp {}: {}", args.join(" "), t.trim());
        assert!(!o.status.success(), "{args:?} ran beside the daemon: {t}");
        assert!(
            t.contains("in use by another xdp-ecmp writer") && t.contains(&holder),
            "{args:?}: the refusal names the lock and the daemon ({holder}): {t}"
        );
    }
    assert!(
        !pins.0.join("link_xe-p0").exists() && !pins.0.join("link_xe-p1").exists(),
        "a refused writer attached nothing"
    );

    // The lock goes with the process, however it ends.
    daemon.kill();
    let o = xdp_ecmp(&net, &pins, &["attach", "xe-p0"]);
    assert!(
        o.status.success(),
        "attach after the daemon died: {}",
        text(&o)
    );
    let o = xdp_ecmp(&net, &pins, &["detach", "xe-p0", "xe-in"]);
    assert!(o.status.success(), "detach: {}", text(&o));
}
