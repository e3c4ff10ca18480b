/* xe_abi.h: every struct and constant shared by the XDP program and the Rust crates (the one definition). */
#ifndef XE_ABI_H
#define XE_ABI_H

#include <linux/types.h>

/* Capacities. The control plane's record of IPv6 routes is an LPM trie
 * without preallocation (only used entries cost memory), that of IPv4 routes
 * an array of two slots per route (xe_routes_v4); packets look IPv4 up in
 * the DIR-24-8 tables and IPv6 in the length search; buckets and modulo
 * member lists share one slot pool so a group reserves exactly the slots it
 * uses, never 4096. */
enum xe_limits {
	XE_MAX_ROUTES_V4 = 1 << 21,
	XE_MAX_ROUTES_V6 = 1 << 20,
	/* Words of the IPv4 route record (xe_routes_v4): two header words,
	 * then two slots per route, so its probe runs stay short. */
	XE_RECORD_V4_WORDS = 2 + 2 * XE_MAX_ROUTES_V4,
	XE_MAX_GROUPS = 1 << 16,
	XE_MAX_NEXTHOPS = 1 << 16,
	XE_MAX_SLOTS = 1 << 21,
	XE_MAX_GROUP_BUCKETS = 4096,
	XE_MAX_TXPORTS = 1024,
	/* Ingress ports the program admits frames from: any number with an
	 * ifindex below XE_INPORT_INDEXES (xe_inports, an array the program
	 * reads without a call), up to XE_MAX_INPORTS above it (xe_inports_far). */
	XE_INPORT_INDEXES = 1 << 16,
	XE_MAX_INPORTS = 1024,
	/* Ports, and receive queues per port, the AF_XDP engine can serve. */
	XE_MAX_XSK_PORTS = 256,
	XE_MAX_QUEUES = 64,
	/* DIR-24-8 second-level chunks: one per /24 that holds a prefix longer
	 * than /24 (1M /32s in consecutive addresses fill 4096). */
	XE_MAX_DIR_CHUNKS = 16384,
	/* IPv6 extension headers walked before giving up on finding L4. */
	XE_MAX_EXT_HEADERS = 8,
	/* Flow pinning: (group, path) memberships the program checks a pinned
	 * flow's next hop against, and the default flow table size (the
	 * table's size is a choice at load, as the route records' are). */
	XE_MAX_PIN_MEMBERS = 1 << 18,
	XE_DEFAULT_PIN_FLOWS = 1 << 20,
	/* Ways of a flow-table set: a flow's entry sits in one of the ways of
	 * the set its key hashes to (struct xe_pin_set4/6). */
	XE_PIN_WAYS = 8,
};

/* The layout of the pinned maps (types, sizes, flags, value layouts). Bump it
 * with any change to a map or a value struct: a build refuses pins of
 * another layout instead of reading them as its own. 1: unversioned pins;
 * 2: groups and slots mmapable, the xe_layout map; 3: the xe_inports map,
 * four admission verdicts (the drop verdicts renumbered); 4: flow pinning
 * (xe_flows, xe_pin_members, xe_pin_stats, a route's pin flag, a next
 * hop's path id, the pin timeouts in xe_config); 5: a flow table per
 * family (xe_flows4 keyed by struct xe_flow4, xe_flows6 by struct
 * xe_flow); 6: xe_inports an mmapable array by ifindex (XE_INPORT_ON marks
 * a port), xe_inports_far for the ifindexes past it; 7: the flow tables
 * mmapable arrays of sets of XE_PIN_WAYS ways (struct xe_pin_set4/6),
 * xe_pin_seed; 8: xe_routes_v4 an mmapable array of 8-byte words (the
 * record of IPv4 routes as an open-addressing table, XE_RECORD_V4_WORDS). */
enum xe_layout {
	XE_LAYOUT_VERSION = 8,
};

/* Why the program decided what it did; one per-CPU counter each. Keep the
 * order: the Rust side and the README's verdict table use these numbers. */
