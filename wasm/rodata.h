/* The probe's settings, written into a copy of an object's .rodata. */
#ifndef TCPRTT_RODATA_H
#define TCPRTT_RODATA_H

#include "args.h"
#include "config.h"

/* `elf` is a copy of spec->elf: the settings the options ask for are
 * written as the runner writes them; targ_percpu stays off, so every
 * sample goes to the histogram map that this module reads. */
void rodata_patch(const struct object_spec *spec, const struct options *opts,
		  unsigned char *elf);

#endif
