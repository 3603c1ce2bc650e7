"""Stop signals at any moment: exit 130 before tracing starts, 0 after it,
never a traceback, and the last interval printed once, complete."""

from __future__ import annotations

import datetime
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from runner import session

from .conftest import REPO, runner_cmd, runner_env

BANNER = "Tracing TCP RTT... Hit Ctrl-C to end."
STOP = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _caught(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16)
    return 0


def wait_handlers(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Until the runner's own handlers are in (the interpreter catches only
    SIGINT; SIGTERM and SIGHUP are the runner's)."""
    bits = (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGHUP - 1))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _caught(proc.pid) & bits == bits:
                return
        except OSError:
            break
        time.sleep(0.002)
    raise AssertionError("the runner's signal handlers never came")


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(runner_cmd(*args), cwd=REPO, env=runner_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 30.0) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


@pytest.mark.parametrize("sig", STOP, ids=lambda s: signal.Signals(s).name)
def test_a_signal_as_soon_as_the_runner_starts_exits_130_quietly(root, sig):
    proc = start("-d", "5")
    try:
        wait_handlers(proc)
        proc.send_signal(sig)
    finally:
        code, out, err = finish(proc)
    assert (code, out, err) == (130, "", "")


def test_bursts_of_term_int_term_at_random_moments(root):
    """20 runs, each a burst at a random moment from the start to well into
    tracing: 130 before tracing started (nothing printed), otherwise 0 with
    the one summary printed once; never a traceback."""
    rng = random.Random(20240611)
    seen = set()
    for attempt in range(20):
        proc = start("-d", "30")
        try:
            wait_handlers(proc)
            # half the runs early (imports, loading), half while tracing
            time.sleep(rng.uniform(0.0, 0.2) if attempt % 2 else rng.uniform(0.2, 1.2))
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
                proc.send_signal(sig)
                time.sleep(rng.uniform(0.0, 0.02))
        finally:
            code, out, err = finish(proc)
        where = f"run {attempt}: exit {code}\nstdout: {out[:300]!r}\nstderr: {err!r}"
        assert "Traceback" not in err and "Exception" not in err, where
        assert code in (0, 130), where
        seen.add(code)
        if code == 130:
            assert out == "" and err == "", where
        else:
            assert err == BANNER + "\n", where
            assert out.count("All Addresses") == 1, where
    assert 0 in seen, "no burst came while tracing"


# The runner with its key map filled with many keys once attached, so that
# reading and rendering an interval takes seconds (bench/run.py's fill_keys).
MANY_KEYS = r"""
import runpy, sys
from bench.run import fill_keys
from runner.tcprtt import variants

count = int(sys.argv.pop(1))
chosen = variants.choose

def choose(*args, **kwargs):
    choice = chosen(*args, **kwargs)
    fill_keys(choice.tracer, count)
    return choice

variants.choose = choose
runpy.run_module("runner", run_name="__main__", alter_sys=True)
"""


