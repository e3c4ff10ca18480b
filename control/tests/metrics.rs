//! The metrics endpoint under bad clients: an idle one, a slow one and one with an endless request line never delay a scrape, and the server closes them.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use control::metrics::{serve, Shared, CLIENT_TIMEOUT};

/// Every scrape must be answered within this.
const SCRAPE_LIMIT: Duration = Duration::from_secs(1);

/// A bad client's connection must be closed within this of its connect.
const CLOSE_LIMIT: Duration = Duration::from_secs(8);

/// Bad clients stop by themselves after this, closed or not.
const GIVE_UP: Duration = Duration::from_secs(12);

/// Size of the endless request line (no newline in it).
const HUGE_LINE: usize = 10 << 20;

/// Starts a server on an ephemeral port of 127.0.0.1. Its pin directory
/// holds no maps, so the counters come back empty; no root needed.
fn start() -> SocketAddr {
    let pin_dir = std::env::temp_dir().join("xdp-ecmp-metrics-test-no-maps");
    serve("127.0.0.1:0".parse().unwrap(), pin_dir, Shared::default()).expect("metrics server")
}

/// Sends `request` and reads the whole answer, all within `SCRAPE_LIMIT`.
fn exchange(addr: SocketAddr, request: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, SCRAPE_LIMIT)?;
    stream.set_read_timeout(Some(SCRAPE_LIMIT))?;
    stream.set_write_timeout(Some(SCRAPE_LIMIT))?;
    stream.write_all(request.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

fn get(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<String> {
    exchange(
        addr,
        &format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
    )
}

/// When the server closed a bad client's connection.
#[derive(Debug)]
struct Closed {
    /// Since connect; None if it was still open when the client gave up.
    after: Option<Duration>,
    /// Request bytes the server took before that.
    sent: usize,
}

/// True if `e` says the peer closed the connection.
fn is_closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
    )
}

/// Waits (until GIVE_UP after `opened`) for the server to close `stream`;
/// whatever it answers first is read and ignored.
fn wait_closed(stream: &mut TcpStream, opened: Instant) -> Option<Duration> {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while opened.elapsed() < GIVE_UP {
        match stream.read(&mut buf) {
            Ok(0) => return Some(opened.elapsed()),
            Ok(_) => {}
            Err(e) if is_closed(&e) => return Some(opened.elapsed()),
            Err(_) => {} // timed out: still open
        }
    }
    None
}

/// The three clients that must not hold up a scrape.
struct BadClients {
    /// Before the first of them connected.
    opened: Instant,
    /// Connected, sends nothing.
    idle: JoinHandle<Closed>,
    /// Sends a request line without newline, one byte every 100 ms.
    slow: JoinHandle<Closed>,
    /// Sends a 10 MB request line without newline as fast as it can.
    huge: JoinHandle<Closed>,
}

impl BadClients {
    fn open(addr: SocketAddr) -> BadClients {
        let first = Instant::now();
        let idle = TcpStream::connect(addr).expect("idle client connects");
        let opened = Instant::now();
        let idle = thread::spawn(move || {
            let mut idle = idle;
            Closed {
                after: wait_closed(&mut idle, opened),
                sent: 0,
            }
        });
        let mut slow = TcpStream::connect(addr).expect("slow client connects");
        let opened = Instant::now();
        let slow = thread::spawn(move || {
            slow.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut sent = 0;
            let mut buf = [0u8; 4096];
            let mut next: &[u8] = b"GET /metr";
            while opened.elapsed() < GIVE_UP {
                match slow.write(next) {
                    Ok(n) => sent += n,
                    Err(e) if is_closed(&e) => break,
                    Err(e) => panic!("slow client: {e}"),
                }
                next = b"i";
                match slow.read(&mut buf) {
                    Ok(0) => break,
                    Err(e) if is_closed(&e) => break,
                    _ => {} // an answer, or 100 ms without one
                }
            }
            let after = Some(opened.elapsed()).filter(|t| *t < GIVE_UP);
            Closed { after, sent }
        });
        let mut huge = TcpStream::connect(addr).expect("huge client connects");
        let opened = Instant::now();
        let huge = thread::spawn(move || {
            huge.set_write_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let chunk = [b'a'; 64 << 10];
            let mut sent = 0;
            let mut request: &[u8] = b"GET /";
            while sent < HUGE_LINE {
                match huge.write(request) {
                    Ok(n) => sent += n,
                    Err(e) if is_closed(&e) => {
                        let after = Some(opened.elapsed());
                        return Closed { after, sent };
                    }
                    // The server stopped reading without closing.
                    Err(_) => break,
                }
                request = &chunk;
            }
            Closed {
                after: wait_closed(&mut huge, opened),
                sent,
            }
        });
        // Let the server accept them and read what they sent so far.
        thread::sleep(Duration::from_millis(300));
        BadClients {
            opened: first,
            idle,
            slow,
            huge,
        }
    }

