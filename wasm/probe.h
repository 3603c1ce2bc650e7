/* The probe: the embedded objects, tried in order until one loads and
 * attaches, and its maps read. */
#ifndef TCPRTT_PROBE_H
#define TCPRTT_PROBE_H

#include <stddef.h>

#include "args.h"
#include "bpf_host.h"
#include "hist.h"

#define MAX_ATTEMPTS 16

struct probe {
	bpf_handle obj;
	int hists_fd, dropped_fd;
	const char *variant;
	unsigned char *elf;	/* the patched copy the object was loaded from */
	/* Why each other object was not used, one line each: "kprobe
	 * (arm64): ...". */
	char tried[MAX_ATTEMPTS][200];
	int ntried;
};

/* Load and attach the first object that works among those `opts->attach`
 * allows; 0, or -1 with the reasons in p->tried. */
int probe_open(struct probe *p, const struct options *opts);
/* Every entry of the histogram map, cumulative; 0, or a negative errno. */
int probe_read(struct probe *p, struct snapshot *out);
/* Samples the probe dropped because the key map was full. */
unsigned long long probe_dropped(struct probe *p);
void probe_close(struct probe *p);

#endif
