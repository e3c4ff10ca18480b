//! Which ports can transmit a redirected XDP frame: the kernel's per-device XDP features (the `netdev` generic netlink family, Linux 6.3+), dumped and followed by notification.
//!
//! A device without `NDO_XMIT` (a bridge, bond, VLAN or vxlan device, a
//! driver without XDP, a veth whose peer has neither an XDP program nor GRO)
//! drops every frame redirected to it; its next hops go to the kernel.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};

use anyhow::{bail, Context, Result};
use netlink_packet_core::{
    DecodeError, Emitable, NetlinkBuffer, NetlinkMessage, NetlinkPayload, NlasIterator,
    ParseableParametrized, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_generic::ctrl::nlas::{GenlCtrlAttrs, McastGrpAttrs};
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket};

/// `NETDEV_XDP_ACT_NDO_XMIT`: the device transmits frames redirected to it.
pub const NDO_XMIT: u64 = 1 << 2;

const CMD_DEV_GET: u8 = 1;
const CMD_DEV_DEL_NTF: u8 = 3;
const A_DEV_IFINDEX: u16 = 1;
const A_DEV_XDP_FEATURES: u16 = 3;

/// One message of the `netdev` family: a command and the device it names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NetdevMsg {
    cmd: u8,
    ifindex: Option<u32>,
    features: Option<u64>,
}

impl GenlFamily for NetdevMsg {
    fn family_name() -> &'static str {
        "netdev"
    }
    fn command(&self) -> u8 {
        self.cmd
    }
    fn version(&self) -> u8 {
        1
    }
}

impl Emitable for NetdevMsg {
    // Requests carry no attributes (a dump of every device).
    fn buffer_len(&self) -> usize {
        0
    }
    fn emit(&self, _: &mut [u8]) {}
}

impl ParseableParametrized<[u8], GenlHeader> for NetdevMsg {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let mut m = NetdevMsg {
            cmd: header.cmd,
            ..Default::default()
        };
        for nla in NlasIterator::new(buf) {
            let nla = nla?;
            let v = nla.value();
            match nla.kind() {
                A_DEV_IFINDEX if v.len() >= 4 => {
                    m.ifindex = Some(u32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
                }
                A_DEV_XDP_FEATURES if v.len() >= 8 => {
                    let mut b = [0; 8];
                    b.copy_from_slice(&v[..8]);
                    m.features = Some(u64::from_ne_bytes(b));
                }
                _ => {}
            }
        }
        Ok(m)
    }
}

/// A change a notification announced: the device's features, `None` when it went.
pub type Change = (u32, Option<u64>);

/// The sockets that read and follow the devices' XDP features.
pub struct XdpFeatures {
    requests: Socket,
    events: Socket,
    family: u16,
    seq: u32,
    buf: Vec<u8>,
}

fn socket() -> Result<Socket> {
    let mut s = Socket::new(NETLINK_GENERIC).context("opening a NETLINK_GENERIC socket")?;
    s.bind_auto()
        .context("binding the generic netlink socket")?;
    Ok(s)
}

/// Sends `msg` and collects every reply of type `family` until the dump
/// ends (or the single answer came).
fn ask<F>(s: &Socket, buf: &mut [u8], msg: GenlMessage<F>, flags: u16, seq: u32) -> Result<Vec<F>>
where
    F: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + std::fmt::Debug,
{
    let mut nl = NetlinkMessage::from(msg);
    nl.header.flags = NLM_F_REQUEST | flags;
    nl.header.sequence_number = seq;
    nl.finalize();
    let mut out = vec![0; nl.buffer_len()];
    nl.serialize(&mut out);
    s.send(&out, 0)
        .context("sending a generic netlink request")?;
    let mut got = Vec::new();
    loop {
        let n = s
            .recv(&mut &mut buf[..], 0)
            .context("reading a generic netlink answer")?;
        let mut at = 0;
        while at < n {
            let Ok(frame) = NetlinkBuffer::new_checked(&buf[at..n]) else {
                bail!("a generic netlink answer that does not parse");
            };
            let len = frame.length() as usize;
            let m = NetlinkMessage::<GenlMessage<F>>::deserialize(&buf[at..at + len])
                .context("decoding a generic netlink answer")?;
            at += (len + 3) & !3;
            match m.payload {
                NetlinkPayload::InnerMessage(g) => got.push(g.payload),
                NetlinkPayload::Done(_) => return Ok(got),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(std::io::Error::from_raw_os_error(
                        -e.code.map_or(0, |c| c.get()),
                    ))
                    .context("the kernel refused a generic netlink request")
                }
                _ => {}
            }
        }
        if flags & NLM_F_DUMP == 0 {
            return Ok(got);
        }
    }
}

