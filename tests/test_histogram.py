"""Intervals from cumulative reads, averages and percentiles."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.histogram import (
    BtfKeys,
    Hist,
    Intervals,
    bounds,
    bucket_bounds,
    percentile,
    percentiles,
)


def test_intervals_are_differences_of_cumulative_reads():
    steps = Intervals()
    a1 = Hist(key=b"\x01", slots=(1, 2, 0), latency=10, cnt=3)
    first = steps.step([a1])
    assert first == [a1]
    a2 = Hist(key=b"\x01", slots=(1, 5, 1), latency=30, cnt=7)
    b2 = Hist(key=b"\x02", slots=(0, 0, 4), latency=40, cnt=4)
    second = steps.step([a2, b2])
    assert second[0].slots == (0, 3, 1) and second[0].latency == 20 and second[0].cnt == 4
    assert second[1] == b2
    # Summed over the intervals, the counts equal the last cumulative read.
    assert [x + y for x, y in zip(first[0].slots, second[0].slots)] == list(a2.slots)


def test_bucket_bounds():
    assert bucket_bounds(0) == (0, 1)
    assert bucket_bounds(1) == (2, 3)
    assert bucket_bounds(10) == (1024, 2047)
    assert bounds(3) == ((0, 1), (2, 3), (4, 7))
    assert bounds(200)[150] == bucket_bounds(150) and bounds(0) == ()


def test_an_unchanged_key_gives_an_empty_interval_and_keys_are_matched_by_bytes():
    steps = Intervals()
    steps.step([Hist(b"\x01\x00", (4, 5), 90, 9), Hist(None, (1, 1), 2, 2)])
    second = steps.step([Hist(b"\x01\x00", (4, 5), 90, 9), Hist(b"\x01", (2, 0), 3, 2),
                         Hist(None, (1, 3), 5, 4)])
    assert second == [Hist(b"\x01\x00", (0, 0), 0, 0), Hist(b"\x01", (2, 0), 3, 2),
                      Hist(None, (0, 2), 3, 2)]


@pytest.mark.parametrize("slot", [0, 1, 5, 12, 20])
def test_percentiles_stay_inside_the_bucket_of_a_single_value(slot):
    slots = [0] * 27
    slots[slot] = 1000
    low, high = bucket_bounds(slot)
    for q in (0.01, 0.5, 0.9, 0.99, 1.0):
        assert low <= percentile(slots, q) <= high


def test_percentiles_follow_the_rank():
    slots = [0, 0, 0, 90, 9, 1] + [0] * 21  # 90 in 8..15, 9 in 16..31, 1 in 32..63
    assert 8 <= percentile(slots, 0.5) < 16
    assert 8 <= percentile(slots, 0.9) <= 16
    assert 16 <= percentile(slots, 0.99) < 32
    assert 32 <= percentile(slots, 1.0) <= 63
    assert percentile([0] * 27, 0.5) is None


def test_average():
    assert Hist(key=None, slots=(1,), latency=9, cnt=3).average == 3
    assert Hist(key=None, slots=(0,)).average is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=1 << 20), min_size=1, max_size=27))
def test_one_pass_percentiles_agree_with_each_percentile(slots):
    qs = (0.5, 0.9, 0.99)
    assert percentiles(slots, qs) == [percentile(slots, q) for q in qs]


def test_btf_keys_decode_as_ecli_shows_them_and_encode_back():
    from runner import package
    from runner.build import host_arch
    from runner.errors import PackageError
    pkg = package.load(package.shipped("raw_tp", host_arch()))
    keys = BtfKeys(pkg.btf, pkg.hists[0].key_type)
    raw = b"\x0a\x00" + bytes(range(16))
    assert keys.json(raw) == {"family": 10, "addr": list(range(16))}
    assert keys.encode(keys.json(raw)) == raw
    assert keys.encode({"family": 2}) == b"\x02" + bytes(17)  # absent members are zero
    assert keys.json(None) is None
    for bad in (0, {"family": "x"}, {"family": 1 << 16}, {"addr": [0] * 17}, {"port": 1}):
        with pytest.raises(PackageError):
            keys.encode(bad)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.integers(min_value=-3, max_value=1 << 40), min_size=1, max_size=70),
       st.lists(st.sampled_from([0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0]), min_size=1,
                max_size=4))
def test_one_pass_percentiles_are_the_bisection_of_the_running_sum(slots, qs):
    from bisect import bisect_left
    from itertools import accumulate

    def by_bisection(q):
        cum = list(accumulate(slots))
        if cum[-1] == 0:
            return None
        i = bisect_left(cum, q * cum[-1])
        if i == len(cum):
            return float(bucket_bounds(len(slots) - 1)[1])
        low, high = bucket_bounds(i)
        return min(low + (high + 1 - low) * (q * cum[-1] - (cum[i] - slots[i])) / slots[i],
                   float(high))
    qs = tuple(qs)
    assert percentiles(slots, qs) == [by_bisection(q) for q in qs]


def test_a_cycle_alive_at_a_pause_is_still_collected_once_handed_back():
    import gc
    import weakref

    from runner import histogram

    class Node:
        pass
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    with histogram.collector_paused():
        pass  # the cycle is alive here: frozen on the way out
    del a, b
    gc.collect()
    frozen = gone() is not None  # frozen objects are not collected
    for _ in range(histogram.UNFREEZE_EVERY):
        with histogram.collector_paused():
            pass
    gc.collect()
    assert gone() is None, "the frozen cycle was never handed back to the collector"
    assert frozen or histogram._pauses % histogram.UNFREEZE_EVERY == 0
    assert gc.isenabled()
