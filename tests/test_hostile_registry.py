"""A registry that attacks the client, and a cache that attacks the runner.

Each test builds its adversary itself: a misbehaving registry on 127.0.0.1
(tests/malicious_registry.py), links planted in a cache under tmp_path, a
1 MB tmpfs in a private mount namespace. Nothing leaves the machine: the
one test that names a remote host checks that no lookup or connection for
it is made.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from runner import cache as cache_mod
from runner import oci, reference, registry
from runner.build import host_arch
from runner.errors import RegistryError, UsageError
from runner.package import shipped

from .conftest import REPO, runner_cmd, runner_env
from .malicious_registry import Answer, Seen, json_error, serve
from .traffic import free_port

ARCH = host_arch()
PACKAGE = shipped("raw_tp", ARCH).read_bytes()
REPOSITORY = "tools/tcprtt"
HOSTILE = "\x1b[2J\x1b]0;owned\x07BEL\x07\nforged line\rCR\x9b\u202e"
RAW = ("\x1b", "\x07", "\n", "\r", "\x9b", "\u202e")
CREDS = oci.Credentials("ci", "pw-must-not-leak")
CREDS_ENV = {"TCPRTT_REGISTRY_USERNAME": CREDS.username, "TCPRTT_REGISTRY_PASSWORD": CREDS.password}


# -- a release the malicious registry serves ---------------------------------------------------

class Release:
    """A release of one manifest (any tag) whose layer is ``layer``."""

    def __init__(self, layer: bytes = PACKAGE):
        self.layer = layer
        config = b"{}"
        self.blobs = {oci.sha256(layer): layer, oci.sha256(config): config}
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": oci.MEDIA_MANIFEST,
            "config": {"mediaType": registry.MEDIA_CONFIG, "digest": oci.sha256(config),
                       "size": len(config)},
            "layers": [{"mediaType": registry.MEDIA_LAYER, "digest": oci.sha256(layer),
                        "size": len(layer),
                        "annotations": {registry.TITLE: "tcprtt.raw_tp.json"}}],
            "annotations": {registry.VARIANT: "raw_tp", registry.ARCH: ARCH}}).encode()
        self.digest = oci.sha256(self.manifest)
        self.layer_digest = oci.sha256(layer)

    def answer(self, seen: Seen) -> Answer:
        prefix = f"/v2/{REPOSITORY}/"
        if seen.path == "/v2/":
            return Answer(200, {"Content-Type": "application/json"}, b"{}")
        if seen.path.startswith(prefix + "manifests/"):
            return Answer(200, {"Content-Type": oci.MEDIA_MANIFEST,
                                "Docker-Content-Digest": self.digest}, self.manifest)
        if seen.path.startswith(prefix + "blobs/"):
            blob = self.blobs.get(seen.path.rsplit("/", 1)[1])
            if blob is not None:
                return Answer(200, {"Content-Type": "application/octet-stream"}, blob)
        return json_error(404, "not here", "NOT_FOUND")


def ref_of(address: str, tag: str = "1") -> reference.Reference:
    return reference.parse(f"{address}/{REPOSITORY}:{tag}")


def client(address: str, **kw) -> oci.Client:
    return oci.Client(ref_of(address), **kw)


def tcprtt(*args: str, cache: Path, env: dict | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess:
    full = runner_env()
    full["XDG_CACHE_HOME"] = str(cache)
    for name in ("TCPRTT_REGISTRY_USERNAME", "TCPRTT_REGISTRY_PASSWORD", "DOCKER_CONFIG"):
        full.pop(name, None)
    full["DOCKER_CONFIG"] = str(cache / "no-docker-config")
    full.update(env or {})
    return subprocess.run(runner_cmd(*args), cwd=REPO, env=full, capture_output=True,
                          text=True, timeout=timeout)


def one_line(proc: subprocess.CompletedProcess, code: int) -> str:
    """The single stderr line of a command that failed with ``code``, checked
    to carry no raw control character."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stderr.endswith("\n") and proc.stderr.count("\n") == 1, proc.stderr
    line = proc.stderr[:-1]
    assert not any(c in line for c in RAW), repr(line)
    assert "Traceback" not in line
    return line


def leftovers(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.name.startswith(cache_mod.TMP_PREFIX))


# -- item 3: credentials go to the registry's origin only -------------------------------------

