"""Shared test helpers: root checks, leftover checks, shared fixtures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Fixtures and tools kept beside the repository on the project's machines.
SHARED = REPO.parent / "shared"


def _program_names() -> tuple[str, ...]:
    """The programs of every shipped variant, by name, as bpftool shows them."""
    from runner.build import host_arch
    from runner.package import shipped
    from runner.tcprtt import variants
    names = []
    for variant in variants.names():
        doc = json.loads(shipped(variant, host_arch()).read_text())
        names += [prog["name"] for prog in doc["meta"]["bpf_skel"]["progs"]]
    return tuple(names)


PROGRAM_NAMES = _program_names()


def _ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def shared_file(relpath: str) -> Path:
    """A file under ../shared, or the test stops: skipped with the missing
    path named, except under CI, where a missing file fails the test. The
    hosted GitHub workflow has no ../shared at all and skips."""
    path = SHARED / relpath
    if path.exists():
        return path
    reason = f"shared file {path} is missing"
    if _ci() and not os.environ.get("GITHUB_ACTIONS"):
        pytest.fail(f"{reason} (CI must run every test)")
    pytest.skip(reason)


def runqlat() -> Path:
    """The real ecc-built package (shared/fixtures/eunomia/runqlat.json)."""
    return shared_file("fixtures/eunomia/runqlat.json")


def _need_root() -> None:
    if os.geteuid() != 0:
        if _ci():
            pytest.fail("CI runs as root; these tests must not be skipped there")
        pytest.skip("needs root to load BPF programs")


@pytest.fixture
def root():
    """For tests that load BPF: root is required, and nothing this test's
    processes loaded may be left loaded."""
    _need_root()
    before = loaded_programs()
    yield
    leftover = programs_left(before)
    assert not leftover, f"BPF programs left loaded: {sorted(leftover)}"


def programs_left(before: set[str], wait: float = 3.0) -> set[str]:
    """Programs of ours loaded since ``before`` that are still there after
    ``wait`` seconds: the kernel frees a closed program after an RCU grace
    period. Other tracers on the machine (another terminal, a DaemonSet,
    another test run) load programs of the same names meanwhile; see
    ``ours``."""
    deadline = time.monotonic() + wait
    foreign: set[str] = set()
    while True:
        new = loaded_programs() - before - foreign
        mine, others = _split(new)
        foreign |= others
        if not mine or time.monotonic() > deadline:
            return mine
        time.sleep(0.05)


def ours(programs: set[str]) -> set[str]:
    """Those of ``programs`` ("id name", as loaded_programs gives) that this
    test run holds, or that nobody holds (left behind: a program outlives
    its last holder only until the RCU grace period ends)."""
    return _split(programs)[0]


def _split(programs: set[str]) -> tuple[set[str], set[str]]:
    """(ours, held by someone else only)."""
    if not programs:
        return set(), set()
    family = _descendants(os.getpid())  # first: a holder that exits meanwhile holds nothing
    holders = program_holders()
    mine, others = set(), set()
    for entry in programs:
        pids = holders.get(int(entry.split()[0]), set())
        (mine if not pids or pids & family else others).add(entry)
    return mine, others


def loaded_programs() -> set[str]:
    """ids and names of this project's programs loaded by anyone, as bpftool
    shows them: "id name"."""
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True,
                         text=True, check=True).stdout
    found = set()
    for prog in json.loads(out or "[]"):
        name = prog.get("name", "")
        if name in PROGRAM_NAMES or name.startswith("handle_sched"):
            found.add(f"{prog['id']} {name}")
    return found


def program_holders() -> dict[int, set[int]]:
    """Program id -> pids holding it through a program or link descriptor.
    bpftool shows owners only when it was built with its BPF skeletons, so
    every process's fdinfo is read instead (root reads them all)."""
    holders: dict[int, set[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # gone, or a kernel thread
            continue
        for fd in fds:
            try:
                if not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("anon_inode:bpf"):
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    info = f.read()
            except OSError:
                continue
            for line in info.splitlines():  # bpf-prog and bpf_link both name it
                if line.startswith("prog_id:"):
                    holders.setdefault(int(line.split()[1]), set()).add(pid)
                    break
    return holders


def _descendants(pid: int) -> set[int]:
    """``pid`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = {pid}, [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
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
