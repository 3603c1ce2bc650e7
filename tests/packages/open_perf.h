/* The record open_perf.bpf.c sends. */
#ifndef OPEN_PERF_H
#define OPEN_PERF_H

struct open_event {
	int pid;
	int flags;
	char comm[16];
	char filename[64];
};

#endif