def test_an_upload_location_on_another_port_gets_no_credentials(tmp_path):
    """The registry (Basic auth) starts an upload and sends the client to
    another port; that port asks for credentials. The client refuses, and
    that port never sees an Authorization header, from the API or from
    `tcprtt push` with credentials."""
    release = Release()
    with serve(lambda s: Answer(401, {"WWW-Authenticate": 'Basic realm="grab"'})) as thief:
        def registry_app(seen: Seen) -> Answer:
            if seen.headers.get("authorization") != CREDS.basic():
                return Answer(401, {"WWW-Authenticate": 'Basic realm="tcprtt"'})
            if seen.method == "HEAD":
                return Answer(404)
            if seen.method == "POST" and seen.path.endswith("/blobs/uploads/"):
                return Answer(202, {"Location": f"{thief.origin}/upload/1"})
            return release.answer(seen)

        with serve(registry_app) as server:
            c = client(server.address, credentials=CREDS)
            with pytest.raises(RegistryError) as raised:
                c.put_blob(b"{}")
            message = str(raised.value)
            assert f"http://127.0.0.1:{thief.port}" in message
            assert "not the registry's origin" in message and "none were sent" in message
            assert any(s.method == "PUT" for s in thief.seen), "the upload was not tried"
            # The command, with credentials from the environment.
            cli = tcprtt("push", ref_of(server.address).__str__(), "--no-module",
                         cache=tmp_path, env=CREDS_ENV)
            line = one_line(cli, 1)
            assert "not the registry's origin" in line and str(thief.port) in line
            assert CREDS.password not in line
            assert any("authorization" in s.headers for s in server.seen)  # the control
        assert thief.seen, "the other port was never asked"
        assert not [s for s in thief.seen if "authorization" in s.headers]


def test_a_redirect_to_another_port_gets_no_credentials():
    """A blob GET redirected to another port goes there without the
    registry's credentials; a 401 from there is refused, not answered."""
    release = Release()
    with serve(lambda s: Answer(401, {"WWW-Authenticate": 'Basic realm="grab"'})) as thief:
        def registry_app(seen: Seen) -> Answer:
            if seen.headers.get("authorization") != CREDS.basic():
                return Answer(401, {"WWW-Authenticate": 'Basic realm="tcprtt"'})
            if "/blobs/" in seen.path:
                return Answer(307, {"Location": f"{thief.origin}{seen.path}"})
            return release.answer(seen)

        with serve(registry_app) as server:
            c = client(server.address, credentials=CREDS)
            with pytest.raises(RegistryError, match="not the registry's origin"):
                c.request("GET", f"blobs/{release.layer_digest}")
        assert thief.seen
        assert not [s for s in thief.seen if "authorization" in s.headers]


def _no_traffic_off_loopback(monkeypatch) -> list[str]:
    """Fail any name lookup or connection in this process for a host that is
    not loopback; returns the hosts that were asked for."""
    asked: list[str] = []
    real_getaddrinfo = socket.getaddrinfo
    real_create = socket.create_connection

    def loopback(host) -> bool:
        host = host.decode() if isinstance(host, bytes) else str(host)
        asked.append(host)
        return reference.is_loopback_host(host)

    def getaddrinfo(host, *args, **kwargs):
        if not loopback(host):
            pytest.fail(f"a name lookup for {host!r} left the machine")
        return real_getaddrinfo(host, *args, **kwargs)

    def create_connection(address, *args, **kwargs):
        if not loopback(address[0]):
            pytest.fail(f"a connection to {address!r} was attempted")
        return real_create(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return asked


def test_a_plain_http_token_realm_elsewhere_gets_nothing(monkeypatch):
    """A bearer realm on another host over plain HTTP is refused with the
    reason, before any lookup or connection for that host. A loopback realm
    on another port is allowed by the rule, and does get the credentials."""
    asked = _no_traffic_off_loopback(monkeypatch)
    realm = "http://example.invalid/token"

    def app(seen: Seen) -> Answer:
        return Answer(401, {"WWW-Authenticate":
                            f'Bearer realm="{realm}",service="reg",scope="repository:x:pull"'})

    with serve(app) as server:
        c = client(server.address, credentials=CREDS)
        with pytest.raises(RegistryError) as raised:
            c.get_manifest("1")
        message = str(raised.value)
        assert "http://example.invalid:80" in message and "plain HTTP, not on loopback" in message
        assert "none were sent" in message
        assert all(s.path.startswith("/v2/") for s in server.seen)
    assert "example.invalid" not in asked
    assert asked, "the check saw no lookup at all: it checks nothing"

    # The rule allows a loopback token service on another port over HTTP.
    def token_app(seen: Seen) -> Answer:
        if seen.headers.get("authorization") != CREDS.basic():
            return Answer(401)
        return Answer(200, {"Content-Type": "application/json"}, b'{"token": "t0k"}')

    release = Release()
    with serve(token_app) as tokens:
        def guarded(seen: Seen) -> Answer:
            if seen.headers.get("authorization") != "Bearer t0k":
                return Answer(401, {"WWW-Authenticate": f'Bearer realm="{tokens.origin}/t"'})
            return release.answer(seen)

        with serve(guarded) as server:
            assert client(server.address, credentials=CREDS).get_manifest("1")[2] == \
                release.digest
        assert [s for s in tokens.seen if "authorization" in s.headers]


def test_loopback_is_never_reached_through_a_proxy(monkeypatch, tmp_path):
    """Plain HTTP and credentials are allowed to loopback because they stay
    on the machine: a proxy from the environment does not get them."""
    release = Release()

    def guarded(seen: Seen) -> Answer:
        if seen.headers.get("authorization") != CREDS.basic():
            return Answer(401, {"WWW-Authenticate": 'Basic realm="tcprtt"'})
        return release.answer(seen)

    with serve(lambda s: Answer(502)) as proxy, serve(guarded) as server:
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                     "all_proxy"):
            monkeypatch.setenv(name, proxy.origin)
        # The control: a plain requests session takes the proxy from the environment.
        assert requests.get(f"{server.origin}/v2/", timeout=5).status_code == 502
        assert len(proxy.seen) == 1
        pulled = registry.pull(client(server.address, credentials=CREDS),
                               registry.Cache(tmp_path / "cache"), ARCH)
        assert pulled.digest == release.digest
        assert len(proxy.seen) == 1
        assert [s for s in server.seen if s.headers.get("authorization") == CREDS.basic()]


