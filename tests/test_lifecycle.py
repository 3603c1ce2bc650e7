"""Signals, kills, long runs, many connections, and the doctor."""

from __future__ import annotations

import json
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from runner import doctor
from runner.tcprtt import variants

from .conftest import REPO, loaded_programs, ours, programs_left, runner_cmd, runner_env
from .test_cli import BANNER, Tracing
from .traffic import tcp_pair


def test_sigkill_leaves_nothing_in_the_kernel(root):
    before = loaded_programs()
    with Tracing("-B") as t:
        t.wait_attached()
        assert ours(loaded_programs() - before), "the tracer's program is loaded while it runs"
        t.proc.send_signal(signal.SIGKILL)
        t.proc.wait(timeout=5)
    assert not programs_left(before), "nothing pinned, no link outlives the process"
    links = subprocess.run(["bpftool", "link", "show"], capture_output=True, text=True).stdout
    assert "rtt_" not in links


def test_doctor_reports_this_machine():
    facts = doctor.report()
    assert facts["btf"]["present"] is True
    assert re.match(r"^\d+\.\d+$", facts["libbpf"])
    assert list(facts["variants"]) == list(variants.names())
    assert any(v == "supported" for v in facts["variants"].values())
    proc = subprocess.run(runner_cmd("doctor", "--json"), cwd=REPO, env=runner_env(),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["variants"] == facts["variants"]
    text = subprocess.run(runner_cmd("doctor"), cwd=REPO, env=runner_env(),
                          capture_output=True, text=True, timeout=30).stdout
    assert text.startswith("kernel:") and "attach variants" in text


def test_readme_troubleshooting_matches_doctor():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Troubleshooting", 1)[1]
    for label in ("kernel:", "BTF:", "libbpf:", "tracefs:", "capabilities:", "ecli:",
                  "attach variants"):
        assert label in doctor.text(doctor.report())
        assert label in section, label


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _program_run_count(prog_id: int) -> int:
    out = subprocess.run(["bpftool", "prog", "show", "id", str(prog_id), "--json"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["run_cnt"]


@pytest.fixture
def bpf_stats():
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        old = f.read().strip()
    subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"], check=True)
    yield
    subprocess.run(["sysctl", "-qw", f"kernel.bpf_stats_enabled={old}"], check=True)


# ``python -m runner`` with one hook for the soak test: SIGUSR1 detaches the
# runner's programs (links destroyed, maps kept) and says so on stderr. The
# runner's final read then comes after the program's last run, whatever other
# TCP traffic the machine carries meanwhile.
DETACHABLE_RUNNER = r"""
import gc, runpy, signal, sys

def detach(signum, frame):
    from runner.loader.probe import LoadedProbe
    gc.unfreeze()  # the runner freezes what lives between reads; get_objects skips those
    probes = [o for o in gc.get_objects() if isinstance(o, LoadedProbe)]
    for probe in probes:
        probe.detach()
    print(f"test: detached {len(probes)}", file=sys.stderr, flush=True)

signal.signal(signal.SIGUSR1, detach)
runpy.run_module("runner", run_name="__main__", alter_sys=True)
"""


class DetachableRunner:
    """The runner started through DETACHABLE_RUNNER, always stopped by its PID."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-c", DETACHABLE_RUNNER, *args],
                                     cwd=REPO, env=runner_env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.err_lines: list[str] = []
        self._out: list[str] = []
        self._readers = [threading.Thread(target=self._read_stderr, daemon=True),
                         threading.Thread(target=self._read_stdout, daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        self._out.append(self.proc.stdout.read())

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.err_lines.append(line)

    def _wait_line(self, predicate, what: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.err_lines):
                if predicate(line.strip()):
                    return line.strip()
            if self.proc.poll() is not None:
                time.sleep(0.2)  # the reader may still hold the last lines
                break
            time.sleep(0.05)
        for line in list(self.err_lines):
            if predicate(line.strip()):
                return line.strip()
        raise AssertionError(f"runner: no {what}: {''.join(self.err_lines)}")

    def wait_attached(self, timeout: float = 10.0) -> None:
        self._wait_line(lambda line: line == BANNER, "banner", timeout)

    def detach(self, timeout: float = 10.0) -> None:
        self.proc.send_signal(signal.SIGUSR1)
        line = self._wait_line(lambda line: line.startswith("test: detached"), "detach",
                               timeout)
        assert line == "test: detached 1", line

    def finish(self, timeout: float = 20.0) -> tuple[int, str, str]:
        self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=timeout)
        return self.proc.returncode, "".join(self._out), "".join(self.err_lines)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if not stream.closed:
                stream.close()


def _settled_run_count(prog_id: int, tries: int = 50) -> int:
    """The program's run count once it stops moving: runs already under way
    on other CPUs when the link went finish within a grace period."""
    last = _program_run_count(prog_id)
    for _ in range(tries):
        time.sleep(0.2)
        now = _program_run_count(prog_id)
        if now == last:
            return now
        last = now
    raise AssertionError(f"program {prog_id} still runs after its link was destroyed")


def test_soak(root, bpf_stats, request, tmp_path):
    seconds = request.config.getoption("--soak-seconds")
    stop = threading.Event()
    with socket.socket() as free:  # a port free now, for iperf3
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]

    def short_connections():
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.settimeout(1)
            addr = listener.getsockname()
            deadline = time.monotonic() + seconds + 30
            while not stop.is_set() and time.monotonic() < deadline:
                with socket.create_connection(addr, timeout=2) as c:
                    s, _ = listener.accept()
                    with s:
                        c.sendall(b"hello")
                        s.recv(5)
                time.sleep(0.005)

    server = subprocess.Popen(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port), "-1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    churn = threading.Thread(target=short_connections)
    client = None
    with DetachableRunner("-v", "-i", "1", "-e", "--json") as t:
        try:
            t.wait_attached()
            prog_id = int(re.search(r"program id (\d+)", "".join(t.err_lines)).group(1))
            time.sleep(0.3)
            client = subprocess.Popen(["iperf3", "-c", "127.0.0.1", "-p", str(port),
                                       "-t", str(seconds), "-b", "2G"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            churn.start()
            rss = []
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                rss.append(_rss_kb(t.proc.pid))
                time.sleep(1)
        finally:
            stop.set()
            if churn.is_alive():
                churn.join(timeout=10)
            for p in (client, server):
                if p is not None and p.poll() is None:
                    p.terminate()
                    p.wait(timeout=10)
        # Other TCP traffic on the machine runs the program too, so the count
        # is compared where nothing can move it any more: detached, then read.
        t.detach()
        kernel_total = _settled_run_count(prog_id)
        t.proc.send_signal(signal.SIGINT)
        code, out, err = t.finish(timeout=10)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) >= seconds - 2
    for r in records:
        assert sum(r["slots"]) == r["count"], "each interval's slots add up to its count"
    assert kernel_total > seconds * 1000, "iperf3 and the churn ran the program"
    assert sum(r["count"] for r in records) == kernel_total, \
        "the intervals add up to every run of the program: nothing lost between reads"
    stamps = [r["time"] for r in records]
    assert len(set(stamps)) >= len(stamps) - 2, "one summary per interval, never falling behind"
    half = rss[len(rss) // 2:]
    assert max(half) - min(half) < 2048, f"RSS should stay flat: {half}"


def test_many_connections_overflow_the_key_map_and_new_ones_are_counted(root):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 8192), max(hard, 8192)))
    capacity = 256
    conns: list[socket.socket] = []
    with Tracing("-B", "--max-keys", str(capacity), "--json", "-i", "1", "-d", "8",
                 "-v") as t:
        t.wait_attached()
        with socket.create_server(("127.0.0.1", 0), backlog=4096) as listener:
            addr = listener.getsockname()
            try:
                # 1200 connections, each from its own loopback source address:
                # far more remote addresses than keys.
                for i in range(1200):
                    c = socket.socket()
                    c.bind((f"127.9.{i // 250}.{i % 250 + 1}", 0))
                    c.connect(addr)
                    s, _ = listener.accept()
                    conns += [c, s]
                    c.sendall(b"x")
                    s.recv(1)
            finally:
                for s in conns:
                    s.close()
        # After the churn (closing counts too: a FIN is a segment), a
        # connection that talks now has its key, whatever was there before.
        with tcp_pair() as pair:
            pair.exchange(100)
        code, out, err = t.finish(timeout=30)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    by_interval: dict[str, set] = {}
    for r in records:
        by_interval.setdefault(r["time"], set()).add(r["address"])
    assert max(len(keys) for keys in by_interval.values()) <= capacity
    keys = {r["address"] for r in records}
    assert "127.0.0.1" in keys, "a key that talks after the churn is counted"
    # The LRU map gives way to new addresses: the last ones are counted, and
    # the evictions are said.
    assert "127.9.4.200" in keys, "late peers are counted"
    evicted = [int(m) for m in re.findall(r"tcprtt: (\d+) keys evicted", err)]
    assert sum(evicted) >= 1200 - capacity, err
