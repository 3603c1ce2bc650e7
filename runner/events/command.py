"""``tcprtt run PACKAGE.json``: a eunomia JSON package, run as ``ecli run`` runs it.

The package's settings become ecli's flags; its programs attach; then the
one map ecli would poll is read (``exports``) by the tracer for its kind
(``tracers``) and printed in ecli's layout, in plain text or, with
``-j``/``--json``, as JSON lines. A stop signal or ``-d`` ends it with exit
0; everything is detached and unloaded on the way out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TextIO

from .. import options
from ..errors import PackageError, UsageError
from ..package import MAX_PACKAGE_SIZE, Package, is_shipped, loads, parse
from ..session import require_capabilities, signals, writer
from . import attach, exports, settings, tracers

MIN_INTERVAL = 0.1  # seconds between reads of a sample map, at least
MAX_SECONDS = 31536000
# The run command's own options: no setting may take them.
OWN_OPTIONS = ("-h", "--help", "-i", "--interval", "-d", "--duration", "-j", "--json",
               "--traceback", "--verbose")
DESCRIPTION = ("Run a eunomia package as `ecli run` does: attach its programs and print what "
               "its ring buffer, perf event array or sample map reports, in ecli's layout (a "
               "package that exports nothing runs until stopped). The package's .rodata and "
               ".bss variables become flags, named as ecli names them.")


def read_package(path: str) -> Package:
    """The package at ``path``, any output allowed; vetted by libbpf in a
    child unless it is one of the runner's own."""
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_PACKAGE_SIZE + 1)
    except OSError as exc:
        raise PackageError(f"{path}: cannot read the package ({exc.strerror})") from None
    if len(text) > MAX_PACKAGE_SIZE:
        return loads(text, path)  # refuses it, in its words
    import json
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return loads(text, path)  # refuses it, in its words
    except RecursionError:
        return loads(text, path)
    return parse(doc, path, vet=not is_shipped(Path(path)), any_output=True)


def parser_for(prog: str, flags: list[settings.Flag] | None) -> tuple[options.Parser, dict]:
    """The run command's parser: its own options and the package's flags;
    returns it and dest -> flag."""
    # clap, which ecli builds its parser with, takes no abbreviated long options.
    parser = options.Parser(prog=prog, description=DESCRIPTION, allow_abbrev=False)
    parser.add_argument("-i", "--interval", type=float, default=None,
                        help="seconds between reads of a sample map (default: the map's "
                             "sample interval)")
    parser.add_argument("-d", "--duration", type=float, default=None, help="seconds to run")
    parser.add_argument("-j", "--json", action="store_true",
                        help="print records as JSON lines, as `ecli run -j`")
    parser.add_argument("--verbose", action="store_true",
                        help="Whether to show libbpf debug information")
    parser.add_argument("--traceback", action="store_true", help=argparse.SUPPRESS)
    dests: dict[str, settings.Flag] = {}
    for flag in flags or ():
        if flag.runner_only:
            continue
        dest = f"setting_{len(dests)}"
        dests[dest] = flag
        help_text = flag.help.replace("%", "%%")
        if flag.is_bool:
            action = "store_false" if flag.option.startswith("--disable-") else "store_true"
            parser.add_argument(flag.option, dest=dest, action=action, default=None,
                                help=help_text)
        else:
            names = [flag.short, flag.option] if flag.short else [flag.option]
            parser.add_argument(*names, dest=dest, default=None, help=help_text,
                                metavar=flag.type.upper().replace(" ", "_"))
    return parser, dests


def _check_options(source: str, flags: list[settings.Flag]) -> None:
    for flag in flags:
        for opt in (flag.option, flag.short):
            if opt in OWN_OPTIONS:
                raise PackageError(f"{source}: variable {flag.name!r} would take the option "
                                   f"{opt}, which the run command uses itself")


