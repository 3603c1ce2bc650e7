"""A private, typed ctypes binding to the system libbpf (libbpf.so.1).

Only the functions the runner calls are bound, each with argtypes, restype
and an errcheck that turns a NULL or negative return into LibbpfError.
"""

from __future__ import annotations

import collections
import ctypes
import os
import platform
import threading
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_int,
    c_size_t,
    c_uint32,
    c_uint64,
    c_ulong,
    c_void_p,
)
from functools import lru_cache

from ..errors import KernelError, TcprttError

LIBRARY = "libbpf.so.1"

BPF_PROG_TYPE_TRACING = 26


class LibbpfError(KernelError):
    """A libbpf call failed; ``errno`` says why."""


class OpenOpts(Structure):
    """struct bpf_object_open_opts (libbpf 1.x)."""

    _fields_ = [("sz", c_size_t), ("object_name", c_char_p), ("relaxed_maps", c_bool),
                ("pin_root_path", c_char_p), ("_unused", c_uint32), ("kconfig", c_char_p),
                ("btf_custom_path", c_char_p), ("kernel_log_buf", c_void_p),
                ("kernel_log_size", c_size_t), ("kernel_log_level", c_uint32)]


class BatchOpts(Structure):
    """struct bpf_map_batch_opts."""

    _fields_ = [("sz", c_size_t), ("elem_flags", c_uint64), ("flags", c_uint64)]


assert ctypes.sizeof(OpenOpts) == 80, "struct bpf_object_open_opts layout"
assert ctypes.sizeof(BatchOpts) == 24, "struct bpf_map_batch_opts layout"

PRINT_FN = CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
# ring_buffer_sample_fn, perf_buffer_sample_fn, perf_buffer_lost_fn
RING_SAMPLE_FN = CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)
PERF_SAMPLE_FN = CFUNCTYPE(None, c_void_p, c_int, c_void_p, c_uint32)
PERF_LOST_FN = CFUNCTYPE(None, c_void_p, c_int, c_uint64)

# libbpf's own error codes, from 4000 on (enum libbpf_errno in libbpf.h),
# with the words libbpf_strerror() has for them: os.strerror() knows none.
LIBBPF_ERRNO_START = 4000
ENOTSUPP = 524  # the kernel's own errno, which user space headers lack
LIBBPF_ERRNOS = (
    ("LIBELF", "Something wrong in libelf"),
    ("FORMAT", "BPF object format invalid"),
    ("KVERSION", "'version' section incorrect or lost"),
    ("ENDIAN", "Endian mismatch"),
    ("INTERNAL", "Internal error in libbpf"),
    ("RELOC", "Relocation failed"),
    ("LOAD", "Load program failure for unknown reason"),
    ("VERIFY", "Kernel verifier blocks program loading"),
    ("PROG2BIG", "Program too big"),
    ("KVER", "Incorrect kernel version"),
    ("PROGTYPE", "Kernel doesn't support this program type"),
    ("WRNGPID", "Wrong pid in netlink message"),
    ("INVSEQ", "Invalid netlink sequence"),
    ("NLPARSE", "Incorrect netlink message parsing"),
)


def strerror(err: int) -> str:
    """Words for an errno, or for one of libbpf's own codes (named too)."""
    if err == ENOTSUPP:
        return "Operation not supported (ENOTSUPP)"
    index = err - LIBBPF_ERRNO_START
    if 0 <= index < len(LIBBPF_ERRNOS):
        name, words = LIBBPF_ERRNOS[index]
        return f"{words} (LIBBPF_ERRNO__{name})"
    return os.strerror(err)


def _check_ptr(result, func, args):
    if not result:
        err = ctypes.get_errno() or 22
        raise LibbpfError(f"{func.__name__}: {strerror(err)}", err)
    return result


def _check_int(result, func, args):
    if result < 0:
        err = -result
        raise LibbpfError(f"{func.__name__}: {strerror(err)}", err)
    return result


