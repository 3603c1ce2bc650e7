"""The exporter's container image (deploy/Containerfile), built and run here
the way deploy/daemonset.yaml runs it, and scraped by a real Prometheus.

- The base image comes from no registry: mmdebstrap makes a Debian 12 tree
  with libbpf1 and Python, and ``podman import`` turns it into an image. The
  tarball is kept beside pytest's own temporary directories (only there),
  so later runs on the same machine skip the ~20 s it takes.
- The Python dependencies are wheels that the host's pip downloads for the
  image's Python; the build installs from them alone (``--no-index``).
- podman keeps its images and containers in the test's temporary directory
  (``--root``; ``--runroot`` in a short directory of /tmp, as podman
  wants), all removed at the end; runc as the runtime
  (crun refuses hybrid cgroup hierarchies), and default rlimits that root
  without CAP_SYS_RESOURCE can set.
- The container runs as the DaemonSet's does: the host's network, no
  capability but CAP_BPF and CAP_PERFMON, its seccomp profile, a read-only
  root filesystem, BTF and tracefs mounted read-only, the web configuration from a read-only
  mount (a Secret in the cluster), serving TLS with basic auth.

It skips, saying why, where podman, runc or mmdebstrap are missing
(scripts/setup.sh --test installs them), and fails instead under CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import tomllib
import yaml

from .conftest import REPO, _ci
from .test_prometheus import keep_traffic
from .test_webconfig import PASSWORD, openssl, start_prometheus, tls_and_auth
from .traffic import free_port

RUNC = "/usr/sbin/runc"
SUITE = "bookworm"
INCLUDE = "libbpf1,python3,python3-venv"
IMAGE = "localhost/tcprtt-exporter:test"
BASE = "localhost/tcprtt-test-base:latest"
# The image's Python (Debian 12's), for the wheels the host downloads.
PYTHON = "3.11"
CAP_BPF, CAP_PERFMON = 39, 38
SERVER_NAME = "tcprtt-exporter"


def https_get(port: int, ca: Path, password: str) -> int:
    """The status of GET /metrics on 127.0.0.1:port, the server certificate
    checked for SERVER_NAME against ``ca``, as Prometheus' server_name does."""
    import base64
    import http.client
    import socket
    import ssl
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection(SERVER_NAME, port, context=context, timeout=10)
    conn.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                    server_hostname=SERVER_NAME)
    token = base64.b64encode(f"prometheus:{password}".encode()).decode()
    try:
        conn.request("GET", "/metrics", headers={"Authorization": f"Basic {token}"})
        return conn.getresponse().status
    finally:
        conn.close()


def _need(tool: str) -> str:
    path = shutil.which(tool) or (tool if os.access(tool, os.X_OK) else None)
    if path is None:
        why = f"{tool} is missing (scripts/setup.sh --test installs podman, runc, mmdebstrap)"
        if _ci():
            pytest.fail(f"{why}; CI must run the container test")
        pytest.skip(why)
    return path


