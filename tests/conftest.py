"""Shared test helpers: root checks, leftover checks, loopback traffic."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURE_RUNQLAT = REPO.parent / "shared" / "fixtures" / "eunomia" / "runqlat.json"


def runqlat() -> Path:
    """The real ecc-built package, which lives beside the repository (shared/)
    on the project's machines; hosted CI has no copy and skips what needs it."""
    if not FIXTURE_RUNQLAT.exists():
        if os.environ.get("GITHUB_ACTIONS"):
            pytest.skip("the shared ecc-built fixture is not in the repository")
        pytest.fail(f"{FIXTURE_RUNQLAT} is missing")
    return FIXTURE_RUNQLAT
PROGRAM_NAMES = ("rtt_fentry", "rtt_kprobe", "rtt_raw_tp", "rtt_tp")


def _need_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root; these tests must not be skipped there")
        pytest.skip("needs root to load BPF programs")


@pytest.fixture
def root():
    """For tests that load BPF: root is required, and nothing may be left loaded."""
    _need_root()
    before = loaded_programs()
    yield
    leftover = programs_left(before)
    assert not leftover, f"BPF programs left loaded: {sorted(leftover)}"


def programs_left(before: set[str], wait: float = 3.0) -> set[str]:
    """Programs loaded since ``before`` that are still there after ``wait``
    seconds: the kernel frees a closed program after an RCU grace period."""
    deadline = time.monotonic() + wait
    while True:
        left = loaded_programs() - before
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def loaded_programs() -> set[str]:
    """ids and names of this project's programs, as bpftool shows them."""
    out = subprocess.run(["bpftool", "prog", "show"], capture_output=True, text=True,
                         check=True).stdout
    found = set()
    for line in out.splitlines():
        if ":" in line and ("name" in line):
            parts = line.split()
            if "name" in parts:
                name = parts[parts.index("name") + 1]
                if name in PROGRAM_NAMES or name.startswith("handle_sched"):
                    found.add(f"{parts[0]} {name}")
    return found


def runner_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "runner", *args]


def runner_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def pytest_addoption(parser):
    parser.addoption("--soak-seconds", type=int, default=90,
                     help="length of the soak test (default 90 s; longer for a real soak)")