# -- item 4: the cache opens nothing through a link --------------------------------------------

def _cache_with_release(root: Path, release: Release) -> registry.Cache:
    cache = registry.Cache(root / "tcprtt")
    cache.put(release.layer, release.layer_digest)
    cache.put(release.manifest, release.digest)
    return cache


def test_a_linked_tag_file_is_not_read(tmp_path):
    """A tag file that is a link to a file holding a good digest is not
    followed (the same digest in a plain file is: the control); one to a
    secret file never shows the secret, from the API or the command."""
    release = Release()
    cache = _cache_with_release(tmp_path / "cache", release)
    address = f"127.0.0.1:{free_port()}"  # nothing listens: pulling fails
    ref = ref_of(address)
    cache.set_ref(ref, release.digest)
    tag_file = tmp_path / "cache/tcprtt/refs" / address.replace(":", "_") / REPOSITORY / "1"
    assert tag_file.read_text() == release.digest
    assert registry.cached(ref, cache, ARCH) is not None  # the control: a plain file is read
    holds_digest = tmp_path / "elsewhere-digest"
    holds_digest.write_text(release.digest)
    tag_file.unlink()
    tag_file.symlink_to(holds_digest)
    assert cache.get_ref(ref) is None
    assert registry.cached(ref, cache, ARCH) is None
    secret = tmp_path / "secret"
    secret.write_text("TOPSECRET-4b1d")
    tag_file.unlink()
    tag_file.symlink_to(secret)
    assert cache.get_ref(ref) is None
    ran = tcprtt("--image", str(ref), "-d", "1", cache=tmp_path / "cache")
    line = one_line(ran, 1)
    assert "TOPSECRET" not in line and "connection refused" in line
    # A linked blob is neither taken as present nor read; the error names the link.
    blob = cache.path(release.layer_digest)
    blob.unlink()
    blob.symlink_to(secret)
    assert not cache.has(release.layer_digest)
    with pytest.raises(RegistryError) as raised:
        cache.read(release.layer_digest)
    assert "symbolic link" in str(raised.value) and "TOPSECRET" not in str(raised.value)
    # Pulling again puts a file where the link was, and leaves its target alone.
    with serve(release.answer) as server:
        pulled = registry.pull(client(server.address), cache, ARCH)
    assert pulled.packages["raw_tp"] == blob and not blob.is_symlink()
    assert blob.read_bytes() == release.layer
    assert secret.read_text() == "TOPSECRET-4b1d"
    # A FIFO in a file's place is not opened to wait on.
    os.mkfifo(blob.with_name("fifo"))
    blob.unlink()
    os.rename(blob.with_name("fifo"), blob)
    with pytest.raises(RegistryError, match="not a regular file"):
        cache.read(release.layer_digest)
    tag_file.unlink()
    os.mkfifo(tag_file)
    assert cache.get_ref(ref) is None


@pytest.mark.parametrize("linked", ["tcprtt", "tcprtt/blobs", "tcprtt/blobs/sha256",
                                    "tcprtt/refs"])
def test_a_linked_cache_directory_is_not_followed(tmp_path, linked):
    """`tcprtt pull` into a cache where a directory is a link to another
    one: one line naming the link, and nothing written into its target."""
    cache = tmp_path / "cache"
    target = tmp_path / "target"
    target.mkdir()
    link = cache / linked
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)
    with serve(Release().answer) as server:
        ran = tcprtt("pull", str(ref_of(server.address)), cache=cache)
        assert any("/blobs/" in p for p in server.paths())  # it got as far as the cache
    line = one_line(ran, 1)
    assert "symbolic link" in line and str(link) in line
    assert list(target.rglob("*")) == []


