/* xdp_ecmp.bpf.c: the XDP fast path: admit (the ingress port's MAC and switches), parse, hash the flow, route (DIR-24-8 for IPv4, a binary search on prefix lengths for IPv6) -> group -> bucket -> next hop, rewrite and redirect. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "include/xe_abi.h"
#include "include/xe_maps.h"
#include "include/xe_parse.h"
#include "include/xe_hash.h"
#include "include/xe_csum.h"
#include "include/xe_txfail.h"
#include "include/xe_pin.h"
#include "include/xe_flows.h"

/* Set before load: record every decision in xe_trace (tests, `xdp-ecmp calc`). */
const volatile __u8 trace_decisions = 0;
/* Set before load: 0 for a copy that only answers questions (`xdp-ecmp calc`
 * over the live maps), so it leaves the production counters and the flow
 * table alone (it reads entries, never writes one). */
const volatile __u8 count_packets = 1;
/* Set before load: 1 takes every frame as admitted (no xe_inports lookup,
 * no MAC, tag or forwarding-switch check), for test runs over tables that
 * have no ports. 0, the default, for anything attached to a port. */
const volatile __u8 admit_any = 0;
/* Set before load, for measurement only: 0 stamps a bucket when its tick
 * changes, 1 stamps on every packet, 2 never stamps. */
const volatile __u8 stamp_mode = 0;
/* Set before load: 1 for the AF_XDP engine. A frame to be forwarded goes,
 * unrewritten, to the engine's socket of its receive queue (xe_xsks), which
 * decides, rewrites and transmits it; without a socket there, XDP_PASS. The
 * engine counts what it forwards. Every other verdict stays here. */
const volatile __u8 steer_xsk = 0;

/* log2 of the home slots of the IPv6 slot table (xe_v6_slots), set at load
 * from its size. */
const volatile __u32 v6_slot_bits = 21;

/* The flow tables' set-index key (kept in xe_pin_seed) and log2 of their
 * set count, set at load. */
const volatile __u64 pin_seed = 0;
const volatile __u32 pin_set_bits = 8;

/* The kernel's jiffies when xe_clock last ran: how the control plane reads
 * the clock the buckets are stamped with. */
volatile __u64 xe_clock_jiffies;

/* Never read: carries the ABI types into BTF for the Rust side. */
const volatile struct xe_abi_types xe_abi_types __attribute__((used)) = {};

/* The quoted packet of an ICMP error, read as the flow it belongs to: the
 * quote travelled server -> client, the flow we steer is client -> server, so
 * addresses and ports are swapped. Returns 0 when the quote is unusable;
 * the error is then hashed as an ordinary ICMP packet. */
static __always_inline int xe_parse_quoted(void *data, void *data_end, __u32 q, __u32 qend, struct xe_meta *m)
{
	struct xe_flow in = {};
	__u8 nh, frag = 0, no_l4 = 0;
	__u32 l4;

	if (q > XE_MAX_OFF)
		return 0;
	XE_BOUND(q);
	if (!m->flow.is_v6) {
		struct iphdr *iph = data + q;
		__u32 hlen;

		if (q + sizeof(*iph) > qend || (void *)(iph + 1) > data_end)
			return 0;
		if (iph->version != 4 || iph->ihl < 5)
			return 0;
		hlen = iph->ihl * 4;
		if (q + hlen > qend)
			return 0;
		in.src[0] = iph->saddr;
		in.dst[0] = iph->daddr;
		frag = (iph->frag_off & bpf_htons(0x3fff)) != 0;
		no_l4 = frag;
		nh = iph->protocol;
		l4 = q + hlen;
	} else {
		struct ipv6hdr *ip6h = data + q;

		if (q + sizeof(*ip6h) > qend || (void *)(ip6h + 1) > data_end)
			return 0;
		if (ip6h->version != 6)
			return 0;
		__builtin_memcpy(in.src, &ip6h->saddr, 16);
		__builtin_memcpy(in.dst, &ip6h->daddr, 16);
		nh = ip6h->nexthdr;
		l4 = q + sizeof(*ip6h);
		if (xe_walk_ipv6_ext(data, data_end, qend, &l4, &nh, &frag, &no_l4) != XE_CONTINUE)
			return 0;
	}
	if (!no_l4 && xe_has_ports(nh) && l4 + 4 <= qend && l4 <= XE_MAX_OFF) {
		__u8 *p;

		XE_BOUND(l4);
		p = data + l4;

		if ((void *)(p + 4) > data_end)
			return 0;
		xe_read_ports(p, &in.sport, &in.dport);
	}
	__builtin_memcpy(m->flow.src, in.dst, 16);
	__builtin_memcpy(m->flow.dst, in.src, 16);
	m->flow.sport = in.dport;
	m->flow.dport = in.sport;
	m->flow.proto = nh;
	m->flow.flowlabel = 0;
	m->frag = frag;
	return 1;
}

