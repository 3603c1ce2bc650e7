// SPDX-License-Identifier: GPL-2.0
/* tcprtt: a log2 histogram of the smoothed RTT of established TCP sockets,
 * sampled each time the kernel handles a segment in tcp_rcv_established. */
#include "kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "tcprtt.h"

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/// local port to trace, host byte order (0: any)
const volatile int targ_sport = 0;
/// remote port to trace, host byte order (0: any)
const volatile int targ_dport = 0;
/// local IPv4 address to trace, as a host-order integer (0: any)
const volatile unsigned long long targ_saddr = 0;
/// remote IPv4 address to trace, as a host-order integer (0: any)
const volatile unsigned long long targ_daddr = 0;
/// local IPv6 address to trace, its first 8 bytes as a host-order integer (both halves 0: any)
const volatile unsigned long long targ_saddr_v6_hi = 0;
/// local IPv6 address to trace, its last 8 bytes as a host-order integer (both halves 0: any)
const volatile unsigned long long targ_saddr_v6_lo = 0;
/// remote IPv6 address to trace, its first 8 bytes as a host-order integer (both halves 0: any)
const volatile unsigned long long targ_daddr_v6_hi = 0;
/// remote IPv6 address to trace, its last 8 bytes as a host-order integer (both halves 0: any)
const volatile unsigned long long targ_daddr_v6_lo = 0;
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
/// unkeyed, samples go to the per-CPU map hist_cpu; set by the runner
const volatile bool targ_percpu = false;
/// with -b, low bits of an IPv4 key cleared: 32 minus the prefix length (0: whole address)
const volatile int targ_laddr4_clear = 0;
/// with -b, low bits of an IPv6 key cleared: 128 minus the prefix length (0: whole address)
const volatile int targ_laddr6_clear = 0;
/// with -B, low bits of an IPv4 key cleared: 32 minus the prefix length (0: whole address)
const volatile int targ_raddr4_clear = 0;
/// with -B, low bits of an IPv6 key cleared: 128 minus the prefix length (0: whole address)
const volatile int targ_raddr6_clear = 0;

/* Keyed, an LRU hash: a new key takes the place of the one least recently
 * used when the map is full, so the map holds the active peers. */
/// @sample {"interval": 1000, "type": "log2_hist"}
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_ENTRIES);
	__type(key, struct hist_key);
	__type(value, struct hist);
} hists SEC(".maps");

/* The unkeyed histogram, one copy per CPU: no shared cache line, no
 * atomics. Only the runner reads it (targ_percpu); ecli reads hists. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hist);
} hist_cpu SEC(".maps");

/* Samples that found no room for their key in a full hists map. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

/* Keys added to hists: those an eviction took are this count less the
 * entries present when the runner reads. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} new_keys SEC(".maps");

/* Settings live in frozen .rodata, so the verifier sees these as constants
 * and prunes every branch of a filter that is off: a run pays only for
 * what the settings ask for. */
/* An IPv6 filter is the address as a 128-bit host-order integer in two
 * halves, each a type that ecli parses; the address's words are in network
 * order, word 0 the top 32 bits of hi. */
static __always_inline bool v6_equal(const __u32 *a, __u64 hi, __u64 lo)
{
	return a[0] == bpf_htonl((__u32)(hi >> 32)) && a[1] == bpf_htonl((__u32)hi) &&
	       a[2] == bpf_htonl((__u32)(lo >> 32)) && a[3] == bpf_htonl((__u32)lo);
}

