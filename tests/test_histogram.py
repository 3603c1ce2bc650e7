"""Intervals from cumulative reads, averages and percentiles."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.histogram import Hist, Intervals, bucket_bounds, percentile, percentiles


def test_intervals_are_differences_of_cumulative_reads():
    steps = Intervals()
    a1 = Hist(key={"k": 1}, slots=(1, 2, 0), latency=10, cnt=3)
    first = steps.step([a1])
    assert first == [a1]
    a2 = Hist(key={"k": 1}, slots=(1, 5, 1), latency=30, cnt=7)
    b2 = Hist(key={"k": 2}, slots=(0, 0, 4), latency=40, cnt=4)
    second = steps.step([a2, b2])
    assert second[0].slots == (0, 3, 1) and second[0].latency == 20 and second[0].cnt == 4
    assert second[1] == b2
    # Summed over the intervals, the counts equal the last cumulative read.
    assert [x + y for x, y in zip(first[0].slots, second[0].slots)] == list(a2.slots)


def test_bucket_bounds():
    assert bucket_bounds(0) == (0, 1)
    assert bucket_bounds(1) == (2, 3)
    assert bucket_bounds(10) == (1024, 2047)


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
