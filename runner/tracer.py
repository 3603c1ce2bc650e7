"""Backends that trace and hand back cumulative histograms.

``LibbpfTracer`` loads a package through the system libbpf; the variant to
load is chosen by ``runner.tcprtt.variants.choose``.
"""

from __future__ import annotations

import struct
from typing import Protocol

from .addresses import unkeyed_key
from .bpfobject import to_json
from .config import probe_config
from .errors import TcprttError
from .histogram import Hist
from .loader.probe import LoadedProbe
from .package import Package, rodata_image


class Tracer(Protocol):
    variant: str

    def snapshot(self) -> list[Hist]: ...
    def dropped(self) -> int: ...
    def close(self) -> None: ...


class LibbpfTracer:
    """One package, loaded and attached; reads every sample map."""

    def __init__(self, package: Package, values: dict[str, object], variant: str,
                 max_keys: int | None = None):
        self.package = package
        self.variant = variant
        self._probe = LoadedProbe(package, rodata_image(package, values), max_keys)
        try:
            self._probe.attach()
        except BaseException:
            self._probe.close()
            raise
        self._hist = package.hists[0]
        self._decode = _fast_decoder(package) or self._generic_decode
        # With the runner's per-CPU setting, tcprtt's unkeyed histogram lives
        # in a per-CPU array, and keyed ones partly in a per-CPU key cache
        # (the probe's config names the setting and the maps).
        percpu = probe_config()["percpu"]
        self._percpu_map = self._key_cache = None
        if values.get(percpu["setting"]):
            if values.get("targ_laddr_hist") or values.get("targ_raddr_hist"):
                self._key_cache = _KeyCache(package, percpu["key_cache"])
            else:
                self._percpu_map = percpu["map"]

    @property
    def probe(self) -> LoadedProbe:
        return self._probe

    def _generic_decode(self, key: bytes, value: bytes) -> Hist:
        btf, h = self.package.btf, self._hist
        return Hist.from_record({"key": to_json(btf, h.key_type, key),
                                 "value": to_json(btf, h.value_type, value)})

    def snapshot(self) -> list[Hist]:
        if self._percpu_map is not None:
            return [self._percpu_total()]
        raw = self._probe.read(self._hist)
        cached = self._key_cache.read(self._probe) if self._key_cache is not None else None
        if not cached:
            return [self._decode(k, v) for k, v in raw]
        hists = []
        for k, v in raw:
            copies = cached.pop(k, ())
            hists.append(_sum([self._decode(k, c) for c in (v, *copies)]))
        # Every cached key has its hists entry; should one not, it still counts.
        hists += [_sum([self._decode(k, c) for c in copies]) for k, copies in cached.items()]
        return hists

    def _percpu_total(self) -> Hist:
        """The per-CPU copies summed, keyed as the unkeyed hists entry is."""
        h = self._hist
        key = unkeyed_key(h.key_size)
        return _sum([self._decode(key, v)
                     for v in self._probe.read_percpu(self._percpu_map, h.value_size)])

    def dropped(self) -> int:
        return self._probe.read_counter("dropped") if self._probe.has_map("dropped") else 0

    def close(self) -> None:
        self._probe.close()

    def __enter__(self) -> LibbpfTracer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _sum(parts: list[Hist]) -> Hist:
    first = parts[0]
    if len(parts) == 1:
        return first
    return Hist(key=first.key, slots=tuple(map(sum, zip(*(p.slots for p in parts)))),
                latency=sum(p.latency for p in parts), cnt=sum(p.cnt for p in parts),
                extra=first.extra, has_sum=first.has_sum)


class _KeyCache:
    """tcprtt's per-CPU key cache: slots of ``struct key_slot {__u32 family;
    __u32 addr[4]; struct hist hist;}``, family 0 while free. A key's samples
    are its hists entry plus its slot's copy on every CPU that used it.
    (Family is a __u16 in hist_key, and little-endian is assumed, as in
    _fast_decoder: BPF runs in the host's byte order, and the runner reads
    the x86_64 and arm64 hosts it ships for.)"""

    def __init__(self, package: Package, name: str):
        mapdef = next(m for m in package.bpf.maps() if m.name == name)
        btf = package.btf
        value_t = btf.get(btf.resolve(mapdef.value_type))
        offsets = {m.name: m.offset for m in value_t.members}
        if list(offsets) != ["family", "addr", "hist"]:
            raise TcprttError(f"{package.source}: {name} is not a key cache this runner reads")
        self.name, self.entries = name, mapdef.max_entries
        self.value_size = btf.size_of(mapdef.value_type)
        self.addr_off, self.hist_off = offsets["addr"], offsets["hist"]
        h = package.hists[0]
        self.hist_size = h.value_size
        key_t = btf.get(btf.resolve(h.key_type))
        key_offsets = {m.name: m.offset for m in key_t.members}
        if list(key_offsets) != ["family", "addr"]:
            raise TcprttError(f"{package.source}: {h.name} keys are not tcprtt's hist_key")
        key_size, addr_at = h.key_size, key_offsets["addr"]

        def raw_key(family: int, addr: bytes) -> bytes:
            """The hists key (struct hist_key) for a family and address."""
            key = bytearray(key_size)
            key[0:2] = family.to_bytes(2, "little")
            key[addr_at:addr_at + 16] = addr
            return bytes(key)
        self._raw_key = raw_key

    def read(self, probe: LoadedProbe) -> dict[bytes, list[bytes]]:
        """The used slots' per-CPU copies of struct hist, raw, by the raw
        hists key they stand for: the tracer decodes them as hists values."""
        out: dict[bytes, list[bytes]] = {}
        for index in range(self.entries):
            for value in probe.read_percpu(self.name, self.value_size, index):
                family = int.from_bytes(value[:4], "little")
                if not family:
                    continue
                addr = value[self.addr_off:self.addr_off + 16]
                out.setdefault(self._raw_key(family, addr), []).append(
                    value[self.hist_off:self.hist_off + self.hist_size])
        return out


def _fast_decoder(package: Package):
    """A struct-based decoder for tcprtt's own layout (hist_key -> hist)."""
    h = package.hists[0]
    btf = package.btf
    key_t = btf.get(btf.resolve(h.key_type))
    value_t = btf.get(btf.resolve(h.value_type))
    if [m.name for m in key_t.members] != ["family", "addr"] or \
            [m.name for m in value_t.members] != ["latency", "cnt", "slots"]:
        return None
    slots_fmt = struct.Struct(f"<QQ{h.slots_count}I")
    addr_off = key_t.members[1].offset

    def decode(key: bytes, value: bytes) -> Hist:
        fields = slots_fmt.unpack_from(value)
        family = key[0] | key[1] << 8
        return Hist(key={"family": family, "addr": list(key[addr_off:addr_off + 16])},
                    slots=fields[2:], latency=fields[0], cnt=fields[1])
    return decode

