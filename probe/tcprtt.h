/* SPDX-License-Identifier: GPL-2.0 */
/* What the probe and the runner share. */
#ifndef __TCPRTT_H
#define __TCPRTT_H

#define MAX_SLOTS 27
#define MAX_ENTRIES 10240
#define IPV6_LEN 16

/* The histogram key: the address family and the address, IPv4 in the
 * first four bytes, in network order. Keyed, the family is AF_INET or
 * AF_INET6; not keyed, it is KEY_FAMILY_ALL and the address is all zero.
 * The probe never stores the all-zero key: a walk of hists that starts
 * from a zero-initialised key (get_next_key from a key that is not in the
 * map gives the first key) misses no entry, which eunomia's loaders and
 * wasm modules rely on, since they cannot pass a NULL key. */
#define KEY_FAMILY_ALL 0xffff
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

#endif /* __TCPRTT_H */
