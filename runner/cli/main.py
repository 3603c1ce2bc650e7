"""Dispatch, the output and diagnostics streams, and exit statuses.

Only the commands under ``runner.cli`` print to the user, and only this
module picks exit statuses: 0 done, 1 could not trace (or write the output),
2 a bad command-line value, 130 a stop signal before tracing started, 141
the reader of the output went away. Each command's module is imported when
that command runs.
"""

from __future__ import annotations

import errno
import importlib
import io
import os
import signal
import sys
from typing import TextIO

from ..errors import TcprttError, UsageError
from ..run import VERSION  # noqa: F401 (where pyproject.toml reads it; run.py imports nothing)
from ..session import INTERRUPTED, Interrupted, Signals, use_signals

COMMANDS = """commands:
  tcprtt [flags]                   trace TCP RTT (the flags above)
  tcprtt run PACKAGE.json [...]    run any eunomia package as ecli runs it
  tcprtt run MODULE.wasm [...]     run a wasm-bpf module
  tcprtt push REFERENCE            publish the built packages to an OCI registry
  tcprtt pull REFERENCE            fetch tcprtt from an OCI registry into the cache
  tcprtt doctor [--json]           what this machine offers tcprtt

Each command takes --help. Exit status: 0 done, 1 could not trace,
2 bad command-line value, 130 interrupted before tracing started."""

# command -> (module under runner.cli, function): imported when it runs
SUBCOMMANDS = {"run": ("run", "run_package"), "push": ("registry", "push_command"),
               "pull": ("registry", "pull_command"), "doctor": ("doctor", "doctor_command")}
DEFAULT = ("trace", "trace")


class OutputError(TcprttError):
    """Writing the output failed (closed, full): exit 1."""


class Output:
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


class Diagnostics:
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


def command_of(argv: list[str]):
    """The function that runs ``argv``: a subcommand's, or tracing's."""
    module, name = SUBCOMMANDS.get(argv[0], DEFAULT) if argv else DEFAULT
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


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
    output = Output(stream if stream is not None else _Closed())
    diagnostics = Diagnostics(err if err is not None else sys.stderr or io.StringIO())
    show_stack = "--traceback" in argv
    # argparse writes --help to sys.stdout and drops an OSError there.
    swapped = out is None
    if swapped:
        sys.stdout = output  # type: ignore[assignment]
    try:
        command = command_of(argv)
        if argv and argv[0] in SUBCOMMANDS:
            argv = argv[1:]
        code = command(argv, output, diagnostics)
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
            import traceback
            traceback.print_exc(file=diagnostics)
        print(f"tcprtt: error: {exc}", file=diagnostics)
        return exc.exit_code
    except TcprttError as exc:
        if isinstance(exc, OutputError):
            _quiet(stream if swapped else None)
        if show_stack:
            import traceback
            traceback.print_exc(file=diagnostics)
        print(f"tcprtt: {exc}", file=diagnostics)
        return exc.exit_code
    finally:
        if swapped:
            sys.stdout = stream
