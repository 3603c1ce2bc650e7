"""The shipped packages in eunomia's own C++ loader (shared/tools/eunomia/
refloader): it counts what the runner counts, prints the unkeyed histogram
(a walk from an all-zero key would miss key 0), and sets the IPv6 filters.

refloader and the runner are two loads of the same probe, attached at once,
seeing the same loopback segments. Their counts differ only by samples that
arrive while one is attached or reading and the other not: the runner is
started first and stopped last, so its window holds refloader's, and
0 <= runner - refloader must hold exactly. The difference comes from other
TCP traffic on the machine (other tests, other tools) in the two gaps: the
runner's attach to refloader's, refloader's last read to the runner's last.
The test places both gaps in the runner's quiet intervals (wholly before the
test's traffic, or wholly after it), so the tolerance is what the runner
itself counted in those intervals: on an idle machine, zero.
"""

from __future__ import annotations

import ipaddress
import json
import re
import signal
import subprocess
import threading
import time

import pytest

from runner import features, package
from runner.build import host_arch
from runner.tcprtt import variants
from runner.tcprtt.keys import KEY_FAMILY_ALL, ipv6_halves

from .conftest import REPO, runner_cmd, runner_env, shared_file
from .traffic import tcp_pair

VARIANTS = variants.names()
ROUNDS = 300
INTERVAL = 1.0  # both read every second: refloader at the package's 1000 ms, the runner -i 1
FAMILIES = {KEY_FAMILY_ALL: "all", 2: "ipv4", 10: "ipv6"}
ROW = re.compile(r"^\s*\d+\s*->\s*\d+\s*:\s*(\d+)\s*\|")


def refloader_path() -> str:
    return str(shared_file("tools/eunomia/refloader"))


def runnable(variant: str) -> None:
    reason = features.check(variant)
    if reason is not None:
        pytest.skip(f"this kernel lacks {variant}: {reason}")


