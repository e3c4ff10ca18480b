//! `calc`: which port a flow takes, asked of the loaded program (or of a private copy for another hash seed).

use std::net::IpAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use control::inspect;
use dataplane::abi::xe_config;
use dataplane::{Dataplane, LoadOptions, TableWriter};

use super::args::Cli;

pub(crate) fn proto_number(p: &str) -> Result<u8> {
    Ok(match p {
        "udp" => 17,
        "tcp" => 6,
        "icmp" => 1,
        "icmpv6" => 58,
        n => n.parse().with_context(|| {
            format!("protocol {n:?}: expected udp, tcp, icmp, icmpv6 or a number")
        })?,
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn calc(
    cli: &Cli,
    proto: &str,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    sport: u16,
    dport: u16,
    in_port: Option<&str>,
    hash_seed: Option<u64>,
    pcap: Option<&Path>,
    json: bool,
) -> Result<()> {
    let dp = inspect::open(&cli.pin_dir)?;
    // Asked as received on a port, addressed to its MAC.
    let (port, ifindex, port_mac) = inspect::ingress(&dp, in_port)?;
    if let Some(seed) = hash_seed {
        let mut cfg = dp.config()?;
        cfg.seed = [seed as u32, (seed >> 32) as u32];
        // The answer for another seed comes from a private copy of the
        // program whose config map is its own; the routes are shared.
        let (Some(s), Some(d)) = (src, dst) else {
            bail!("calc needs -s SRC and -d DST")
        };
        let frame = flow_frame(proto, s, d, sport, dport, port_mac)?;
        return calc_with_seed(&dp, cfg, ifindex, &frame, json);
    }
    let frames = match pcap {
        Some(p) => inspect::pcap_frames(p)?,
        None => {
            let (Some(s), Some(d)) = (src, dst) else {
                bail!("calc needs -s SRC and -d DST (or --pcap FILE)")
            };
            vec![flow_frame(proto, s, d, sport, dport, port_mac)?]
        }
    };
    if !json && dp.inports()?.iter().all(|(i, _)| *i != ifindex) {
        eprintln!("note: {port} is not attached (no ingress port entry): the program passes what it receives there to the kernel");
    }
    for (i, f) in frames.iter().enumerate() {
        let a = inspect::ask(&dp, ifindex, f)?;
        if json {
            println!("{}", serde_json::to_string(&a)?);
        } else if pcap.is_some() {
            println!(
                "{i}: {} egress {} nexthop {} group {} bucket {}",
                a.verdict,
                a.egress.as_deref().unwrap_or("-"),
                a.nexthop.map_or("-".into(), |n| n.to_string()),
                a.group.map_or("-".into(), |n| n.to_string()),
                a.bucket.map_or("-".into(), |n| n.to_string())
            );
        } else {
            match &a.egress {
                Some(e) => {
                    println!("{e}");
                    println!(
                        "  nexthop {} lladdr {} group {} bucket {} hash {}",
                        a.nexthop.unwrap_or(0),
                        a.lladdr.as_deref().unwrap_or("-"),
                        a.group.unwrap_or(0),
                        a.bucket.map_or("-".into(), |n| n.to_string()),
                        a.hash
                    );
                    if let Some(p) = &a.pin {
                        println!("  {p}");
                    }
                }
                None => println!(
                    "not forwarded: {} (group {} bucket {} nexthop {})",
                    a.verdict,
                    a.group.map_or("-".into(), |n| n.to_string()),
                    a.bucket.map_or("-".into(), |n| n.to_string()),
                    a.nexthop.map_or("-".into(), |n| n.to_string())
                ),
            }
        }
    }
    Ok(())
}

/// Asks a private copy of the program, with the tables of `shared` and
/// the config `cfg`, about `frame` received on `ifindex`.
pub(crate) fn calc_with_seed(
    shared: &Dataplane,
    cfg: xe_config,
    ifindex: u32,
    frame: &[u8],
    json: bool,
) -> Result<()> {
    let mut private = Dataplane::load(&LoadOptions {
        trace_decisions: true,
        ..Default::default()
    })?;
    copy_tables(shared, &mut private)?;
    private.set_config(&cfg)?;
    let a = inspect::ask(&private, ifindex, frame)?;
    if json {
        println!("{}", serde_json::to_string(&a)?);
    } else {
        println!(
            "{}",
            a.egress
                .as_deref()
                .unwrap_or(&format!("not forwarded: {}", a.verdict))
        );
    }
    Ok(())
}

/// Copies routes, groups, slots, next hops and ports (egress and ingress)
/// from the pinned maps into a private program.
pub(crate) fn copy_tables(from: &Dataplane, to: &mut Dataplane) -> Result<()> {
    for (ifindex, p) in from.inports()? {
        to.set_inport(ifindex, &p)?;
    }
    for (a, l, r) in from.routes_v4()? {
        to.set_route_v4(a, l, &r)?;
    }
    for (a, l, r) in from.routes_v6()? {
        to.set_route_v6(a, l, &r)?;
    }
    for g in inspect::groups(from)? {
        let gr = from.group(g.id)?;
        let slots = from.slots(gr.base, u32::from(gr.size))?;
        to.set_slots(gr.base, &slots)?;
        to.set_group(g.id, &gr)?;
        for nh in slots.iter().filter(|n| **n != 0) {
            let n = from.nexthop(*nh)?;
            to.set_nexthop(*nh, &n)?;
            let _ = to.add_txport(n.ifindex);
        }
    }
    Ok(())
}

/// The frame calc asks about: the flow, addressed to the ingress port's MAC.
pub(crate) fn flow_frame(
    proto: &str,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    dst_mac: [u8; 6],
) -> Result<Vec<u8>> {
    let flow = inspect::Flow {
        proto: proto_number(proto)?,
        src,
        dst,
        sport,
        dport,
    };
    inspect::build_frame(&flow, dst_mac)
}
