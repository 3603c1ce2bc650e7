/* Histograms: one key's counts, snapshots of the map, interval deltas. */
#ifndef TCPRTT_HIST_H
#define TCPRTT_HIST_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct hist {
	uint8_t key[HIST_KEY_SIZE];	/* the map's key, raw: its identity */
	int family;
	uint8_t addr[16];
	long long latency, cnt;
	long long slots[HIST_SLOTS];
};

struct snapshot {
	struct hist *items;
	size_t n, cap;
};

/* Decode a map entry and append it; -1 when out of memory. */
int snapshot_add(struct snapshot *s, const uint8_t *key, const uint8_t *value);
void snapshot_free(struct snapshot *s);
long long hist_total(const struct hist *h);

/* Turns cumulative snapshots into per-interval histograms: each interval
 * is the difference of two reads, and the map is never cleared, so no
 * sample falls between a read and a clear. */
struct intervals {
	struct snapshot last;
};

/* `now` becomes the interval since the previous step; the intervals keep
 * a copy of the cumulative counts. -1 when out of memory. */
int intervals_step(struct intervals *iv, struct snapshot *now);
void intervals_free(struct intervals *iv);

/* The q-quantile estimated from log2 slots, as the runner estimates it;
 * 0 when the histogram is empty (callers test the total first). */
double percentile(const long long *slots, int n, double q);

#endif
