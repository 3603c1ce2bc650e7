"""tcprtt's histogram keys and address settings. Pure.

A key is the raw bytes of ``struct hist_key`` (tcprtt.h): a __u16 address
family, little-endian as the hosts the runner ships for, then 16 address
bytes. The unkeyed histogram's family is KEY_FAMILY_ALL (its address all
zero); the probe never stores the all-zero key. An IPv6 filter is two
64-bit halves.
"""

from __future__ import annotations

import _socket as socket  # socket.py's enums and selectors would be 0.6 MB of every run
import ipaddress
from collections.abc import Iterable
from operator import itemgetter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..histogram import Hist

AF_INET, AF_INET6 = 2, 10
# The family of the unkeyed histogram's key (tcprtt.h KEY_FAMILY_ALL).
KEY_FAMILY_ALL = 0xFFFF
FAMILY_SIZE, ADDR_OFFSET, ADDR_SIZE = 2, 2, 16  # struct hist_key
KEY_SIZE = ADDR_OFFSET + ADDR_SIZE
HALF = (1 << 64) - 1
V4_IN_V6_PREFIXES = (bytes(12), bytes(10) + b"\xff\xff")  # ::a.b.c.d, ::ffff:a.b.c.d
FAMILY_NAMES = {AF_INET: "ipv4", AF_INET6: "ipv6"}

_V4 = AF_INET.to_bytes(FAMILY_SIZE, "little")
_V6 = AF_INET6.to_bytes(FAMILY_SIZE, "little")
_inet_ntop = socket.inet_ntop


WHOLE = (None, None)  # keys of whole addresses: no prefix lengths


def key_address(key: bytes | None, prefixes: tuple[int | None, int | None] = WHOLE
                ) -> str | None:
    """The address a key names as text, or None for the unkeyed histogram
    (and for a family that is neither IPv4 nor IPv6). With ``prefixes``
    (the IPv4 and IPv6 prefix lengths the probe cut the keys to, None for
    whole addresses), a network in CIDR notation: ``10.1.2.0/24``."""
    if not key:
        return None
    family = key[:FAMILY_SIZE]
    if family == _V4:
        text = _inet_ntop(socket.AF_INET, key[ADDR_OFFSET:ADDR_OFFSET + 4])
        return text if prefixes[0] is None else f"{text}/{prefixes[0]}"
    if family == _V6:
        raw = key[ADDR_OFFSET:ADDR_OFFSET + ADDR_SIZE]
        if raw[:12] in V4_IN_V6_PREFIXES:  # libc prints these with dotted quads
            text = str(ipaddress.IPv6Address(raw))
        else:
            text = _inet_ntop(socket.AF_INET6, raw)  # RFC 5952, as ipaddress
        return text if prefixes[1] is None else f"{text}/{prefixes[1]}"
    return None


def addressed(hists: Iterable[Hist], prefixes: tuple[int | None, int | None] = WHOLE
              ) -> tuple[list[tuple], list[tuple]]:
    """The histograms that counted something, as rows ``(address, family,
    hist)``: those whose key names an address, sorted by the address's text,
    and the others (address and family None), in their order. One pass, the
    key decoded inline: an interval may hold 100,000 keys. With ``prefixes``,
    as in ``key_address``, addresses are networks in CIDR notation."""
    named: list[tuple] = []
    unnamed: list[tuple] = []
    add, other = named.append, unnamed.append
    ntop, v4, v6 = _inet_ntop, socket.AF_INET, socket.AF_INET6
    mapped = V4_IN_V6_PREFIXES
    for h in hists:
        if sum(h.slots) == 0:
            continue
        key = h.key
        family = key[:FAMILY_SIZE] if key else None
        if family == _V6:
            if key.startswith(mapped, ADDR_OFFSET):  # libc prints these with dotted quads
                add((str(ipaddress.IPv6Address(key[ADDR_OFFSET:ADDR_OFFSET + ADDR_SIZE])),
                     "ipv6", h))
            else:
                add((ntop(v6, key[ADDR_OFFSET:ADDR_OFFSET + ADDR_SIZE]), "ipv6", h))
        elif family == _V4:
            add((ntop(v4, key[ADDR_OFFSET:ADDR_OFFSET + 4]), "ipv4", h))
        else:
            other((None, None, h))
    if prefixes != WHOLE:
        suffix = {"ipv4": "" if prefixes[0] is None else f"/{prefixes[0]}",
                  "ipv6": "" if prefixes[1] is None else f"/{prefixes[1]}"}
        named = [(address + suffix[family], family, h) for address, family, h in named]
    named.sort(key=itemgetter(0))
    return named, unnamed


def key_family(key: bytes | None) -> str | None:
    """The family of a key as text, "ipv4" or "ipv6"; else None."""
    if not key:
        return None
    return FAMILY_NAMES.get(int.from_bytes(key[:FAMILY_SIZE], "little"))


def make_key(family: int, addr: bytes, key_size: int = KEY_SIZE) -> bytes:
    """The raw key of a family and its address bytes (zero-padded to 16)."""
    key = bytearray(key_size)
    key[:FAMILY_SIZE] = family.to_bytes(FAMILY_SIZE, "little")
    key[ADDR_OFFSET:ADDR_OFFSET + len(addr)] = addr
    return bytes(key)


def unkeyed_key(key_size: int = KEY_SIZE) -> bytes:
    """The raw hists key of the unkeyed histogram."""
    return make_key(KEY_FAMILY_ALL, b"", key_size)


def ipv6_halves(addr: ipaddress.IPv6Address) -> tuple[int, int]:
    """An IPv6 address as the probe's two settings: its first and last 8
    bytes, each read as a big-endian (host-order) integer."""
    value = int(addr)
    return value >> 64, value & HALF
