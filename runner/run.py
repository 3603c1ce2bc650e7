"""The tcprtt command: ``python -m runner [flags]``, ``python -m runner run PACKAGE``.

Only this module prints to the user and picks exit statuses.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import io
import os
import signal
import sys
import traceback
from typing import TextIO

from . import options
from .addresses import key_address, key_family
from .build import host_arch
from .config import probe_config
from .errors import TcprttError, UsageError
from .histogram import Hist
from .package import Package, load, shipped
from .render import json as render_json
from .render import text as render_text
from .session import (  # noqa: F401
    INTERRUPTED,
    STOP_SIGNALS,
    Interrupted,
    Signals,
    _now,
    require_capabilities,
    signals,
    trace_loop,
    use_signals,
)
from .session import writer as _writer
from .tracer import Tracer, choose

VERSION = "0.1.0"  # pyproject.toml reads it from here
BANNER = "Tracing TCP RTT... Hit Ctrl-C to end."
VARIANTS = ("fentry", "kprobe", "raw_tp", "tracepoint")
COMMANDS = """commands:
  tcprtt [flags]                   trace TCP RTT (the flags above)
  tcprtt run PACKAGE.json [...]    run any eunomia package of log2_hist maps
  tcprtt run MODULE.wasm [...]     run a wasm-bpf module
  tcprtt push REFERENCE            publish the built packages to an OCI registry
  tcprtt pull REFERENCE            fetch tcprtt from an OCI registry into the cache
  tcprtt doctor [--json]           what this machine offers tcprtt

