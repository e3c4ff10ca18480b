/* hashvec.c: host build of bpf/include/xe_hash.h for the vector test; reads flows on stdin, prints their hashes. */
#include <stdio.h>
#include "xe_hash.h"

/* Each input line: seed0 seed1 fields flags is_v6 src0..3 dst0..3 sport dport proto flowlabel (decimal u32s). */
int main(void)
{
	unsigned int s0, s1, fields, flags, v6, src[4], dst[4], sport, dport, proto, fl;

	while (scanf("%u %u %u %u %u %u %u %u %u %u %u %u %u %u %u %u %u", &s0, &s1, &fields, &flags, &v6,
		     &src[0], &src[1], &src[2], &src[3], &dst[0], &dst[1], &dst[2], &dst[3], &sport, &dport, &proto,
		     &fl) == 17) {
		struct xe_flow f = {};
		__u32 seed[2] = {s0, s1};

		for (int i = 0; i < 4; i++) {
			f.src[i] = src[i];
			f.dst[i] = dst[i];
		}
		f.sport = sport;
		f.dport = dport;
		f.proto = proto;
		f.flowlabel = fl;
		f.is_v6 = v6;
		printf("%u\n", xe_flow_hash(&f, seed, fields, flags));
	}
	return 0;
}
