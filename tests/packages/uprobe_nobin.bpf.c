// SPDX-License-Identifier: GPL-2.0
/* Test package: a uprobe whose section names a function but no binary. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("uprobe/malloc")
int uprobe_malloc(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
