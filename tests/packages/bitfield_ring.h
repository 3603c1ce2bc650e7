/* A record ecli cannot decode: it has a bitfield. */
#ifndef BITFIELD_RING_H
#define BITFIELD_RING_H

struct flags_event {
	int pid;
	unsigned int low:3;
	unsigned int high:5;
};

#endif
