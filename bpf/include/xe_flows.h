/* xe_flows.h: flow pinning over the maps: a flow's way in its family's set-associative table (found inline, written by a function of its own), its next hop from the entry (the group's generation, else its membership), and what a forwarded packet does to its entry and the counters. */
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

/* 8-byte words of keys and entries, read where they alias other types. */
typedef __u64 __attribute__((may_alias)) xe_u64a;

/* A flow's key in its family's table (xe_flows4 or xe_flows6), as words
 * for the set index and the key compare. */
union xe_pin_key {
	struct xe_flow k6;
	struct xe_flow4 k4;
	__u32 w[11];
} __attribute__((aligned(8)));

/* Where a flow's entry is or goes: its set (index and value) and the way
 * holding it (XE_PIN_WAYS: none) with the way's seq when found. */
struct xe_pin_ref {
	void *sp; /* the set, a value of the family's table (NULL: none) */
	__u32 set;
	__u32 way;
	__u32 seq;
};

static __always_inline int xe_pin_eq4(const struct xe_flow4 *a, const struct xe_flow4 *b)
{
	const xe_u64a *x = (const xe_u64a *)a, *y = (const xe_u64a *)b;

	return x[0] == y[0] && x[1] == y[1];
}

static __always_inline int xe_pin_eq6(const struct xe_flow *a, const struct xe_flow *b)
{
	const xe_u64a *x = (const xe_u64a *)a, *y = (const xe_u64a *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3] && x[4] == y[4] &&
	       ((const __u32 *)a)[10] == ((const __u32 *)b)[10];
}

/* Per family F (4, 6), over its table MAP of SET entries keyed by KEY:
 *
 * xe_pin_find##F: the way of set `s` that holds `k` into *r (way and seq);
 * 0 when none does. A way being rewritten, or rewritten while its key was
 * read, holds no flow for the reader. Inline: a hit makes no call.
 *
 * xe_pin_put##F: writes entry `e` for `k` into set `set`, at way `at` if it
 * still has seq `seq` (the way a lookup found the flow in), else (at ==
 * XE_PIN_WAYS) into a free way or the one seen longest ago; `e` NULL frees
 * way `at`. The way is taken from even seq to odd with a compare-and-swap,
 * rewritten, and given back 2 up: of two writers one writes, the other
 * leaves it (its flow is written by a later packet); a set another writer
 * is in is left alone. A function of its own (a call on a new flow's first
 * packet only), verified once. */
#define XE_PIN_FAMILY(F, MAP, SET, KEY)                                                                        \
	static __always_inline int xe_pin_find##F(const SET *s, const KEY *k, struct xe_pin_ref *r)           \
	{                                                                                                      \
		_Pragma("unroll") for (__u32 i = 0; i < XE_PIN_WAYS; i++)                                      \
		{                                                                                              \
			__u32 seq = *(const volatile __u32 *)&s->way[i].seq;                                   \
                                                                                                               \
			if (seq & 1)                                                                           \
				continue;                                                                      \
			asm volatile("" ::: "memory");                                                         \
			if (!s->way[i].used || !xe_pin_eq##F(&s->way[i].key, k))                               \
				continue;                                                                      \
			asm volatile("" ::: "memory");                                                         \
			if (*(const volatile __u32 *)&s->way[i].seq != seq)                                    \
				return 0;                                                                      \
			r->way = i;                                                                            \
			r->seq = seq;                                                                          \
			return 1;                                                                              \
		}                                                                                              \
		return 0;                                                                                      \
	}                                                                                                      \
                                                                                                               \
	__attribute__((noinline)) int xe_pin_put##F(__u32 set, __u32 at, __u32 seq, const KEY *k,            \
						    const struct xe_pin *e)                                    \
	{                                                                                                      \
		SET *s = bpf_map_lookup_elem(&MAP, &set);                                                      \
		__u32 age = 0;                                                                                 \
                                                                                                               \
		if (!s || !k)                                                                                  \
			return 0;                                                                              \
		if (at >= XE_PIN_WAYS) {                                                                       \
			if (!e)                                                                                \
				return 0;                                                                      \
			at = 0;                                                                                \
			_Pragma("unroll") for (__u32 i = 0; i < XE_PIN_WAYS; i++)                              \
			{                                                                                      \
				__u32 a;                                                                       \
                                                                                                               \
				if (*(const volatile __u32 *)&s->way[i].seq & 1)                               \
					return 0;                                                              \
				if (!*(const volatile __u32 *)&s->way[i].used) {                               \
					at = i;                                                                \
					break;                                                                 \
				}                                                                              \
				a = e->seen - *(const volatile __u32 *)&s->way[i].pin.seen;                    \
				if (a > age) {                                                                 \
					age = a;                                                               \
					at = i;                                                                \
				}                                                                              \
			}                                                                                      \
			seq = *(const volatile __u32 *)&s->way[at & (XE_PIN_WAYS - 1)].seq;                    \
		}                                                                                              \
		at &= XE_PIN_WAYS - 1;                                                                         \
		if ((seq & 1) || __sync_val_compare_and_swap(&s->way[at].seq, seq, seq + 1) != seq)           \
			return 0;                                                                              \
		if (e) {                                                                                       \
			s->way[at].key = *k;                                                                   \
			s->way[at].pin = *e;                                                                   \
		}                                                                                              \
		s->way[at].used = !!e;                                                                         \
		__sync_fetch_and_add(&s->way[at].seq, 1);                                                      \
		return 1;                                                                                      \
	}

