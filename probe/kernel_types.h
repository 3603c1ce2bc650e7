/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The few kernel types the probe touches, declared by hand so that the build
 * needs neither kernel headers nor the build machine's BTF. Every struct that
 * mirrors a kernel struct is marked preserve_access_index: clang records each
 * field access as a CO-RE relocation, and libbpf fixes the offsets up against
 * the running kernel's BTF at load time. Field order and padding here are
 * therefore irrelevant; only names and types must match the kernel's.
 */
#ifndef __TCPRTT_KERNEL_TYPES_H
#define __TCPRTT_KERNEL_TYPES_H

typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
};

#define AF_INET 2
#define AF_INET6 10

/*
 * The registers a kprobe sees, one CO-RE flavour per architecture: libbpf
 * drops the ___suffix and matches the kernel's struct pt_regs, so a kprobe
 * reads its argument by register name. (The suffixes are uname -m's names,
 * which keeps them apart from bpf_tracing.h's own flavours.) Only the
 * register the probe reads is declared; on arm64, regs[] sits in an
 * anonymous struct in an anonymous union, which libbpf looks through. In an
 * object built for the other architecture the field is missing from the
 * kernel's pt_regs, and the program fails to load instead of reading the
 * wrong register.
 */
struct pt_regs;

struct pt_regs___x86_64 {
	unsigned long di;
} __attribute__((preserve_access_index));

struct pt_regs___aarch64 {
	__u64 regs[31];
} __attribute__((preserve_access_index));

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be32 u6_addr32[4];
	} in6_u;
} __attribute__((preserve_access_index));

/* In the kernel the IPv4 pair sits in an anonymous union; libbpf finds
 * members through anonymous unions, so they can be declared flat here. */
struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct tcp_sock {
	__u32 srtt_us;
} __attribute__((preserve_access_index));

struct sk_buff;

/* The record of the tcp:tcp_probe tracepoint: the kernel has already read
 * the socket into it. saddr and daddr hold a sockaddr_in or sockaddr_in6
 * of the socket's own family; sport and dport are in host order; srtt is
 * srtt_us >> 3. */
struct trace_event_raw_tcp_probe {
	__u8 saddr[28];
	__u8 daddr[28];
	__u16 sport;
	__u16 dport;
	__u32 srtt;
} __attribute__((preserve_access_index));

#endif /* __TCPRTT_KERNEL_TYPES_H */
