"""Events per second that ``tcprtt run`` reads from a ring buffer and prints,
against reading alone, in one session.

    python -m bench.events [--seconds S] [--rounds N]    (as root; needs clang)

A BPF program (bench/events.bpf.c) sends one record per getppid(2) call of a
helper process that calls it without pause, far faster than any reader, so
the ring buffer stays full and each figure is what the reader sustains.
Three ways of reading alternate, each for S seconds per round: records
read and dropped (the baseline: libbpf's poll and the copy into Python),
read, decoded and printed as ecli's text, and as ecli's JSON lines (printed
to /dev/null). Medians of N rounds; the records the program offered and the
full ring refused are counted by the program itself.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runner.events import exports, settings, tracers
from runner.events.command import read_package
from runner.loader.buffers import open_reader

HERE = Path(__file__).resolve().parent
SPIN = "import os\nwhile True:\n    os.getppid()\n"


def build(workdir: Path) -> Path:
    from tests.packages.pack import pack
    return pack("events", workdir, directory=HERE)


def counters(probe: tracers.PackageProbe) -> tuple[int, int]:
    """(offered, refused) from the program's .bss, read through the map."""
    name = next(n for n in probe._maps if n.endswith(".bss"))
    size = probe.package.bpf.section_size(".bss")
    key = ctypes.c_uint32(0)
    value = ctypes.create_string_buffer(size)
    probe._lib.bpf_map_lookup_elem(probe.map_fd(name), ctypes.byref(key), value)
    raw = value.raw
    offsets = {v.name: v.offset for v in probe.package.bpf.variables(".bss")}
    return (int.from_bytes(raw[offsets["offered"]:offsets["offered"] + 8], "little"),
            int.from_bytes(raw[offsets["refused"]:offsets["refused"] + 8], "little"))


def measure(probe, export, mode: str, seconds: float, sink) -> tuple[float, float, float]:
    """(records read per second, offered per second, refused per second)."""
    count = [0]

    def drop(_data: bytes) -> None:
        count[0] += 1
    if mode == "read":
        reader = open_reader(probe.map_fd(export.map), probe.map_type(export.map), drop)
        poll = reader.poll
    else:
        tracer = tracers.BufferTracer(probe, export, mode == "json", sink.write)
        reader = tracer
        poll = tracer.poll
    try:
        for _ in range(3):  # drain what waited, so each mode starts from a full ring
            poll(0)
        start_counts = counters(probe)
        read_before = count[0] if mode == "read" else tracer.read
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            poll(100)
        elapsed = time.monotonic() - start
        read = (count[0] if mode == "read" else tracer.read) - read_before
        offered, refused = (b - a for a, b in zip(start_counts, counters(probe)))
    finally:
        reader.close()
    return read / elapsed, offered / elapsed, refused / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    spinner = subprocess.Popen([sys.executable, "-c", SPIN])
    results: dict[str, list[tuple[float, float, float]]] = {"read": [], "text": [], "json": []}
    try:
        with tempfile.TemporaryDirectory(prefix="tcprtt-bench-events-") as tmp:
            package = read_package(str(build(Path(tmp))))
            flags = settings.flags(package.bpf, package.doc["meta"], package.source)
            images = settings.images(package.bpf, flags, {"target_tgid": str(spinner.pid)})
            export = exports.describe(package, False)[0]
            probe = tracers.PackageProbe(package, images, {})
            try:
                probe.attach()
                with open(os.devnull, "w") as sink:
                    for _ in range(args.rounds):
                        for mode in results:
                            results[mode].append(measure(probe, export, mode, args.seconds,
                                                         sink))
            finally:
                probe.close()
    finally:
        spinner.kill()
        spinner.wait()
    median = {mode: tuple(statistics.median(r[i] for r in rows) for i in range(3))
              for mode, rows in results.items()}
    base = median["read"][0]
    print("| target | measurement | tcprtt | baseline | goal | |")
    print("| --- | --- | --- | --- | --- | --- |")
    for mode, label in (("text", "text"), ("json", "JSON lines (-j)")):
        rate, offered, refused = median[mode]
        print(f"| 7 events | `run`: ring buffer records read, decoded and printed as {label}, "
              f"per second (median of {args.rounds} x {args.seconds:g} s) | {rate:,.0f} | "
              f"read alone {base:,.0f} | - | {rate / base:.2f}x of reading alone; the "
              f"program offered {offered:,.0f}/s, the full ring refused {refused:,.0f}/s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
