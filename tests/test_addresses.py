"""Histogram keys as address text, the unkeyed key, IPv6 filters as halves."""

from __future__ import annotations

import ipaddress
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from runner import package
from runner.build import host_arch
from runner.tcprtt.keys import (
    AF_INET,
    AF_INET6,
    KEY_FAMILY_ALL,
    ipv6_halves,
    key_address,
    key_family,
    make_key,
    unkeyed_key,
)

from .conftest import REPO

v6 = st.one_of(st.binary(min_size=16, max_size=16),
               # runs of zero groups, where compression rules differ most
               st.lists(st.sampled_from([0, 0, 0, 1, 0xffff]), min_size=8, max_size=8)
               .map(lambda groups: b"".join(g.to_bytes(2, "big") for g in groups)),
               st.binary(min_size=4, max_size=4).map(lambda b: bytes(10) + b"\xff\xff" + b))


@settings(max_examples=500, deadline=None)
@given(v6)
def test_ipv6_keys_read_as_python_writes_them(raw):
    key = make_key(AF_INET6, raw)
    assert key_address(key) == str(ipaddress.IPv6Address(raw))
    assert key_family(key) == "ipv6"


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=4, max_size=4))
def test_ipv4_keys(raw):
    key = make_key(AF_INET, raw)
    assert key == b"\x02\x00" + raw + bytes(12)
    assert key_address(key) == str(ipaddress.IPv4Address(raw))
    assert key_family(key) == "ipv4"


def test_unkeyed_and_unknown_families_have_no_address():
    assert key_address(None) is None and key_family(None) is None
    assert key_address(bytes(18)) is None
    assert key_address(unkeyed_key()) is None
    assert key_family(unkeyed_key()) is None


def test_unkeyed_family_is_the_headers_and_its_key_is_not_all_zero():
    header = (REPO / "probe" / "tcprtt.h").read_text()
    define = re.search(r"#define KEY_FAMILY_ALL (0x[0-9a-fA-F]+)", header)
    assert define and int(define.group(1), 16) == KEY_FAMILY_ALL
    key_size = package.load(package.shipped("raw_tp", host_arch())).hists[0].key_size
    key = unkeyed_key(key_size)
    assert key == b"\xff\xff" + bytes(16) and any(key)


@settings(max_examples=300, deadline=None)
@given(v6)
def test_ipv6_halves_are_the_address_bytes_big_endian(raw):
    hi, lo = ipv6_halves(ipaddress.IPv6Address(raw))
    assert 0 <= hi < 1 << 64 and 0 <= lo < 1 << 64
    assert hi.to_bytes(8, "big") + lo.to_bytes(8, "big") == raw


def test_ipv6_halves_of_known_addresses():
    assert ipv6_halves(ipaddress.IPv6Address("::1")) == (0, 1)
    assert ipv6_halves(ipaddress.IPv6Address("fe80::1")) == (0xFE80 << 48, 1)
    assert ipv6_halves(ipaddress.IPv6Address("ffff:ffff:ffff:ffff::")) == ((1 << 64) - 1, 0)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([AF_INET, AF_INET6, 0, 1, KEY_FAMILY_ALL]), v6,
                          st.sampled_from([(0, 0), (1, 0), (0, 3), (2, -2)])), max_size=12))
def test_rows_are_the_keys_with_samples_by_address_text(entries):
    from runner.histogram import Hist
    from runner.tcprtt.keys import addressed
    hists = [Hist(make_key(family, raw), slots) for family, raw, slots in entries]
    named, unnamed = addressed(hists + [Hist(None, (5,))])
    counted = [h for h in hists + [Hist(None, (5,))] if sum(h.slots)]
    assert named == sorted([(key_address(h.key), key_family(h.key), h) for h in counted
                            if key_address(h.key) is not None], key=lambda row: row[0])
    assert unnamed == [(None, None, h) for h in counted if key_address(h.key) is None]
