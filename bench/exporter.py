"""The Prometheus exporter under load, with its baselines measured in the same run.

    python -m bench.exporter [--quick]

No BPF: the exporter serves a synthetic tracer's histograms from a child
process, so its CPU time and peak RSS (VmHWM) are its own. Printed:

1. scrape latency p50/p99: one scraper at a time (the baseline) against 200
   concurrent scrapers, each scrape a fresh connection as Prometheus makes;
2. peak RSS: one full scrape of 10,240 keys (the baseline) against 20
   concurrent full scrapes, and the renders those 20 cost;
3. the same for prometheus_client's own server (the exporter before it had
   an event loop), for comparison.

The child is also what tests/test_exporter_load.py runs:
    python -m bench.exporter serve --keys N [--legacy] [--request-timeout S]
prints its port, then answers "stats" on stdin with a JSON line, and exits at
end of input.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
SLOTS = 27
# What a Prometheus server sends (the text format's Accept header is an
# alternative it would take).
PROMETHEUS_REQUEST = (
    b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Prometheus/2.42.0\r\n"
    b"Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    b"version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n"
    b"Accept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n")
PLAIN_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


# A tracer without BPF ---------------------------------------------------------

def synthetic_hists(keys: int, seed: int = 1) -> list:
    """``keys`` IPv4-keyed histograms as the libbpf tracer decodes them."""
    from runner.histogram import Hist
    from runner.tcprtt.keys import make_key
    rnd = random.Random(seed)
    hists = []
    for i in range(keys):
        key = make_key(2, bytes([10, (i >> 16) & 255, (i >> 8) & 255, i & 255]))
        slots = tuple(rnd.randrange(10 ** 7) if 3 <= s <= 20 else 0 for s in range(SLOTS))
        hists.append(Hist(key=key, slots=slots,
                          latency=rnd.randrange(10 ** 12), cnt=sum(slots)))
    return hists


class FakeTracer:
    """What the exporter reads of a tracer: snapshot(), dropped(), variant,
    the package's first hists map and attach point, the map's capacity."""

    variant = "fentry"

    def __init__(self, keys: int, capacity: int = 10240):
        self.hists = synthetic_hists(keys)
        self.snapshots = 0
        self.package = SimpleNamespace(hists=[SimpleNamespace(name="hists")],
                                       progs=[{"attach": "fentry/tcp_rcv_established"}])
        self.probe = SimpleNamespace(max_entries=lambda name: capacity)

    def snapshot(self) -> list:
        self.snapshots += 1
        return list(self.hists)

    def dropped(self) -> int:
        return 0


# The child: an exporter and nothing else ----------------------------------------

class _Legacy:
    """prometheus_client's ThreadingHTTPServer, as the exporter was before."""

    def __init__(self, tracer, label: str):
        from http.server import ThreadingHTTPServer

        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import MetricsHandler

        from runner.exporter import Collector
        registry = CollectorRegistry(auto_describe=False)
        registry.register(Collector(tracer, label))
        server = type("Server", (ThreadingHTTPServer,),
                      {"daemon_threads": True, "handle_error": lambda *a: None})
        self.server = server(("127.0.0.1", 0), MetricsHandler.factory(registry))
        self.address = self.server.server_address
        self.renders = self.generations = None
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.exporter serve")
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--legacy", action="store_true")
    parser.add_argument("--request-timeout", type=float)
    args = parser.parse_args(argv)
    tracer = FakeTracer(args.keys)
    if args.legacy:
        exporter = _Legacy(tracer, "remote_address")
    else:
        from runner.exporter import Exporter
        extra = {"request_timeout": args.request_timeout} if args.request_timeout else {}
        exporter = Exporter(tracer, ("127.0.0.1", 0), "remote_address", **extra)
    print(exporter.address[1], flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "stats":
                print(json.dumps({"renders": exporter.renders,
                                  "generations": exporter.generations,
                                  "snapshots": tracer.snapshots}), flush=True)
    finally:
        exporter.close()
    return 0


class Child:
    """``serve`` in a child process, stopped by its PID; ``prefix`` wraps the
    command (``prlimit --nofile=256``, which execs it: the PID is python's)."""

    def __init__(self, *args: str, prefix: tuple[str, ...] = ()):
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen([*prefix, sys.executable, "-m", "bench.exporter", "serve",
                                      *args], cwd=REPO, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.close()
            raise RuntimeError(f"the exporter did not start: {line!r}")
        self.port = int(line)

    def stats(self) -> dict:
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def status(self, field: str) -> int:
        """A /proc/PID/status figure in kB (VmHWM, VmRSS)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# Scrapers ----------------------------------------------------------------------

class Scrape:
    __slots__ = ("sock", "started", "chunks", "sent", "done")

    def __init__(self, port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.started = time.monotonic()
        self.chunks: list[bytes] = []
        self.sent = False
        self.sock.connect_ex(("127.0.0.1", port))


def _complete(data: bytes) -> bool:
    """A 200 response whose body is as long as its Content-Length says."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1.0 200"):
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) == int(value)
    return len(body) > 0


