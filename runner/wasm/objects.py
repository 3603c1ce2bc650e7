"""BPF objects that a wasm module loads: open any ELF bytes, attach one
program by name, find maps by name.

``GuestObject`` is a ``LoadedProbe`` that is described by nothing but its
bytes, so it opens, loads and closes through the same code as a package
(links before the object, each once, on every way out).
"""

from __future__ import annotations

import errno as errno_mod
import os
import socket
from dataclasses import dataclass
from typing import cast

from .. import features
from ..errors import KernelError
from ..loader import libbpf
from ..loader.probe import TRACEPOINT_SECTIONS, LoadedProbe
from ..package import Package

# Sections whose non-empty attach target names a cgroup path or a network
# interface; any other section attaches by its name, target or not, as
# eunomia's wasm runtimes do.
CGROUP_SECTIONS = ("sockops", "cgroup")
XDP_SECTIONS = ("xdp",)
PERCPU_MAP_TYPES = frozenset({5, 6, 10, 21})  # percpu hash, array, lru hash, cgroup storage


@dataclass(frozen=True)
class _Spec:
    """The part of a package that LoadedProbe reads when it opens one."""

    name: str
    source: str
    obj: bytes
    hists: tuple = ()


@dataclass(frozen=True)
class MapDef:
    """A map of a loaded object, as the kernel holds it."""

    name: str
    fd: int
    type: int
    key_size: int
    value_size: int

    def value_bytes(self, cpus: int) -> int:
        """Bytes of one value as lookup and update move it: a per-CPU map has
        one 8-byte-aligned value per possible CPU."""
        if self.type in PERCPU_MAP_TYPES:
            return (self.value_size + 7) // 8 * 8 * cpus
        return self.value_size


class GuestObject(LoadedProbe):
    """A BPF ELF object opened from bytes and loaded; programs attach one at a time."""

    def __init__(self, obj: bytes, name: str, source: str):
        super().__init__(cast(Package, _Spec(name=name, source=source, obj=obj)))

    def attach_program(self, name: str, target: str = "") -> None:
        """Attach the program called ``name`` by its section, or to ``target``
        (a cgroup path for sockops and cgroup sections, an interface for xdp)."""
        prog = self._lib.bpf_object__find_program_by_name(self._obj, name.encode())
        if not prog:
            raise KernelError(f"{self.package.source}: no program named {name!r}",
                              errno_mod.ENOENT)
        section = self._lib.bpf_program__section_name(prog).decode()
        where = f"{section} {target}" if target else section
        if section.startswith(TRACEPOINT_SECTIONS):
            try:
                features.ensure_tracefs()
            except KernelError as exc:
                raise KernelError(f"cannot attach {name} to {where}: {exc}", exc.errno) from None
        libbpf.recent_messages()
        try:
            if target and section.startswith(CGROUP_SECTIONS):
                link = self._attach_cgroup(prog, target)
            elif target and section.startswith(XDP_SECTIONS):
                link = self._attach_xdp(prog, target)
            else:
                link = self._lib.bpf_program__attach(prog)
        except libbpf.LibbpfError as exc:
            raise self._error(f"cannot attach {name} to {where}", exc) from None
        self._links.append(link)

    def _attach_cgroup(self, prog: int, path: str) -> int:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise KernelError(f"cannot open cgroup {path}: {exc.strerror}", exc.errno) from None
        try:
            return self._lib.bpf_program__attach_cgroup(prog, fd)
        finally:
            os.close(fd)

    def _attach_xdp(self, prog: int, interface: str) -> int:
        try:
            index = socket.if_nametoindex(interface)
        except OSError:
            raise KernelError(f"no network interface {interface!r}", errno_mod.ENODEV) from None
        return self._lib.bpf_program__attach_xdp(prog, index)

    def find_map(self, name: str) -> MapDef | None:
        """A map by the name libbpf knows it by (``.rodata`` and the like
        included), or None."""
        ptr = self._lib.bpf_object__find_map_by_name(self._obj, name.encode())
        if not ptr:
            return None
        fd = self._lib.bpf_map__fd(ptr)
        return MapDef(name=name, fd=fd, type=self._lib.bpf_map__type(ptr),
                      key_size=self._lib.bpf_map__key_size(ptr),
                      value_size=self._lib.bpf_map__value_size(ptr))
