"""Options objects for the scale benchmark, without a command line."""

from runner import options


def opts_for(fmt: str) -> options.Options:
    parser = options.Parser(prog="bench")
    options.add_probe_flags(parser)
    options.add_runner_flags(parser)
    argv = ["-B"] + (["--json"] if fmt == "json" else [])
    return options.from_namespace(parser.parse_args(argv))