def scrape_many(port: int, concurrency: int, per_scraper: int, request: bytes = PLAIN_REQUEST,
                timeout: float = 60.0) -> tuple[list[float], int]:
    """``concurrency`` scrapers, each making ``per_scraper`` scrapes one after
    another on fresh connections, all on one thread. Returns the latencies
    (connect to last byte, in seconds) of the complete scrapes and the count of
    failed ones."""
    sel = selectors.DefaultSelector()
    latencies: list[float] = []
    failed = 0
    left = {i: per_scraper for i in range(concurrency)}

    def start(i: int) -> None:
        scrape = Scrape(port)
        sel.register(scrape.sock, selectors.EVENT_WRITE, (i, scrape))

    def finish(i: int, scrape: Scrape, ok: bool) -> None:
        nonlocal failed
        sel.unregister(scrape.sock)
        scrape.sock.close()
        if ok:
            latencies.append(time.monotonic() - scrape.started)
        else:
            failed += 1
        left[i] -= 1
        if left[i]:
            start(i)

    for i in range(concurrency):
        start(i)
    deadline = time.monotonic() + timeout
    try:
        while sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(1.0):
                i, scrape = key.data
                try:
                    if not scrape.sent:
                        scrape.sock.sendall(request)
                        scrape.sent = True
                        sel.modify(scrape.sock, selectors.EVENT_READ, key.data)
                        continue
                    data = scrape.sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                except OSError:
                    finish(i, scrape, False)
                    continue
                if data:
                    scrape.chunks.append(data)
                else:
                    finish(i, scrape, _complete(b"".join(scrape.chunks)))
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
            failed += 1
        sel.close()
    return latencies, failed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# The benchmark -------------------------------------------------------------------

def latency(legacy: bool, keys: int, rounds: int) -> dict:
    args = ("--keys", str(keys)) + (("--legacy",) if legacy else ())
    with Child(*args) as child:
        scrape_many(child.port, 1, 5, PROMETHEUS_REQUEST)  # warm
        cpu = child.cpu_seconds()
        alone, alone_failed = scrape_many(child.port, 1, rounds * 40, PROMETHEUS_REQUEST)
        alone_cpu, cpu = child.cpu_seconds() - cpu, child.cpu_seconds()
        before = child.stats()
        loaded, loaded_failed = scrape_many(child.port, 200, rounds, PROMETHEUS_REQUEST,
                                            timeout=300)
        stats = child.stats()
        loaded_cpu = child.cpu_seconds() - cpu
    renders = None if stats["renders"] is None else stats["renders"] - before["renders"]
    return {"alone": alone, "alone_failed": alone_failed, "loaded": loaded,
            "loaded_failed": loaded_failed, "renders": renders, "alone_cpu": alone_cpu,
            "loaded_cpu": loaded_cpu}


def peak_rss(legacy: bool, keys: int, scrapers: int) -> dict:
    args = ("--keys", str(keys)) + (("--legacy",) if legacy else ())
    with Child(*args) as child:
        before = child.status("VmHWM")
        started = time.monotonic()
        got, failed = scrape_many(child.port, scrapers, 1, PLAIN_REQUEST, timeout=600)
        elapsed = time.monotonic() - started
        return {"before_kb": before, "hwm_kb": child.status("VmHWM"), "ok": len(got),
                "failed": failed, "seconds": elapsed, "stats": child.stats()}


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench.exporter")
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--keys", type=int, default=100, help="keys for the latency runs")
    parser.add_argument("--full-keys", type=int, default=10240)
    parser.add_argument("--no-legacy", action="store_true",
                        help="skip prometheus_client's server")
    args = parser.parse_args(argv)
    rounds = 2 if args.quick else 5
    kinds = [("event loop", False)] + ([] if args.no_legacy else [("prometheus_client", True)])
    ms = 1000.0
    print(f"scrape latency, {args.keys} keys, Prometheus's request (OpenMetrics, gzip), "
          "a fresh connection per scrape")
    print(f"{'server':<18} {'scrapers':>8} {'scrapes':>7} {'failed':>6} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'max ms':>8} {'p99/alone':>9} {'renders':>7} {'cpu s':>6}")
    for name, legacy in kinds:
        r = latency(legacy, args.keys, rounds)
        base = percentile(r["alone"], 0.99)
        for scrapers, values, failed, cpu in (
                (1, r["alone"], r["alone_failed"], r["alone_cpu"]),
                (200, r["loaded"], r["loaded_failed"], r["loaded_cpu"])):
            shown = "-" if r["renders"] is None or scrapers == 1 else str(r["renders"])
            print(f"{name:<18} {scrapers:>8} {len(values):>7} {failed:>6} "
                  f"{statistics.median(values) * ms:>8.1f} {percentile(values, 0.99) * ms:>8.1f} "
                  f"{max(values) * ms:>8.1f} {percentile(values, 0.99) / base:>9.1f} "
                  f"{shown:>7} {cpu:>6.2f}")
    print()
    print(f"peak RSS (VmHWM) of the exporter process, full scrapes of {args.full_keys} keys "
          "in the text format, no gzip")
    print(f"{'server':<18} {'scrapers':>8} {'ok':>4} {'failed':>6} {'start MB':>8} "
          f"{'peak MB':>8} {'growth MB':>9} {'vs one':>6} {'renders':>7} {'seconds':>7}")
    for name, legacy in kinds:
        one = peak_rss(legacy, args.full_keys, 1)
        many = peak_rss(legacy, args.full_keys, 20)
        base_growth = one["hwm_kb"] - one["before_kb"]
        for scrapers, r in ((1, one), (20, many)):
            growth = r["hwm_kb"] - r["before_kb"]
            renders = r["stats"]["renders"]
            print(f"{name:<18} {scrapers:>8} {r['ok']:>4} {r['failed']:>6} "
                  f"{r['before_kb'] / 1024:>8.0f} {r['hwm_kb'] / 1024:>8.0f} "
                  f"{growth / 1024:>9.0f} {growth / base_growth:>6.2f} "
                  f"{'-' if renders is None else renders:>7} {r['seconds']:>7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
