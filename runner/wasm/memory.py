"""Bounds-checked access to a wasm module's linear memory.

Every pointer and length a module hands the host goes through here: a range
that does not lie wholly inside the memory raises ``OutOfBounds``, which the
host functions turn into -EFAULT (or a 0 handle), never a host crash.
"""

from __future__ import annotations

import ctypes
from typing import Any

# The longest string (program, map or target name, with its NUL) a module may pass.
MAX_STRING = 4096


class OutOfBounds(Exception):
    """A guest pointer or length outside the guest's memory."""


def u32(value: int) -> int:
    """A wasm i32 as the unsigned pointer or length it stands for."""
    return value & 0xFFFFFFFF


class GuestMemory:
    """The exported ``memory`` of one instance, read and written through the
    store (or the caller of a host function). The base address is fetched on
    every access: memory.grow may move it."""

    def __init__(self, memory: Any):
        self._memory = memory

    def _base(self, store: Any, ptr: int, size: int) -> int:
        if ptr < 0 or size < 0 or ptr + size > self._memory.data_len(store):
            raise OutOfBounds(f"{size} bytes at {ptr:#x}")
        return ctypes.addressof(self._memory.data_ptr(store).contents) + ptr

    def check(self, store: Any, ptr: int, size: int) -> None:
        """Raise OutOfBounds unless ``size`` bytes at ``ptr`` are in the memory."""
        self._base(store, ptr, size)

    def size(self, store: Any) -> int:
        return self._memory.data_len(store)

    def read(self, store: Any, ptr: int, size: int) -> bytes:
        base = self._base(store, ptr, size)
        return ctypes.string_at(base, size) if size else b""

    def write(self, store: Any, ptr: int, data: bytes) -> None:
        base = self._base(store, ptr, len(data))
        if data:
            ctypes.memmove(base, data, len(data))

    def cstring(self, store: Any, ptr: int) -> str:
        """A NUL-terminated string, which must end inside the memory."""
        total = self._memory.data_len(store)
        if not 0 <= ptr < total:
            raise OutOfBounds(f"string at {ptr:#x}")
        window = self.read(store, ptr, min(MAX_STRING, total - ptr))
        end = window.find(b"\0")
        if end < 0:
            raise OutOfBounds(f"string at {ptr:#x} has no NUL within {len(window)} bytes")
        return window[:end].decode("utf-8", "replace")