# -- item 5: a server's control characters are escaped ------------------------------------------

def _answers(where: dict[str, str]) -> dict:
    """Answers that carry control characters in what the client may repeat;
    ``where["origin"]`` is the server's own origin, filled in once it runs."""
    release = Release()

    def manifest_error(status: int):
        def app(seen: Seen) -> Answer:
            if "/manifests/" in seen.path:
                return json_error(status, HOSTILE, code=HOSTILE)
            return release.answer(seen)
        return app

    def reason(seen: Seen) -> Answer:
        if "/manifests/" in seen.path:
            return Answer(500, reason="Oops\x1b[31m\x07\rred")
        return release.answer(seen)

    def lying_digest(seen: Seen) -> Answer:
        answer = release.answer(seen)
        if "/manifests/" in seen.path:
            # a header carries Latin-1 and no line break
            answer.headers["Docker-Content-Digest"] = "sha256:\x1b[2J\x07\x9bX"
        return answer

    def media_type(seen: Seen) -> Answer:
        if "/manifests/" in seen.path:
            body = json.dumps({"mediaType": HOSTILE}).encode()
            return Answer(200, {"Content-Type": "application/json"}, body)
        return release.answer(seen)

    def token_error(seen: Seen) -> Answer:
        if seen.path.startswith("/token"):
            return json_error(403, HOSTILE, code="DENIED" + HOSTILE)
        if seen.headers.get("authorization") != "Bearer t":
            return Answer(401, {"WWW-Authenticate": f'Bearer realm="{where["origin"]}/token"'})
        return release.answer(seen)

    def blob_error(seen: Seen) -> Answer:
        if "/blobs/" in seen.path:
            return json_error(400, HOSTILE, code=HOSTILE)
        return release.answer(seen)

    def schema(seen: Seen) -> Answer:
        if "/manifests/" in seen.path:
            body = json.dumps({"schemaVersion": 2, "mediaType": oci.MEDIA_MANIFEST,
                               "config": HOSTILE, "layers": [HOSTILE]}).encode()
            return Answer(200, {"Content-Type": oci.MEDIA_MANIFEST}, body)
        return release.answer(seen)

    return {"403": manifest_error(403), "401": manifest_error(401),
            "400": manifest_error(400), "reason": reason, "digest header": lying_digest,
            "media type": media_type, "token service": token_error, "blob": blob_error,
            "schema": schema}


@pytest.mark.parametrize("case", list(_answers({})))
def test_control_characters_from_a_server_are_escaped(tmp_path, case, monkeypatch):
    """ESC, BEL, CR, newlines, C1 and bidi controls a registry puts in its
    error text, reason phrase, headers or documents reach every message
    escaped: the API's, and the command's one line on stderr."""
    where: dict[str, str] = {}
    monkeypatch.setattr(oci, "RETRY_DELAY", 0.0)
    with serve(_answers(where)[case]) as server:
        where["origin"] = server.origin
        c = client(server.address, credentials=CREDS)
        with pytest.raises(RegistryError) as raised:
            registry.pull(c, registry.Cache(tmp_path / "api"), ARCH)
        message = str(raised.value)
        assert not any(ch in message for ch in RAW), repr(message)
        assert "\\x1b" in message, message  # escaped, not dropped
        ran = tcprtt("pull", str(ref_of(server.address)), cache=tmp_path / "cli", env=CREDS_ENV)
    line = one_line(ran, 1)
    assert "\\x1b" in line, line


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _deep_answers(where: dict[str, str]) -> dict:
    """Registry answers nested too deep: for the JSON parser's recursion, or
    just over what the client takes."""
    release = Release()
    manifest = json.loads(release.manifest)
    deep: object = "x"
    for _ in range(oci.MAX_JSON_DEPTH):
        deep = [deep]
    manifest["annotations"]["deep"] = deep

    def on_manifest(answer: Answer):
        def app(seen: Seen) -> Answer:
            return answer if "/manifests/" in seen.path else release.answer(seen)
        return app

    def token(seen: Seen) -> Answer:
        if seen.path.startswith("/token"):
            return Answer(200, {"Content-Type": "application/json"}, _nested(100_000))
        if seen.headers.get("authorization") != "Bearer t":
            return Answer(401, {"WWW-Authenticate": f'Bearer realm="{where["origin"]}/token"'})
        return release.answer(seen)

    return {
        "manifest": on_manifest(Answer(200, {"Content-Type": oci.MEDIA_MANIFEST},
                                       _nested(100_000))),
        "manifest over the limit": on_manifest(Answer(
            200, {"Content-Type": oci.MEDIA_MANIFEST}, json.dumps(manifest).encode())),
        "error body": on_manifest(Answer(400, {"Content-Type": "application/json"},
                                         b'{"errors": ' + _nested(100_000) + b"}")),
        "token": token,
    }