static __always_inline bool v4_mapped(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

/* floor(log2(v)), 0 for 0: a binary search by branches, which the CPU
 * predicts well, since one connection's RTT changes slowly. */
static __always_inline __u32 log2_u32(__u32 v)
{
	__u32 r = 0;

	if (v >= 1U << 16) {
		v >>= 16;
		r += 16;
	}
	if (v >= 1U << 8) {
		v >>= 8;
		r += 8;
	}
	if (v >= 1U << 4) {
		v >>= 4;
		r += 4;
	}
	if (v >= 1U << 2) {
		v >>= 2;
		r += 2;
	}
	return r + (v >> 1);
}

/*
 * One segment's socket as the handler sees it, and how to read it; `how`
 * is a constant in each entry, so each inlined copy of the handler carries
 * only its own way of reading:
 * - FROM_RECORD (tracepoint): the record already holds what the kernel read
 *   from the socket (ports, addresses as a sockaddr, srtt): plain loads.
 * - TYPED (raw tracepoint, BTF-typed tracepoint): typed views of the socket,
 *   read by plain loads, CO-RE relocated, faulting safely. The raw
 *   tracepoint gets them from bpf_rdonly_cast(); the BTF-typed tracepoint's
 *   argument is one already, and bpf_skc_to_tcp_sock() gives its tcp_sock.
 * - PROBE_READ (fentry, kprobe): BPF_CORE_READ, a helper call per field.
 * (Each accessor copies the socket pointer to a local first: inside
 * BPF_CORE_READ, s->sk would be relocated as if seg were a kernel type.)
 */
enum how { FROM_RECORD, TYPED, PROBE_READ };

struct seg {
	enum how how;
	struct sock *sk;			/* PROBE_READ */
	const struct sock *ro;			/* TYPED */
	const struct tcp_sock *ro_tcp;		/* TYPED */
	const struct trace_event_raw_tcp_probe *rec;	/* FROM_RECORD */
};

/* The record's addresses are a sockaddr_in or sockaddr_in6. The record is
 * read only by loads at constant offsets (the verifier refuses a computed
 * pointer into it), and only aligned: IPv6 addresses go in words. */
#define SIN_ADDR 4
#define SIN6_ADDR 8
#define REC_ADDR(rec, field, family, addr)						\
	do {										\
		if ((family) == AF_INET) {						\
			(addr)[0] = *(const __u32 *)&(rec)->field[SIN_ADDR];		\
		} else {								\
			(addr)[0] = *(const __u32 *)&(rec)->field[SIN6_ADDR];		\
			(addr)[1] = *(const __u32 *)&(rec)->field[SIN6_ADDR + 4];	\
			(addr)[2] = *(const __u32 *)&(rec)->field[SIN6_ADDR + 8];	\
			(addr)[3] = *(const __u32 *)&(rec)->field[SIN6_ADDR + 12];	\
		}									\
	} while (0)
#define TYPED_V6(ro, field, addr)							\
	do {										\
		(addr)[0] = (ro)->__sk_common.field.in6_u.u6_addr32[0];		\
		(addr)[1] = (ro)->__sk_common.field.in6_u.u6_addr32[1];		\
		(addr)[2] = (ro)->__sk_common.field.in6_u.u6_addr32[2];		\
		(addr)[3] = (ro)->__sk_common.field.in6_u.u6_addr32[3];		\
	} while (0)

static __always_inline __u16 seg_family(const struct seg *s)
{
	struct sock *sk = s->sk;

	if (s->how == FROM_RECORD)
		return *(const __u16 *)&s->rec->saddr[0];
	if (s->how == TYPED)
		return s->ro->__sk_common.skc_family;
	return BPF_CORE_READ(sk, __sk_common.skc_family);
}

static __always_inline __u16 seg_lport(const struct seg *s)
{
	struct sock *sk = s->sk;

	if (s->how == FROM_RECORD)
		return s->rec->sport;
	if (s->how == TYPED)
		return s->ro->__sk_common.skc_num;
	return BPF_CORE_READ(sk, __sk_common.skc_num);
}

static __always_inline __u16 seg_rport(const struct seg *s)
{
	struct sock *sk = s->sk;

	if (s->how == FROM_RECORD)
		return s->rec->dport;
	if (s->how == TYPED)
		return bpf_ntohs(s->ro->__sk_common.skc_dport);
	return bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
}

static __always_inline __u32 seg_srtt(const struct seg *s)
{
	struct tcp_sock *tp = (struct tcp_sock *)s->sk;

	if (s->how == FROM_RECORD)
		return s->rec->srtt;
	if (s->how == TYPED)
		return s->ro_tcp->srtt_us >> 3;
	return BPF_CORE_READ(tp, srtt_us) >> 3;
}

/* The local (remote) address: IPv4 in addr[0], IPv6 in addr[0..3]. */
static __always_inline void seg_addr(const struct seg *s, bool local, __u16 family,
				     __u32 addr[4])
{
	struct sock *sk = s->sk;

	if (s->how == FROM_RECORD) {
		if (local)
			REC_ADDR(s->rec, saddr, family, addr);
		else
			REC_ADDR(s->rec, daddr, family, addr);
	} else if (s->how == TYPED) {
		if (family == AF_INET)
			addr[0] = local ? s->ro->__sk_common.skc_rcv_saddr
					: s->ro->__sk_common.skc_daddr;
		else if (local)
			TYPED_V6(s->ro, skc_v6_rcv_saddr, addr);
		else
			TYPED_V6(s->ro, skc_v6_daddr, addr);
	} else if (family == AF_INET) {
		addr[0] = local ? BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr)
				: BPF_CORE_READ(sk, __sk_common.skc_daddr);
	} else if (local) {
		BPF_CORE_READ_INTO((struct in6_addr *)addr, sk, __sk_common.skc_v6_rcv_saddr);
	} else {
		BPF_CORE_READ_INTO((struct in6_addr *)addr, sk, __sk_common.skc_v6_daddr);
	}
}

