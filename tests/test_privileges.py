"""Tracing as a user other than root: CAP_BPF and CAP_PERFMON suffice for
the variants that need no tracefs; without them, or without tracefs, one
line says why."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from .conftest import REPO, runner_env

BANNER = "Tracing TCP RTT... Hit Ctrl-C to end."
NOBODY = ["--reuid=65534", "--regid=65534", "--clear-groups"]
WITH_CAPS = NOBODY + ["--inh-caps=-all,+bpf,+perfmon", "--ambient-caps=+bpf,+perfmon",
                      "--bounding-set=-all,+bpf,+perfmon"]
WITHOUT_CAPS = NOBODY + ["--inh-caps=-all", "--bounding-set=-all"]


def _setpriv() -> str:
    path = shutil.which("setpriv")
    if path is None:
        pytest.skip("needs setpriv(1)")
    return path


def as_nobody(flags: list[str], *args: str, timeout: float = 60,
              prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``python -m runner ARGS`` as uid 65534 with these setpriv flags."""
    return subprocess.run([*prefix, _setpriv(), *flags, sys.executable, "-m", "runner", *args],
                          cwd=REPO, env=runner_env(), capture_output=True, text=True,
                          timeout=timeout)


def one_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_a_user_with_cap_bpf_and_cap_perfmon_traces_with_raw_tp(root):
    proc = as_nobody(WITH_CAPS, "-d", "1", "-v")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "tcprtt: attached with the raw_tp variant" in proc.stderr, proc.stderr
    assert BANNER in proc.stderr
    assert "All Addresses = ****** " in proc.stdout
    # and the tracepoint variant is refused in one line, not a crash
    proc = as_nobody(WITH_CAPS, "--attach", "tracepoint", "-d", "1")
    assert proc.returncode == 1
    assert "not readable by this user" in one_line(proc)


def test_doctor_as_a_user_without_capabilities_says_what_is_needed(root):
    proc = as_nobody(WITHOUT_CAPS, "doctor")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "capabilities:  none (tracing needs CAP_BPF and CAP_PERFMON, or root)" in proc.stdout
    assert "not readable by this user" in proc.stdout
    assert "user:          uid 65534, not root" in proc.stdout
    assert "raw_tp      supported" in proc.stdout
    proc = as_nobody(WITHOUT_CAPS, "doctor", "--json")
    assert proc.returncode == 0 and proc.stderr == ""


@pytest.mark.parametrize("backend", ["libbpf", "ecli"])
def test_a_user_without_capabilities_is_told_in_one_line(root, backend):
    proc = as_nobody(WITHOUT_CAPS, "--backend", backend, "-d", "1")
    assert proc.returncode == 1
    assert one_line(proc) == ("tcprtt: missing capability CAP_BPF and CAP_PERFMON: run as "
                              "root, or grant CAP_BPF and CAP_PERFMON")


# In a private mount namespace without tracefs or debugfs, and with no mount
# binary on the PATH, a user who may not mount asks for the tracepoint variant.
UNMOUNTED = r"""
import ctypes, os, subprocess, sys

libc = ctypes.CDLL(None, use_errno=True)
for _ in range(20):
    with open("/proc/self/mountinfo") as f:
        rows = [line.split() for line in f]
    points = [r[4] for r in rows if r[r.index("-") + 1] in ("tracefs", "debugfs")]
    if not points:
        break
    for point in sorted(points, key=len, reverse=True):
        if libc.umount2(point.encode(), 2) != 0:
            sys.exit(f"umount {point}: {os.strerror(ctypes.get_errno())}")
env = dict(os.environ, PATH="/nonexistent")
proc = subprocess.run(sys.argv[1:], env=env, capture_output=True, text=True, timeout=60)
sys.stdout.write(proc.stdout)
sys.stderr.write(proc.stderr)
sys.exit(proc.returncode)
"""


def test_tracefs_that_this_user_cannot_mount_is_one_line(root):
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare(1)")
    argv = [_setpriv(), *WITH_CAPS, sys.executable, "-m", "runner"]
    base = [unshare, "--mount", "--propagation", "private", sys.executable, "-c", UNMOUNTED]
    proc = subprocess.run([*base, *argv, "--attach", "tracepoint", "-d", "1"], cwd=REPO,
                          env=runner_env(), capture_output=True, text=True, timeout=90)
    assert proc.returncode == 1, proc.stderr
    line = one_line(proc)
    assert line.startswith("tcprtt: --attach tracepoint is not available (tracepoint: "), line
    assert "tracefs is not mounted and could not be mounted" in line
    # raw_tp needs no tracefs
    proc = subprocess.run([*base, *argv, "-d", "1"], cwd=REPO, env=runner_env(),
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert BANNER in proc.stderr

