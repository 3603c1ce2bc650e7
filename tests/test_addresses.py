"""Histogram keys as address text."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from runner.addresses import AF_INET, AF_INET6, key_address

v6 = st.one_of(st.binary(min_size=16, max_size=16),
               # runs of zero groups, where compression rules differ most
               st.lists(st.sampled_from([0, 0, 0, 1, 0xffff]), min_size=8, max_size=8)
               .map(lambda groups: b"".join(g.to_bytes(2, "big") for g in groups)),
               st.binary(min_size=4, max_size=4).map(lambda b: bytes(10) + b"\xff\xff" + b))


@settings(max_examples=500, deadline=None)
@given(v6)
def test_ipv6_keys_read_as_python_writes_them(raw):
    key = {"family": AF_INET6, "addr": list(raw)}
    assert key_address(key) == str(ipaddress.IPv6Address(raw))


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=4, max_size=4))
def test_ipv4_keys(raw):
    key = {"family": AF_INET, "addr": list(raw) + [0] * 12}
    assert key_address(key) == str(ipaddress.IPv4Address(raw))


def test_unkeyed_and_unknown_families_have_no_address():
    assert key_address(None) is None
    assert key_address({"family": 0, "addr": [0] * 16}) is None
