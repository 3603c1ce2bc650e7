"""``tcprtt [flags]``: trace TCP RTT and print a histogram per interval (or
serve them to Prometheus), as bcc's tcprtt does."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from .. import options, session
from ..errors import UsageError
from .main import COMMANDS, VERSION

BANNER = "Tracing TCP RTT... Hit Ctrl-C to end."


def _columns() -> int:
    """The terminal's width as shutil.get_terminal_size() finds it."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter, given the width that it would import shutil (and
    with it bz2 and lzma) to find: argparse makes one for each flag added, so
    every run, not only --help, would carry those modules."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None):
        super().__init__(prog, indent_increment, max_help_position,
                         _columns() - 2 if width is None else width)


def parser() -> options.Parser:
    parser = options.Parser(prog="tcprtt", description="Summarize TCP RTT as a histogram.",
                            epilog=COMMANDS, formatter_class=_Formatter)
    options.add_probe_flags(parser)
    options.add_runner_flags(parser)
    parser.add_argument("--version", action="version", version=f"tcprtt {VERSION}")
    return parser


def trace(argv: list[str], out: TextIO, err: TextIO) -> int:
    flags = parser()
    opts = options.from_namespace(flags.parse_args(argv))
    from ..tcprtt.settings import probe_settings
    values = probe_settings(opts)
    if opts.prometheus is not None and opts.backend != "libbpf":
        raise UsageError("--prometheus needs the libbpf backend")
    session.require_capabilities()  # ecli loads the same programs, with the same needs
    packages = session.package_source(opts, err)
    if not isinstance(packages, dict):  # the reference holds tcprtt's wasm module alone
        known = [f for f in flags._option_string_actions if f.startswith("--")]
        return session.run_module_only(packages, opts, argv, known, err)
    tracer = session.open_tracer(opts, values, packages, err)
    exporter = None
    try:
        session.signals().start_tracing()  # attached: a stop signal now ends it with exit 0
        if opts.verbose:
            ids = getattr(tracer, "probe", None)
            ids = f" (program id {', '.join(map(str, ids.program_ids()))})" if ids else ""
            print(f"tcprtt: attached with the {tracer.variant} variant{ids}", file=err)
        emit = None
        if opts.prometheus is not None:
            from ..exporter import Exporter
            label = {"Local Address": "local_address",
                     "Remote Address": "remote_address"}.get(opts.label)
            exporter = Exporter(tracer, opts.prometheus, label,  # type: ignore[arg-type]
                                web_config=opts.web_config, prefixes=opts.prefixes)
            host, port = exporter.address[:2]
            shown = f"[{host}]" if ":" in host else host
            print(f"tcprtt: serving metrics on {exporter.scheme}://{shown}:{port}/metrics",
                  file=err)

            def emit(hists, when):  # the metrics are the output
                return None
        print(BANNER, file=err, flush=True)
        write = session.writer(out)

        def drops(n: int) -> None:
            print(f"tcprtt: {n} samples dropped: the key map is full (raise --max-keys)",
                  file=err, flush=True)

        if emit is None:
            # Rendering (and its socket, datetime and formats) is imported once
            # attached: loading, with libbpf's copies of the kernel's BTF, is the
            # peak of the process's memory, and these would only add to it.
            from ..render.interval import render_interval

            def emit(hists, when):
                write(render_interval(opts, hists, when))

            if opts.verbose and opts.keyed:
                emit = _saying_evictions(emit, tracer, err)
        session.trace_loop(tracer, opts.interval, opts.duration, emit, drops)
    finally:
        if exporter is not None:
            exporter.close()
        tracer.close()
    return 0


def _saying_evictions(emit, tracer, err):
    """``emit``, then the keys evicted since the last interval, if any (-v)."""
    said = [0]

    def emit_and_say(hists, when):
        emit(hists, when)
        evictions = getattr(tracer, "evictions", lambda: 0)()
        if evictions > said[0]:
            print(f"tcprtt: {evictions - said[0]} keys evicted ({evictions} in all): the key "
                  "map was full, and the least recently used keys gave way", file=err, flush=True)
            said[0] = evictions
    return emit_and_say
