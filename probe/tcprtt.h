/* SPDX-License-Identifier: GPL-2.0 */
/* What the probe and the runner share. */
#ifndef __TCPRTT_H
#define __TCPRTT_H

#define MAX_SLOTS 27
#define MAX_ENTRIES 10240
#define IPV6_LEN 16

/* The histogram key: the address family (0 when not keyed) and the
 * address, IPv4 in the first four bytes, in network order. */
struct hist_key {
	__u16 family;
	__u8 addr[IPV6_LEN];
};

/* latency and cnt are the sum and count that the average is made of. */
struct hist {
	__u64 latency;
	__u64 cnt;
	__u32 slots[MAX_SLOTS];
};

/* A slot of the per-CPU key cache: family 0 while free; the address in
 * network order, IPv4 in addr[0]. */
#define KEY_CACHE_BITS 8
#define KEY_CACHE_SLOTS (1 << KEY_CACHE_BITS)
struct key_slot {
	__u32 family;
	__u32 addr[4];
	struct hist hist;
};

#endif /* __TCPRTT_H */
