"""``python -m runner`` and the ``tcprtt`` command.

Ctrl-C must not print a traceback at any point, so the SIGINT handler goes in
before the runner's (slow) imports: until ``main`` takes over, an interrupt
exits 130 at once, as one before tracing starts does later.
"""

import signal
import sys


def _interrupted(signum, frame):
    raise SystemExit(130)


def entry() -> int:
    signal.signal(signal.SIGINT, _interrupted)
    from .run import main
    return main()


if __name__ == "__main__":
    sys.exit(entry())
