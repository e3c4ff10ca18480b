//! Netlink nexthop-object messages (RTM_*NEXTHOP, RTM_*NEXTHOPBUCKET), which netlink-packet-route does not model, built on netlink-packet-core.
//!
//! Layout, as in `linux/nexthop.h`:
//!
//! * [`NexthopMessage`]: `struct nhmsg` ([`NexthopHeader`], read through
//!   [`NexthopMessageBuffer`]) followed by `NHA_*` attributes
//!   ([`NexthopAttribute`]), the nested `NHA_RES_GROUP`
//!   ([`NexthopResGroupAttribute`]) and `NHA_RES_BUCKET`
//!   ([`NexthopBucketAttribute`]) among them. `NHA_GROUP` is an array of
//!   `struct nexthop_grp` ([`NexthopGroupEntry`], read through
//!   [`NexthopGroupEntryBuffer`]).
//! * [`RtMessage`]: every rtnetlink message; the six nexthop types are decoded
//!   here and all others by [`RouteNetlinkMessage`], so one socket and one
//!   receive loop serve links, addresses, neighbours, routes and nexthops.
//! * [`dump_nexthops`], [`dump_nexthop_buckets`], [`dump`], [`request`] and
//!   [`recv_messages`]: blocking exchanges over a [`netlink_sys::Socket`].
//! * [`Nexthop`] and [`Bucket`]: a typed view of a kernel message.
//!
//! Timers are in `clock_t` units (USER_HZ, 1/100 s on Linux): see
//! [`clock_t_to_duration`].

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::ops::{Range, RangeFrom};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use netlink_packet_core::{
    emit_u16, emit_u32, emit_u64, parse_ip, parse_string, parse_u16, parse_u32, parse_u64,
    DecodeError, DefaultNla, Emitable, ErrorContext, ErrorMessage, NetlinkBuffer,
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable, Nla,
    NlaBuffer, NlasIterator, Parseable, ParseableParametrized, NLM_F_ACK, NLM_F_ACK_TLVS,
    NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::route::{RouteProtocol, RouteScope};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Message types (`linux/rtnetlink.h`).
pub const RTM_NEWNEXTHOP: u16 = 104;
pub const RTM_DELNEXTHOP: u16 = 105;
pub const RTM_GETNEXTHOP: u16 = 106;
pub const RTM_NEWNEXTHOPBUCKET: u16 = 116;
pub const RTM_DELNEXTHOPBUCKET: u16 = 117;
pub const RTM_GETNEXTHOPBUCKET: u16 = 118;

/// The multicast group of nexthop notifications (`RTNLGRP_NEXTHOP`), for
/// [`Socket::add_membership`].
pub const RTNLGRP_NEXTHOP: u32 = 32;

/// `NHA_OP_FLAGS` bit by which the kernel (6.11 and later) asserts that it
/// zeroes the reserved bytes of `struct nexthop_grp`, so that `weight_high`
/// can be read. Older kernels may leave garbage there.
pub const NHA_OP_FLAG_RESP_GRP_RESVD_0: u32 = 1 << 31;

/// `nhmsg.nh_flags` bits (`RTNH_F_*`).
pub const RTNH_F_DEAD: u32 = 1;
pub const RTNH_F_ONLINK: u32 = 4;
pub const RTNH_F_OFFLOAD: u32 = 8;
pub const RTNH_F_LINKDOWN: u32 = 16;
pub const RTNH_F_UNRESOLVED: u32 = 32;
pub const RTNH_F_TRAP: u32 = 64;

/// `clock_t` ticks a second (USER_HZ) in the timers of resilient groups.
pub const USER_HZ: u64 = 100;

const NHA_ID: u16 = 1;
const NHA_GROUP: u16 = 2;
const NHA_GROUP_TYPE: u16 = 3;
const NHA_BLACKHOLE: u16 = 4;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;
const NHA_FDB: u16 = 11;
const NHA_RES_GROUP: u16 = 12;
const NHA_RES_BUCKET: u16 = 13;
// Newer than the installed linux/nexthop.h (which stops at NHA_RES_BUCKET),
// but sent by kernels since 6.11 with every group.
const NHA_OP_FLAGS: u16 = 14;

const NHA_RES_GROUP_BUCKETS: u16 = 1;
const NHA_RES_GROUP_IDLE_TIMER: u16 = 2;
const NHA_RES_GROUP_UNBALANCED_TIMER: u16 = 3;
const NHA_RES_GROUP_UNBALANCED_TIME: u16 = 4;

const NHA_RES_BUCKET_INDEX: u16 = 1;
const NHA_RES_BUCKET_IDLE_TIME: u16 = 2;
const NHA_RES_BUCKET_NH_ID: u16 = 3;

const NEXTHOP_GRP_TYPE_MPATH: u16 = 0;
const NEXTHOP_GRP_TYPE_RES: u16 = 1;

const NLMSGERR_ATTR_MSG: u16 = 1;
const NETLINK_HEADER_LEN: usize = 16;

/// Converts a `clock_t` timer of the kernel (idle timer, idle time, ...) to a
/// duration.
pub fn clock_t_to_duration(ticks: u64) -> Duration {
    Duration::from_millis(ticks.saturating_mul(1000 / USER_HZ))
}

// ---------------------------------------------------------------------------
// struct nhmsg

const FAMILY: usize = 0;
const SCOPE: usize = 1;
const PROTOCOL: usize = 2;
const RESERVED: usize = 3;
const FLAGS: Range<usize> = 4..8;
const ATTRIBUTES: RangeFrom<usize> = 8..;

/// Length of `struct nhmsg`.
pub const NEXTHOP_HEADER_LEN: usize = ATTRIBUTES.start;

/// A buffer holding a `struct nhmsg` and its attributes, with accessors for
/// the header fields (in the manner of [`NetlinkBuffer`]).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct NexthopMessageBuffer<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> NexthopMessageBuffer<T> {
    /// Wraps `buffer` without checking its length: accessors may panic.
    pub fn new(buffer: T) -> Self {
        NexthopMessageBuffer { buffer }
    }

    /// Wraps `buffer` after checking that it holds a whole `struct nhmsg`.
    pub fn new_checked(buffer: T) -> Result<Self, DecodeError> {
        let len = buffer.as_ref().len();
        if len < NEXTHOP_HEADER_LEN {
            return Err(DecodeError::invalid_buffer(
                "nhmsg",
                len,
                NEXTHOP_HEADER_LEN,
            ));
        }
        Ok(Self::new(buffer))
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn family(&self) -> u8 {
        self.buffer.as_ref()[FAMILY]
    }

    pub fn scope(&self) -> u8 {
        self.buffer.as_ref()[SCOPE]
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[PROTOCOL]
    }

    pub fn reserved(&self) -> u8 {
        self.buffer.as_ref()[RESERVED]
    }

    pub fn flags(&self) -> u32 {
        parse_u32(&self.buffer.as_ref()[FLAGS]).unwrap()
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> NexthopMessageBuffer<&'a T> {
    /// The attributes following the header.
    pub fn attributes(&self) -> NlasIterator<&'a [u8]> {
        let data: &'a [u8] = self.buffer.as_ref();
        NlasIterator::new(&data[ATTRIBUTES])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> NexthopMessageBuffer<T> {
    pub fn set_family(&mut self, value: u8) {
        self.buffer.as_mut()[FAMILY] = value;
    }

    pub fn set_scope(&mut self, value: u8) {
        self.buffer.as_mut()[SCOPE] = value;
    }

    pub fn set_protocol(&mut self, value: u8) {
        self.buffer.as_mut()[PROTOCOL] = value;
    }

    pub fn set_reserved(&mut self, value: u8) {
        self.buffer.as_mut()[RESERVED] = value;
    }

    pub fn set_flags(&mut self, value: u32) {
        emit_u32(&mut self.buffer.as_mut()[FLAGS], value).unwrap();
    }

    /// The bytes after the header, where the attributes go.
    pub fn attributes_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[ATTRIBUTES]
    }
}

/// `struct nhmsg`. The kernel fills `scope` only in its replies; `flags`
/// holds `RTNH_F_*` bits (for a bucket, those of the bucket's nexthop).
#[derive(Debug, PartialEq, Eq, Clone, Copy, Default)]
pub struct NexthopHeader {
    pub family: AddressFamily,
    pub scope: RouteScope,
    pub protocol: RouteProtocol,
    pub flags: u32,
}

impl<T: AsRef<[u8]>> Parseable<NexthopMessageBuffer<T>> for NexthopHeader {
    fn parse(buf: &NexthopMessageBuffer<T>) -> Result<Self, DecodeError> {
        Ok(NexthopHeader {
            family: buf.family().into(),
            scope: buf.scope().into(),
            protocol: buf.protocol().into(),
            flags: buf.flags(),
        })
    }
}

impl Emitable for NexthopHeader {
    fn buffer_len(&self) -> usize {
        NEXTHOP_HEADER_LEN
    }

    fn emit(&self, buffer: &mut [u8]) {
        let mut buffer = NexthopMessageBuffer::new(buffer);
        buffer.set_family(self.family.into());
        buffer.set_scope(self.scope.into());
        buffer.set_protocol(self.protocol.into());
        buffer.set_reserved(0);
        buffer.set_flags(self.flags);
    }
}

// ---------------------------------------------------------------------------
// struct nexthop_grp

const GRP_ID: Range<usize> = 0..4;
const GRP_WEIGHT: usize = 4;
const GRP_WEIGHT_HIGH: usize = 5;
const GRP_RESERVED: Range<usize> = 6..8;

/// Length of `struct nexthop_grp`.
pub const NEXTHOP_GROUP_ENTRY_LEN: usize = GRP_RESERVED.end;

/// A buffer holding one `struct nexthop_grp`.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct NexthopGroupEntryBuffer<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> NexthopGroupEntryBuffer<T> {
    /// Wraps `buffer` without checking its length: accessors may panic.
    pub fn new(buffer: T) -> Self {
        NexthopGroupEntryBuffer { buffer }
    }

    /// Wraps `buffer` after checking that it is one `struct nexthop_grp`.
    pub fn new_checked(buffer: T) -> Result<Self, DecodeError> {
        let len = buffer.as_ref().len();
        if len != NEXTHOP_GROUP_ENTRY_LEN {
            return Err(
                format!("nexthop_grp is {NEXTHOP_GROUP_ENTRY_LEN} bytes, got {len}").into(),
            );
        }
        Ok(Self::new(buffer))
    }

    pub fn id(&self) -> u32 {
        parse_u32(&self.buffer.as_ref()[GRP_ID]).unwrap()
    }

    /// The low byte of weight - 1.
    pub fn weight(&self) -> u8 {
        self.buffer.as_ref()[GRP_WEIGHT]
    }

    /// The high byte of weight - 1 (`resvd1` before Linux 6.12).
    pub fn weight_high(&self) -> u8 {
        self.buffer.as_ref()[GRP_WEIGHT_HIGH]
    }

    pub fn reserved(&self) -> u16 {
        parse_u16(&self.buffer.as_ref()[GRP_RESERVED]).unwrap()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> NexthopGroupEntryBuffer<T> {
    pub fn set_id(&mut self, value: u32) {
        emit_u32(&mut self.buffer.as_mut()[GRP_ID], value).unwrap();
    }

    pub fn set_weight(&mut self, value: u8) {
        self.buffer.as_mut()[GRP_WEIGHT] = value;
    }

    pub fn set_weight_high(&mut self, value: u8) {
        self.buffer.as_mut()[GRP_WEIGHT_HIGH] = value;
    }

    pub fn set_reserved(&mut self, value: u16) {
        emit_u16(&mut self.buffer.as_mut()[GRP_RESERVED], value).unwrap();
    }
}

/// Whether the `weight_high` byte of `struct nexthop_grp` is read.
#[derive(Debug, PartialEq, Eq, Clone, Copy, Default)]
pub enum WeightHigh {
    /// Only if the message's `NHA_OP_FLAGS` carries
    /// [`NHA_OP_FLAG_RESP_GRP_RESVD_0`]: the rule for messages from the
    /// kernel, since kernels before 6.11 could leave garbage in that byte.
    /// Where no such assertion can be seen (an attribute parsed on its own),
    /// the byte is ignored.
    #[default]
    IfAsserted,
    /// Always: for messages built by user space (requests).
    Always,
    /// Never (weights 1..=256).
    Never,
}

/// One member of a nexthop group: `weight` is the real weight (1 to 65535;
/// the kernel stores weight - 1 on the wire, split into `weight` and
/// `weight_high`).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct NexthopGroupEntry {
    pub id: u32,
    pub weight: u16,
}

impl<T: AsRef<[u8]>> ParseableParametrized<NexthopGroupEntryBuffer<T>, WeightHigh>
    for NexthopGroupEntry
{
    fn parse_with_param(
        buf: &NexthopGroupEntryBuffer<T>,
        weight_high: WeightHigh,
    ) -> Result<Self, DecodeError> {
        let high = match weight_high {
            WeightHigh::Always => buf.weight_high(),
            WeightHigh::IfAsserted | WeightHigh::Never => 0,
        };
        // The kernel's own nexthop_grp_weight() computes in u16 as well.
        let raw = u16::from_be_bytes([high, buf.weight()]);
        Ok(NexthopGroupEntry {
            id: buf.id(),
            weight: raw.wrapping_add(1),
        })
    }
}

impl Emitable for NexthopGroupEntry {
    fn buffer_len(&self) -> usize {
        NEXTHOP_GROUP_ENTRY_LEN
    }

    fn emit(&self, buffer: &mut [u8]) {
        let [high, low] = self.weight.wrapping_sub(1).to_be_bytes();
        let mut buffer = NexthopGroupEntryBuffer::new(&mut buffer[..NEXTHOP_GROUP_ENTRY_LEN]);
        buffer.set_id(self.id);
        buffer.set_weight(low);
        buffer.set_weight_high(high);
        buffer.set_reserved(0);
    }
}

fn parse_group(
    payload: &[u8],
    weight_high: WeightHigh,
) -> Result<Vec<NexthopGroupEntry>, DecodeError> {
    if !payload.len().is_multiple_of(NEXTHOP_GROUP_ENTRY_LEN) {
        return Err(format!(
            "NHA_GROUP of {} bytes is not an array of {NEXTHOP_GROUP_ENTRY_LEN}-byte nexthop_grp",
            payload.len()
        )
        .into());
    }
    payload
        .chunks_exact(NEXTHOP_GROUP_ENTRY_LEN)
        .map(|entry| {
            NexthopGroupEntry::parse_with_param(
                &NexthopGroupEntryBuffer::new_checked(entry)?,
                weight_high,
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Attributes

/// `NHA_GROUP_TYPE`.
#[derive(Debug, PartialEq, Eq, Clone, Copy, Default)]
pub enum NexthopGroupType {
    /// Hash-threshold (`NEXTHOP_GRP_TYPE_MPATH`), the default.
    #[default]
    Mpath,
    /// Resilient (`NEXTHOP_GRP_TYPE_RES`).
    Resilient,
    Other(u16),
}

impl From<u16> for NexthopGroupType {
    fn from(value: u16) -> Self {
        match value {
            NEXTHOP_GRP_TYPE_MPATH => Self::Mpath,
            NEXTHOP_GRP_TYPE_RES => Self::Resilient,
            other => Self::Other(other),
        }
    }
}

impl From<NexthopGroupType> for u16 {
    fn from(value: NexthopGroupType) -> Self {
        match value {
            NexthopGroupType::Mpath => NEXTHOP_GRP_TYPE_MPATH,
            NexthopGroupType::Resilient => NEXTHOP_GRP_TYPE_RES,
            NexthopGroupType::Other(other) => other,
        }
    }
}

/// Attributes of `NHA_RES_GROUP` (resilient group parameters). Timers are
/// `clock_t` (1/100 s). `NHA_RES_GROUP_PAD` (type 0, only on architectures
/// that align u64 attributes) lands in `Other`.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum NexthopResGroupAttribute {
    /// `NHA_RES_GROUP_BUCKETS`: number of buckets.
    Buckets(u16),
    /// `NHA_RES_GROUP_IDLE_TIMER`: how long a bucket must be idle before it
    /// may migrate.
    IdleTimer(u32),
    /// `NHA_RES_GROUP_UNBALANCED_TIMER`: how long the group may stay
    /// unbalanced before idle buckets migrate regardless (0: never forced).
    UnbalancedTimer(u32),
    /// `NHA_RES_GROUP_UNBALANCED_TIME`: how long the group has been
    /// unbalanced (replies only).
    UnbalancedTime(u64),
    Other(DefaultNla),
}

impl Nla for NexthopResGroupAttribute {
    fn value_len(&self) -> usize {
        match self {
            Self::Buckets(_) => 2,
            Self::IdleTimer(_) | Self::UnbalancedTimer(_) => 4,
            Self::UnbalancedTime(_) => 8,
            Self::Other(attr) => attr.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Buckets(_) => NHA_RES_GROUP_BUCKETS,
            Self::IdleTimer(_) => NHA_RES_GROUP_IDLE_TIMER,
            Self::UnbalancedTimer(_) => NHA_RES_GROUP_UNBALANCED_TIMER,
            Self::UnbalancedTime(_) => NHA_RES_GROUP_UNBALANCED_TIME,
            Self::Other(attr) => attr.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::Buckets(value) => emit_u16(buffer, *value).unwrap(),
            Self::IdleTimer(value) | Self::UnbalancedTimer(value) => {
                emit_u32(buffer, *value).unwrap()
            }
            Self::UnbalancedTime(value) => emit_u64(buffer, *value).unwrap(),
            Self::Other(attr) => attr.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for NexthopResGroupAttribute {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let payload = buf.value();
        Ok(match buf.kind() {
            NHA_RES_GROUP_BUCKETS => {
                Self::Buckets(parse_u16(payload).context("invalid NHA_RES_GROUP_BUCKETS")?)
            }
            NHA_RES_GROUP_IDLE_TIMER => {
                Self::IdleTimer(parse_u32(payload).context("invalid NHA_RES_GROUP_IDLE_TIMER")?)
            }
            NHA_RES_GROUP_UNBALANCED_TIMER => Self::UnbalancedTimer(
                parse_u32(payload).context("invalid NHA_RES_GROUP_UNBALANCED_TIMER")?,
            ),
            NHA_RES_GROUP_UNBALANCED_TIME => Self::UnbalancedTime(
                parse_u64(payload).context("invalid NHA_RES_GROUP_UNBALANCED_TIME")?,
            ),
            _ => Self::Other(DefaultNla::parse(buf).context("invalid NHA_RES_GROUP attribute")?),
        })
    }
}

/// Attributes of `NHA_RES_BUCKET` (one bucket of a resilient group).
/// `NHA_RES_BUCKET_PAD` lands in `Other`.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum NexthopBucketAttribute {
    /// `NHA_RES_BUCKET_INDEX`.
    Index(u16),
    /// `NHA_RES_BUCKET_IDLE_TIME`: `clock_t` (1/100 s) since the bucket last
    /// carried traffic or was assigned.
    IdleTime(u64),
    /// `NHA_RES_BUCKET_NH_ID`: the nexthop the bucket points at.
    NhId(u32),
    Other(DefaultNla),
}

impl Nla for NexthopBucketAttribute {
    fn value_len(&self) -> usize {
        match self {
            Self::Index(_) => 2,
            Self::IdleTime(_) => 8,
            Self::NhId(_) => 4,
            Self::Other(attr) => attr.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Index(_) => NHA_RES_BUCKET_INDEX,
            Self::IdleTime(_) => NHA_RES_BUCKET_IDLE_TIME,
            Self::NhId(_) => NHA_RES_BUCKET_NH_ID,
            Self::Other(attr) => attr.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::Index(value) => emit_u16(buffer, *value).unwrap(),
            Self::IdleTime(value) => emit_u64(buffer, *value).unwrap(),
            Self::NhId(value) => emit_u32(buffer, *value).unwrap(),
            Self::Other(attr) => attr.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for NexthopBucketAttribute {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let payload = buf.value();
        Ok(match buf.kind() {
            NHA_RES_BUCKET_INDEX => {
                Self::Index(parse_u16(payload).context("invalid NHA_RES_BUCKET_INDEX")?)
            }
            NHA_RES_BUCKET_IDLE_TIME => {
                Self::IdleTime(parse_u64(payload).context("invalid NHA_RES_BUCKET_IDLE_TIME")?)
            }
            NHA_RES_BUCKET_NH_ID => {
                Self::NhId(parse_u32(payload).context("invalid NHA_RES_BUCKET_NH_ID")?)
            }
            _ => Self::Other(DefaultNla::parse(buf).context("invalid NHA_RES_BUCKET attribute")?),
        })
    }
}

fn parse_nested<A>(payload: &[u8]) -> Result<Vec<A>, DecodeError>
where
    A: for<'a> Parseable<NlaBuffer<&'a [u8]>>,
{
    NlasIterator::new(payload)
        .map(|nla| A::parse(&nla?))
        .collect()
}

/// The attributes of a nexthop message (`NHA_*`).
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum NexthopAttribute {
    /// `NHA_ID`: the nexthop's id; in a bucket message, the group's.
    Id(u32),
    /// `NHA_GROUP`: the members of a group.
    Group(Vec<NexthopGroupEntry>),
    /// `NHA_GROUP_TYPE`.
    GroupType(NexthopGroupType),
    /// `NHA_BLACKHOLE` (flag).
    Blackhole,
    /// `NHA_OIF`: the output interface's index.
    Oif(u32),
    /// `NHA_GATEWAY`: IPv4 or IPv6 by the header's family.
    Gateway(IpAddr),
    /// `NHA_FDB` (flag): the nexthop belongs to a bridge FDB.
    Fdb,
    /// `NHA_RES_GROUP` (nested): resilient group parameters.
    ResGroup(Vec<NexthopResGroupAttribute>),
    /// `NHA_RES_BUCKET` (nested): one bucket.
    ResBucket(Vec<NexthopBucketAttribute>),
    /// `NHA_OP_FLAGS`: in requests, `NHA_OP_FLAG_DUMP_*`; in replies,
    /// [`NHA_OP_FLAG_RESP_GRP_RESVD_0`].
    OpFlags(u32),
    /// Everything else (`NHA_ENCAP*`, `NHA_GROUPS`, `NHA_MASTER`,
    /// `NHA_GROUP_STATS`, `NHA_HW_STATS_*`, ...).
    Other(DefaultNla),
}

impl Nla for NexthopAttribute {
    fn value_len(&self) -> usize {
        match self {
            Self::Id(_) | Self::Oif(_) | Self::OpFlags(_) => 4,
            Self::Group(entries) => entries.len() * NEXTHOP_GROUP_ENTRY_LEN,
            Self::GroupType(_) => 2,
            Self::Blackhole | Self::Fdb => 0,
            Self::Gateway(IpAddr::V4(_)) => 4,
            Self::Gateway(IpAddr::V6(_)) => 16,
            Self::ResGroup(nlas) => nlas.as_slice().buffer_len(),
            Self::ResBucket(nlas) => nlas.as_slice().buffer_len(),
            Self::Other(attr) => attr.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Id(_) => NHA_ID,
            Self::Group(_) => NHA_GROUP,
            Self::GroupType(_) => NHA_GROUP_TYPE,
            Self::Blackhole => NHA_BLACKHOLE,
            Self::Oif(_) => NHA_OIF,
            Self::Gateway(_) => NHA_GATEWAY,
            Self::Fdb => NHA_FDB,
            Self::ResGroup(_) => NHA_RES_GROUP,
            Self::ResBucket(_) => NHA_RES_BUCKET,
            Self::OpFlags(_) => NHA_OP_FLAGS,
            Self::Other(attr) => attr.kind(),
        }
    }

    // The kernel sets NLA_F_NESTED on the nested attributes it sends, and
    // its strict parsing of requests requires it.
    fn is_nested(&self) -> bool {
        match self {
            Self::ResGroup(_) | Self::ResBucket(_) => true,
            Self::Other(attr) => attr.is_nested(),
            _ => false,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::Id(value) | Self::Oif(value) | Self::OpFlags(value) => {
                emit_u32(buffer, *value).unwrap()
            }
            Self::Group(entries) => {
                for (entry, chunk) in entries
                    .iter()
                    .zip(buffer.chunks_exact_mut(NEXTHOP_GROUP_ENTRY_LEN))
                {
                    entry.emit(chunk);
                }
            }
            Self::GroupType(kind) => emit_u16(buffer, (*kind).into()).unwrap(),
            Self::Blackhole | Self::Fdb => {}
            Self::Gateway(IpAddr::V4(addr)) => buffer.copy_from_slice(&addr.octets()),
            Self::Gateway(IpAddr::V6(addr)) => buffer.copy_from_slice(&addr.octets()),
            Self::ResGroup(nlas) => nlas.as_slice().emit(buffer),
            Self::ResBucket(nlas) => nlas.as_slice().emit(buffer),
            Self::Other(attr) => attr.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized>
    ParseableParametrized<NlaBuffer<&'a T>, (AddressFamily, WeightHigh)> for NexthopAttribute
{
    fn parse_with_param(
        buf: &NlaBuffer<&'a T>,
        (family, weight_high): (AddressFamily, WeightHigh),
    ) -> Result<Self, DecodeError> {
        let payload = buf.value();
        Ok(match buf.kind() {
            NHA_ID => Self::Id(parse_u32(payload).context("invalid NHA_ID")?),
            NHA_GROUP => {
                Self::Group(parse_group(payload, weight_high).context("invalid NHA_GROUP")?)
            }
            NHA_GROUP_TYPE => {
                Self::GroupType(parse_u16(payload).context("invalid NHA_GROUP_TYPE")?.into())
            }
            NHA_BLACKHOLE => Self::Blackhole,
            NHA_OIF => Self::Oif(parse_u32(payload).context("invalid NHA_OIF")?),
            NHA_GATEWAY => {
                let expected = match family {
                    AddressFamily::Inet => Some(4),
                    AddressFamily::Inet6 => Some(16),
                    _ => None,
                };
                if expected.is_some_and(|len| len != payload.len()) {
                    return Err(format!(
                        "invalid NHA_GATEWAY: {} bytes in a nexthop of family {family}",
                        payload.len()
                    )
                    .into());
                }
                Self::Gateway(parse_ip(payload).context("invalid NHA_GATEWAY")?)
            }
            NHA_FDB => Self::Fdb,
            NHA_RES_GROUP => {
                Self::ResGroup(parse_nested(payload).context("invalid NHA_RES_GROUP")?)
            }
            NHA_RES_BUCKET => {
                Self::ResBucket(parse_nested(payload).context("invalid NHA_RES_BUCKET")?)
            }
            NHA_OP_FLAGS => Self::OpFlags(parse_u32(payload).context("invalid NHA_OP_FLAGS")?),
            _ => Self::Other(DefaultNla::parse(buf).context("invalid NHA attribute")?),
        })
    }
}

// ---------------------------------------------------------------------------
// The message

/// A nexthop message (`struct nhmsg` and its attributes), the body of all six
/// RTM_*NEXTHOP and RTM_*NEXTHOPBUCKET types.
#[derive(Debug, PartialEq, Eq, Clone, Default)]
pub struct NexthopMessage {
    pub header: NexthopHeader,
    pub attributes: Vec<NexthopAttribute>,
}

impl NexthopMessage {
    /// `NHA_ID`: the nexthop's id, or in a bucket message the group's.
    pub fn id(&self) -> Option<u32> {
        self.attributes.iter().find_map(|attr| match attr {
            NexthopAttribute::Id(id) => Some(*id),
            _ => None,
        })
    }
}

impl Emitable for NexthopMessage {
    fn buffer_len(&self) -> usize {
        self.header.buffer_len() + self.attributes.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.header.emit(buffer);
        self.attributes
            .as_slice()
            .emit(&mut buffer[self.header.buffer_len()..]);
    }
}

/// Parses a message from the kernel ([`WeightHigh::IfAsserted`]).
impl Parseable<[u8]> for NexthopMessage {
    fn parse(buf: &[u8]) -> Result<Self, DecodeError> {
        Self::parse_with_param(buf, WeightHigh::IfAsserted)
    }
}

impl ParseableParametrized<[u8], WeightHigh> for NexthopMessage {
    fn parse_with_param(buf: &[u8], weight_high: WeightHigh) -> Result<Self, DecodeError> {
        let buffer = NexthopMessageBuffer::new_checked(buf).context("invalid nexthop message")?;
        let header = NexthopHeader::parse(&buffer).context("invalid nexthop message header")?;
        // As netlink-packet-route looks for RTA_ENCAP_TYPE before RTA_ENCAP:
        // whether NHA_GROUP's weight_high counts depends on NHA_OP_FLAGS,
        // which the kernel puts after it.
        let weight_high = match weight_high {
            WeightHigh::IfAsserted => {
                let asserted = buffer.attributes().filter_map(Result::ok).any(|nla| {
                    nla.kind() == NHA_OP_FLAGS
                        && parse_u32(nla.value())
                            .is_ok_and(|flags| flags & NHA_OP_FLAG_RESP_GRP_RESVD_0 != 0)
                });
                if asserted {
                    WeightHigh::Always
                } else {
                    WeightHigh::Never
                }
            }
            other => other,
        };
        let attributes = buffer
            .attributes()
            .map(|nla| NexthopAttribute::parse_with_param(&nla?, (header.family, weight_high)))
            .collect::<Result<Vec<_>, _>>()
            .context("invalid nexthop message attributes")?;
        Ok(NexthopMessage { header, attributes })
    }
}

// ---------------------------------------------------------------------------
// All of rtnetlink

/// An rtnetlink message: the nexthop types decoded here, every other type by
/// netlink-packet-route.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum RtMessage {
    Route(RouteNetlinkMessage),
    NewNexthop(NexthopMessage),
    DelNexthop(NexthopMessage),
    GetNexthop(NexthopMessage),
    NewNexthopBucket(NexthopMessage),
    DelNexthopBucket(NexthopMessage),
    GetNexthopBucket(NexthopMessage),
    /// RTM_NEWNETCONF/RTM_DELNETCONF: a device's forwarding, rp_filter or
    /// other IP configuration switch changed (not decoded further: the
    /// switches are read from their files).
    Netconf(u16),
}

/// RTM_NEWNETCONF and RTM_DELNETCONF.
pub const RTM_NEWNETCONF: u16 = 80;
pub const RTM_DELNETCONF: u16 = 81;

impl RtMessage {
    pub fn message_type(&self) -> u16 {
        match self {
            Self::Route(message) => message.message_type(),
            Self::NewNexthop(_) => RTM_NEWNEXTHOP,
            Self::DelNexthop(_) => RTM_DELNEXTHOP,
            Self::GetNexthop(_) => RTM_GETNEXTHOP,
            Self::NewNexthopBucket(_) => RTM_NEWNEXTHOPBUCKET,
            Self::DelNexthopBucket(_) => RTM_DELNEXTHOPBUCKET,
            Self::GetNexthopBucket(_) => RTM_GETNEXTHOPBUCKET,
            Self::Netconf(t) => *t,
        }
    }

    /// The nexthop message, if this is one of the six nexthop types.
    pub fn nexthop(&self) -> Option<&NexthopMessage> {
        match self {
            Self::Route(_) | Self::Netconf(_) => None,
            Self::NewNexthop(message)
            | Self::DelNexthop(message)
            | Self::GetNexthop(message)
            | Self::NewNexthopBucket(message)
            | Self::DelNexthopBucket(message)
            | Self::GetNexthopBucket(message) => Some(message),
        }
    }
}

impl NetlinkSerializable for RtMessage {
    fn message_type(&self) -> u16 {
        RtMessage::message_type(self)
    }

    fn buffer_len(&self) -> usize {
        match self {
            Self::Route(message) => NetlinkSerializable::buffer_len(message),
            other => other.nexthop().map_or(0, Emitable::buffer_len),
        }
    }

    fn serialize(&self, buffer: &mut [u8]) {
        match self {
            Self::Route(message) => message.serialize(buffer),
            other => {
                if let Some(message) = other.nexthop() {
                    message.emit(buffer);
                }
            }
        }
    }
}

impl NetlinkDeserializable for RtMessage {
    type Error = DecodeError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, Self::Error> {
        let nexthop = |name: &str| {
            NexthopMessage::parse(payload).with_context(|| format!("invalid {name} message"))
        };
        Ok(match header.message_type {
            RTM_NEWNEXTHOP => Self::NewNexthop(nexthop("RTM_NEWNEXTHOP")?),
            RTM_DELNEXTHOP => Self::DelNexthop(nexthop("RTM_DELNEXTHOP")?),
            RTM_GETNEXTHOP => Self::GetNexthop(nexthop("RTM_GETNEXTHOP")?),
            RTM_NEWNEXTHOPBUCKET => Self::NewNexthopBucket(nexthop("RTM_NEWNEXTHOPBUCKET")?),
            RTM_DELNEXTHOPBUCKET => Self::DelNexthopBucket(nexthop("RTM_DELNEXTHOPBUCKET")?),
            RTM_GETNEXTHOPBUCKET => Self::GetNexthopBucket(nexthop("RTM_GETNEXTHOPBUCKET")?),
            t @ (RTM_NEWNETCONF | RTM_DELNETCONF) => Self::Netconf(t),
            _ => Self::Route(<RouteNetlinkMessage as NetlinkDeserializable>::deserialize(
                header, payload,
            )?),
        })
    }
}

impl From<RtMessage> for NetlinkPayload<RtMessage> {
    fn from(message: RtMessage) -> Self {
        NetlinkPayload::InnerMessage(message)
    }
}

impl From<RouteNetlinkMessage> for RtMessage {
    fn from(message: RouteNetlinkMessage) -> Self {
        RtMessage::Route(message)
    }
}

// ---------------------------------------------------------------------------
// Typed view

/// What a nexthop is.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum NexthopKind {
    /// A single nexthop. A blackhole has neither `oif` nor `gateway`; a
    /// device nexthop has no `gateway`.
    Single {
        family: AddressFamily,
        oif: Option<u32>,
        gateway: Option<IpAddr>,
        blackhole: bool,
        fdb: bool,
    },
    /// A group: `members` are (nexthop id, real weight).
    Group {
        kind: GroupKind,
        members: Vec<(u32, u16)>,
    },
}

/// The type of a group. Timers are `clock_t` (1/100 s; see
/// [`clock_t_to_duration`]).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum GroupKind {
    Mpath,
    Resilient {
        buckets: u16,
        idle_timer: u32,
        unbalanced_timer: u32,
        unbalanced_time: u64,
    },
    Other(u16),
}

/// A nexthop object as the kernel reports it (RTM_NEWNEXTHOP/RTM_DELNEXTHOP).
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Nexthop {
    pub id: u32,
    pub protocol: RouteProtocol,
    /// `RTNH_F_*` (e.g. [`RTNH_F_DEAD`], [`RTNH_F_LINKDOWN`]).
    pub flags: u32,
    pub kind: NexthopKind,
}

impl Nexthop {
    pub fn from_message(message: &NexthopMessage) -> Result<Self, DecodeError> {
        let id = message
            .id()
            .ok_or_else(|| DecodeError::from("nexthop message without NHA_ID"))?;
        let mut members = None;
        let mut group_type = NexthopGroupType::Mpath;
        let mut res_group = None;
        let mut oif = None;
        let mut gateway = None;
        let mut blackhole = false;
        let mut fdb = false;
        for attr in &message.attributes {
            match attr {
                NexthopAttribute::Group(entries) => {
                    members = Some(entries.iter().map(|e| (e.id, e.weight)).collect());
                }
                NexthopAttribute::GroupType(kind) => group_type = *kind,
                NexthopAttribute::ResGroup(nlas) => res_group = Some(nlas),
                NexthopAttribute::Oif(index) => oif = Some(*index),
                NexthopAttribute::Gateway(addr) => gateway = Some(*addr),
                NexthopAttribute::Blackhole => blackhole = true,
                NexthopAttribute::Fdb => fdb = true,
                _ => {}
            }
        }
        let kind = match members {
            Some(members) => {
                let kind = match group_type {
                    NexthopGroupType::Mpath => GroupKind::Mpath,
                    NexthopGroupType::Other(other) => GroupKind::Other(other),
                    NexthopGroupType::Resilient => {
                        let nlas = res_group.ok_or_else(|| {
                            DecodeError::from(format!("resilient group {id} without NHA_RES_GROUP"))
                        })?;
                        let mut buckets = None;
                        let (mut idle_timer, mut unbalanced_timer, mut unbalanced_time) = (0, 0, 0);
                        for nla in nlas {
                            match nla {
                                NexthopResGroupAttribute::Buckets(n) => buckets = Some(*n),
                                NexthopResGroupAttribute::IdleTimer(t) => idle_timer = *t,
                                NexthopResGroupAttribute::UnbalancedTimer(t) => {
                                    unbalanced_timer = *t
                                }
                                NexthopResGroupAttribute::UnbalancedTime(t) => unbalanced_time = *t,
                                NexthopResGroupAttribute::Other(_) => {}
                            }
                        }
                        GroupKind::Resilient {
                            buckets: buckets.ok_or_else(|| {
                                DecodeError::from(format!(
                                    "resilient group {id} without NHA_RES_GROUP_BUCKETS"
                                ))
                            })?,
                            idle_timer,
                            unbalanced_timer,
                            unbalanced_time,
                        }
                    }
                };
                NexthopKind::Group { kind, members }
            }
            None => NexthopKind::Single {
                family: message.header.family,
                oif,
                gateway,
                blackhole,
                fdb,
            },
        };
        Ok(Nexthop {
            id,
            protocol: message.header.protocol,
            flags: message.header.flags,
            kind,
        })
    }
}

/// One bucket of a resilient group (RTM_NEWNEXTHOPBUCKET).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Bucket {
    pub group: u32,
    pub index: u16,
    pub nh_id: u32,
    /// `clock_t` (1/100 s) since the bucket last carried traffic or was
    /// assigned.
    pub idle_time: u64,
    /// `RTNH_F_*` of the bucket's nexthop.
    pub flags: u32,
}

impl Bucket {
    pub fn from_message(message: &NexthopMessage) -> Result<Self, DecodeError> {
        let group = message
            .id()
            .ok_or_else(|| DecodeError::from("bucket message without NHA_ID"))?;
        let nlas = message
            .attributes
            .iter()
            .find_map(|attr| match attr {
                NexthopAttribute::ResBucket(nlas) => Some(nlas),
                _ => None,
            })
            .ok_or_else(|| {
                DecodeError::from(format!(
                    "bucket message of group {group} without NHA_RES_BUCKET"
                ))
            })?;
        let (mut index, mut nh_id, mut idle_time) = (None, None, 0);
        for nla in nlas {
            match nla {
                NexthopBucketAttribute::Index(i) => index = Some(*i),
                NexthopBucketAttribute::NhId(id) => nh_id = Some(*id),
                NexthopBucketAttribute::IdleTime(t) => idle_time = *t,
                NexthopBucketAttribute::Other(_) => {}
            }
        }
        Ok(Bucket {
            group,
            index: index.ok_or_else(|| {
                DecodeError::from(format!(
                    "bucket of group {group} without NHA_RES_BUCKET_INDEX"
                ))
            })?,
            nh_id: nh_id.ok_or_else(|| {
                DecodeError::from(format!(
                    "bucket of group {group} without NHA_RES_BUCKET_NH_ID"
                ))
            })?,
            idle_time,
            flags: message.header.flags,
        })
    }
}

// ---------------------------------------------------------------------------
// Talking to the kernel

/// Why an exchange with the kernel failed.
#[derive(Debug)]
pub enum NetlinkError {
    /// The socket failed.
    Io(io::Error),
    /// A reply did not decode.
    Decode(DecodeError),
    /// The kernel refused the request: NLMSG_ERROR, or a dump whose
    /// NLMSG_DONE carries a negative code (how the kernel reports errors found
    /// after the dump started, e.g. ENOENT for an unknown group). `message`
    /// is the extended ACK's text where the kernel gave one.
    Kernel {
        request: u16,
        errno: i32,
        message: Option<String>,
    },
    /// Every attempt at the dump was marked NLM_F_DUMP_INTR (the table
    /// changed while it was being dumped).
    DumpInterrupted { request: u16 },
    /// NLMSG_OVERRUN.
    Overrun { request: u16 },
}

impl NetlinkError {
    /// The errno of a [`NetlinkError::Kernel`] or [`NetlinkError::Io`] error.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { errno, .. } => Some(*errno),
            Self::Io(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

/// The name of an rtnetlink message type, for messages.
pub fn message_type_name(message_type: u16) -> String {
    match message_type {
        RTM_NEWNEXTHOP => "RTM_NEWNEXTHOP".into(),
        RTM_DELNEXTHOP => "RTM_DELNEXTHOP".into(),
        RTM_GETNEXTHOP => "RTM_GETNEXTHOP".into(),
        RTM_NEWNEXTHOPBUCKET => "RTM_NEWNEXTHOPBUCKET".into(),
        RTM_DELNEXTHOPBUCKET => "RTM_DELNEXTHOPBUCKET".into(),
        RTM_GETNEXTHOPBUCKET => "RTM_GETNEXTHOPBUCKET".into(),
        other => format!("rtnetlink message type {other}"),
    }
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "netlink socket: {e}"),
            Self::Decode(e) => write!(f, "undecodable netlink reply: {e}"),
            Self::Kernel {
                request,
                errno,
                message,
            } => {
                write!(
                    f,
                    "{} refused by the kernel: {}",
                    message_type_name(*request),
                    io::Error::from_raw_os_error(*errno)
                )?;
                if let Some(message) = message {
                    write!(f, " ({message})")?;
                }
                Ok(())
            }
            Self::DumpInterrupted { request } => write!(
                f,
                "{} dump interrupted by concurrent changes on every attempt",
                message_type_name(*request)
            ),
            Self::Overrun { request } => {
                write!(f, "{}: netlink overrun", message_type_name(*request))
            }
        }
    }
}

impl std::error::Error for NetlinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Decode(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for NetlinkError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<DecodeError> for NetlinkError {
    fn from(e: DecodeError) -> Self {
        Self::Decode(e)
    }
}

/// Opens a NETLINK_ROUTE socket, bound to a port the kernel picks, with
/// extended ACKs on (so that errors carry the kernel's explanation). A
/// thread's later `setns` does not move it: it talks to the namespace it was
/// opened in.
pub fn route_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.set_ext_ack(true)?;
    Ok(socket)
}

/// The netlink messages of one datagram, framed by their length fields
/// (undecoded). A frame whose length is inconsistent ends the iteration with
/// an error.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    rest: &'a [u8],
}

/// Splits a datagram read from a netlink socket into its messages.
pub fn split_datagram(datagram: &[u8]) -> Frames<'_> {
    Frames { rest: datagram }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<&'a [u8], DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match NetlinkBuffer::new_checked(self.rest) {
            Ok(buffer) => {
                let len = buffer.length() as usize;
                let (frame, rest) = self.rest.split_at(len);
                // Messages are 4-byte aligned; the last may lack its padding.
                let padding = (len.next_multiple_of(4) - len).min(rest.len());
                self.rest = &rest[padding..];
                Some(Ok(frame))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// Reads one datagram (blocking, unless the socket was made non-blocking)
/// and decodes each message in it. A message that does not decode yields its
/// error in its place, so that a receive loop can log it and go on.
pub fn recv_messages(
    socket: &Socket,
) -> io::Result<Vec<Result<NetlinkMessage<RtMessage>, DecodeError>>> {
    let (datagram, _) = socket.recv_from_full()?;
    Ok(split_datagram(&datagram)
        .map(|frame| frame.and_then(NetlinkMessage::<RtMessage>::deserialize))
        .collect())
}

static SEQUENCE: AtomicU32 = AtomicU32::new(1);

/// Replies to requests and dumps skipped because they did not decode.
static UNDECODABLE: AtomicU64 = AtomicU64::new(0);

/// Netlink messages skipped by [`request`], [`dump`] and the dumps built on
/// them because they did not decode (a kernel newer than
/// netlink-packet-route can send what it does not know).
pub fn undecodable_replies() -> u64 {
    UNDECODABLE.load(Ordering::Relaxed)
}

/// Counts and logs a message that is skipped because it did not decode.
fn skip_undecodable(message_type: u16, e: &DecodeError) {
    let n = UNDECODABLE.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::warn!(
        skipped = n,
        "skipping a netlink {} that does not decode: {e}",
        message_type_name(message_type)
    );
}

/// The text of the extended ACK attributes (NLMSGERR_ATTR_MSG), if any.
fn ext_ack_message(tlvs: &[u8]) -> Option<String> {
    NlasIterator::new(tlvs)
        .map_while(Result::ok)
        .find(|nla| nla.kind() == NLMSGERR_ATTR_MSG)
        .and_then(|nla| parse_string(nla.value()).ok())
        .filter(|text| !text.is_empty())
}

/// The extended ACK text of an NLMSG_ERROR: its attributes follow the echoed
/// request, which is only the request's header when NLM_F_CAPPED.
fn error_message_text(flags: u16, error: &ErrorMessage) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || error.header.len() < NETLINK_HEADER_LEN {
        return None;
    }
    let echoed = NetlinkBuffer::new(&error.header[..]);
    let skip = if flags & NLM_F_CAPPED != 0 {
        NETLINK_HEADER_LEN
    } else {
        (echoed.length() as usize).next_multiple_of(4)
    };
    ext_ack_message(error.header.get(skip..)?)
}

/// Sends `message` with `flags` (NLM_F_REQUEST is added) and hands each reply
/// to `on_reply` until the exchange ends: at NLMSG_DONE for a dump, at the
/// ACK otherwise. Returns whether a reply was marked NLM_F_DUMP_INTR. Replies
/// are told by sequence number and port; anything else (notifications of
/// groups the socket joined, answers to earlier requests) is skipped.
fn exchange(
    socket: &Socket,
    message: RtMessage,
    flags: u16,
    mut on_reply: impl FnMut(RtMessage),
) -> Result<bool, NetlinkError> {
    let request = message.message_type();
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = sequence;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send_to(&buf, &SocketAddr::new(0, 0), 0)?;
    let mut local = SocketAddr::new(0, 0);
    socket.get_address(&mut local)?;
    let port = local.port_number();

    let mut interrupted = false;
    loop {
        let (datagram, _) = socket.recv_from_full()?;
        for frame in split_datagram(&datagram) {
            let frame = frame?;
            let buffer = NetlinkBuffer::new_checked(frame)?;
            if buffer.sequence_number() != sequence || buffer.port_number() != port {
                continue;
            }
            let reply = match NetlinkMessage::<RtMessage>::deserialize(frame) {
                Ok(reply) => reply,
                Err(e) => {
                    skip_undecodable(buffer.message_type(), &e);
                    continue;
                }
            };
            interrupted |= reply.header.flags & NLM_F_DUMP_INTR != 0;
            let reply_flags = reply.header.flags;
            match reply.payload {
                NetlinkPayload::InnerMessage(message) => on_reply(message),
                NetlinkPayload::Done(done) => {
                    if done.code < 0 {
                        let message = if reply_flags & NLM_F_ACK_TLVS != 0 {
                            ext_ack_message(&done.extended_ack)
                        } else {
                            None
                        };
                        return Err(NetlinkError::Kernel {
                            request,
                            errno: -done.code,
                            message,
                        });
                    }
                    return Ok(interrupted);
                }
                NetlinkPayload::Error(error) => match error.code {
                    None => return Ok(interrupted),
                    Some(code) => {
                        return Err(NetlinkError::Kernel {
                            request,
                            errno: -code.get(),
                            message: error_message_text(reply_flags, &error),
                        })
                    }
                },
                NetlinkPayload::Overrun(_) => return Err(NetlinkError::Overrun { request }),
                _ => {}
            }
        }
    }
}

/// Sends a request with NLM_F_ACK and `flags` (e.g. NLM_F_CREATE |
/// NLM_F_EXCL for a new nexthop) and waits for the kernel's answer.
pub fn request(socket: &Socket, message: RtMessage, flags: u16) -> Result<(), NetlinkError> {
    exchange(socket, message, NLM_F_ACK | flags, |_| {}).map(|_| ())
}

/// Dumps with `request` (sent with NLM_F_DUMP) and returns the replies,
/// gathered over the multi-part answer up to NLMSG_DONE. A dump the kernel
/// marks NLM_F_DUMP_INTR is retried (up to three attempts in all).
///
/// Notifications that arrive on `socket` meanwhile are discarded, so dump on
/// a socket of its own, not on the one a receive loop listens to. (The
/// kernel's nexthop notifications echo the flags, sequence number and port of
/// the request that caused them; only NLMSG_DONE/NLMSG_ERROR end an
/// exchange.)
pub fn dump(socket: &Socket, request: RtMessage) -> Result<Vec<RtMessage>, NetlinkError> {
    const ATTEMPTS: usize = 3;
    let request_type = request.message_type();
    for _ in 0..ATTEMPTS {
        let mut replies = Vec::new();
        if !exchange(socket, request.clone(), NLM_F_DUMP, |reply| {
            replies.push(reply)
        })? {
            return Ok(replies);
        }
    }
    Err(NetlinkError::DumpInterrupted {
        request: request_type,
    })
}

/// All nexthop objects (single nexthops and groups) of the socket's
/// namespace: RTM_GETNEXTHOP with NLM_F_DUMP.
pub fn dump_nexthops(socket: &Socket) -> Result<Vec<NexthopMessage>, NetlinkError> {
    Ok(
        dump(socket, RtMessage::GetNexthop(NexthopMessage::default()))?
            .into_iter()
            .filter_map(|reply| match reply {
                RtMessage::NewNexthop(message) => Some(message),
                _ => None,
            })
            .collect(),
    )
}

/// The buckets of every resilient group, or of group `group_id` only:
/// RTM_GETNEXTHOPBUCKET with NLM_F_DUMP (and NHA_ID). Asking for a group that
/// does not exist fails with ENOENT, for one that is not resilient with
/// EINVAL.
pub fn dump_nexthop_buckets(
    socket: &Socket,
    group_id: Option<u32>,
) -> Result<Vec<NexthopMessage>, NetlinkError> {
    let request = NexthopMessage {
        header: NexthopHeader::default(),
        attributes: group_id.map(NexthopAttribute::Id).into_iter().collect(),
    };
    Ok(dump(socket, RtMessage::GetNexthopBucket(request))?
        .into_iter()
        .filter_map(|reply| match reply {
            RtMessage::NewNexthopBucket(message) => Some(message),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
    use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn bytes(hex: &str) -> Vec<u8> {
        let hex: String = hex.split_whitespace().collect();
        assert_eq!(hex.len() % 2, 0, "odd hex string");
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Parses `wire`, checks the result, and emits it back byte for byte.
    fn round_trip(wire: &[u8]) -> NexthopMessage {
        let message = NexthopMessage::parse(wire).unwrap();
        assert_eq!(message.buffer_len(), wire.len());
        let mut emitted = vec![0xa5; message.buffer_len()];
        message.emit(&mut emitted);
        assert_eq!(emitted, wire, "re-emitted {message:?}");
        message
    }

    // Payloads of RTM_NEWNEXTHOP / RTM_NEWNEXTHOPBUCKET replies captured
    // from Linux 6.18 (x86_64) for `ip nexthop add ...` as in the comments.

    // id 1 via 10.0.0.2 dev xe-n0 (ifindex 3)
    const NH_V4: &str =
        "02fd0000 00000000  08000100 01000000  08000500 03000000  08000600 0a000002";
    // id 3 dev xe-n0
    const NH_DEV: &str = "02fe0000 00000000  08000100 03000000  08000500 03000000";
    // id 4 blackhole
    const NH_BLACKHOLE: &str = "02000000 00000000  08000100 04000000  04000400";
    // id 5 via 2001:db8::2 dev xe-n0
    const NH_V6: &str = "0afd0000 00000000  08000100 05000000  08000500 03000000
        14000600 20010db8 00000000 00000000 00000002";
    // id 10 group 1/2,3
    const GROUP_MPATH: &str = "00000000 00000000  08000100 0a000000  06000300 00000000
        14000200 01000000 00000000 02000000 02000000  08000e00 00000080";
    // id 20 group 1/2 type resilient buckets 16 idle_timer 0 unbalanced_timer 0
    const GROUP_RES: &str = "00000000 00000000  08000100 14000000  06000300 01000000
        14000200 01000000 00000000 02000000 00000000
        28000c80 06000100 10000000 08000200 00000000 08000300 00000000 0c000400 00000000 00000000
        08000e00 00000080";
    // id 21 group 1/3 type resilient buckets 8 idle_timer 1
    const GROUP_RES_TIMER: &str = "00000000 00000000  08000100 15000000  06000300 01000000
        14000200 01000000 00000000 03000000 00000000
        28000c80 06000100 08000000 08000200 64000000 08000300 00000000 0c000400 00000000 00000000
        08000e00 00000080";
    // bucket 0 of group 20, on nexthop 2, idle for 34 ticks
    const BUCKET: &str = "00000000 00000000  08000100 14000000
        20000d80 06000100 00000000 08000300 02000000 0c000200 22000000 00000000";

    #[test]
    fn kernel_single_nexthops_round_trip() {
        let v4 = round_trip(&bytes(NH_V4));
        assert_eq!(
            v4.header,
            NexthopHeader {
                family: AddressFamily::Inet,
                scope: RouteScope::Link,
                protocol: RouteProtocol::Unspec,
                flags: 0,
            }
        );
        assert_eq!(
            v4.attributes,
            vec![
                NexthopAttribute::Id(1),
                NexthopAttribute::Oif(3),
                NexthopAttribute::Gateway(Ipv4Addr::new(10, 0, 0, 2).into()),
            ]
        );
        assert_eq!(
            Nexthop::from_message(&v4).unwrap().kind,
            NexthopKind::Single {
                family: AddressFamily::Inet,
                oif: Some(3),
                gateway: Some(Ipv4Addr::new(10, 0, 0, 2).into()),
                blackhole: false,
                fdb: false,
            }
        );

        let dev = round_trip(&bytes(NH_DEV));
        assert_eq!(dev.header.scope, RouteScope::Host);
        assert_eq!(
            dev.attributes,
            vec![NexthopAttribute::Id(3), NexthopAttribute::Oif(3)]
        );

        let blackhole = round_trip(&bytes(NH_BLACKHOLE));
        assert_eq!(blackhole.header.family, AddressFamily::Inet);
        assert_eq!(
            blackhole.attributes,
            vec![NexthopAttribute::Id(4), NexthopAttribute::Blackhole]
        );
        let view = Nexthop::from_message(&blackhole).unwrap();
        assert_eq!(view.id, 4);
        assert!(matches!(
            view.kind,
            NexthopKind::Single {
                blackhole: true,
                oif: None,
                gateway: None,
                ..
            }
        ));

        let v6 = round_trip(&bytes(NH_V6));
        assert_eq!(v6.header.family, AddressFamily::Inet6);
        assert_eq!(
            v6.attributes[2],
            NexthopAttribute::Gateway("2001:db8::2".parse::<Ipv6Addr>().unwrap().into())
        );
    }

    #[test]
    fn kernel_groups_round_trip() {
        let mpath = round_trip(&bytes(GROUP_MPATH));
        assert_eq!(mpath.header, NexthopHeader::default());
        assert_eq!(
            mpath.attributes,
            vec![
                NexthopAttribute::Id(10),
                NexthopAttribute::GroupType(NexthopGroupType::Mpath),
                NexthopAttribute::Group(vec![
                    NexthopGroupEntry { id: 1, weight: 1 },
                    NexthopGroupEntry { id: 2, weight: 3 },
                ]),
                NexthopAttribute::OpFlags(NHA_OP_FLAG_RESP_GRP_RESVD_0),
            ]
        );
        assert_eq!(
            Nexthop::from_message(&mpath).unwrap().kind,
            NexthopKind::Group {
                kind: GroupKind::Mpath,
                members: vec![(1, 1), (2, 3)],
            }
        );

        let res = round_trip(&bytes(GROUP_RES));
        assert_eq!(
            res.attributes[3],
            NexthopAttribute::ResGroup(vec![
                NexthopResGroupAttribute::Buckets(16),
                NexthopResGroupAttribute::IdleTimer(0),
                NexthopResGroupAttribute::UnbalancedTimer(0),
                NexthopResGroupAttribute::UnbalancedTime(0),
            ])
        );
        assert_eq!(
            Nexthop::from_message(&res).unwrap(),
            Nexthop {
                id: 20,
                protocol: RouteProtocol::Unspec,
                flags: 0,
                kind: NexthopKind::Group {
                    kind: GroupKind::Resilient {
                        buckets: 16,
                        idle_timer: 0,
                        unbalanced_timer: 0,
                        unbalanced_time: 0,
                    },
                    members: vec![(1, 1), (2, 1)],
                },
            }
        );

        // `idle_timer 1` (second) comes back as 100 clock_t ticks.
        let timer = round_trip(&bytes(GROUP_RES_TIMER));
        let NexthopKind::Group {
            kind: GroupKind::Resilient { idle_timer, .. },
            ..
        } = Nexthop::from_message(&timer).unwrap().kind
        else {
            panic!("not a resilient group: {timer:?}");
        };
        assert_eq!(idle_timer, 100);
        assert_eq!(
            clock_t_to_duration(idle_timer.into()),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn kernel_bucket_round_trip() {
        let bucket = round_trip(&bytes(BUCKET));
        assert_eq!(
            bucket.attributes,
            vec![
                NexthopAttribute::Id(20),
                NexthopAttribute::ResBucket(vec![
                    NexthopBucketAttribute::Index(0),
                    NexthopBucketAttribute::NhId(2),
                    NexthopBucketAttribute::IdleTime(34),
                ]),
            ]
        );
        assert_eq!(
            Bucket::from_message(&bucket).unwrap(),
            Bucket {
                group: 20,
                index: 0,
                nh_id: 2,
                idle_time: 34,
                flags: 0,
            }
        );
        assert_eq!(clock_t_to_duration(34), Duration::from_millis(340));
    }

    fn group_message(entries: &[(u32, u16)], op_flags: Option<u32>) -> NexthopMessage {
        let mut attributes = vec![
            NexthopAttribute::Id(30),
            NexthopAttribute::Group(
                entries
                    .iter()
                    .map(|&(id, weight)| NexthopGroupEntry { id, weight })
                    .collect(),
            ),
        ];
        attributes.extend(op_flags.map(NexthopAttribute::OpFlags));
        NexthopMessage {
            header: NexthopHeader::default(),
            attributes,
        }
    }

    fn emitted(message: &NexthopMessage) -> Vec<u8> {
        let mut buf = vec![0; message.buffer_len()];
        message.emit(&mut buf);
        buf
    }

    #[test]
    fn sixteen_bit_weights() {
        let entries = [(1, 300), (2, 1), (3, 256), (4, 65535)];
        let asserted = group_message(&entries, Some(NHA_OP_FLAG_RESP_GRP_RESVD_0));
        let wire = emitted(&asserted);
        // weight 300 is stored as 299 = 0x012b: weight 0x2b, weight_high 0x01.
        assert_eq!(
            &wire[8 + 8..8 + 8 + 4 + 8],
            &bytes("24000200 01000000 2b010000")[..]
        );
        assert_eq!(
            &wire[8 + 8 + 4 + 8..8 + 8 + 4 + 32],
            &bytes("02000000 00000000 03000000 ff000000 04000000 feff0000")[..]
        );
        assert_eq!(NexthopMessage::parse(&wire).unwrap(), asserted);

        // Without the kernel's assertion weight_high is not trusted...
        let unasserted = group_message(&entries, None);
        let wire = emitted(&unasserted);
        let parsed = NexthopMessage::parse(&wire).unwrap();
        assert_eq!(
            parsed,
            group_message(&[(1, 44), (2, 1), (3, 256), (4, 255)], None)
        );
        // ...unless the message is known to come from user space.
        assert_eq!(
            NexthopMessage::parse_with_param(&wire, WeightHigh::Always).unwrap(),
            unasserted
        );
        assert_eq!(
            NexthopMessage::parse_with_param(&emitted(&asserted), WeightHigh::Never).unwrap(),
            group_message(
                &[(1, 44), (2, 1), (3, 256), (4, 255)],
                Some(NHA_OP_FLAG_RESP_GRP_RESVD_0)
            )
        );
    }

    #[test]
    fn garbage_in_reserved_bytes_of_old_kernels_is_ignored() {
        // A kernel before 6.11 with uninitialised resvd1/resvd2.
        let wire = bytes(
            "00000000 00000000  08000100 0a000000  14000200 01000000 02ab5a5a 02000000 00c3ffff",
        );
        assert_eq!(
            NexthopMessage::parse(&wire).unwrap().attributes[1],
            NexthopAttribute::Group(vec![
                NexthopGroupEntry { id: 1, weight: 3 },
                NexthopGroupEntry { id: 2, weight: 1 },
            ])
        );
    }

    #[test]
    fn hand_assembled_attributes_round_trip() {
        // fdb nexthop: id 7 via 10.1.1.1 fdb, protocol static.
        let fdb = round_trip(&bytes(
            "02000400 00000000  08000100 07000000  08000600 0a010101  04000b00",
        ));
        assert_eq!(fdb.header.protocol, RouteProtocol::Static);
        assert_eq!(
            Nexthop::from_message(&fdb).unwrap().kind,
            NexthopKind::Single {
                family: AddressFamily::Inet,
                oif: None,
                gateway: Some(Ipv4Addr::new(10, 1, 1, 1).into()),
                blackhole: false,
                fdb: true,
            }
        );

        // A resilient group whose u64 was padded (NHA_RES_GROUP_PAD, as on
        // architectures without efficient unaligned access), an unknown
        // nested attribute, NHA_MASTER and an unknown top-level attribute.
        let wire = bytes(
            "00000000 01000000  08000100 16000000  06000300 01000000
             0c000200 01000000 00000000
             34000c80 06000100 80000000 08000200 e8030000 08000300 b80b0000
                      04000000 0c000400 39300000 00000000 08000900 07000000
             08000a00 2a000000
             08001200 01020304",
        );
        let res = round_trip(&wire);
        assert_eq!(res.header.flags, RTNH_F_DEAD);
        assert_eq!(
            res.attributes[3],
            NexthopAttribute::ResGroup(vec![
                NexthopResGroupAttribute::Buckets(128),
                NexthopResGroupAttribute::IdleTimer(1000),
                NexthopResGroupAttribute::UnbalancedTimer(3000),
                NexthopResGroupAttribute::Other(DefaultNla::new(0, vec![])),
                NexthopResGroupAttribute::UnbalancedTime(12345),
                NexthopResGroupAttribute::Other(DefaultNla::new(9, vec![7, 0, 0, 0])),
            ])
        );
        assert_eq!(
            res.attributes[4],
            NexthopAttribute::Other(DefaultNla::new(10, vec![42, 0, 0, 0]))
        );
        assert_eq!(
            Nexthop::from_message(&res).unwrap().kind,
            NexthopKind::Group {
                kind: GroupKind::Resilient {
                    buckets: 128,
                    idle_timer: 1000,
                    unbalanced_timer: 3000,
                    unbalanced_time: 12345,
                },
                members: vec![(1, 1)],
            }
        );

        // A padded bucket.
        let bucket = round_trip(&bytes(
            "00000000 00000000  08000100 16000000
             24000d80 06000100 7f000000 08000300 01000000 04000000 0c000200 05000000 00000000",
        ));
        assert_eq!(
            Bucket::from_message(&bucket).unwrap(),
            Bucket {
                group: 22,
                index: 127,
                nh_id: 1,
                idle_time: 5,
                flags: 0,
            }
        );
    }

    #[test]
    fn malformed_messages_are_errors() {
        // Truncated header.
        assert!(NexthopMessage::parse(&bytes("02fd0000 0000")).is_err());
        // A 16-byte gateway in an AF_INET nexthop.
        let err = NexthopMessage::parse(&bytes(
            "02fd0000 00000000  14000600 20010db8 00000000 00000000 00000002",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("NHA_GATEWAY"), "{err}");
        // NHA_GROUP not a multiple of 8 bytes.
        assert!(NexthopMessage::parse(&bytes("00000000 00000000  08000200 01000000")).is_err());
        // NHA_ID of 2 bytes.
        assert!(NexthopMessage::parse(&bytes("00000000 00000000  06000100 0100 0000")).is_err());
        // An attribute running past the end.
        assert!(NexthopMessage::parse(&bytes("00000000 00000000  0c000100 01000000")).is_err());
        // The typed view needs NHA_ID, buckets need their index and nexthop.
        assert!(Nexthop::from_message(&NexthopMessage::default()).is_err());
        let bucket = NexthopMessage {
            header: NexthopHeader::default(),
            attributes: vec![
                NexthopAttribute::Id(1),
                NexthopAttribute::ResBucket(vec![NexthopBucketAttribute::Index(1)]),
            ],
        };
        assert!(Bucket::from_message(&bucket).is_err());
    }

    fn netlink_bytes(
        message_type: u16,
        flags: u16,
        sequence: u32,
        port: u32,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut wire = Vec::new();
        wire.extend_from_slice(&(16 + payload.len() as u32).to_ne_bytes());
        wire.extend_from_slice(&message_type.to_ne_bytes());
        wire.extend_from_slice(&flags.to_ne_bytes());
        wire.extend_from_slice(&sequence.to_ne_bytes());
        wire.extend_from_slice(&port.to_ne_bytes());
        wire.extend_from_slice(payload);
        wire
    }

    fn serialized(message: &NetlinkMessage<RtMessage>) -> Vec<u8> {
        let mut buf = vec![0; message.buffer_len()];
        message.serialize(&mut buf);
        buf
    }

    #[test]
    fn rt_message_dispatches_on_the_message_type() {
        // The notifications seen on RTNLGRP_NEXTHOP for `ip nexthop del id 2`
        // (which echo the request's flags, sequence number and port).
        let del = netlink_bytes(
            RTM_DELNEXTHOP,
            0x5,
            1795673366,
            29588,
            &bytes("02fd0000 00000000 08000100 02000000 08000500 05000000 08000600 0a000102"),
        );
        let new_group = netlink_bytes(RTM_NEWNEXTHOP, 0x5, 1795673366, 29588, &bytes(GROUP_MPATH));
        let bucket = netlink_bytes(RTM_NEWNEXTHOPBUCKET, 0x100, 0, 0, &bytes(BUCKET));
        let mut datagram = Vec::new();
        for message in [&del, &new_group, &bucket] {
            datagram.extend_from_slice(message);
        }
        let frames: Vec<&[u8]> = split_datagram(&datagram).map(Result::unwrap).collect();
        assert_eq!(frames, vec![&del[..], &new_group[..], &bucket[..]]);

        let decoded: Vec<NetlinkMessage<RtMessage>> = frames
            .iter()
            .map(|frame| NetlinkMessage::deserialize(frame).unwrap())
            .collect();
        let NetlinkPayload::InnerMessage(RtMessage::DelNexthop(ref message)) = decoded[0].payload
        else {
            panic!("{:?}", decoded[0]);
        };
        assert_eq!(message.id(), Some(2));
        assert!(matches!(
            decoded[1].payload,
            NetlinkPayload::InnerMessage(RtMessage::NewNexthop(_))
        ));
        let NetlinkPayload::InnerMessage(RtMessage::NewNexthopBucket(ref message)) =
            decoded[2].payload
        else {
            panic!("{:?}", decoded[2]);
        };
        assert_eq!(Bucket::from_message(message).unwrap().nh_id, 2);
        for (message, frame) in decoded.iter().zip(&frames) {
            assert_eq!(&serialized(message)[..], *frame);
        }
    }

    #[test]
    fn rt_message_delegates_other_types_to_netlink_packet_route() {
        let mut route = RouteMessage::default();
        route.header.address_family = AddressFamily::Inet;
        route.header.destination_prefix_length = 24;
        route.header.table = RouteHeader::RT_TABLE_MAIN;
        route.attributes = vec![
            RouteAttribute::Destination(RouteAddress::Inet(Ipv4Addr::new(203, 0, 113, 0))),
            RouteAttribute::NhId(10),
        ];
        let mut message = NetlinkMessage::from(RtMessage::Route(RouteNetlinkMessage::NewRoute(
            route.clone(),
        )));
        message.finalize();
        assert_eq!(message.header.message_type, 24);
        let wire = serialized(&message);
        let parsed = NetlinkMessage::<RtMessage>::deserialize(&wire).unwrap();
        assert_eq!(parsed, message);
        assert_eq!(
            parsed.payload,
            NetlinkPayload::InnerMessage(RtMessage::Route(RouteNetlinkMessage::NewRoute(route)))
        );
        // An unknown type is an error, as for RouteNetlinkMessage.
        assert!(
            NetlinkMessage::<RtMessage>::deserialize(&netlink_bytes(250, 0, 0, 0, &[0; 8]))
                .is_err()
        );
    }

    #[test]
    fn requests_serialize_as_the_kernel_expects() {
        // RTM_GETNEXTHOPBUCKET dump of group 20: nhmsg all zero, NHA_ID.
        let request = RtMessage::GetNexthopBucket(NexthopMessage {
            header: NexthopHeader::default(),
            attributes: vec![NexthopAttribute::Id(20)],
        });
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = 7;
        let mut message = NetlinkMessage::new(header, request.into());
        message.finalize();
        assert_eq!(
            serialized(&message),
            netlink_bytes(
                RTM_GETNEXTHOPBUCKET,
                0x301,
                7,
                0,
                &bytes("00000000 00000000 08000100 14000000")
            )
        );

        // RTM_NEWNEXTHOP of a resilient group: NLA_F_NESTED on NHA_RES_GROUP.
        let group = RtMessage::NewNexthop(NexthopMessage {
            header: NexthopHeader::default(),
            attributes: vec![
                NexthopAttribute::Id(20),
                NexthopAttribute::GroupType(NexthopGroupType::Resilient),
                NexthopAttribute::Group(vec![NexthopGroupEntry { id: 1, weight: 2 }]),
                NexthopAttribute::ResGroup(vec![NexthopResGroupAttribute::Buckets(16)]),
            ],
        });
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        let mut message = NetlinkMessage::new(header, group.into());
        message.finalize();
        let wire = serialized(&message);
        assert_eq!(
            wire,
            netlink_bytes(
                RTM_NEWNEXTHOP,
                0x605,
                0,
                0,
                &bytes(
                    "00000000 00000000 08000100 14000000 06000300 01000000
                     0c000200 01000000 01000000 0c000c80 06000100 10000000"
                )
            )
        );
        // Parsed back as a user-space message.
        let payload = &wire[16..];
        let NetlinkPayload::InnerMessage(RtMessage::NewNexthop(sent)) = message.payload else {
            unreachable!()
        };
        assert_eq!(
            NexthopMessage::parse_with_param(payload, WeightHigh::Always).unwrap(),
            sent
        );
    }

    #[test]
    fn datagram_framing() {
        let done = netlink_bytes(3, 2, 1, 1, &0i32.to_ne_bytes());
        // The last message may come without its padding; a broken length
        // field ends the iteration with an error.
        let mut datagram = netlink_bytes(RTM_NEWNEXTHOP, 2, 1, 1, &bytes(NH_BLACKHOLE));
        datagram.extend_from_slice(&done);
        assert_eq!(split_datagram(&datagram).count(), 2);
        let mut broken = done.clone();
        broken[0] = 200;
        let items: Vec<_> = split_datagram(&broken).collect();
        assert_eq!(items.len(), 1);
        assert!(items[0].is_err());
        // An unaligned message is followed by padding.
        let unaligned = netlink_bytes(
            RTM_NEWNEXTHOP,
            0,
            0,
            0,
            &bytes("02000000 00000000 05000100 01"),
        );
        let mut datagram = unaligned.clone();
        datagram.extend_from_slice(&[0, 0, 0]);
        datagram.extend_from_slice(&done);
        let frames: Vec<_> = split_datagram(&datagram).map(Result::unwrap).collect();
        assert_eq!(frames, vec![&unaligned[..], &done[..]]);
    }

    #[test]
    fn errors_explain_themselves() {
        let err = NetlinkError::Kernel {
            request: RTM_GETNEXTHOPBUCKET,
            errno: 22,
            message: Some("Nexthop group is not resilient".into()),
        };
        assert_eq!(err.errno(), Some(22));
        let text = err.to_string();
        assert!(
            text.starts_with("RTM_GETNEXTHOPBUCKET refused by the kernel: Invalid argument"),
            "{text}"
        );
        assert!(text.ends_with("(Nexthop group is not resilient)"), "{text}");

        // Extended ACK text of an NLMSG_ERROR with a capped echo.
        let tlvs = bytes("0a000100 4e6f7065 21000000");
        let mut echoed = netlink_bytes(RTM_NEWNEXTHOP, 0x605, 9, 0, &[]);
        echoed[0] = 40;
        let mut error = ErrorMessage::default();
        error.code = std::num::NonZeroI32::new(-17);
        error.header = [echoed, tlvs].concat();
        assert_eq!(
            error_message_text(NLM_F_CAPPED | NLM_F_ACK_TLVS, &error).as_deref(),
            Some("Nope!")
        );
        assert_eq!(error_message_text(NLM_F_CAPPED, &error), None);
    }
}
