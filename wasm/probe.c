/* Loading: each embedded object in the runner's order of attach variants
 * (config.json's; an architecture-specific one once per architecture, as a
 * module cannot tell which architecture its host runs on), a patched copy
 * loaded, its one program attached. Reading: the histogram map walked with
 * get_next_key from an all-zero key, the key no entry has. */
#include "probe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "objects.h"
#include "rodata.h"

#define N_OBJECTS (sizeof(object_specs) / sizeof(object_specs[0]))
/* More steps than the map has entries: a walk that does not end is a bug. */
#define MAX_WALK (4 * 1024 * 1024)

static void object_name(const struct object_spec *spec, char *buf, size_t size)
{
	snprintf(buf, size, spec->arch[0] ? "%s (%s)" : "%s%s", spec->variant, spec->arch);
}

static void note(struct probe *p, const struct object_spec *spec, const char *fmt, int err)
{
	char name[48];

	if (p->ntried == MAX_ATTEMPTS)
		return;
	object_name(spec, name, sizeof(name));
	snprintf(p->tried[p->ntried++], sizeof(p->tried[0]), "%s: %s", name, fmt);
	if (err) {
		size_t at = strlen(p->tried[p->ntried - 1]);

		snprintf(p->tried[p->ntried - 1] + at, sizeof(p->tried[0]) - at, " (%s, %d)",
			 linux_errno_name(-err), err);
	}
}

/* 0 when `spec` loads and attaches; p holds it then. */
static int try_object(struct probe *p, const struct object_spec *spec,
		      const struct options *opts)
{
	unsigned char *elf = malloc(spec->size);
	bpf_handle obj;
	int err;

	if (!elf) {
		note(p, spec, "out of memory", 0);
		return -1;
	}
	memcpy(elf, spec->elf, spec->size);
	rodata_patch(spec, opts, elf);
	obj = host_load(elf, (int)spec->size);
	if (!obj) {
		note(p, spec, "failed to load (the kernel or libbpf refused the object; "
			      "the host gives no reason)", 0);
		free(elf);
		return -1;
	}
	err = host_attach(obj, spec->prog);
	if (err < 0) {
		note(p, spec, "loaded, but failed to attach", err);
		host_close(obj);
		free(elf);
		return -1;
	}
	p->hists_fd = host_map_fd(obj, HIST_MAP);
	p->dropped_fd = host_map_fd(obj, DROPPED_MAP);
	if (p->hists_fd < 0) {
		note(p, spec, "has no " HIST_MAP " map", 0);
		host_close(obj);
		free(elf);
		return -1;
	}
	p->obj = obj;
	p->elf = elf;
	p->variant = spec->variant;
	return 0;
}

int probe_open(struct probe *p, const struct options *opts)
{
	bool auto_attach = !strcmp(opts->attach, "auto");
	size_t i;

	memset(p, 0, sizeof(*p));
	p->hists_fd = p->dropped_fd = -1;
	for (i = 0; i < N_OBJECTS; i++) {
		const struct object_spec *spec = &object_specs[i];

		if (!auto_attach && strcmp(spec->variant, opts->attach))
			continue;
		if (try_object(p, spec, opts) == 0)
			break;
	}
	if (!p->obj)
		return -1;
	/* The others were not needed; say so, so that -v accounts for each. */
	for (i++; auto_attach && i < N_OBJECTS; i++) {
		char why[64];

		snprintf(why, sizeof(why), "not tried: %s attached first", p->variant);
		note(p, &object_specs[i], why, 0);
	}
	return 0;
}

int probe_read(struct probe *p, struct snapshot *out)
{
	uint8_t key[HIST_KEY_SIZE] = {0}, next[HIST_KEY_SIZE];
	uint8_t value[HIST_VALUE_SIZE];
	int err;

	out->n = 0;
	/* A walk never returns the key it starts from: should an entry have
	 * the all-zero key (a probe older than KEY_FAMILY_ALL), read it too. */
	if (host_map_lookup(p->hists_fd, key, value) == 0 && snapshot_add(out, key, value))
		return -12;
	for (long steps = 0; steps < MAX_WALK; steps++) {
		err = host_map_next_key(p->hists_fd, key, next);
		if (err == -2)
			return 0; /* the end of the map */
		if (err < 0)
			return err;
		err = host_map_lookup(p->hists_fd, next, value);
		if (err == 0 && snapshot_add(out, next, value))
			return -12;
		if (err < 0 && err != -2)
			return err;
		memcpy(key, next, sizeof(key));
	}
	return -7; /* E2BIG: the walk did not end */
}

unsigned long long probe_dropped(struct probe *p)
{
	uint32_t zero = 0;
	uint64_t count = 0;

	if (p->dropped_fd < 0 || host_map_lookup(p->dropped_fd, &zero, &count) < 0)
		return 0;
	return count;
}

void probe_close(struct probe *p)
{
	host_close(p->obj);
	p->obj = 0;
	free(p->elf);
	p->elf = NULL;
}
