/* tcprtt's command line: argparse's reading of flags (abbreviations,
 * clusters such as -Tm, -i5 and --interval=5), then the runner's checks in
 * the runner's order: integers, ranges and addresses in config.json's order,
 * the constraints, unspecified addresses, --attach. */
#include "args.h"

#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

static const struct opt_spec OPTIONS[] = {
	{"help", {"-h", "--help", 0}, "", "show this help message and exit", OPT_FLAG, 0, 0},
	PROBE_OPTIONS
	{"json", {"--json", 0}, "", "one JSON object per key per interval on stdout", OPT_FLAG,
	 0, 0},
	{"attach", {"--attach", 0}, ATTACH_METAVAR,
	 "attach point (default: auto, the cheapest that loads and attaches)", OPT_TEXT, 0, 0},
	{"verbose", {"-v", "--verbose", 0}, "", "say what is being done", OPT_FLAG, 0, 0},
};
#define N_OPTIONS ((int)(sizeof(OPTIONS) / sizeof(OPTIONS[0])))

/* "auto" and the variants, from config.json (config.h, generated). */
static const char *const ATTACH_NAMES[] = ATTACH_CHOICES;

/* The four constraints of config.json, checked in its order. */
#define BOTH_KEYS "-b/--byladdr and -B/--byraddr cannot be used together"
#define BOTH_VERSIONS "-4/--ipv4 and -6/--ipv6 cannot be used together"
#define V4_WITH_V6_ADDR "-4/--ipv4 cannot be used with an IPv6 address filter"
#define V6_WITH_V4_ADDR "-6/--ipv6 cannot be used with an IPv4 address filter"

#define MAX_ARGS 1024

struct parsed {
	bool set[N_OPTIONS];
	const char *value[N_OPTIONS];
};

static enum parse_result fail(char *error, size_t size, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(error, size, fmt, ap);
	va_end(ap);
	return PARSE_USAGE;
}

static int option_index(const char *dest)
{
	for (int i = 0; i < N_OPTIONS; i++)
		if (!strcmp(OPTIONS[i].dest, dest))
			return i;
	abort(); /* a dest this file names is missing from config.json */
}

/* "-i/--interval": the first two flags, as the runner names an option. */
static const char *short_name(int opt, char *buf, size_t size)
{
	const char *const *f = OPTIONS[opt].flags;

	snprintf(buf, size, f[1] ? "%s/%s" : "%s", f[0], f[1]);
	return buf;
}

/* "-b/--byladdr/--laddr-hist": every flag, as argparse names an option. */
static const char *full_name(int opt, char *buf, size_t size)
{
	size_t at = 0;

	buf[0] = '\0';
	for (const char *const *f = OPTIONS[opt].flags; *f && at < size; f++)
		at += (size_t)snprintf(buf + at, size - at, "%s%s", at ? "/" : "", *f);
	return buf;
}

/* The option whose flag is exactly the first `len` bytes of `s`. */
static int exact(const char *s, size_t len, const char **flag)
{
	for (int i = 0; i < N_OPTIONS; i++)
		for (const char *const *f = OPTIONS[i].flags; *f; f++)
			if (strlen(*f) == len && !strncmp(*f, s, len)) {
				*flag = *f;
				return i;
			}
	return -1;
}

/* How argparse sees one argument: a value (opt == -2), an option (opt >= 0,
 * the flag it was matched to, and the value attached to it, if any), or an
 * unknown option (opt == -1). */
struct arg_class {
	int opt;
	const char *flag;
	const char *attached;
};

