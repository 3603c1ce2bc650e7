/* Settings into .rodata: integers little-endian (BPF runs in the byte order
 * of the x86_64 and arm64 hosts the module ships for), addresses byte by
 * byte where the generator found the runner puts them. */
#include "rodata.h"

#include <string.h>

static void put_int(const struct object_spec *spec, unsigned char *rodata, enum setting s,
		    unsigned long long value)
{
	for (unsigned int i = 0; i < spec->settings[s].size && i < 8; i++)
		rodata[spec->settings[s].offset + i] = (unsigned char)(value >> (8 * i));
}

static void put_address(const struct object_spec *spec, unsigned char *rodata,
			const struct address *addr, const struct addr_byte *v4,
			const struct addr_byte *v6)
{
	const struct addr_byte *map = addr->version == 4 ? v4 : v6;
	int width = addr->version == 4 ? 4 : 16;

	for (int i = 0; i < width; i++)
		rodata[spec->settings[map[i].setting].offset + map[i].byte] = addr->bytes[i];
}

void rodata_patch(const struct object_spec *spec, const struct options *o, unsigned char *elf)
{
	static const struct addr_byte local4[4] = ADDR4_LOCAL, local6[16] = ADDR6_LOCAL;
	static const struct addr_byte remote4[4] = ADDR4_REMOTE, remote6[16] = ADDR6_REMOTE;
	unsigned char *rodata = elf + spec->rodata;

	for (int s = 0; s < SET_COUNT; s++)
		memset(rodata + spec->settings[s].offset, 0, spec->settings[s].size);
	put_int(spec, rodata, SET_TARG_SPORT, (unsigned long long)o->lport);
	put_int(spec, rodata, SET_TARG_DPORT, (unsigned long long)o->rport);
	if (o->has_laddr)
		put_address(spec, rodata, &o->laddr, local4, local6);
	if (o->has_raddr)
		put_address(spec, rodata, &o->raddr, remote4, remote6);
	put_int(spec, rodata, SET_TARG_IPVER, o->ipv4 ? 4 : o->ipv6 ? 6 : 0);
	put_int(spec, rodata, SET_TARG_LADDR_HIST, o->byladdr);
	put_int(spec, rodata, SET_TARG_RADDR_HIST, o->byraddr);
	put_int(spec, rodata, SET_TARG_SHOW_EXT, o->extension);
	put_int(spec, rodata, SET_TARG_MS, o->milliseconds);
	put_int(spec, rodata, SET_TARG_PERCPU, 0);
}
