// SPDX-License-Identifier: GPL-2.0
/* Test package: counts execs in a map that nothing exports. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} execs SEC(".maps");

SEC("tp/sched/sched_process_exec")
int count_exec(void *ctx)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&execs, &zero);

	if (n)
		__sync_fetch_and_add(n, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
