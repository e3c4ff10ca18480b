/* traffic.bpf.c: the traffic generator of the packet-rate and torn-state runs (BPF_PROG_TEST_RUN with live frames), their counting sinks, and the checking sink of the torn-state run. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <linux/if_ether.h>
#include <linux/ip.h>

#define GEN_HDR_LEN 42 /* Ethernet 14 + IPv4 20 + UDP 8 */

/* What the generator writes into every frame. */
struct gen_cfg {
	__u8 hdr[GEN_HDR_LEN]; /* Ethernet + IPv4 (checksum filled) + UDP (checksum 0) */
	__u16 sport_base;      /* host order: flow i has source port base + i */
	__u32 flows;           /* distinct source ports, >= 1 */
	__u32 ifindex;         /* the generator's veth: frames leave through it */
	__u32 stop;            /* set when the measurement is over: the rest is dropped at once */
};

/* The generator's frame template and egress (key 0). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct gen_cfg);
	__uint(max_entries, 1);
} gen_cfg SEC(".maps");

/* Frames generated so far on this CPU: picks the next flow. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} gen_seq SEC(".maps");

/* Frames each sink received, indexed by the sink's ifindex (< 1024), per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1024);
} sink_count SEC(".maps");

/* Writes the whole header on every frame (live-frame pages come back with
 * whatever the forwarder wrote into them) and sends it out of the veth. */
SEC("xdp")
int xdp_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct gen_cfg *cfg;
	__u32 zero = 0;
	__u64 *seq;
	__u16 sport;

	if (data + GEN_HDR_LEN > data_end)
		return XDP_ABORTED;
	cfg = bpf_map_lookup_elem(&gen_cfg, &zero);
	seq = bpf_map_lookup_elem(&gen_seq, &zero);
	if (!cfg || !seq || !cfg->flows)
		return XDP_ABORTED;
	if (cfg->stop)
		return XDP_DROP;
	__builtin_memcpy(data, cfg->hdr, GEN_HDR_LEN);
	sport = cfg->sport_base + (__u16)(*seq % cfg->flows);
	*seq += 1;
	*(__be16 *)(data + 34) = bpf_htons(sport);
	return bpf_redirect(cfg->ifindex, 0);
}

/* One more frame ended at port `ifindex`. */
static __always_inline void sink_count_one(__u32 ifindex)
{
	__u64 *n = bpf_map_lookup_elem(&sink_count, &ifindex);

	if (n)
		*n += 1;
}

/* Counts and drops: the end of every path in the benchmark. */
SEC("xdp")
int xdp_sink(struct xdp_md *ctx)
{
	sink_count_one(ctx->ingress_ifindex);
	return XDP_DROP;
}

/* Counts and drops at a port's tc egress: where a frame the kernel forwarded
 * ends, before the veth would turn it into an XDP frame for the peer's sink
 * (a copy the XDP forwarders' frames do not pay). */
SEC("tc")
int tc_sink(struct __sk_buff *skb)
{
	sink_count_one(skb->ifindex);
	return 2; /* TC_ACT_SHOT */
}

/* The sink each flow (UDP source port, host order) reached first; 0: not yet. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 65536);
} flow_egress SEC(".maps");

/* Frames of a flow that reached another sink than its first, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} flow_moved SEC(".maps");

/* Counts the run's UDP frames and drops every frame, like xdp_sink, and follows each flow: a frame of a flow
 * first seen at another sink is counted as moved. (Two CPUs may both record
 * a flow's first sink at once; they write the same port unless the flow
 * really moved.) */
SEC("xdp")
int xdp_flow_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);
	__u32 in = ctx->ingress_ifindex, sport, zero = 0, *first;
	__u64 *moved;
	__u16 *udp;

	if ((void *)(iph + 1) + 4 > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || iph->ihl != 5 ||
	    iph->protocol != 17)
		return XDP_DROP; /* the port's own chatter (ND and the like) */
	sink_count_one(in);
	udp = (void *)(iph + 1);
	sport = bpf_ntohs(udp[0]);
	first = bpf_map_lookup_elem(&flow_egress, &sport);
	if (!first)
		return XDP_DROP;
	if (!*first) {
		*first = in;
	} else if (*first != in) {
		moved = bpf_map_lookup_elem(&flow_moved, &zero);
		if (moved)
			*moved += 1;
	}
	return XDP_DROP;
}

