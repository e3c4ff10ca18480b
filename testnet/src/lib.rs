//! Test support: gating of tests that need root, and throw-away network namespaces with veth ports (prefix `xe-t`).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;

/// True if this process may load BPF programs and create namespaces. When it
/// may not, prints a "skipped: needs root" line, or panics under CI=true,
/// where a skipped root test is a failure.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: needs root, and CI=true forbids skipping it");
    }
    eprintln!("{test}: skipped: needs root");
    false
}

fn ip(args: &[&str]) -> std::io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// A network namespace made for one test, deleted (with its links) on drop.
pub struct TestNet {
    name: String,
}

impl TestNet {
    /// Creates namespace `xe-t<pid>-<tag>`, forwarding IPv4 and IPv6, holding
    /// the veth pairs `(a, b)`, all up. The calling thread does not enter it yet.
    pub fn new(tag: &str, pairs: &[(&str, &str)]) -> std::io::Result<Self> {
        let name = format!("xe-t{}-{tag}", std::process::id());
        ip(&["netns", "add", &name])?;
        let net = TestNet { name };
        ip(&["-n", &net.name, "link", "set", "lo", "up"])?;
        // A router: forwarding on for both families (and, through the
        // defaults, for every port made below), as the daemon expects.
        let st = Command::new("ip")
            .args(["netns", "exec", &net.name, "sysctl", "-qw"])
            .args(["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])
            .status()?;
        if !st.success() {
            return Err(std::io::Error::other(format!(
                "enabling forwarding in {}: sysctl {st}",
                net.name
            )));
        }
        for (a, b) in pairs {
            ip(&[
                "-n", &net.name, "link", "add", a, "type", "veth", "peer", "name", b,
            ])?;
            ip(&["-n", &net.name, "link", "set", a, "up"])?;
            ip(&["-n", &net.name, "link", "set", b, "up"])?;
        }
        Ok(net)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves the calling thread into the namespace (other threads stay put).
    pub fn enter(&self) -> std::io::Result<()> {
        let f = File::open(format!("/run/netns/{}", self.name))?;
        // SAFETY: valid namespace fd; affects only this thread.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Runs `ip -n NS ARGS`.
    pub fn ip(&self, args: &[&str]) -> std::io::Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("cleanup of namespace {}: {e}", self.name);
        }
    }
}

/// A raw AF_PACKET socket bound to one interface of the calling thread's
/// namespace, with a 100 ms receive timeout (for sending and counting frames).
pub fn packet_socket(ifindex: u32) -> std::io::Result<OwnedFd> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket calls; the fd is owned right away.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto));
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        if libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        Ok(fd)
    }
}

/// Sends one frame on a packet socket.
pub fn send_frame(fd: &OwnedFd, frame: &[u8]) -> std::io::Result<()> {
    // SAFETY: valid socket and buffer.
    let n = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one frame into `buf` (None after the 100 ms timeout).
pub fn recv_frame(fd: &OwnedFd, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: valid socket and buffer.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    (n > 0).then_some(n as usize)
}
