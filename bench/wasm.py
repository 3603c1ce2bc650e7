"""tcprtt.wasm under eunomia's wasm-bpf runtime next to the native runner.

    python -m bench.wasm [--quick]     (as root; needs the wasm-bpf runtime)

1. start-up: process start to the "Tracing" banner (objects loaded and
   attached), median of several runs
2. one interval with -B and N keys: how long after its tick a report's last
   line comes (each tracer ticks at start + k * interval, so that is the
   read, the rendering and the write of the interval), median over reports

The N keys are written into each tracer's own histogram map (found by its
key size among the tracer process's map descriptors); a local-port filter
that matches nothing keeps the kernel from adding keys of its own.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODULE = REPO / "runner" / "packages" / "tcprtt.wasm"
WASM_BPF = REPO.parent / "shared" / "tools" / "eunomia" / "wasm-bpf"
BANNER = "Tracing TCP RTT"
KEY_SIZE, VALUE_SIZE, SLOTS = 18, 128, 27
NO_TRAFFIC = ["-p", "1"]  # nothing listens on port 1 here


def module_cmd(*args: str) -> list[str]:
    return [str(WASM_BPF), str(MODULE), *args]


def runner_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "runner", *args]


class Tracer:
    """A tracer process; stdout lines kept with the time each arrived."""

    def __init__(self, argv: list[str]):
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, PYTHONPATH=str(REPO)))
        self.banner_at: float | None = None
        self.lines: list[tuple[float, str]] = []
        self._banner = threading.Event()
        self._threads = [threading.Thread(target=self._read_err, daemon=True),
                         threading.Thread(target=self._read_out, daemon=True)]
        for t in self._threads:
            t.start()

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            if BANNER in line and self.banner_at is None:
                self.banner_at = time.monotonic()
                self._banner.set()

    def _read_out(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line))

    def wait_banner(self, timeout: float = 60.0) -> float:
        if not self._banner.wait(timeout):
            self.stop()
            raise RuntimeError(f"{self.proc.args[:2]} did not attach within {timeout:.0f} s")
        return self.banner_at - self.started

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for t in self._threads:
            t.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()


def startup_ms(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        tracer = Tracer(argv)
        try:
            times.append(tracer.wait_banner() * 1000)
        finally:
            tracer.stop()
    return statistics.median(times)


def _libbpf():
    lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    lib.bpf_map_get_fd_by_id.argtypes = [ctypes.c_uint32]
    lib.bpf_map_get_fd_by_id.restype = ctypes.c_int
    lib.bpf_map_update_elem.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_uint64]
    lib.bpf_map_update_elem.restype = ctypes.c_int
    return lib


def hists_map_id(pid: int) -> int:
    """The id of the histogram map (18-byte keys) that process ``pid`` holds."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf-map":
                continue
            info = dict(line.split(":\t", 1) for line in
                        Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines()
                        if ":\t" in line)
        except OSError:
            continue
        if int(info.get("key_size", 0)) == KEY_SIZE and "map_id" in info:
            return int(info["map_id"])
    raise RuntimeError(f"process {pid} holds no histogram map")


def fill_keys(pid: int, count: int, round_: int) -> None:
    """``count`` IPv6 keys in the map of ``pid``, each with ``round_`` times
    a few samples: every round adds samples to every key."""
    lib = _libbpf()
    fd = lib.bpf_map_get_fd_by_id(hists_map_id(pid))
    if fd < 0:
        raise RuntimeError(f"bpf_map_get_fd_by_id: {os.strerror(ctypes.get_errno())}")
    try:
        for i in range(count):
            key = (10).to_bytes(2, "little") + b"\xfd" + bytes(11) + i.to_bytes(4, "big")
            slots = [0] * SLOTS
            slots[i % 20] = (1 + i % 7) * round_
            value = sum(slots).to_bytes(8, "little") * 2
            value += b"".join(s.to_bytes(4, "little") for s in slots)
            if lib.bpf_map_update_elem(fd, key, value.ljust(VALUE_SIZE, b"\0"), 0) != 0:
                raise RuntimeError(f"bpf_map_update_elem: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


INTERVAL = 2  # seconds: a report is over well before the next tick


def interval_ms(make_cmd, keys: int, reports: int, fmt: str) -> float:
    """Median time from a tick to the last line of its report, with ``keys``
    keys that all count something in every interval."""
    extra = ["--json"] if fmt == "json" else []
    tracer = Tracer(make_cmd("-B", "-i", str(INTERVAL), "-d", str(INTERVAL * reports),
                             *NO_TRAFFIC, *extra))
    try:
        tracer.wait_banner()
        base = tracer.banner_at
        for k in range(reports):
            # Between two reports: every key counts more by the next tick.
            time.sleep(max(0.0, base + INTERVAL * k + INTERVAL * 0.6 - time.monotonic()))
            fill_keys(tracer.proc.pid, keys, k + 1)
        tracer.proc.wait(timeout=INTERVAL * reports + 60)
    finally:
        tracer.stop()
    last: dict[int, float] = {}
    for at, _ in tracer.lines:
        k = int((at - base) // INTERVAL)
        last[k] = max(last.get(k, at), at)
    late = [(at - base - INTERVAL * k) * 1000 for k, at in sorted(last.items()) if k >= 1]
    if not late:
        raise RuntimeError(f"{tracer.proc.args[:2]} printed no report")
    return statistics.median(late)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and keys")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.wasm: run as root (BPF programs are loaded)", file=sys.stderr)
        return 1
    if not WASM_BPF.is_file():
        print(f"bench.wasm: {WASM_BPF} is missing", file=sys.stderr)
        return 1
    runs = 3 if args.quick else 7
    counts = [0, 1000] if args.quick else [0, 1000, 10000]
    reports = 3 if args.quick else 5
    rows = []

    def note(text: str) -> None:
        print(f"bench.wasm: {text}", file=sys.stderr, flush=True)

    note("measuring start-up")
    rows.append((f"start-up to banner, ms (median of {runs})",
                 startup_ms(module_cmd(), runs), startup_ms(runner_cmd(), runs)))
    for fmt in ("text", "json"):
        for count in counts:
            if fmt == "json" and count == 0:
                continue  # no key, no record: nothing to time
            note(f"measuring one interval, -B, {count} keys, {fmt}")
            rows.append((f"one interval, -B, {count} keys, {fmt}: read+render, ms",
                         interval_ms(module_cmd, count, reports, fmt),
                         interval_ms(runner_cmd, count, reports, fmt)))
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'wasm (wasm-bpf)':>15}  {'native runner':>13}  {'ratio':>6}")
    for what, wasm, native in rows:
        ratio = f"{wasm / native:.2f}" if native > 0 else "-"
        print(f"{what:<{width}}  {wasm:>15.1f}  {native:>13.1f}  {ratio:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
