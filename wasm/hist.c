/* Histograms as data: decoding, interval deltas, percentiles. */
#include "hist.h"

#include <stdlib.h>
#include <string.h>

/* The map's integers are in the byte order of the host that BPF runs on,
 * little-endian on the x86_64 and arm64 hosts the module ships for, as wasm
 * memory is: a copy reads them. */
static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
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
	uint32_t slots[HIST_SLOTS];
	uint16_t family;

	memcpy(&family, key + HIST_KEY_FAMILY, sizeof(family));
	h->family = family;
	memcpy(h->addr, key + HIST_KEY_ADDR, 16);
	h->latency = (long long)get_u64(value + HIST_LATENCY);
	h->cnt = (long long)get_u64(value + HIST_CNT);
	memcpy(slots, value + HIST_SLOTS_AT, sizeof(slots));
	for (int i = 0; i < HIST_SLOTS; i++)
		h->slots[i] = slots[i];
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

static int by_key_ref(const void *a, const void *b)
{
	return by_key(*(const struct hist *const *)a, *(const struct hist *const *)b);
}

int intervals_step(struct intervals *iv, struct snapshot *now)
{
	struct snapshot copy = {0};
	const struct hist **order;

	/* The copy of the cumulative counts is kept sorted by key for the
	 * next step's lookups; pointers are sorted, not the large entries. */
	if (now->n) {
		order = malloc(now->n * sizeof(*order));
		copy.items = malloc(now->n * sizeof(*copy.items));
		if (!order || !copy.items) {
			free(order);
			free(copy.items);
			return -1;
		}
		for (size_t i = 0; i < now->n; i++)
			order[i] = &now->items[i];
		qsort(order, now->n, sizeof(*order), by_key_ref);
		for (size_t i = 0; i < now->n; i++)
			copy.items[i] = *order[i];
		copy.n = copy.cap = now->n;
		free(order);
	}
	for (size_t i = 0; i < now->n && iv->last.n; i++) {
		struct hist *h = &now->items[i];
		const struct hist *was = bsearch(h, iv->last.items, iv->last.n, sizeof(*h), by_key);

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
