"""The exporter under hostile and heavy load, on loopback, with a synthetic
tracer (no BPF): slow and idle clients are cut, excess connections neither
starve a scrape nor make the exporter spin, crowds of scrapers are all
served, and scrapes arriving together share one rendering."""

from __future__ import annotations

import resource
import socket
import time

import pytest

from bench.exporter import PLAIN_REQUEST, PROMETHEUS_REQUEST, Child, FakeTracer, scrape_many
from runner import exporter as exporter_module
from runner.exporter import Exporter

LIMITED = ("prlimit", "--nofile=256")


@pytest.fixture(scope="module", autouse=True)
def enough_descriptors():
    """This process opens several hundred sockets at once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 4096) if hard != resource.RLIM_INFINITY else 4096
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (EOF or reset waiting), without blocking."""
    sock.setblocking(False)
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def open_idle(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that never send a byte (connects may still be
    queued in the listen backlog when this returns)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def test_a_slowloris_and_an_idle_connection_are_cut_at_the_request_deadline():
    deadline = exporter_module.REQUEST_TIMEOUT
    exporter = Exporter(FakeTracer(10), ("127.0.0.1", 0), "remote_address")
    port = exporter.address[1]
    drip = socket.create_connection(("127.0.0.1", port), timeout=5)
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        started = time.monotonic()
        head = b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 1000
        cut = cut_idle = None
        scraped = False
        for i in range(len(head)):   # one byte each 0.2 s: never the whole head
            if time.monotonic() - started > deadline + 3:
                break
            try:
                drip.send(head[i:i + 1])
            except OSError:
                pass
            if cut is None and closed_by_peer(drip):
                cut = time.monotonic() - started
            if cut_idle is None and closed_by_peer(idle):
                cut_idle = time.monotonic() - started
            if cut is not None and cut_idle is not None:
                break
            if not scraped and time.monotonic() - started > deadline / 2:
                got, failed = scrape_many(port, 1, 1, timeout=5)  # served meanwhile
                assert (len(got), failed) == (1, 0)
                scraped = True
            time.sleep(0.2)
        assert scraped
        assert cut is not None and deadline - 0.5 <= cut <= deadline + 1.0, cut
        assert cut_idle is not None and deadline - 0.5 <= cut_idle <= deadline + 1.0, cut_idle
    finally:
        drip.close()
        idle.close()
        exporter.close()


def test_a_client_that_never_reads_its_response_is_cut_at_the_response_deadline():
    exporter = Exporter(FakeTracer(10240), ("127.0.0.1", 0), "remote_address",
                        response_timeout=1.0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(exporter.address)
        sock.sendall(PLAIN_REQUEST)
        waited = time.monotonic()
        while not exporter._conns and time.monotonic() - waited < 5:  # accepted
            time.sleep(0.01)
        while exporter._conns and time.monotonic() - waited < 10:  # render, then 1 s
            time.sleep(0.05)
        assert not exporter._conns
        assert time.monotonic() - waited >= 1.0
        received = 0
        sock.settimeout(5)
        try:
            while received < 30_000_000:
                data = sock.recv(1 << 20)
                if not data:
                    break
                received += len(data)
        except OSError:
            pass
        assert received < 20_000_000   # the 23 MB response was cut short
    finally:
        sock.close()
        exporter.close()


def test_idle_connections_beyond_the_bound_neither_starve_a_scrape_nor_spin():
    with Child("--keys", "100", prefix=LIMITED) as child:
        socks = open_idle(child.port, 400)   # more than the 256 descriptors it has
        try:
            time.sleep(0.5)
            cpu = child.cpu_seconds()
            got, failed = scrape_many(child.port, 1, 1, PROMETHEUS_REQUEST, timeout=5)
            assert (len(got), failed) == (1, 0)
            assert got[0] < 1.0
            time.sleep(3)
            busy = child.cpu_seconds() - cpu
            assert busy < 0.5, f"{busy:.2f} s of CPU in 3 s with idle connections"
            # The excess was closed at once; the rest go at the request deadline.
            assert sum(closed_by_peer(s) for s in socks) >= 400 - 256
            until = time.monotonic() + exporter_module.REQUEST_TIMEOUT + 3
            while time.monotonic() < until and not all(closed_by_peer(s) for s in socks):
                time.sleep(0.25)
            assert all(closed_by_peer(s) for s in socks)
            got, failed = scrape_many(child.port, 1, 1, PROMETHEUS_REQUEST, timeout=5)
            assert (len(got), failed) == (1, 0)
        finally:
            for sock in socks:
                sock.close()


def test_200_concurrent_scrapers_are_all_served():
    with Child("--keys", "100", prefix=LIMITED) as child:
        got, failed = scrape_many(child.port, 200, 3, PROMETHEUS_REQUEST, timeout=120)
        assert failed == 0
        assert len(got) == 600
        stats = child.stats()
    assert stats["renders"] == stats["generations"] == stats["snapshots"] < 600


def test_concurrent_full_scrapes_render_once_and_peak_memory_stays_that_of_one():
    growth = {}
    for scrapers in (1, 20):
        with Child("--keys", "10240") as child:
            before = child.status("VmHWM")
            got, failed = scrape_many(child.port, scrapers, 1, PLAIN_REQUEST, timeout=120)
            assert (len(got), failed) == (scrapers, 0)
            growth[scrapers] = child.status("VmHWM") - before
            stats = child.stats()
        assert stats == {"renders": 1, "generations": 1, "snapshots": 1}
    assert growth[20] <= growth[1] * 1.25 + 16 * 1024, growth


def test_a_full_scrape_is_one_shared_body_for_a_crowd_in_process():
    tracer = FakeTracer(2000)
    exporter = Exporter(tracer, ("127.0.0.1", 0), "remote_address")
    try:
        got, failed = scrape_many(exporter.address[1], 20, 1, PROMETHEUS_REQUEST, timeout=60)
        assert (len(got), failed) == (20, 0)
        assert tracer.snapshots == exporter.generations == exporter.renders == 1
    finally:
        exporter.close()
