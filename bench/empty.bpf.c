// SPDX-License-Identifier: GPL-2.0
/* The floor for the per-segment cost: a program that does nothing, on the
 * same attach point as tcprtt. Compiled once per attach point, its section
 * given as -DEMPTY_SECTION="raw_tp/tcp_probe" and so on. */
typedef unsigned int __u32;
typedef unsigned long long __u64;
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

/* Only so that the runner's loader accepts the package: never touched. */
struct hist {
	__u32 slots[1];
};

/// @sample {"interval": 1000, "type": "log2_hist"}
struct {
	__uint(type, 1);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hist);
} hists SEC(".maps");

SEC(EMPTY_SECTION)
int empty(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
