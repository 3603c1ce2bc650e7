"""Histograms as data: one key's histogram, interval deltas, bucket bounds,
percentiles, and the codec that turns a generic package's raw keys into
JSON. Pure.

A histogram's key stays the raw bytes of the map's key until rendering
(None for a histogram that has no key): a renderer decodes it with its
package's codec, the addresses of ``runner.tcprtt.keys`` for tcprtt, a
``BtfKeys`` for any other package.
"""

from __future__ import annotations

import gc
from bisect import bisect_left
from contextlib import contextmanager
from itertools import accumulate, compress

from .bpfobject import (
    KIND_ARRAY,
    KIND_ENUM,
    KIND_ENUM64,
    KIND_FLOAT,
    KIND_INT,
    KIND_PTR,
    KIND_STRUCT,
    KIND_UNION,
    MAX_DEPTH,
    Btf,
    to_json,
)
from .errors import PackageError


class Hist:
    """One key's histogram over some span of time. Treated as immutable:
    a slotted class rather than a frozen dataclass, because a keyed
    interval makes one per key and a frozen dataclass is five times slower
    to build."""

    __slots__ = ("key", "slots", "latency", "cnt", "extra", "has_sum")

    def __init__(self, key: bytes | None, slots: tuple[int, ...], latency: int = 0,
                 cnt: int = 0, extra: tuple[tuple[str, object], ...] = (),
                 has_sum: bool = True):
        self.key = key            # the map key's raw bytes; None: no key
        self.slots = slots
        self.latency = latency    # sum of the samples, when the probe keeps it
        self.cnt = cnt            # number of samples summed into latency
        self.extra = extra        # other members of the value, decoded
        self.has_sum = has_sum    # whether the value has latency and cnt members

    def _fields(self) -> tuple:
        return (self.key, self.slots, self.latency, self.cnt, self.extra, self.has_sum)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Hist):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"Hist(key={self.key!r}, slots={self.slots!r}, latency={self.latency!r}, "
                f"cnt={self.cnt!r}, extra={self.extra!r}, has_sum={self.has_sum!r})")

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
    def from_value(cls, key: bytes | None, value: dict) -> Hist:
        """A histogram from its key's raw bytes and its value decoded to
        JSON, in ecli's shape ``{"latency": n, "cnt": n, "slots": [...]}``."""
        extra = tuple((k, v) for k, v in value.items() if k not in ("slots", "latency", "cnt"))
        return cls(key, tuple(int(s) for s in value["slots"]),
                   int(value.get("latency", 0)), int(value.get("cnt", 0)),
                   extra, "latency" in value and "cnt" in value)

    def minus(self, earlier: Hist | None) -> Hist:
        """What was added since ``earlier`` (the same key, read before). A
        count lower than before means the key started again (its map entry
        was evicted, then added anew): what was added is then all it holds."""
        if earlier is None:
            return self
        slots = self.slots
        if slots == earlier.slots:  # nothing added: most keys of most intervals
            slots = (0,) * len(slots)
        else:
            slots = tuple([a - b for a, b in zip(slots, earlier.slots)])
            if min(slots) < 0:
                return self
        if self.cnt < earlier.cnt or self.latency < earlier.latency:
            return self
        return Hist(self.key, slots, self.latency - earlier.latency, self.cnt - earlier.cnt,
                    self.extra, self.has_sum)

    def plus(self, others: list[Hist]) -> Hist:
        """This histogram and ``others`` (copies of the same key) summed."""
        if not others:
            return self
        parts = [self, *others]
        return Hist(self.key, tuple(map(sum, zip(*(p.slots for p in parts)))),
                    sum(p.latency for p in parts), sum(p.cnt for p in parts),
                    self.extra, self.has_sum)


