// SPDX-License-Identifier: GPL-2.0
/* Test package: connect(2) calls of one process, counted per port in a
 * plain (default_kv) sample map. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "connect_kv.h"

typedef int pid_t;

struct sys_enter_args {
	__u64 common;
	long id;
	unsigned long args[6];
};

struct sockaddr_v4 {
	__u16 family;
	__u16 port;
	__u32 addr;
};

struct conn_key {
	__u32 pid;
	__u16 port;
	char comm[16];
};

/// Process ID to trace
const volatile pid_t target_tgid = 0;

/// @sample {"interval": 200, "type": "default_kv"}
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct conn_key);
	__type(value, struct conn_stats);
} connects SEC(".maps");

SEC("tp/syscalls/sys_enter_connect")
int handle_connect(struct sys_enter_args *ctx)
{
	struct sockaddr_v4 sa = {};
	struct conn_key key = {};
	struct conn_stats zero = {}, *stats;

	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	if (bpf_probe_read_user(&sa, sizeof(sa), (void *)ctx->args[1]) || sa.family != 2)
		return 0;
	key.pid = target_tgid;
	key.port = __builtin_bswap16(sa.port);
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	bpf_map_update_elem(&connects, &key, &zero, BPF_NOEXIST);
	stats = bpf_map_lookup_elem(&connects, &key);
	if (!stats)
		return 0;
	__sync_fetch_and_add(&stats->connects, 1);
	stats->last_addr = __builtin_bswap32(sa.addr);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
