//! The kernel's forwarding switches as they bear on the dataplane: IPv4 forwarding on each attached port, IPv6 forwarding; where the kernel would not forward, that family's routes go to the kernel.
//!
//! The kernel forwards an IPv4 packet only if forwarding is on for the port
//! it came in by (`net.ipv4.conf.PORT.forwarding`, which `ip_forward` sets
//! for every port), and an IPv6 packet only if `net.ipv6.conf.all.forwarding`
//! is on. The program does not know its ingress port's switches, so when
//! any attached port has IPv4 forwarding off, every IPv4 route is written
//! as a pass: the kernel then decides, port by port (never forwarding what
//! the kernel would not, at the price of passing what it would). The files
//! are read in the daemon's namespace at every wake-up (at least every
//! 200 ms): a few small reads.

use crate::state::KernelState;

fn on(path: &str) -> Option<bool> {
    std::fs::read_to_string(path).ok().map(|v| v.trim() != "0")
}

/// The switches now: the first attached port with IPv4 forwarding off, and
/// whether IPv6 forwarding is off. A port that does not exist (yet) does
/// not count; a switch that cannot be read counts as off.
pub fn read(ports: &[String]) -> (Option<String>, bool) {
    let v4_off = ports
        .iter()
        .filter(|p| std::path::Path::new(&format!("/proc/sys/net/ipv4/conf/{p}")).exists())
        .find(|p| on(&format!("/proc/sys/net/ipv4/conf/{p}/forwarding")) != Some(true))
        .cloned();
    let v6_off = on("/proc/sys/net/ipv6/conf/all/forwarding") != Some(true);
    (v4_off, v6_off)
}

/// Puts the switches into `state`; true (and every route marked changed)
/// when they changed.
pub fn apply(ports: &[String], state: &mut KernelState) -> bool {
    let (v4_off, v6_off) = read(ports);
    let changed = state.forwarding_off_v4 != v4_off.is_some() || state.forwarding_off_v6 != v6_off;
    if changed {
        match &v4_off {
            Some(p) => tracing::warn!(
                port = p,
                "IPv4 forwarding is off on an attached port: IPv4 routes go to the kernel"
            ),
            None if state.forwarding_off_v4 => {
                tracing::info!("IPv4 forwarding is on again on every attached port")
            }
            None => {}
        }
        if v6_off != state.forwarding_off_v6 {
            if v6_off {
                tracing::warn!("IPv6 forwarding is off: IPv6 routes go to the kernel");
            } else {
                tracing::info!("IPv6 forwarding is on again");
            }
        }
        state.forwarding_off_v4 = v4_off.is_some();
        state.forwarding_off_v6 = v6_off;
        state.mark_all_dirty();
    }
    changed
}