def test_sigterm_while_many_keys_are_read_and_rendered_ends_with_the_data(root):
    keys = 100_000
    # -p 1: no connection of the machine's adds keys of its own
    proc = subprocess.Popen([sys.executable, "-c", MANY_KEYS, str(keys), "-B", "-p", "1",
                             "--max-keys", str(2 * keys), "--json", "-i", "1", "-d", "60"],
                            cwd=REPO, env=runner_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first_output: list[float] = []
    chunks: list[str] = []

    def read() -> None:
        while True:
            chunk = proc.stdout.read(1 << 16)
            if not chunk:
                return
            if not first_output:
                first_output.append(time.monotonic())
            chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert proc.stderr.readline().strip() == BANNER
        time.sleep(1.3)  # the first interval ends after 1 s: reading and rendering it now
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        reader.join(timeout=60)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert first_output and first_output[0] > sent, "the signal came after the render"
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    lines = "".join(chunks).splitlines()
    assert len(lines) == keys  # the first interval whole; the last one has no new samples
    assert json.loads(lines[-1])["count"] > 0


# The same runner, with a hook that widens one window to as long as it takes:
# the first read of the maps (``read``) or the first render of an interval
# (``render``) says on the report pipe that it has begun, and goes on only once
# the stop signal has been handled, inside it. Without the hook a signal lands
# in a read or a render only by luck; with it, always.
HELD = r"""
import os, runpy, sys, time
from bench.run import fill_keys
from runner import session
from runner.render import interval
from runner.tcprtt import variants

count, where, report = int(sys.argv.pop(1)), sys.argv.pop(1), int(sys.argv.pop(1))
chosen = variants.choose


def hold(what):
    os.write(report, f"{what} begun\n".encode())
    deadline = time.monotonic() + 30
    while session.signals().received is None and time.monotonic() < deadline:
        time.sleep(0.001)  # the handler runs here, inside the read or render
    os.write(report, f"{what}: signal {session.signals().received} handled inside\n".encode())


def first_call_held(function, what):
    calls = []

    def held(*args, **kwargs):
        if not calls:
            calls.append(1)
            hold(what)
        return function(*args, **kwargs)
    return held


def choose(*args, **kwargs):
    choice = chosen(*args, **kwargs)
    fill_keys(choice.tracer, count)
    if where == "read":
        choice.tracer.snapshot = first_call_held(choice.tracer.snapshot, "read")
    return choice


variants.choose = choose
if where == "render":
    interval.render_interval = first_call_held(interval.render_interval, "render")
runpy.run_module("runner", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("where", ["read", "render"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT],
                         ids=lambda s: signal.Signals(s).name)
def test_a_stop_signal_inside_a_read_or_render_of_many_keys_ends_with_the_data_once(
        root, sig, where):
    keys = 20_000
    report_r, report_w = os.pipe()
    # -p 1: no connection of the machine's adds keys of its own
    proc = subprocess.Popen([sys.executable, "-c", HELD, str(keys), where, str(report_w),
                             "-B", "-p", "1", "--max-keys", str(2 * keys), "--json",
                             "-i", "1", "-d", "60"],
                            cwd=REPO, env=runner_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, pass_fds=(report_w,))
    os.close(report_w)
    report = os.fdopen(report_r)
    try:
        begun = report.readline()  # blocks until the window opens, or the runner ends
        assert begun == f"{where} begun\n", proc.stderr.read() if proc.poll() is not None else ""
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        inside = report.read()
    finally:
        report.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert inside == f"{where}: signal {int(sig)} handled inside\n"
    assert proc.returncode == 0, err
    assert err == BANNER + "\n", err  # no traceback, nothing else
    lines = out.splitlines()
    assert len(lines) == keys  # the interval whole, once; the last one has no new samples
    assert len({json.loads(line)["address"] for line in lines}) == keys  # each key once


class _Probe:
    def __init__(self, calls: list[str]):
        self.calls = calls

    def detach(self) -> None:
        self.calls.append("detach")


class _Tracer:
    variant = "raw_tp"

    def __init__(self):
        self.calls: list[str] = []
        self.probe = _Probe(self.calls)

    def snapshot(self):
        self.calls.append("snapshot")
        return []

    def dropped(self) -> int:
        return 0


def test_the_programs_are_detached_before_the_last_read():
    tracer = _Tracer()
    signals = session.Signals()
    signals.start_tracing()
    emitted: list[datetime.datetime] = []
    try:
        signals.received = signal.SIGTERM  # as the handler does
        started = time.monotonic()
        session.trace_loop(tracer, 30, None, lambda hists, when: emitted.append(when),
                       signals=signals)
    finally:
        signals.release()
    assert time.monotonic() - started < 1
    assert tracer.calls == ["detach", "snapshot"] and len(emitted) == 1
    tracer = _Tracer()
    session.trace_loop(tracer, 0.05, 0.12, lambda hists, when: None, signals=session.Signals())
    assert tracer.calls == ["snapshot", "snapshot", "detach", "snapshot"]


def test_the_wait_wakes_at_a_signal_when_tracing():
    """The handler only sets a flag; the loop's wait wakes at once."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set on the main thread only")
    signals = session.Signals()
    assert signals.install()
    try:
        signals.start_tracing()
        timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGHUP))
        timer.start()
        started = time.monotonic()
        assert signals.wait(10) is True
        assert time.monotonic() - started < 5
        timer.join()
    finally:
        signals.release()
    assert signals.received == signal.SIGHUP


def test_a_signal_inside_a_c_callback_before_tracing_still_ends_with_130(capfd):
    """libbpf calls back into Python (its messages) while loading; a signal
    handled there raises Interrupted where ctypes can only drop it. It is
    dropped quietly and raised again when tracing would start."""
    import ctypes
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set on the main thread only")
    libc = ctypes.CDLL(None)
    compare = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
    handled_in_callback: list[bool] = []

    def callback(a, b) -> int:
        if not handled_in_callback:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs here, inside the callback
                pass
            handled_in_callback.append(True)
        return 0

    signals = session.Signals()
    assert signals.install()
    try:
        values = (ctypes.c_int * 4)(4, 3, 2, 1)
        libc.qsort(values, 4, ctypes.sizeof(ctypes.c_int), compare(callback))
        assert handled_in_callback == [True]  # the Interrupted raised there was lost...
        assert signals.received == signal.SIGTERM
        with pytest.raises(session.Interrupted):  # ...and comes back here
            signals.start_tracing()
    finally:
        signals.release()
    assert capfd.readouterr().err == ""  # no "Exception ignored" from ctypes
    other = session.Signals()  # without a signal, tracing starts
    other.start_tracing()
    other.release()