class Child:
    """A child process whose output lines are kept with their arrival time;
    stopped by its own PID, SIGINT first."""

    def __init__(self, argv: list[str], **kwargs):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, **kwargs)
        self.out: list[tuple[float, str]] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, True),
                                          daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, False),
                                          daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, timed: bool) -> None:
        for line in stream:
            if timed:
                self.out.append((time.monotonic(), line.rstrip("\n")))
            else:
                self.err.append(line.rstrip("\n"))

    def wait_err(self, text: str, timeout: float = 15.0) -> float:
        """Wait for a line on stderr; returns when it was seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in list(self.err)):
                return time.monotonic()
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"{self.proc.args[0]}: no {text!r} on stderr: "
                             + "\n".join(self.err[-20:]))

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()


def start_refloader(pkg: str, *flags: str) -> Child:
    # refloader prints with stdio: line-buffered through stdbuf, each block
    # arrives when it is read, not at the next flush.
    child = Child(["stdbuf", "-oL", refloader_path(), pkg, *flags])
    child.wait_err("loaded and attached")
    return child


def refloader_blocks(lines: list[tuple[float, str]]) -> list[tuple[float, str, int]]:
    """(arrival, family, count) of each printed histogram: `key = <family>
    ...`, then its rows `low -> high : count |...|`."""
    blocks: list[list] = []
    for when, line in lines:
        if line.startswith("key ="):
            family = int(line.split("=", 1)[1].split()[0])
            blocks.append([when, FAMILIES.get(family, str(family)), 0])
        elif blocks and (m := ROW.match(line)):
            blocks[-1][2] += int(m.group(1))
    return [tuple(b) for b in blocks]  # type: ignore[misc]


def runner_records(lines: list[tuple[float, str]]) -> list[tuple[float, str, int]]:
    """(arrival, family, count) of each interval record of ``--json``."""
    out = []
    for when, line in lines:
        if line.startswith("{"):
            r = json.loads(line)
            out.append((when, r["family"] or "all", r["count"]))
    return out


def drive_traffic() -> None:
    for host in ("127.0.0.1", "::1"):
        with tcp_pair(host) as pair:
            assert pair.exchange(ROUNDS) == ROUNDS


@pytest.mark.parametrize("flags", [(), ("--raddr-hist",), ("--laddr-hist",)],
                         ids=["unkeyed", "raddr-hist", "laddr-hist"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_refloader_counts_what_the_runner_counts(root, variant, flags):
    runnable(variant)
    pkg = str(package.shipped(variant, host_arch()))
    runner = Child(runner_cmd("--json", "--package", pkg, "-i", "1", *flags),
                   cwd=REPO, env=runner_env())
    loader = None
    try:
        runner.wait_err("Tracing TCP RTT")
        loader = start_refloader(pkg, *flags)
        # The runner's interval holding refloader's attach ends before the traffic.
        time.sleep(INTERVAL + 0.5)
        traffic_start = time.monotonic()
        drive_traffic()
        traffic_end = time.monotonic()
        # refloader's last read: one whose previous interval began after the traffic.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            late = [b for b in refloader_blocks(loader.out) if b[0] >= traffic_end + 1.2]
            if late:
                break
            time.sleep(0.05)
        loader.stop()
        last_read = max(b[0] for b in refloader_blocks(loader.out))
        runner.stop()  # the runner's last read comes after refloader's
    finally:
        for child in (loader, runner):
            if child is not None:
                child.stop()
    assert runner.proc.returncode == 0, "\n".join(runner.err)
    assert last_read >= traffic_end + 1.2, "refloader read nothing after the traffic"

    # refloader's counts are cumulative: its last read, summed by family
    # (other traffic may add keys of either family).
    theirs: dict[str, int] = {}
    for when, family, count in refloader_blocks(loader.out):
        if when >= last_read - 0.1:
            theirs[family] = theirs.get(family, 0) + count
    ours: dict[str, int] = {}
    quiet: dict[str, int] = {}
    for when, family, count in runner_records(runner.out):
        ours[family] = ours.get(family, 0) + count
        if when < traffic_start or when >= last_read - 0.1:
            quiet[family] = quiet.get(family, 0) + count
    expected = {"all"} if not flags else {"ipv4", "ipv6"}
    assert expected <= set(theirs), f"refloader printed {theirs}"
    for family in expected:
        mine, its, tolerance = ours.get(family, 0), theirs[family], quiet.get(family, 0)
        assert its >= 2 * ROUNDS * (2 if family == "all" else 1), (family, its)
        assert 0 <= mine - its <= tolerance, \
            f"{variant} {flags} {family}: runner {mine}, refloader {its}, " \
            f"other traffic in the gaps at most {tolerance}"


def test_refloader_sets_the_ipv6_filter(root):
    """The IPv6 filter halves are types refloader parses: ::1 keeps only ::1,
    and fe80::1 (the same last half; a first half of 2^63 or more) keeps
    nothing, its value reaching .rodata in full."""
    variant = "raw_tp" if features.check("raw_tp") is None else "tracepoint"
    runnable(variant)
    pkg = str(package.shipped(variant, host_arch()))
    loopback = ipv6_halves(ipaddress.IPv6Address("::1"))
    link_local = ipv6_halves(ipaddress.IPv6Address("fe80::1"))
    assert link_local[0] >= 1 << 63 and link_local[1] == loopback[1]
    kept = dropped = None
    try:
        kept = start_refloader(pkg, "--raddr-hist", "--raddr6-hi", str(loopback[0]),
                               "--raddr6-lo", str(loopback[1]))
        dropped = start_refloader(pkg, "--verbose", "--raddr-hist",
                                  "--raddr6-hi", str(link_local[0]),
                                  "--raddr6-lo", str(link_local[1]))
        drive_traffic()
        traffic_end = time.monotonic()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(b[0] >= traffic_end for b in refloader_blocks(kept.out)):
                break
            time.sleep(0.05)
        time.sleep(0.2)  # ``dropped`` read at the same second
    finally:
        for child in (kept, dropped):
            if child is not None:
                child.stop()
    for child in (kept, dropped):
        assert not [line for line in child.err if "unknown type" in line or "Error" in line]
    last = {family: count for _, family, count in refloader_blocks(kept.out)}
    assert set(last) == {"ipv6"}, f"only ::1 passes the filter: {last}"
    assert last["ipv6"] >= 2 * ROUNDS
    assert refloader_blocks(dropped.out) == [], "fe80::1 matches no loopback socket"
    assert f"load runtime arg for targ_daddr_v6_hi: {link_local[0]}" in "\n".join(dropped.err)
