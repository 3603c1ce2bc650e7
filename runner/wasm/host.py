"""The wasm-bpf host interface (import module ``wasm_bpf``), backed by the
runner's own libbpf loader.

``Host`` keeps what one module instance loaded: its objects by handle, the
map fds it was given, and a buffer reader per polled map. It closes all of
them, readers first, then each object (links before the object), whatever
way the module ends.

Results follow eunomia's runtimes: a handle (0 on failure), 0 or a negative
errno. Where this host is stricter or more exact, it says so:
- a map fd is refused with -EBADF unless ``wasm_bpf_map_fd_by_name`` gave it
  to this module, and the key and value sizes come from the map itself
  (per-CPU maps move one value per possible CPU);
- every guest pointer and length is checked against the guest's memory:
  -EFAULT (or a 0 handle) instead of a crash;
- ``wasm_bpf_map_operate`` get_next_key with a key pointer of 0 starts the
  walk at the first key, as NULL does in libbpf;
- ``wasm_bpf_buffer_poll`` calls the guest once for every sample, with the
  size it copied (cut at ``max``), and returns the number of samples; the
  guest callback's own result is not used.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import re
import sys
import time
from typing import Any, Callable, TextIO

from ..errors import KernelError
from ..loader import buffers, libbpf
from .memory import GuestMemory, OutOfBounds, u32
from .objects import GuestObject, MapDef

IMPORT_MODULE = "wasm_bpf"
# import name -> (method, wasm parameter types, wasm result types)
SIGNATURES = {
    "wasm_load_bpf_object": ("load_bpf_object", "ii", "I"),
    "wasm_attach_bpf_program": ("attach_bpf_program", "Iii", "i"),
    "wasm_bpf_buffer_poll": ("buffer_poll", "Iiiiiii", "i"),
    "wasm_bpf_map_fd_by_name": ("map_fd_by_name", "Ii", "i"),
    "wasm_bpf_map_operate": ("map_operate", "iiiiiI", "i"),
    "wasm_close_bpf_object": ("close_bpf_object", "I", "i"),
}

MAP_LOOKUP, MAP_UPDATE, MAP_DELETE, MAP_GET_NEXT_KEY = 1, 2, 3, 4
# The longest single wait inside buffer_poll, so that a stop request is seen
# soon even when the module asks to wait for ever.
POLL_SLICE_MS = 100
# The largest BPF object a module may hand over.
MAX_OBJECT_SIZE = 64 << 20


class Interrupted(Exception):
    """A signal asked the module to stop; raised through the guest to end it."""


def _object_name(source: str) -> str:
    """A libbpf object name from the module's file name: it prefixes the
    names of .rodata, .bss and the like in the kernel."""
    stem = re.sub(r"\.wasm$", "", source.rsplit("/", 1)[-1])
    return re.sub(r"[^A-Za-z0-9_]", "_", stem)[:15] or "wasm"


class Host:
    """The six host functions of one module instance, and what they opened."""

    def __init__(self, source: str, err: TextIO | None = None, verbose: bool = False,
                 should_stop: Callable[[], bool] = lambda: False):
        self.source = source
        self._name = _object_name(source)
        self._err = err
        self._verbose = verbose
        self._should_stop = should_stop
        self._objects: dict[int, GuestObject] = {}
        self._maps: dict[int, tuple[int, MapDef]] = {}  # fd -> (handle, map)
        self._readers: dict[tuple[int, int], buffers.Reader] = {}  # (handle, fd) -> reader
        self._next_handle = 1
        self._memory: GuestMemory | None = None
        self._table: Any = None
        self._polling = False
        self._delivery: Callable[[bytes], None] | None = None
        self._cpus: int | None = None
        self.last_failure: str | None = None

    # -- plumbing -------------------------------------------------------

    def define(self, linker: Any) -> None:
        """Define the six imports in a wasmtime Linker."""
        import wasmtime
        kinds = {"i": wasmtime.ValType.i32(), "I": wasmtime.ValType.i64()}
        for name, (method, params, results) in SIGNATURES.items():
            ty = wasmtime.FuncType([kinds[c] for c in params], [kinds[c] for c in results])
            linker.define_func(IMPORT_MODULE, name, ty, getattr(self, method), access_caller=True)

    def memory(self, caller: Any) -> GuestMemory:
        if self._memory is None:
            import wasmtime
            mem = caller.get("memory")
            if not isinstance(mem, wasmtime.Memory):
                raise OutOfBounds("the module exports no memory")
            self._memory = GuestMemory(mem)
        return self._memory

    def _say(self, message: str) -> None:
        print(f"tcprtt: {message}", file=self._err or sys.stderr, flush=True)

    def _failed(self, message: str) -> None:
        """A load or attach the module was refused: said at once when
        verbose, else kept for ``last_failure`` (a module may well try one
        attach variant after another, and only the last refusal matters)."""
        self.last_failure = message
        if self._verbose:
            self._say(message)

    def _notes(self) -> None:
        notes = libbpf.recent_messages()
        if self._verbose:
            for note in notes:
                self._say(note)

    @property
    def handles(self) -> list[int]:
        return list(self._objects)

    # -- the host functions --------------------------------------------

    def load_bpf_object(self, caller: Any, obj_ptr: int, size: int) -> int:
        ptr, size = u32(obj_ptr), u32(size)
        if not 0 < size <= MAX_OBJECT_SIZE:
            self._failed(f"wasm_load_bpf_object: {size} bytes is not a BPF object size")
            return 0
        try:
            data = self.memory(caller).read(caller, ptr, size)
        except OutOfBounds as exc:
            self._failed("wasm_load_bpf_object: the object lies outside the module's memory "
                         f"({exc})")
            return 0
        try:
            obj = GuestObject(data, self._name, f"{self.source} (BPF object)")
        except KernelError as exc:
            self._failed(str(exc))
            return 0
        self._notes()
        handle = self._next_handle
        self._next_handle += 1
        self._objects[handle] = obj
        return handle

    def attach_bpf_program(self, caller: Any, handle: int, name_ptr: int, target_ptr: int) -> int:
        obj = self._objects.get(handle)
        if obj is None:
            return -errno_mod.EINVAL
        mem = self.memory(caller)
        try:
            name = mem.cstring(caller, u32(name_ptr))
            target = mem.cstring(caller, u32(target_ptr)) if target_ptr else ""
        except OutOfBounds:
            return -errno_mod.EFAULT
        try:
            obj.attach_program(name, target)
        except KernelError as exc:
            self._failed(str(exc))
            return -(exc.errno or errno_mod.EINVAL)
        self._notes()
        return 0

    def map_fd_by_name(self, caller: Any, handle: int, name_ptr: int) -> int:
        obj = self._objects.get(handle)
        if obj is None:
            return -errno_mod.EINVAL
        try:
            name = self.memory(caller).cstring(caller, u32(name_ptr))
        except OutOfBounds:
            return -errno_mod.EFAULT
        try:
            found = obj.find_map(name)
        except KernelError as exc:  # a map libbpf did not create
            return -(exc.errno or errno_mod.EINVAL)
        if found is None:
            return -errno_mod.ENOENT
        self._maps[found.fd] = (handle, found)
        return found.fd

    def map_operate(self, caller: Any, fd: int, cmd: int, key_ptr: int, value_ptr: int,
                    next_key_ptr: int, flags: int) -> int:
        entry = self._maps.get(fd)
        if entry is None:
            return -errno_mod.EBADF
        mapdef = entry[1]
        lib = libbpf.load_library()
        mem = self.memory(caller)
        flags &= 0xFFFFFFFFFFFFFFFF
        key_ptr, value_ptr, next_key_ptr = u32(key_ptr), u32(value_ptr), u32(next_key_ptr)
        try:
            if cmd == MAP_GET_NEXT_KEY:
                key = None if key_ptr == 0 else mem.read(caller, key_ptr, mapdef.key_size)
                mem.check(caller, next_key_ptr, mapdef.key_size)
                buf = ctypes.create_string_buffer(mapdef.key_size)
                rc = lib.bpf_map_get_next_key(fd, key, buf)
                if rc == 0:
                    mem.write(caller, next_key_ptr, buf.raw)
                return rc
            key = mem.read(caller, key_ptr, mapdef.key_size)
            if cmd == MAP_DELETE:
                return lib.bpf_map_delete_elem_flags(fd, key, flags)
            size = mapdef.value_bytes(self._possible_cpus())
            if cmd == MAP_LOOKUP:
                mem.check(caller, value_ptr, size)
                buf = ctypes.create_string_buffer(size)
                rc = lib.bpf_map_lookup_elem_flags(fd, key, buf, flags)
                if rc == 0:
                    mem.write(caller, value_ptr, buf.raw)
                return rc
            if cmd == MAP_UPDATE:
                value = mem.read(caller, value_ptr, size)
                try:
                    return lib.bpf_map_update_elem(fd, key, value, flags)
                except libbpf.LibbpfError as exc:
                    return -(exc.errno or errno_mod.EINVAL)
        except OutOfBounds:
            return -errno_mod.EFAULT
        return -errno_mod.EINVAL

    def buffer_poll(self, caller: Any, handle: int, fd: int, fn_index: int, ctx: int,
                    data_ptr: int, max_size: int, timeout_ms: int) -> int:
        if handle not in self._objects:
            return -errno_mod.EINVAL
        entry = self._maps.get(fd)
        if entry is None or entry[0] != handle:
            return -errno_mod.EBADF
        if max_size < 0:
            return -errno_mod.EINVAL
        if self._polling:
            return -errno_mod.EBUSY  # a poll from inside a sample callback
        mem = self.memory(caller)
        data_ptr = u32(data_ptr)
        try:
            mem.check(caller, data_ptr, max_size)
        except OutOfBounds:
            return -errno_mod.EFAULT
        func = self._callback(caller, u32(fn_index))
        if func is None:
            return -errno_mod.EINVAL
        reader = self._readers.get((handle, fd))
        if reader is None:
            try:
                reader = buffers.open_reader(fd, entry[1].type, self._deliver)
            except KernelError as exc:
                return -(exc.errno or errno_mod.EINVAL)
            self._readers[(handle, fd)] = reader

        def deliver(sample: bytes) -> None:
            cut = sample[:max_size]
            mem.write(caller, data_ptr, cut)
            func(caller, ctx, data_ptr, len(cut))

        self._delivery = deliver
        self._polling = True
        try:
            return self._poll(reader, timeout_ms)
        except KernelError as exc:
            return -(exc.errno or errno_mod.EINVAL)
        finally:
            self._polling = False
            self._delivery = None

    def close_bpf_object(self, caller: Any, handle: int) -> int:
        if handle not in self._objects:
            return -errno_mod.EINVAL
        self._close(handle)
        return 0

    # -- helpers ---------------------------------------------------------

    def _poll(self, reader: buffers.Reader, timeout_ms: int) -> int:
        """Poll in short slices until a sample comes, the time is up, or a
        stop is asked for (then the module is ended)."""
        deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000
        while True:
            if self._should_stop():
                raise Interrupted()
            wait = POLL_SLICE_MS
            if deadline is not None:
                wait = max(0, min(wait, int((deadline - time.monotonic()) * 1000)))
            count = reader.poll(wait)
            if count:
                return count
            if self._should_stop():
                raise Interrupted()
            if deadline is not None and time.monotonic() >= deadline:
                return 0

    def _deliver(self, sample: bytes) -> None:
        if self._delivery is not None:
            self._delivery(sample)

    def _callback(self, caller: Any, index: int) -> Any:
        """The guest's table function ``index`` if it is (i32, i32, i32) -> i32 or -> ()."""
        import wasmtime
        if self._table is None:
            table = caller.get("__indirect_function_table")
            if not isinstance(table, wasmtime.Table):
                return None
            self._table = table
        func = self._table.get(caller, index)
        if not isinstance(func, wasmtime.Func):
            return None
        ty = func.type(caller)
        i32 = wasmtime.ValType.i32()
        if list(ty.params) != [i32, i32, i32] or list(ty.results) not in ([], [i32]):
            return None
        return func

    def _possible_cpus(self) -> int:
        if self._cpus is None:
            self._cpus = libbpf.load_library().libbpf_num_possible_cpus()
        return self._cpus

    def _close(self, handle: int) -> None:
        for key in [k for k in self._readers if k[0] == handle]:
            self._readers.pop(key).close()
        for fd in [fd for fd, (h, _) in self._maps.items() if h == handle]:
            del self._maps[fd]
        self._objects.pop(handle).close()

    def close(self) -> None:
        """Close everything the module loaded; harmless to call again."""
        for handle in list(self._objects):
            self._close(handle)