impl XdpFeatures {
    /// Opens the sockets and joins the family's `mgmt` group; `None` when
    /// the kernel has no `netdev` family (before 6.3: features unknown).
    pub fn open() -> Result<Option<Self>> {
        let requests = socket()?;
        let mut buf = vec![0; 1 << 16];
        let q = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName("netdev".into())],
        });
        let answer = match ask(&requests, &mut buf, q, 0, 1) {
            Ok(a) => a,
            Err(e)
                if e.downcast_ref::<std::io::Error>()
                    .and_then(|e| e.raw_os_error())
                    == Some(libc::ENOENT) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e.context("resolving the netdev generic netlink family")),
        };
        let (mut family, mut group) = (None, None);
        for a in answer.iter().flat_map(|c| &c.nlas) {
            match a {
                GenlCtrlAttrs::FamilyId(id) => family = Some(*id),
                GenlCtrlAttrs::McastGroups(gs) => {
                    for g in gs {
                        let name = g.iter().find_map(|x| match x {
                            McastGrpAttrs::Name(n) => Some(n.as_str()),
                            _ => None,
                        });
                        let id = g.iter().find_map(|x| match x {
                            McastGrpAttrs::Id(i) => Some(*i),
                            _ => None,
                        });
                        if name == Some("mgmt") {
                            group = id;
                        }
                    }
                }
                _ => {}
            }
        }
        let (Some(family), Some(group)) = (family, group) else {
            return Ok(None);
        };
        let events = socket()?;
        events
            .add_membership(group)
            .context("joining the netdev family's mgmt group")?;
        events
            .set_non_blocking(true)
            .context("making the netdev events socket non-blocking")?;
        Ok(Some(XdpFeatures {
            requests,
            events,
            family,
            seq: 1,
            buf,
        }))
    }

    /// Every device's XDP features now.
    pub fn dump(&mut self) -> Result<HashMap<u32, u64>> {
        self.seq = self.seq.wrapping_add(1);
        let mut q = GenlMessage::from_payload(NetdevMsg {
            cmd: CMD_DEV_GET,
            ..Default::default()
        });
        q.set_resolved_family_id(self.family);
        let all = ask(&self.requests, &mut self.buf, q, NLM_F_DUMP, self.seq)
            .context("dumping the devices' XDP features")?;
        Ok(all
            .into_iter()
            .filter_map(|m| Some((m.ifindex?, m.features.unwrap_or(0))))
            .collect())
    }

    /// The descriptor that becomes readable when a notification waits.
    pub fn fd(&self) -> RawFd {
        self.events.as_raw_fd()
    }

    /// Reads every notification waiting; an overrun (ENOBUFS) is an error
    /// the caller answers with a dump.
    pub fn drain(&mut self) -> std::io::Result<Vec<Change>> {
        let mut out = Vec::new();
        loop {
            let n = match self.events.recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(out),
                Err(e) => return Err(e),
            };
            let mut at = 0;
            while at < n {
                let Ok(frame) = NetlinkBuffer::new_checked(&self.buf[at..n]) else {
                    break;
                };
                let len = frame.length() as usize;
                let bytes = &self.buf[at..at + len];
                at += (len + 3) & !3;
                let Ok(m) = NetlinkMessage::<GenlMessage<NetdevMsg>>::deserialize(bytes) else {
                    continue;
                };
                if let NetlinkPayload::InnerMessage(g) = m.payload {
                    let d = g.payload;
                    if let Some(i) = d.ifindex {
                        let gone = d.cmd == CMD_DEV_DEL_NTF;
                        out.push((i, (!gone).then(|| d.features.unwrap_or(0))));
                    }
                }
            }
        }
    }
}
