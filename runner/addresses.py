"""tcprtt's histogram keys and address settings: an address family and 16
address bytes; an IPv6 filter as two 64-bit halves. Pure."""

from __future__ import annotations

import ipaddress
import socket

AF_INET, AF_INET6 = 2, 10
# The family of the unkeyed histogram's key (tcprtt.h KEY_FAMILY_ALL; its
# address is all zero): the probe never stores the all-zero key.
KEY_FAMILY_ALL = 0xFFFF
HALF = (1 << 64) - 1
V4_IN_V6_PREFIXES = (bytes(12), bytes(10) + b"\xff\xff")  # ::a.b.c.d, ::ffff:a.b.c.d


def key_address(key: object) -> str | None:
    """The address a key names as text, or None for the unkeyed histogram."""
    if not isinstance(key, dict):
        return None
    family, raw = key.get("family"), bytes(key.get("addr") or b"")
    if family == AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if family == AF_INET6:
        if raw[:12] in V4_IN_V6_PREFIXES:  # libc prints these with dotted quads
            return str(ipaddress.IPv6Address(raw[:16]))
        return socket.inet_ntop(socket.AF_INET6, raw[:16])  # RFC 5952, as ipaddress
    return None


def key_family(key: object) -> str | None:
    if isinstance(key, dict):
        return {AF_INET: "ipv4", AF_INET6: "ipv6"}.get(key.get("family"))  # type: ignore[arg-type]
    return None


def unkeyed_key(key_size: int) -> bytes:
    """The raw hists key of the unkeyed histogram (struct hist_key, family
    first, little-endian as the hosts the runner ships for)."""
    return KEY_FAMILY_ALL.to_bytes(2, "little") + bytes(key_size - 2)


def ipv6_halves(addr: ipaddress.IPv6Address) -> tuple[int, int]:
    """An IPv6 address as the probe's two settings: its first and last 8
    bytes, each read as a big-endian (host-order) integer."""
    value = int(addr)
    return value >> 64, value & HALF