/* Upper layer: find the ports (or the quoted flow of an ICMP error). */
static __always_inline int xe_parse_l4(void *data, void *data_end, struct xe_meta *m)
{
	__u32 end = m->l2_len + m->l3_len;
	__u32 off = m->l4_off;
	__u8 proto = m->flow.proto;
	__u8 *p;

	if (m->flow.is_v6) {
		int r = xe_walk_ipv6_ext(data, data_end, end, &off, &proto, &m->frag, &m->no_l4);

		if (r != XE_CONTINUE)
			return r;
		m->flow.proto = proto;
	}
	if (m->no_l4)
		return XE_CONTINUE;
	if (off > XE_MAX_OFF)
		return XE_V_DROP_TRUNCATED;
	XE_BOUND(off);
	p = data + off;
	if (proto == IPPROTO_TCP) {
		__u32 doff;

		if (off + 20 > end || (void *)(p + 20) > data_end)
			return XE_V_DROP_TRUNCATED;
		doff = p[12] >> 4;
		if (doff < 5)
			return XE_V_DROP_MALFORMED;
		if (off + doff * 4 > end)
			return XE_V_DROP_TRUNCATED;
		xe_read_ports(p, &m->flow.sport, &m->flow.dport);
		m->tcp_flags = p[13];
	} else if (proto == IPPROTO_UDP) {
		if (off + 8 > end || (void *)(p + 8) > data_end)
			return XE_V_DROP_TRUNCATED;
		xe_read_ports(p, &m->flow.sport, &m->flow.dport);
	} else if (proto == IPPROTO_SCTP) {
		if (off + 12 > end || (void *)(p + 12) > data_end)
			return XE_V_DROP_TRUNCATED;
		xe_read_ports(p, &m->flow.sport, &m->flow.dport);
	} else if ((proto == IPPROTO_ICMP && !m->flow.is_v6) || (proto == XE_ICMPV6 && m->flow.is_v6)) {
		if (off + 8 > end || (void *)(p + 8) > data_end)
			return XE_V_DROP_TRUNCATED;
		if (xe_is_icmp_error(proto, p[0]))
			xe_parse_quoted(data, data_end, off + 8, end, m);
	}
	return XE_CONTINUE;
}

/* IPv4: DIR-24-8, one array read for a prefix up to /24, two for longer
 * ones. Returns the entry (0: no route). */
static __always_inline __u32 xe_route_lookup_v4(__u32 dst_be)
{
	__u32 dst = bpf_ntohl(dst_be);
	__u32 key = dst >> 16;
	struct xe_dir_chunk *c = bpf_map_lookup_elem(&xe_tbl24, &key);
	__u32 v;

	if (!c)
		return 0;
	v = *(volatile __u32 *)&c->e[(dst >> 8) & 0xff];
	if (!(v & XE_DIR_CHUNK))
		return v;
	key = v & XE_DIR_CHUNK_MASK;
	c = bpf_map_lookup_elem(&xe_tbl8, &key);
	return c ? *(volatile __u32 *)&c->e[dst & 0xff] : 0;
}