@pytest.mark.parametrize("case", list(_deep_answers({})))
def test_deeply_nested_json_from_a_registry_is_one_line(tmp_path, case):
    where: dict[str, str] = {}
    with serve(_deep_answers(where)[case]) as server:
        where["origin"] = server.origin
        with pytest.raises(RegistryError) as raised:
            registry.pull(client(server.address, credentials=CREDS),
                          registry.Cache(tmp_path / "api"), ARCH)
        ran = tcprtt("pull", str(ref_of(server.address)), cache=tmp_path / "cli", env=CREDS_ENV)
    line = one_line(ran, 1)
    for message in (str(raised.value), line):
        if case == "error body":
            assert "manifest 1: 400" in message  # the status stands; its body is not read
        elif case == "token":
            assert "the token service gave no token" in message
        else:
            assert f"nested over {oci.MAX_JSON_DEPTH} levels" in message
    assert not list((tmp_path / "cli").rglob("sha256/*"))


# -- item 6: a dripping registry, and what a killed pull leaves -------------------------------

GRACE = 1.0  # seconds per exchange, through the environment variable the client documents
DRIP = GRACE / 4  # a byte well within any per-read timeout: only a total deadline ends it


def _drip(release: Release, where: str, every: float = DRIP):
    """The release, with the answers to paths that hold ``where`` (the API
    check alone if it is /v2/) sent a byte every ``every`` seconds."""
    def app(seen: Seen) -> Answer:
        answer = release.answer(seen)
        if seen.path == where or (where != "/v2/" and where in seen.path):
            answer.drip = every
        return answer
    return app


@pytest.mark.parametrize("command,where", [("pull", "/manifests/"), ("pull", "/blobs/"),
                                           ("--image", "/v2/"), ("--image", "/manifests/")])
def test_a_dripping_registry_is_cut_off_by_the_deadline(tmp_path, command, where):
    release = Release(os.urandom(200))  # small: dripped, even this takes minutes
    with serve(_drip(release, where)) as server:
        args = [command, str(ref_of(server.address))] + (["-d", "1"] if command != "pull"
                                                          else [])
        started = time.monotonic()
        ran = tcprtt(*args, cache=tmp_path, env={"TCPRTT_REGISTRY_TIMEOUT": str(GRACE)},
                     timeout=40)
        took = time.monotonic() - started
        dripped = [s for s in server.seen if where in s.path]
    line = one_line(ran, 1)
    assert "timed out" in line
    assert dripped
    # Each exchange ends within GRACE (and what it moved at MIN_RATE); a request
    # is tried RETRIES times at most, with the delays between.
    bound = oci.RETRIES * (GRACE + 0.5) + oci.RETRY_DELAY * (2 ** oci.RETRIES) + 10
    assert GRACE <= took < bound, (took, bound)


def test_the_default_deadline_is_the_module_constant(tmp_path, monkeypatch):
    """Unset, the grace is oci.TIMEOUT, read when a client is made: a
    registry that drips a byte a second is cut off after it, once per try."""
    monkeypatch.delenv(oci.TIMEOUT_ENV, raising=False)
    monkeypatch.setattr(oci, "TIMEOUT", GRACE)
    monkeypatch.setattr(oci, "RETRY_DELAY", 0.0)
    release = Release()
    with serve(_drip(release, "/manifests/", every=1.0)) as server:
        c = client(server.address)
        assert c.timeout == GRACE
        started = time.monotonic()
        with pytest.raises(RegistryError, match=r"manifest 1: failed after 3 tries \(timed out\)"):
            registry.pull(c, registry.Cache(tmp_path / "cache"), ARCH)
        took = time.monotonic() - started
        assert len([s for s in server.seen if "/manifests/" in s.path]) == oci.RETRIES
    assert oci.RETRIES * GRACE <= took < oci.RETRIES * (GRACE + 1.0), took


def test_a_bad_timeout_setting_is_one_line(tmp_path):
    for value in ("0", "-1", "nan", "inf", "1e9", "soon", ""):
        ran = tcprtt("pull", "127.0.0.1:1/tools/tcprtt:1", cache=tmp_path,
                     env={"TCPRTT_REGISTRY_TIMEOUT": value})
        if value == "":
            assert "TCPRTT_REGISTRY_TIMEOUT" not in ran.stderr  # unset: the default
            continue
        line = one_line(ran, 2)
        assert "TCPRTT_REGISTRY_TIMEOUT" in line and repr(value) in line


