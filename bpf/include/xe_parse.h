/* xe_parse.h: bounded header parsers; each returns XE_CONTINUE or the verdict for a bad header. */
#ifndef XE_PARSE_H
#define XE_PARSE_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include "xe_abi.h"

#define XE_CONTINUE (-1)
/* Offsets are bounded by this for the verifier; XDP sees at most one page. */
#define XE_MAX_OFF 0x3fff
/* Re-bound an offset the compiler may have spilled: an opaque mask the
 * verifier sees right before the offset is added to a packet pointer. */
#define XE_BOUND(x) asm volatile("%0 &= 0x3fff" : "+r"(x))

#ifndef IPPROTO_MH
#define IPPROTO_MH 135
#endif
#define XE_ICMPV6 58
#define XE_IPV6_HOPOPTS 0
#define XE_IPV6_ROUTING 43
#define XE_IPV6_FRAGMENT 44
#define XE_IPV6_AH 51
#define XE_IPV6_DSTOPTS 60

/* 802.1Q / 802.1ad tag after the MAC addresses (network order). */
struct xe_vlan_hdr {
	__be16 tci;
	__be16 proto;
};

/* What the parsers learn about a packet. */
struct xe_meta {
	struct xe_flow flow;
	__u32 l2_len; /* bytes before the IP header */
	__u32 l3_len; /* IP packet length from its header */
	__u32 l4_off; /* offset of the upper-layer header from the frame start */
	__u8 ttl;
	__u8 frag; /* any fragment: hash on L3 only */
	__u8 no_l4; /* ports unknown (fragment, ESP, too many extension headers) */
	__u8 tcp_flags; /* the TCP header's flags byte (FIN 0x01, RST 0x04); 0 for any other packet */
};

static __always_inline int xe_is_vlan(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

/* The Ethernet header: present in full, to a unicast MAC. */
static __always_inline int xe_parse_eth(void *data, void *data_end)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XE_V_DROP_TRUNCATED;
	if (eth->h_dest[0] & 1)
		return XE_V_PASS_MULTICAST;
	return XE_CONTINUE;
}

/* Up to two VLAN tags after the Ethernet header (checked by xe_parse_eth);
 * *proto is the inner ethertype (network order). */
static __always_inline int xe_parse_l2(void *data, void *data_end, __be16 *proto, __u32 *l2_len)
{
	struct ethhdr *eth = data;
	struct xe_vlan_hdr *vh;
	__be16 p;

	if ((void *)(eth + 1) > data_end)
		return XE_V_DROP_TRUNCATED;
	p = eth->h_proto;
	vh = (void *)(eth + 1);
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (!xe_is_vlan(p))
			break;
		if ((void *)(vh + 1) > data_end)
			return XE_V_DROP_TRUNCATED;
		p = vh->proto;
		vh++;
	}
	*proto = p;
	*l2_len = (void *)vh - data;
	return XE_CONTINUE;
}

/* IPv4 header: version, IHL >= 5, options present in full, total length fits. */
static __always_inline int xe_parse_ipv4(void *data, void *data_end, struct xe_meta *m)
{
	struct iphdr *iph;
	__u32 hlen, tot, l2;

	if (m->l2_len > 22) /* bound for the verifier: 14 + 2 tags */
		return XE_V_DROP_MALFORMED;
	l2 = m->l2_len;
	XE_BOUND(l2);
	iph = data + l2;
	if ((void *)(iph + 1) > data_end)
		return XE_V_DROP_TRUNCATED;
	if (iph->version != 4 || iph->ihl < 5)
		return XE_V_DROP_MALFORMED;
	hlen = iph->ihl * 4;
	if ((void *)iph + hlen > data_end)
		return XE_V_DROP_TRUNCATED;
	tot = bpf_ntohs(iph->tot_len);
	if (tot < hlen || (void *)iph + tot > data_end)
		return XE_V_DROP_MALFORMED;
	m->flow.src[0] = iph->saddr;
	m->flow.dst[0] = iph->daddr;
	m->flow.proto = iph->protocol;
	m->l3_len = tot;
	m->l4_off = m->l2_len + hlen;
	m->ttl = iph->ttl;
	m->frag = (iph->frag_off & bpf_htons(0x3fff)) != 0;
	m->no_l4 = m->frag;
	return XE_CONTINUE;
}

/* First octet of an IPv4 address in network order. */
static __always_inline __u8 xe_v4_octet0(__u32 addr_be)
{
	return ((__u8 *)&addr_be)[0];
}

/* IPv4 destinations and sources a router hands to the kernel instead. */
static __always_inline int xe_classify_ipv4(const struct xe_meta *m)
{
	__u8 d0 = xe_v4_octet0(m->flow.dst[0]);
	__u8 s0 = xe_v4_octet0(m->flow.src[0]);

	if ((d0 & 0xf0) == 0xe0 || m->flow.dst[0] == 0xffffffffu)
		return XE_V_PASS_MULTICAST;
	if (d0 == 0 || d0 == 127 || s0 == 0 || s0 == 127 || s0 >= 224)
		return XE_V_PASS_SPECIAL;
	return XE_CONTINUE;
}

