/* xe_flows.h: flow pinning over the maps: a pinned flow's next hop from its entry (the group's generation, else its membership), and what a forwarded packet does to its entry and the counters. */
#ifndef XE_FLOWS_H
#define XE_FLOWS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "xe_abi.h"
#include "xe_maps.h"
#include "xe_pin.h"

/* Keeps a map call of one family's table apart from the other's: the
 * compiler would otherwise merge the two calls into one with either map,
 * which the verifier can no longer inline or call directly (an indirect
 * call through the map's ops: ~25 ns more per hit). The empty asm differs
 * per family, so the calls before it cannot be merged. */
#define XE_FAMILY_APART(v, family) asm volatile("/* " family " */" : "+r"(v))

/* A flow's key in its family's table (xe_flows4 or xe_flows6). */
union xe_pin_key {
	struct xe_flow k6;
	struct xe_flow4 k4;
};

/* The flow's key under the hash fields `fields`, and its entry (NULL:
 * none). One call site per table, so the verifier inlines each lookup. */
static __always_inline struct xe_pin *xe_pin_lookup(union xe_pin_key *key, const struct xe_flow *f, __u32 fields)
{
	struct xe_pin *p;

	if (f->is_v6) {
		xe_pin_key(&key->k6, f, fields);
		p = bpf_map_lookup_elem(&xe_flows6, &key->k6);
		XE_FAMILY_APART(p, "ipv6");
	} else {
		xe_pin_key4(&key->k4, f, fields);
		p = bpf_map_lookup_elem(&xe_flows4, &key->k4);
		XE_FAMILY_APART(p, "ipv4");
	}
	return p;
}

static __always_inline void xe_pin_count(__u32 event)
{
	__u64 *c = bpf_map_lookup_elem(&xe_pin_stats, &event);

	if (c)
		*c += 1;
}

/* An entry's next hop and generation, one aligned 8-byte word. */
union xe_nhgen {
	__u64 word;
	struct {
		__u32 nexthop;
		__u32 gen;
	} f;
};

/* A pinned flow's next hop: the one its entry's path has now, if the entry
 * has not aged out and the path is still a live member of the route's
 * group (known without a lookup while the group's generation `gen` is the
 * entry's); else NULL (the flow is hashed again, as it is when the next
 * hop turns out unusable). *stale is set when the entry's next hop and
 * generation are to be rewritten. */
static __always_inline struct xe_nexthop *xe_pin_nexthop(const struct xe_pin *p, __u32 group, __u32 gen, __u8 proto,
							 const struct xe_config *cfg, __u32 now, __u32 *nhid,
							 int *stale)
{
	struct xe_pin_member mk = {.group = group, .path = p->path};
	union xe_nhgen u;
	__u32 *id;

	if (xe_pin_expired(cfg->pin_timeout, proto, p->flags, p->seen, now))
		return NULL;
	u.word = *(const volatile __u64 *)&p->nexthop;
	if (gen && u.f.gen == gen) {
		*nhid = u.f.nexthop;
	} else {
		id = bpf_map_lookup_elem(&xe_pin_members, &mk);
		if (!id)
			return NULL;
		*nhid = *id;
		*stale = 1;
	}
	return bpf_map_lookup_elem(&xe_nexthops, nhid);
}

/* After a pinned route's flow is forwarded by `path`: a RST ends its
 * entry, a hit refreshes it (and a FIN marks it closing), anything else
 * (re)writes it. Returns 1 + the enum xe_pin_event, 0 for a RST of a flow
 * without an entry (xe_decision.pin). Writes (entries and counters) only
 * with `write`: the calc copy of the program writes nothing. */
static __always_inline __u32 xe_pin_note(const union xe_pin_key *key, int v6, struct xe_pin *p, int hit,
					 int stale, __u32 path, __u32 nhid, __u32 gen, __u8 tcp_flags, __u32 now,
					 int write)
{
	union xe_nhgen u = {.f = {.nexthop = nhid, .gen = gen}};
	__u32 event;

	if (tcp_flags & XE_TCP_RST) {
		if (!p)
			return 0;
		event = XE_PIN_E_ENDED;
		if (write && v6) {
			long r = bpf_map_delete_elem(&xe_flows6, &key->k6);

			XE_FAMILY_APART(r, "ipv6");
		} else if (write) {
			long r = bpf_map_delete_elem(&xe_flows4, &key->k4);

			XE_FAMILY_APART(r, "ipv4");
		}
	} else if (hit) {
		event = XE_PIN_E_HIT;
		if (write) {
			if (p->seen != now)
				p->seen = now;
			if ((tcp_flags & XE_TCP_FIN) && !(p->flags & XE_PIN_CLOSING))
				p->flags |= XE_PIN_CLOSING;
			if (stale)
				*(volatile __u64 *)&p->nexthop = u.word;
		}
	} else {
		struct xe_pin e = {
			.path = path,
			.seen = now,
			.nexthop = nhid,
			.gen = gen,
			.flags = (tcp_flags & XE_TCP_FIN) ? XE_PIN_CLOSING : 0,
		};

		event = p ? XE_PIN_E_REPINNED : XE_PIN_E_INSERTED;
		if (write && v6) {
			long r = bpf_map_update_elem(&xe_flows6, &key->k6, &e, BPF_ANY);

			XE_FAMILY_APART(r, "ipv6");
		} else if (write) {
			long r = bpf_map_update_elem(&xe_flows4, &key->k4, &e, BPF_ANY);

			XE_FAMILY_APART(r, "ipv4");
		}
	}
	if (write)
		xe_pin_count(event);
	return 1 + event;
}

#endif
