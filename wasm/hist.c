/* Histograms as data: decoding, interval deltas, percentiles. */
#include "hist.h"

#include <stdlib.h>
#include <string.h>

static uint64_t get_le(const uint8_t *p, int size)
{
	uint64_t v = 0;

	for (int i = size - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

int snapshot_add(struct snapshot *s, const uint8_t *key, const uint8_t *value)
{
	struct hist *h;

	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 64;
		struct hist *items = realloc(s->items, cap * sizeof(*items));

		if (!items)
			return -1;
		s->items = items;
		s->cap = cap;
	}
	h = &s->items[s->n++];
	memcpy(h->key, key, HIST_KEY_SIZE);
	h->family = (int)get_le(key + HIST_KEY_FAMILY, 2);
	memcpy(h->addr, key + HIST_KEY_ADDR, 16);
	h->latency = (long long)get_le(value + HIST_LATENCY, 8);
	h->cnt = (long long)get_le(value + HIST_CNT, 8);
	for (int i = 0; i < HIST_SLOTS; i++)
		h->slots[i] = (long long)get_le(value + HIST_SLOTS_AT + 4 * i, 4);
	return 0;
}

void snapshot_free(struct snapshot *s)
{
	free(s->items);
	memset(s, 0, sizeof(*s));
}

long long hist_total(const struct hist *h)
{
	long long total = 0;

	for (int i = 0; i < HIST_SLOTS; i++)
		total += h->slots[i];
	return total;
}

static int by_key(const void *a, const void *b)
{
	return memcmp(((const struct hist *)a)->key, ((const struct hist *)b)->key, HIST_KEY_SIZE);
}

int intervals_step(struct intervals *iv, struct snapshot *now)
{
	struct snapshot copy = {0};

	qsort(now->items, now->n, sizeof(*now->items), by_key);
	if (now->n) {
		copy.items = malloc(now->n * sizeof(*copy.items));
		if (!copy.items)
			return -1;
		memcpy(copy.items, now->items, now->n * sizeof(*copy.items));
		copy.n = copy.cap = now->n;
	}
	for (size_t i = 0; i < now->n; i++) {
		struct hist *h = &now->items[i];
		const struct hist *was = iv->last.n ? bsearch(h, iv->last.items, iv->last.n,
							       sizeof(*h), by_key)
						    : NULL;

		if (!was)
			continue;
		h->latency -= was->latency;
		h->cnt -= was->cnt;
		for (int s = 0; s < HIST_SLOTS; s++)
			h->slots[s] -= was->slots[s];
	}
	snapshot_free(&iv->last);
	iv->last = copy;
	return 0;
}

void intervals_free(struct intervals *iv)
{
	snapshot_free(&iv->last);
}

/* The rank is found exactly; within its slot the samples are taken as
 * spread evenly from the slot's lower bound to the next slot's, capped at
 * the slot's upper bound. The arithmetic is the runner's, operation for
 * operation, so that the rounded figures agree. */
double percentile(const long long *slots, int n, double q)
{
	long long total = 0, cum = 0;
	double rank;

	for (int i = 0; i < n; i++)
		total += slots[i];
	if (total == 0)
		return 0;
	rank = q * (double)total;
	for (int i = 0; i < n; i++) {
		cum += slots[i];
		if ((double)cum >= rank) {
			long long low = i ? 1LL << i : 0, high = i ? (1LL << (i + 1)) - 1 : 1;
			double v = (double)low + (double)(high + 1 - low) *
						 (rank - (double)(cum - slots[i])) /
						 (double)slots[i];

			return v < (double)high ? v : (double)high;
		}
	}
	return (double)((1LL << n) - 1);
}
