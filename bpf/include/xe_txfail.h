/* xe_txfail.h: redirected frames the kernel refused, counted where the kernel reports them (the xdp_redirect_err tracepoint, which fires only on a failure), so that userspace never counts them as forwarded. */
#ifndef XE_TXFAIL_H
#define XE_TXFAIL_H

/* Redirected frames the kernel refused when queued, per CPU (the port no
 * longer transmits redirected frames). Only frames that came in on a port
 * of ours (xe_inports) count. Frames a port drops once it took them (a
 * full ring) are the port's drops, as for the frames the kernel forwards:
 * counting them would cost a tracepoint call per flush (5% of the rate). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} xe_txfail SEC(".maps");

/* The tracepoint's record (its format file, stable ABI); the first 8
 * bytes are the common fields. */
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

SEC("tracepoint/xdp/xdp_redirect_err")
int xe_redirect_err(struct xe_tp_redirect_err *ctx)
{
	union {
		__u64 word;
		struct xe_inport port;
	} u;
	__u32 zero = 0;
	__u64 *c;

	u.word = xe_inport_word(ctx->ifindex);
	if (!(u.port.flags & XE_INPORT_ON))
		return 0;
	c = bpf_map_lookup_elem(&xe_txfail, &zero);
	if (c)
		*c += 1;
	return 0;
}

#endif
