/* xe_maps.h: the maps of the XDP program; the control plane writes them, the program only reads (but counters and stamps). */
#ifndef XE_MAPS_H
#define XE_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "xe_abi.h"

/* IPv4 routes by prefix: the control plane's record of what it gave the
 * DIR-24-8 tables below (read back by `show`, the checker and a restarted
 * daemon); packets never read it. An open-addressing table of 8-byte words
 * the control plane writes through mmap (see dataplane/src/record.rs): two
 * header words, then two slots per route of capacity, each 0 or the
 * address << 32 | the route as a DIR-24-8 entry. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, XE_RECORD_V4_WORDS);
	__uint(map_flags, BPF_F_MMAPABLE);
} xe_routes_v4 SEC(".maps");

/* DIR-24-8 first level: the route (or a chunk of xe_tbl8) of every /24,
 * 2^24 entries as enum xe_dir_entry, the top 16 destination bits select a
 * block, the next 8 the entry. Mmapable so the control plane writes a short
 * prefix's 65,536 (a /8) or 16M (a default route) entries as memory stores. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct xe_dir_chunk);
	__uint(max_entries, 1 << 16);
	__uint(map_flags, BPF_F_MMAPABLE);
} xe_tbl24 SEC(".maps");

/* DIR-24-8 second level: one 256-entry chunk per /24 holding a prefix longer
 * than /24, indexed by the last destination byte. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct xe_dir_chunk);
	__uint(max_entries, XE_MAX_DIR_CHUNKS);
	__uint(map_flags, BPF_F_MMAPABLE);
} xe_tbl8 SEC(".maps");

/* IPv6 routes by prefix: the control plane's record, as xe_routes_v4;
 * packets use the length search below. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct xe_lpm_v6);
	__type(value, struct xe_route);
	__uint(max_entries, XE_MAX_ROUTES_V6);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} xe_routes_v6 SEC(".maps");

/* IPv6 length search: a slot per (length, masked destination) of a route
 * and per marker that turns the search towards longer lengths, each holding
 * the route of the longest prefix no longer than itself covering it (kind 0:
 * none); open addressing (dataplane/src/v6slots.rs), read by array lookups
 * the verifier inlines. Mmapable: the control plane writes a slot's state
 * last, and reuses a deleted slot only after a grace period. Sized at load:
 * 2^v6_slot_bits home slots (at least twice max_routes_v6) and the probe
 * bound's overhang. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct xe_v6_slot);
	__uint(max_entries, (1 << 21) + XE_V6_PROBES);
	__uint(map_flags, BPF_F_MMAPABLE);
} xe_v6_slots SEC(".maps");

/* The prefix lengths the IPv6 search visits (one struct xe_v6_lens). Mmapable:
 * the control plane writes the unused set and switches with one store. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct xe_v6_lens);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
} xe_v6_lens SEC(".maps");

/* ECMP groups by id: a window of the slot pool and its mode. Mmapable: the
 * control plane replaces an entry with one 8-byte store, the program reads it
 * with one 8-byte load. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct xe_group);
	__uint(max_entries, XE_MAX_GROUPS);
	__uint(map_flags, BPF_F_MMAPABLE);
} xe_groups SEC(".maps");

/* Slot pool: next-hop id per resilient bucket or per live modulo member.
 * Mmapable: each slot is written with one aligned 4-byte store (the array
 * pads entries to 8 bytes). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, XE_MAX_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
} xe_slots SEC(".maps");

/* Last-used time of each slot in jiffies (low 32 bits | 1; 0: never), written only
 * when it changes so busy buckets do not bounce a cache line per packet. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, XE_MAX_SLOTS);
} xe_slot_used SEC(".maps");

/* Next hops by id. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct xe_nexthop);
	__uint(max_entries, XE_MAX_NEXTHOPS);
} xe_nexthops SEC(".maps");

/* Ingress ports by ifindex (below XE_INPORT_INDEXES): the port's MAC and
 * forwarding switches, kept equal to the kernel's by the control plane. A
 * frame is routed only when it came in by a port listed here (XE_INPORT_ON),
 * is addressed to its MAC, is untagged and its family's forwarding is on;
 * everything else goes to the kernel. An array, so the lookup is no call;
 * mmapable: the control plane replaces an entry with one 8-byte store and
 * the program reads it with one 8-byte load, so MAC and flags always come
 * from one version of the entry. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct xe_inport);
	__uint(max_entries, XE_INPORT_INDEXES);
} xe_inports SEC(".maps");

/* Ingress ports whose ifindex is XE_INPORT_INDEXES or more (a host that has
 * made and removed many devices), as xe_inports. A hash map: an update links
 * in a new element, never writes the one packets read. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct xe_inport);
	__uint(max_entries, XE_MAX_INPORTS);
} xe_inports_far SEC(".maps");

/* The entry of ingress port `ifindex` in one 8-byte load (MAC and flags of
 * one version); it is a port when XE_INPORT_ON is set. The array entry is
 * read on every path (an ifindex past it reads entry 0, never a port, then
 * the far map): the two reads stay two loads, one per map, as
 * tests/object_reads.rs checks. */