/* The home slot of an IPv6 search entry (dataplane/src/v6slots.rs computes
 * the same): a multiplicative hash of the length and the masked address. */
static __always_inline __u32 xe_v6_home(__u32 len, __u64 hi, __u64 lo)
{
	__u64 h = ((__u64)len + 1) * XE_V6_MUL;

	h = (h ^ hi) * XE_V6_MUL;
	h = (h ^ lo) * XE_V6_MUL;
	h ^= h >> 29;
	return (h * XE_V6_MUL) >> (64 - v6_slot_bits);
}

#define XE_V6_NONE (-1L)
#define XE_V6_ON (-2L)
/* Slots from an entry's home probed inline, before the call. */
#define XE_V6_INLINE 3

/* What slot `at` of the IPv6 slot table says of the entry (want = its state,
 * hi:lo its masked address): its route (a DIR-24-8 entry), XE_V6_NONE (an
 * empty slot: no such entry) or XE_V6_ON (another entry: probe the next
 * slot). */
static __always_inline long xe_v6_probe(__u32 at, __u32 want, __u64 hi, __u64 lo)
{
	const struct xe_v6_slot *sl = bpf_map_lookup_elem(&xe_v6_slots, &at);
	__u32 state;

	if (!sl)
		return XE_V6_NONE;
	state = *(const volatile __u32 *)&sl->state;
	if (state == XE_V6_EMPTY)
		return XE_V6_NONE;
	/* The address after the state (the control plane writes it first): no
	 * load moves above this one. */
	asm volatile("" ::: "memory");
	if (state == want && sl->hi == hi && sl->lo == lo)
		return *(const volatile __u32 *)&sl->route;
	return XE_V6_ON;
}

/* The probes past the first XE_V6_INLINE slots from an entry's home, from
 * `at`: a function of its own, so the verifier checks this loop once rather
 * than at every level of the search (most entries sit in the first slots,
 * looked at inline). */
__attribute__((noinline)) long xe_v6_find_on(__u32 at, __u32 want, __u64 hi, __u64 lo)
{
	for (int p = XE_V6_INLINE; p < XE_V6_PROBES; p++, at++) {
		long v = xe_v6_probe(at, want, hi, lo);

		if (v != XE_V6_ON)
			return v;
	}
	return XE_V6_NONE;
}

/* IPv6: binary search on the prefix lengths routes have
 * (dataplane/src/lensearch.rs), one slot-table search per level: a hit (a
 * route or a marker) turns to longer lengths and holds the best route so
 * far, a miss to shorter ones. Returns the best route as a DIR-24-8 entry
 * (0: no route). */
static __always_inline __u32 xe_route_lookup_v6(const __u32 *dst)
{
	const struct xe_v6_lens *s;
	__u32 zero = 0, set, lo = 0, hi, best = 0;
	__u64 a_hi, a_lo;

	s = bpf_map_lookup_elem(&xe_v6_lens, &zero);
	if (!s)
		return 0;
	a_hi = (__u64)bpf_ntohl(dst[0]) << 32 | bpf_ntohl(dst[1]);
	a_lo = (__u64)bpf_ntohl(dst[2]) << 32 | bpf_ntohl(dst[3]);
	set = *(const volatile __u32 *)&s->active & 1;
	hi = s->count[set];
	for (int i = 0; i < XE_V6_STEPS && lo < hi; i++) {
		__u32 mid = (lo + hi) >> 1;
		__u64 m_hi = a_hi, m_lo = a_lo;
		__u32 len, at;
		long v;

		/* Keeps the bound on mid itself (not folded into lo + hi), where
		 * the verifier can see it. */
		asm volatile("" : "+r"(mid));
		if (mid >= XE_V6_LENS)
			break;
		len = ((const __u8 *)s->len[set])[mid];
		if (len < 64) {
			m_hi = len ? m_hi & (~0ULL << (64 - len)) : 0;
			m_lo = 0;
		} else if (len < 128) {
			m_lo = len > 64 ? m_lo & (~0ULL << (128 - len)) : 0;
		}
		at = xe_v6_home(len, m_hi, m_lo);
		/* The first slots inline (95% of entries sit within them at half
		 * load), the rest in a call. */
		v = XE_V6_ON;
#pragma unroll
		for (__u32 p = 0; p < XE_V6_INLINE && v == XE_V6_ON; p++)
			v = xe_v6_probe(at + p, XE_V6_LIVE + len, m_hi, m_lo);
		if (v == XE_V6_ON)
			v = xe_v6_find_on(at + XE_V6_INLINE, XE_V6_LIVE + len, m_hi, m_lo);
		if (v == XE_V6_NONE) {
			hi = mid;
			continue;
		}
		if (((__u32)v >> XE_DIR_KIND_SHIFT) & 0xff)
			best = (__u32)v;
		lo = mid + 1;
	}
	return best;
}

