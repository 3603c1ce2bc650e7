/* tcprtt as a WASI module for a wasm-bpf host: the runner's flags and
 * output, the probe's objects embedded. WASI has no signals: a host that
 * is sent SIGINT or SIGTERM ends at once, so every report is flushed as it
 * is printed, and -d ends the trace the ordinary way. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "hist.h"
#include "probe.h"
#include "render.h"

#define BANNER "Tracing TCP RTT... Hit Ctrl-C to end."

static double monotonic(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_until(double wake)
{
	double delay = wake - monotonic();
	struct timespec ts;

	if (delay <= 0)
		return;
	ts.tv_sec = (time_t)delay;
	ts.tv_nsec = (long)((delay - (double)ts.tv_sec) * 1e9);
	nanosleep(&ts, NULL);
}

/* Read every interval until the duration; the last, partial interval is
 * printed too (runner/run.py trace_loop). */
static int trace(struct probe *p, const struct options *o)
{
	struct intervals iv = {0};
	struct snapshot snap = {0};
	double start = monotonic(), tick = start;
	double end = o->duration ? start + (double)o->duration : 0;
	unsigned long long dropped = 0, now_dropped;
	int err = 0;

	for (;;) {
		tick += (double)o->interval;
		sleep_until(end && end < tick ? end : tick);
		err = probe_read(p, &snap);
		if (err == 0 && intervals_step(&iv, &snap))
			err = -12;
		if (err) {
			fprintf(stderr, "tcprtt: reading the %s map failed (error %d)\n", HIST_MAP,
				err);
			break;
		}
		render_interval(stdout, o, &snap, time(NULL));
		fflush(stdout);
		now_dropped = probe_dropped(p);
		if (now_dropped > dropped)
			fprintf(stderr, "tcprtt: %llu samples dropped: the key map is full\n",
				now_dropped - dropped);
		dropped = now_dropped;
		if (end && monotonic() >= end - 1e-3)
			break;
	}
	snapshot_free(&snap);
	intervals_free(&iv);
	return err ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct options opts;
	static struct probe probe;
	char error[1200];
	int status;

	switch (parse_args(argc, argv, &opts, error, sizeof(error))) {
	case PARSE_HELP:
		print_help(stdout);
		return 0;
	case PARSE_USAGE:
		fprintf(stderr, "tcprtt: error: %s\n", error);
		return 2;
	case PARSE_OK:
		break;
	}
	if (probe_open(&probe, &opts) < 0) {
		char detail[MAX_ATTEMPTS * 200 + 8] = "";
		size_t at = 0;

		for (int i = 0; i < probe.ntried && at < sizeof(detail); i++)
			at += (size_t)snprintf(detail + at, sizeof(detail) - at, "%s%s",
					       i ? "; " : "", probe.tried[i]);
		if (!strcmp(opts.attach, "auto"))
			fprintf(stderr, "tcprtt: no attach variant works on this kernel (%s)\n",
				detail);
		else
			fprintf(stderr, "tcprtt: --attach %s is not available (%s)\n", opts.attach,
				detail);
		return 1;
	}
	if (opts.verbose) {
		for (int i = 0; i < probe.ntried; i++) {
			char *colon = strchr(probe.tried[i], ':');

			*colon = '\0';
			fprintf(stderr, "tcprtt: %s not used:%s\n", probe.tried[i], colon + 1);
			*colon = ':';
		}
		fprintf(stderr, "tcprtt: attached with the %s variant\n", probe.variant);
	}
	fprintf(stderr, "%s\n", BANNER);
	status = trace(&probe, &opts);
	probe_close(&probe);
	return status;
}