/* Whether an address passes its filters; a v4-mapped IPv6 address is
 * tested, and keyed, as the IPv4 address it maps. */
static __always_inline bool addr_ok(__u16 family, const __u32 addr[4],
				    unsigned long long want4, unsigned long long want6_hi,
				    unsigned long long want6_lo)
{
	bool v4 = family == AF_INET || v4_mapped(addr);
	__u32 a4 = family == AF_INET ? addr[0] : addr[3];

	if (want4 && (!v4 || a4 != bpf_htonl((__u32)want4)))
		return false;
	if ((want6_hi || want6_lo) && (v4 || !v6_equal(addr, want6_hi, want6_lo)))
		return false;
	return true;
}

/* A key's family and address words (IPv4 in word 0, the rest zero); a
 * v4-mapped address becomes the IPv4 address it maps. */
static __always_inline __u16 key_words(__u16 family, const __u32 addr[4], __u32 words[4])
{
	if (family == AF_INET || v4_mapped(addr)) {
		words[0] = family == AF_INET ? addr[0] : addr[3];
		return AF_INET;
	}
	words[0] = addr[0];
	words[1] = addr[1];
	words[2] = addr[2];
	words[3] = addr[3];
	return AF_INET6;
}

/* A mask for one word of an address in network order that keeps its
 * first `keep` bits (none for keep <= 0, all for keep >= 32). */
static __always_inline __u32 word_mask(int keep)
{
	if (keep <= 0)
		return 0;
	if (keep >= 32)
		return 0xffffffffU;
	return bpf_htonl(0xffffffffU << (32 - keep));
}

/* A key's address cut to its prefix: `clear` low bits set to zero. */
static __always_inline void key_prefix(__u16 family, __u32 words[4], int clear4, int clear6)
{
	if (family == AF_INET) {
		if (clear4)
			words[0] &= word_mask(32 - clear4);
		return;
	}
	if (clear6) {
		int keep = 128 - clear6;

		words[0] &= word_mask(keep);
		words[1] &= word_mask(keep - 32);
		words[2] &= word_mask(keep - 64);
		words[3] &= word_mask(keep - 96);
	}
}

static __always_inline void add_sample(struct hist *histp, __u32 srtt, bool shared)
{
	__u32 slot;

	if (targ_ms)
		srtt /= 1000U;
	slot = log2_u32(srtt);
	if (slot >= MAX_SLOTS)
		slot = MAX_SLOTS - 1;
	if (shared) {
		__sync_fetch_and_add(&histp->slots[slot], 1);
		if (targ_show_ext) {
			__sync_fetch_and_add(&histp->latency, srtt);
			__sync_fetch_and_add(&histp->cnt, 1);
		}
	} else {
		/* This CPU's own copy: a program does not run twice at once on
		 * one CPU (the kernel skips a nested run), so plain adds. */
		histp->slots[slot]++;
		if (targ_show_ext) {
			histp->latency += srtt;
			histp->cnt++;
		}
	}
}

#if defined(TCPRTT_KPROBE)
/* A kprobe's first argument, read from the registers by a CO-RE relocated
 * field (kernel_types.h), not at PT_REGS_PARM1's fixed offset: an object
 * built for another architecture names a register this kernel's pt_regs
 * lacks, so libbpf poisons the load and the verifier refuses the program,
 * where a fixed offset would read another register. */
static __always_inline struct sock *kprobe_arg1(struct pt_regs *ctx)
{
#if defined(__TARGET_ARCH_x86)
	return (struct sock *)((struct pt_regs___x86_64 *)ctx)->di;
#elif defined(__TARGET_ARCH_arm64)
	return (struct sock *)((struct pt_regs___aarch64 *)ctx)->regs[0];
#else
#error "the kprobe variant is built for x86 or arm64"
#endif
}
#endif

