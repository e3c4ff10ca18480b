//! The daemon binary under churn: 100k route changes through a deliberately small netlink buffer; it re-dumps after overruns and ends equal to the kernel.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use control::check::check;
use control::mirror::Mirror;
use control::state::KernelState;
use control::translate::PlainGroupMode;
use support::{fabric, Daemon, PinDir};
use testnet::require_root;

mod support;

fn field(log: &str, name: &str) -> Option<u64> {
    let at = log.rfind(&format!("{name}="))? + name.len() + 1;
    log[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn churn_with_a_small_netlink_buffer_resyncs_and_converges() {
    if !require_root("churn_with_a_small_netlink_buffer_resyncs_and_converges") {
        return;
    }
    let net = fabric("churn", 2);
    let pins = PinDir::new("churn");
    let daemon = Daemon::start(
        &net,
        &pins,
        &[
            "-p",
            "xe-in",
            "--netlink-rcvbuf",
            "4096",
            "--idle-timer",
            "0",
            "--run-for",
            "40",
        ],
        true,
    );
    std::thread::sleep(Duration::from_millis(300));

    // 100k changes: 60k adds (single and multipath), 40k deletes.
    const ADDS: u32 = 60_000;
    const DELS: u32 = 40_000;
    let mut batch = String::new();
    for i in 0..ADDS {
        let a = 0x6440_0000u32 + i;
        let p = std::net::Ipv4Addr::from(a);
        if i % 3 == 0 {
            batch.push_str(&format!(
                "route add {p}/32 nexthop via 10.0.0.2 nexthop via 10.0.1.2\n"
            ));
        } else {
            batch.push_str(&format!("route add {p}/32 via 10.0.{}.2\n", i % 2));
        }
    }
    for i in 0..DELS {
        batch.push_str(&format!(
            "route del {}/32\n",
            std::net::Ipv4Addr::from(0x6440_0000u32 + i * 3 / 2)
        ));
    }
    let file = std::env::temp_dir().join(format!("xe-churn-{}.batch", std::process::id()));
    std::fs::write(&file, batch).expect("batch file");
    let started = Instant::now();
    let st = Command::new("ip")
        .args(["-n", net.name(), "-force", "-batch"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("ip -batch");
    let _ = std::fs::remove_file(&file);
    assert!(st.success() || st.code() == Some(1), "ip -batch ran");
    let ip_s = started.elapsed().as_secs_f64();

    // Converged when a fresh dump and the pinned maps agree.
    net.enter().expect("enter");
    let dp = control::inspect::open(&pins.0).expect("pinned maps");
    let mode = PlainGroupMode::Resilient {
        buckets: 128,
        max_buckets: 128,
        idle_timer_ms: 0,
        unbalanced_timer_ms: 0,
    };
    let mut diffs;
    let mut routes;
    loop {
        let mut ks = KernelState::new(254);
        Mirror::open(1 << 20)
            .expect("mirror")
            .dump(&mut ks)
            .expect("dump");
        routes = ks.routes.len();
        diffs = check(&ks, &dp, mode).expect("check");
        if diffs.is_empty() || started.elapsed() > Duration::from_secs(30) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let converged_s = started.elapsed().as_secs_f64();
    assert!(
        diffs.is_empty(),
        "{} differences after 30 s, first: {:?}",
        diffs.len(),
        &diffs[..diffs.len().min(5)]
    );

    // Then single changes, one event each, for the event -> map latency.
    const SINGLE: u32 = 300;
    let mut batch = String::new();
    for i in 0..SINGLE {
        batch.push_str(&format!(
            "route add 100.100.{}.{}/32 via 10.0.0.2\n",
            i / 256,
            i % 256
        ));
    }
    for line in batch.lines() {
        let args: Vec<&str> = line.split_whitespace().collect();
        net.ip(&args).expect("single route add");
    }
    std::thread::sleep(Duration::from_millis(500));

    // Stop the daemon (SIGTERM) and read what it counted.
    let out = daemon.stop();
    let resyncs = field(&out, "resyncs").expect("resync count in the log");
    println!(
        "churn: {} route changes by ip -batch in {ip_s:.1} s; maps equal the kernel ({routes} prefixes) {converged_s:.1} s after the start; {resyncs} re-dumps after overruns; then {SINGLE} single adds: event->map p50 {} us, p99 {} us, p999 {} us",
        ADDS + DELS,
        field(&out, "latency_p50_us").unwrap_or(0),
        field(&out, "latency_p99_us").unwrap_or(0),
        field(&out, "latency_p999_us").unwrap_or(0),
    );
    println!(
        "daemon: {}",
        out.lines()
            .filter(|l| l.contains("stopped"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert!(
        resyncs > 0,
        "a 4 KiB buffer must overrun under 100k changes:\n{out}"
    );
}