/* The route for the destination; kind 0 when there is none. */
static __always_inline void xe_route_lookup(const struct xe_meta *m, struct xe_route *rt)
{
	__u32 v = m->flow.is_v6 ? xe_route_lookup_v6(m->flow.dst) : xe_route_lookup_v4(m->flow.dst[0]);

	rt->group = v & XE_DIR_GROUP_MASK;
	rt->kind = v >> XE_DIR_KIND_SHIFT;
	rt->flags = (v & XE_DIR_PIN) ? XE_ROUTE_PIN : 0;
}

/* A group entry in one aligned 8-byte load. The control plane points a group
 * at a new slot window with one 8-byte store, so base, size and mode always
 * come from the same version; separate loads could pair an old size with a
 * new base and index past the new window (tests/object_reads.rs checks the
 * compiled program keeps this one load). */
static __always_inline struct xe_group xe_group_load(const struct xe_group *p)
{
	union {
		__u64 word;
		struct xe_group g;
	} u;

	u.word = *(const volatile __u64 *)p;
	return u.g;
}

/* Mark a resilient bucket busy for the control plane's idle timer. */
static __always_inline void xe_stamp(__u32 slot)
{
	__u32 *used;
	__u32 now;

	if (stamp_mode == 2)
		return;
	used = bpf_map_lookup_elem(&xe_slot_used, &slot);
	if (!used)
		return;
	/* jiffies: the verifier inlines this helper into one load, where the
	 * nanosecond clocks are a call (~17 ns of ~110 here). | 1 keeps 0
	 * for "never used". */
	now = (__u32)bpf_jiffies64() | 1;
	if (stamp_mode == 1 || *used != now)
		*used = now;
}

/* Rewrite L2 (new MACs, the egress VLAN tag if any) and decrement TTL. */
static __always_inline int xe_rewrite(struct xdp_md *ctx, const struct xe_meta *m, const struct xe_nexthop *nh)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 new_l2 = nh->vlan ? sizeof(struct ethhdr) + sizeof(struct xe_vlan_hdr) : sizeof(struct ethhdr);
	__u32 l2 = m->l2_len;
	int delta = (int)l2 - (int)new_l2;
	struct ethhdr *eth;

	if (l2 > 22)
		return XE_V_DROP_MALFORMED;
	XE_BOUND(l2);
	if (m->flow.is_v6) {
		struct ipv6hdr *ip6h = data + l2;

		if ((void *)(ip6h + 1) > data_end)
			return XE_V_DROP_TRUNCATED;
		xe_ipv6_decrease_hop_limit(ip6h);
	} else {
		struct iphdr *iph = data + l2;

		if ((void *)(iph + 1) > data_end)
			return XE_V_DROP_TRUNCATED;
		xe_ipv4_decrease_ttl(iph);
	}
	if (delta && bpf_xdp_adjust_head(ctx, delta))
		return XE_V_DROP_TRUNCATED;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)eth + sizeof(struct ethhdr) + sizeof(struct xe_vlan_hdr) > data_end)
		return XE_V_DROP_TRUNCATED;
	__builtin_memcpy(eth->h_dest, nh->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, nh->smac, ETH_ALEN);
	if (nh->vlan) {
		struct xe_vlan_hdr *vh = (void *)(eth + 1);

		eth->h_proto = bpf_htons(ETH_P_8021Q);
		vh->tci = bpf_htons(nh->vlan);
		vh->proto = m->flow.is_v6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP);
	} else {
		eth->h_proto = m->flow.is_v6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP);
	}
	return XE_V_FORWARD;
}

