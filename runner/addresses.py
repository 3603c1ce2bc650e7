"""tcprtt's keys and address settings live in ``runner.tcprtt.keys``; this
name stays for the modules that import them from here."""

from .tcprtt.keys import (  # noqa: F401
    AF_INET,
    AF_INET6,
    HALF,
    KEY_FAMILY_ALL,
    V4_IN_V6_PREFIXES,
    ipv6_halves,
    key_address,
    key_family,
    make_key,
    unkeyed_key,
)
