"""--web-config: the exporter-toolkit's web configuration (TLS, client
certificates, basic auth with bcrypt), checked when it is read, enforced by
the exporter's own event loop, and scraped by a real Prometheus over TLS
with basic auth, which a wrong password does not get through."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time

import pytest
import requests

from .conftest import REPO, runner_cmd, runner_env
from .test_cli import Tracing
from .test_prometheus import Prometheus, keep_traffic
from .traffic import free_port

PASSWORD = "s3cret rtt"


def openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(directory) -> dict:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client
    certificate with a URI SAN, all made with the openssl command."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=tcprtt test CA", cwd=directory)
    for name, san in (("server", "IP:127.0.0.1,DNS:localhost"),
                      ("client", "URI:spiffe://test/prometheus")):
        openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=directory)
        (directory / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                "-out", f"{name}.crt", cwd=directory)
    return {name: directory / name for name in
            ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


def bcrypt_hash(password: str, cost: int = 10) -> str:
    import bcrypt
    # as htpasswd -B writes it: $2y$
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode().replace("$2b$", "$2y$")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def write_config(directory, text: str):
    path = directory / "web.yml"
    path.write_text(text)
    return path


def tls_and_auth(pki, extra_tls: str = "", users: str | None = None) -> str:
    users = users if users is not None else f"  prometheus: {bcrypt_hash(PASSWORD)}\n"
    return ("tls_server_config:\n"
            f"  cert_file: {pki['server.crt']}\n  key_file: {pki['server.key']}\n{extra_tls}"
            f"basic_auth_users:\n{users}")


# Reading the file -------------------------------------------------------------

BAD = [
    ("nonsense: 1\n", "unknown key 'nonsense'"),
    ("tls_server_config:\n  cert_fil: x\n", "unknown key 'tls_server_config.cert_fil'"),
    ("rate_limit:\n  interval: 1s\n", "rate_limit is not supported"),
    ("tls_server_config:\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n  cert_file: a\n",
     "tls_server_config.cipher_suites is not supported"),
    ("basic_auth_users:\n  alice: secret\n", "basic_auth_users.alice: 'secret' is not a bcrypt"),
    ("basic_auth_users:\n  alice: $2y$99$" + "a" * 53 + "\n", "is not a bcrypt hash"),
    ("basic_auth_users: [alice]\n", "basic_auth_users must be a mapping"),
    ("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
     "tls_server_config.cert_file: cannot read"),
    ("tls_server_config:\n  key_file: server.key\n", "missing one of cert or cert_file"),
    ("- a\n- b\n", "must be a mapping, not list"),
    ("tls_server_config: [\n", "not valid YAML at line"),
    ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
     "X-Frame-Options: 'allow' is not one of deny, sameorigin"),
    ("http_server_config:\n  headers:\n    Server: x\n",
     "unknown key 'http_server_config.headers.Server'"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_a_bad_file_is_one_line_naming_the_bad_value(tmp_path, text, message):
    from runner.errors import UsageError
    from runner.webconfig import load
    path = write_config(tmp_path, text)
    with pytest.raises(UsageError) as caught:
        load(str(path))
    line = str(caught.value)
    assert "\n" not in line and line.startswith(f"--web-config {path}: "), line
    assert message in line, line


def test_bad_tls_settings_are_refused_by_name(tmp_path, pki):
    from runner.errors import UsageError
    from runner.webconfig import load
    cert = f"  cert_file: {pki['server.crt']}\n  key_file: {pki['server.key']}\n"
    cases = [
        (f"{cert}  client_auth_type: RequireAnyClientCert\n  client_ca_file: {pki['ca.crt']}\n",
         "RequireAnyClientCert accepts an unverified client certificate"),
        (f"{cert}  client_auth_type: Sometimes\n", "'Sometimes' is not one of"),
        (f"{cert}  client_ca_file: {pki['ca.crt']}\n",
         "a client CA is given but client_auth_type is NoClientCert"),
        (f"{cert}  client_auth_type: RequireAndVerifyClientCert\n",
         "RequireAndVerifyClientCert needs client_ca_file"),
        (f"{cert}  min_version: TLS14\n", "min_version: 'TLS14' is not one of"),
        (f"{cert}  min_version: TLS13\n  max_version: TLS12\n", "above max_version"),
        (f"  cert_file: {pki['server.crt']}\n  key_file: {pki['client.key']}\n",
         "are not a PEM certificate and its key"),
        (f"{cert}  client_auth_type: RequireAndVerifyClientCert\n"
         f"  client_ca_file: {pki['server.key']}\n", "holds no PEM CA certificate"),
    ]
    for body, message in cases:
        path = write_config(tmp_path, "tls_server_config:\n" + body)
        with pytest.raises(UsageError, match=message):
            load(str(path))


def test_relative_paths_are_read_from_the_files_directory(tmp_path, pki):
    import shutil

    from runner.webconfig import load
    for name in ("server.crt", "server.key"):
        shutil.copy(pki[name], tmp_path / name)
    path = write_config(tmp_path, "tls_server_config:\n  cert_file: server.crt\n"
                                  "  key_file: server.key\n")
    assert load(str(path)).tls is not None


def test_the_command_refuses_a_bad_file_in_one_line_before_tracing(tmp_path):
    path = write_config(tmp_path, "basic_auth_users:\n  alice: plain\n")
    for args, message in [
        (("--prometheus", "9464", "--web-config", str(path)),
         f"tcprtt: error: --web-config {path}: basic_auth_users.alice: 'plain' is not a "
         "bcrypt hash"),
        (("--prometheus", "9464", "--web-config", str(tmp_path / "none.yml")),
         f"tcprtt: error: --web-config {tmp_path / 'none.yml'}: cannot read it "
         "(No such file or directory)"),
        (("--web-config", str(path)), "tcprtt: error: --web-config needs --prometheus"),
    ]:
        proc = subprocess.run(runner_cmd(*args), cwd=REPO, env=runner_env(),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == message


def test_bcrypt_is_imported_only_with_a_web_config(tmp_path):
    path = write_config(tmp_path, f"basic_auth_users:\n  a: {bcrypt_hash('x', 4)}\n")
    code = ("import sys\n"
            "from runner import options\n"
            "p = options.Parser()\noptions.add_probe_flags(p)\noptions.add_runner_flags(p)\n"
            "options.from_namespace(p.parse_args(['--prometheus', '9464']))\n"
            "import runner.exporter\n"
            "assert 'bcrypt' not in sys.modules, 'bcrypt imported'\n"
            "o = options.from_namespace(p.parse_args(['--prometheus', '9464', "
            f"'--web-config', {str(path)!r}]))\n"
            "assert 'bcrypt' in sys.modules and o.web_config.auth is not None\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=runner_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


# The exporter's event loop ----------------------------------------------------

class Served:
    """An Exporter over a fake tracer with a web configuration."""

    def __init__(self, directory, text: str):
        from bench.exporter import FakeTracer
        from runner.exporter import Exporter
        from runner.webconfig import load
        self.config = load(str(write_config(directory, text)))
        self.exporter = Exporter(FakeTracer(5), ("127.0.0.1", 0), "remote_address",
                                 web_config=self.config)
        self.url = f"https://127.0.0.1:{self.exporter.address[1]}/metrics"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.exporter.close()


def test_tls_and_basic_auth_serve_the_right_password_only(tmp_path, pki):
    with Served(tmp_path, tls_and_auth(pki)) as served:
        ca = str(pki["ca.crt"])
        good = requests.get(served.url, auth=("prometheus", PASSWORD), verify=ca, timeout=10)
        assert good.status_code == 200
        assert "# TYPE tcp_srtt_seconds histogram" in good.text
        for auth in (("prometheus", "wrong"), ("nobody", PASSWORD), ("prometheus", ""),
                     ("prometheus", PASSWORD + "x" * 80), None):
            bad = requests.get(served.url, auth=auth, verify=ca, timeout=10)
            assert bad.status_code == 401, auth
            assert bad.headers["WWW-Authenticate"] == "Basic"
            assert "tcp_srtt" not in bad.text
        for header in ("Bearer abc", "Basic !!!", "Basic " + "cHJvbWV0aGV1cw=="):
            bad = requests.get(served.url, headers={"Authorization": header}, verify=ca,
                               timeout=10)
            assert bad.status_code == 401, header
        # The same right password again: served from the cache, no second bcrypt.
        checks = served.config.auth.checks
        for _ in range(3):
            assert requests.get(served.url, auth=("prometheus", PASSWORD), verify=ca,
                                timeout=10).status_code == 200
        assert served.config.auth.checks == checks
        # Plain HTTP to the TLS port gets no metrics.
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(served.url.replace("https:", "http:"), timeout=10)
        # Nor does a client that does not trust the server.
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(served.url, auth=("prometheus", PASSWORD), timeout=10)


def test_bcrypt_does_not_hold_up_the_event_loop(tmp_path, pki):
    """A slow hash (cost 14, most of a second) for one client while another,
    already checked, is served meanwhile."""
    import threading
    users = f"  slow: {bcrypt_hash('slow', 14)}\n  fast: {bcrypt_hash('fast', 4)}\n"
    with Served(tmp_path, tls_and_auth(pki, users=users)) as served:
        ca = str(pki["ca.crt"])
        assert requests.get(served.url, auth=("fast", "fast"), verify=ca,
                            timeout=10).status_code == 200
        slow: list = []
        thread = threading.Thread(target=lambda: slow.append(requests.get(
            served.url, auth=("slow", "wrong"), verify=ca, timeout=30)))
        started = time.monotonic()
        thread.start()
        time.sleep(0.05)
        fast = requests.get(served.url, auth=("fast", "fast"), verify=ca, timeout=10)
        fast_done = time.monotonic() - started
        thread.join(timeout=60)
        slow_done = time.monotonic() - started
        assert fast.status_code == 200 and slow[0].status_code == 401
        assert fast_done < slow_done / 2, (fast_done, slow_done)


def test_client_certificates_and_allowed_sans(tmp_path, pki):
    ca = str(pki["ca.crt"])
    required = (f"  client_auth_type: RequireAndVerifyClientCert\n"
                f"  client_ca_file: {pki['ca.crt']}\n")
    client = (str(pki["client.crt"]), str(pki["client.key"]))
    with Served(tmp_path, tls_and_auth(pki, required)) as served:
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(served.url, auth=("prometheus", PASSWORD), verify=ca, timeout=10)
        # A certificate that the client CA did not sign is refused.
        tmp = tmp_path / "other"
        tmp.mkdir()
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", "o.key", "-out", "o.crt", "-days", "1", "-subj", "/CN=o",
                cwd=tmp)
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(served.url, auth=("prometheus", PASSWORD), verify=ca,
                         cert=(str(tmp / "o.crt"), str(tmp / "o.key")), timeout=10)
        ok = requests.get(served.url, auth=("prometheus", PASSWORD), verify=ca, cert=client,
                          timeout=10)
        assert ok.status_code == 200
    for sans, served_ok in ((["spiffe://test/prometheus"], True), (["spiffe://other"], False)):
        listed = required + "  client_allowed_sans:\n" + "".join(f"    - {s}\n" for s in sans)
        with Served(tmp_path, tls_and_auth(pki, listed)) as served:
            if served_ok:
                assert requests.get(served.url, auth=("prometheus", PASSWORD), verify=ca,
                                    cert=client, timeout=10).status_code == 200
            else:
                with pytest.raises(requests.exceptions.ConnectionError):
                    requests.get(served.url, auth=("prometheus", PASSWORD), verify=ca,
                                 cert=client, timeout=10)


def test_a_silent_tls_client_is_cut_at_the_request_deadline(tmp_path, pki):
    from bench.exporter import FakeTracer
    from runner.exporter import Exporter
    from runner.webconfig import load
    config = load(str(write_config(tmp_path, tls_and_auth(pki))))
    exporter = Exporter(FakeTracer(5), ("127.0.0.1", 0), None, web_config=config,
                        request_timeout=0.5)
    try:
        with socket.create_connection(exporter.address[:2], timeout=5) as silent:
            started = time.monotonic()
            assert silent.recv(10) == b""  # no ClientHello: closed by the server
            assert time.monotonic() - started < 3
        context = ssl.create_default_context(cafile=str(pki["ca.crt"]))
        with socket.create_connection(exporter.address[:2], timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            started = time.monotonic()
            assert tls.recv(10) == b""  # handshaken, no request
            assert time.monotonic() - started < 3
    finally:
        exporter.close()


def test_configured_headers_are_sent(tmp_path, pki):
    headers = ("http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
               "    Strict-Transport-Security: max-age=31536000\n")
    with Served(tmp_path, tls_and_auth(pki) + headers) as served:
        for auth in (("prometheus", PASSWORD), ("prometheus", "no")):
            resp = requests.get(served.url, auth=auth, verify=str(pki["ca.crt"]), timeout=10)
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["Strict-Transport-Security"] == "max-age=31536000"


# A real Prometheus ------------------------------------------------------------

def start_prometheus(directory, jobs: str) -> Prometheus:
    """Prometheus as tests/test_prometheus.py starts it, with these jobs."""
    prom = Prometheus.__new__(Prometheus)
    prom.port = free_port()
    config = directory / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                      "scrape_configs:\n" + jobs)
    prom.log = open(directory / "prometheus.log", "wb")
    prom.proc = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={directory / 'db'}",
         f"--web.listen-address=127.0.0.1:{prom.port}"], stdout=prom.log, stderr=prom.log)
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{prom.url}/-/ready", timeout=1).status_code == 200:
                return prom
        except requests.exceptions.RequestException:
            pass
        if prom.proc.poll() is not None or time.monotonic() > deadline:
            prom.close()
            raise RuntimeError("prometheus did not start")
        time.sleep(0.2)


def test_real_prometheus_scrapes_over_tls_with_basic_auth_and_not_with_a_wrong_password(
        root, tmp_path, pki):
    import threading
    port = free_port()
    config = write_config(tmp_path, tls_and_auth(pki))
    target = f"127.0.0.1:{port}"
    jobs = "".join(
        f"  - job_name: {job}\n    scheme: https\n"
        f"    tls_config:\n      ca_file: {pki['ca.crt']}\n"
        f"    basic_auth:\n      username: prometheus\n      password: '{password}'\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
        for job, password in (("right", PASSWORD), ("wrong", "not the password")))
    stop = threading.Event()
    traffic = threading.Thread(target=keep_traffic, args=(stop,))
    with Tracing("--prometheus", target, "--web-config", str(config), "-d", "60") as tracing:
        tracing.wait_attached()
        assert any(f"https://{target}/metrics" in line for line in tracing.err_lines)
        prom = start_prometheus(tmp_path, jobs)
        try:
            traffic.start()
            assert prom.wait_for('up{job="right"} == 1')
            assert prom.wait_for('up{job="wrong"} == 0')
            first = float(prom.wait_for('tcp_srtt_seconds_count{job="right"}')[0]["value"][1])
            assert prom.query('tcp_srtt_seconds_count{job="wrong"}') == []
            targets = requests.get(f"{prom.url}/api/v1/targets", timeout=5).json()
            wrong = [t for t in targets["data"]["activeTargets"]
                     if t["labels"]["job"] == "wrong"][0]
            assert wrong["health"] == "down" and "401" in wrong["lastError"], wrong
            time.sleep(3)
            second = float(prom.wait_for('tcp_srtt_seconds_count{job="right"}')[0]["value"][1])
            assert second > first > 0
            # The same, asked directly.
            url = f"https://{target}/metrics"
            denied = requests.get(url, auth=("prometheus", "nope"), verify=str(pki["ca.crt"]),
                                  timeout=10)
            assert denied.status_code == 401 and denied.headers["WWW-Authenticate"] == "Basic"
        finally:
            stop.set()
            if traffic.is_alive():
                traffic.join(timeout=30)
            prom.close()
        tracing.proc.terminate()
        code, _, err = tracing.finish()
    assert code == 0, err


def test_the_health_path_answers_without_credentials_and_without_metrics(tmp_path, pki):
    with Served(tmp_path, tls_and_auth(pki)) as served:
        health = served.url.replace("/metrics", "/-/healthy")
        resp = requests.get(health, verify=str(pki["ca.crt"]), timeout=10)
        assert resp.status_code == 200 and resp.text == "OK\n"
        for other in ("/-/healthy?x", "/-/healthy/", "/metrics"):
            resp = requests.get(served.url.replace("/metrics", other),
                                verify=str(pki["ca.crt"]), timeout=10)
            assert resp.status_code == 401, other


def test_the_example_in_the_docs_is_a_file_tcprtt_takes(tmp_path, pki):
    import base64
    import re
    import shutil

    from runner.webconfig import load
    text = (REPO / "docs" / "fleet.md").read_text()
    section = text[text.index("## Protecting the endpoint"):]
    example = re.search(r"```yaml\n(.*?)```", section, flags=re.S).group(1)
    assert "basic_auth_users:" in example and "tls_server_config:" in example
    for name in ("server.crt", "server.key"):
        shutil.copy(pki[name], tmp_path / name)
    config = load(str(write_config(tmp_path, example)))
    assert config.tls is not None and config.headers
    assert config.auth.check("Basic " + base64.b64encode(b"prometheus:example only").decode())


def test_a_changed_file_is_read_again_and_a_refused_one_leaves_the_one_in_use(
        tmp_path, pki, tmp_path_factory, capfd):
    import os
    import shutil
    for name in ("server.crt", "server.key"):
        shutil.copy(pki[name], tmp_path / name)
    relative = {"server.crt": "server.crt", "server.key": "server.key"}
    with Served(tmp_path, tls_and_auth(relative)) as served:
        ca = str(pki["ca.crt"])

        def status(password: str, verify: str = ca) -> int:
            return requests.get(served.url, auth=("prometheus", password), verify=verify,
                                timeout=10).status_code

        def until(check, what: str) -> None:
            deadline = time.monotonic() + 10
            while not check():
                assert time.monotonic() < deadline, what
                time.sleep(0.2)

        assert status(PASSWORD) == 200
        # A new password (the exporter looks at most once a second).
        write_config(tmp_path, tls_and_auth(
            relative, users=f"  prometheus: {bcrypt_hash('new one', 4)}\n"))
        until(lambda: status("new one") == 200, "the new password is not taken")
        assert status(PASSWORD) == 401
        # A file tcprtt refuses: the one in use stays, with one line.
        write_config(tmp_path, "basic_auth_users:\n  prometheus: plain\n")
        said: list[str] = []

        def warned() -> bool:
            status("new one")  # the exporter looks when a connection arrives
            said.append(capfd.readouterr().err)
            return "is not a bcrypt hash" in "".join(said)

        until(warned, "no warning")
        line = next(x for x in "".join(said).splitlines() if "bcrypt" in x)
        assert line.endswith("; the web configuration in use is kept"), line
        assert status("new one") == 200
        # A renewed certificate, from another CA, as a Secret's volume swaps it.
        other = make_pki(tmp_path_factory.mktemp("other-pki"))
        write_config(tmp_path, tls_and_auth(
            relative, users=f"  prometheus: {bcrypt_hash('new one', 4)}\n"))
        for name in ("server.crt", "server.key"):
            shutil.copy(other[name], tmp_path / f"{name}.new")
            os.replace(tmp_path / f"{name}.new", tmp_path / name)
        until(lambda: _verifies(served.url, str(other["ca.crt"])), "the new certificate")
        assert status("new one", str(other["ca.crt"])) == 200
        with pytest.raises(requests.exceptions.SSLError):
            status("new one")  # the old CA no longer vouches for the server


def _verifies(url: str, ca: str) -> bool:
    try:
        requests.get(url, verify=ca, timeout=10)
        return True
    except requests.exceptions.SSLError:
        return False
