/* xe_txfail.h: redirected frames the kernel could not send, counted where the kernel reports them (two XDP tracepoints), so that userspace never counts them as forwarded. */
#ifndef XE_TXFAIL_H
#define XE_TXFAIL_H

/* Redirected frames the kernel dropped, per CPU: [0] refused when queued
 * (the port no longer transmits redirected frames: xdp_redirect_err),
 * [1] dropped when sent (ring full, peer down: xdp_devmap_xmit). Only
 * frames that came in on a port of ours (xe_inports) count. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2);
} xe_txfail SEC(".maps");

/* The tracepoints' records (their format files, stable ABI); the first
 * 8 bytes are the common fields. */
struct xe_tp_redirect_err {
	__u64 common;
	int prog_id;
	__u32 act;
	int ifindex;
	int err;
	int to_ifindex;
	__u32 map_id;
	int map_index;
};

struct xe_tp_devmap_xmit {
	__u64 common;
	int from_ifindex;
	__u32 act;
	int to_ifindex;
	int drops;
	int sent;
	int err;
};

static __always_inline void xe_txfail_add(int from, __u32 which, __u64 n)
{
	__u32 port = from;
	__u64 *c;

	if (!bpf_map_lookup_elem(&xe_inports, &port))
		return;
	c = bpf_map_lookup_elem(&xe_txfail, &which);
	if (c)
		*c += n;
}

SEC("tracepoint/xdp/xdp_redirect_err")
int xe_redirect_err(struct xe_tp_redirect_err *ctx)
{
	xe_txfail_add(ctx->ifindex, 0, 1);
	return 0;
}

SEC("tracepoint/xdp/xdp_devmap_xmit")
int xe_devmap_xmit(struct xe_tp_devmap_xmit *ctx)
{
	if (ctx->drops > 0)
		xe_txfail_add(ctx->from_ifindex, 1, ctx->drops);
	return 0;
}

#endif