/* The torn-state run's frames: IPv4 UDP to this address (network order). */
#define CHECK_DST bpf_htonl(0xac10ff42) /* 172.16.255.66 */
/* Wrong frames kept for the failure message. */
#define CHECK_KEEP 16

/* A (sink ingress ifindex, destination MAC) pair. */
struct check_key {
	__u32 ifindex;
	__u8 dmac[6];
	__u8 pad[2];
};

/* The source MAC a frame with a valid pair must carry (its egress port's). */
struct check_val {
	__u8 smac[6];
	__u8 pad[2];
};

/* One wrong frame as it reached a sink. */
struct check_wrong {
	__u32 ifindex; /* the sink's ingress ifindex */
	__u8 dmac[6];
	__u8 smac[6];
	__u16 sport; /* network order: the flow */
	__u8 ttl;
	__u8 cpu;
};

/* Valid (sink ifindex, destination MAC) pairs, written by userspace, with the source MAC each must carry. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct check_key);
	__type(value, struct check_val);
	__uint(max_entries, 256);
} check_valid SEC(".maps");

/* Frames seen by the checking sinks, per CPU: [0] valid, [1] wrong, [2] not the run's (ignored). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 3);
} check_count SEC(".maps");

/* The first CHECK_KEEP wrong frames each CPU saw, by that CPU's count of wrong frames before it (per CPU: no atomics). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct check_wrong);
	__uint(max_entries, CHECK_KEEP);
} check_wrong SEC(".maps");

/* Counts one frame as `what`; returns how many this CPU had counted so before (0 if the counter is missing). */
static __always_inline __u64 check_count_one(__u32 what)
{
	__u64 *n = bpf_map_lookup_elem(&check_count, &what);
	__u64 before = 0;

	if (n) {
		before = *n;
		*n = before + 1;
	}
	return before;
}

/* Nonzero if the MACs differ (no memcmp in BPF). */
static __always_inline int check_mac_differs(const __u8 *a, const __u8 *b)
{
	int d = 0;

#pragma unroll
	for (int i = 0; i < ETH_ALEN; i++)
		d |= a[i] ^ b[i];
	return d;
}

/* Checks and drops: a frame of the run is valid only if its destination MAC
 * is a neighbour of A's on the port it left by, and its source MAC is that
 * port's; a wrong one is counted and the first few on each CPU are kept. */
SEC("xdp")
int xdp_check(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);
	struct check_key key = {.ifindex = ctx->ingress_ifindex};
	struct check_val *want;
	struct check_wrong *w;
	__u16 *udp;
	__u32 at;

	if ((void *)(iph + 1) + 4 > data_end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    iph->ihl != 5 || iph->protocol != 17 || iph->daddr != CHECK_DST) {
		check_count_one(2);
		return XDP_DROP;
	}
	udp = (void *)(iph + 1);
	__builtin_memcpy(key.dmac, eth->h_dest, ETH_ALEN);
	want = bpf_map_lookup_elem(&check_valid, &key);
	if (want && !check_mac_differs(want->smac, eth->h_source)) {
		check_count_one(0);
		return XDP_DROP;
	}
	at = check_count_one(1);
	if (at >= CHECK_KEEP)
		return XDP_DROP;
	w = bpf_map_lookup_elem(&check_wrong, &at);
	if (!w)
		return XDP_DROP;
	w->ifindex = ctx->ingress_ifindex;
	__builtin_memcpy(w->dmac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(w->smac, eth->h_source, ETH_ALEN);
	w->sport = udp[0];
	w->ttl = iph->ttl;
	w->cpu = bpf_get_smp_processor_id();
	return XDP_DROP;
}

char _license[] SEC("license") = "Dual BSD/GPL";
