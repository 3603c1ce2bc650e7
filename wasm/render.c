/* Rendering, as runner/run.py render_interval with runner/render/text.py
 * and json.py: keyed histograms that counted nothing are left out, rows are
 * sorted by address text, an unkeyed interval always prints. Each report is
 * built in one buffer and written at once. */
#include "render.h"

#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "buf.h"

#define STARS 40
#define MAX_SLOT_ROWS 64

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
	const struct row *x = *(const struct row *const *)a, *y = *(const struct row *const *)b;
	int c = (int)!x->has_address - (int)!y->has_address;

	if (!c && x->has_address)
		c = strcmp(x->address, y->address);
	return c ? c : (x->order > y->order) - (x->order < y->order);
}

/* "         4 -> 7          : ", the fixed start of slot i's line, made
 * once per width: a keyed report prints thousands of tables. */
static const char *slot_head(bool wide, int i)
{
	static char heads[2][MAX_SLOT_ROWS][56];
	char *head = heads[wide][i];

	if (!head[0]) {
		struct buf b = {0};
		unsigned long long low = (1ULL << (i + 1)) >> 1, high = (1ULL << (i + 1)) - 1;
		int width = wide ? 20 : 10;

		if (low == high)
			low--;
		buf_uint_right(&b, low, width);
		buf_str(&b, " -> ");
		buf_int_left(&b, (long long)high, width);
		buf_str(&b, " : ");
		if (!b.failed && b.len < sizeof(heads[0][0]))
			memcpy(head, b.data, b.len);
		buf_free(&b);
	}
	return head;
}

static void log2_hist(struct buf *b, const long long *slots, int n, const char *unit)
{
	static const char stars[] = "****************************************";
	static const char blanks[] = "                                        ";
	int idx_max = n - 1, bar;
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
	bar = wide ? STARS / 2 : STARS;
	buf_put(b, blanks, wide ? 15 : 5);
	buf_str(b, unit);
	buf_put(b, blanks, (size_t)((wide ? 29 : 19) - (int)strlen(unit)));
	buf_str(b, " : count    distribution\n");
	for (int i = 0; i <= idx_max && i < MAX_SLOT_ROWS; i++) {
		long long val = slots[i] > 0 ? slots[i] : 0;
		int k = (int)(val * bar / val_max);

		buf_str(b, slot_head(wide, i));
		if (slots[i] == 0) { /* most rows: the same every time */
			buf_str(b, wide ? "0        |                    |\n"
					: "0        |                                        |\n");
			continue;
		}
		buf_int_left(b, slots[i], 8);
		buf_str(b, " |");
		buf_put(b, stars, (size_t)k);
		buf_put(b, blanks, (size_t)(bar - k));
		buf_str(b, "|\n");
	}
}

static void json_key(struct buf *b, const char *key)
{
	buf_str(b, ",\"");
	buf_str(b, key);
	buf_str(b, "\":");
}

static void json_string(struct buf *b, const char *key, const char *value)
{
	json_key(b, key);
	if (!value) {
		buf_str(b, "null");
		return;
	}
	buf_char(b, '"');
	buf_str(b, value); /* addresses, labels and units: nothing to escape */
	buf_char(b, '"');
}

static void json_fixed1(struct buf *b, const char *key, bool present, double value)
{
	json_key(b, key);
	if (present)
		buf_fixed1(b, value);
	else
		buf_str(b, "null");
}

static void json_record(struct buf *b, const struct options *o, const struct row *r,
			const char *stamp)
{
	static const double qs[3] = {0.50, 0.90, 0.99};
	static const char *const names[3] = {"p50", "p90", "p99"};
	const struct hist *h = r->hist;
	long long total = hist_total(h);

	buf_str(b, "{\"time\":\"");
	buf_str(b, stamp);
	buf_char(b, '"');
	json_string(b, "label", label(o));
	json_string(b, "address", r->has_address ? r->address : NULL);
	json_string(b, "family", keyed(o) ? family_name(h->family) : NULL);
	json_string(b, "unit", o->milliseconds ? "msecs" : "usecs");
	json_key(b, "count");
	buf_int(b, total);
	json_key(b, "sum");
	if (o->extension)
		buf_int(b, h->latency);
	else
		buf_str(b, "null");
	json_fixed1(b, "avg", o->extension && h->cnt,
		    h->cnt ? (double)h->latency / (double)h->cnt : 0);
	json_key(b, "slots");
	buf_char(b, '[');
	for (int i = 0; i < HIST_SLOTS; i++) {
		if (i)
			buf_char(b, ',');
		buf_int(b, h->slots[i]);
	}
	buf_char(b, ']');
	for (int i = 0; i < 3; i++)
		json_fixed1(b, names[i], total > 0, percentile(h->slots, HIST_SLOTS, qs[i]));
	buf_str(b, "}\n");
}

static void text_section(struct buf *b, const struct options *o, const struct row *r)
{
	const struct hist *h = r->hist;

	buf_str(b, label(o));
	buf_str(b, " = ");
	buf_str(b, r->has_address ? r->address : "******");
	buf_char(b, ' ');
	if (o->extension) {
		buf_str(b, "[AVG ");
		buf_int(b, h->cnt ? h->latency / h->cnt : 0);
		buf_char(b, ']');
	}
	buf_char(b, '\n');
	log2_hist(b, h->slots, HIST_SLOTS, o->milliseconds ? "msecs" : "usecs");
}

void render_interval(FILE *out, const struct options *o, const struct snapshot *interval,
		     time_t when)
{
	static const struct hist zero;
	struct row *rows = calloc(interval->n + 1, sizeof(*rows));
	struct row **sorted = calloc(interval->n + 1, sizeof(*sorted));
	struct buf b = {0};
	size_t n = 0;
	struct tm tm;
	char stamp[40];

	if (!rows || !sorted) {
		free(rows);
		free(sorted);
		fprintf(stderr, "tcprtt: out of memory rendering %zu histograms\n", interval->n);
		return;
	}
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
	for (size_t i = 0; i < n; i++)
		sorted[i] = &rows[i];
	qsort(sorted, n, sizeof(*sorted), by_address);
	gmtime_r(&when, &tm);
	if (o->json) {
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S+00:00", &tm);
		for (size_t i = 0; i < n; i++)
			json_record(&b, o, sorted[i], stamp);
	} else {
		buf_char(&b, '\n');
		if (o->timestamp) {
			strftime(stamp, sizeof(stamp), "%H:%M:%S", &tm);
			buf_str(&b, stamp);
			buf_char(&b, '\n');
		}
		for (size_t i = 0; i < n; i++)
			text_section(&b, o, sorted[i]);
	}
	if (b.failed)
		fprintf(stderr, "tcprtt: out of memory rendering %zu histograms\n", n);
	else if (b.len)
		fwrite(b.data, 1, b.len, out);
	buf_free(&b);
	free(sorted);
	free(rows);
}
