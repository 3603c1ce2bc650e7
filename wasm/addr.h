/* IP addresses as the runner reads and writes them (Python's ipaddress). */
#ifndef TCPRTT_ADDR_H
#define TCPRTT_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AF_INET_LINUX 2
#define AF_INET6_LINUX 10

/* Network byte order: IPv4 in bytes[0..3]. */
struct address {
	int version; /* 4 or 6 */
	uint8_t bytes[16];
};

/* Parse as ipaddress.IPv4Address / IPv6Address do, strictly (no leading
 * zeros in a dotted quad; an IPv6 scope is refused, as the runner's schema
 * refuses it). */
bool parse_ipv4(const char *text, uint8_t out[4]);
bool parse_ipv6(const char *text, uint8_t out[16]);
/* A v4-mapped IPv6 address becomes the IPv4 address it maps, as the probe
 * treats such sockets as IPv4. */
void unmap_v4(struct address *addr);
bool is_unspecified(const struct address *addr);
/* A histogram key's address as text: dotted quad, or RFC 5952. */
void format_address(int family, const uint8_t *bytes, char *out, size_t size);
/* Python's repr() of a string, quotes included. */
void py_repr(const char *text, char *out, size_t size);

#endif