class Intervals:
    """Turns cumulative snapshots into per-interval histograms.

    The kernel's counters are never cleared while tracing: each interval is the
    difference of two reads, so no sample can fall between a read and a clear.
    Histograms are matched by their keys' raw bytes. A key evicted from the
    map and added again counts from zero: its interval is then what it holds
    (``Hist.minus``), never a negative count.
    """

    def __init__(self) -> None:
        self._last: dict[bytes | None, Hist] = {}

    def step(self, snapshot: list[Hist]) -> list[Hist]:
        last = self._last
        if not last:
            out = list(snapshot)
        else:
            get = last.get
            out = [h.minus(get(h.key)) for h in snapshot]
        self._last = {h.key: h for h in snapshot}
        return out


@contextmanager
def collector_paused():
    """Pause the cyclic garbage collector while reading or rendering: one
    keyed interval allocates a few objects per key (a Hist, its slots, a
    row), none of them in a cycle, and the collections that 100,000 keys
    trigger would walk every live object again and again. Reference
    counting frees them as always. On the way out the objects alive then
    are frozen (gc.freeze), so that the first collection after the pause
    does not walk them either (60 to 100 ms of 100,000 keys); every
    UNFREEZE_EVERY pauses they are handed back to the collector and a full
    collection runs, so that a cycle among them is still found, only later."""
    global _pauses
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            _pauses += 1
            if _pauses % UNFREEZE_EVERY:
                gc.freeze()
            else:
                gc.unfreeze()
                gc.collect()  # before the next pause freezes them again
            gc.enable()


UNFREEZE_EVERY = 64
_pauses = 0


# Bucket bounds ---------------------------------------------------------------

def bucket_bounds(slot: int) -> tuple[int, int]:
    """The values a log2 slot holds, inclusive: slot 0 is 0..1, slot i is
    2^i..2^(i+1)-1. The one place that knows; text, JSON and Prometheus
    output take their bounds from here."""
    if slot == 0:
        return 0, 1
    return 1 << slot, (1 << (slot + 1)) - 1


# Every slot a histogram can have (a u32 slot array of a map value is
# bounded well below this by the package's checks; more are computed).
_BOUNDS = tuple(bucket_bounds(i) for i in range(128))
_ALL = range(len(_BOUNDS))


def bounds(count: int) -> tuple[tuple[int, int], ...]:
    """``bucket_bounds`` of slots 0 .. count-1."""
    if count <= 0:
        return ()
    if count <= len(_BOUNDS):
        return _BOUNDS[:count]
    return tuple(bucket_bounds(i) for i in range(count))


# Percentiles -----------------------------------------------------------------

def percentiles(slots: tuple[int, ...] | list[int], qs: tuple[float, ...]) -> list[float | None]:
    """Estimate each q-quantile of ``qs`` (ascending, 0 < q <= 1) from log2
    slots, in one pass over the slots that count something.

    The rank is found exactly; within its slot the samples are assumed spread
    evenly from the slot's lower bound to the next slot's lower bound (capped
    at the slot's upper bound). The answer is therefore always inside the
    right slot, and off by at most the slot's width: less than a factor of two
    of the true value.
    """
    total = sum(slots)
    if total <= 0 or min(slots) < 0:  # nothing, or a count that went down
        return [None] * len(qs) if total == 0 else _by_running_sum(slots, qs)
    ranks = [q * total for q in qs]
    count = len(ranks)
    out: list[float | None] = []
    want = ranks[0]
    seen = 0
    for i in compress(_ALL if len(slots) <= len(_ALL) else range(len(slots)), slots):
        n = slots[i]
        upto = seen + n
        while want <= upto:  # the first slot whose running sum reaches the rank
            if want <= seen:  # a rank below this slot: qs not ascending, or q <= 0
                return _by_running_sum(slots, qs)
            low, high = _BOUNDS[i] if i < len(_BOUNDS) else bucket_bounds(i)
            out.append(min(low + (high + 1 - low) * (want - seen) / n, float(high)))
            if len(out) == count:
                return out
            want = ranks[len(out)]
        seen = upto
    return _by_running_sum(slots, qs)  # a q above 1