static enum parse_result classify(const char *arg, struct arg_class *c, char *error,
				  size_t size)
{
	const char *eq = strchr(arg, '=');
	int matches[2 * N_OPTIONS];
	const char *flags[2 * N_OPTIONS], *attached[2 * N_OPTIONS];
	int n = 0;

	c->opt = -2;
	c->attached = NULL;
	if (arg[0] != '-' || arg[1] == '\0')
		return PARSE_OK;
	if ((c->opt = exact(arg, strlen(arg), &c->flag)) >= 0)
		return PARSE_OK;
	if (eq && (c->opt = exact(arg, (size_t)(eq - arg), &c->flag)) >= 0) {
		c->attached = eq + 1;
		return PARSE_OK;
	}
	/* Abbreviations: a long option's unique prefix, or a short option
	 * with its value or more short options attached. */
	for (int i = 0; i < N_OPTIONS; i++) {
		for (const char *const *f = OPTIONS[i].flags; *f; f++) {
			if (arg[1] == '-') {
				size_t len = eq ? (size_t)(eq - arg) : strlen(arg);

				if (strncmp(*f, arg, len))
					continue;
				attached[n] = eq ? eq + 1 : NULL;
			} else if (strlen(*f) == 2 && !strncmp(*f, arg, 2)) {
				attached[n] = arg + 2;
			} else if (!strncmp(*f, arg, strlen(arg))) {
				attached[n] = NULL;
			} else {
				continue;
			}
			matches[n] = i;
			flags[n++] = *f;
		}
	}
	if (n > 1) {
		size_t at = (size_t)snprintf(error, size, "ambiguous option: %s could match ", arg);

		for (int i = 0; i < n && at < size; i++)
			at += (size_t)snprintf(error + at, size - at, "%s%s", i ? ", " : "",
					       flags[i]);
		return PARSE_USAGE;
	}
	if (n == 1) {
		c->opt = matches[0];
		c->flag = flags[0];
		c->attached = attached[0];
		return PARSE_OK;
	}
	c->opt = strchr(arg, ' ') ? -2 : -1;
	return PARSE_OK;
}

/* One option and what follows it; returns the arguments consumed after it. */
static enum parse_result consume(struct arg_class c, char **rest, int nrest,
				 const struct arg_class *rest_class, struct parsed *p, int *used,
				 char *error, size_t size)
{
	char name[64], shown[256];

	*used = 0;
	for (;;) {
		const struct opt_spec *spec = &OPTIONS[c.opt];

		if (spec->kind != OPT_FLAG) {
			if (c.attached) {
				p->value[c.opt] = c.attached;
			} else if (nrest > 0 && rest_class[0].opt == -2 && strcmp(rest[0], "--")) {
				p->value[c.opt] = rest[0];
				*used = 1;
			} else {
				return fail(error, size, "argument %s: expected one argument",
					    full_name(c.opt, name, sizeof(name)));
			}
			p->set[c.opt] = true;
			return PARSE_OK;
		}
		p->set[c.opt] = true;
		if (!c.attached)
			return PARSE_OK;
		if (c.flag[1] != '-' && c.attached[0]) {
			char next[3] = {'-', c.attached[0], '\0'};
			const char *flag;
			int opt = exact(next, 2, &flag);

			if (opt >= 0) {
				c.opt = opt;
				c.flag = flag;
				c.attached = c.attached[1] ? c.attached + 1 : NULL;
				continue;
			}
		}
		py_repr(c.attached, shown, sizeof(shown));
		return fail(error, size, "argument %s: ignored explicit argument %s",
			    full_name(c.opt, name, sizeof(name)), shown);
	}
}

/* An integer as the runner takes one: an optional minus and ASCII decimal
 * digits, nothing else. `canon` gets the number as Python prints it;
 * values too large for a long long are clamped (every range is smaller). */
static bool parse_integer(const char *text, long long *value, char *canon, size_t size)
{
	const char *p = text;
	char digits[64];
	size_t nd = 0;
	bool neg = *p == '-';
	long long v = 0;

	p += neg;
	if (!*p)
		return false;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			return false;
		if (nd == 0 && *p == '0')
			continue;
		if (nd + 1 >= sizeof(digits))
			return false; /* longer than any value worth naming */
		digits[nd++] = *p;
	}
	if (nd == 0)
		digits[nd++] = '0';
	digits[nd] = '\0';
	for (size_t i = 0; i < nd; i++)
		v = nd > 18 ? LLONG_MAX : v * 10 + (digits[i] - '0');
	neg = neg && strcmp(digits, "0");
	*value = neg ? -v : v;
	snprintf(canon, size, "%s%s", neg ? "-" : "", digits);
	return true;
}