enum xe_verdict {
	XE_V_FORWARD = 0,	   /* rewritten and redirected (XDP_REDIRECT) */
	XE_V_PASS_NOT_IP = 1,	   /* not IPv4/IPv6, or a third VLAN tag */
	XE_V_PASS_MULTICAST = 2,   /* L2 multicast/broadcast, IPv4 multicast/broadcast, IPv6 multicast */
	XE_V_PASS_SPECIAL = 3,	   /* addresses a router never forwards: loopback, 0/8, link-local v6, bad sources */
	XE_V_PASS_LOCAL = 4,	   /* route of type local: this host is the destination */
	XE_V_PASS_NO_ROUTE = 5,	   /* no route, or an unreachable/prohibit route (the kernel sends the ICMP) */
	XE_V_PASS_TTL = 6,	   /* TTL / hop limit <= 1 (the kernel sends time-exceeded) */
	XE_V_PASS_NEXTHOP_DOWN = 7, /* group empty, next hop invalid, link down or neighbour unresolved */
	XE_V_PASS_MTU = 8,	   /* packet larger than the egress MTU (the kernel fragments or sends PTB) */
	XE_V_PASS_NO_TXPORT = 9,   /* egress port not in the redirect map */
	XE_V_PASS_NOT_PORT = 10,   /* ingress port without an xe_inports entry */
	XE_V_PASS_OTHERHOST = 11,  /* destination MAC not the ingress port's (the kernel's PACKET_OTHERHOST) */
	XE_V_PASS_VLAN = 12,	   /* 802.1Q/802.1ad tagged: the kernel's VLAN devices decide */
	XE_V_PASS_NO_FORWARDING = 13, /* the family's forwarding is off for the ingress port */
	/* Every verdict from here on drops (XDP_DROP). */
	XE_V_PASS_SOURCE = 14,	   /* IPv4 source the kernel validates or refuses: its own, broadcast or refused address, or rp_filter on */
	XE_V_DROP_TRUNCATED = 15,  /* a header is cut short by the end of the frame */
	XE_V_DROP_MALFORMED = 16,  /* bad version, IHL < 5, TCP offset < 5, lengths that do not fit */
	XE_V_DROP_BLACKHOLE = 17,  /* route of type blackhole */
	XE_V_COUNT = 18,
};

/* Route types, as the kernel's RTN_* classes that matter to forwarding. */
enum xe_route_kind {
	XE_RT_UNICAST = 1,
	XE_RT_LOCAL = 2,
	XE_RT_BLACKHOLE = 3,
	XE_RT_UNREACHABLE = 4,
	XE_RT_PROHIBIT = 5,
};

/* Route flags (struct xe_route, and bit XE_DIR_PIN of a DIR-24-8 entry). */
enum xe_route_flag {
	XE_ROUTE_PIN = 0x1, /* flows to this route keep the next hop they were first sent to (xe_flows4/6) */
};

/* Group modes. Both index slots[base + hash % size]; they differ in what the
 * control plane writes: a resilient group has a fixed bucket table, a modulo
 * group lists its live members (so N changes when a member comes or goes). */
enum xe_group_mode {
	XE_GROUP_UNUSED = 0,
	XE_GROUP_RESILIENT = 1,
	XE_GROUP_MODULO = 2,
};

/* Next-hop state bits; a next hop forwards only with the three USABLE bits
 * and TXPORT set. TXPORT is the control plane's word that the egress port is
 * in the redirect map, so the program needs no map lookup to know it; a port
 * leaving the map in between is still caught by bpf_redirect_map's fallback. */
enum xe_nh_state {
	XE_NH_VALID = 0x1,
	XE_NH_RESOLVED = 0x2, /* neighbour MAC known */
	XE_NH_LINK_UP = 0x4,
	XE_NH_USABLE = 0x7,
	XE_NH_TXPORT = 0x8, /* ifindex is in xe_txports */
};

/* Hash fields: the kernel's fib_multipath_hash_fields bits, and the two
 * policies by name. */
enum xe_hash_field {
	XE_HASH_SRC_IP = 0x01,
	XE_HASH_DST_IP = 0x02,
	XE_HASH_IP_PROTO = 0x04,
	XE_HASH_FLOWLABEL = 0x08,
	XE_HASH_SRC_PORT = 0x10,
	XE_HASH_DST_PORT = 0x20,
	XE_HASH_PORTS = 0x30,
	XE_HASH_ALL_FIELDS = 0x3f,
	XE_HASH_POLICY_L3 = 0x03,
	XE_HASH_POLICY_L4 = 0x37,
};

/* Ingress-port flags (struct xe_inport): the kernel's forwarding switches
 * for what comes in by the port. */
enum xe_inport_flag {
	XE_INPORT_FWD_V4 = 0x1, /* net.ipv4.conf.PORT.forwarding */
	XE_INPORT_FWD_V6 = 0x2, /* net.ipv6.conf.all.forwarding, or the port's force_forwarding */
	XE_INPORT_RPF = 0x4,	/* rp_filter on for the port (max of all and PORT): the kernel checks IPv4 sources by a reverse lookup */
	XE_INPORT_ON = 0x80,	/* the entry is a port (set by the writer; an array entry without it is none) */
};

