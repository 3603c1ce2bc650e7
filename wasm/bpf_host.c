/* The wasm-bpf host interface: the six imports and thin wrappers. Strings
 * are NUL-terminated in linear memory; the attach target is an empty string
 * rather than 0, which some hosts turn into the start of memory. */
#include "bpf_host.h"

#include <stddef.h>

#define IMPORT(name) __attribute__((import_module("wasm_bpf"), import_name(#name)))

IMPORT(wasm_load_bpf_object) uint64_t wasm_load_bpf_object(const void *obj, int len);
IMPORT(wasm_attach_bpf_program) int wasm_attach_bpf_program(uint64_t obj, const char *name,
							     const char *target);
IMPORT(wasm_bpf_map_fd_by_name) int wasm_bpf_map_fd_by_name(uint64_t obj, const char *name);
IMPORT(wasm_bpf_map_operate) int wasm_bpf_map_operate(int fd, int cmd, const void *key,
						       void *value, void *next_key,
						       uint64_t flags);
IMPORT(wasm_close_bpf_object) int wasm_close_bpf_object(uint64_t obj);

enum map_cmd { MAP_LOOKUP = 1, MAP_UPDATE = 2, MAP_DELETE = 3, MAP_NEXT_KEY = 4 };

bpf_handle host_load(const void *elf, int size)
{
	return wasm_load_bpf_object(elf, size);
}

int host_attach(bpf_handle obj, const char *prog)
{
	return wasm_attach_bpf_program(obj, prog, "");
}

int host_map_fd(bpf_handle obj, const char *name)
{
	return wasm_bpf_map_fd_by_name(obj, name);
}

int host_map_lookup(int fd, const void *key, void *value)
{
	return wasm_bpf_map_operate(fd, MAP_LOOKUP, key, value, NULL, 0);
}

int host_map_next_key(int fd, const void *key, void *next_key)
{
	return wasm_bpf_map_operate(fd, MAP_NEXT_KEY, key, NULL, next_key, 0);
}

void host_close(bpf_handle obj)
{
	if (obj)
		wasm_close_bpf_object(obj);
}

const char *linux_errno_name(int err)
{
	static const struct {
		int err;
		const char *name;
	} names[] = {
		{1, "EPERM"},	{2, "ENOENT"},	{3, "ESRCH"},	 {7, "E2BIG"},
		{9, "EBADF"},	{12, "ENOMEM"}, {13, "EACCES"},	 {14, "EFAULT"},
		{16, "EBUSY"},	{17, "EEXIST"}, {19, "ENODEV"},	 {22, "EINVAL"},
		{28, "ENOSPC"}, {38, "ENOSYS"}, {95, "EOPNOTSUPP"}, {524, "ENOTSUPP"},
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].err == err)
			return names[i].name;
	return "an unknown errno";
}
