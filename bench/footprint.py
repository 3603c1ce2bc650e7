"""The runner's footprint from start to tracing: the peak RSS (``VmHWM``)
of the tcprtt process when the banner "Tracing TCP RTT..." appears on
stderr, and which heavy modules a plain trace imported.

    python -m bench.footprint [--runs N] [-- TCPRTT FLAGS]     (as root)

The command runs as ``python -m runner`` (what the ``tcprtt`` script runs);
VmHWM is read from /proc/PID/status right after the banner, so it covers
the imports, loading the package, libbpf's BTF work and attaching. The
median of the runs is printed; the target is 30 MB.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BANNER = "Tracing TCP RTT"
TARGET_KB = 30 * 1024
# Modules that a plain trace must not import: each is a megabyte or more.
HEAVY = ("requests", "urllib3", "wasmtime", "jsonschema", "runner.exporter", "runner.build",
         "runner.registry", "runner.oci")

# The command as ``python -m runner`` runs it, printing the heavy modules
# it imported to a pipe once it returns (never to its own stdout or stderr).
_REPORT = r"""
import os, sys
report, watched = int(sys.argv.pop(1)), sys.argv.pop(1).split(",")
sys.argv[0] = "tcprtt"
from runner.__main__ import entry
code = entry()
os.write(report, (",".join(m for m in watched if m in sys.modules) + "\n").encode())
sys.exit(code)
"""


def _status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _wait_banner(proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    seen = b""
    fd = proc.stderr.fileno()  # type: ignore[union-attr]
    while BANNER.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise RuntimeError(f"no banner from tcprtt: {seen.decode(errors='replace')!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"tcprtt ended: {seen.decode(errors='replace')!r}")
            seen += chunk


def measure(flags: list[str], timeout: float = 30.0) -> tuple[int, int, list[str]]:
    """(VmHWM, VmRSS) in kB at the banner, and the heavy modules imported."""
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", _REPORT, str(write_end), ",".join(HEAVY),
                             *flags], cwd=REPO, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            pass_fds=(write_end,), env=dict(os.environ, PYTHONPATH=str(REPO)))
    os.close(write_end)
    try:
        _wait_banner(proc, timeout)
        hwm, rss = _status(proc.pid, "VmHWM"), _status(proc.pid, "VmRSS")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=timeout)
        with os.fdopen(read_end, "rb") as report:
            read_end = -1
            heavy = report.read().decode().split()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if read_end >= 0:
            os.close(read_end)
        proc.stderr.close()  # type: ignore[union-attr]
    return hwm, rss, (heavy[0].split(",") if heavy else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs (default 5)")
    parser.add_argument("flags", nargs="*", help="tcprtt's flags (default: none)")
    args = parser.parse_args(argv)
    results = [measure(args.flags) for _ in range(max(1, args.runs))]
    hwm = statistics.median(r[0] for r in results)
    rss = statistics.median(r[1] for r in results)
    heavy = sorted({m for r in results for m in r[2]})
    ok = hwm <= TARGET_KB
    print(f"tcprtt {' '.join(args.flags)}".rstrip())
    low, high = min(r[0] for r in results), max(r[0] for r in results)
    print(f"  peak RSS start to tracing (VmHWM): {hwm / 1024:.1f} MB, median of {len(results)} "
          f"({low / 1024:.1f} to {high / 1024:.1f}) (target <= {TARGET_KB // 1024}): "
          f"{'met' if ok else 'NOT met'}")
    print(f"  RSS at the banner: {rss / 1024:.1f} MB")
    print(f"  heavy modules imported: {', '.join(heavy) or 'none'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
