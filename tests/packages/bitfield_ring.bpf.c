// SPDX-License-Identifier: GPL-2.0
/* Test package: a ring buffer of records with bitfields, refused on opening. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bitfield_ring.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

SEC("tp/sched/sched_process_exec")
int bitfield_exec(void *ctx)
{
	struct flags_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e)
		return 0;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->low = 1;
	e->high = 2;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
