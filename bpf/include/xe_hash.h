/* xe_hash.h: the flow hash, a pure function (no BPF helpers) that the XDP program and host tests both compile. */
#ifndef XE_HASH_H
#define XE_HASH_H

#include "xe_abi.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/*
 * HalfSipHash-1-3 (the kernel's hsiphash on 32-bit machines) keyed with the
 * 64-bit per-host seed, over 32-bit words:
 *   IPv4: src, dst, ports, proto|flowlabel      (4 words)
 *   IPv6: src[4], dst[4], ports, proto|flowlabel (10 words)
 * Words are addresses as loaded from the packet in native order,
 * ports = sport << 16 | dport, and proto | flowlabel << 8.
 * Fields not in `fields` are zeroed first; with XE_CFG_SYMMETRIC the two
 * addresses and the two ports are each put in ascending order, so both
 * directions of a flow hash alike. Chosen over jhash2 and unkeyed folds by
 * scripts/hash-choice.sh: avalanche at the level of a random function, and a
 * 64-bit key, so nobody outside can craft flows that all land on one member;
 * it costs ~8 ns per IPv4 flow on the host against ~4 ns for jhash2.
 */

#define XE_HSIP_ROTL(x, b) (((x) << (b)) | ((x) >> (32 - (b))))

#define XE_HSIP_ROUND(v0, v1, v2, v3)                                          \
	do {                                                                   \
		v0 += v1;                                                      \
		v1 = XE_HSIP_ROTL(v1, 5);                                      \
		v1 ^= v0;                                                      \
		v0 = XE_HSIP_ROTL(v0, 16);                                     \
		v2 += v3;                                                      \
		v3 = XE_HSIP_ROTL(v3, 8);                                      \
		v3 ^= v2;                                                      \
		v0 += v3;                                                      \
		v3 = XE_HSIP_ROTL(v3, 7);                                      \
		v3 ^= v0;                                                      \
		v2 += v1;                                                      \
		v1 = XE_HSIP_ROTL(v1, 13);                                     \
		v1 ^= v2;                                                      \
		v2 = XE_HSIP_ROTL(v2, 16);                                     \
	} while (0)

#define XE_HSIP_ABSORB(m)                                                      \
	do {                                                                   \
		__u32 m_ = (m);                                                \
		v3 ^= m_;                                                      \
		XE_HSIP_ROUND(v0, v1, v2, v3);                                 \
		v0 ^= m_;                                                      \
	} while (0)

/* HalfSipHash-1-3 of `n` 32-bit words (n <= 10). */
static __always_inline __u32 xe_hsip_words(const __u32 *w, __u32 n, const __u32 seed[2])
{
	__u32 v0 = seed[0];
	__u32 v1 = seed[1];
	__u32 v2 = 0x6c796765u ^ seed[0];
	__u32 v3 = 0x74656462u ^ seed[1];
	__u32 i;

	for (i = 0; i < 10; i++) {
		if (i >= n)
			break;
		XE_HSIP_ABSORB(w[i]);
	}
	XE_HSIP_ABSORB((n * 4) << 24);
	v2 ^= 0xff;
	XE_HSIP_ROUND(v0, v1, v2, v3);
	XE_HSIP_ROUND(v0, v1, v2, v3);
	XE_HSIP_ROUND(v0, v1, v2, v3);
	return v1 ^ v3;
}

/* Lexicographic compare of two addresses of `n` words: 1 if a > b. */
static __always_inline int xe_addr_gt(const __u32 *a, const __u32 *b, __u32 n)
{
	__u32 i;

	for (i = 0; i < 4; i++) {
		if (i >= n)
			break;
		if (a[i] != b[i])
			return a[i] > b[i];
	}
	return 0;
}

/* The flow hash over addresses of `n` words (a constant after inlining, so
 * every loop unrolls and the stack is addressed statically). */
static __always_inline __u32 xe_flow_hash_n(const struct xe_flow *f, const __u32 seed[2], __u32 fields, __u32 flags,
					     const __u32 n)
{
	__u32 w[10] = {};
	__u32 *src = &w[0];
	__u32 *dst = &w[n];
	__u32 sport, dport, i;

	if (!fields)
		fields = XE_HASH_POLICY_L4;
	for (i = 0; i < 4; i++) {
		if (i >= n)
			break;
		src[i] = (fields & XE_HASH_SRC_IP) ? f->src[i] : 0;
		dst[i] = (fields & XE_HASH_DST_IP) ? f->dst[i] : 0;
	}
	sport = (fields & XE_HASH_SRC_PORT) ? f->sport : 0;
	dport = (fields & XE_HASH_DST_PORT) ? f->dport : 0;
	if (flags & XE_CFG_SYMMETRIC) {
		if (xe_addr_gt(src, dst, n)) {
			for (i = 0; i < 4; i++) {
				__u32 t;

				if (i >= n)
					break;
				t = src[i];
				src[i] = dst[i];
				dst[i] = t;
			}
		}
		if (sport > dport) {
			__u32 t = sport;

			sport = dport;
			dport = t;
		}
	}
	w[2 * n] = (sport << 16) | dport;
	w[2 * n + 1] = ((fields & XE_HASH_IP_PROTO) ? f->proto : 0) |
		       ((fields & XE_HASH_FLOWLABEL) ? (f->flowlabel << 8) : 0);
	return xe_hsip_words(w, 2 * n + 2, seed);
}

/* The flow hash. `fields` 0 means XE_HASH_POLICY_L4. */
static __always_inline __u32 xe_flow_hash(const struct xe_flow *f, const __u32 seed[2], __u32 fields, __u32 flags)
{
	if (f->is_v6)
		return xe_flow_hash_n(f, seed, fields, flags, 4);
	return xe_flow_hash_n(f, seed, fields, flags, 1);
}

#endif
