"""Backends that trace and hand back cumulative histograms.

``LibbpfTracer`` loads a package through the system libbpf; the variant to
load is chosen by ``runner.tcprtt.variants.choose``. It reads the histogram
map through a storage: the package's own module's when it has one (tcprtt's
layouts are in ``runner.tcprtt.storage``), else ``MapStorage``, every entry
of the map with its value decoded by BTF.
"""

from __future__ import annotations

from typing import Protocol

from .bpfobject import to_json
from .histogram import Hist
from .loader.probe import LoadedProbe
from .package import Package, rodata_image


class Tracer(Protocol):
    variant: str

    def snapshot(self) -> list[Hist]: ...
    def dropped(self) -> int: ...
    def close(self) -> None: ...


class Storage(Protocol):
    """How a loaded probe keeps its histograms, and how they are read."""

    def read(self, probe: LoadedProbe) -> list[Hist]: ...
    def dropped(self, probe: LoadedProbe) -> int: ...


class MapStorage:
    """Any package: every entry of its histogram map, the key kept raw and
    the value decoded by its BTF type."""

    def __init__(self, package: Package):
        self.package, self.hist = package, package.hists[0]

    def read(self, probe: LoadedProbe) -> list[Hist]:
        btf, value_type = self.package.btf, self.hist.value_type
        return [Hist.from_value(k, to_json(btf, value_type, v)) for k, v in probe.read(self.hist)]

    def dropped(self, probe: LoadedProbe) -> int:
        return 0  # a generic package has no drop counter the runner knows


def storage_of(package: Package, values: dict[str, object]) -> Storage:
    """The storage of a package loaded with ``values``: its own module's
    reader when it has one, else the generic one."""
    from .tcprtt import storage as tcprtt_storage
    return tcprtt_storage.for_package(package, values) or MapStorage(package)


class LibbpfTracer:
    """One package, loaded and attached; reads its histogram map."""

    def __init__(self, package: Package, values: dict[str, object], variant: str,
                 max_keys: int | None = None, storage: Storage | None = None):
        self.package = package
        self.variant = variant
        self._storage = storage if storage is not None else storage_of(package, values)
        self._probe = LoadedProbe(package, rodata_image(package, values), max_keys)
        try:
            self._probe.attach()
        except BaseException:
            self._probe.close()
            raise

    @property
    def probe(self) -> LoadedProbe:
        return self._probe

    def snapshot(self) -> list[Hist]:
        return self._storage.read(self._probe)

    def dropped(self) -> int:
        return self._storage.dropped(self._probe)

    def evictions(self) -> int:
        """Keys evicted from the histogram map to make room (0 when its
        storage cannot tell)."""
        evictions = getattr(self._storage, "evictions", None)
        return evictions(self._probe) if evictions is not None else 0

    def close(self) -> None:
        self._probe.close()

    def __enter__(self) -> LibbpfTracer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
