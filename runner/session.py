"""One tracing session, whatever the command: where the packages come from
(shipped, ``--package`` or ``--image``), choosing and loading a tracer, the
stop signals, the capabilities it needs and the loop that reads and emits
intervals.

The commands under ``runner.cli`` parse their flags and print; this module
owns what happens from the packages to the last interval. It imports the
registry client, ecli's loader and the wasm host only when a session needs
them.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from typing import TYPE_CHECKING, Callable, TextIO

from . import capabilities
from .config import host_arch
from .errors import TcprttError, UsageError
from .histogram import Intervals
from .package import Package, load, shipped
from .tcprtt import variants

if TYPE_CHECKING:
    import datetime

    from .histogram import Hist
    from .options import Options, RegistryOptions
    from .registry import ModuleOnly
    from .tracer import Tracer

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
INTERRUPTED = 130  # exit status for a stop signal before tracing started


class Interrupted(BaseException):
    """A stop signal came before tracing started: exit 130. A BaseException,
    so that no ``except Exception`` on the way swallows it."""


class Signals:
    """SIGINT, SIGTERM and SIGHUP over one command. Before tracing starts the
    first one raises Interrupted (exit 130) and later ones are ignored. Once
    ``start_tracing`` is called each only sets a flag and wakes ``wait``:
    nothing is raised inside a read or a render, and the loop prints the
    last interval and ends with exit 0.

    A signal that lands while libbpf calls back into Python (its message
    callback, while loading) raises Interrupted inside the callback, where
    ctypes can only drop it: the installed ``sys.unraisablehook`` drops it
    quietly, and ``start_tracing`` raises it again, so that the command
    still ends with 130 before tracing, with nothing printed."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.tracing = False
        self._pipe: tuple[int, int] | None = None
        self._previous: dict[int, object] = {}
        self._unraisable = None

    def install(self) -> bool:
        """Take over the stop signals; False off the main thread, where
        handlers cannot be set (the caller's stay)."""
        try:
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handler)
        except ValueError:
            return False
        self._unraisable = sys.unraisablehook
        sys.unraisablehook = self._drop_interrupted
        return True

    def _drop_interrupted(self, unraisable) -> None:
        if isinstance(unraisable.exc_value, Interrupted):
            return  # ours, lost in a callback: start_tracing raises it again
        (self._unraisable or sys.__unraisablehook__)(unraisable)

    def release(self, exiting: bool = False) -> None:
        """Give the stop signals back; when the process is about to exit,
        ignore them instead, so that none changes the status chosen."""
        self.tracing = True  # from here on a signal raises nothing
        previous, self._previous = self._previous, {}
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_IGN if exiting else handler)  # type: ignore[arg-type]
        if self._unraisable is not None:
            if sys.unraisablehook == self._drop_interrupted:
                sys.unraisablehook = self._unraisable
            self._unraisable = None
        if self._pipe is not None:
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None

    def _handler(self, signum, frame) -> None:
        first = self.received is None
        if first:
            self.received = signum
        if self.tracing:
            if self._pipe is not None:
                try:
                    os.write(self._pipe[1], b"\0")
                except OSError:  # full: a wakeup is already pending
                    pass
            return
        if first:
            raise Interrupted(signum)

    def start_tracing(self) -> None:
        """From now on a stop signal ends tracing normally (exit 0). A signal
        that came before, whose Interrupted a callback lost, raises it now."""
        if self.received is not None and not self.tracing:
            raise Interrupted(self.received)
        if self._pipe is None:
            self._pipe = os.pipe()
            for fd in self._pipe:
                os.set_blocking(fd, False)
        self.tracing = True

    @property
    def stopped(self) -> bool:
        return self.received is not None

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as a stop signal has come."""
        if self.received is None and seconds > 0:
            if self._pipe is None:
                time.sleep(seconds)
            else:
                select.select([self._pipe[0]], [], [], seconds)
        return self.received is not None


_signals = Signals()  # the command's, set by ``use_signals``


def signals() -> Signals:
    """The stop signals of the command that runs."""
    return _signals


def use_signals(chosen: Signals) -> Signals:
    global _signals
    _signals = chosen
    return chosen


# -- where the packages come from -----------------------------------------------------

def registry_client(ref, reg: RegistryOptions):
    from .registry import Client, Credentials
    creds = Credentials(reg.username, reg.password) if reg.username is not None else None
    return Client(ref, insecure=reg.insecure, ca_file=reg.ca_file, credentials=creds)


def image_packages(image: str, reg: RegistryOptions, err: TextIO) -> dict[str, Package]:
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
            pulled = registry.pull(registry_client(ref, reg), cache, arch)
        except TcprttError as exc:
            pulled = registry.cached(ref, cache, arch)
            if pulled is None:
                raise
            print(f"tcprtt: {exc}; running the cached {ref} ({pulled.digest})", file=err)
    if not pulled.packages:
        raise registry.ModuleOnly(ref, pulled, cache)
    from .package import loads
    # Read through the cache (no link followed, the digest checked again),
    # not by path: the path is only what ecli is handed.
    return {variant: loads(pulled.package_bytes(variant), f"{ref}#{variant}", path=path)
            for variant, path in pulled.packages.items()}


def load_as(path, source: str) -> Package:
    """A package file under another name (a reference's), opened without
    following a link."""
    from .package import loads
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        return loads(f.read(), source, path=path)


def check_arch(package: Package) -> None:
    """Refuse a package that its packer built for another architecture."""
    built = (package.doc["meta"].get("tcprtt") or {}).get("arch")
    if built is not None and built != host_arch():
        raise TcprttError(f"{package.source}: the package was built for {built}, "
                          f"this machine is {host_arch()}")


def tcprtt_packages(opts: Options, err: TextIO) -> dict[str, Package]:
    """tcprtt's packages by variant: from --image, --package, or those shipped."""
    if opts.image:
        from .options import RegistryOptions
        return image_packages(opts.image, opts.registry or RegistryOptions(), err)
    if opts.package:
        pkg = load(opts.package)
        check_arch(pkg)
        return {variants.variant_of(pkg): pkg}
    arch = host_arch()
    out = {}
    for variant in variants.names():
        path = shipped(variant, arch)
        if path.is_file():
            out[variant] = load(path)
    if not out:
        raise TcprttError(f"no tcprtt packages ship for {arch}")
    return out


def package_source(opts: Options, err: TextIO) -> dict[str, Package] | ModuleOnly:
    """``tcprtt_packages``, or, when --image names a reference that holds
    tcprtt's wasm module alone, the registry's hand-over of that module
    (``run_module_only`` runs it). The registry is imported for --image only."""
    if not opts.image:
        return tcprtt_packages(opts, err)
    from .registry import ModuleOnly
    try:
        return tcprtt_packages(opts, err)
    except ModuleOnly as only:
        return only


# The runner's own flags, which a wasm module does not take: (flag, takes a value).
REGISTRY_FLAGS = {"--image": True, "--ca-file": True, "--username": True, "--password": True,
                  "--password-stdin": False, "--insecure": False, "--traceback": False}


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


def run_module_only(only: ModuleOnly, opts: Options, argv: list[str], known: list[str],
                    err: TextIO) -> int:
    """The reference holds tcprtt's wasm module alone: run it under the
    runner's wasm-bpf host with the tracing flags the module takes."""
    if opts.prometheus is not None or opts.backend != "libbpf" or opts.max_keys is not None:
        raise UsageError(f"--image {opts.image}: the reference holds only the wasm module, "
                         "which takes neither --prometheus, --backend nor --max-keys")
    print(f"tcprtt: {opts.image} holds only the wasm module; running it "
          f"({only.pulled.digest})", file=err, flush=True)
    return only.run(module_flags(argv, known))


# -- choosing and loading a tracer ------------------------------------------------------

def open_tracer(opts: Options, values: dict[str, object], packages: dict[str, Package],
                err: TextIO) -> Tracer:
    """The tracer of the backend asked for, attached, of the first variant
    that works (each one passed over said with -v)."""
    load = None
    if opts.backend == "ecli":
        from .loader.ecli import EcliTracer
        load = EcliTracer.loader(values)
    else:
        from .tcprtt import storage
        storage.prefer_percpu(packages, values)
    try:
        choice = variants.choose(packages, values, opts.attach, opts.max_keys, load=load)
    except TcprttError as exc:
        if opts.verbose:
            show_attempts(getattr(exc, "tried", ()), err)
        raise
    if opts.verbose:
        show_attempts(choice.tried, err)
    return choice.tracer  # type: ignore[return-value]


def show_attempts(tried, err: TextIO) -> None:
    """-v: each variant passed over, why, and the whole log the kernel and
    libbpf gave for it."""
    for attempt in tried:
        print(f"tcprtt: {attempt.variant} not used: {attempt.reason}", file=err)
        if attempt.log.strip():
            print(f"tcprtt: --- {attempt.variant}: the whole log ---", file=err)
            print(attempt.log.rstrip("\n"), file=err)
            print(f"tcprtt: --- end of the {attempt.variant} log ---", file=err)


# -- the session -------------------------------------------------------------------------

def require_capabilities() -> None:
    lacking = capabilities.missing()
    if lacking:
        raise TcprttError(f"missing capability {' and '.join(lacking)}: run as root, or grant "
                          "CAP_BPF and CAP_PERFMON")


def writer(out: TextIO) -> Callable[[str], None]:
    """Write and flush each piece of output as it comes."""
    def write(text: str) -> None:
        if text:
            out.write(text)
            out.flush()
    return write


def _now() -> datetime.datetime:
    from datetime import datetime
    return datetime.now().astimezone()


def trace_loop(tracer: Tracer, interval: float, duration: float | None,
               emit: Callable[[list[Hist], datetime.datetime], None],
               on_drops: Callable[[int], None] | None = None,
               cumulative: bool = False, signals: Signals | None = None) -> None:
    """Read every ``interval`` seconds until ``duration`` or a stop signal;
    the last, partial interval is emitted too, once. Before that last read
    the programs are detached (the maps stay), so it holds every sample."""
    signals = signals or _signals
    intervals = Intervals()
    start = time.monotonic()
    end = start + duration if duration else None
    tick = start
    dropped = 0
    while True:
        tick += interval
        wake = min(tick, end) if end is not None else tick
        stopped = signals.wait(wake - time.monotonic())
        last = stopped or (end is not None and time.monotonic() >= end - 1e-3)
        if last:
            probe = getattr(tracer, "probe", None)
            if probe is not None:
                probe.detach()
        snapshot = tracer.snapshot()
        emit(snapshot if cumulative else intervals.step(snapshot), _now())
        if on_drops is not None:
            now_dropped = tracer.dropped()
            if now_dropped > dropped:
                on_drops(now_dropped - dropped)
            dropped = now_dropped
        if last:
            break
