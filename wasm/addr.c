/* IP addresses: parsing with Python's ipaddress rules, RFC 5952 text. */
#include "addr.h"

#include <stdio.h>
#include <string.h>

static bool parse_octet(const char *s, size_t len, int *out)
{
	int v = 0;

	if (len == 0 || len > 3 || (len > 1 && s[0] == '0'))
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (v > 255)
		return false;
	*out = v;
	return true;
}

bool parse_ipv4(const char *text, uint8_t out[4])
{
	const char *p = text;

	for (int i = 0; i < 4; i++) {
		const char *end = strchr(p, '.');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		int v;

		if ((i < 3) != (end != NULL) || !parse_octet(p, len, &v))
			return false;
		out[i] = (uint8_t)v;
		p += len + 1;
	}
	return true;
}

static bool parse_hextet(const char *s, size_t len, unsigned *out)
{
	unsigned v = 0;

	if (len == 0 || len > 4)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
			: c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;

		if (d < 0)
			return false;
		v = v * 16 + (unsigned)d;
	}
	*out = v;
	return true;
}

#define MAX_PARTS 9 /* eight hextets, and one more where "::" begins or ends it */

/* ipaddress.IPv6Address._ip_int_from_string, step by step. */
bool parse_ipv6(const char *text, uint8_t out[16])
{
	char v4tail[2][5];
	const char *part[MAX_PARTS + 1];
	size_t len[MAX_PARTS + 1];
	size_t n = 0, hi, lo, skipped;
	int skip = -1;
	const char *p = text;

	if (!*text || strchr(text, '%'))
		return false;
	for (;;) {
		const char *end = strchr(p, ':');

		if (n == MAX_PARTS + 1)
			return false;
		part[n] = p;
		len[n++] = end ? (size_t)(end - p) : strlen(p);
		if (!end)
			break;
		p = end + 1;
	}
	if (n < 3)
		return false;
	if (memchr(part[n - 1], '.', len[n - 1])) {
		uint8_t q[4];

		if (!parse_ipv4(part[n - 1], q))
			return false;
		snprintf(v4tail[0], sizeof(v4tail[0]), "%x", q[0] << 8 | q[1]);
		snprintf(v4tail[1], sizeof(v4tail[1]), "%x", q[2] << 8 | q[3]);
		part[n - 1] = v4tail[0];
		len[n - 1] = strlen(v4tail[0]);
		if (n == MAX_PARTS + 1)
			return false;
		part[n] = v4tail[1];
		len[n++] = strlen(v4tail[1]);
	}
	if (n > MAX_PARTS)
		return false;
	for (size_t i = 1; i + 1 < n; i++) {
		if (len[i] == 0) {
			if (skip >= 0)
				return false;
			skip = (int)i;
		}
	}
	if (skip >= 0) {
		hi = (size_t)skip;
		lo = n - (size_t)skip - 1;
		/* A leading (trailing) empty part is allowed only as "::". */
		if (len[0] == 0 && --hi)
			return false;
		if (len[n - 1] == 0 && --lo)
			return false;
		if (hi + lo > 7)
			return false;
		skipped = 8 - (hi + lo);
	} else {
		if (n != 8 || len[0] == 0 || len[n - 1] == 0)
			return false;
		hi = n;
		lo = 0;
		skipped = 0;
	}
	memset(out, 0, 16);
	for (size_t i = 0; i < hi; i++) {
		unsigned v;

		if (!parse_hextet(part[i], len[i], &v))
			return false;
		out[2 * i] = (uint8_t)(v >> 8);
		out[2 * i + 1] = (uint8_t)v;
	}
	for (size_t i = 0; i < lo; i++) {
		size_t at = hi + skipped + i;
		unsigned v;

		if (!parse_hextet(part[n - lo + i], len[n - lo + i], &v))
			return false;
		out[2 * at] = (uint8_t)(v >> 8);
		out[2 * at + 1] = (uint8_t)v;
	}
	return true;
}

void unmap_v4(struct address *addr)
{
	static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	if (addr->version == 6 && !memcmp(addr->bytes, prefix, sizeof(prefix))) {
		memmove(addr->bytes, addr->bytes + 12, 4);
		memset(addr->bytes + 4, 0, 12);
		addr->version = 4;
	}
}

bool is_unspecified(const struct address *addr)
{
	static const uint8_t zero[16];

	return !memcmp(addr->bytes, zero, addr->version == 4 ? 4 : 16);
}

static char *put_hex(char *p, unsigned v)
{
	static const char hex[] = "0123456789abcdef";
	int shift = 12;

	while (shift > 0 && !(v >> shift))
		shift -= 4;
	for (; shift >= 0; shift -= 4)
		*p++ = hex[(v >> shift) & 0xf];
	return p;
}

static char *put_dec(char *p, unsigned v)
{
	if (v >= 100)
		*p++ = (char)('0' + v / 100);
	if (v >= 10)
		*p++ = (char)('0' + v / 10 % 10);
	*p++ = (char)('0' + v % 10);
	return p;
}

/* The longest run of two or more zero hextets becomes "::" (the first of
 * equal runs); hextets in lower-case hex without leading zeros. */
static void format_ipv6(const uint8_t *b, char *out)
{
	unsigned h[8];
	int best = -1, best_len = 0;
	char *p = out;

	for (int i = 0; i < 8; i++)
		h[i] = (unsigned)b[2 * i] << 8 | b[2 * i + 1];
	for (int i = 0; i < 8;) {
		int j = i;

		while (j < 8 && h[j] == 0)
			j++;
		if (j - i > best_len) {
			best = i;
			best_len = j - i;
		}
		i = j > i ? j : i + 1;
	}
	if (best_len < 2)
		best = -1;
	for (int i = 0; i < 8; i++) {
		if (i == best) {
			*p++ = ':';
			if (i == 0)
				*p++ = ':';
			i += best_len - 1;
			continue;
		}
		p = put_hex(p, h[i]);
		if (i < 7)
			*p++ = ':';
	}
	*p = '\0';
}

void format_address(int family, const uint8_t *bytes, char *out, size_t size)
{
	char text[48], *p = text;

	if (family == AF_INET_LINUX) {
		for (int i = 0; i < 4; i++) {
			p = put_dec(p, bytes[i]);
			*p++ = i < 3 ? '.' : '\0';
		}
	} else {
		format_ipv6(bytes, text);
	}
	if (size) {
		size_t n = strlen(text) < size ? strlen(text) : size - 1;

		memcpy(out, text, n);
		out[n] = '\0';
	}
}

void py_repr(const char *text, char *out, size_t size)
{
	char quote = strchr(text, '\'') && !strchr(text, '"') ? '"' : '\'';
	size_t at = 0;

	if (size < 8) {
		out[0] = '\0';
		return;
	}
	out[at++] = quote;
	for (const unsigned char *p = (const unsigned char *)text; *p && at + 6 < size; p++) {
		if (*p == '\\' || *p == quote)
			at += (size_t)snprintf(out + at, size - at, "\\%c", *p);
		else if (*p == '\n')
			at += (size_t)snprintf(out + at, size - at, "\\n");
		else if (*p == '\r')
			at += (size_t)snprintf(out + at, size - at, "\\r");
		else if (*p == '\t')
			at += (size_t)snprintf(out + at, size - at, "\\t");
		else if (*p < 0x20 || *p == 0x7f)
			at += (size_t)snprintf(out + at, size - at, "\\x%02x", *p);
		else
			out[at++] = (char)*p;
	}
	out[at++] = quote;
	out[at] = '\0';
}