/* Admission: is the frame the kernel's to route from the port it came in
 * by? The port must be set up by the control plane (xe_inports), the frame
 * addressed to the port's MAC (the kernel drops a frame to another unicast
 * MAC as PACKET_OTHERHOST) and untagged (a tag belongs to a VLAN device,
 * with switches of its own, or to none). One array read, no call (a hash
 * lookup only for an ifindex past the array); *fwd gets the port's
 * forwarding switches. */
static __always_inline int xe_admit(struct xdp_md *ctx, void *data, __u8 *fwd)
{
	const struct ethhdr *eth = data;
	union {
		__u64 word;
		struct xe_inport port;
	} u;

	u.word = xe_inport_word(ctx->ingress_ifindex);
	if (!(u.port.flags & XE_INPORT_ON))
		return XE_V_PASS_NOT_PORT;
	/* The destination MAC as 4 + 2 bytes (through `data`: struct ethhdr is
	 * packed, its fields would be read byte by byte). */
	if (*(const __u32 *)data != *(const __u32 *)&u.port.mac[0] ||
	    *(const __u16 *)(data + 4) != *(const __u16 *)&u.port.mac[4])
		return XE_V_PASS_OTHERHOST;
	if (xe_is_vlan(eth->h_proto))
		return XE_V_PASS_VLAN;
	*fwd = u.port.flags;
	return XE_CONTINUE;
}

/* The whole decision. Fills d; on XE_V_FORWARD the frame is rewritten, or
 * left as it came and *steer set when the AF_XDP engine sends it. */
