//! The kernel-differential oracle: its namespace and shared helpers; the event source (`events`), the run (`differential`), the kernel side (`kernel`) and that side's own tests against `ip route get` (`kernel_tests`).

mod differential;
mod events;
mod kernel;
mod kernel_tests;
#[path = "../support/mod.rs"]
mod support;

use std::net::IpAddr;
use std::process::Command;

use testnet::TestNet;

/// The oracle's namespace: ingress `xe-in` (10.2.0.1/24, 2001:db8:2::1/64;
/// its peer `xe-h0`) and `egress` ports `xe-o<i>` (10.0.i.1/24,
/// 2001:db8:10<i>::1/64; peers `xe-p<i>`) towards the permanent neighbours
/// 10.0.i.2 and 2001:db8:10<i>::2. The multipath hash takes the ports (policy
/// 1, both families). The calling thread enters it.
fn oracle_net(tag: &str, egress: usize) -> TestNet {
    let mut pairs = vec![("xe-h0".to_string(), "xe-in".to_string())];
    pairs.extend((0..egress).map(|i| (format!("xe-o{i}"), format!("xe-p{i}"))));
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let net = TestNet::new(tag, &refs).expect("namespace");
    sysctl(
        &net,
        &[
            "net.ipv4.fib_multipath_hash_policy=1",
            "net.ipv6.fib_multipath_hash_policy=1",
        ],
    );
    ip(&net, &["addr", "add", "10.2.0.1/24", "dev", "xe-in"]);
    ip(
        &net,
        &["addr", "add", "2001:db8:2::1/64", "dev", "xe-in", "nodad"],
    );
    for i in 0..egress {
        let dev = format!("xe-o{i}");
        ip(
            &net,
            &["addr", "add", &format!("10.0.{i}.1/24"), "dev", &dev],
        );
        ip(
            &net,
            &[
                "addr",
                "add",
                &format!("2001:db8:10{i}::1/64"),
                "dev",
                &dev,
                "nodad",
            ],
        );
        for addr in [gw4(i), gw6(i)] {
            ip(
                &net,
                &[
                    "neigh",
                    "replace",
                    &addr.to_string(),
                    "lladdr",
                    &support::mac_str(support::neighbour_mac(i, 0)),
                    "dev",
                    &dev,
                    "nud",
                    "permanent",
                ],
            );
        }
    }
    for i in 0..egress {
        // A veth transmits redirected frames when its peer has GRO (or XDP).
        let gro = crate::events::gro(i, "on");
        let st = Command::new("ip")
            .args(["netns", "exec", net.name()])
            .args(&gro)
            .status()
            .expect("ethtool (scripts/setup.sh installs it)");
        assert!(st.success(), "{gro:?}");
    }
    net.enter().expect("entering the namespace");
    net
}

fn gw4(i: usize) -> IpAddr {
    format!("10.0.{i}.2").parse().unwrap()
}

fn gw6(i: usize) -> IpAddr {
    format!("2001:db8:10{i}::2").parse().unwrap()
}

fn ip(net: &TestNet, args: &[&str]) {
    net.ip(args).unwrap_or_else(|e| panic!("{e}"));
}

fn sysctl(net: &TestNet, settings: &[&str]) {
    let st = Command::new("ip")
        .args(["netns", "exec", net.name(), "sysctl", "-qw"])
        .args(settings)
        .status()
        .expect("sysctl");
    assert!(st.success(), "sysctl {settings:?}: {st}");
}

/// The interface index of `name` in the calling thread's namespace.
fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {name}");
    i
}

fn if_name(index: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    assert!(!p.is_null(), "no interface {index}");
    // SAFETY: if_indextoname wrote a NUL-terminated name.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}
