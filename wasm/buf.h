/* An output buffer with cheap appends: a report is built here and written
 * at once. printf's generality costs much under an interpreting host; a
 * keyed report makes tens of thousands of appends. */
#ifndef TCPRTT_BUF_H
#define TCPRTT_BUF_H

#include <stdbool.h>
#include <stddef.h>

struct buf {
	char *data;
	size_t len, cap;
	bool failed;	/* out of memory: appends stopped */
};

void buf_put(struct buf *b, const char *s, size_t n);
void buf_str(struct buf *b, const char *s);
void buf_char(struct buf *b, char c);
void buf_int(struct buf *b, long long v);
/* v left-justified in `width` columns, as "%-8lld" */
void buf_int_left(struct buf *b, long long v, int width);
/* v right-justified in `width` columns, as "%10llu" */
void buf_uint_right(struct buf *b, unsigned long long v, int width);
/* v >= 0 with one decimal, correctly rounded (half to even), as "%.1f" */
void buf_fixed1(struct buf *b, double v);
void buf_free(struct buf *b);

#endif