static __always_inline int handle_rcv_established(const struct seg *s)
{
	__u32 laddr[4] = {}, raddr[4] = {};
	struct hist *histp;
	__u16 family = 0;
	__u32 idx = 0;

	if (targ_sport && targ_sport != seg_lport(s))
		return 0;
	if (targ_dport && targ_dport != seg_rport(s))
		return 0;

	if (targ_ipver || targ_saddr || targ_daddr || targ_saddr_v6_hi || targ_saddr_v6_lo ||
	    targ_daddr_v6_hi || targ_daddr_v6_lo || targ_laddr_hist || targ_raddr_hist) {
		family = seg_family(s);
		if (family != AF_INET && family != AF_INET6)
			return 0;
		seg_addr(s, true, family, laddr);
		seg_addr(s, false, family, raddr);
		if (targ_ipver) {
			bool v4 = family == AF_INET || v4_mapped(raddr);

			if ((targ_ipver == 4 && !v4) || (targ_ipver == 6 && v4))
				return 0;
		}
		if (!addr_ok(family, laddr, targ_saddr, targ_saddr_v6_hi, targ_saddr_v6_lo) ||
		    !addr_ok(family, raddr, targ_daddr, targ_daddr_v6_hi, targ_daddr_v6_lo))
			return 0;
	}

	if (targ_percpu && !targ_laddr_hist && !targ_raddr_hist) {
		histp = bpf_map_lookup_elem(&hist_cpu, &idx);
		if (histp)
			add_sample(histp, seg_srtt(s), false);
		return 0;
	}

	struct hist_key key = {.family = KEY_FAMILY_ALL};
	__u64 *counter;

	if (targ_laddr_hist || targ_raddr_hist) {
		__u32 words[4] = {};

		key.family = key_words(family, targ_laddr_hist ? laddr : raddr, words);
		if (targ_laddr_hist)
			key_prefix(key.family, words, targ_laddr4_clear, targ_laddr6_clear);
		else
			key_prefix(key.family, words, targ_raddr4_clear, targ_raddr6_clear);
		__builtin_memcpy(key.addr, words, IPV6_LEN);
	}

	histp = bpf_map_lookup_elem(&hists, &key);
	if (!histp) {
		struct hist zero = {};

		/* Full, the LRU map evicts its least recently used key for this
		 * one; another CPU may have added it meanwhile (-EEXIST). */
		if (!bpf_map_update_elem(&hists, &key, &zero, BPF_NOEXIST)) {
			counter = bpf_map_lookup_elem(&new_keys, &idx);
			if (counter)
				__sync_fetch_and_add(counter, 1);
		}
		histp = bpf_map_lookup_elem(&hists, &key);
	}
	if (histp) {
		add_sample(histp, seg_srtt(s), true);
		return 0;
	}
	/* No room: the LRU found nothing to evict, or the key was evicted
	 * again at once. */
	counter = bpf_map_lookup_elem(&dropped, &idx);
	if (counter)
		__sync_fetch_and_add(counter, 1);
	return 0;
}

#if defined(TCPRTT_FENTRY)
SEC("fentry/tcp_rcv_established")
int BPF_PROG(rtt_fentry, struct sock *sk)
{
	struct seg s = {.how = PROBE_READ, .sk = sk};

	return handle_rcv_established(&s);
}
#elif defined(TCPRTT_KPROBE)
SEC("kprobe/tcp_rcv_established")
int rtt_kprobe(struct pt_regs *ctx)
{
	struct seg s = {.how = PROBE_READ, .sk = kprobe_arg1(ctx)};

	return handle_rcv_established(&s);
}
#elif defined(TCPRTT_RAW_TP)
SEC("raw_tp/tcp_probe")
int BPF_PROG(rtt_raw_tp, struct sock *sk)
{
	struct seg s = {
		.how = TYPED,
		.ro = bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct sock)),
		.ro_tcp = bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct tcp_sock)),
	};

	return handle_rcv_established(&s);
}
#elif defined(TCPRTT_TP_BTF)
SEC("tp_btf/tcp_probe")
int BPF_PROG(rtt_tp_btf, struct sock *sk)
{
	/* The verifier types sk from the tracepoint's prototype in the
	 * kernel's BTF: its fields are read by plain loads. Those of the
	 * tcp_sock around it lie past struct sock, so the helper gives that
	 * view (NULL for a socket that is not TCP's, which never comes here). */
	struct tcp_sock *tp = sk ? bpf_skc_to_tcp_sock(sk) : NULL;
	struct seg s = {.how = TYPED, .ro = sk, .ro_tcp = tp};

	if (!tp)
		return 0;
	return handle_rcv_established(&s);
}
#elif defined(TCPRTT_TRACEPOINT)
SEC("tracepoint/tcp/tcp_probe")
int rtt_tp(struct trace_event_raw_tcp_probe *ctx)
{
	struct seg s = {.how = FROM_RECORD, .rec = ctx};

	return handle_rcv_established(&s);
}
#else
#error "define one of TCPRTT_FENTRY, TCPRTT_KPROBE, TCPRTT_RAW_TP, TCPRTT_TP_BTF, TCPRTT_TRACEPOINT"
#endif

char LICENSE[] SEC("license") = "GPL";