# name: (restype, argtypes, errcheck)
_SIGNATURES = {
    "bpf_object__open_mem": (c_void_p, [c_void_p, c_size_t, POINTER(OpenOpts)], _check_ptr),
    "bpf_object__load": (c_int, [c_void_p], _check_int),
    "bpf_object__close": (None, [c_void_p], None),
    "bpf_object__next_map": (c_void_p, [c_void_p, c_void_p], None),
    "bpf_object__next_program": (c_void_p, [c_void_p, c_void_p], None),
    "bpf_map__name": (c_char_p, [c_void_p], None),
    "bpf_map__fd": (c_int, [c_void_p], _check_int),
    "bpf_map__initial_value": (c_void_p, [c_void_p, POINTER(c_size_t)], _check_ptr),
    "bpf_map__set_max_entries": (c_int, [c_void_p, c_uint32], _check_int),
    "bpf_map__max_entries": (c_uint32, [c_void_p], None),
    "bpf_program__name": (c_char_p, [c_void_p], None),
    "bpf_program__section_name": (c_char_p, [c_void_p], None),
    "bpf_program__fd": (c_int, [c_void_p], None),
    "bpf_program__type": (c_int, [c_void_p], None),
    "libbpf_bpf_prog_type_str": (c_char_p, [c_int], None),
    "bpf_program__attach": (c_void_p, [c_void_p], _check_ptr),
    "bpf_link__destroy": (c_int, [c_void_p], None),
    "bpf_map_get_next_key": (c_int, [c_int, c_void_p, c_void_p], None),
    "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p], _check_int),
    "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, c_uint64], _check_int),
    "bpf_map_lookup_batch": (c_int, [c_int, c_void_p, c_void_p, c_void_p, c_void_p,
                                     POINTER(c_uint32), POINTER(BatchOpts)], None),
    "bpf_obj_get_info_by_fd": (c_int, [c_int, c_void_p, POINTER(c_uint32)], None),
    "libbpf_set_print": (c_void_p, [PRINT_FN], None),
    "libbpf_num_possible_cpus": (c_int, [], _check_int),
    "libbpf_major_version": (c_uint32, [], None),
    "libbpf_minor_version": (c_uint32, [], None),
    "libbpf_probe_bpf_prog_type": (c_int, [c_int, c_void_p], None),
    "libbpf_probe_bpf_map_type": (c_int, [c_int, c_void_p], None),
    "libbpf_bpf_map_type_str": (c_char_p, [c_int], None),
    # Objects that a wasm module loads: found by name, raw map calls that
    # return 0 or a negative errno, and ring and perf buffers.
    "bpf_object__find_map_by_name": (c_void_p, [c_void_p, c_char_p], None),
    "bpf_object__find_program_by_name": (c_void_p, [c_void_p, c_char_p], None),
    "bpf_map__type": (c_int, [c_void_p], None),
    "bpf_map__key_size": (c_uint32, [c_void_p], None),
    "bpf_map__value_size": (c_uint32, [c_void_p], None),
    "bpf_map_lookup_elem_flags": (c_int, [c_int, c_void_p, c_void_p, c_uint64], None),
    "bpf_map_delete_elem_flags": (c_int, [c_int, c_void_p, c_uint64], None),
    "bpf_program__attach_cgroup": (c_void_p, [c_void_p, c_int], _check_ptr),
    "bpf_program__attach_xdp": (c_void_p, [c_void_p, c_int], _check_ptr),
    "ring_buffer__new": (c_void_p, [c_int, RING_SAMPLE_FN, c_void_p, c_void_p], _check_ptr),
    "ring_buffer__poll": (c_int, [c_void_p, c_int], None),
    "ring_buffer__free": (None, [c_void_p], None),
    "perf_buffer__new": (c_void_p, [c_int, c_size_t, PERF_SAMPLE_FN, PERF_LOST_FN, c_void_p,
                                    c_void_p], _check_ptr),
    "perf_buffer__poll": (c_int, [c_void_p, c_int], None),
    "perf_buffer__free": (None, [c_void_p], None),
}


class Lib:
    """The loaded library, its functions as typed attributes."""

    def __init__(self, cdll: ctypes.CDLL):
        self._cdll = cdll
        for name, (restype, argtypes, errcheck) in _SIGNATURES.items():
            func = getattr(cdll, name)
            func.restype = restype
            func.argtypes = argtypes
            if errcheck is not None:
                func.errcheck = errcheck
            setattr(self, name, func)
        self._printer = PRINT_FN(_collect)  # kept alive as long as the library
        self.libbpf_set_print(self._printer)

    @property
    def version(self) -> str:
        return f"{self.libbpf_major_version()}.{self.libbpf_minor_version()}"


# libbpf's messages (print callback), formatted in full. A va_list reaches
# the callback as one machine word on both architectures tcprtt ships for,
# so ctypes takes it as a c_void_p and hands vsnprintf the same kind of word:
#  - x86_64: va_list is __va_list_tag[1] (24 bytes); as an argument the array
#    decays to a pointer to libbpf's own tag.
#  - aarch64 (AAPCS64): va_list is a 32-byte struct; a composite over 16
#    bytes is passed as a pointer to a copy the caller made.
# Formatting consumes a va_list, so each pass gets its own copy of those 24
# or 32 bytes, as va_copy does on both (a plain struct copy): one pass sizes
# the text, a second one formats a message that the first buffer could not
# hold. What was verified where: on x86_64 (this project's test machines),
# messages with string, integer and floating-point arguments, of any length,
# formatted through a real C caller (tests/test_diagnostics.py); for aarch64,
# clang -target aarch64-linux-gnu shows sizeof(va_list) == 32 and a C
# callback that forwards its va_list copying those 32 bytes and passing
# their address (also a test), but no run on an arm64 machine yet. Elsewhere
# the word is passed through once, into a fixed buffer.
VA_LIST_SIZES = {"x86_64": 24, "aarch64": 32}
_VA_LIST_SIZE = VA_LIST_SIZES.get(platform.machine())
FIRST_PASS = 1024
UNSIZED_BUFFER = 8192
MAX_MESSAGES = 1000  # per thread, between two calls of recent_messages()
LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2

