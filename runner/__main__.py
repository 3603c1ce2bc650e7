"""``python -m runner`` and the ``tcprtt`` command.

No signal and no closed descriptor may end the command with a traceback, so
before the runner's (slow) imports ``entry`` installs its handlers for
SIGINT, SIGTERM and SIGHUP (the first one exits 130 at once, as one before
tracing starts does later; ``main`` takes over from them) and puts /dev/null
on whichever of descriptors 0, 1 and 2 is closed, so that no file the runner
opens later becomes its stdout or stderr.
"""

import os
import signal
import sys

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
INTERRUPTED = 130
_exiting = False


def _interrupted(signum, frame):
    global _exiting
    if _exiting:  # one exit is under way: later signals change nothing
        return
    _exiting = True
    raise SystemExit(INTERRUPTED)


def _standard_descriptors() -> None:
    """/dev/null on a closed 0, 1 or 2. A closed stderr is /dev/null from
    here on; a closed stdout stays None in sys.stdout, and the command says
    that it cannot write there (exit 1) when it has something to write."""
    for fd, mode in ((0, os.O_RDONLY), (1, os.O_WRONLY), (2, os.O_WRONLY)):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, mode)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdin is None:
        sys.stdin = open(os.devnull)
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")


def _flushed(code):
    """Flush stdout before the interpreter does: writing what argparse left
    there (--help) may fail, which is one line and exit 1 too."""
    if sys.stdout is None:
        return code
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = 128 + signal.SIGPIPE
    except OSError as exc:
        try:
            print(f"tcprtt: cannot write the output: {exc.strerror or exc}", file=sys.stderr)
        except OSError:
            pass
        code = 1
    else:
        return code
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError):
        pass
    return code


def entry() -> int:
    for s in STOP_SIGNALS:
        signal.signal(s, _interrupted)
    try:
        _standard_descriptors()
        from .cli.main import main
        code = main(exiting=True)
    except SystemExit as exc:  # --help, --version, or a signal during the imports
        code = exc.code
    for s in STOP_SIGNALS:  # the status is chosen: no signal changes it now
        signal.signal(s, signal.SIG_IGN)
    return _flushed(code)


if __name__ == "__main__":
    sys.exit(entry())
