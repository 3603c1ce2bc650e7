"""tcprtt's histogram keys: an address family and 16 address bytes. Pure."""

from __future__ import annotations

import ipaddress

AF_INET, AF_INET6 = 2, 10


def key_address(key: object) -> str | None:
    """The address a key names as text, or None for the unkeyed histogram."""
    if not isinstance(key, dict):
        return None
    family, raw = key.get("family"), bytes(key.get("addr") or b"")
    if family == AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    if family == AF_INET6:
        return str(ipaddress.IPv6Address(raw[:16]))
    return None


def key_family(key: object) -> str | None:
    if isinstance(key, dict):
        return {AF_INET: "ipv4", AF_INET6: "ipv6"}.get(key.get("family"))  # type: ignore[arg-type]
    return None
