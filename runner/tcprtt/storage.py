"""tcprtt's storage layouts and their readers.

The probe keeps its histograms in one of three layouts (probe/config.json's
``percpu`` names the setting and the maps):

- shared: every sample in ``hists`` (``struct hist_key`` -> ``struct hist``),
  with atomic adds; what ecli reads;
- per-CPU, unkeyed: the runner's setting on and no key: one per-CPU array
  entry, ``hist_cpu``, summed over the CPUs;
- keyed: every sample in ``hists``, an LRU hash: a new key takes the place
  of the least recently used one when the map is full (an older release's
  package, with the runner's setting on, also kept a key's samples in a
  per-CPU ``key_cache`` in front of ``hists``: its copies are added).

Keys added to ``hists`` are counted in ``new_keys``: the keys evicted are
that count less the keys present at a read. Samples that found no room for
their key are counted in ``dropped``.
A ``Storage`` reads one loaded probe in its layout and hands back one
``Hist`` per key, keys as raw ``struct hist_key`` bytes. The layout is the
runner's choice (``prefer_percpu``), and ``for_package`` gives the reader
that matches the settings a package was loaded with.

Little-endian is assumed, as everywhere the runner reads the probe's
structs: BPF runs in the host's byte order, and the runner ships for x86_64
and arm64 hosts.
"""

from __future__ import annotations

import struct
from operator import itemgetter
from typing import TYPE_CHECKING

from ..config import probe_config
from ..errors import TcprttError
from ..histogram import Hist, collector_paused
from .keys import ADDR_OFFSET, KEY_SIZE, make_key, unkeyed_key

if TYPE_CHECKING:
    from ..loader.probe import LoadedProbe
    from ..package import HistMap, Package

DROPPED = "dropped"   # a one-entry array: samples not counted, the key map being full
NEW_KEYS = "new_keys"  # a one-entry array: keys added to hists
KEY_CACHE_MAP = "key_cache"  # an older release's per-CPU cache in front of hists
KEYED = ("targ_laddr_hist", "targ_raddr_hist")  # the settings that key the histograms
SHARED, PERCPU, KEY_CACHE = "shared", "percpu", "key_cache"
_KEY, _VALUE = itemgetter(0), itemgetter(1)


def percpu_setting() -> str:
    return probe_config()["percpu"]["setting"]


def prefer_percpu(packages: dict[str, Package], values: dict[str, object]) -> None:
    """Choose the runner's per-CPU storage in ``values`` when every package
    takes it (packages of an older release lack the setting). ecli reads
    ``hists`` alone: only the libbpf backend may choose it."""
    setting = percpu_setting()
    if packages and all(any(s.name == setting for s in p.settings) for p in packages.values()):
        values[setting] = True


def layout_of(values: dict[str, object]) -> str:
    """The layout that a probe loaded with ``values`` keeps its samples in."""
    if not values.get(percpu_setting()):
        return SHARED
    return KEY_CACHE if any(values.get(name) for name in KEYED) else PERCPU


class Decoder:
    """``struct hist`` values to Hists, for tcprtt's own layout."""

    def __init__(self, hist: HistMap, slots_count: int):
        pad = hist.value_size - 16 - 4 * slots_count
        self.value_size = hist.value_size
        self.struct = struct.Struct(f"<QQ{slots_count}I{pad}x")

    @classmethod
    def of(cls, package: Package) -> Decoder | None:
        """The decoder of a package whose histogram map is tcprtt's
        (``struct hist_key`` -> ``struct hist``), else None."""
        h = package.hists[0]
        btf = package.btf
        key_t = btf.get(btf.resolve(h.key_type))
        value_t = btf.get(btf.resolve(h.value_type))
        if [m.name for m in key_t.members] != ["family", "addr"] or \
                [m.name for m in value_t.members] != ["latency", "cnt", "slots"]:
            return None
        if [m.offset for m in key_t.members] != [0, ADDR_OFFSET] or h.key_size != KEY_SIZE or \
                [m.offset for m in value_t.members] != [0, 8, 16] or \
                h.slots_offset != 16 or 16 + 4 * h.slots_count > h.value_size:
            return None
        return cls(h, h.slots_count)

    def many(self, pairs: list[tuple[bytes, bytes]]) -> list[Hist]:
        """One Hist per (raw key, raw value), from one unpack of every value."""
        if not pairs:
            return []
        fields = self.struct.iter_unpack(b"".join(map(_VALUE, pairs)))
        return [Hist(k, f[2:], f[0], f[1]) for k, f in zip(map(_KEY, pairs), fields)]

    def columns(self, keys: list[bytes], values: bytes) -> list[Hist]:
        """One Hist per key, the values (one after another, value_size
        each, in the keys' order) unpacked in one pass."""
        return [Hist(k, f[2:], f[0], f[1])
                for k, f in zip(keys, self.struct.iter_unpack(values))]

    def summed(self, key: bytes, values: list[bytes]) -> Hist:
        """One key's copies, summed."""
        unpack = self.struct.unpack_from
        rows = [unpack(v.ljust(self.value_size, b"\0")) for v in values]
        if len(rows) == 1:
            f = rows[0]
            return Hist(key, f[2:], f[0], f[1])
        sums = tuple(map(sum, zip(*rows)))
        return Hist(key, sums[2:], sums[0], sums[1])