def test_a_pull_killed_mid_download_leaves_nothing_and_old_temporaries_are_swept(tmp_path):
    release = Release(os.urandom(4096))
    cache = tmp_path / "cache"
    blobs = cache / "tcprtt/blobs/sha256"
    with serve(_drip(release, f"/blobs/{release.layer_digest}", every=1.0)) as server:
        env = runner_env()
        env["XDG_CACHE_HOME"] = str(cache)
        proc = subprocess.Popen(runner_cmd("pull", str(ref_of(server.address))), cwd=REPO,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while not [s for s in server.seen if release.layer_digest in s.path]:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "the pull never asked for the blob"
                time.sleep(0.05)
            time.sleep(1.5)  # a few bytes dripped
            assert proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (blobs / release.layer_digest.split(":")[1]).exists()
    assert leftovers(cache) == []  # a download is held in memory until it is checked
    # What a writer killed mid-write leaves: an unlocked temporary, a minute old.
    blobs.mkdir(parents=True, exist_ok=True)
    abandoned = blobs / ".tmp-0123456789abcdef"
    abandoned.write_bytes(b"half a blob")
    an_hour_ago = time.time() - 60
    os.utime(abandoned, (an_hour_ago, an_hour_ago))
    # One a live writer holds (locked) stays, however old.
    held = blobs / ".tmp-fedcba9876543210"
    held.write_bytes(b"being written")
    os.utime(held, (an_hour_ago, an_hour_ago))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(held)!r}, os.O_RDONLY)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(30)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with serve(release.answer) as server:
            ran = tcprtt("pull", str(ref_of(server.address)), cache=cache)
        assert ran.returncode == 0, ran.stderr
        assert (blobs / release.layer_digest.split(":")[1]).read_bytes() == release.layer
        assert not abandoned.exists()
        assert held.exists()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert leftovers(cache) == [held]


# -- item 10: references the parser must refuse, and a full disk ------------------------------

UNUSABLE = [  # each gave requests, urllib3 or the resolver something to crash on
    "127.0.0.1:99999/tools/tcprtt:1",
    "a..b/tools/tcprtt:1",
    "[zz]/tools/tcprtt:1",
    "a" * 300 + ".example/tools/tcprtt:1",
    "[::1/x/y:1",
    "127.0.0.1:5000/" + "/".join(["a"] * 2000) + ":1",
    "127.0.0.1:5000/" + "a" * 300 + ":1",
]
UNUSABLE_TOO = [
    "127.0.0.1:0/tools/tcprtt:1",
    "[zz]:5000/tools/tcprtt:1",
    "x" * 64 + ".example/tools/tcprtt:1",
    "[::1]x/tools/tcprtt:1",
    "-lead.example/tools/tcprtt:1",
    "127.0.0.1:/tools/tcprtt:1",
    "127.0.0.1:5x/tools/tcprtt:1",
    "127.0.0.1:\u0665\u0660\u0660\u0660/tools/tcprtt:1",
]


@pytest.mark.parametrize("text", UNUSABLE, ids=range(len(UNUSABLE)))
def test_references_requests_cannot_use_are_refused(tmp_path, text):
    with pytest.raises(UsageError):
        reference.parse(text)
    for command in (["pull", "--", text], [f"--image={text}", "-d", "1"]):
        line = one_line(tcprtt(*command, cache=tmp_path), 2)
        assert "image reference" in line
        assert len(line) < 600


@pytest.mark.parametrize("text", UNUSABLE_TOO, ids=range(len(UNUSABLE_TOO)))
def test_more_unusable_references_are_refused(text):
    with pytest.raises(UsageError) as raised:
        reference.parse(text)
    assert "\n" not in str(raised.value) and "image reference" in str(raised.value)


def test_every_reference_the_parser_accepts_is_one_requests_can_use():
    """Random references from a fixed seed, built from the pieces that broke
    things: whatever the parser accepts makes a URL requests prepares, with
    an origin the client can compare."""
    rng = random.Random(16)
    hosts = ["127.0.0.1", "localhost", "a", "a-b.c", "[::1]", "[fe80::1%eth0]", "0", "a.", ".a",
             "a..b", "[zz]", "x" * 63, "x" * 64, ("y" * 60 + ".") * 5, "1.2.3.4.5", "xn--a",
             "ä.com", "a_b.com", "[::1", "::1", "[::ffff:1.2.3.4]", "-a", "a-"]
    ports = ["", ":1", ":65535", ":65536", ":99999", ":0", ":00080", ":-1", ":", ":1x"]
    repos = ["t", "a/b", "a//b", "a/" * 200 + "b", "a" * 255, "a" * 256, "a.b_c__d-e/f",
             "A/b", "a/b/", "a\n", "a/./b", "a/../b"]
    tags = ["", ":1", ":latest", ":" + "t" * 128, ":" + "t" * 129, ":1\n", ":.x", ":x\x1b"]
    accepted = 0
    for _ in range(3000):
        text = rng.choice(hosts) + rng.choice(ports) + "/" + rng.choice(repos) + \
            rng.choice(tags)
        try:
            ref = reference.parse(text)
        except UsageError as exc:
            assert "\n" not in str(exc) and "\x1b" not in str(exc)
            continue
        accepted += 1
        for scheme in ("http", "https"):
            url = f"{scheme}://{ref.api_host}/v2/{ref.repository}/manifests/{ref.target}"
            requests.Request("GET", url).prepare()
            oci._origin(url)
    assert accepted > 100


