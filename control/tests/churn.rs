//! The daemon binary under churn: 100k route changes through a deliberately small netlink buffer; it re-dumps after overruns and ends equal to the kernel.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use control::check::check;
use control::mirror::Mirror;
use control::state::KernelState;
use control::translate::PlainGroupMode;
use dataplane::testnet::{require_root, TestNet};

struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The daemon, stopped (by its own PID) if the test ends early.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
    let net = TestNet::new("churn", &[("xe-a0", "xe-b0"), ("xe-a1", "xe-b1")]).expect("namespace");
    net.ip(&["addr", "add", "10.0.0.1/24", "dev", "xe-a0"])
        .expect("addr");
    net.ip(&["addr", "add", "10.0.1.1/24", "dev", "xe-a1"])
        .expect("addr");
    net.ip(&[
        "neigh",
        "add",
        "10.0.0.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "xe-a0",
        "nud",
        "permanent",
    ])
    .expect("neigh");
    net.ip(&[
        "neigh",
        "add",
        "10.0.1.2",
        "lladdr",
        "02:00:00:00:01:02",
        "dev",
        "xe-a1",
        "nud",
        "permanent",
    ])
    .expect("neigh");
    let pins = PinDir(PathBuf::from(format!(
        "/sys/fs/bpf/xe-t{}-churn",
        std::process::id()
    )));
    let child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", net.name()))
        .arg(env!("CARGO_BIN_EXE_xdp-ecmp"))
        .arg("--pin-dir")
        .arg(&pins.0)
        .args([
            "run",
            "-p",
            "xe-a1",
            "--netlink-rcvbuf",
            "4096",
            "--idle-timer",
            "0",
            "--run-for",
            "40",
        ])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting xdp-ecmp run");
    let mut daemon = Daemon(child);
    let t0 = Instant::now();
    while !pins.0.join("link_xe-a1").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "daemon did not attach"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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
    // SAFETY: signalling the child we started, by its PID.
    unsafe { libc::kill(daemon.0.id() as i32, libc::SIGTERM) };
    let out = daemon.0.wait_with_output_ref();
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

trait WaitLog {
    fn wait_with_output_ref(&mut self) -> String;
}

impl WaitLog for Child {
    fn wait_with_output_ref(&mut self) -> String {
        use std::io::Read;
        let mut s = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        let _ = self.wait();
        s
    }
}
