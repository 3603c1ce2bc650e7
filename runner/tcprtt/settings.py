"""From tcprtt's flags to the probe's settings, as config.json says.

Each option that ``sets`` a setting sets it when given: a switch to its
``value`` (or true), an integer flag to the integer, an address flag to the
IPv4 setting or the two halves of the IPv6 one, a prefix flag (``kind``
"prefix", ``V4LEN[,V6LEN]``) to the bits each prefix clears. An output may need settings
whatever the flags say (``outputs``): metrics are made from the sum, in
microseconds. Only settings that are not zero are returned: a package's
defaults are zero, and an older package may lack a newer setting.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING

from ..config import probe_config
from ..errors import UsageError

if TYPE_CHECKING:
    from ..options import Options


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    addr = ipaddress.ip_address(text)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # the probe treats v4-mapped sockets as IPv4
    return addr


PREFIX = re.compile(r"([0-9]{1,3})(?:,([0-9]{1,3}))?")
PREFIX_BITS = (32, 128)  # the address bits of IPv4 and IPv6


def parse_prefix(flag: str, text: str) -> tuple[int, int | None]:
    """``V4LEN[,V6LEN]``: the IPv4 prefix length and the IPv6 one (None:
    IPv6 keys stay whole); UsageError naming the bad value."""
    match = PREFIX.fullmatch(text)
    if match is None:
        raise UsageError(f"{flag}: {text!r} is not V4LEN[,V6LEN] (for example 24 or 24,64)")
    v4, v6 = int(match[1]), None if match[2] is None else int(match[2])
    if v4 > 32:
        raise UsageError(f"{flag}: IPv4 prefix length {v4} is outside 0..32")
    if v6 is not None and v6 > 128:
        raise UsageError(f"{flag}: IPv6 prefix length {v6} is outside 0..128")
    return v4, v6


def _set(values: dict[str, object], opt: dict, given: object) -> None:
    sets = opt["sets"]
    if opt.get("kind") == "prefix":  # (V4LEN, V6LEN or None): the bits each one clears
        for name, length, bits in zip(sets, given, PREFIX_BITS):  # type: ignore[call-overload]
            if length is not None and bits - length:
                values[name] = bits - length
        return
    if isinstance(sets, list):  # an address: the IPv4 setting, then the IPv6 halves
        from .keys import ipv6_halves
        v4_name, *v6_names = sets
        addr = _address(str(given))
        if isinstance(addr, ipaddress.IPv4Address):
            values[v4_name] = int(addr)
            return
        for name, half in zip(v6_names, ipv6_halves(addr)):
            if half:  # only those not zero, as for every setting
                values[name] = half
        return
    if given is True:
        values[sets] = opt.get("value", True)
    else:
        values[sets] = given


def output_of(opts: Options) -> str:
    """The output that the options ask for."""
    if opts.prometheus is not None:
        return "prometheus"
    return "json" if opts.json else "text"


def probe_settings(opts: Options, output: str | None = None) -> dict[str, object]:
    """The probe's .rodata variables for these options (only those not zero);
    ``output`` defaults to the one the options ask for."""
    config = probe_config()
    values: dict[str, object] = {}
    for opt in config["options"]:
        if "sets" not in opt:
            continue
        given = getattr(opts, opt["dest"])
        if given is None or given is False:
            continue
        _set(values, opt, given)
    needs = config.get("outputs", {}).get(output or output_of(opts), {})
    for name, value in needs.items():
        if name == "why":
            continue
        if value:
            values[name] = value
        else:
            values.pop(name, None)
    return values
