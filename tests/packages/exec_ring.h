/* The record exec_ring.bpf.c sends: every kind of member ecli decodes. */
#ifndef EXEC_RING_H
#define EXEC_RING_H

enum event_kind {
	EVENT_FORK = 0,
	EVENT_EXEC = 1,
	EVENT_EXIT = 2,
};

struct ids {
	__u32 uid;
	__u32 gid;
};

union bits {
	__u32 raw;
	float real;
};

struct exec_event {
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
