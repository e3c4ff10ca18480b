//! IPv4 route changes over a NETLINK_ROUTE socket of a benchmark's namespace, acknowledged one by one, as a routing daemon makes them.
//!
//! The control-plane benchmark once ran `ip -n NS route ...` for every
//! change. Each such run makes a mount namespace (to mount the namespace's
//! /sys), and its exit tears that down with an expedited RCU grace period:
//! on a 2-CPU VM, 20-30 ms of a CPU in `rcu_exp_gp_kthread` per run, taken
//! from the daemon whose latency is measured (`perf sched` showed the
//! kernel's RCU threads using a third of both CPUs at 50 runs a second).

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use anyhow::{anyhow, Context, Result};
use control::nexthop_msg::{request, route_socket, RtMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::Socket;

/// `NLM_F_REPLACE`, `NLM_F_EXCL`, `NLM_F_CREATE` (`linux/netlink.h`).
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

/// A NETLINK_ROUTE socket opened in a named network namespace.
pub struct RouteSocket {
    socket: Socket,
    ns: String,
}

impl RouteSocket {
    /// Opens the socket from a thread that entered `/run/netns/NS`; the
    /// socket stays in that namespace, the calling thread in its own.
    pub fn open(ns: &str) -> Result<Self> {
        let path = format!("/run/netns/{ns}");
        let socket = std::thread::scope(|s| {
            s.spawn(|| -> Result<Socket> {
                let f = File::open(&path).with_context(|| format!("opening {path}"))?;
                // SAFETY: a valid namespace fd; moves only this short-lived thread.
                if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error())
                        .with_context(|| format!("entering the namespace {ns}"));
                }
                route_socket().context("opening a NETLINK_ROUTE socket")
            })
            .join()
            .map_err(|_| anyhow!("the thread opening a netlink socket in {ns} panicked"))?
        })?;
        Ok(RouteSocket {
            socket,
            ns: ns.to_string(),
        })
    }

    /// `ip route add A/32 via GW` (`replace`: `ip route replace`); returns
    /// once the kernel acknowledged it, i.e. holds the route.
    pub fn add(&self, a: Ipv4Addr, via: Ipv4Addr, replace: bool) -> Result<()> {
        let mut m = host_route(a);
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(via)));
        let flags = NLM_F_CREATE | if replace { NLM_F_REPLACE } else { NLM_F_EXCL };
        request(
            &self.socket,
            RtMessage::Route(RouteNetlinkMessage::NewRoute(m)),
            flags,
        )
        .with_context(|| format!("adding {a}/32 via {via} in {}", self.ns))
    }

    /// `ip route del A/32`; returns once the kernel acknowledged it.
    pub fn del(&self, a: Ipv4Addr) -> Result<()> {
        request(
            &self.socket,
            RtMessage::Route(RouteNetlinkMessage::DelRoute(host_route(a))),
            0,
        )
        .with_context(|| format!("deleting {a}/32 in {}", self.ns))
    }
}

/// The message `ip route add A/32` starts from: main table, boot protocol,
/// universe scope, unicast.
fn host_route(a: Ipv4Addr) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = 32;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    m.attributes = vec![RouteAttribute::Destination(RouteAddress::Inet(a))];
    m
}