/* Flow-table entry flags (struct xe_pin). */
enum xe_pin_flag {
	XE_PIN_CLOSING = 0x1, /* a TCP FIN was seen: the entry ages out after pin_timeout[XE_PIN_T_CLOSING] */
};

/* Which timeout of xe_config.pin_timeout an entry ages out by. */
enum xe_pin_timeout {
	XE_PIN_T_TCP = 0,
	XE_PIN_T_OTHER = 1,	/* UDP and every other protocol */
	XE_PIN_T_CLOSING = 2,
	XE_PIN_T_COUNT = 3,
};

/* What the flow table did, one per-CPU counter each (xe_pin_stats). */
enum xe_pin_event {
	XE_PIN_E_HIT = 0,	/* forwarded by its entry, whatever the bucket says */
	XE_PIN_E_INSERTED = 1,	/* a new flow: entry written for the next hop its bucket chose */
	XE_PIN_E_REPINNED = 2,	/* the entry's next hop died, left the group or aged out: re-hashed, entry rewritten */
	XE_PIN_E_ENDED = 3,	/* a TCP RST removed the entry */
	XE_PIN_E_FLUSHED = 4,	/* removed by the control plane (flush-flows); written by it, never by the program */
	XE_PIN_E_COUNT = 5,
};

/* Config flags. */
enum xe_cfg_flag {
	XE_CFG_SYMMETRIC = 0x1, /* both directions of a flow hash alike */
};

/* An entry of the IPv4 DIR-24-8 tables (xe_tbl24, xe_tbl8), one aligned
 * 32-bit word so a packet never reads half of one. 0 = no route. A route is
 * stored in the entry itself: its group id, its kind (enum xe_route_kind; 0
 * reads as no route) and, for the control plane's bookkeeping, the length of
 * the prefix that wrote it. A first-level entry with XE_DIR_CHUNK set instead
 * points to the 256-entry chunk of xe_tbl8 that holds its /24. */
enum xe_dir_entry {
	XE_DIR_GROUP_MASK = 0xffff,  /* bits 0-15: group id */
	XE_DIR_KIND_SHIFT = 16,	     /* bits 16-23: route kind */
	XE_DIR_DEPTH_SHIFT = 24,     /* bits 24-29: prefix length (0-32) */
	XE_DIR_CHUNK = 0x40000000,   /* bit 30: bits 0-23 are a chunk index */
	XE_DIR_PIN = 0x80000000,     /* bit 31: the route's XE_ROUTE_PIN */
	XE_DIR_CHUNK_MASK = 0xffffff,
	XE_DIR_CHUNK_SIZE = 256,
};

_Static_assert(XE_MAX_GROUPS - 1 <= XE_DIR_GROUP_MASK, "group ids fit a DIR-24-8 entry");

/* 256 consecutive DIR-24-8 entries: the value of both table maps. An array
 * map rounds each value up to 8 bytes, so 4-byte values would double the
 * memory; 1 KiB values keep the entries packed, and the mmapped map reads as
 * one flat array of entries. */
struct xe_dir_chunk {
	__u32 e[XE_DIR_CHUNK_SIZE];
};
_Static_assert(sizeof(struct xe_dir_chunk) == 1024, "xe_dir_chunk");

/* Key of the IPv6 LPM trie. */
struct xe_lpm_v6 {
	__u32 prefixlen;
	__u8 addr[16];
};
_Static_assert(sizeof(struct xe_lpm_v6) == 20, "xe_lpm_v6");

/* IPv6 search by prefix length (dataplane/src/lensearch.rs): a binary
 * search over the lengths routes have, one lookup in the slot table
 * (xe_v6_slots) per level. XE_V6_LENS holds all 129 lengths (0..128), rounded to 8 bytes;
 * XE_V6_STEPS levels search them all. */
enum xe_v6_search {
	XE_V6_LENS = 136,
	XE_V6_STEPS = 8,
	/* Slots probed from an entry's home slot (dataplane/src/v6slots.rs). */
	XE_V6_PROBES = 64,
	/* Slot states. */
	XE_V6_EMPTY = 0,
	XE_V6_DELETED = 0x100, /* + the deleted entry's length */
	XE_V6_LIVE = 2,
};

/* A slot of the IPv6 search's table (xe_v6_slots): an entry's length and
 * masked destination, and the route of the longest prefix no longer than it
 * covering it. The control plane writes route and address before state. */
