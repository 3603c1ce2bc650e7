// SPDX-License-Identifier: GPL-2.0
/* The wasm host tests' BPF object: on every syscall entry of one process,
 * count it and send a record to a ring buffer and a perf event array. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct event {
	__u32 pid;
	__u32 seq;
	__u64 id;
};

/* The process to watch (tgid), set by the test through the host. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} target SEC(".maps");

/* Syscall entries seen, by syscall number. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} percpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} perf_events SEC(".maps");

__u32 seq = 0;

SEC("raw_tp/sys_enter")
int wh_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0, *pid = bpf_map_lookup_elem(&target, &zero);
	struct event e = {};
	__u64 one = 1, *count;
	__u32 nr;

	if (!pid || !*pid || (bpf_get_current_pid_tgid() >> 32) != *pid)
		return 0;
	nr = ctx->args[1];
	count = bpf_map_lookup_elem(&counts, &nr);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&counts, &nr, &one, BPF_ANY);
	e.pid = *pid;
	e.seq = __sync_fetch_and_add(&seq, 1);
	e.id = nr;
	bpf_ringbuf_output(&events, &e, sizeof(e), 0);
	bpf_perf_event_output(ctx, &perf_events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}

/* Never attached by section: it has none libbpf can attach. */
SEC("sockops")
int wh_sockops(struct bpf_sock_ops *skops)
{
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
