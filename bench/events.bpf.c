// SPDX-License-Identifier: GPL-2.0
/* The event benchmark's source: one ring-buffer record per getppid(2) of
 * one process, as fast as that process calls it. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "events.h"

/// Process ID whose getppid calls make records
const volatile int target_tgid = 0;

/* Records offered and records the full ring refused (.bss). */
unsigned long long offered;
unsigned long long refused;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

SEC("tp/syscalls/sys_enter_getppid")
int bench_event(void *ctx)
{
	struct bench_event *e;
	__u64 id = bpf_get_current_pid_tgid();

	if ((id >> 32) != target_tgid)
		return 0;
	__sync_fetch_and_add(&offered, 1);
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&refused, 1);
		return 0;
	}
	e->pid = id >> 32;
	e->old_pid = (__u32)id;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	__builtin_memcpy(e->filename, "/usr/bin/some-program-name", 27);
	e->kind = EVENT_EXEC;
	e->owner.uid = 1000;
	e->owner.gid = 1000;
	e->tag[0] = 1;
	e->tag[1] = 2;
	e->tag[2] = 3;
	e->tag[3] = 250;
	e->flag = 1;
	e->neg = -5;
	e->marker = 7;
	e->seq = offered;
	e->one_and_a_half.raw = 0x3fc00000;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