struct xe_v6_slot {
	__u32 state; /* XE_V6_EMPTY, XE_V6_LIVE + length, or XE_V6_DELETED + length */
	__u32 route; /* as a DIR-24-8 entry (enum xe_dir_entry); kind 0: none */
	__u64 hi;    /* the address's first 64 bits as a number, bits past the length zero */
	__u64 lo;    /* its last 64 bits */
};
_Static_assert(sizeof(struct xe_v6_slot) == 24, "xe_v6_slot");

/* The slot table's hash multiplier (2^64 / golden ratio). */
#define XE_V6_MUL 0x9e3779b97f4a7c15ULL

/* The lengths searched: two ascending sets and the one in use. The control
 * plane writes the other set, then switches `active` with one store. Each
 * set is XE_V6_LENS bytes, one length each, held in 8-byte words (the
 * skeleton's Rust types have no arrays past 32 elements). */
struct xe_v6_lens {
	__u32 active;
	__u32 count[2];
	__u32 pad;
	__u64 len[2][XE_V6_LENS / 8];
};
_Static_assert(sizeof(struct xe_v6_lens) == 16 + 2 * XE_V6_LENS, "xe_v6_lens");

/* Value of both LPM tries and of the IPv6 search's entries. */
struct xe_route {
	__u32 group; /* index into the groups map (XE_RT_UNICAST only) */
	__u8 kind;   /* enum xe_route_kind */
	__u8 flags;  /* XE_ROUTE_* bits */
	__u8 pad[2];
};
_Static_assert(sizeof(struct xe_route) == 8, "xe_route");

/* An ECMP group: a window [base, base + size) of the slot pool. Eight bytes,
 * so the control plane can point a group at a freshly written window in one
 * update. */
struct xe_group {
	__u32 base;
	__u16 size; /* buckets (resilient) or live members (modulo); 0 = no usable member */
	__u8 mode;  /* enum xe_group_mode */
	__u8 flags;
};
_Static_assert(sizeof(struct xe_group) == 8, "xe_group");

/* A next hop: where and how to send. */
struct xe_nexthop {
	__u32 ifindex; /* egress port, also the key in the tx port map */
	__u16 mtu;     /* L3 MTU of the egress port */
	__u16 vlan;    /* 802.1Q TCI to push on egress, 0 = untagged */
	__u8 dmac[6];  /* neighbour MAC */
	__u8 smac[6];  /* egress port MAC */
	__u8 state;    /* XE_NH_* bits */
	__u8 pad[3];
	__u32 path;    /* the control plane's stable id of (port, gateway): what a pinned flow keeps */
	__u32 pad2;
};
_Static_assert(sizeof(struct xe_nexthop) == 32, "xe_nexthop");

/* An ingress port as the kernel receives on it: a unicast frame is the
 * kernel's to route only if addressed to the port's MAC (any other is
 * PACKET_OTHERHOST, dropped), and it forwards a family only with that
 * family's switch on. Eight bytes, 8-aligned (as map values are): the
 * program reads it with one 8-byte load. */
struct xe_inport {
	__u8 mac[6];
	__u8 flags; /* XE_INPORT_* bits */
	__u8 pad;
} __attribute__((aligned(8)));
_Static_assert(sizeof(struct xe_inport) == 8, "xe_inport");

/* Runtime configuration (one entry). A zero hash_fields means the default, L3+L4. */
struct xe_config {
	__u32 seed[2];	   /* 64-bit HalfSipHash key */
	__u32 hash_fields; /* XE_HASH_* bits */
	__u32 flags;	   /* XE_CFG_* bits */
	/* How long a flow-table entry outlives its flow's last packet, in
	 * jiffies, by enum xe_pin_timeout; 0: until evicted or ended. */
	__u32 pin_timeout[XE_PIN_T_COUNT];
	__u32 pad;
};
_Static_assert(sizeof(struct xe_config) == 32, "xe_config");

/* A flow-table entry (xe_flows4/6, keyed by the flow's hashed fields, the
 * others zeroed): the path the flow was first forwarded by, and the
 * next-hop id that path had under the group's membership generation `gen`
 * (xe_group_gen): while the route's group still has that generation, the
 * entry's next hop is used without looking the membership up. `nexthop`
 * and `gen` are written and read as one aligned 8-byte word. */
