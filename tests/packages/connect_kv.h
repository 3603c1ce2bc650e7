/* The value connect_kv.bpf.c keeps per key. */
#ifndef CONNECT_KV_H
#define CONNECT_KV_H

struct conn_stats {
	__u64 connects;
	__u32 last_addr;
};

#endif