static bool is_ipv4(const char *text)
{
	uint8_t b[4];

	return parse_ipv4(text, b);
}

static bool is_ipv6(const char *text)
{
	uint8_t b[16];

	return parse_ipv6(text, b);
}

static enum parse_result check(struct parsed *p, struct options *o, char *error, size_t size)
{
	long long ints[N_OPTIONS] = {0};
	char canon[N_OPTIONS][64], name[64], shown[256];

	/* Integers first, then ranges and addresses, both in config.json's order. */
	for (int i = 0; i < N_OPTIONS; i++) {
		if (!p->set[i] || OPTIONS[i].kind != OPT_INT)
			continue;
		if (!parse_integer(p->value[i], &ints[i], canon[i], sizeof(canon[i]))) {
			py_repr(p->value[i], shown, sizeof(shown));
			return fail(error, size, "%s: %s is not an integer",
				    short_name(i, name, sizeof(name)), shown);
		}
	}
	for (int i = 0; i < N_OPTIONS; i++) {
		const struct opt_spec *spec = &OPTIONS[i];

		if (!p->set[i])
			continue;
		if (spec->kind == OPT_INT && ints[i] < spec->min)
			return fail(error, size, "%s: %s is below the minimum of %lld",
				    short_name(i, name, sizeof(name)), canon[i], spec->min);
		if (spec->kind == OPT_INT && ints[i] > spec->max)
			return fail(error, size, "%s: %s is above the maximum of %lld",
				    short_name(i, name, sizeof(name)), canon[i], spec->max);
		if (spec->kind == OPT_ADDR && !is_ipv4(p->value[i]) && !is_ipv6(p->value[i])) {
			py_repr(p->value[i], shown, sizeof(shown));
			return fail(error, size, "%s: %s is not an IPv4 or IPv6 address",
				    short_name(i, name, sizeof(name)), shown);
		}
	}

	int laddr = option_index("laddr"), raddr = option_index("raddr");
	const char *addrs[2] = {p->set[laddr] ? p->value[laddr] : NULL,
				p->set[raddr] ? p->value[raddr] : NULL};

	o->byladdr = p->set[option_index("byladdr")];
	o->byraddr = p->set[option_index("byraddr")];
	o->ipv4 = p->set[option_index("ipv4")];
	o->ipv6 = p->set[option_index("ipv6")];
	if (o->byladdr && o->byraddr)
		return fail(error, size, BOTH_KEYS);
	if (o->ipv4 && o->ipv6)
		return fail(error, size, BOTH_VERSIONS);
	for (int i = 0; i < 2; i++)
		if (o->ipv4 && addrs[i] && !is_ipv4(addrs[i]))
			return fail(error, size, V4_WITH_V6_ADDR);
	for (int i = 0; i < 2; i++)
		if (o->ipv6 && addrs[i] && !is_ipv6(addrs[i]))
			return fail(error, size, V6_WITH_V4_ADDR);

	struct address *parsed[2] = {&o->laddr, &o->raddr};
	bool *has[2] = {&o->has_laddr, &o->has_raddr};
	int index[2] = {laddr, raddr};

	for (int i = 0; i < 2; i++) {
		if (!addrs[i])
			continue;
		*has[i] = true;
		parsed[i]->version = is_ipv4(addrs[i]) ? 4 : 6;
		if (parsed[i]->version == 4)
			parse_ipv4(addrs[i], parsed[i]->bytes);
		else
			parse_ipv6(addrs[i], parsed[i]->bytes);
		unmap_v4(parsed[i]);
		if (is_unspecified(parsed[i])) {
			py_repr(addrs[i], shown, sizeof(shown));
			return fail(error, size,
				    "%s: %s is the unspecified address, which no connection has",
				    short_name(index[i], name, sizeof(name)), shown);
		}
	}

