// SPDX-License-Identifier: GPL-2.0
/* Test package: one ring-buffer record per exec. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "exec_ring.h"

struct sched_process_exec_args {
	__u64 common;
	__u32 filename_loc;
	int pid;
	int old_pid;
};

/// Copied into every record's marker
const volatile int marker = 7;

/* Counts records; its first value comes from the command line (.bss). */
unsigned long long seq;

#ifndef RING_SIZE
#define RING_SIZE (256 * 1024)
#endif

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, RING_SIZE);
} events SEC(".maps");

SEC("tp/sched/sched_process_exec")
int handle_exec(struct sched_process_exec_args *ctx)
{
	struct exec_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	__u64 uid_gid = bpf_get_current_uid_gid();

	if (!e)
		return 0;
	e->pid = ctx->pid;
	e->old_pid = ctx->old_pid;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename),
				  (void *)ctx + (ctx->filename_loc & 0xffff));
	e->kind = EVENT_EXEC;
	e->owner.uid = (__u32)uid_gid;
	e->owner.gid = uid_gid >> 32;
	e->tag[0] = 1;
	e->tag[1] = 2;
	e->tag[2] = 3;
	e->tag[3] = 250;
	e->flag = 1;
	e->neg = -5;
	e->marker = marker;
	e->seq = __sync_fetch_and_add(&seq, 1) + 1;
	e->one_and_a_half.raw = 0x3fc00000;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