FUZZ_STATUSES = [200, 200, 201, 202, 204, 206, 301, 302, 303, 307, 308, 400, 401, 403, 404,
                 429, 500, 503, 999, 100]
FUZZ_CASES = 80
FUZZ_SECONDS = 25.0


def _fuzz_answer(rng: random.Random, release: Release, origin: str) -> Answer:
    """A random answer built from the pieces that break clients: odd
    statuses, lying headers, bad realms and locations, malformed documents."""
    values = ["", "x", "file:///etc/passwd", "http://127.0.0.1:1/", f"{origin}/v2/", "//evil/",
              'Bearer realm=""', 'Bearer realm="http://[::1"', 'Bearer realm="http://h:99999/"',
              "Basic", f'Bearer realm="{origin}/t",scope="a"', oci.MEDIA_INDEX,
              oci.MEDIA_MANIFEST, "sha256:" + "a" * 64, "-1", "99999999999", "chunked", "gzip",
              HOSTILE.replace("\n", "").replace("\u202e", ""), "sha256:zz", "1e3", " 5"]
    names = ["Location", "WWW-Authenticate", "Content-Type", "Docker-Content-Digest",
             "Content-Length", "Transfer-Encoding", "Content-Encoding"]
    headers = {rng.choice(names): rng.choice(values) for _ in range(rng.randint(0, 4))}
    manifest = json.loads(release.manifest)
    manifest["layers"][0][rng.choice(["digest", "size", "mediaType"])] = \
        rng.choice([None, 1.5, "x", -3, [], True, 2 ** 70])
    index = {"schemaVersion": 2, "mediaType": oci.MEDIA_INDEX, "manifests": [
        {"mediaType": oci.MEDIA_MANIFEST, "digest": release.digest,
         "size": rng.choice([1, -1, 10 ** 30, len(release.manifest)]),
         "platform": {"architecture": rng.choice([registry.OCI_ARCH[ARCH], 1, None]),
                      "os": "linux"}}]}
    bodies = [b"", release.manifest, release.layer, json.dumps(index).encode(),
              json.dumps(manifest).encode(), b"\xff\xfe" + "{}".encode("utf-16-le"),
              json.dumps({"errors": rng.choice([[], [1], [{"code": 1}], "x", None])}).encode(),
              json.dumps(rng.choice([[], 1, "x", None, {"mediaType": [1]}, {"token": 5},
                                     {"token": "a b"}, {"token": "t"}])).encode(),
              bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64))), _nested(5000)]
    return Answer(rng.choice(FUZZ_STATUSES), headers, rng.choice(bodies))


def test_whatever_a_registry_answers_ends_in_one_clean_line(tmp_path, monkeypatch):
    """A bounded fuzz from a fixed seed: each exchange answered right or at
    random; pull and push end in success or a RegistryError of one line
    without control characters, never another exception."""
    monkeypatch.setattr(oci, "RETRY_DELAY", 0.0)
    rng = random.Random(1616)
    release = Release()
    kinds = set()
    started = time.monotonic()
    for case in range(FUZZ_CASES):
        if time.monotonic() - started > FUZZ_SECONDS:
            break
        plan: dict[tuple[str, str], Answer | None] = {}
        where: dict[str, str] = {}

        def app(seen: Seen, plan=plan, where=where) -> Answer:
            key = (seen.method, seen.path.split("?")[0])
            if key not in plan:
                plan[key] = None if rng.random() < 0.5 else \
                    _fuzz_answer(rng, release, where["origin"])
            return plan[key] or release.answer(seen)

        with serve(app) as server:
            where["origin"] = server.origin
            try:
                c = oci.Client(ref_of(server.address), credentials=rng.choice([None, CREDS]),
                               timeout=2, retries=2)
                if rng.random() < 0.8:
                    registry.pull(c, registry.Cache(tmp_path / str(case)), ARCH,
                                  module=rng.random() < 0.5)
                else:
                    c.put_blob(b"{}")
            except RegistryError as exc:
                message = str(exc)
                assert not any(ch in message for ch in RAW), (case, plan, message)
                kinds.add(message.split(":")[-1][:40])
            except Exception as exc:  # noqa: BLE001 - any other is the failure
                pytest.fail(f"case {case}: {type(exc).__name__}: {exc} ({plan})")
    assert len(kinds) >= 8, kinds  # the answers reached many parts of the client


@pytest.mark.parametrize("layer", [_nested(100_000), b"[]", b"\0asm\x01\0\0\0"],
                         ids=["nested", "list", "wasm"])