	for (int i = 0; i < N_OPTIONS; i++)
		if (p->set[i] && OPTIONS[i].kind == OPT_PREFIX)
			return fail(error, size,
				    "%s: the wasm module keys by whole addresses (the runner takes it)",
				    short_name(i, name, sizeof(name)));

	int attach = option_index("attach");

	o->attach = "auto";
	if (p->set[attach]) {
		size_t i, n = sizeof(ATTACH_NAMES) / sizeof(ATTACH_NAMES[0]);

		for (i = 0; i < n && strcmp(p->value[attach], ATTACH_NAMES[i]); i++)
			;
		if (i == n) {
			py_repr(p->value[attach], shown, sizeof(shown));
			return fail(error, size, "--attach: %s is not one of " ATTACH_LIST, shown);
		}
		o->attach = ATTACH_NAMES[i];
	}

	int interval = option_index("interval"), duration = option_index("duration");

	o->duration = p->set[duration] ? ints[duration] : 0;
	o->interval = p->set[interval] ? ints[interval] : o->duration ? o->duration : FOREVER;
	o->timestamp = p->set[option_index("timestamp")];
	o->milliseconds = p->set[option_index("milliseconds")];
	o->lport = ints[option_index("lport")];
	o->rport = ints[option_index("rport")];
	o->extension = p->set[option_index("extension")];
	o->json = p->set[option_index("json")];
	o->verbose = p->set[option_index("verbose")];
	return PARSE_OK;
}

enum parse_result parse_args(int argc, char **argv, struct options *opts, char *error,
			     size_t size)
{
	static struct arg_class classes[MAX_ARGS];
	struct parsed p = {0};
	char extras[1024] = "";
	size_t extras_len = 0;
	int n = argc - 1;
	bool rest_are_values = false;

	memset(opts, 0, sizeof(*opts));
	if (n >= MAX_ARGS)
		return fail(error, size, "too many arguments (%d)", n);
	/* argparse first sorts every argument into option or value, where an
	 * ambiguous abbreviation is an error, then consumes them. */
	for (int i = 0; i < n; i++) {
		if (!rest_are_values && !strcmp(argv[i + 1], "--"))
			rest_are_values = true;
		if (rest_are_values) {
			classes[i].opt = -2;
			continue;
		}
		if (classify(argv[i + 1], &classes[i], error, size) != PARSE_OK)
			return PARSE_USAGE;
	}
	for (int i = 0; i < n;) {
		int used;

		if (classes[i].opt < 0) {
			extras_len += (size_t)snprintf(extras + extras_len,
						       sizeof(extras) - extras_len, "%s%s",
						       extras_len ? " " : "", argv[i + 1]);
			if (extras_len >= sizeof(extras))
				extras_len = sizeof(extras) - 1;
			i++;
			continue;
		}
		if (consume(classes[i], argv + i + 2, n - i - 1, classes + i + 1, &p, &used, error,
			    size) != PARSE_OK)
			return PARSE_USAGE;
		if (p.set[0])
			return PARSE_HELP;
		i += 1 + used;
	}
	if (extras_len)
		return fail(error, size, "unrecognized arguments: %s", extras);
	return check(&p, opts, error, size);
}

void print_help(FILE *out)
{
	fprintf(out, "usage: tcprtt [options]\n\n"
		     "Summarize TCP RTT as a histogram (the tcprtt BPF probe in a wasm-bpf "
		     "host).\n\noptions:\n");
	for (int i = 0; i < N_OPTIONS; i++) {
		char flags[96];
		size_t at = 0;

		for (const char *const *f = OPTIONS[i].flags; *f; f++)
			at += (size_t)snprintf(flags + at, sizeof(flags) - at, "%s%s%s%s",
					       at ? ", " : "", *f, OPTIONS[i].metavar[0] ? " " : "",
					       OPTIONS[i].metavar);
		fprintf(out, "  %-40s %s\n", flags, OPTIONS[i].help);
	}
}
