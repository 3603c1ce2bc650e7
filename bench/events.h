/* The record bench/events.bpf.c sends: the same members as the run
 * command's exec test record (strings, an enum, nested struct, array, union). */
#ifndef BENCH_EVENTS_H
#define BENCH_EVENTS_H

enum event_kind {
	EVENT_FORK = 0,
	EVENT_EXEC = 1,
};

struct ids {
	__u32 uid;
	__u32 gid;
};

union bits {
	__u32 raw;
	float real;
};

struct bench_event {
	int pid;
	int old_pid;
	char comm[16];
	char filename[48];
	enum event_kind kind;
	struct ids owner;
	__u8 tag[4];
	_Bool flag;
	__s8 neg;
	__u16 marker;
	unsigned long long seq;
	union bits one_and_a_half;
};

#endif