static __always_inline int xe_decide(struct xdp_md *ctx, struct xe_decision *d, __u8 *steer)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct xe_meta m = {};
	struct xe_config *cfg;
	struct xe_route rt = {};
	struct xe_group *gp, grp;
	struct xe_nexthop *nh = NULL;
	union xe_pin_key pin_key;
	struct xe_pin_ref pin = {.way = XE_PIN_WAYS};
	__u32 *nhid, *genp, slot, zero = 0, fields, now = 0, pin_nh = 0, gen = 0;
	int pin_hit = 0, pin_stale = 0;
	__u8 state, fwd = XE_INPORT_FWD_V4 | XE_INPORT_FWD_V6;
	__be16 proto;
	int r;

	r = xe_parse_eth(data, data_end);
	if (r != XE_CONTINUE)
		return r;
	if (!admit_any) {
		r = xe_admit(ctx, data, &fwd);
		if (r != XE_CONTINUE)
			return r;
	}
	r = xe_parse_l2(data, data_end, &proto, &m.l2_len);
	if (r != XE_CONTINUE)
		return r;
	/* With forwarding off the kernel delivers locally and answers the
	 * rest, even what a blackhole route would drop, with an ICMP error. */
	if (proto == bpf_htons(ETH_P_IP)) {
		if (!(fwd & XE_INPORT_FWD_V4))
			return XE_V_PASS_NO_FORWARDING;
		r = xe_parse_ipv4(data, data_end, &m);
		if (r == XE_CONTINUE)
			r = xe_classify_ipv4(&m);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		if (!(fwd & XE_INPORT_FWD_V6))
			return XE_V_PASS_NO_FORWARDING;
		r = xe_parse_ipv6(data, data_end, &m);
		if (r == XE_CONTINUE)
			r = xe_classify_ipv6(&m);
	} else {
		return XE_V_PASS_NOT_IP;
	}
	if (r != XE_CONTINUE)
		return r;

	xe_route_lookup(&m, &rt);
	if (rt.kind == XE_RT_LOCAL)
		return XE_V_PASS_LOCAL;
	if (rt.kind == XE_RT_BLACKHOLE)
		return XE_V_DROP_BLACKHOLE;
	if (rt.kind != XE_RT_UNICAST)
		return XE_V_PASS_NO_ROUTE;
	/* The kernel routes an IPv4 packet only from a source it validates
	 * (fib_validate_source): never from one of its own or broadcast
	 * addresses, nor (when it checks the route back) from under a refused
	 * or blackhole route; with rp_filter on it checks the reverse path,
	 * which the program does not. One more DIR-24-8 lookup. */
	if (!m.flow.is_v6) {
		__u8 sk = xe_route_lookup_v4(m.flow.src[0]) >> XE_DIR_KIND_SHIFT;

		if ((fwd & XE_INPORT_RPF) || sk == XE_RT_LOCAL || sk == XE_RT_BLACKHOLE ||
		    sk == XE_RT_PROHIBIT)
			return XE_V_PASS_SOURCE;
	}
	if (m.ttl <= 1)
		return XE_V_PASS_TTL;

	r = xe_parse_l4(data, data_end, &m);
	if (r != XE_CONTINUE)
		return r;
	cfg = bpf_map_lookup_elem(&xe_config, &zero);
	if (!cfg)
		return XE_V_PASS_NEXTHOP_DOWN;
	fields = m.frag ? (cfg->hash_fields ?: XE_HASH_POLICY_L4) & ~XE_HASH_PORTS : cfg->hash_fields;

	d->group = rt.group;
	gp = bpf_map_lookup_elem(&xe_groups, &rt.group);
	if (!gp)
		return XE_V_PASS_NEXTHOP_DOWN;
	grp = xe_group_load(gp);
	if (grp.mode == XE_GROUP_UNUSED || grp.size == 0)
		return XE_V_PASS_NEXTHOP_DOWN;
	/* A flow to a pinned route keeps the path of its entry while that is
	 * valid (the bucket is then not looked at, nor stamped). */
	if (rt.flags & XE_ROUTE_PIN) {
		now = bpf_jiffies64();
		genp = bpf_map_lookup_elem(&xe_group_gen, &rt.group);
		if (genp)
			gen = *(volatile __u32 *)genp;
		if (xe_pin_lookup(&pin_key, &m.flow, fields, pin_seed, pin_set_bits, &pin)) {
			const struct xe_pin *p = xe_pin_at(m.flow.is_v6, &pin);

			if (p)
				nh = xe_pin_nexthop(p, rt.group, gen, m.flow.proto, cfg, now, &pin_nh, &pin_stale);
			/* Rewritten for another flow meanwhile: not this flow's. */
			if (!xe_pin_same(m.flow.is_v6, &pin)) {
				nh = NULL;
				pin_stale = 0;
				pin.way = XE_PIN_WAYS;
			}
		}
		if (nh) {
			d->nexthop = pin_nh;
			pin_hit = 1;
			goto chosen;
		}
	}
hash:
	/* A pinned flow's hit needs no hash. */
	d->hash = xe_flow_hash(&m.flow, cfg->seed, fields, cfg->flags);
	/* The same bucket as hash % size; a mask where size is a power of two
	 * (resilient tables usually are) saves a division. */
	if (!(grp.size & (grp.size - 1)))
		d->bucket = d->hash & (grp.size - 1);
	else
		d->bucket = d->hash % grp.size;
	slot = grp.base + d->bucket;
	nhid = bpf_map_lookup_elem(&xe_slots, &slot);
	if (!nhid)
		return XE_V_PASS_NEXTHOP_DOWN;
	if (grp.mode == XE_GROUP_RESILIENT)
		xe_stamp(slot);
	d->nexthop = *(volatile __u32 *)nhid;
	nh = bpf_map_lookup_elem(&xe_nexthops, &d->nexthop);
	if (!nh)
		return XE_V_PASS_NEXTHOP_DOWN;
