"""``tcprtt doctor``: the command over ``runner.doctor``'s checks."""

from __future__ import annotations

import argparse
import json
from typing import TextIO

from .. import doctor, options


def doctor_command(argv: list[str], out: TextIO, err: TextIO) -> int:
    """Report what this machine offers tcprtt."""
    parser = options.Parser(prog="tcprtt doctor", description=(
        "Report what this machine offers tcprtt: kernel, BTF, libbpf, tracefs, capabilities "
        "and which attach variants work. Put it in a bug report."))
    parser.add_argument("--json", action="store_true", help="the report as one JSON object")
    parser.add_argument("--traceback", action="store_true", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    facts = doctor.report()
    out.write(json.dumps(facts, indent=2) + "\n" if ns.json else doctor.text(facts))
    return 0
