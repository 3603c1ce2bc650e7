/* tcprtt's command line, read as the runner reads it (argparse's rules and
 * messages, config.json's options, ranges and constraints). */
#ifndef TCPRTT_ARGS_H
#define TCPRTT_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "addr.h"

#define FOREVER 99999999 /* bcc's "no interval": print once, at the end */

struct options {
	long long interval;	/* seconds */
	long long duration;	/* seconds; 0: until the host is stopped */
	bool timestamp;
	bool milliseconds;
	long long lport, rport;	/* 0: any */
	bool has_laddr, has_raddr;
	struct address laddr, raddr; /* v4-mapped addresses already unmapped */
	bool byladdr, byraddr;
	bool extension;
	bool ipv4, ipv6;
	bool json;
	bool verbose;
	const char *attach;	/* "auto" or one variant */
};

enum parse_result { PARSE_OK, PARSE_HELP, PARSE_USAGE };

/* Fills `opts`, or writes the one-line reason (without "tcprtt: error: ")
 * to `error` and returns PARSE_USAGE. */
enum parse_result parse_args(int argc, char **argv, struct options *opts, char *error,
			     size_t size);
void print_help(FILE *out);

#endif