class Podman:
    """podman with its storage in ``directory``, runc, and rlimits it may set."""

    def __init__(self, directory: Path):
        self.exe = _need("podman")
        _need(RUNC)
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "containers.conf"
        conf.write_text('[containers]\ndefault_ulimits = ["nofile=1024:1024", '
                        '"nproc=1024:1024"]\n')
        self.env = dict(os.environ, CONTAINERS_CONF=str(conf))
        # podman refuses a run root path over 50 characters: a short one of its own.
        self.runroot = Path(tempfile.mkdtemp(prefix="tcprtt-podman-"))
        self.base = [self.exe, "--root", str(directory / "storage"),
                     "--runroot", str(self.runroot), "--runtime", RUNC]

    def run(self, *args: str, timeout: float = 120, check: bool = True):
        proc = subprocess.run([*self.base, *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {proc.stderr.strip()[-3000:]}")
        return proc

    def remove_all(self) -> None:
        self.run("rm", "--all", "--force", "--time", "2", check=False)
        self.run("rmi", "--all", "--force", check=False)
        shutil.rmtree(self.dir / "storage", ignore_errors=True)
        shutil.rmtree(self.runroot, ignore_errors=True)


def base_tarball(tmp_path_factory) -> Path:
    """mmdebstrap's Debian tree, made once and kept beside pytest's temporary
    directories; a fresh machine builds it."""
    mmdebstrap = _need("mmdebstrap")
    cache = tmp_path_factory.getbasetemp().parent / "tcprtt-container-cache"
    cache.mkdir(exist_ok=True)
    tarball = cache / f"{SUITE}-{INCLUDE.replace(',', '+')}.tar"
    if tarball.exists():
        return tarball
    partial = cache / f"partial-{os.getpid()}.tar"
    proc = subprocess.run([mmdebstrap, "--quiet", "--variant=apt", f"--include={INCLUDE}",
                           SUITE, str(partial)], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise AssertionError(f"mmdebstrap failed: {proc.stderr[-3000:]}")
    partial.rename(tarball)
    return tarball


def wheels(directory: Path) -> Path:
    """The project's dependencies (and its build backend) as wheels for the
    image's Python and this machine's architecture, by the host's pip."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = [*project["project"]["dependencies"], *project["build-system"]["requires"],
              "wheel"]
    machine = os.uname().machine
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in (36, 34, 28, 17, 5)]
    platforms += [f"manylinux2014_{machine}", f"manylinux1_{machine}", f"linux_{machine}"]
    out = directory / "wheels"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
         "--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp",
         *[a for p in platforms for a in ("--platform", p)], "--dest", str(out), *wanted],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def daemonset_container() -> dict:
    docs = list(yaml.safe_load_all((REPO / "deploy" / "daemonset.yaml").read_text()))
    ds = next(d for d in docs if d and d["kind"] == "DaemonSet")
    return ds["spec"]["template"]["spec"]["containers"][0]


def status_of(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return fields


@pytest.fixture
def tools():
    """podman, runc and mmdebstrap, or the test skips (fails under CI) first."""
    for tool in ("podman", RUNC, "mmdebstrap"):
        _need(tool)


def test_the_image_runs_as_the_daemonset_runs_it_and_prometheus_scrapes_it(
        tools, root, tmp_path, tmp_path_factory):
    podman = Podman(tmp_path / "podman")
    tarball = base_tarball(tmp_path_factory)
    secret = tmp_path / "secret"  # what the Secret's volume holds
    secret.mkdir()
    # One self-signed certificate for every node, as docs/fleet.md makes it:
    # Prometheus asks for its name, whatever the node's address.
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", f"/CN={SERVER_NAME}",
            "-addext", f"subjectAltName=DNS:{SERVER_NAME}",
            "-keyout", "server.key", "-out", "server.crt", cwd=secret)
    # Relative paths: beside web.yml, wherever the Secret is mounted.
    (secret / "web.yml").write_text(
        tls_and_auth({"server.crt": "server.crt", "server.key": "server.key"}))
    port = free_port()
    stop = threading.Event()
    traffic = threading.Thread(target=keep_traffic, args=(stop,))
    prom = None
    try:
        podman.run("import", str(tarball), BASE)
        wheelhouse = wheels(tmp_path)
        started = time.monotonic()
        podman.run("build", "--network", "host", "--build-arg", f"BASE={BASE}",
                   "--build-arg", "PIP_OPTIONS=--no-index --find-links /tmp/wheels",
                   "--volume", f"{wheelhouse}:/tmp/wheels:ro",
                   "--file", str(REPO / "deploy" / "Containerfile"), "--tag", IMAGE,
                   str(REPO), timeout=900)
        print(f"image built in {time.monotonic() - started:.1f} s")

        # The DaemonSet's container, its arguments with this test's port.
        spec = daemonset_container()
        security = spec["securityContext"]
        assert security["capabilities"] == {"drop": ["ALL"], "add": ["BPF", "PERFMON"]}
        assert security["readOnlyRootFilesystem"] is True
        args = list(spec["args"])
        args[args.index("--prometheus") + 1] = f"127.0.0.1:{port}"
        mounts = []
        for mount in spec["volumeMounts"]:
            if mount["mountPath"].startswith("/sys/"):
                assert mount["readOnly"] is True
                mounts += ["--volume", f"{mount['mountPath']}:{mount['mountPath']}:ro"]
            else:  # the web configuration's Secret
                mounts += ["--volume", f"{secret}:{mount['mountPath']}:ro"]
        # The seccomp profile that the DaemonSet names, as the node holds it.
        seccomp = security["seccompProfile"]
        assert seccomp["type"] == "Localhost"
        profile = REPO / "deploy" / f"seccomp-{seccomp['localhostProfile']}"
        name = f"tcprtt-test-{os.getpid()}"
        podman.run("run", "--detach", "--name", name, "--network", "host",
                   "--cap-drop", "all", "--cap-add", ",".join(
                       f"CAP_{c}" for c in security["capabilities"]["add"]),
                   "--security-opt", "no-new-privileges",
                   "--security-opt", f"seccomp={profile}",
                   "--read-only", "--read-only-tmpfs=false", *mounts, IMAGE, *args)
        pid = int(podman.run("inspect", "--format", "{{.State.Pid}}", name).stdout)
        # Exactly CAP_BPF and CAP_PERFMON, and nothing to write on.
        caps = int(status_of(pid)["CapEff"], 16)
        assert caps == (1 << CAP_BPF) | (1 << CAP_PERFMON), hex(caps)
        root_mount = [line.split() for line in
                      Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
                      if line.split()[4] == "/"][0]
        assert "ro" in root_mount[5].split(","), root_mount

        target = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if https_get(port, secret / "server.crt", PASSWORD) == 200:
                    break
            except OSError:
                pass
            state = podman.run("inspect", "--format", "{{.State.Running}}", name).stdout
            if state.strip() != "true" or time.monotonic() > deadline:
                logs = podman.run("logs", name, check=False)
                raise AssertionError(f"the container does not serve: {logs.stderr[-3000:]}")
            time.sleep(0.5)
        assert https_get(port, secret / "server.crt", "wrong") == 401

        jobs = (f"  - job_name: tcprtt\n    scheme: https\n"
                f"    tls_config:\n      ca_file: {secret / 'server.crt'}\n"
                f"      server_name: {SERVER_NAME}\n"
                f"    basic_auth:\n      username: prometheus\n      password: '{PASSWORD}'\n"
                f"    static_configs:\n      - targets: ['{target}']\n")
        prom_dir = tmp_path / "prometheus"
        prom_dir.mkdir()
        prom = start_prometheus(prom_dir, jobs)
        traffic.start()
        assert prom.wait_for("up == 1")
        first = sum(float(r["value"][1]) for r in prom.wait_for("tcp_srtt_seconds_count"))
        time.sleep(3)
        second = sum(float(r["value"][1]) for r in prom.wait_for("tcp_srtt_seconds_count"))
        assert second > first > 0
        # Keyed by remote address, as the DaemonSet asks: loopback is among them.
        keyed = prom.wait_for('tcp_srtt_seconds_count{remote_address=~"127[.]0[.]0[.].*"}')
        assert float(keyed[0]["value"][1]) > 0
        assert prom.wait_for("tcprtt_probe_info")

        podman.run("stop", "--time", "10", name, timeout=60)
        code = podman.run("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        logs = podman.run("logs", name, check=False).stderr
        assert code == "0", logs
        assert f"serving metrics on https://{target}/metrics" in logs
    finally:
        stop.set()
        if traffic.is_alive():
            traffic.join(timeout=30)
        if prom is not None:
            prom.close()
        podman.remove_all()