Each command takes --help. Exit status: 0 done, 1 could not trace,
2 bad command-line value, 130 interrupted before tracing started."""


def _variant_of(package: Package) -> str:
    meta = package.doc["meta"].get("tcprtt") or {}
    if meta.get("variant") in VARIANTS:
        return meta["variant"]
    attach = package.progs[0]["attach"]
    for prefix, variant in (("fentry/", "fentry"), ("kprobe/", "kprobe"),
                            ("raw_tp/", "raw_tp"), ("tracepoint/", "tracepoint"),
                            ("tp/", "tracepoint")):
        if attach.startswith(prefix):
            return variant
    raise TcprttError(f"{package.source}: cannot tell the attach variant of {attach!r}")


def _client(ref, reg: options.RegistryOptions):
    from .registry import Client, Credentials
    creds = Credentials(reg.username, reg.password) if reg.username is not None else None
    return Client(ref, insecure=reg.insecure, ca_file=reg.ca_file, credentials=creds)


def image_packages(image: str, reg: options.RegistryOptions, err: TextIO) -> dict[str, Package]:
    """The packages of an OCI reference: pulled, or from the cache when the
    reference is pinned and cached, or when the registry cannot be reached.
    A release's wasm module is skipped; a reference that holds only the
    module raises registry.ModuleOnly, which carries the checked module."""
    from . import reference, registry
    ref = reference.parse(image)
    cache = registry.Cache()
    arch = host_arch()
    pulled = registry.cached(ref, cache, arch) if ref.digest else None
    if pulled is None:
        try:
            pulled = registry.pull(_client(ref, reg), cache, arch)
        except TcprttError as exc:
            pulled = registry.cached(ref, cache, arch)
            if pulled is None:
                raise
            print(f"tcprtt: {exc}; running the cached {ref} ({pulled.digest})", file=err)
    if not pulled.packages:
        raise registry.ModuleOnly(ref, pulled, cache)
    return {variant: load_as(path, f"{ref}#{variant}") for variant, path in pulled.packages.items()}


def load_as(path, source: str) -> Package:
    from .package import loads
    return loads(path.read_bytes(), source)


def check_arch(package: Package) -> None:
    """Refuse a package that its packer built for another architecture."""
    built = (package.doc["meta"].get("tcprtt") or {}).get("arch")
    if built is not None and built != host_arch():
        raise TcprttError(f"{package.source}: the package was built for {built}, "
                          f"this machine is {host_arch()}")


def tcprtt_packages(opts: options.Options, err: TextIO = sys.stderr) -> dict[str, Package]:
    if opts.image:
        return image_packages(opts.image, opts.registry or options.RegistryOptions(), err)
    if opts.package:
        pkg = load(opts.package)
        check_arch(pkg)
        return {_variant_of(pkg): pkg}
    arch = host_arch()
    out = {}
    for variant in VARIANTS:
        path = shipped(variant, arch)
        if path.is_file():
            out[variant] = load(path)
    if not out:
        raise TcprttError(f"no tcprtt packages ship for {arch}")
    return out


def render_interval(opts: options.Options, hists: list[Hist], when: datetime.datetime) -> str:
    """One interval of tcprtt output, text or JSON lines."""
    rows = []
    for hist in hists:
        if opts.keyed and hist.total == 0:
            continue
        rows.append((key_address(hist.key) if opts.keyed else None, hist))
    if not opts.keyed and not rows:
        rows.append((None, Hist(key=None, slots=(0,) * 27)))
    rows.sort(key=lambda r: (r[0] is None, r[0] or ""))
    if opts.json:
        stamp = when.isoformat(timespec="seconds")
        return "".join(render_json.tcprtt_record(
            hist, time=stamp, label=opts.label, address=addr,
            family=key_family(hist.key) if opts.keyed else None, unit=opts.unit,
            with_sum=opts.extension) + "\n" for addr, hist in rows)
    out = ["\n"]
    if opts.timestamp:
        out.append(when.strftime("%H:%M:%S") + "\n")
    for addr, hist in rows:
        avg = (hist.latency // hist.cnt if hist.cnt else 0) if opts.extension else None
        out.append(render_text.tcprtt_section(opts.label, addr, avg, hist.slots, opts.unit))
    return "".join(out)


class OutputError(TcprttError):
    """Writing the output failed (closed, full): exit 1."""


class _Output:
    """The output stream: a write that fails says so in one line (a closed
    pipe stays BrokenPipeError, exit 141)."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def _failed(self, exc: OSError) -> OutputError:
        return OutputError(f"cannot write the output: {exc.strerror or exc}")

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._failed(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._failed(exc) from None

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class _Diagnostics:
    """stderr: what cannot be written there is dropped, never raised."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


# The runner's own flags, which a wasm module does not take: (flag, takes a value).
REGISTRY_FLAGS = {"--image": True, "--ca-file": True, "--username": True, "--password": True,
                  "--insecure": False, "--traceback": False}


def module_flags(argv: list[str], known: list[str]) -> list[str]:
    """The command line as tcprtt.wasm takes it: without --image and the
    registry flags (also given as --flag=value, or abbreviated as argparse
    takes them among the ``known`` long flags), everything else as typed."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out += argv[i:]
            break
        name = arg.split("=", 1)[0]
        if name.startswith("--") and name not in known:
            matches = [flag for flag in known if flag.startswith(name)]
            name = matches[0] if len(matches) == 1 else name
        if name in REGISTRY_FLAGS:
            i += 2 if REGISTRY_FLAGS[name] and "=" not in arg else 1
            continue
        out.append(arg)
        i += 1
    return out


def trace(argv: list[str], out: TextIO, err: TextIO) -> int:
    parser = options.Parser(prog="tcprtt", description="Summarize TCP RTT as a histogram.",
                            epilog=COMMANDS, formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_probe_flags(parser)
    options.add_runner_flags(parser)
    parser.add_argument("--version", action="version", version=f"tcprtt {VERSION}")
    opts = options.from_namespace(parser.parse_args(argv))
    values = options.probe_settings(opts, keep_sum=opts.prometheus is not None)
    if opts.prometheus is not None and opts.backend != "libbpf":
        raise UsageError("--prometheus needs the libbpf backend")
    require_capabilities()  # ecli loads the same programs, with the same needs
    from .registry import ModuleOnly
    try:
        packages = tcprtt_packages(opts, err)
    except ModuleOnly as only:
        # The reference holds tcprtt's wasm module alone: run it under the
        # runner's wasm-bpf host with the tracing flags the module takes.
        if opts.prometheus is not None or opts.backend != "libbpf" or opts.max_keys is not None:
            raise UsageError(f"--image {opts.image}: the reference holds only the wasm module, "
                             "which takes neither --prometheus, --backend nor --max-keys") from None
        print(f"tcprtt: {opts.image} holds only the wasm module; running it "
              f"({only.pulled.digest})", file=err, flush=True)
        known = [f for f in parser._option_string_actions if f.startswith("--")]
        return only.run(module_flags(argv, known))
    if opts.backend == "ecli":
        from .loader.ecli import EcliTracer
        tracer: Tracer = EcliTracer.for_tcprtt(opts, values, packages)
    else:
        percpu = probe_config()["percpu"]["setting"]
        if all(any(s.name == percpu for s in p.settings) for p in packages.values()):
            values[percpu] = True  # packages of an older release lack it
        choice = choose(packages, values, opts.attach, opts.max_keys)
        tracer = choice.tracer
        if opts.verbose:
            for attempt in choice.tried:
                print(f"tcprtt: {attempt.variant} not used: {attempt.reason}", file=err)
    exporter = None
    try:
        signals().start_tracing()  # attached: a stop signal now ends it with exit 0
        if opts.verbose:
            ids = getattr(tracer, "probe", None)
            ids = f" (program id {', '.join(map(str, ids.program_ids()))})" if ids else ""
            print(f"tcprtt: attached with the {tracer.variant} variant{ids}", file=err)
        emit = None
        if opts.prometheus is not None:
            from .exporter import Exporter
            label = {"Local Address": "local_address",
                     "Remote Address": "remote_address"}.get(opts.label)
            exporter = Exporter(tracer, opts.prometheus, label,  # type: ignore[arg-type]
                                web_config=opts.web_config)
            host, port = exporter.address[:2]
            shown = f"[{host}]" if ":" in host else host
            print(f"tcprtt: serving metrics on {exporter.scheme}://{shown}:{port}/metrics",
                  file=err)

            def emit(hists, when):  # the metrics are the output
                return None
        print(BANNER, file=err, flush=True)
        write = _writer(out)

        def drops(n: int) -> None:
            print(f"tcprtt: {n} samples dropped: the key map is full (raise --max-keys)",
                  file=err, flush=True)

        if emit is None:
            def emit(hists, when):
                write(render_interval(opts, hists, when))
        trace_loop(tracer, opts.interval, opts.duration, emit, drops)
    finally:
        if exporter is not None:
            exporter.close()
        tracer.close()
    return 0


def push_command(argv: list[str], out: TextIO, err: TextIO) -> int:
    """Publish the built packages and the wasm module under one reference."""
    from pathlib import Path

    from . import reference, registry
    parser = options.Parser(prog="tcprtt push",
                            description="Publish the built tcprtt packages to an OCI registry.")
    parser.add_argument("reference", help="REGISTRY/NAMESPACE/tcprtt:TAG")
    parser.add_argument("--from", dest="source", metavar="DIR", default=None,
                        help="directory with ARCH/*.json packages and tcprtt.wasm "
                             "(default: the shipped ones)")
    parser.add_argument("--module", metavar="FILE", default=None,
                        help="the wasm module to publish (default: tcprtt.wasm in that directory)")
    parser.add_argument("--no-module", dest="no_module", action="store_true",
                        help="publish the packages alone, without the wasm module")
    options.add_registry_flags(parser)
    parser.add_argument("--traceback", action="store_true", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    ref = reference.parse(ns.reference)
    source = Path(ns.source) if ns.source else shipped("raw_tp", host_arch()).parent.parent
    if ns.module is not None and ns.no_module:
        raise UsageError("--module and --no-module cannot be used together")
    packages = registry.release_packages(source)
    module = None if ns.no_module else \
        registry.release_module(Path(ns.module) if ns.module else source / "tcprtt.wasm")
    digest = registry.push(_client(ref, options.registry_options(ns)), packages, module)
    print(f"{ref.registry}/{ref.repository}@{digest}", file=out)
    return 0


def pull_command(argv: list[str], out: TextIO, err: TextIO) -> int:
    """Fetch a reference into the cache and print its digest, packages and module."""
    from . import reference, registry
    parser = options.Parser(prog="tcprtt pull", description="Fetch tcprtt into the local cache.")
    parser.add_argument("reference", help="REGISTRY/NAMESPACE/tcprtt:TAG or @sha256:DIGEST")
    options.add_registry_flags(parser)
    parser.add_argument("--traceback", action="store_true", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    ref = reference.parse(ns.reference)
    pulled = registry.pull(_client(ref, options.registry_options(ns)), registry.Cache(),
                           host_arch(), module=True)
    print(f"{ref.registry}/{ref.repository}@{pulled.digest}", file=out)
    for variant, path in sorted(pulled.packages.items()):
        print(f"  {variant}: {path}", file=out)
    if pulled.module is not None:
        print(f"  {registry.MODULE_VARIANT}: {pulled.module}", file=out)
    return 0


def doctor_command(argv: list[str], out: TextIO, err: TextIO) -> int:
    """Report what this machine offers tcprtt."""
    import json

    from . import doctor
    parser = options.Parser(prog="tcprtt doctor", description=(
        "Report what this machine offers tcprtt: kernel, BTF, libbpf, tracefs, capabilities "
        "and which attach variants work. Put it in a bug report."))
    parser.add_argument("--json", action="store_true", help="the report as one JSON object")
    parser.add_argument("--traceback", action="store_true", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    facts = doctor.report()
    out.write(json.dumps(facts, indent=2) + "\n" if ns.json else doctor.text(facts))
    return 0


def run_package(argv: list[str], out: TextIO, err: TextIO) -> int:
    from .cli.run import run_package
    return run_package(argv, out, err)


SUBCOMMANDS = {"run": run_package, "push": push_command, "pull": pull_command,
               "doctor": doctor_command}


class _Closed(io.TextIOBase):
    """stdout when the process started with it closed: writing fails as
    writing to a closed descriptor does."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))


def _quiet(stream: TextIO | None) -> None:
    """Point the process's stdout at /dev/null, so that the interpreter's
    last flush at exit cannot fail again."""
    if stream is None:
        return
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def main(argv: list[str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None, exiting: bool = False) -> int:
    """The command; ``exiting`` when the process ends as it returns (stop
    signals are then left ignored, so none can change the status)."""
    command_signals = use_signals(Signals())
    command_signals.install()
    try:
        try:
            return _main(argv, out, err)
        except (Interrupted, KeyboardInterrupt):
            return INTERRUPTED
    finally:
        command_signals.release(exiting)


def _main(argv: list[str] | None, out: TextIO | None, err: TextIO | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    stream = out if out is not None else sys.stdout
    output = _Output(stream if stream is not None else _Closed())
    diagnostics = _Diagnostics(err if err is not None else sys.stderr or io.StringIO())
    show_stack = "--traceback" in argv
    # argparse writes --help to sys.stdout and drops an OSError there.
    swapped = out is None
    if swapped:
        sys.stdout = output  # type: ignore[assignment]
    try:
        if argv and argv[0] in SUBCOMMANDS:
            code = SUBCOMMANDS[argv[0]](argv[1:], output, diagnostics)  # type: ignore[arg-type]
        else:
            code = trace(argv, output, diagnostics)  # type: ignore[arg-type]
        output.flush()
        return code
    except BrokenPipeError:
        # The reader went away (| head): end quietly with the status of a
        # process that SIGPIPE ended, and keep the interpreter from
        # complaining when it flushes stdout at exit.
        _quiet(stream if swapped else None)
        return 128 + signal.SIGPIPE
    except UsageError as exc:
        if show_stack:
            traceback.print_exc(file=diagnostics)
        print(f"tcprtt: error: {exc}", file=diagnostics)
        return exc.exit_code
    except TcprttError as exc:
        if isinstance(exc, OutputError):
            _quiet(stream if swapped else None)
        if show_stack:
            traceback.print_exc(file=diagnostics)
        print(f"tcprtt: {exc}", file=diagnostics)
        return exc.exit_code
    finally:
        if swapped:
            sys.stdout = stream
