"""A package loaded into the kernel: open, configure, load, attach, read, close.

``LoadedProbe`` owns the libbpf object and its links and is the only thing
that closes them: links before the object, each once, on every way out.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import os
from ctypes import c_size_t, c_uint32

from .. import features
from ..errors import KernelError
from ..package import HistMap, Package
from . import libbpf

VERIFIER_LOG_SIZE = 1 << 20
VERIFIER_LINES = 2
# Entries fetched by one batched lookup; bounded so the buffers stay small.
BATCH = 4096
BATCH_BYTES = 1 << 20  # keys and values that one batched lookup fetches, at most
# Sections libbpf attaches through a perf event whose id it reads in tracefs.
TRACEPOINT_SECTIONS = ("tracepoint/", "tp/")


def _shorten_log(log: str) -> str:
    """The verifier's last words: the instruction and why it was refused."""
    lines = [line.strip() for line in log.splitlines() if line.strip()
             and not line.startswith(("processed ", "verification time", "stack depth"))]
    return " | ".join(lines[-VERIFIER_LINES:])


class LoadedProbe:
    """A package's BPF object in the kernel. Use as a context manager."""

    def __init__(self, package: Package, rodata: bytes | None = None,
                 max_entries: int | None = None):
        self.package = package
        self._lib = libbpf.load_library()
        self._obj: int | None = None
        self._links: list[int] = []
        self._batch_ok = True
        self._log = ctypes.create_string_buffer(VERIFIER_LOG_SIZE)
        name = package.name.encode()
        opts = libbpf.OpenOpts(sz=ctypes.sizeof(libbpf.OpenOpts), object_name=name,
                               kernel_log_buf=ctypes.cast(self._log, ctypes.c_void_p),
                               kernel_log_size=VERIFIER_LOG_SIZE)
        obj = package.obj
        libbpf.recent_messages()
        try:
            self._obj = self._lib.bpf_object__open_mem(obj, len(obj), ctypes.byref(opts))
        except libbpf.LibbpfError as exc:
            raise self._error(f"{package.source}: libbpf cannot open the object", exc) from None
        try:
            self._maps = self._collect_maps()
            if rodata:
                self._write_rodata(rodata)
            if max_entries is not None:
                for hist in package.hists:
                    self._lib.bpf_map__set_max_entries(self._maps[hist.name], max_entries)
            try:
                self._lib.bpf_object__load(self._obj)
            except libbpf.LibbpfError as exc:
                log = _shorten_log(self._log.value.decode("utf-8", "replace"))
                detail = f" (verifier: {log})" if log else ""
                raise self._error(f"{package.source}: the kernel refused to load it{detail}",
                                  exc) from None
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _error(message: str, exc: libbpf.LibbpfError) -> KernelError:
        notes = [m.removeprefix("libbpf: ") for m in libbpf.recent_messages() if m]
        reason = exc.args[0].split(": ", 1)[-1]
        extra = f" (libbpf: {notes[0]})" if notes else ""
        return KernelError(f"{message}: {reason}{extra}", exc.errno)

    def _collect_maps(self) -> dict[str, int]:
        maps = {}
        pos = None
        while True:
            pos = self._lib.bpf_object__next_map(self._obj, pos)
            if not pos:
                return maps
            maps[self._lib.bpf_map__name(pos).decode()] = pos

    def _write_rodata(self, data: bytes) -> None:
        rodata = [m for name, m in self._maps.items() if name.endswith(".rodata")]
        if len(rodata) != 1:
            raise KernelError(f"{self.package.source}: expected one .rodata map, "
                              f"found {len(rodata)}")
        size = c_size_t()
        ptr = self._lib.bpf_map__initial_value(rodata[0], ctypes.byref(size))
        if size.value != len(data):
            raise KernelError(f"{self.package.source}: .rodata is {size.value} bytes, "
                              f"settings are {len(data)}")
        ctypes.memmove(ptr, data, len(data))

    def programs(self) -> list[tuple[int, str, str]]:
        """(handle, name, section) of each program."""
        out = []
        pos = None
        while True:
            pos = self._lib.bpf_object__next_program(self._obj, pos)
            if not pos:
                return out
            out.append((pos, self._lib.bpf_program__name(pos).decode(),
                        self._lib.bpf_program__section_name(pos).decode()))

    def program_ids(self) -> list[int]:
        """Kernel ids of the loaded programs (for bpf_stats and bpftool)."""
        ids = []
        for handle, _, _ in self.programs():
            fd = self._lib.bpf_program__fd(handle)
            info = _ProgInfo()
            length = c_uint32(ctypes.sizeof(info))
            if self._lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(length)) == 0:
                ids.append(info.id)
        return ids

    def attach(self) -> None:
        """Attach every program; tracefs is mounted first if one needs it."""
        for handle, name, section in self.programs():
            if section.startswith(TRACEPOINT_SECTIONS):
                try:
                    features.ensure_tracefs()
                except KernelError as exc:
                    raise KernelError(f"cannot attach {name} to {section}: {exc}",
                                      exc.errno) from None
            libbpf.recent_messages()
            try:
                self._links.append(self._lib.bpf_program__attach(handle))
            except libbpf.LibbpfError as exc:
                raise self._error(f"cannot attach {name} to {section}", exc) from None

    def max_entries(self, name: str) -> int:
        return self._lib.bpf_map__max_entries(self._maps[name])

    def has_map(self, name: str) -> bool:
        return name in self._maps

    def read_counter(self, name: str) -> int:
        """Entry 0 of a one-element array of u64, such as a drop counter."""
        key = ctypes.c_uint32(0)
        value = ctypes.c_uint64(0)
        self._lib.bpf_map_lookup_elem(self.map_fd(name), ctypes.byref(key), ctypes.byref(value))
        return value.value

    def read_percpu(self, name: str, value_size: int, index: int = 0) -> list[bytes]:
        """Entry ``index`` of a per-CPU array: one value per possible CPU."""
        stride = (value_size + 7) // 8 * 8
        cpus = self._lib.libbpf_num_possible_cpus()
        key = ctypes.c_uint32(index)
        buf = ctypes.create_string_buffer(stride * cpus)
        self._lib.bpf_map_lookup_elem(self.map_fd(name), ctypes.byref(key), buf)
        raw = buf.raw
        return [raw[i * stride:i * stride + value_size] for i in range(cpus)]

    def map_fd(self, name: str) -> int:
        return self._lib.bpf_map__fd(self._maps[name])

    def read(self, hist: HistMap) -> list[tuple[bytes, bytes]]:
        """Every (key, value) of a histogram map, as raw bytes."""
        fd = self.map_fd(hist.name)
        if self._batch_ok:
            try:
                return self._read_batched(fd, hist)
            except KernelError as exc:
                if exc.errno not in (errno_mod.EINVAL, errno_mod.ENOTSUP, errno_mod.EOPNOTSUPP):
                    raise
                self._batch_ok = False  # an older kernel: walk the keys instead
        return self._read_walk(fd, hist)

    def _read_walk(self, fd: int, hist: HistMap) -> list[tuple[bytes, bytes]]:
        key = ctypes.create_string_buffer(hist.key_size)
        nxt = ctypes.create_string_buffer(hist.key_size)
        value = ctypes.create_string_buffer(hist.value_size)
        out = []
        prev = None
        for _ in range(self.max_entries(hist.name) + 1):
            if self._lib.bpf_map_get_next_key(fd, prev, nxt) != 0:
                break
            try:
                self._lib.bpf_map_lookup_elem(fd, nxt, value)
            except libbpf.LibbpfError as exc:
                if exc.errno != errno_mod.ENOENT:  # deleted meanwhile
                    raise
            else:
                out.append((nxt.raw, value.raw))
            ctypes.memmove(key, nxt, hist.key_size)
            prev = key
        return out

    def _read_batched(self, fd: int, hist: HistMap) -> list[tuple[bytes, bytes]]:
        # Bounded in bytes, not entries: a package's value size sets the cost.
        batch = max(1, min(BATCH, BATCH_BYTES // (hist.key_size + hist.value_size)))
        keys = ctypes.create_string_buffer(hist.key_size * batch)
        values = ctypes.create_string_buffer(hist.value_size * batch)
        token_in = ctypes.create_string_buffer(max(hist.key_size, 8))
        token_out = ctypes.create_string_buffer(max(hist.key_size, 8))
        opts = libbpf.BatchOpts(sz=ctypes.sizeof(libbpf.BatchOpts))
        out = []
        first = True
        # The map's size as loaded (--max-keys), not as built; every call but
        # the last returns at least one entry.
        for _ in range(self.max_entries(hist.name) + 1):
            count = c_uint32(batch)
            rc = self._lib.bpf_map_lookup_batch(fd, None if first else token_in, token_out,
                                                keys, values, ctypes.byref(count),
                                                ctypes.byref(opts))
            n = count.value
            kraw, vraw = keys.raw, values.raw
            for i in range(n):
                out.append((kraw[i * hist.key_size:(i + 1) * hist.key_size],
                            vraw[i * hist.value_size:(i + 1) * hist.value_size]))
            if rc == -errno_mod.ENOENT:
                return out
            if rc < 0:
                raise KernelError(f"bpf_map_lookup_batch: {os.strerror(-rc)}", -rc)
            ctypes.memmove(token_in, token_out, len(token_out))
            first = False
        return out

    def detach(self) -> None:
        """Destroy the links, keeping the programs and maps: no new run starts
        once it returns (runs already under way end within a grace period),
        and the maps keep what was counted. Harmless to call again."""
        links, self._links = self._links, []
        for link in reversed(links):
            self._lib.bpf_link__destroy(link)

    def close(self) -> None:
        """Detach and unload; harmless to call again."""
        self.detach()
        obj, self._obj = self._obj, None
        if obj:
            self._lib.bpf_object__close(obj)

    def __enter__(self) -> LoadedProbe:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # a safety net only; owners call close()
        if getattr(self, "_obj", None) or getattr(self, "_links", None):
            self.close()


class _ProgInfo(ctypes.Structure):
    """The head of struct bpf_prog_info: type, id."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("_rest", ctypes.c_uint8 * 224)]

