// SPDX-License-Identifier: GPL-2.0
/* Test package: a tc classifier that lets every packet through. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("tc")
int tc_pass_all(struct __sk_buff *skb)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
