/* traffic.bpf.c: the packet-rate benchmark's traffic generator (run by BPF_PROG_TEST_RUN with live frames) and its counting sinks. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

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

char _license[] SEC("license") = "Dual BSD/GPL";