def run(argv: list[str], out: TextIO, err: TextIO) -> int:
    """The run command for a package.json: argv is the path, then flags
    (``-j``/``--json`` may also come before the path, as ecli takes it)."""
    json_first = False
    while argv and argv[0] in ("-j", "--json"):
        json_first, argv = True, argv[1:]
    path = argv[0]
    package = read_package(path)
    flags = settings.flags(package.bpf, package.doc["meta"], package.source)
    _check_options(package.source, flags)
    hidden = {f.option for f in flags if f.runner_only}
    for arg in argv[1:]:
        if arg.split("=", 1)[0] in hidden:
            raise UsageError(f"{arg.split('=', 1)[0]}: {settings.RUNNER_ONLY}, "
                             "not on the command line")
    parser, dests = parser_for(f"tcprtt run {path}", flags)
    ns = parser.parse_args(argv[1:])
    json_output = ns.json or json_first
    for name, value in (("-i/--interval", ns.interval), ("-d/--duration", ns.duration)):
        if value is not None and not 0 < value <= MAX_SECONDS:
            raise UsageError(f"{name}: {value} is not a positive number of seconds")
    if ns.interval is not None and ns.interval < MIN_INTERVAL:
        raise UsageError(f"-i/--interval: {ns.interval} is below the minimum of "
                         f"{MIN_INTERVAL} seconds")
    given = {dests[d].name: v for d, v in vars(ns).items() if d in dests and v is not None}
    images = settings.images(package.bpf, flags, given)
    exported = exports.describe(package, json_output)
    targets = {name: target for name, target in attach.plan(package).items() if target}
    perf_pages = _perf_pages(package.source, package.doc["meta"])
    poll_ms = package.doc["meta"].get("poll_timeout_ms", 100)
    poll_ms = poll_ms if type(poll_ms) is int and 0 < poll_ms <= 1000 else 100
    require_capabilities()
    write = writer(out)
    probe = tracers.PackageProbe(package, images, targets)
    buffers: list[tracers.BufferTracer] = []
    samples: list[tracers.SampleTracer] = []
    try:
        if ns.verbose:
            _libbpf_messages(err)  # what libbpf said opening and loading the object
        probe.attach()
        if ns.verbose:
            _libbpf_messages(err)
        for export in exported:  # ecli prints each plain-text header as it builds its exporter
            if export.kind == "sample map":
                tracer: tracers.SampleTracer | tracers.BufferTracer = \
                    tracers.SampleTracer(probe, export, json_output, write)
                samples.append(tracer)
            else:
                tracer = tracers.BufferTracer(probe, export, json_output, write, perf_pages)
                buffers.append(tracer)
            head = tracer.header()
            if head is not None:
                write(head + "\n")
        signals().start_tracing()
        end = time.monotonic() + ns.duration if ns.duration else None
        _loop(buffers, samples, ns.interval, poll_ms, end, err)
    finally:
        try:
            probe.detach()
            for sample in samples:
                if sample.export.clear_map:
                    sample.clear()
        finally:
            for t in (*buffers, *samples):
                t.close()
            probe.close()
    for buffer in buffers:
        _report(buffer, err)
    return 0


def _loop(buffers: list[tracers.BufferTracer], samples: list[tracers.SampleTracer],
          interval: float | None, poll_ms: int, end: float | None, err: TextIO) -> None:
    """Poll every buffer and read every sample map when it is due (ecli
    reads one as soon as it attaches, then every interval), until a stop
    signal or ``end``; then detach, drain what the buffers hold and read the
    sample maps once more."""
    stop = signals()
    start = time.monotonic()
    every = [interval or max(s.export.interval_ms / 1000, MIN_INTERVAL) for s in samples]
    due = [start] * len(samples)
    reported = [0] * len(buffers)
    while not stop.stopped:
        now = time.monotonic()
        if end is not None and now >= end - 1e-3:
            break
        for i, sample in enumerate(samples):
            if now >= due[i]:
                sample.tick()
                due[i] = time.monotonic() + every[i]  # as ecli: read, then sleep the interval
        wake = min([*due, *([end] if end is not None else [])], default=None)
        left = None if wake is None else max(0.0, wake - time.monotonic())
        if not buffers:
            stop.wait(3600 if left is None else left)
            continue
        timeout = poll_ms if left is None else min(poll_ms, int(left * 1000) + 1)
        for i, buffer in enumerate(buffers):
            buffer.poll(max(0, timeout // len(buffers)))
            if buffer.lost > reported[i]:
                _say(err, f"{buffer.lost - reported[i]} events lost: the {_kind(buffer)} was "
                          "full (the reader fell behind)")
                reported[i] = buffer.lost
    if buffers or samples:
        (buffers or samples)[0].probe.detach()
    for buffer in buffers:
        for _ in range(64):  # what the kernel had stored before the programs were detached
            if not buffer.poll(0):
                break
    for sample in samples:
        sample.tick()


def _perf_pages(source: str, meta: dict) -> int:
    """ecli's ``perf_buffer_pages`` (64 unless the package says): a power of
    two, as the kernel needs, and at most 4096 pages a CPU."""
    pages = meta.get("perf_buffer_pages", 64)
    if type(pages) is not int or pages <= 0 or pages & (pages - 1) or pages > 4096:
        raise PackageError(f"{source}: perf_buffer_pages {pages!r} is not a power of two "
                           "up to 4096")
    return pages


def _kind(tracer: tracers.BufferTracer) -> str:
    return "ring buffer" if tracer.capacity else "perf buffer"


def _report(tracer: tracers.BufferTracer, err: TextIO) -> None:
    """At exit: what was lost or skipped, when anything was."""
    if tracer.lost:
        _say(err, f"{tracer.lost} events lost in all, of {tracer.read + tracer.lost}: the "
                  "perf buffer was full (the reader fell behind)")
    if tracer.ring_filled():
        _say(err, f"the ring buffer was full (up to {tracer.peak_backlog} of its "
                  f"{tracer.capacity} bytes waiting): the kernel refuses records then and "
                  "counts none, so some events may have been lost")
    if tracer.short:
        _say(err, f"{tracer.short} records shorter than the {tracer.export.size}-byte "
                  "export struct were skipped")


def _say(err: TextIO, line: str) -> None:
    err.write(f"tcprtt: {line}\n")
    err.flush()


def _libbpf_messages(err: TextIO) -> None:
    from ..loader import libbpf
    for message in libbpf.recent_messages():
        err.write(message.rstrip("\n") + "\n")
    err.flush()
