// SPDX-License-Identifier: GPL-2.0
/* Test-only programs for the loader's diagnostics (tests/test_diagnostics.py):
 * built with clang -target bpf and one of the -D below, never shipped.
 *   -DREFUSED          reads past a map value: the verifier refuses it
 *   -DUNKNOWN_HELPER   calls a helper no kernel has: not supported
 *   (neither)          a program the verifier accepts
 */
typedef unsigned int __u32;
#define SEC(n) __attribute__((section(n), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

struct hist { __u32 slots[4]; };
struct {
    __uint(type, 1);              /* BPF_MAP_TYPE_HASH */
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, struct hist);
} hists SEC(".maps");

static void *(*lookup)(void *map, const void *key) = (void *)1;
#ifdef UNKNOWN_HELPER
static long (*no_such_helper)(void) = (void *)100000;
#endif

SEC("raw_tp/tcp_probe")
int diag_prog(void *ctx)
{
    __u32 key = 0;
    struct hist *h = lookup(&hists, &key);
    volatile __u32 *slot;

    if (!h)
        return 0;
    h->slots[0]++;
    h->slots[1]++;
    slot = (volatile __u32 *)h;
#ifdef REFUSED
    return slot[8];       /* bytes 32..35 of a 16-byte value */
#elif defined(UNKNOWN_HELPER)
    return no_such_helper() + slot[0];
#else
    return slot[3];
#endif
}

char LICENSE[] SEC("license") = "GPL";
