// SPDX-License-Identifier: GPL-2.0
/* tcprtt: a log2 histogram of the smoothed RTT of established TCP sockets,
 * sampled each time the kernel handles a segment in tcp_rcv_established. */
#include "kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "tcprtt.h"

/// local port to trace, host byte order (0: any)
const volatile int targ_sport = 0;
/// remote port to trace, host byte order (0: any)
const volatile int targ_dport = 0;
/// local IPv4 address to trace, as a host-order integer (0: any)
const volatile unsigned long long targ_saddr = 0;
/// remote IPv4 address to trace, as a host-order integer (0: any)
const volatile unsigned long long targ_daddr = 0;
/// local IPv6 address to trace, network byte order (all zero: any); set by the runner
const volatile __u8 targ_saddr_v6[IPV6_LEN] = {};
/// remote IPv6 address to trace, network byte order (all zero: any); set by the runner
const volatile __u8 targ_daddr_v6[IPV6_LEN] = {};
/// trace only this IP version, 4 or 6 (0: both)
const volatile int targ_ipver = 0;
/// one histogram per local address
const volatile bool targ_laddr_hist = false;
/// one histogram per remote address
const volatile bool targ_raddr_hist = false;
/// keep the sum and count for the average
const volatile bool targ_show_ext = false;
/// milliseconds instead of microseconds
const volatile bool targ_ms = false;

/// @sample {"interval": 1000, "type": "log2_hist"}
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENTRIES);
	__type(key, struct hist_key);
	__type(value, struct hist);
} hists SEC(".maps");

/* Samples that found no room for their key in a full hists map. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

/* Settings live in frozen .rodata, so the verifier sees these as constants
 * and prunes every branch of a filter that is off. */
static __always_inline bool v6_set(const volatile __u8 *addr)
{
	const volatile __u64 *half = (const volatile __u64 *)addr;

	return (half[0] | half[1]) != 0;
}

static __always_inline bool v6_equal(const struct in6_addr *a, const volatile __u8 *b)
{
	const volatile __u64 *want = (const volatile __u64 *)b;
	const __u64 *have = (const __u64 *)a->in6_u.u6_addr8;

	return have[0] == want[0] && have[1] == want[1];
}

static __always_inline bool v4_mapped(const struct in6_addr *a)
{
	return a->in6_u.u6_addr32[0] == 0 && a->in6_u.u6_addr32[1] == 0 &&
	       a->in6_u.u6_addr32[2] == bpf_htonl(0x0000ffff);
}

static __always_inline __u32 log2_u32(__u32 v)
{
	__u32 r, shift;

	r = (v > 0xFFFF) << 4; v >>= r;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r;
}

static __always_inline void key_addr(struct hist_key *key, bool v4, __be32 addr4,
				     const struct in6_addr *addr6)
{
	if (v4) {
		key->family = AF_INET;
		__builtin_memcpy(key->addr, &addr4, sizeof(addr4));
	} else {
		key->family = AF_INET6;
		__builtin_memcpy(key->addr, addr6->in6_u.u6_addr8, IPV6_LEN);
	}
}

static __always_inline int handle_rcv_established(struct sock *sk)
{
	struct in6_addr laddr6 = {}, raddr6 = {};
	__be32 laddr4 = 0, raddr4 = 0;
	struct hist_key key = {};
	struct hist *histp;
	__u32 srtt, slot;
	__u16 family;
	bool v4;

	if (targ_sport && targ_sport != BPF_CORE_READ(sk, __sk_common.skc_num))
		return 0;
	if (targ_dport && targ_dport != bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport)))
		return 0;

	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family == AF_INET) {
		v4 = true;
		laddr4 = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		raddr4 = BPF_CORE_READ(sk, __sk_common.skc_daddr);
	} else if (family == AF_INET6) {
		/* A v4-mapped socket carries IPv4 traffic: treat it as IPv4. */
		BPF_CORE_READ_INTO(&raddr6, sk, __sk_common.skc_v6_daddr);
		BPF_CORE_READ_INTO(&laddr6, sk, __sk_common.skc_v6_rcv_saddr);
		v4 = v4_mapped(&raddr6);
		laddr4 = laddr6.in6_u.u6_addr32[3];
		raddr4 = raddr6.in6_u.u6_addr32[3];
	} else {
		return 0;
	}

	if ((targ_ipver == 4 && !v4) || (targ_ipver == 6 && v4))
		return 0;
	if (targ_saddr && (!v4 || laddr4 != bpf_htonl((__u32)targ_saddr)))
		return 0;
	if (targ_daddr && (!v4 || raddr4 != bpf_htonl((__u32)targ_daddr)))
		return 0;
	if (v6_set(targ_saddr_v6) && (v4 || !v6_equal(&laddr6, targ_saddr_v6)))
		return 0;
	if (v6_set(targ_daddr_v6) && (v4 || !v6_equal(&raddr6, targ_daddr_v6)))
		return 0;

	if (targ_laddr_hist)
		key_addr(&key, v4, laddr4, &laddr6);
	else if (targ_raddr_hist)
		key_addr(&key, v4, raddr4, &raddr6);

	histp = bpf_map_lookup_elem(&hists, &key);
	if (!histp) {
		struct hist zero = {};

		bpf_map_update_elem(&hists, &key, &zero, BPF_NOEXIST);
		histp = bpf_map_lookup_elem(&hists, &key);
		if (!histp) {
			__u32 idx = 0;
			__u64 *drops = bpf_map_lookup_elem(&dropped, &idx);

			if (drops)
				__sync_fetch_and_add(drops, 1);
			return 0;
		}
	}

	srtt = BPF_CORE_READ((struct tcp_sock *)sk, srtt_us) >> 3;
	if (targ_ms)
		srtt /= 1000U;
	slot = log2_u32(srtt);
	if (slot >= MAX_SLOTS)
		slot = MAX_SLOTS - 1;
	__sync_fetch_and_add(&histp->slots[slot], 1);
	if (targ_show_ext) {
		__sync_fetch_and_add(&histp->latency, srtt);
		__sync_fetch_and_add(&histp->cnt, 1);
	}
	return 0;
}

#if defined(TCPRTT_FENTRY)
SEC("fentry/tcp_rcv_established")
int BPF_PROG(rtt_fentry, struct sock *sk) { return handle_rcv_established(sk); }
#elif defined(TCPRTT_KPROBE)
SEC("kprobe/tcp_rcv_established")
int BPF_KPROBE(rtt_kprobe, struct sock *sk) { return handle_rcv_established(sk); }
#elif defined(TCPRTT_RAW_TP)
SEC("raw_tp/tcp_probe")
int BPF_PROG(rtt_raw_tp, struct sock *sk) { return handle_rcv_established(sk); }
#elif defined(TCPRTT_TRACEPOINT)
SEC("tracepoint/tcp/tcp_probe")
int rtt_tp(struct trace_event_raw_tcp_probe *ctx) { return handle_rcv_established((struct sock *)ctx->skaddr); }
#else
#error "define one of TCPRTT_FENTRY, TCPRTT_KPROBE, TCPRTT_RAW_TP, TCPRTT_TRACEPOINT"
#endif

char LICENSE[] SEC("license") = "GPL";
