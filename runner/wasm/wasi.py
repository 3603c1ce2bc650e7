"""A stop-aware WASI sleep.

wasmtime's own ``poll_oneoff`` sleeps in native code that no signal can cut
short, so a module sleeping between reports would hold a SIGTERM for up to
its whole interval. This one takes over the common case, a wait on relative
clock timeouts only (what sleep, usleep and nanosleep become in wasi-libc),
waits on the stop event instead, and hands every other call to wasmtime's.
"""

from __future__ import annotations

import struct
from typing import Any, Callable

from .host import Interrupted
from .memory import GuestMemory, OutOfBounds, u32

WASI_MODULE = "wasi_snapshot_preview1"
# userdata, tag, clock id, timeout, precision, flags
SUBSCRIPTION = struct.Struct("<QB7xIxxxxQQH6x")
EVENT = struct.Struct("<QHB5xQH6x")  # userdata, error, type, nbytes, flags
assert SUBSCRIPTION.size == 48 and EVENT.size == 32
TAG_CLOCK = 0
ABSTIME = 1
ERRNO_FAULT = 21
MAX_SUBSCRIPTIONS = 64


def define_sleep(linker: Any, store: Any, wait: Callable[[float], bool]) -> None:
    """Shadow ``poll_oneoff`` in ``linker`` (after define_wasi). ``wait(s)``
    waits up to ``s`` seconds and returns True when a stop was asked for."""
    import wasmtime
    original = linker.get(store, WASI_MODULE, "poll_oneoff")
    i32 = wasmtime.ValType.i32()

    def poll_oneoff(caller: Any, in_ptr: int, out_ptr: int, count: int, nevents_ptr: int) -> int:
        subs = _clock_subscriptions(caller, u32(in_ptr), u32(count))
        if subs is None:
            return original(caller, in_ptr, out_ptr, count, nevents_ptr)
        soonest = min(timeout for _, timeout in subs)
        if wait(soonest / 1e9):
            raise Interrupted()
        events = b"".join(EVENT.pack(userdata, 0, TAG_CLOCK, 0, 0)
                          for userdata, timeout in subs if timeout == soonest)
        memory = GuestMemory(caller.get("memory"))
        try:
            memory.write(caller, u32(out_ptr), events)
            memory.write(caller, u32(nevents_ptr), struct.pack("<I", len(events) // EVENT.size))
        except OutOfBounds:
            return ERRNO_FAULT
        return 0

    linker.allow_shadowing = True
    linker.define_func(WASI_MODULE, "poll_oneoff", wasmtime.FuncType([i32] * 4, [i32]),
                       poll_oneoff, access_caller=True)
    linker.allow_shadowing = False


def _clock_subscriptions(caller: Any, in_ptr: int, count: int) -> list[tuple[int, int]] | None:
    """(userdata, timeout ns) of each subscription when all are relative
    clock timeouts; None for anything else, which wasmtime handles."""
    if not 0 < count <= MAX_SUBSCRIPTIONS:
        return None
    memory = caller.get("memory")
    if memory is None:
        return None
    try:
        raw = GuestMemory(memory).read(caller, in_ptr, count * SUBSCRIPTION.size)
    except OutOfBounds:
        return None
    subs = []
    for i in range(count):
        userdata, tag, _clock, timeout, _precision, flags = SUBSCRIPTION.unpack_from(
            raw, i * SUBSCRIPTION.size)
        if tag != TAG_CLOCK or flags & ABSTIME:
            return None
        subs.append((userdata, timeout))
    return subs
