/* The output buffer. */
#include "buf.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void buf_put(struct buf *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *data;

		while (cap < b->len + n)
			cap *= 2;
		data = realloc(b->data, cap);
		if (!data) {
			b->failed = true;
			return;
		}
		b->data = data;
		b->cap = cap;
	}
	memcpy(b->data + b->len, s, n);
	b->len += n;
}

void buf_str(struct buf *b, const char *s)
{
	buf_put(b, s, strlen(s));
}

void buf_char(struct buf *b, char c)
{
	buf_put(b, &c, 1);
}

/* The decimal digits of v at the end of `end`; returns where they start. */
static char *digits(unsigned long long v, char *end)
{
	do {
		*--end = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	return end;
}

static size_t int_text(long long v, char out[24], char **start)
{
	char *p = digits(v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v, out + 24);

	if (v < 0)
		*--p = '-';
	*start = p;
	return (size_t)(out + 24 - p);
}

void buf_int(struct buf *b, long long v)
{
	char text[24], *p;
	size_t n = int_text(v, text, &p);

	buf_put(b, p, n);
}

static const char SPACES[] = "                                        ";

void buf_int_left(struct buf *b, long long v, int width)
{
	char text[24], *p;
	size_t n = int_text(v, text, &p);

	buf_put(b, p, n);
	if ((int)n < width)
		buf_put(b, SPACES, (size_t)width - n);
}

void buf_uint_right(struct buf *b, unsigned long long v, int width)
{
	char text[24];
	char *p = digits(v, text + 24);
	size_t n = (size_t)(text + 24 - p);

	if ((int)n < width)
		buf_put(b, SPACES, (size_t)width - n);
	buf_put(b, p, n);
}

/* round(v * 10) with the rounding decided on the exact product: fma gives
 * the error of the rounded product, and the sign of a sum is exact. */
void buf_fixed1(struct buf *b, double v)
{
	double t = v * 10.0, err = fma(v, 10.0, -t), n = floor(t);
	double side = ((t - n) - 0.5) + err;
	unsigned long long tenths = (unsigned long long)n;

	if (side > 0 || (side == 0 && (tenths & 1)))
		tenths++;
	buf_int(b, (long long)(tenths / 10));
	buf_char(b, '.');
	buf_char(b, (char)('0' + tenths % 10));
}

void buf_free(struct buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}
