"""Samples from BPF ring buffers and perf event arrays, one bytes object each.

``open_reader`` picks the reader for a map's type; both kinds poll the same
way and hand every sample to a Python callback. libbpf's C callback only
copies the sample and queues it; the Python callback runs after libbpf's poll
has returned, so an exception it raises (or code it calls into, such as a
wasm module) never unwinds through libbpf's frames.

A reader owns its libbpf ring_buffer or perf_buffer, not the map: close the
reader before the object the map belongs to. Closing twice is harmless.

What a reader that falls behind costs: a perf buffer's kernel side counts
the records it could not store, and libbpf hands the count to ``lost``. A
ring buffer counts nothing (``bpf_ringbuf_reserve`` or ``_output`` fail in
the BPF program, which may count them itself); what can be known is how
full it got, ``peak_backlog`` bytes of ``capacity``, read from the ring's
own positions when each poll starts consuming.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import mmap
import os
import struct
from typing import Callable, Union

from ..errors import KernelError
from . import libbpf

BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4
BPF_MAP_TYPE_RINGBUF = 27
# Pages of each CPU's perf buffer, as eunomia's runtimes use.
PERF_BUFFER_PAGES = 64
# Records one poll of a ring buffer takes at most: libbpf's ring_buffer__poll
# consumes for as long as records keep coming, and a producer faster than
# the reader would keep it (and the queue of copies) growing without end.
RING_BATCH = 4096
_BATCH_FULL = -errno_mod.E2BIG  # what the callback returns to end a poll early

OnSample = Callable[[bytes], None]


class _Reader:
    """What both kinds share: the queue, the poll loop, the close."""

    kind = "buffer"

    def __init__(self, map_fd: int, on_sample: OnSample):
        self._lib = libbpf.load_library()
        self.map_fd = map_fd
        self.on_sample = on_sample
        self._pending: list[bytes] = []
        self._handle: int | None = None
        self.lost = 0  # samples the kernel could not store (perf buffers only)

    def _poll_raw(self, timeout_ms: int) -> int:
        raise NotImplementedError

    def _free(self, handle: int) -> None:
        raise NotImplementedError

    def poll(self, timeout_ms: int) -> int:
        """Wait up to ``timeout_ms`` (negative: no limit) for samples, hand
        each to ``on_sample`` in order, and return how many there were.
        A signal that interrupts the wait ends it early with what was read."""
        if self._handle is None:
            raise KernelError(f"{self.kind} of map fd {self.map_fd} is closed", errno_mod.EBADF)
        rc = self._poll_raw(timeout_ms)
        pending, self._pending = self._pending, []
        if rc < 0 and rc != -errno_mod.EINTR:
            raise KernelError(f"{self.kind} poll: {os.strerror(-rc)}", -rc)
        for sample in pending:
            self.on_sample(sample)
        return len(pending)

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle:
            self._free(handle)

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # a safety net only; owners call close()
        if getattr(self, "_handle", None):
            self.close()


class RingBufferReader(_Reader):
    """A BPF_MAP_TYPE_RINGBUF map through libbpf's ring_buffer; with
    ``capacity`` (the map's max_entries, in bytes), ``peak_backlog`` is the
    most it was seen holding."""

    kind = "ring buffer"

    def __init__(self, map_fd: int, on_sample: OnSample, capacity: int = 0):
        super().__init__(map_fd, on_sample)
        self.capacity = capacity
        self.peak_backlog = 0
        self._positions = _ring_positions(map_fd) if capacity else None
        self._cb = libbpf.RING_SAMPLE_FN(self._sample)  # kept alive with the reader
        try:
            self._handle = self._lib.ring_buffer__new(map_fd, self._cb, None, None)
        except libbpf.LibbpfError as exc:
            self._unmap()
            raise KernelError(f"cannot read ring buffer (map fd {map_fd}): "
                              f"{os.strerror(exc.errno)}", exc.errno) from None

    def _sample(self, ctx, data, size) -> int:
        if not self._pending and self._positions is not None:
            # The first record of this poll: nothing is consumed yet, the
            # distance from consumer to producer is all that waits.
            consumer, producer = self._positions
            backlog = _POSITION(producer)[0] - _POSITION(consumer)[0]
            if backlog > self.peak_backlog:
                self.peak_backlog = backlog
        self._pending.append(ctypes.string_at(data, size))
        # A negative return ends libbpf's loop with this record consumed.
        return _BATCH_FULL if len(self._pending) >= RING_BATCH else 0

    def _unmap(self) -> None:
        positions, self._positions = self._positions, None
        for m in positions or ():
            m.close()

    def close(self) -> None:
        super().close()
        self._unmap()

    def _poll_raw(self, timeout_ms: int) -> int:
        rc = self._lib.ring_buffer__poll(self._handle, timeout_ms)
        return len(self._pending) if rc == _BATCH_FULL else rc

    def _free(self, handle: int) -> None:
        self._lib.ring_buffer__free(handle)


class PerfBufferReader(_Reader):
    """A BPF_MAP_TYPE_PERF_EVENT_ARRAY map through libbpf's perf_buffer, one
    ring per CPU; ``lost`` counts the samples the kernel dropped."""

    kind = "perf buffer"

    def __init__(self, map_fd: int, on_sample: OnSample, pages: int = PERF_BUFFER_PAGES):
        super().__init__(map_fd, on_sample)
        self._cb = libbpf.PERF_SAMPLE_FN(self._sample)
        self._lost_cb = libbpf.PERF_LOST_FN(self._lost)
        try:
            self._handle = self._lib.perf_buffer__new(map_fd, pages, self._cb, self._lost_cb,
                                                      None, None)
        except libbpf.LibbpfError as exc:
            raise KernelError(f"cannot read perf buffer (map fd {map_fd}): "
                              f"{os.strerror(exc.errno)}", exc.errno) from None

    def _sample(self, ctx, cpu, data, size) -> None:
        self._pending.append(ctypes.string_at(data, size))

    def _lost(self, ctx, cpu, count) -> None:
        self.lost += count

    def _poll_raw(self, timeout_ms: int) -> int:
        return self._lib.perf_buffer__poll(self._handle, timeout_ms)

    def _free(self, handle: int) -> None:
        self._lib.perf_buffer__free(handle)


_POSITION = struct.Struct("<Q").unpack_from


def _ring_positions(fd: int) -> tuple[mmap.mmap, mmap.mmap] | None:
    """A ring buffer's consumer and producer positions, mapped read-only:
    the first two pages of a BPF_MAP_TYPE_RINGBUF map."""
    page = mmap.PAGESIZE
    try:
        consumer = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=0)
    except (OSError, ValueError):
        return None
    try:
        producer = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
    except (OSError, ValueError):
        consumer.close()
        return None
    return consumer, producer


Reader = Union[RingBufferReader, PerfBufferReader]
READERS = {BPF_MAP_TYPE_RINGBUF: RingBufferReader,
           BPF_MAP_TYPE_PERF_EVENT_ARRAY: PerfBufferReader}


def open_reader(map_fd: int, map_type: int, on_sample: OnSample, *,
                perf_pages: int = PERF_BUFFER_PAGES, ring_capacity: int = 0) -> Reader:
    """The reader for a map of ``map_type``; KernelError(EINVAL) for a map
    that is neither a ring buffer nor a perf event array. ``perf_pages``:
    each CPU's perf buffer, in pages (a power of two); ``ring_capacity``: a
    ring buffer's size, to measure its backlog against."""
    if map_type == BPF_MAP_TYPE_RINGBUF:
        return RingBufferReader(map_fd, on_sample, ring_capacity)
    if map_type == BPF_MAP_TYPE_PERF_EVENT_ARRAY:
        return PerfBufferReader(map_fd, on_sample, perf_pages)
    raise KernelError(f"map fd {map_fd} (type {map_type}) is not a ring buffer or "
                      "a perf event array", errno_mod.EINVAL)