class Storage:
    """Reads one loaded tcprtt probe in the layout of the settings it was
    loaded with."""

    def __init__(self, package: Package, values: dict[str, object], decoder: Decoder):
        self.package, self.decoder = package, decoder
        self.hist = package.hists[0]
        self.layout = layout_of(values)
        percpu = probe_config()["percpu"]
        self.percpu_map = percpu["map"]
        if self.layout == KEY_CACHE and not any(m.name == KEY_CACHE_MAP
                                                for m in package.bpf.maps()):
            self.layout = SHARED  # keyed, this release counts in hists alone
        self.key_cache = _KeyCache(package, KEY_CACHE_MAP) \
            if self.layout == KEY_CACHE else None
        self.evicted = 0  # keys evicted, as of the last read

    def read(self, probe: LoadedProbe) -> list[Hist]:
        with collector_paused():
            return self._read(probe)

    def _read(self, probe: LoadedProbe) -> list[Hist]:
        if self.layout == PERCPU:
            copies = probe.read_percpu(self.percpu_map, self.hist.value_size)
            return [self.decoder.summed(unkeyed_key(self.hist.key_size), copies)]
        # Read before the walk: a key added during it may be seen in the walk
        # but not in the count, which reads as fewer evictions, never more.
        added = probe.read_counter(NEW_KEYS) if probe.has_map(NEW_KEYS) else None
        keys, values = probe.read_columns(self.hist)
        if added is not None:
            self.evicted = max(self.evicted, added - len(keys))
        hists = self.decoder.columns(keys, values)
        cached = self.key_cache.read(probe) if self.key_cache is not None else None
        if cached:
            summed = self.decoder.summed
            vs = self.hist.value_size
            for i, k in enumerate(keys):
                v = values[i * vs:(i + 1) * vs]
                copies = cached.pop(k, None)
                if copies is not None:
                    hists[i] = summed(k, [v, *copies])
            # Every cached key has its hists entry; should one not, it still counts.
            hists += [summed(k, copies) for k, copies in cached.items()]
        return hists

    def dropped(self, probe: LoadedProbe) -> int:
        return probe.read_counter(DROPPED) if probe.has_map(DROPPED) else 0

    def evictions(self, probe: LoadedProbe) -> int:
        """Keys the LRU map evicted, as of the last read (a counter: it
        never goes down)."""
        return self.evicted


def for_package(package: Package, values: dict[str, object]) -> Storage | None:
    """tcprtt's reader for a package of tcprtt's layout loaded with
    ``values``; None for any other package."""
    decoder = Decoder.of(package)
    return None if decoder is None else Storage(package, values, decoder)


class _KeyCache:
    """tcprtt's per-CPU key cache: slots of ``struct key_slot {__u32 family;
    __u32 addr[4]; struct hist hist;}``, family 0 while free. (Family is a
    __u16 in hist_key.)"""

    def __init__(self, package: Package, name: str):
        mapdef = next((m for m in package.bpf.maps() if m.name == name), None)
        if mapdef is None:
            raise TcprttError(f"{package.source}: no {name} map for the per-CPU storage")
        btf = package.btf
        value_t = btf.get(btf.resolve(mapdef.value_type))
        offsets = {m.name: m.offset for m in value_t.members}
        if list(offsets) != ["family", "addr", "hist"]:
            raise TcprttError(f"{package.source}: {name} is not a key cache this runner reads")
        self.name, self.entries = name, mapdef.max_entries
        self.value_size = btf.size_of(mapdef.value_type)
        self.addr_off, self.hist_off = offsets["addr"], offsets["hist"]
        self.hist_size = package.hists[0].value_size
        self.key_size = package.hists[0].key_size

    def read(self, probe: LoadedProbe) -> dict[bytes, list[bytes]]:
        """The used slots' per-CPU copies of struct hist, raw, by the raw
        hists key they stand for."""
        out: dict[bytes, list[bytes]] = {}
        a, h = self.addr_off, self.hist_off
        for index in range(self.entries):
            for value in probe.read_percpu(self.name, self.value_size, index):
                family = int.from_bytes(value[:4], "little")
                if not family:
                    continue
                key = make_key(family & 0xFFFF, value[a:a + 16], self.key_size)
                out.setdefault(key, []).append(value[h:h + self.hist_size])
        return out