chosen:
	/* The state bits are the one field changed in place: read them once. */
	state = *(volatile __u8 *)&nh->state;
	if ((state & XE_NH_USABLE) != XE_NH_USABLE) {
		/* A pinned flow whose next hop died is hashed again (once). */
		if (pin_hit) {
			pin_hit = 0;
			goto hash;
		}
		return XE_V_PASS_NEXTHOP_DOWN;
	}
	if (m.l3_len > nh->mtu)
		return XE_V_PASS_MTU;
	d->ifindex = nh->ifindex;
	if (!(state & XE_NH_TXPORT))
		return XE_V_PASS_NO_TXPORT;
	/* The engine sends from ports it has sockets on; to any other port the
	 * frame is forwarded here. */
	if (steer_xsk && bpf_map_lookup_elem(&xe_xsk_ports, &nh->ifindex)) {
		*steer = 1;
		return XE_V_FORWARD;
	}
	if (rt.flags & XE_ROUTE_PIN)
		d->pin = xe_pin_note(&pin_key, m.flow.is_v6, &pin, pin_hit, pin_stale, nh->path, d->nexthop, gen,
				     m.tcp_flags, now, count_packets);
	return xe_rewrite(ctx, &m, nh);
}

static __always_inline void xe_count(void *map, __u32 key, __u64 bytes)
{
	struct xe_counter *c = bpf_map_lookup_elem(map, &key);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

/* The engine's socket for the frame's port and queue; with none, the
 * kernel forwards the frame itself (unrewritten, as it came). */
static __always_inline int xe_steer(struct xdp_md *ctx)
{
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 queue = ctx->rx_queue_index;
	__u32 *port = bpf_map_lookup_elem(&xe_xsk_ports, &ifindex);

	if (!port || *port >= XE_MAX_XSK_PORTS || queue >= XE_MAX_QUEUES)
		return XDP_PASS;
	return bpf_redirect_map(&xe_xsks, *port * XE_MAX_QUEUES + queue, XDP_PASS);
}

SEC("xdp")
int xdp_ecmp(struct xdp_md *ctx)
{
	__u64 bytes = ctx->data_end - ctx->data;
	struct xe_decision d = {};
	__u32 zero = 0;
	__u8 steer = 0;
	int action;

	d.verdict = xe_decide(ctx, &d, &steer);
	if (steer)
		action = xe_steer(ctx);
	else if (d.verdict == XE_V_FORWARD) {
		/* XDP_PASS if the port is not in the map although the next hop
		 * says so (it left since the control plane wrote the next hop):
		 * the frame is already rewritten, the kernel then drops it. It
		 * is counted as such, not as forwarded. */
		action = bpf_redirect_map(&xe_txports, d.ifindex, XDP_PASS);
		if (action != XDP_REDIRECT)
			d.verdict = XE_V_PASS_NO_TXPORT;
	} else if (d.verdict >= XE_V_DROP_TRUNCATED)
		action = XDP_DROP;
	else
		action = XDP_PASS;

	if (count_packets && !steer) {
		xe_count(&xe_verdicts, d.verdict, bytes);
		if (d.verdict == XE_V_FORWARD)
			xe_count(&xe_nh_stats, d.nexthop, bytes);
	}
	if (trace_decisions) {
		struct xe_decision *t = bpf_map_lookup_elem(&xe_trace, &zero);

		d.action = action;
		if (t)
			*t = d;
	}
	return action;
}

/* Run once by BPF_PROG_TEST_RUN (never attached): records the stamp clock. */
SEC("xdp")
int xe_clock(struct xdp_md *ctx)
{
	xe_clock_jiffies = bpf_jiffies64();
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
