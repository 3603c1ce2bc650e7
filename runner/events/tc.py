"""tc programs, attached so that nothing stays behind.

A tc filter is not a link: the kernel keeps it, and the program it holds,
when the process that attached it dies. So before attaching, the runner
starts a guard (``python -m runner.events.tc``, in a session of its own,
holding no BPF descriptor) that waits on a pipe from the runner; when the
pipe closes, however the runner ended (exit, SIGTERM, SIGKILL), the guard
removes the filter, and the clsact qdisc if the runner created it. The
runner removes them itself first when it closes normally.

Layouts and calls are libbpf 1.x's (``bpf_tc_hook``, ``bpf_tc_opts``).
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
from dataclasses import dataclass

from ..errors import KernelError

BPF_TC_INGRESS, BPF_TC_EGRESS = 1, 2
ATTACH_POINTS = {"BPF_TC_INGRESS": BPF_TC_INGRESS, "BPF_TC_EGRESS": BPF_TC_EGRESS}
EEXIST, ENOENT = 17, 2


class TcHook(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("ifindex", ctypes.c_int),
                ("attach_point", ctypes.c_int), ("parent", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32)]


class TcOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("prog_fd", ctypes.c_int), ("flags", ctypes.c_uint32),
                ("prog_id", ctypes.c_uint32), ("handle", ctypes.c_uint32),
                ("priority", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


assert ctypes.sizeof(TcHook) == 24 and ctypes.sizeof(TcOpts) == 32


@dataclass(frozen=True)
class Target:
    """Where a tc program attaches: interface, direction, handle, priority."""

    ifindex: int
    attach_point: int
    handle: int = 1
    priority: int = 1


def _lib():
    from ..loader.libbpf import LIBRARY
    lib = ctypes.CDLL(LIBRARY, use_errno=True)
    for name, args in (("bpf_tc_hook_create", [ctypes.POINTER(TcHook)]),
                       ("bpf_tc_hook_destroy", [ctypes.POINTER(TcHook)]),
                       ("bpf_tc_attach", [ctypes.POINTER(TcHook), ctypes.POINTER(TcOpts)]),
                       ("bpf_tc_detach", [ctypes.POINTER(TcHook), ctypes.POINTER(TcOpts)])):
        func = getattr(lib, name)
        func.restype, func.argtypes = ctypes.c_int, args
    return lib


def _hook(target: Target, points: int | None = None) -> TcHook:
    return TcHook(sz=ctypes.sizeof(TcHook), ifindex=target.ifindex,
                  attach_point=points if points is not None else target.attach_point)


def _opts(target: Target, prog_fd: int = 0) -> TcOpts:
    return TcOpts(sz=ctypes.sizeof(TcOpts), prog_fd=prog_fd, handle=target.handle,
                  priority=target.priority)


def remove(target: Target, created_qdisc: bool) -> None:
    """Take the filter away (gone already is fine), then the qdisc the
    runner created: destroying both directions removes the clsact qdisc,
    while destroying one would flush every filter there, ours or not."""
    lib = _lib()
    lib.bpf_tc_detach(ctypes.byref(_hook(target)), ctypes.byref(_opts(target)))
    if created_qdisc:
        lib.bpf_tc_hook_destroy(ctypes.byref(_hook(target, BPF_TC_INGRESS | BPF_TC_EGRESS)))


class Attached:
    """One tc filter of the runner's, with its guard."""

    def __init__(self, name: str, prog_fd: int, target: Target):
        self.name, self.target = name, target
        lib = _lib()
        rc = lib.bpf_tc_hook_create(ctypes.byref(_hook(target)))
        if rc < 0 and rc != -EEXIST:
            raise KernelError(f"cannot attach {name}: no clsact qdisc on interface "
                              f"{target.ifindex} ({_words(-rc)})", -rc)
        self.created_qdisc = rc == 0
        self._guard = subprocess.Popen(
            [sys.executable, "-m", "runner.events.tc", str(target.ifindex),
             str(target.attach_point), str(target.handle), str(target.priority),
             "1" if self.created_qdisc else "0"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True)
        opts = _opts(target, prog_fd)
        # BPF_TC_F_REPLACE is not given: a filter someone else has there stays.
        rc = lib.bpf_tc_attach(ctypes.byref(_hook(target)), ctypes.byref(opts))
        if rc < 0:
            self.close()
            why = ("another filter has this handle and priority" if rc == -EEXIST
                   else _words(-rc))
            raise KernelError(f"cannot attach {name} to tc on interface {target.ifindex}: "
                              f"{why}", -rc)

    def close(self) -> None:
        guard, self._guard = self._guard, None
        if guard is None:
            return
        remove(self.target, self.created_qdisc)
        if guard.stdin is not None:
            guard.stdin.close()  # the guard finds nothing left to remove, and exits
        try:
            guard.wait(5)
        except subprocess.TimeoutExpired:
            guard.kill()
            guard.wait()


def _words(err: int) -> str:
    from ..loader.libbpf import strerror
    return strerror(err)


def _guard(argv: list[str]) -> int:
    """The guard: wait for the runner's pipe to close, then remove."""
    ifindex, point, handle, priority, created = (int(a) for a in argv)
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except OSError:
        pass
    remove(Target(ifindex, point, handle, priority), bool(created))
    return 0


if __name__ == "__main__":
    import signal
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)  # only the pipe ends the guard
    sys.exit(_guard(sys.argv[1:]))
