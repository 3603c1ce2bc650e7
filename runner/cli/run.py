"""``tcprtt run PACKAGE.json|MODULE.wasm``: any eunomia JSON package, run
as ``ecli run`` runs it (``runner.events``), or a wasm-bpf module."""

from __future__ import annotations

from typing import TextIO

from ..errors import UsageError
from ..events.command import MIN_INTERVAL, parser_for, run

__all__ = ["MIN_INTERVAL", "run_package", "command"]


def _run_without_package(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        parser, _ = parser_for("tcprtt run PACKAGE.json", None)
        parser.usage = "tcprtt run PACKAGE.json [-h] [-i INTERVAL] [-d DURATION] [-j] " \
                       "[--SETTING VALUE ...]\n       tcprtt run MODULE.wasm [ARGS ...]"
        parser.epilog = ("`tcprtt run PACKAGE.json --help` lists the package's settings. "
                         "A .wasm file (a wasm-bpf module) runs with ARGS as its own arguments.")
        parser.parse_args(["--help"])
    raise UsageError("run: give the package.json to run first (tcprtt run --help)")


def run_package(argv: list[str], out: TextIO, err: TextIO) -> int:
    """Run a eunomia package as ecli does, or a wasm-bpf module."""
    from .. import wasm
    if argv and wasm.looks_like_wasm(argv[0]):
        return wasm.run_file(argv[0], argv[1:], err=err)
    rest = argv
    while rest and rest[0] in ("-j", "--json"):
        rest = rest[1:]
    if not rest or rest[0].startswith("-"):
        return _run_without_package(rest)
    return run(argv, out, err)


def command(argv: list[str], out: TextIO, err: TextIO) -> int:
    return run_package(argv, out, err)
