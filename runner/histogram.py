"""Histograms as data: records, interval deltas, averages, percentiles. Pure.

A record is what both backends produce for one key of a log2_hist map,
cumulative since the probe started, in ecli's JSON shape:
``{"key": ..., "value": {"latency": n, "cnt": n, "slots": [...]}}``.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate


@dataclass(frozen=True)
class Hist:
    """One key's histogram over some span of time."""

    key: object
    slots: tuple[int, ...]
    latency: int = 0   # sum of the samples, when the probe keeps it
    cnt: int = 0       # number of samples summed into latency
    extra: tuple[tuple[str, object], ...] = ()  # other members of the value
    has_sum: bool = True  # whether the value has latency and cnt members

    def members(self) -> list[tuple[str, object]]:
        """The value's members other than slots, as ecli lists them."""
        head = [("latency", self.latency), ("cnt", self.cnt)] if self.has_sum else []
        return head + list(self.extra)

    @property
    def total(self) -> int:
        return sum(self.slots)

    @property
    def average(self) -> float | None:
        return self.latency / self.cnt if self.cnt else None

    @classmethod
    def from_record(cls, record: dict) -> Hist:
        value = record["value"]
        extra = tuple((k, v) for k, v in value.items() if k not in ("slots", "latency", "cnt"))
        return cls(key=record["key"], slots=tuple(int(s) for s in value["slots"]),
                   latency=int(value.get("latency", 0)), cnt=int(value.get("cnt", 0)),
                   extra=extra, has_sum="latency" in value and "cnt" in value)

    def minus(self, earlier: Hist | None) -> Hist:
        """What was added since ``earlier`` (the same key, read before)."""
        if earlier is None:
            return self
        return Hist(key=self.key,
                    slots=tuple(a - b for a, b in zip(self.slots, earlier.slots)),
                    latency=self.latency - earlier.latency, cnt=self.cnt - earlier.cnt,
                    extra=self.extra, has_sum=self.has_sum)


def key_id(key: object) -> str:
    """A hashable, stable identity for a JSON key."""
    return json.dumps(key, sort_keys=True)


class Intervals:
    """Turns cumulative snapshots into per-interval histograms.

    The kernel's counters are never cleared while tracing: each interval is the
    difference of two reads, so no sample can fall between a read and a clear.
    """

    def __init__(self) -> None:
        self._last: dict[str, Hist] = {}

    def step(self, snapshot: list[Hist]) -> list[Hist]:
        out = []
        current = {}
        for hist in snapshot:
            kid = key_id(hist.key)
            current[kid] = hist
            out.append(hist.minus(self._last.get(kid)))
        self._last = current
        return out


def bucket_bounds(slot: int) -> tuple[int, int]:
    """The values a log2 slot holds, inclusive: slot 0 is 0..1, slot i is 2^i..2^(i+1)-1."""
    if slot == 0:
        return 0, 1
    return 1 << slot, (1 << (slot + 1)) - 1


def percentiles(slots: tuple[int, ...] | list[int], qs: tuple[float, ...]) -> list[float | None]:
    """``percentile`` for each of ``qs``, from one running sum of the slots."""
    cum = list(accumulate(slots))
    total = cum[-1] if cum else 0
    if total == 0:
        return [None] * len(qs)
    out: list[float | None] = []
    for q in qs:
        rank = q * total
        i = bisect_left(cum, rank)  # the first slot whose running sum reaches the rank
        if i == len(cum):
            out.append(float(bucket_bounds(len(slots) - 1)[1]))
            continue
        low, high = bucket_bounds(i)
        n = slots[i]
        out.append(min(low + (high + 1 - low) * (rank - (cum[i] - n)) / n, float(high)))
    return out


def percentile(slots: tuple[int, ...] | list[int], q: float) -> float | None:
    """Estimate the q-quantile (0 < q <= 1) from log2 slots.

    The rank is found exactly; within its slot the samples are assumed spread
    evenly from the slot's lower bound to the next slot's lower bound (capped
    at the slot's upper bound). The answer is therefore always inside the
    right slot, and off by at most the slot's width: less than a factor of two
    of the true value.
    """
    total = sum(slots)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(slots):
        if n and seen + n >= rank:
            low, high = bucket_bounds(i)
            return min(low + (high + 1 - low) * (rank - seen) / n, float(high))
        seen += n
    low, high = bucket_bounds(len(slots) - 1)
    return float(high)
