"""One tracer per kind of output ecli polls: ring buffer, perf event array,
sample map, or nothing.

Each tracer reads one map of a loaded package (``PackageProbe``, which the
command owns and closes) and prints what ecli prints, through ``write``: a
header line first for plain-text records, then one line per record
(``BufferTracer``); every key of a sample map each interval, as a log2
table or a key/value line (``SampleTracer``); nothing at all
(``SilentTracer``). Records are decoded from the package's BTF by
``bpfobject.ecli_decoder``, checked when the package was opened.
"""

from __future__ import annotations

import ctypes
import struct
import time
from typing import Callable

from ..errors import KernelError
from ..loader import libbpf
from ..loader.buffers import BPF_MAP_TYPE_RINGBUF, PERF_BUFFER_PAGES, open_reader
from ..loader.probe import LoadedProbe
from ..render.text import log2_hist
from . import format as fmt
from . import tc
from .exports import Export, record_writer

Write = Callable[[str], None]


class PackageProbe(LoadedProbe):
    """A LoadedProbe that starts ``.rodata`` and ``.bss`` from the given
    images (ecli's settings), attaches XDP programs through a link and tc
    programs as guarded filters (``targets``: program name -> interface
    index or tc Target)."""

    def __init__(self, package, images: dict[str, bytes], targets: dict):
        self._images = images
        self._targets = targets
        self._filters: list[tc.Attached] = []
        super().__init__(package)

    def _collect_maps(self) -> dict[str, int]:
        # Runs right after the object is opened, before it is loaded: the
        # moment the internal maps' initial values can still be written.
        maps = super()._collect_maps()
        for section, image in self._images.items():
            found = [m for name, m in maps.items() if name.endswith(section)]
            if not found or not image:
                continue
            size = ctypes.c_size_t()
            ptr = self._lib.bpf_map__initial_value(found[0], ctypes.byref(size))
            if size.value < len(image):
                raise KernelError(f"{self.package.source}: {section} is {size.value} bytes, "
                                  f"its settings {len(image)}")
            ctypes.memmove(ptr, image, len(image))
        return maps

    def _attach_program(self, handle, name: str):
        target = self._targets.get(name)
        if isinstance(target, tc.Target):
            self._filters.append(tc.Attached(name, self._lib.bpf_program__fd(handle), target))
            return None
        if target is not None:
            return self._lib.bpf_program__attach_xdp(handle, target)
        return self._lib.bpf_program__attach(handle)

    def detach(self) -> None:
        filters, self._filters = getattr(self, "_filters", []), []
        for attached in reversed(filters):
            attached.close()
        super().detach()

    def map_type(self, name: str) -> int:
        return self._lib.bpf_map__type(self._maps[name])


