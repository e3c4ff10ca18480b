/* peers.bpf.c: the two programs xdp-ecmp is measured against: a bare MAC-rewrite-and-redirect forwarder (the limit) and a bpf_fib_lookup forwarder (what a user would pick instead, shaped like the kernel's xdp_fwd sample); a program that only makes helper calls, for what one call and return costs on this CPU; and an empty program, for what the test-run loop itself costs. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

/* What the bare forwarder writes: MACs and the egress port. */
struct bare_cfg {
	__u8 dmac[6];
	__u8 smac[6];
	__u32 ifindex;
};

/* The bare forwarder's one rewrite (key 0). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct bare_cfg);
	__uint(max_entries, 1);
} bare_cfg SEC(".maps");

/* Egress ports of both peers, by ifindex. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 64);
} peer_tx SEC(".maps");

/* Rewrite MACs and redirect: nothing else, the cost floor of a forwarder. */
SEC("xdp")
int xdp_bare(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct bare_cfg *cfg;
	__u32 zero = 0;

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	cfg = bpf_map_lookup_elem(&bare_cfg, &zero);
	if (!cfg)
		return XDP_PASS;
	__builtin_memcpy(eth->h_dest, cfg->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, cfg->smac, ETH_ALEN);
	return bpf_redirect_map(&peer_tx, cfg->ifindex, 0);
}

/* Nothing but a verdict: run through BPF_PROG_TEST_RUN beside the others,
 * it measures the test-run loop's own cost. */
SEC("xdp")
int xdp_empty(struct xdp_md *ctx)
{
	return XDP_PASS;
}

/* Calls xdp_calls makes per packet (set before load; at most 16). */
const volatile __u32 helper_calls = 0;

/* `helper_calls` calls of a helper that does almost nothing (the NUMA node
 * id), then a drop: measured with 0 and with 16 calls side by side, the
 * difference is what a call into the kernel and its return cost here
 * (CPU mitigations such as a return thunk make them dear). */
SEC("xdp")
int xdp_calls(struct xdp_md *ctx)
{
	__u32 i, sum = 0;

	for (i = 0; i < 16; i++) {
		if (i >= helper_calls)
			break;
		sum += bpf_get_numa_node_id();
	}
	return sum == 0xffffffff ? XDP_PASS : XDP_DROP;
}

/* The kernel's FIB does route, next hop and neighbour: xdp_fwd's shape. */
SEC("xdp")
int xdp_fib(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct bpf_fib_lookup fib = {};
	struct ethhdr *eth = data;
	struct iphdr *iph;
	struct ipv6hdr *ip6h;
	int rc;

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		iph = (void *)(eth + 1);
		if ((void *)(iph + 1) > data_end)
			return XDP_DROP;
		if (iph->ttl <= 1)
			return XDP_PASS;
		fib.family = AF_INET;
		fib.tos = iph->tos;
		fib.l4_protocol = iph->protocol;
		fib.tot_len = bpf_ntohs(iph->tot_len);
		fib.ipv4_src = iph->saddr;
		fib.ipv4_dst = iph->daddr;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		ip6h = (void *)(eth + 1);
		if ((void *)(ip6h + 1) > data_end)
			return XDP_DROP;
		if (ip6h->hop_limit <= 1)
			return XDP_PASS;
		fib.family = AF_INET6;
		fib.l4_protocol = ip6h->nexthdr;
		fib.tot_len = bpf_ntohs(ip6h->payload_len);
		__builtin_memcpy(fib.ipv6_src, &ip6h->saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, &ip6h->daddr, 16);
	} else {
		return XDP_PASS;
	}
	fib.ifindex = ctx->ingress_ifindex;
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return XDP_PASS;
	if (fib.family == AF_INET) {
		iph = (void *)(eth + 1);
		if ((void *)(iph + 1) > data_end)
			return XDP_DROP;
		__u32 check = iph->check;
		check += bpf_htons(0x0100);
		iph->check = (__u16)(check + (check >= 0xFFFF));
		iph->ttl--;
	} else {
		ip6h = (void *)(eth + 1);
		if ((void *)(ip6h + 1) > data_end)
			return XDP_DROP;
		ip6h->hop_limit--;
	}
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	return bpf_redirect_map(&peer_tx, fib.ifindex, 0);
}

char _license[] SEC("license") = "Dual BSD/GPL";
