"""Open an untrusted BPF object where a crash cannot take the runner down.

libbpf's ELF and BTF parser is not safe on hostile input: a mutated object
can crash ``bpf_object__open_mem`` (SIGSEGV) inside the process that calls
it. ``vet`` opens the bytes in a forked child, with a time limit, no core
dump and bounded memory, and reads back what libbpf made of them: every
program (name, section, type) and every map (name, type, sizes). A crash, a
hang or a refusal becomes one PackageError line naming the package; only
objects that libbpf opened cleanly reach the runner's own libbpf calls.

Nothing is loaded into the kernel: opening an object only parses it.
"""

from __future__ import annotations

import ctypes
import faulthandler
import json
import os
import resource
import select
import signal
import time
import warnings
from dataclasses import dataclass

from ..errors import PackageError, TcprttError
from . import libbpf

TIMEOUT = 5.0
# Room above the child's address space at fork for libbpf's own allocations;
# no object within the package's size limits needs more.
CHILD_EXTRA_MEMORY = 1 << 30
MAX_REPORT = 1 << 20
MAX_ITEMS = 4096  # programs or maps a child reports; far more than any package has
PR_SET_DUMPABLE = 4


@dataclass(frozen=True)
class Program:
    name: str
    section: str
    prog_type: int


@dataclass(frozen=True)
class Map:
    name: str
    map_type: int
    key_size: int
    value_size: int
    max_entries: int


@dataclass(frozen=True)
class Vetted:
    """What libbpf saw in the object."""

    programs: tuple[Program, ...]
    maps: tuple[Map, ...]


_EXTRA = {
    "bpf_program__type": (ctypes.c_int, [ctypes.c_void_p]),
    "bpf_map__type": (ctypes.c_int, [ctypes.c_void_p]),
    "bpf_map__key_size": (ctypes.c_uint32, [ctypes.c_void_p]),
    "bpf_map__value_size": (ctypes.c_uint32, [ctypes.c_void_p]),
    "bpf_map__max_entries": (ctypes.c_uint32, [ctypes.c_void_p]),
    "bpf_map__name": (ctypes.c_char_p, [ctypes.c_void_p]),
    "bpf_object__next_map": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_void_p]),
    "bpf_object__next_program": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_void_p]),
    "bpf_program__name": (ctypes.c_char_p, [ctypes.c_void_p]),
    "bpf_program__section_name": (ctypes.c_char_p, [ctypes.c_void_p]),
    "bpf_object__open_mem": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t,
                                               ctypes.POINTER(libbpf.OpenOpts)]),
    "bpf_object__close": (None, [ctypes.c_void_p]),
    "libbpf_strerror": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]),
}


def _bind(cdll: ctypes.CDLL) -> dict:
    """Our own typed handles on the library (a separate CDLL instance, so the
    shared binding's errchecks and signatures are left as they are)."""
    funcs = {}
    for name, (restype, argtypes) in _EXTRA.items():
        func = getattr(cdll, name)
        func.restype, func.argtypes = restype, argtypes
        funcs[name] = func
    return funcs


def _text(raw: bytes | None) -> str:
    return (raw or b"").decode("utf-8", "replace")[:256]


def _open_and_describe(obj: bytes, name: str) -> dict:
    """Runs in the child: what libbpf makes of the object, as JSON-able data."""
    lib = libbpf.load_library()  # installs the message collector
    f = _bind(ctypes.CDLL(libbpf.LIBRARY, use_errno=True))
    libbpf.recent_messages()
    opts = libbpf.OpenOpts(sz=ctypes.sizeof(libbpf.OpenOpts), object_name=name.encode())
    ctypes.set_errno(0)
    handle = f["bpf_object__open_mem"](obj, len(obj), ctypes.byref(opts))
    if not handle:
        err = ctypes.get_errno() or 22
        text = ctypes.create_string_buffer(128)
        f["libbpf_strerror"](err, text, len(text))
        notes = [m for m in libbpf.recent_messages() if m]
        return {"error": _text(text.value) or os.strerror(err), "notes": notes[-2:]}
    try:
        programs, pos = [], None
        while len(programs) <= MAX_ITEMS:
            pos = f["bpf_object__next_program"](handle, pos)
            if not pos:
                break
            programs.append([_text(f["bpf_program__name"](pos)),
                             _text(f["bpf_program__section_name"](pos)),
                             f["bpf_program__type"](pos)])
        maps, pos = [], None
        while len(maps) <= MAX_ITEMS:
            pos = f["bpf_object__next_map"](handle, pos)
            if not pos:
                break
            maps.append([_text(f["bpf_map__name"](pos)), f["bpf_map__type"](pos),
                         f["bpf_map__key_size"](pos), f["bpf_map__value_size"](pos),
                         f["bpf_map__max_entries"](pos)])
    finally:
        f["bpf_object__close"](handle)
    del lib
    return {"programs": programs, "maps": maps}


