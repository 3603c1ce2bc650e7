"""Run a wasm-bpf module under wasmtime: WASI for its I/O, ``Host`` for BPF.

The module's exit code is the result. SIGINT, SIGTERM and SIGHUP stop it:
wasmtime's epoch interruption ends running wasm code, a wait inside
``wasm_bpf_buffer_poll`` ends within a poll slice, and a WASI sleep ends at
once (``wasi.define_sleep``). Whatever the module
loaded is closed on every way out.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, TextIO

from ..errors import PackageError, TcprttError
from . import WASM_MAGIC
from .host import Host, Interrupted
from .wasi import define_sleep

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Exit status for a signal that came before the module started (as for Ctrl-C).
EXIT_STOPPED_EARLY = 130


def is_wasm(data: bytes) -> bool:
    return data[:4] == WASM_MAGIC


def one_line(message: str) -> str:
    """wasmtime's multi-line error as one line: what failed, and the root cause."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    head, cause = lines[0], lines[-1]
    if cause != head and cause[:1].isdigit() and ": " in cause:
        cause = cause.split(": ", 1)[1]  # "1: wasm trap: ..." from the cause chain
    if head.startswith("error while executing") or cause == head:
        return cause
    return f"{head}: {cause}"


class Stopper:
    """Turns stop signals into a flag and an epoch tick while a module runs.

    Python runs signal handlers only between bytecodes of the main thread,
    which may be deep inside wasm code; so the signal's wakeup fd is read by a
    small thread that bumps the engine's epoch, which traps the wasm code."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.engine: Any = None
        self._lock = threading.Lock()
        self._event = threading.Event()

    def stopped(self) -> bool:
        return self.signal is not None

    def _stop(self, signum: int) -> None:
        with self._lock:
            if self.signal is None:
                self.signal = signum
            self._event.set()
            if self.engine is not None:
                self.engine.increment_epoch()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True (at once) when a stop was asked for."""
        return self._event.wait(seconds)

    def set_engine(self, engine: Any) -> None:
        with self._lock:
            self.engine = engine
            if self.signal is not None:
                engine.increment_epoch()

    def _handler(self, signum: int, frame: Any) -> None:
        self._stop(signum)

    def _watch(self) -> None:
        while True:
            try:
                data = os.read(self._read_fd, 64)
            except OSError:
                return
            for byte in data:
                if byte == 0:  # the sentinel __exit__ writes
                    return
                if byte in STOP_SIGNALS:
                    self._stop(byte)
            if not data:
                return

    def __enter__(self) -> Stopper:
        # Only the main thread may set signal handlers; elsewhere the caller
        # keeps its own, and the module runs until it ends.
        self._active = threading.current_thread() is threading.main_thread()
        if not self._active:
            return self
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._old_handlers = {s: signal.signal(s, self._handler) for s in STOP_SIGNALS}
        self._old_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, name="wasm-stop", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self._active:
            return
        signal.set_wakeup_fd(self._old_wakeup)
        for s, h in self._old_handlers.items():
            signal.signal(s, h)
        try:
            os.write(self._write_fd, b"\0")
        except OSError:
            pass
        self._thread.join(timeout=5)
        os.close(self._write_fd)
        os.close(self._read_fd)


def _module_name(source: str) -> str:
    return source.rstrip("/").rsplit("/", 1)[-1] or "module.wasm"


def run(data: bytes, argv: list[str], source: str, *, err: TextIO | None = None,
        verbose: bool = False) -> int:
    if not is_wasm(data):
        raise PackageError(f"{source}: not a WebAssembly module (no \\0asm header)")
    import wasmtime  # only here: it is large, and only wasm modules need it

    err = err or sys.stderr
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # the module writes to the same fds, unbuffered
    with Stopper() as stopper:
        config = wasmtime.Config()
        config.epoch_interruption = True
        engine = wasmtime.Engine(config)
        try:
            module = wasmtime.Module(engine, data)
        except wasmtime.WasmtimeError as exc:
            raise PackageError(f"{source}: not a valid WebAssembly module: "
                               f"{one_line(str(exc))}") from None
        stopper.set_engine(engine)
        store = wasmtime.Store(engine)
        store.set_epoch_deadline(1)
        wasi = wasmtime.WasiConfig()
        wasi.argv = [_module_name(source), *argv]
        wasi.env = []
        wasi.inherit_stdin()
        wasi.inherit_stdout()
        wasi.inherit_stderr()
        store.set_wasi(wasi)
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        define_sleep(linker, store, stopper.wait)
        host = Host(source, err=err, verbose=verbose, should_stop=stopper.stopped)
        host.define(linker)
        started = False
        try:
            try:
                instance = linker.instantiate(store, module)
            except wasmtime.Trap:
                raise
            except wasmtime.WasmtimeError as exc:
                raise TcprttError(f"{source}: cannot instantiate: {one_line(str(exc))}") from None
            start = instance.exports(store).get("_start")
            if not isinstance(start, wasmtime.Func):
                raise PackageError(f"{source}: the module exports no _start function")
            if stopper.stopped():
                return EXIT_STOPPED_EARLY
            started = True
            start(store)
            return 0
        except wasmtime.ExitTrap as exc:
            if exc.code and host.last_failure and not verbose and not stopper.stopped():
                print(f"tcprtt: {host.last_failure}", file=err, flush=True)
            return exc.code
        except Interrupted:
            return 0
        except wasmtime.Trap as exc:
            if stopper.stopped() and exc.trap_code == wasmtime.TrapCode.INTERRUPT:
                return 0 if started else EXIT_STOPPED_EARLY
            raise TcprttError(f"{source}: the module trapped: {one_line(str(exc))}") from None
        except wasmtime.WasmtimeError as exc:
            raise TcprttError(f"{source}: {one_line(str(exc))}") from None
        finally:
            host.close()
