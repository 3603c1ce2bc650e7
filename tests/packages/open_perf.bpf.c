// SPDX-License-Identifier: GPL-2.0
/* Test package: one perf-event-array record per openat of one process. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "open_perf.h"

typedef int pid_t;

struct sys_enter_args {
	__u64 common;
	long id;
	unsigned long args[6];
};

/// Process ID to trace
const volatile pid_t target_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

SEC("tp/syscalls/sys_enter_openat")
int handle_openat(struct sys_enter_args *ctx)
{
	struct open_event e = {};

	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	e.pid = bpf_get_current_pid_tgid() >> 32;
	e.flags = (int)ctx->args[2];
	bpf_get_current_comm(e.comm, sizeof(e.comm));
	bpf_probe_read_user_str(e.filename, sizeof(e.filename), (void *)ctx->args[1]);
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
