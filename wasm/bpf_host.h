/* The wasm-bpf host interface (import module "wasm_bpf"), wrapped. */
#ifndef TCPRTT_BPF_HOST_H
#define TCPRTT_BPF_HOST_H

#include <stdint.h>

/* A loaded BPF object; 0 is no object. */
typedef uint64_t bpf_handle;

/* Load an ELF object (the host copies it): its handle, or 0 on failure,
 * for which the host gives no reason. */
bpf_handle host_load(const void *elf, int size);
/* Attach a program by its section name: 0, or a negative errno. */
int host_attach(bpf_handle obj, const char *prog);
/* A map's file descriptor, or a negative number. */
int host_map_fd(bpf_handle obj, const char *name);
/* 0, or a negative errno (-ENOENT: no such key, or no key after `key`). */
int host_map_lookup(int fd, const void *key, void *value);
int host_map_next_key(int fd, const void *key, void *next_key);
/* Detach and unload; harmless on 0. */
void host_close(bpf_handle obj);
/* "ENOENT" and the like for a Linux errno: the host's errnos are Linux's,
 * which WASI's strerror would misname. */
const char *linux_errno_name(int err);

#endif