class _Clock:
    """ecli's ``%H:%M:%S`` local time, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._text = time.strftime("%H:%M:%S", time.localtime(second))
        return self._text


class BufferTracer:
    """A ring buffer's or perf event array's records, one line each."""

    def __init__(self, probe: PackageProbe, export: Export, json_output: bool, write: Write,
                 perf_pages: int = PERF_BUFFER_PAGES):
        self.probe, self.export, self.json_output, self.write = probe, export, json_output, write
        self.read = 0
        self.short = 0   # records smaller than the export struct, skipped
        self._lines: list[str] = []
        self._clock = _Clock()
        self.map_type = probe.map_type(export.map)
        self.capacity = probe.max_entries(export.map) if self.map_type == \
            BPF_MAP_TYPE_RINGBUF else 0
        fields = export.fields
        self._names = [f.name for f in fields]
        self._texts = [f.text for f in fields]
        self._decode = export.record or self._by_member
        self._record = record_writer(fields)
        _, self._offsets = fmt.header(self._names, "TIME     ")
        self._reader = open_reader(probe.map_fd(export.map), self.map_type, self._sample,
                                   perf_pages=perf_pages, ring_capacity=self.capacity)

    def _by_member(self, data: bytes) -> dict:
        """Each member decoded on its own (custom members: no one struct)."""
        return {f.name: f.decode(data[f.start:f.end]) for f in self.export.fields}

    def header(self) -> str | None:
        """The header line ecli prints first, for plain text."""
        return None if self.json_output else fmt.header(self._names, "TIME     ")[0]

    def _sample(self, data: bytes) -> None:
        self.read += 1
        if len(data) < self.export.size:
            self.short += 1
            return
        record = self._decode(data)  # the export struct, members by name
        if self.json_output:
            self._lines.append(self._record(record))
            return
        parts = [self._clock.now().ljust(8), " "]
        width = 9
        for name, text, offset in zip(self._names, self._texts, self._offsets):
            if offset > width:
                parts.append(" " * (offset - width))
                width = offset
            else:
                parts.append(" ")
                width += 1
            piece = text(record[name])
            parts.append(piece)
            width += len(piece) if piece.isascii() else len(piece.encode())
        self._lines.append("".join(parts))

    @property
    def lost(self) -> int:
        """Records the kernel dropped because the reader fell behind (perf
        event arrays count them; ring buffers do not)."""
        return getattr(self._reader, "lost", 0)

    @property
    def peak_backlog(self) -> int:
        return getattr(self._reader, "peak_backlog", 0)

    def poll(self, timeout_ms: int) -> int:
        n = self._reader.poll(timeout_ms)
        if self._lines:
            lines, self._lines = self._lines, []
            self.write("\n".join(lines) + "\n")
        return n

    def ring_filled(self) -> bool:
        """Whether the ring buffer was seen too full for one more record:
        the kernel refuses records then, and counts none."""
        return bool(self.capacity) and self.peak_backlog + self.export.size + 8 > self.capacity

    def close(self) -> None:
        self._reader.close()


class SampleTracer:
    """Every key of a sample map, each interval, cumulative, as ecli prints
    them: log2 tables, or one key/value line per key (or JSON)."""

    def __init__(self, probe: PackageProbe, export: Export, json_output: bool, write: Write):
        self.probe, self.export, self.json_output, self.write = probe, export, json_output, write
        self._clock = _Clock()
        self.read = 0
        self._map = _MapShape(export.map, export.key_size, export.size)
        self._keys = [(f.name, f.start, f.end, f.decode, f.text) for f in export.key_fields]
        self._values = [(f.name, f.start, f.end, f.decode, f.text) for f in export.fields]
        self._key_json = record_writer(export.key_fields)
        self._value_json = record_writer(export.fields)

    def header(self) -> str | None:
        if self.json_output or self.export.sample_type != "default_kv":
            return None
        line, _ = fmt.header([f.name for f in self.export.key_fields], "TIME     ")
        return fmt.header([f.name for f in self.export.fields], line)[0]

    def tick(self) -> None:
        """Read every key and print them."""
        out = []
        for key, value in self.probe.read(self._map):
            self.read += 1
            out.append(self._render(key, value))
        if out:
            self.write("".join(out))

    def _render(self, key: bytes, value: bytes) -> str:
        if self.export.sample_type == "log2_hist" and not self.json_output:
            return self._log2(key, value)
        key_text = self._key_json({name: decode(key[a:b]) for name, a, b, decode, _ in self._keys})
        value_text = self._value_json({name: decode(value[a:b])
                                       for name, a, b, decode, _ in self._values})
        if self.json_output:
            return f'{{"key":{key_text},"value":{value_text}}}\n'
        return f"{self._clock.now():<8} {key_text} {value_text}\n"

    def _log2(self, key: bytes, value: bytes) -> str:
        head = "key = " + "".join(" " + text(decode(key[a:b]))
                                  for _, a, b, decode, text in self._keys) + "\n"
        for name, a, b, decode, text in self._values:
            if name != "slots":
                head += f"{name} = {text(decode(value[a:b]))}\n"
        slots = self.export.slots
        assert slots is not None
        raw = value[slots.start:slots.end]
        counts = struct.unpack_from(f"<{len(raw) // 4}I", raw)
        # ecli prints both pieces with println!: each gets one more newline.
        return head + "\n" + log2_hist(counts, self.export.unit) + "\n"

    def clear(self) -> None:
        """Delete every key, as ecli does at exit with ``clear_map``."""
        fd = self.probe.map_fd(self.export.map)
        lib = libbpf.load_library()
        for key, _ in self.probe.read(self._map):
            lib.bpf_map_delete_elem_flags(fd, key, 0)

    def close(self) -> None:
        pass


class _MapShape:
    """What LoadedProbe.read needs to walk a map."""

    def __init__(self, name: str, key_size: int, value_size: int):
        self.name, self.key_size, self.value_size = name, key_size, value_size


class SilentTracer:
    """A package that exports nothing: attached until stopped."""

    read = 0

    def header(self) -> str | None:
        return None

    def close(self) -> None:
        pass
