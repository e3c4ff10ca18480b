/* xe_pin.h: flow pinning's pure parts: the flow-table keys of a flow and when an entry has aged out (no BPF helpers: also compiled for the host). */
#ifndef XE_PIN_H
#define XE_PIN_H

#include "xe_abi.h"

#define XE_TCP_FIN 0x01
#define XE_TCP_RST 0x04
#define XE_PROTO_TCP 6

/* The flow-table key of `f` under the hash fields `fields` (0: L3+L4): the
 * fields the hash leaves out zeroed, so every packet the hash takes for
 * one flow finds one entry. */
static __always_inline void xe_pin_key(struct xe_flow *k, const struct xe_flow *f, __u32 fields)
{
	int i;

	if (!fields)
		fields = XE_HASH_POLICY_L4;
#pragma unroll
	for (i = 0; i < 4; i++) {
		k->src[i] = (fields & XE_HASH_SRC_IP) ? f->src[i] : 0;
		k->dst[i] = (fields & XE_HASH_DST_IP) ? f->dst[i] : 0;
	}
	k->flowlabel = (fields & XE_HASH_FLOWLABEL) ? f->flowlabel : 0;
	k->sport = (fields & XE_HASH_SRC_PORT) ? f->sport : 0;
	k->dport = (fields & XE_HASH_DST_PORT) ? f->dport : 0;
	k->proto = (fields & XE_HASH_IP_PROTO) ? f->proto : 0;
	k->is_v6 = f->is_v6;
	k->pad[0] = 0;
	k->pad[1] = 0;
}

/* The IPv4 flow-table key of `f` (an IPv4 flow) under `fields`, as
 * xe_pin_key. */
static __always_inline void xe_pin_key4(struct xe_flow4 *k, const struct xe_flow *f, __u32 fields)
{
	if (!fields)
		fields = XE_HASH_POLICY_L4;
	k->src = (fields & XE_HASH_SRC_IP) ? f->src[0] : 0;
	k->dst = (fields & XE_HASH_DST_IP) ? f->dst[0] : 0;
	k->sport = (fields & XE_HASH_SRC_PORT) ? f->sport : 0;
	k->dport = (fields & XE_HASH_DST_PORT) ? f->dport : 0;
	k->proto = (fields & XE_HASH_IP_PROTO) ? f->proto : 0;
	k->pad[0] = 0;
	k->pad[1] = 0;
	k->pad[2] = 0;
}

/* The multiplier of the flow tables' set index (2^64 / the golden ratio). */
#define XE_PIN_MUL 0x9e3779b97f4a7c15ULL

/* The set of a flow-table key of `n` 32-bit words (4 for struct xe_flow4,
 * 11 for struct xe_flow: an odd last word is taken with a zero) in a table
 * of 2^bits sets: a multiplicative hash keyed by the table's seed,
 * two words a step. dataplane/src/pinsets.rs computes the same. */
static __always_inline __u32 xe_pin_set_of(const __u32 *w, int n, __u64 seed, __u32 bits)
{
	__u64 h = seed;
	int i;

#pragma unroll
	for (i = 0; i < n; i += 2)
		h = (h ^ ((__u64)w[i] << 32 | (i + 1 < n ? w[i + 1] : 0))) * XE_PIN_MUL;
	h ^= h >> 29;
	return (h * XE_PIN_MUL) >> (64 - bits);
}

/* Whether an entry last seen at `seen` has aged out at `now` (jiffies,
 * modulo 2^32), by the timeout of its kind. `proto` is the flow's own
 * protocol (the key's may be zeroed). */
static __always_inline int xe_pin_expired(const __u32 timeout[XE_PIN_T_COUNT], __u8 proto, __u32 flags, __u32 seen,
					  __u32 now)
{
	__u32 t;

	if (flags & XE_PIN_CLOSING)
		t = timeout[XE_PIN_T_CLOSING];
	else if (proto == XE_PROTO_TCP)
		t = timeout[XE_PIN_T_TCP];
	else
		t = timeout[XE_PIN_T_OTHER];
	return t && now - seen > t;
}

#endif