def _child(write_fd: int, obj: bytes, name: str) -> None:
    """The forked child: never returns."""
    status = 3
    try:
        # Whatever happens here, the runner's one line says it: nothing of the
        # child's (a fault handler's stack dump, say) reaches the terminal.
        faulthandler.disable()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        try:
            ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
            pages = int(open("/proc/self/statm").read().split()[0])
            limit = pages * os.sysconf("SC_PAGE_SIZE") + CHILD_EXTRA_MEMORY
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (OSError, ValueError, AttributeError):
            pass
        report = _open_and_describe(obj, name)
        data = json.dumps(report).encode()[:MAX_REPORT]
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view):]
        status = 0
    except BaseException:  # noqa: B036 - the child reports by its status alone
        status = 3
    finally:
        os._exit(status)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def vet(obj: bytes, name: str, source: str, timeout: float = TIMEOUT) -> Vetted | None:
    """Open ``obj`` with libbpf in a child process; what libbpf saw in it.

    None when libbpf is not installed: then nothing in this process opens the
    object either. Raises PackageError when libbpf crashes, hangs or refuses."""
    try:
        libbpf.load_library()
    except TcprttError:
        return None
    read_fd, write_fd = os.pipe()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns about fork in a threaded process; the child
            # only opens the object and exits, and a deadlock runs into the timeout.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        raise PackageError(f"{source}: cannot start the process that vets the object "
                           f"({exc.strerror})") from None
    if pid == 0:
        os.close(read_fd)
        _child(write_fd, obj, name)
    os.close(write_fd)
    chunks: list[bytes] = []
    status = None
    try:
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(read_fd, select.POLLIN | select.POLLHUP)
        size = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PackageError(f"{source}: libbpf did not finish opening the BPF object "
                                   f"within {timeout:g} s; refusing the package")
            if not poller.poll(left * 1000):
                continue
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_REPORT:
                raise PackageError(f"{source}: libbpf's description of the object is "
                                   f"larger than {MAX_REPORT} bytes; refusing the package")
            chunks.append(chunk)
        # The pipe ends when the child exits (only it holds the write end).
        status = os.waitpid(pid, 0)[1]
    finally:
        os.close(read_fd)
        if status is None:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    if os.WIFSIGNALED(status):
        raise PackageError(f"{source}: libbpf crashed opening the BPF object "
                           f"({_signal_name(os.WTERMSIG(status))}); refusing the package")
    if os.WEXITSTATUS(status) != 0 or not chunks:
        raise PackageError(f"{source}: libbpf failed opening the BPF object "
                           f"(exit status {os.WEXITSTATUS(status)}); refusing the package")
    try:
        report = json.loads(b"".join(chunks))
    except ValueError:
        raise PackageError(f"{source}: the process that vets the object answered "
                           "garbage; refusing the package") from None
    if "error" in report:
        notes = "; ".join(n.removeprefix("libbpf: ") for n in report.get("notes") or ())
        detail = f" (libbpf: {notes[:200]})" if notes else ""
        raise PackageError(f"{source}: libbpf cannot open the BPF object: "
                           f"{report['error']}{detail}")
    return Vetted(programs=tuple(Program(*p) for p in report["programs"]),
                  maps=tuple(Map(*m) for m in report["maps"]))
