/* Rendering, as runner/run.py render_interval with runner/render/text.py
 * and json.py: keyed histograms that counted nothing are left out, rows are
 * sorted by address text, an unkeyed interval always prints. Pure. */
#include "render.h"

#include <stdlib.h>
#include <string.h>

#include "addr.h"

#define STARS 40

struct row {
	const struct hist *hist;
	size_t order;		/* ties keep the map's order, as a stable sort does */
	bool has_address;	/* false: not keyed, or a family with no address */
	char address[48];
};

static const char *label(const struct options *o)
{
	return o->byladdr ? "Local Address" : o->byraddr ? "Remote Address" : "All Addresses";
}

static bool keyed(const struct options *o)
{
	return o->byladdr || o->byraddr;
}

static const char *family_name(int family)
{
	return family == AF_INET_LINUX ? "ipv4" : family == AF_INET6_LINUX ? "ipv6" : NULL;
}

static int by_address(const void *a, const void *b)
{
	const struct row *x = a, *y = b;
	int c = (int)!x->has_address - (int)!y->has_address;

	if (!c && x->has_address)
		c = strcmp(x->address, y->address);
	return c ? c : (x->order > y->order) - (x->order < y->order);
}

static void log2_hist(FILE *out, const long long *slots, int n, const char *unit)
{
	int idx_max = n - 1, stars, width;
	long long val_max = 0;
	bool wide;

	while (idx_max >= 0 && slots[idx_max] <= 0)
		idx_max--;
	if (idx_max < 0)
		return;
	for (int i = 0; i <= idx_max; i++)
		if (slots[i] > val_max)
			val_max = slots[i];
	wide = idx_max > 32;
	stars = wide ? STARS / 2 : STARS;
	width = wide ? 20 : 10;
	fprintf(out, "%*s%-*s : count    distribution\n", wide ? 15 : 5, "", wide ? 29 : 19,
		unit);
	for (int i = 0; i <= idx_max; i++) {
		unsigned long long low = (1ULL << (i + 1)) >> 1, high = (1ULL << (i + 1)) - 1;
		long long val = slots[i] > 0 ? slots[i] : 0;
		int k = (int)(val * stars / val_max);

		if (low == high)
			low--;
		fprintf(out, "%*llu -> %-*llu : %-8lld |%.*s%*s|\n", width, low, width, high,
			slots[i], k, "****************************************", stars - k, "");
	}
}

static void json_number(FILE *out, const char *key, bool present, double value)
{
	if (present)
		fprintf(out, ",\"%s\":%.1f", key, value);
	else
		fprintf(out, ",\"%s\":null", key);
}

static void json_string(FILE *out, const char *key, const char *value)
{
	if (value)
		fprintf(out, ",\"%s\":\"%s\"", key, value);
	else
		fprintf(out, ",\"%s\":null", key);
}

static void json_record(FILE *out, const struct options *o, const struct row *r,
			const char *stamp)
{
	const struct hist *h = r->hist;
	long long total = hist_total(h);
	static const double qs[3] = {0.50, 0.90, 0.99};
	static const char *const names[3] = {"p50", "p90", "p99"};

	fprintf(out, "{\"time\":\"%s\"", stamp);
	json_string(out, "label", label(o));
	json_string(out, "address", r->has_address ? r->address : NULL);
	json_string(out, "family", keyed(o) ? family_name(h->family) : NULL);
	json_string(out, "unit", o->milliseconds ? "msecs" : "usecs");
	fprintf(out, ",\"count\":%lld", total);
	if (o->extension)
		fprintf(out, ",\"sum\":%lld", h->latency);
	else
		fprintf(out, ",\"sum\":null");
	json_number(out, "avg", o->extension && h->cnt,
		    h->cnt ? (double)h->latency / (double)h->cnt : 0);
	fprintf(out, ",\"slots\":[");
	for (int i = 0; i < HIST_SLOTS; i++)
		fprintf(out, "%s%lld", i ? "," : "", h->slots[i]);
	fprintf(out, "]");
	for (int i = 0; i < 3; i++)
		json_number(out, names[i], total > 0, percentile(h->slots, HIST_SLOTS, qs[i]));
	fprintf(out, "}\n");
}

static void text_section(FILE *out, const struct options *o, const struct row *r)
{
	const struct hist *h = r->hist;

	fprintf(out, "%s = %s ", label(o), r->has_address ? r->address : "******");
	if (o->extension)
		fprintf(out, "[AVG %lld]", h->cnt ? h->latency / h->cnt : 0);
	fprintf(out, "\n");
	log2_hist(out, h->slots, HIST_SLOTS, o->milliseconds ? "msecs" : "usecs");
}

void render_interval(FILE *out, const struct options *o, const struct snapshot *interval,
		     time_t when)
{
	static const struct hist zero;
	struct row *rows = calloc(interval->n + 1, sizeof(*rows));
	size_t n = 0;
	struct tm tm;
	char stamp[40];

	if (!rows)
		return;
	for (size_t i = 0; i < interval->n; i++) {
		const struct hist *h = &interval->items[i];
		struct row *r = &rows[n];

		if (keyed(o) && hist_total(h) == 0)
			continue;
		r->hist = h;
		r->order = n;
		if (keyed(o) && family_name(h->family)) {
			format_address(h->family, h->addr, r->address, sizeof(r->address));
			r->has_address = true;
		}
		n++;
	}
	if (!keyed(o) && n == 0)
		rows[n++].hist = &zero;
	qsort(rows, n, sizeof(*rows), by_address);
	gmtime_r(&when, &tm);
	if (o->json) {
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S+00:00", &tm);
		for (size_t i = 0; i < n; i++)
			json_record(out, o, &rows[i], stamp);
	} else {
		fprintf(out, "\n");
		if (o->timestamp) {
			strftime(stamp, sizeof(stamp), "%H:%M:%S", &tm);
			fprintf(out, "%s\n", stamp);
		}
		for (size_t i = 0; i < n; i++)
			text_section(out, o, &rows[i]);
	}
	free(rows);
}