static __always_inline __u64 xe_inport_word(__u32 ifindex)
{
	__u32 at = ifindex < XE_INPORT_INDEXES ? ifindex : 0;
	const __u64 *p = bpf_map_lookup_elem(&xe_inports, &at);
	__u64 w = p ? *(const volatile __u64 *)p : 0;

	if (ifindex >= XE_INPORT_INDEXES) {
		p = bpf_map_lookup_elem(&xe_inports_far, &ifindex);
		w = p ? *(const volatile __u64 *)p : 0;
	}
	return w;
}

/* Egress ports by ifindex, for bpf_redirect_map. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, XE_MAX_TXPORTS);
} xe_txports SEC(".maps");

/* The AF_XDP engine's sockets (steer_xsk), at port index * XE_MAX_QUEUES +
 * receive queue: a socket takes frames of its own port and queue only. Not
 * pinned, nor is xe_xsk_ports: the sockets belong to the engine's process. */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, XE_MAX_XSK_PORTS * XE_MAX_QUEUES);
} xe_xsks SEC(".maps");

/* The engine's index of each port it serves, by ifindex. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, XE_MAX_XSK_PORTS);
} xe_xsk_ports SEC(".maps");

/* Flow pinning: the path each IPv4 flow to a pinned route (XE_ROUTE_PIN)
 * was first forwarded by, keyed by the flow's hashed fields (struct
 * xe_flow4, the fields the hash policy leaves out zeroed). Set-associative:
 * a key's set is xe_pin_set_of its words (pin_seed, pin_set_bits), its
 * entry one of the set's XE_PIN_WAYS ways; a new flow takes a free way, or
 * the way seen longest ago. Read with array lookups the verifier inlines
 * (no call on a hit). Mmapable: the control plane reads, writes and
 * flushes ways by the seq protocol of struct xe_pin_way4. The set count is
 * chosen at load (MapSizes; dataplane/src/pinsets.rs). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct xe_pin_set4);
	__uint(max_entries, 1 << 8);
	__uint(map_flags, BPF_F_MMAPABLE);
} xe_flows4 SEC(".maps");

/* The same for IPv6 flows, keyed by struct xe_flow (is_v6 set). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct xe_pin_set6);
	__uint(max_entries, 1 << 8);
	__uint(map_flags, BPF_F_MMAPABLE);
} xe_flows6 SEC(".maps");

/* The flow tables' set-index key (one __u64), made at random when the
 * tables are first made and kept with them: the loader reads it back into
 * pin_seed, so a restarted or upgraded program finds the entries where
 * they are. The program never reads the map. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} xe_pin_seed SEC(".maps");

/* The live members of each group, by path, with the next-hop id that is
 * the path's now: a pinned flow keeps its path while it is in here and
 * its next hop usable. Written by the control plane with the groups. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct xe_pin_member);
	__type(value, __u32);
	__uint(max_entries, XE_MAX_PIN_MEMBERS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} xe_pin_members SEC(".maps");

/* Each group's membership generation: a number the control plane takes
 * from one counter that only grows (so never the same for two groups, nor
 * twice for one) and writes after every change of the group's
 * xe_pin_members entries; 0: none. A flow entry written under the current
 * generation names a next hop still in the group. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, XE_MAX_GROUPS);
} xe_group_gen SEC(".maps");

/* The AF_XDP engine's flow tables (one per worker, in its process): their
 * events (enum xe_pin_event) since the maps were made, and at index
 * XE_PIN_E_COUNT their entries now. Written by the daemon that runs the
 * engine; the program never touches it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, XE_PIN_E_COUNT + 1);
} xe_engine_pins SEC(".maps");

/* The flow table's events (enum xe_pin_event), per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, XE_PIN_E_COUNT);
} xe_pin_stats SEC(".maps");

/* The layout version of these maps (XE_LAYOUT_VERSION), written by the
 * loader: pins of another layout are refused, never read as this one's. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} xe_layout SEC(".maps");

/* Hash seed, fields and flags (one entry). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct xe_config);
	__uint(max_entries, 1);
} xe_config SEC(".maps");

/* Packets and bytes per verdict, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct xe_counter);
	__uint(max_entries, XE_V_COUNT);
} xe_verdicts SEC(".maps");

/* Packets and bytes forwarded per next hop, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct xe_counter);
	__uint(max_entries, XE_MAX_NEXTHOPS);
} xe_nh_stats SEC(".maps");

/* What the AF_XDP engine forwarded, per verdict and per next hop: written
 * by the daemon that runs it (totals), read with the program's own
 * counters by `stats` and the metrics. The program never touches them. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct xe_counter);
	__uint(max_entries, XE_V_COUNT);
} xe_engine_verdicts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct xe_counter);
	__uint(max_entries, XE_MAX_NEXTHOPS);
} xe_engine_nh SEC(".maps");

/* The last decision on this CPU, when loaded with trace_decisions. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct xe_decision);
	__uint(max_entries, 1);
} xe_trace SEC(".maps");

#endif
