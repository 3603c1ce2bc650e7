"""Keys that age: with more peers than --max-keys, the key map gives way to
the new ones (an LRU map), evictions are counted, and a key that comes back
starts again without a negative count anywhere.

Peers are loopback addresses 127.0.0.10 .. 127.0.0.N (all of 127/8 is on
lo): each client binds its own address and talks to a server on 127.0.0.1,
and a filter on the server's port keeps the keys to those clients."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner import package
from runner.build import host_arch
from runner.tcprtt import variants
from runner.tcprtt.keys import key_address
from runner.tracer import LibbpfTracer
from tests.conftest import runner_cmd, runner_env
from tests.traffic import free_port

MAX_KEYS = 4
PEERS = [f"127.0.0.{i}" for i in range(10, 22)]  # 12 peers, three times --max-keys


def _variant() -> str:
    for name in variants.names():
        if variants.check(name) is None:
            return name
    pytest.fail("no variant runs on this kernel")


@contextmanager
def _server(port: int):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(16)
        listener.settimeout(5)
        yield listener
    finally:
        listener.close()


def talk(listener: socket.socket, peer: str, rounds: int = 50) -> None:
    """``rounds`` request/response pairs from a client bound to ``peer``."""
    client = server = None
    try:
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.settimeout(5)
        client.bind((peer, 0))
        client.connect(listener.getsockname())
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server, _ = listener.accept()
        server.settimeout(5)
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(rounds):
            client.sendall(b"x" * 32)
            got = 0
            while got < 32:
                got += len(server.recv(32 - got))
            server.sendall(b"y")
            client.recv(1)
    finally:
        for s in (client, server):
            if s is not None:
                s.close()


def test_late_peers_are_counted_and_evictions_shown(root):
    variant = _variant()
    pkg = package.load(package.shipped(variant, host_arch()))
    port = free_port()
    values = {"targ_raddr_hist": True, "targ_sport": port, "targ_percpu": True}
    with _server(port) as listener, \
            LibbpfTracer(pkg, values, variant, max_keys=MAX_KEYS) as tracer:
        assert tracer.probe.max_entries("hists") == MAX_KEYS
        for i, peer in enumerate(PEERS):
            talk(listener, peer)
            keys = {key_address(h.key): h.total for h in tracer.snapshot()}
            # The peer that just talked is always there, with its samples:
            # it took the place of a quiet one.
            assert keys.get(peer, 0) >= 50, (peer, keys)
            assert len(keys) <= MAX_KEYS
            assert tracer.evictions() >= i + 1 - MAX_KEYS
        assert tracer.dropped() == 0
        # Every peer past the capacity made room: at least 8 evictions, and
        # the count is what was added less what is present.
        assert tracer.evictions() >= len(PEERS) - MAX_KEYS
        present = len(tracer.snapshot())
        added = tracer.probe.read_counter("new_keys")
        assert tracer.evictions() == added - present >= len(PEERS) - MAX_KEYS


def test_a_key_that_comes_back_restarts_without_a_negative_count(root):
    """Through the command line: JSON intervals while peers churn, and the
    first peer comes back after the churn; no interval is negative."""
    port = free_port()
    cmd = runner_cmd("-B", "--max-keys", str(MAX_KEYS), "-p", str(port), "-i", "1",
                     "--json", "-v")
    with _server(port) as listener:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=runner_env(), text=True)
        try:
            _wait_for_banner(proc)
            talk(listener, PEERS[0], 400)  # many samples: its count is high when evicted
            time.sleep(1.2)
            # Two new peers an interval: each is read before it could give way.
            late = PEERS[1:]
            for at in range(0, len(late), 2):
                for peer in late[at:at + 2]:
                    talk(listener, peer)
                time.sleep(1.1)
            talk(listener, PEERS[0], 20)  # back, with fewer samples than before
            time.sleep(1.5)
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    for r in records:
        assert r["count"] >= 0 and min(r["slots"]) >= 0, r
    first = [r["count"] for r in records if r["address"] == PEERS[0]]
    assert first[0] >= 400 and first[-1] >= 20, first
    late = {r["address"] for r in records}
    assert set(PEERS) <= late, f"late peers missing: {sorted(set(PEERS) - late)}"
    assert "keys evicted" in err, err


def _wait_for_banner(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if "Tracing" in line:
            return
    proc.kill()
    pytest.fail(f"no banner: {''.join(lines)}")


def test_the_exporter_counts_evictions_and_serves_late_peers(root):
    port, metrics_port = free_port(), free_port()
    cmd = runner_cmd("-B", "--max-keys", str(MAX_KEYS), "-p", str(port),
                     "--prometheus", str(metrics_port))
    with _server(port) as listener:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=runner_env(), text=True)
        try:
            _wait_for_banner(proc)
            for peer in PEERS:
                talk(listener, peer)
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                        timeout=10) as resp:
                body = resp.read().decode()
        finally:
            proc.terminate()
            proc.communicate(timeout=20)
    evicted = [line for line in body.splitlines() if line.startswith("tcprtt_evictions_total ")]
    assert evicted and float(evicted[0].split()[1]) >= len(PEERS) - MAX_KEYS, body
    assert f'remote_address="{PEERS[-1]}"' in body
    served = {line.split('remote_address="')[1].split('"')[0]
              for line in body.splitlines() if line.startswith("tcp_srtt_seconds_count{")}
    assert len(served) <= MAX_KEYS, served  # evicted keys' series are gone


# Pure: intervals and the exposition of a key that started again -------------------

def test_an_interval_of_a_restarted_key_is_what_it_holds():
    from runner.histogram import Hist, Intervals
    steps = Intervals()
    key = b"\x02\x00\x7f\x00\x00\x0a" + bytes(12)
    steps.step([Hist(key, (0, 5, 400), 9000, 405)])
    # Evicted, then added again: lower than the last read in some slot.
    again = Hist(key, (0, 7, 13), 300, 20)
    assert steps.step([again]) == [again]
    # Lower in the sum and count alone (the slots happen to have grown).
    steps = Intervals()
    steps.step([Hist(key, (1, 1), 900, 2)])
    again = Hist(key, (2, 2), 40, 4)
    assert steps.step([again]) == [again]
    # Growing as usual, it is the difference.
    later = Hist(key, (2, 3), 50, 5)
    assert steps.step([later])[0] == Hist(key, (0, 1), 10, 1)


@given(st.lists(st.lists(st.integers(0, 50), min_size=3, max_size=3), min_size=1,
                max_size=12),
       st.lists(st.booleans(), min_size=12, max_size=12))
def test_intervals_are_never_negative(adds, restarts):
    """Any run of reads, the key restarting (its counts to zero) anywhere:
    no interval counts below zero, and a restart loses only what came
    between the last read and the eviction."""
    from runner.histogram import Hist, Intervals
    steps = Intervals()
    held = [0, 0, 0]
    for add, restart in zip(adds, restarts):
        if restart:
            held = [0, 0, 0]
        held = [h + a for h, a in zip(held, add)]
        (out,) = steps.step([Hist(b"k", tuple(held), sum(held), sum(held))])
        assert min(out.slots) >= 0 and out.cnt >= 0 and out.latency >= 0
        if not restart:
            assert list(out.slots) == add


def test_the_exposition_passes_a_restart_on_as_a_counter_reset():
    """The exporter serves the kernel's cumulative counts as they are: a key
    evicted and added again serves lower counts, which Prometheus takes for a
    counter reset, and the evictions counter says why."""
    from prometheus_client.exposition import generate_latest

    from runner.histogram import Hist
    from runner.render import prometheus as render
    key = b"\x02\x00\x7f\x00\x00\x0a" + bytes(12)

    def served(hist, evictions):
        others = render.probe_metrics("raw_tp", "raw_tp/tcp_probe", 0, 1, 4, evictions)
        text = render.exposition([hist], "remote_address", key_address, others,
                                 generate_latest).decode()
        return {line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
                for line in text.splitlines() if line and not line.startswith("#")}

    before = served(Hist(key, (0,) * 10 + (400,) + (0,) * 16, 9000, 400), 0)
    after = served(Hist(key, (0,) * 10 + (20,) + (0,) * 16, 450, 20), 3)
    count = 'tcp_srtt_seconds_count{remote_address="127.0.0.10"}'
    assert before[count] == 400 and after[count] == 20
    assert after["tcprtt_evictions_total"] == 3 and before["tcprtt_evictions_total"] == 0


def test_a_real_prometheus_takes_a_key_that_came_back_for_a_counter_reset(root, tmp_path):
    from .test_cli import Tracing
    from .test_prometheus import Prometheus
    port, metrics_port = free_port(), free_port()
    first = PEERS[0]
    count = f'tcp_srtt_seconds_count{{remote_address="{first}"}}'
    with _server(port) as listener, \
            Tracing("-B", "--max-keys", str(MAX_KEYS), "-p", str(port),
                    "--prometheus", f"127.0.0.1:{metrics_port}", "-d", "60") as exporter:
        exporter.wait_attached()
        prom = Prometheus(tmp_path, f"127.0.0.1:{metrics_port}")
        try:
            talk(listener, first, 400)
            prom.wait_for(f"{count} >= 400")
            # New peers until the first one's key has given way. The kernel's
            # LRU is approximate: a key that was busy outlives a few keys that
            # were used less, so this takes more than MAX_KEYS new peers.
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            for batch in range(20):
                for i in range(10):
                    talk(listener, f"127.0.{batch + 1}.{i + 1}", 20)
                with urllib.request.urlopen(url, timeout=10) as resp:
                    if f'remote_address="{first}"' not in resp.read().decode():
                        break
            else:
                pytest.fail(f"{first} kept its key through 200 new peers")
            prom.wait_for(f"tcprtt_evictions_total >= {10 - MAX_KEYS}")
            time.sleep(1.5)  # a scrape without the first peer
            talk(listener, first, 20)  # back: its count starts again, below 400
            prom.wait_for(f"{count} < 400")
            resets = prom.wait_for(f"resets({count}[5m])")
            assert float(resets[0]["value"][1]) == 1, resets
            # increase() counts the samples since the restart, never less.
            grown = prom.wait_for(f"increase({count}[5m])")
            assert float(grown[0]["value"][1]) >= 20, grown
        finally:
            prom.close()
            exporter.proc.send_signal(2)
        code, _, err = exporter.finish()
    assert code == 0, err
