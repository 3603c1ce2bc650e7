"""The exporter against a real Prometheus server (Debian's prometheus) on loopback."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest
import requests

from runner.exporter import parse_listen
from runner.histogram import Hist
from runner.render import prometheus as render
from runner.tcprtt import variants
from runner.tcprtt.keys import make_key

from .conftest import REPO, runner_cmd, runner_env
from .test_cli import Tracing
from .traffic import free_port, tcp_pair


def test_listen_parsing():
    assert parse_listen("9464") == ("127.0.0.1", 9464)
    assert parse_listen("0.0.0.0:9464") == ("0.0.0.0", 9464)
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    from runner.errors import UsageError
    for bad in ("http", "70000", "1.2.3.4:"):
        with pytest.raises(UsageError, match="--prometheus"):
            parse_listen(bad)


def test_buckets_are_the_log2_slots_in_seconds():
    family = render.rtt_histogram([Hist(key=None, slots=(1, 2, 0, 3), latency=40, cnt=6)],
                                  None, lambda k: "")
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples[("tcp_srtt_seconds_bucket", repr(1e-06))] == 1    # 0..1 us
    assert samples[("tcp_srtt_seconds_bucket", repr(3e-06))] == 3    # 2..3 us
    assert samples[("tcp_srtt_seconds_bucket", repr(7e-06))] == 3    # 4..7 us
    assert samples[("tcp_srtt_seconds_bucket", "+Inf")] == 6         # the last slot is open
    assert samples[("tcp_srtt_seconds_count", None)] == 6
    assert samples[("tcp_srtt_seconds_sum", None)] == pytest.approx(40e-6)


ACCEPTS = [
    None,
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",          # what Prometheus sends
    "application/openmetrics-text",
    "application/openmetrics-text;version=1.0.0;escaping=dots",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=1.0.0;escaping=values",
]


def some_hists() -> list:
    v4 = [Hist(key=make_key(2, bytes([10, 0, i // 256, i % 256])),
               slots=tuple((i * 7 + s * 13) % 50 * 10 ** (s % 8) for s in range(27)),
               latency=i * 1_234_567, cnt=i) for i in range(40)]
    v6 = Hist(key=make_key(10, bytes([0x20, 1, 0xd, 0xb8] + [0] * 11 + [1])),
              slots=(3,) * 27, latency=7, cnt=81)
    return [*reversed(v4), v6, Hist(key=make_key(2, b""), slots=(0,) * 27)]


@pytest.mark.parametrize("accept", ACCEPTS)
@pytest.mark.parametrize("label", ["remote_address", "local_address", None])
def test_the_exposition_is_the_encoders_own_bytes(accept, label):
    from prometheus_client.exposition import choose_encoder

    from runner.tcprtt.keys import key_address
    encoder, _ = choose_encoder(accept)
    hists = some_hists() if label else [Hist(key=None, slots=tuple(range(27)), latency=5)]
    others = render.probe_metrics("fentry", "fentry/tcp_rcv_established", 3, len(hists), 10240)
    for chosen in (hists, hists[:1], []):
        def address(key):
            return key_address(key) or ""
        family = render.rtt_histogram(chosen, label, address)
        expected = encoder(render._Families([family, *others]))
        assert render.exposition(chosen, label, address, others, encoder) == expected


def test_the_exporter_serves_what_prometheus_clients_handler_serves():
    """Body and headers, for each format, ``name[]``, gzip or not, any path."""
    import gzip
    from http.server import ThreadingHTTPServer

    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import MetricsHandler

    from bench.exporter import FakeTracer
    from runner.exporter import Collector, Exporter
    tracer = FakeTracer(300)
    exporter = Exporter(tracer, ("127.0.0.1", 0), "remote_address")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(tracer, "remote_address"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), MetricsHandler.factory(registry))
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        for accept in ACCEPTS:
            for encoding in ("identity", "gzip"):
                for query in ("/metrics", "/", "/metrics?name[]=tcprtt_keys",
                              "/x?name[]=tcp_srtt_seconds_bucket&name[]=tcprtt_probe_info"):
                    headers = {"Accept-Encoding": encoding}
                    if accept:
                        headers["Accept"] = accept
                    ours = requests.get(f"http://127.0.0.1:{exporter.address[1]}{query}",
                                        headers=headers, timeout=10, stream=True)
                    theirs = requests.get(f"http://127.0.0.1:{server.server_address[1]}{query}",
                                          headers=headers, timeout=10, stream=True)
                    assert ours.status_code == theirs.status_code == 200
                    raw = [r.raw.read() for r in (ours, theirs)]
                    assert int(ours.headers["Content-Length"]) == len(raw[0])
                    if encoding == "gzip":
                        raw = [gzip.decompress(r) for r in raw]
                    assert raw[0] == raw[1], (accept, encoding, query)
                    for name in ("Content-Type", "Content-Encoding", "Server"):
                        assert ours.headers.get(name) == theirs.headers.get(name)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        exporter.close()


class Prometheus:
    def __init__(self, directory, target: str):
        self.port = free_port()
        config = directory / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: tcprtt\n    static_configs:\n"
            f"      - targets: ['{target}']\n")
        self.log = open(directory / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={directory / 'db'}",
             f"--web.listen-address=127.0.0.1:{self.port}"], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    break
            except requests.exceptions.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("prometheus did not start")
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, expr: str) -> list:
        resp = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        resp.raise_for_status()
        return resp.json()["data"]["result"]

    def wait_for(self, expr: str, timeout: float = 20.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"no result for {expr}")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def keep_traffic(stop: threading.Event) -> None:
    with tcp_pair() as pair:
        while not stop.is_set():
            pair.exchange(200)


def test_real_prometheus_scrapes_growing_counts_and_quantiles_in_the_text_bucket(root,
                                                                                  tmp_path):
    port = free_port()
    stop = threading.Event()
    traffic = threading.Thread(target=keep_traffic, args=(stop,))
    with Tracing("--prometheus", f"127.0.0.1:{port}", "-d", "60") as exporter, \
            Tracing("-d", "60") as text:
        exporter.wait_attached()
        text.wait_attached()
        prom = Prometheus(tmp_path, f"127.0.0.1:{port}")
        try:
            traffic.start()
            first = float(prom.wait_for("tcp_srtt_seconds_count")[0]["value"][1])
            time.sleep(3)
            second = float(prom.wait_for("tcp_srtt_seconds_count")[0]["value"][1])
            assert second > first > 0
            quantile = float(prom.wait_for(
                "histogram_quantile(0.5, rate(tcp_srtt_seconds_bucket[5s]))")[0]["value"][1])
            info = prom.wait_for("tcprtt_probe_info")[0]["metric"]
            assert info["variant"] in variants.names()
            assert prom.wait_for("tcprtt_dropped_samples_total")[0]["value"][1] == "0"
            # Every query of the Grafana dashboard runs and finds data.
            dashboard = json.loads((REPO / "deploy" / "grafana-dashboard.json").read_text())
            for panel in dashboard["panels"]:
                for target in panel["targets"]:
                    expr = target["expr"].replace("$__rate_interval", "5s")
                    expr = expr.replace("$instance", ".*")
                    assert prom.wait_for(expr), (panel["title"], expr)
        finally:
            stop.set()
            if traffic.is_alive():
                traffic.join(timeout=30)
            prom.close()
        text.proc.send_signal(2)
        code, out, err = text.finish()
        assert code == 0, err
    # The text histogram's fullest bucket for the same traffic.
    rows = [line for line in out.splitlines() if "->" in line]
    counts = [(int(r.split(":")[1].split("|")[0]), r) for r in rows]
    _, top = max(counts)
    low, high = (int(x) for x in top.split(":")[0].split("->"))
    # Prometheus buckets are (le_prev, le]: the text slot low..high is (low-1, high].
    assert low - 1 <= quantile * 1e6 <= high, (quantile, top)


def test_exporter_listens_on_loopback_by_default(root):
    port = free_port()
    with Tracing("--prometheus", str(port), "-d", "20") as t:
        t.wait_attached()
        assert any(f"http://127.0.0.1:{port}/metrics" in line for line in t.err_lines)
        body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "# TYPE tcp_srtt_seconds histogram" in body
        t.proc.terminate()
        code, _, err = t.finish()
    assert code == 0, err


def test_bad_listen_address_is_one_line(root):
    proc = subprocess.run(runner_cmd("--prometheus", "99999"), cwd=REPO, env=runner_env(),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "tcprtt: error: --prometheus: port 99999 is outside 1..65535"