/* IPv6 fixed header: version 6 and a payload length that fits the frame. */
static __always_inline int xe_parse_ipv6(void *data, void *data_end, struct xe_meta *m)
{
	struct ipv6hdr *ip6h;
	__u32 plen, l2;

	if (m->l2_len > 22) /* bound for the verifier: 14 + 2 tags */
		return XE_V_DROP_MALFORMED;
	l2 = m->l2_len;
	XE_BOUND(l2);
	ip6h = data + l2;
	if ((void *)(ip6h + 1) > data_end)
		return XE_V_DROP_TRUNCATED;
	if (ip6h->version != 6)
		return XE_V_DROP_MALFORMED;
	plen = bpf_ntohs(ip6h->payload_len);
	if ((void *)(ip6h + 1) + plen > data_end)
		return XE_V_DROP_MALFORMED;
	__builtin_memcpy(m->flow.src, &ip6h->saddr, 16);
	__builtin_memcpy(m->flow.dst, &ip6h->daddr, 16);
	m->flow.flowlabel = ((__u32)(ip6h->flow_lbl[0] & 0x0f) << 16) | ((__u32)ip6h->flow_lbl[1] << 8) |
			    ip6h->flow_lbl[2];
	m->flow.proto = ip6h->nexthdr;
	m->flow.is_v6 = 1;
	m->l3_len = sizeof(*ip6h) + plen;
	m->l4_off = m->l2_len + sizeof(*ip6h);
	m->ttl = ip6h->hop_limit;
	return XE_CONTINUE;
}

static __always_inline int xe_v6_is_zero(const __u32 *a)
{
	return (a[0] | a[1] | a[2]) == 0 && a[3] == 0;
}

static __always_inline int xe_v6_is_loopback(const __u32 *a)
{
	return (a[0] | a[1] | a[2]) == 0 && a[3] == bpf_htonl(1);
}

static __always_inline int xe_v6_is_link_local(const __u32 *a)
{
	return (a[0] & bpf_htonl(0xffc00000)) == bpf_htonl(0xfe800000);
}

/* IPv6 destinations and sources a router hands to the kernel instead. */
static __always_inline int xe_classify_ipv6(const struct xe_meta *m)
{
	const __u32 *s = m->flow.src, *d = m->flow.dst;

	if (((__u8 *)d)[0] == 0xff)
		return XE_V_PASS_MULTICAST;
	if (xe_v6_is_zero(d) || xe_v6_is_loopback(d) || xe_v6_is_link_local(d) || xe_v6_is_loopback(s) ||
	    xe_v6_is_link_local(s) || ((__u8 *)s)[0] == 0xff)
		return XE_V_PASS_SPECIAL;
	return XE_CONTINUE;
}

/*
 * Walk IPv6 extension headers from *off (frame offset) with *nh the next
 * header, up to `end`. Stops at the first upper-layer protocol, or at a
 * fragment header (the rest may be payload: sets frag). Hop-by-hop,
 * routing and destination options count their length in 8-byte units, AH
 * in 4-byte units (RFC 4302). Sets no_l4 if the walk gives up.
 */
static __always_inline int xe_walk_ipv6_ext(void *data, void *data_end, __u32 end, __u32 *off, __u8 *nh,
					    __u8 *frag, __u8 *no_l4)
{
	__u32 o = *off;
	__u8 next = *nh;

#pragma unroll
	for (int i = 0; i < XE_MAX_EXT_HEADERS; i++) {
		__u8 *h;
		__u32 len;

		if (next != XE_IPV6_HOPOPTS && next != XE_IPV6_ROUTING && next != XE_IPV6_DSTOPTS &&
		    next != XE_IPV6_FRAGMENT && next != XE_IPV6_AH)
			goto done;
		if (o > XE_MAX_OFF)
			return XE_V_DROP_TRUNCATED;
		XE_BOUND(o);
		h = data + o;
		if (next == XE_IPV6_FRAGMENT) {
			if (o + 8 > end || (void *)(h + 8) > data_end)
				return XE_V_DROP_TRUNCATED;
			*frag = 1;
			*no_l4 = 1;
			next = h[0];
			o += 8;
			goto done;
		}
		if (next == XE_IPV6_AH) {
			if (o + 12 > end || (void *)(h + 12) > data_end)
				return XE_V_DROP_TRUNCATED;
			if (h[1] == 0)
				return XE_V_DROP_MALFORMED;
			len = ((__u32)h[1] + 2) * 4;
		} else {
			if (o + 8 > end || (void *)(h + 8) > data_end)
				return XE_V_DROP_TRUNCATED;
			len = ((__u32)h[1] + 1) * 8;
		}
		if (o + len > end)
			return XE_V_DROP_TRUNCATED;
		next = h[0];
		o += len;
	}
	if (next == XE_IPV6_HOPOPTS || next == XE_IPV6_ROUTING || next == XE_IPV6_DSTOPTS ||
	    next == XE_IPV6_FRAGMENT || next == XE_IPV6_AH)
		*no_l4 = 1;
done:
	*off = o;
	*nh = next;
	return XE_CONTINUE;
}

static __always_inline int xe_has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

/* ICMP types that quote the packet that caused them. */
static __always_inline int xe_is_icmp_error(__u8 proto, __u8 type)
{
	if (proto == IPPROTO_ICMP)
		return type == 3 || type == 11 || type == 12;
	if (proto == XE_ICMPV6)
		return type >= 1 && type <= 4;
	return 0;
}

/* Read big-endian port pair at p into flow (host order). */
static __always_inline void xe_read_ports(const __u8 *p, __u16 *sport, __u16 *dport)
{
	*sport = ((__u16)p[0] << 8) | p[1];
	*dport = ((__u16)p[2] << 8) | p[3];
}

#endif
