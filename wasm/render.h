/* One interval as the runner prints it: bcc's text tables, or JSON lines. */
#ifndef TCPRTT_RENDER_H
#define TCPRTT_RENDER_H

#include <stdio.h>
#include <time.h>

#include "args.h"
#include "hist.h"

/* `when` is the wall-clock time of the read (UTC: WASI has no time zone). */
void render_interval(FILE *out, const struct options *opts, const struct snapshot *interval,
		     time_t when);

#endif
