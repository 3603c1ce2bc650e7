"""One tracing session, whatever the command: the stop signals, the
capabilities it needs and the loop that reads and emits intervals.

The commands under ``runner.cli`` parse their flags and print; this module
owns what happens between attaching and the last interval.
"""

from __future__ import annotations

import datetime
import os
import select
import signal
import time
from typing import TYPE_CHECKING, Callable, TextIO

from . import capabilities
from .errors import TcprttError
from .histogram import Intervals

if TYPE_CHECKING:
    from .histogram import Hist
    from .tracer import Tracer

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
INTERRUPTED = 130  # exit status for a stop signal before tracing started


class Interrupted(BaseException):
    """A stop signal came before tracing started: exit 130. A BaseException,
    so that no ``except Exception`` on the way swallows it."""


class Signals:
    """SIGINT, SIGTERM and SIGHUP over one command. Before tracing starts the
    first one raises Interrupted (exit 130) and later ones are ignored. Once
    ``start_tracing`` is called each only sets a flag and wakes ``wait``:
    nothing is raised inside a read or a render, and the loop prints the
    last interval and ends with exit 0."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.tracing = False
        self._pipe: tuple[int, int] | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> bool:
        """Take over the stop signals; False off the main thread, where
        handlers cannot be set (the caller's stay)."""
        try:
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handler)
        except ValueError:
            return False
        return True

    def release(self, exiting: bool = False) -> None:
        """Give the stop signals back; when the process is about to exit,
        ignore them instead, so that none changes the status chosen."""
        self.tracing = True  # from here on a signal raises nothing
        previous, self._previous = self._previous, {}
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_IGN if exiting else handler)  # type: ignore[arg-type]
        if self._pipe is not None:
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None

    def _handler(self, signum, frame) -> None:
        first = self.received is None
        if first:
            self.received = signum
        if self.tracing:
            if self._pipe is not None:
                try:
                    os.write(self._pipe[1], b"\0")
                except OSError:  # full: a wakeup is already pending
                    pass
            return
        if first:
            raise Interrupted(signum)

    def start_tracing(self) -> None:
        """From now on a stop signal ends tracing normally (exit 0)."""
        if self._pipe is None:
            self._pipe = os.pipe()
            for fd in self._pipe:
                os.set_blocking(fd, False)
        self.tracing = True

    @property
    def stopped(self) -> bool:
        return self.received is not None

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as a stop signal has come."""
        if self.received is None and seconds > 0:
            if self._pipe is None:
                time.sleep(seconds)
            else:
                select.select([self._pipe[0]], [], [], seconds)
        return self.received is not None


_signals = Signals()  # the command's, set by ``use_signals``


def signals() -> Signals:
    """The stop signals of the command that runs."""
    return _signals


def use_signals(chosen: Signals) -> Signals:
    global _signals
    _signals = chosen
    return chosen


def require_capabilities() -> None:
    lacking = capabilities.missing()
    if lacking:
        raise TcprttError(f"missing capability {' and '.join(lacking)}: run as root, or grant "
                          "CAP_BPF and CAP_PERFMON")


def writer(out: TextIO) -> Callable[[str], None]:
    """Write and flush each piece of output as it comes."""
    def write(text: str) -> None:
        if text:
            out.write(text)
            out.flush()
    return write


def _now() -> datetime.datetime:
    return datetime.datetime.now().astimezone()


def trace_loop(tracer: Tracer, interval: float, duration: float | None,
               emit: Callable[[list[Hist], datetime.datetime], None],
               on_drops: Callable[[int], None] | None = None,
               cumulative: bool = False, signals: Signals | None = None) -> None:
    """Read every ``interval`` seconds until ``duration`` or a stop signal;
    the last, partial interval is emitted too, once. Before that last read
    the programs are detached (the maps stay), so it holds every sample."""
    signals = signals or _signals
    intervals = Intervals()
    start = time.monotonic()
    end = start + duration if duration else None
    tick = start
    dropped = 0
    while True:
        tick += interval
        wake = min(tick, end) if end is not None else tick
        stopped = signals.wait(wake - time.monotonic())
        last = stopped or (end is not None and time.monotonic() >= end - 1e-3)
        if last:
            probe = getattr(tracer, "probe", None)
            if probe is not None:
                probe.detach()
        snapshot = tracer.snapshot()
        emit(snapshot if cumulative else intervals.step(snapshot), _now())
        if on_drops is not None:
            now_dropped = tracer.dropped()
            if now_dropped > dropped:
                on_drops(now_dropped - dropped)
            dropped = now_dropped
        if last:
            break