XE_PIN_FAMILY(4, xe_flows4, struct xe_pin_set4, struct xe_flow4)
XE_PIN_FAMILY(6, xe_flows6, struct xe_pin_set6, struct xe_flow)

/* The flow's key under the hash fields `fields` and its set in a table of
 * 2^bits sets keyed by `seed` into *r, and whether the set holds its entry
 * (then in *r). One lookup site per table, so the verifier inlines each. */
static __always_inline int xe_pin_lookup(union xe_pin_key *key, const struct xe_flow *f, __u32 fields, __u64 seed,
					 __u32 bits, struct xe_pin_ref *r)
{
	r->way = XE_PIN_WAYS;
	if (f->is_v6) {
		const struct xe_pin_set6 *s;

		xe_pin_key(&key->k6, f, fields);
		/* The key from the stack, word by word: built and hashed at
		 * once, it would take more registers than there are (spills
		 * past the stack's 512 bytes). */
		asm volatile("" ::: "memory");
		r->set = xe_pin_set_of(key->w, 11, seed, bits);
		s = bpf_map_lookup_elem(&xe_flows6, &r->set);
		XE_FAMILY_APART(s, "ipv6");
		r->sp = (void *)s;
		return s && xe_pin_find6(s, &key->k6, r);
	} else {
		const struct xe_pin_set4 *s;

		xe_pin_key4(&key->k4, f, fields);
		r->set = xe_pin_set_of(key->w, 4, seed, bits);
		s = bpf_map_lookup_elem(&xe_flows4, &r->set);
		XE_FAMILY_APART(s, "ipv4");
		r->sp = (void *)s;
		return s && xe_pin_find4(s, &key->k4, r);
	}
}

/* The entry a lookup found, where it is. */
static __always_inline struct xe_pin *xe_pin_at(int v6, const struct xe_pin_ref *r)
{
	__u32 at = r->way & (XE_PIN_WAYS - 1);

	if (v6) {
		struct xe_pin_set6 *s = r->sp;

		return s ? &s->way[at].pin : NULL;
	} else {
		struct xe_pin_set4 *s = r->sp;

		return s ? &s->way[at].pin : NULL;
	}
}

/* Whether the way a lookup found still has the seq it was found with: what
 * was read of its entry since is the flow's. */
static __always_inline int xe_pin_same(int v6, const struct xe_pin_ref *r)
{
	__u32 at = r->way & (XE_PIN_WAYS - 1);

	asm volatile("" ::: "memory");
	if (v6) {
		struct xe_pin_set6 *s = r->sp;

		return s && *(const volatile __u32 *)&s->way[at].seq == r->seq;
	} else {
		struct xe_pin_set4 *s = r->sp;

		return s && *(const volatile __u32 *)&s->way[at].seq == r->seq;
	}
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
 * (re)writes it. `r` is what the lookup found (r->way XE_PIN_WAYS: no
 * entry). Returns 1 + the enum xe_pin_event, 0 for a RST of a flow without
 * an entry (xe_decision.pin). Writes (entries and counters) only with
 * `write`: the calc copy of the program writes nothing. A write left
 * undone (its way or set was being rewritten) is not counted: the counters
 * say what the table did. */
static __always_inline __u32 xe_pin_note(const union xe_pin_key *key, int v6, const struct xe_pin_ref *r, int hit,
					 int stale, __u32 path, __u32 nhid, __u32 gen, __u8 tcp_flags, __u32 now,
					 int write)
{
	union xe_nhgen u = {.f = {.nexthop = nhid, .gen = gen}};
	int found = r->way < XE_PIN_WAYS, done = 1;
	__u32 event;

	if (tcp_flags & XE_TCP_RST) {
		if (!found)
			return 0;
		event = XE_PIN_E_ENDED;
		if (write && v6)
			done = xe_pin_put6(r->set, r->way, r->seq, &key->k6, NULL);
		else if (write)
			done = xe_pin_put4(r->set, r->way, r->seq, &key->k4, NULL);
	} else if (hit) {
		struct xe_pin *p = xe_pin_at(v6, r);

		event = XE_PIN_E_HIT;
		/* In place, and only what changed (a busy flow's entry is
		 * written once a jiffy, not per packet), while the way holds
		 * the flow. */
		if (write && p && xe_pin_same(v6, r)) {
			if (p->seen != now)
				p->seen = now;
			if ((tcp_flags & XE_TCP_FIN) && !(p->flags & XE_PIN_CLOSING))
				__sync_fetch_and_or(&p->flags, XE_PIN_CLOSING);
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
		__u32 at = found ? r->way : XE_PIN_WAYS;

		event = found ? XE_PIN_E_REPINNED : XE_PIN_E_INSERTED;
		if (write && v6)
			done = xe_pin_put6(r->set, at, r->seq, &key->k6, &e);
		else if (write)
			done = xe_pin_put4(r->set, at, r->seq, &key->k4, &e);
	}
	if (write && done)
		xe_pin_count(event);
	return 1 + event;
}

#endif
