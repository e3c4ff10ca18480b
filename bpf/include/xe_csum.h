/* xe_csum.h: TTL / hop-limit decrement with the incremental IPv4 checksum update (RFC 1624). */
#ifndef XE_CSUM_H
#define XE_CSUM_H

#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>

/* Decrement the TTL of a header whose TTL is > 1. TTL is the high byte of the
 * 16-bit word it shares with the protocol, so the one's-complement sum
 * grows by 0x0100 (checksum stored in network order); the same arithmetic
 * as the kernel's ip_decrease_ttl. */
static __always_inline void xe_ipv4_decrease_ttl(struct iphdr *iph)
{
	__u32 check = iph->check;

	check += bpf_htons(0x0100);
	iph->check = (__u16)(check + (check >= 0xFFFF));
	iph->ttl--;
}

static __always_inline void xe_ipv6_decrease_hop_limit(struct ipv6hdr *ip6h)
{
	ip6h->hop_limit--;
}

#endif