def test_a_pinned_digest_of_a_cached_layer_is_not_a_release(tmp_path, layer):
    """A reference pinned to a layer's digest, the layer cached by an
    earlier pull: the cache does not take it for a manifest, and the
    command says so in one line, offline."""
    release = Release(layer)
    with serve(release.answer) as server:
        address = server.address
        cache = registry.Cache(tmp_path / "cache" / "tcprtt")
        try:
            registry.pull(client(address), cache, ARCH)
        except RegistryError:
            pass  # what the layer is does not matter here; it is cached
    assert cache.has(release.layer_digest)
    pinned = reference.parse(f"{address}/{REPOSITORY}@{release.layer_digest}")
    assert registry.cached(pinned, cache, ARCH) is None
    line = one_line(tcprtt("--image", str(pinned), "-d", "1", cache=tmp_path / "cache"), 1)
    assert "connection refused" in line


@pytest.fixture
def full_disk_tools():
    for tool in ("unshare", "mount"):
        if not any(os.access(Path(d) / tool, os.X_OK) for d in os.environ["PATH"].split(":")):
            pytest.fail(f"{tool} is needed for the full-disk test")
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")


def test_a_full_disk_while_caching_is_one_line_and_leaves_nothing(tmp_path, full_disk_tools):
    """A 1 MB tmpfs as the cache, in a private mount namespace, and a blob
    larger than that."""
    release = Release(os.urandom(1536 << 10))
    disk = tmp_path / "disk"
    disk.mkdir()
    after = tmp_path / "after.txt"
    script = ('mount -t tmpfs -o size=1m tcprtt-test "$1" || exit 99\n'
              'shift\n'
              'disk=$1 after=$2; shift 2\n'
              '"$@"; rc=$?\n'
              'find "$disk" -type f -printf "%s %p\\n" > "$after"\n'
              'df -k "$disk" | tail -1 >> "$after"\n'
              'exit $rc\n')
    with serve(release.answer) as server:
        ref = str(ref_of(server.address))
        env = runner_env()
        env["XDG_CACHE_HOME"] = str(disk)
        ran = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
             str(disk), str(disk), str(after), *runner_cmd("pull", ref)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert any(release.layer_digest in p for p in server.paths())
    line = one_line(ran, 1)
    assert "no space left" in line and "nothing was kept" in line
    found = after.read_text().splitlines()
    assert found[-1].split()[1] == "1024", found  # it was the 1 MB tmpfs
    assert found[:-1] == [], found  # no blob, no temporary, no tag
    assert list(disk.iterdir()) == []  # the mount was private to the namespace


# -- item 13: a trailing newline --------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "127.0.0.1:5000/tools/tcprtt:1\n",
    "127.0.0.1:5000/tools/tcprtt\n",
    "127.0.0.1:5000/tools/tcprtt@sha256:" + "a" * 64 + "\n",
    "127.0.0.1:5000\n/tools/tcprtt:1",
    "127.0.0.1:5000/tools/tcprtt:1\r",
])
def test_a_reference_with_a_newline_is_refused(tmp_path, text):
    with pytest.raises(UsageError):
        reference.parse(text)
    for command in (["--image", text, "-d", "1"], ["pull", text]):
        line = one_line(tcprtt(*command, cache=tmp_path), 2)
        assert "image reference" in line


# -- item 14: messages that say what happened -------------------------------------------------

def test_a_file_redirect_and_a_403_are_not_unauthorized(tmp_path):
    release = Release()

    def to_file(seen: Seen) -> Answer:
        if "/manifests/" in seen.path:
            return Answer(302, {"Location": "file:///etc/passwd"})
        return release.answer(seen)

    def forbidden(seen: Seen) -> Answer:
        if "/manifests/" in seen.path:
            return json_error(403, "no pulls for you")
        return release.answer(seen)

    lines = {}
    for name, app in (("file", to_file), ("403", forbidden)):
        with serve(app) as server:
            lines[name] = one_line(tcprtt("pull", str(ref_of(server.address)),
                                          cache=tmp_path), 1)
    assert "redirected to a file: URL" in lines["file"]
    assert "403 forbidden" in lines["403"] and "no pulls for you" in lines["403"]
    assert not any("401" in line or "unauthorized" in line for line in lines.values())


@pytest.mark.parametrize("ca_file", ["/etc/passwd", str(REPO / "LICENSE")])
def test_a_ca_file_without_a_certificate_says_so(tmp_path, ca_file):
    with serve(Release().answer) as server:
        ran = tcprtt("pull", str(ref_of(server.address)), "--ca-file", ca_file,
                     cache=tmp_path)
        assert server.seen == []  # refused before any connection
    line = one_line(ran, 2)
    assert "--ca-file" in line and ca_file in line and "no PEM certificate" in line
    assert "not trusted" not in line
