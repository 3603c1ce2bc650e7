"""tcprtt's histogram keys: an address family and 16 address bytes. Pure."""

from __future__ import annotations

import ipaddress
import socket

AF_INET, AF_INET6 = 2, 10
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
