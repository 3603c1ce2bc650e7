"""``tcprtt run PACKAGE.json|MODULE.wasm``: any eunomia package whose sample
maps are log2_hist, printed as ecli prints it, or a wasm-bpf module."""

from __future__ import annotations

import argparse
import datetime
import re
from typing import TextIO

from .. import options
from ..errors import PackageError, UsageError
from ..histogram import Hist
from ..package import Package, encode_setting, load
from ..render import json as render_json
from ..render import text as render_text
from ..session import require_capabilities, signals, trace_loop, writer

MIN_INTERVAL = 0.1  # seconds: `run -i` below it would only print

# A setting's integer: ASCII decimal, or 0x hexadecimal; no spaces, no
# underscores, no other scripts' digits (int() takes them all).
INTEGER = re.compile(r"-?(?:0[xX][0-9a-fA-F]+|0|[1-9][0-9]*)")
RUNNER_ONLY = "set by the runner"  # in a setting's description: no flag for it


def _internal(setting) -> bool:
    return RUNNER_ONLY in setting.description


def _setting_flags(parser: argparse.ArgumentParser, package: Package) -> dict[str, str]:
    """A flag per setting, named as ecli names them; returns dest -> setting."""
    dests = {}
    for s in package.settings:
        if _internal(s):
            continue
        dest = f"setting_{len(dests)}"
        dests[dest] = s.name
        help_text = s.description or s.type
        if s.type == "bool":
            if s.default is True:
                parser.add_argument(f"--disable-{s.flag}", dest=dest, action="store_false",
                                    default=None, help=help_text)
            elif s.default is False:
                parser.add_argument(f"--enable-{s.flag}", dest=dest, action="store_true",
                                    default=None, help=help_text)
            else:
                parser.add_argument(f"--{s.flag}", dest=dest, action="store_true",
                                    default=None, help=help_text)
        else:
            parser.add_argument(f"--{s.flag}", dest=dest, metavar=s.type.upper().replace(" ", "_"),
                                help=help_text)
    return dests


def _setting_value(package: Package, name: str, raw: object) -> object:
    setting = package.setting(name)
    if isinstance(raw, bool) or setting.type.startswith("char["):
        value = raw
    else:
        text = str(raw)
        if not INTEGER.fullmatch(text):
            raise UsageError(f"--{setting.flag}: {raw!r} is not an integer")
        value = int(text, 0)
    try:
        encode_setting(package, setting, value)
    except PackageError as exc:
        reason = str(exc).split(": ", 1)[-1]  # past "setting NAME: "
        named = reason if str(value) in reason else f"{raw!r}: {reason}"
        raise UsageError(f"--{setting.flag}: {named}") from None
    return value


def _run_parser(prog: str) -> argparse.ArgumentParser:
    parser = options.Parser(prog=prog, description=(
        "Run a eunomia package whose sample maps are log2_hist and print its histograms as "
        "ecli does. The package's settings become flags: `tcprtt run PACKAGE.json --help` "
        "lists them."))
    parser.add_argument("-i", "--interval", type=float, default=None,
                        help="seconds between outputs (default: the map's sample interval)")
    parser.add_argument("-d", "--duration", type=float, default=None, help="seconds to run")
    parser.add_argument("--json", action="store_true", help="print records as `ecli run -j`")
    parser.add_argument("--traceback", action="store_true", help=argparse.SUPPRESS)
    return parser


def _run_without_package(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        parser = _run_parser("tcprtt run PACKAGE.json")
        parser.usage = "tcprtt run PACKAGE.json [-h] [-i INTERVAL] [-d DURATION] [--json] " \
                       "[--SETTING VALUE ...]\n       tcprtt run MODULE.wasm [ARGS ...]"
        parser.epilog = "A .wasm file (a wasm-bpf module) runs with ARGS as its own arguments."
        parser.parse_args(["--help"])
    raise UsageError("run: give the package.json to run first (tcprtt run --help)")


def run_package(argv: list[str], out: TextIO, err: TextIO) -> int:
    """Load any eunomia log2_hist package and render it as ecli does."""
    from .. import wasm
    if argv and wasm.looks_like_wasm(argv[0]):
        return wasm.run_file(argv[0], argv[1:], err=err)
    if not argv or argv[0].startswith("-"):
        return _run_without_package(argv)
    package = load(argv[0])
    parser = _run_parser(f"tcprtt run {argv[0]}")
    dests = _setting_flags(parser, package)
    for arg in argv[1:]:
        flag = arg.split("=", 1)[0]
        if flag in {f"--{s.flag}" for s in package.settings if _internal(s)}:
            raise UsageError(f"{flag}: {RUNNER_ONLY}, not on the command line")
    ns = parser.parse_args(argv[1:])
    for name, value in (("-i/--interval", ns.interval), ("-d/--duration", ns.duration)):
        if value is not None and not 0 < value <= 31536000:
            raise UsageError(f"{name}: {value} is not a positive number of seconds")
    if ns.interval is not None and ns.interval < MIN_INTERVAL:
        raise UsageError(f"-i/--interval: {ns.interval} is below the minimum of "
                         f"{MIN_INTERVAL} seconds")
    # The package's own sample interval, no shorter than the floor either.
    interval = ns.interval or max(package.hists[0].interval_ms / 1000 or 1.0, MIN_INTERVAL)
    values = {dests[d]: _setting_value(package, dests[d], v)
              for d, v in vars(ns).items() if d in dests and v is not None}
    require_capabilities()
    from ..tracer import LibbpfTracer
    tracer = LibbpfTracer(package, values, "package")
    unit = package.hists[0].unit
    write = writer(out)

    def emit(hists: list[Hist], when: datetime.datetime) -> None:
        if ns.json:
            write("".join(render_json.ecli_record(h) + "\n" for h in hists))
        else:
            write("".join(render_text.ecli_section(h.key, h.members(), h.slots, unit)
                          for h in hists))
    try:
        signals().start_tracing()
        trace_loop(tracer, interval, ns.duration, emit, cumulative=True)
    finally:
        tracer.close()
    return 0


def command(argv: list[str], out: TextIO, err: TextIO) -> int:
    return run_package(argv, out, err)