_libc = ctypes.CDLL(None)
_vsnprintf = _libc.vsnprintf
_vsnprintf.argtypes = [c_void_p, c_size_t, c_char_p, c_void_p]
_vsnprintf.restype = c_int

# Messages go to the thread that made the libbpf call: libbpf calls the
# callback in that thread, and two threads loading at once keep theirs apart.
_local = threading.local()


def _thread_messages() -> collections.deque[str]:
    messages = getattr(_local, "messages", None)
    if messages is None:
        messages = _local.messages = collections.deque(maxlen=MAX_MESSAGES)
    return messages


def format_message(fmt: bytes, args: int | None) -> str:
    """``fmt`` with the arguments of the va_list ``args`` points at (see above)."""
    if _VA_LIST_SIZE is None:
        buf = ctypes.create_string_buffer(UNSIZED_BUFFER)
        _vsnprintf(buf, len(buf), fmt, args)
        return buf.value.decode("utf-8", "replace")
    state = ctypes.string_at(args, _VA_LIST_SIZE) if args else bytes(_VA_LIST_SIZE)
    copy = ctypes.create_string_buffer(state, _VA_LIST_SIZE)
    buf = ctypes.create_string_buffer(FIRST_PASS)
    need = _vsnprintf(buf, len(buf), fmt, ctypes.addressof(copy))
    if need >= len(buf):
        copy = ctypes.create_string_buffer(state, _VA_LIST_SIZE)
        buf = ctypes.create_string_buffer(need + 1)
        _vsnprintf(buf, len(buf), fmt, ctypes.addressof(copy))
    return buf.value.decode("utf-8", "replace")


def _collect(level: int, fmt: bytes | None, args: int | None) -> int:
    # What libbpf prints when no callback is set: warnings and notes, not debug.
    if level > LIBBPF_INFO or not fmt:
        return 0
    try:
        text = format_message(fmt, args).rstrip("\n")
    except Exception:  # a callback must not raise into C
        text = fmt.decode("utf-8", "replace").rstrip("\n")
    _thread_messages().append(text)
    return 0


def recent_messages() -> list[str]:
    """Every message libbpf printed in this thread since the last call
    (warnings and notes, in full, oldest first), and a fresh start."""
    messages = _thread_messages()
    out = list(messages)
    messages.clear()
    return out


@lru_cache(maxsize=1)
def load_library() -> Lib:
    """The system libbpf, or one clear error saying it is missing."""
    try:
        cdll = ctypes.CDLL(LIBRARY, use_errno=True)
    except OSError:
        raise TcprttError(f"{LIBRARY} not found: install libbpf 1.x "
                          "(Debian and Ubuntu: apt-get install libbpf1)") from None
    try:
        return Lib(cdll)
    except AttributeError as exc:
        raise TcprttError(f"{LIBRARY} is too old: {exc}") from None


def _check_libc(result, func, args):
    if result < 0:
        err = ctypes.get_errno() or 22
        raise OSError(err, os.strerror(err))
    return result


# The few C library calls the runner makes, as above: (restype, argtypes, errcheck).
_LIBC_SIGNATURES = {
    "mount": (c_int, [c_char_p, c_char_p, c_char_p, c_ulong, c_void_p], _check_libc),
}


class Libc:
    """The C library's functions the runner calls, typed; errors raise OSError."""

    def __init__(self, cdll: ctypes.CDLL):
        for name, (restype, argtypes, errcheck) in _LIBC_SIGNATURES.items():
            func = getattr(cdll, name)
            func.restype = restype
            func.argtypes = argtypes
            func.errcheck = errcheck
            setattr(self, name, func)


@lru_cache(maxsize=1)
def load_libc() -> Libc:
    """The C library this process already uses, with errno kept per call."""
    return Libc(ctypes.CDLL(None, use_errno=True))


def mount(source: str, target: str, fstype: str) -> None:
    """mount(2) with no flags or options; OSError with errno if it fails."""
    load_libc().mount(source.encode(), target.encode(), fstype.encode(), 0, None)
