"""The Prometheus exporter: serve /metrics from the probe's cumulative maps."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import MetricsHandler

from .addresses import key_address
from .errors import UsageError
from .render import prometheus as render
from .tracer import LibbpfTracer


def parse_listen(text: str) -> tuple[str, int]:
    """``PORT`` (loopback) or ``ADDR:PORT``; IPv6 as ``[ADDR]:PORT``."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port, 10)
    except ValueError:
        raise UsageError(f"--prometheus: {text!r} is not [ADDR:]PORT") from None
    if not 1 <= number <= 65535:
        raise UsageError(f"--prometheus: port {number} is outside 1..65535")
    return host, number


class Collector:
    """Reads the kernel maps at each scrape; counters are cumulative."""

    def __init__(self, tracer: LibbpfTracer, label: str | None):
        self.tracer = tracer
        self.label = label
        self.lock = threading.Lock()

    def collect(self):
        with self.lock:
            hists = self.tracer.snapshot()
            dropped = self.tracer.dropped()
        hist_map = self.tracer.package.hists[0]
        yield render.rtt_histogram(hists, self.label,
                                   lambda key: key_address(key) or "")
        capacity = self.tracer.probe.max_entries(hist_map.name)
        attach = self.tracer.package.progs[0]["attach"]
        yield from render.probe_metrics(self.tracer.variant, attach, dropped, len(hists),
                                        capacity)


class Exporter:
    """An HTTP server on its own thread; ``close()`` stops it."""

    def __init__(self, tracer: LibbpfTracer, listen: tuple[str, int], label: str | None):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(Collector(tracer, label))
        handler = MetricsHandler.factory(registry)
        family_server = _server_class(listen[0])
        try:
            self.server = family_server(listen, handler)
        except OSError as exc:
            raise UsageError(f"--prometheus: cannot listen on {listen[0]}:{listen[1]} "
                             f"({exc.strerror})") from None
        self.address = self.server.server_address
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _server_class(host: str):
    import socket

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        def handle_error(self, request, client_address):  # a client that went away
            pass
    return Server