struct xe_pin {
	__u32 path;    /* xe_nexthop.path */
	__u32 seen;    /* jiffies (low 32 bits) of its last packet */
	__u32 nexthop; /* the path's next-hop id under `gen` */
	__u32 gen;     /* xe_group_gen of the group it was written under; 0: none */
	__u32 flags;   /* XE_PIN_* bits */
	__u32 pad;
};
_Static_assert(sizeof(struct xe_pin) == 24, "xe_pin");

/* Key of xe_pin_members: a path that is a live member of a group. */
struct xe_pin_member {
	__u32 group;
	__u32 path;
};
_Static_assert(sizeof(struct xe_pin_member) == 8, "xe_pin_member");

/* A per-CPU packet/byte counter. */
struct xe_counter {
	__u64 packets;
	__u64 bytes;
};
_Static_assert(sizeof(struct xe_counter) == 16, "xe_counter");

/* What the program decided for the last packet on this CPU; written only when
 * the program is loaded with trace_decisions set (tests and `xdp-ecmp calc`). */
struct xe_decision {
	__u32 verdict; /* enum xe_verdict */
	__u32 action;  /* XDP_* return code */
	__u32 hash;
	__u32 group;
	__u32 bucket; /* index inside the group */
	__u32 nexthop;
	__u32 ifindex;
	__u32 pin; /* 1 + the enum xe_pin_event of a flow to a pinned route; 0: none */
};
_Static_assert(sizeof(struct xe_decision) == 32, "xe_decision");

/* The fields a flow hashes on, in the byte order they have on the wire
 * (addresses as loaded from the packet), ports in host order. */
struct xe_flow {
	__u32 src[4];
	__u32 dst[4];
	__u32 flowlabel; /* host order, 20 bits */
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 is_v6;
	__u8 pad[2];
};
_Static_assert(sizeof(struct xe_flow) == 44, "xe_flow");

/* An IPv4 flow's key in the flow table: the hashed fields of struct
 * xe_flow that an IPv4 flow has, 16 bytes (the table hashes and compares
 * the whole key on every lookup: a hit costs less than with xe_flow's 44). */
struct xe_flow4 {
	__u32 src;
	__u32 dst;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};
_Static_assert(sizeof(struct xe_flow4) == 16, "xe_flow4");

/* One way of a flow-table set: a flow's key and its entry. `seq` makes a
 * whole rewrite of the way one step for its readers: odd while a writer
 * (the program or the control plane, whoever took it from even with a
 * compare-and-swap) rewrites key, entry and `used`, 2 more once it is done;
 * a reader that finds it odd, or changed after reading, takes the way as
 * not holding its flow. The entry's own fields (seen, flags, the
 * next-hop word) are updated in place, each with one aligned store. */
struct xe_pin_way4 {
	__u32 seq;
	__u32 used; /* 1: holds a flow; 0: free */
	struct xe_flow4 key;
	struct xe_pin pin;
};
_Static_assert(sizeof(struct xe_pin_way4) == 48, "xe_pin_way4");

/* The same for IPv6 flows (key: struct xe_flow, is_v6 set). */
struct xe_pin_way6 {
	__u32 seq;
	__u32 used;
	struct xe_flow key;
	__u32 pad; /* the entry's next-hop word 8-byte aligned */
	struct xe_pin pin;
};
_Static_assert(sizeof(struct xe_pin_way6) == 80, "xe_pin_way6");

/* A set of each family's flow table (one array entry). */
struct xe_pin_set4 {
	struct xe_pin_way4 way[XE_PIN_WAYS];
};
struct xe_pin_set6 {
	struct xe_pin_way6 way[XE_PIN_WAYS];
};

/* Names every enum above, and the types only the Rust side stores, so they
 * reach BTF and from there the skeleton's generated types; the program holds
 * one unused instance. */
struct xe_abi_types {
	struct xe_flow flow;
	struct xe_flow4 flow4;
	struct xe_inport inport;
	struct xe_pin pin;
	struct xe_pin_way4 pin_way4;
	struct xe_pin_way6 pin_way6;
	struct xe_pin_member pin_member;
	enum xe_layout layout;
	enum xe_limits limits;
	enum xe_verdict verdict;
	enum xe_route_kind route_kind;
	enum xe_group_mode group_mode;
	enum xe_nh_state nh_state;
	enum xe_dir_entry dir_entry;
	enum xe_hash_field hash_field;
	enum xe_cfg_flag cfg_flag;
	enum xe_inport_flag inport_flag;
	enum xe_route_flag route_flag;
	enum xe_pin_flag pin_flag;
	enum xe_pin_timeout pin_timeout;
	enum xe_pin_event pin_event;
	enum xe_v6_search v6_search;
};

#endif