def _by_running_sum(slots, qs: tuple[float, ...]) -> list[float | None]:
    """``percentiles`` for any slots (negative counts too) and any qs: the
    first slot whose running sum reaches each rank, by bisection."""
    cum = list(accumulate(slots))
    total = cum[-1] if cum else 0
    if total == 0:
        return [None] * len(qs)
    out: list[float | None] = []
    for q in qs:
        rank = q * total
        i = bisect_left(cum, rank)
        if i == len(cum):
            out.append(float(_bound(len(slots) - 1)[1]))
            continue
        low, high = _bound(i)
        n = slots[i]
        out.append(min(low + (high + 1 - low) * (rank - (cum[i] - n)) / n, float(high)))
    return out


def _bound(slot: int) -> tuple[int, int]:
    return _BOUNDS[slot] if slot < len(_BOUNDS) else bucket_bounds(slot)


def percentile(slots: tuple[int, ...] | list[int], q: float) -> float | None:
    """One q-quantile: ``percentiles`` for ``(q,)``."""
    return percentiles(slots, (q,))[0]


# Keys of generic packages ----------------------------------------------------

class BtfKeys:
    """A generic package's key codec: raw key bytes to JSON and back, by the
    map key's BTF type. Decoding is ``bpfobject.to_json``, as ecli shows
    keys; encoding is its inverse, for backends that hand keys over as JSON."""

    def __init__(self, btf: Btf, type_id: int):
        self.btf, self.type_id = btf, type_id
        self.size = btf.size_of(type_id)

    def json(self, key: bytes | None) -> object:
        """The key as ecli prints it; None for a histogram without a key."""
        return None if key is None else to_json(self.btf, self.type_id, key)

    def encode(self, value: object) -> bytes:
        """The raw key that ``json`` decodes to ``value``; PackageError when
        ``value`` does not fit the key's type."""
        out = bytearray(self.size)
        _encode(self.btf, self.type_id, value, out, 0, 0)
        return bytes(out)


def _encode(btf: Btf, type_id: int, value: object, out: bytearray, at: int, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise PackageError("BTF types are nested too deeply to encode")
    t = btf.get(btf.resolve(type_id))
    if t.kind in (KIND_INT, KIND_ENUM, KIND_ENUM64, KIND_PTR):
        if not isinstance(value, int):
            raise PackageError(f"{value!r} is not an integer of {btf.c_name(type_id)!r}")
        size = 8 if t.kind == KIND_PTR else t.size
        signed = (t.kind == KIND_INT and bool(t.encoding & 1)) or value < 0
        try:
            out[at:at + size] = int(value).to_bytes(size, "little", signed=signed)
        except OverflowError:
            raise PackageError(f"{value} does not fit {btf.c_name(type_id)!r}") from None
        return
    if t.kind == KIND_FLOAT:
        import struct
        if not isinstance(value, (int, float)):
            raise PackageError(f"{value!r} is not a number of {btf.c_name(type_id)!r}")
        out[at:at + t.size] = struct.pack("<d" if t.size == 8 else "<f", value)
        return
    if t.kind == KIND_ARRAY:
        elem = btf.get(btf.resolve(t.elem))
        if isinstance(value, str) and elem.kind == KIND_INT and elem.size == 1:
            raw = value.encode("utf-8")[:t.nelems]
            out[at:at + len(raw)] = raw
            return
        step = btf.size_of(t.elem)
        if not isinstance(value, list) or len(value) > t.nelems:
            raise PackageError(f"{value!r} is not an array of {btf.c_name(type_id)!r}")
        for i, item in enumerate(value):
            _encode(btf, t.elem, item, out, at + i * step, depth + 1)
        return
    if t.kind in (KIND_STRUCT, KIND_UNION):
        if not isinstance(value, dict):
            raise PackageError(f"{value!r} is not a {btf.c_name(type_id)!r}")
        members = {m.name: m for m in t.members if m.name}
        for name, item in value.items():
            if name not in members:
                raise PackageError(f"{btf.c_name(type_id)!r} has no member {name!r}")
            _encode(btf, members[name].type_id, item, out, at + members[name].offset,
                    depth + 1)
        return
    raise PackageError(f"cannot encode a value of BTF type {btf.c_name(type_id)!r}")