    fn join(self) -> [(&'static str, Closed); 3] {
        [
            ("idle", self.idle.join().unwrap()),
            ("slow", self.slow.join().unwrap()),
            ("huge", self.huge.join().unwrap()),
        ]
    }
}

#[test]
fn scrapes_are_answered_while_idle_slow_and_huge_clients_are_open() {
    let addr = start();
    let bad = BadClients::open(addr);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let t = Instant::now();
        let answer = get(addr, "GET", "/metrics")
            .unwrap_or_else(|e| panic!("scrape {i}: {e} after {:?}", t.elapsed()));
        let took = t.elapsed();
        assert!(answer.starts_with("HTTP/1.1 200 "), "scrape {i}: {answer}");
        assert!(answer.contains("xdp_ecmp_syncs_total 0\n"), "{answer}");
        assert!(took < SCRAPE_LIMIT, "scrape {i} took {took:?}");
        slowest = slowest.max(took);
    }
    let scraped = Instant::now();
    println!(
        "20 scrapes with idle, slow and huge clients open: slowest {slowest:?}, all {:?}",
        scraped - started
    );
    let opened = bad.opened;
    for (name, closed) in bad.join() {
        if name != "huge" {
            // Closed after the scrapes (at the earliest `after` past the
            // first connect): the scrapes ran while it was open.
            let after = closed.after.expect("closed by the server");
            assert!(
                opened + after > scraped,
                "{name} closed {after:?} after its connect, before the scrapes ended"
            );
        }
    }
}

#[test]
fn server_closes_idle_slow_and_huge_clients() {
    let addr = start();
    let clients = BadClients::open(addr).join();
    for (name, closed) in &clients {
        println!("{name} client: {closed:?}");
    }
    for (name, closed) in clients {
        let after = closed
            .after
            .unwrap_or_else(|| panic!("{name} client still open after {GIVE_UP:?}: {closed:?}"));
        assert!(after < CLOSE_LIMIT, "{name} client closed after {after:?}");
        if name == "huge" {
            assert!(closed.sent < HUGE_LINE, "{closed:?}");
        } else {
            assert!(
                after >= CLIENT_TIMEOUT - Duration::from_millis(500),
                "{name}: {after:?}"
            );
        }
    }
}

#[test]
fn only_get_metrics_is_answered() {
    let addr = start();
    let answer = get(addr, "GET", "/metrics").unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("\r\ncontent-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        body.contains("# TYPE xdp_ecmp_syncs_total counter\n"),
        "{body}"
    );
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/metricsx"),
        ("GET", "/metrics/x"),
        ("POST", "/metrics"),
        ("DELETE", "/metrics"),
    ] {
        let answer = get(addr, method, path).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 404 "),
            "{method} {path}: {answer}"
        );
    }
    let answer = get(addr, "HEAD", "/metrics").unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "HEAD: {answer}");
}
