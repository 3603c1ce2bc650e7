"""Publishing to and running from a real OCI registry (Debian's docker-registry)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from runner import reference, registry
from runner.build import host_arch
from runner.errors import RegistryError, UsageError
from runner.package import shipped

from .conftest import REPO, runner_cmd, runner_env
from .registry_server import registry as registry_server
from .traffic import tcp_pair

SHIPPED = shipped("raw_tp", host_arch()).parent.parent
ARCH = host_arch()


@pytest.fixture
def server(tmp_path):
    with registry_server(tmp_path / "registry") as s:
        yield s


def client(address: str, tag: str = "0.1", **kw) -> registry.Client:
    return registry.Client(reference.parse(f"{address}/tools/tcprtt:{tag}"), **kw)


def env_with_cache(cache_dir) -> dict:
    env = runner_env()
    env["XDG_CACHE_HOME"] = str(cache_dir)
    return env


def test_references_parse():
    r = reference.parse("127.0.0.1:5000/ns/tcprtt:1.2")
    assert (r.registry, r.repository, r.tag, r.digest) == ("127.0.0.1:5000", "ns/tcprtt", "1.2",
                                                            None)
    assert r.is_loopback
    r = reference.parse("ghcr.io/owner/tcprtt@sha256:" + "a" * 64)
    assert r.tag is None and r.target == "sha256:" + "a" * 64 and not r.is_loopback
    assert reference.parse("tcprtt").registry == "docker.io"
    assert reference.parse("tcprtt").repository == "library/tcprtt"
    assert reference.parse("localhost:5000/x").tag == "latest"
    for bad in ("Host/UPPER:tag", "x@sha256:abc", "x:bad tag"):
        with pytest.raises(UsageError):
            reference.parse(bad)


def test_push_lays_out_an_index_over_per_variant_manifests(server):
    c = client(server.address)
    digest = registry.push(c, registry.release_packages(SHIPPED))
    body, media, got = c.get_manifest("0.1")
    assert media == registry.MEDIA_INDEX and got == digest
    index = json.loads(body)
    platforms = {(e["platform"]["architecture"], e["annotations"][registry.VARIANT])
                 for e in index["manifests"]}
    assert platforms == {(a, v) for a in ("amd64", "arm64")
                         for v in ("fentry", "kprobe", "raw_tp", "tracepoint")}
    entry = index["manifests"][0]
    mbody, mmedia, _ = c.get_manifest(entry["digest"])
    manifest = json.loads(mbody)
    # The layout ecli pulls: wasm config, one layer with a title.
    assert mmedia == registry.MEDIA_MANIFEST
    assert manifest["config"]["mediaType"] == registry.MEDIA_CONFIG
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == registry.MEDIA_LAYER
    assert layer["annotations"][registry.TITLE].endswith(".json")
    # Each manifest is also reachable by a tag of its own.
    one, _, _ = c.get_manifest("0.1-raw_tp-amd64")
    assert json.loads(one)["annotations"][registry.VARIANT] == "raw_tp"


def test_pull_then_run_from_the_pulled_packages_on_real_traffic(root, server, tmp_path):
    registry.push(client(server.address), registry.release_packages(SHIPPED))
    env = env_with_cache(tmp_path / "cache")
    image = f"{server.address}/tools/tcprtt:0.1"
    pulled = subprocess.run(runner_cmd("pull", image), cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=60)
    assert pulled.returncode == 0, pulled.stderr
    assert "raw_tp:" in pulled.stdout and str(tmp_path / "cache" / "tcprtt") in pulled.stdout
    proc = subprocess.Popen(runner_cmd("--image", image, "-B", "--json", "-d", "3"), cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "Tracing TCP RTT" in line, line
        with tcp_pair() as pair:
            pair.exchange(200)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    records = [json.loads(x) for x in out.splitlines()]
    assert any(r["address"] == "127.0.0.1" and r["count"] >= 200 for r in records)


def test_pull_by_digest_and_run_pinned_offline(root, server, tmp_path):
    digest = registry.push(client(server.address), registry.release_packages(SHIPPED))
    pinned = f"{server.address}/tools/tcprtt@{digest}"
    env = env_with_cache(tmp_path / "cache")
    first = subprocess.run(runner_cmd("pull", pinned), cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0].endswith(digest)
    server.stop()  # the registry is gone: a pinned, cached reference still runs
    run = subprocess.run(runner_cmd("--image", pinned, "-d", "1"), cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "All Addresses" in run.stdout


def test_already_pulled_tag_runs_from_cache_when_registry_is_down(root, server, tmp_path):
    registry.push(client(server.address), registry.release_packages(SHIPPED))
    cache = registry.Cache(tmp_path / "cache" / "tcprtt")
    registry.pull(client(server.address), cache, ARCH)
    server.stop()
    run = subprocess.run(runner_cmd("--image", f"{server.address}/tools/tcprtt:0.1", "-d", "1"),
                         cwd=REPO, env=env_with_cache(tmp_path / "cache"), capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "connection refused; running the cached" in run.stderr


def test_tampered_blob_is_refused_and_nothing_is_cached(server, tmp_path):
    registry.push(client(server.address), registry.release_packages(SHIPPED))
    c = client(server.address)
    index = json.loads(c.get_manifest("0.1")[0])
    entry = next(e for e in index["manifests"]
                 if e["platform"]["architecture"] == registry.OCI_ARCH[ARCH])
    layer = json.loads(c.get_manifest(entry["digest"])[0])["layers"][0]
    data = server.blob_data(layer["digest"])
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF  # same size, other bytes
    data.write_bytes(bytes(raw))
    cache = registry.Cache(tmp_path / "cache")
    with pytest.raises(RegistryError, match="does not match its digest"):
        registry.pull(client(server.address), cache, ARCH)
    assert not cache.has(layer["digest"])
    assert cache.get_ref(c.ref) is None
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []


def test_registry_stopped_midway_gives_a_clear_error_and_an_intact_cache(server, tmp_path):
    registry.push(client(server.address), registry.release_packages(SHIPPED))
    cache = registry.Cache(tmp_path / "cache")
    c = client(server.address, timeout=2, retries=2)
    real_get_blob = c.get_blob
    calls = []

    def get_blob_after_stop(digest, size, cache_):
        calls.append(digest)
        if len(calls) == 2:
            server.stop()  # the first blob arrived; the registry dies before the second
        return real_get_blob(digest, size, cache_)
    c.get_blob = get_blob_after_stop
    with pytest.raises(RegistryError, match="connection refused"):
        registry.pull(c, cache, ARCH)
    assert cache.has(calls[0]) and not cache.has(calls[1])
    cache.read(calls[0])  # what was stored is whole and checked
    assert cache.get_ref(c.ref) is None, "a reference is recorded only when complete"
    assert registry.cached(c.ref, cache, ARCH) is None


def test_unreachable_and_missing_references_are_named(server):
    with pytest.raises(RegistryError, match=r"cannot reach registry 127.0.0.1:1: connection"):
        client("127.0.0.1:1", timeout=1)
    with pytest.raises(RegistryError, match=rf"{server.address}/tools/tcprtt:nope: not found"):
        client(server.address, tag="nope").get_manifest("nope")


def test_layer_titles_never_become_paths(server, tmp_path):
    c = client(server.address, tag="evil")
    pkg = (SHIPPED / ARCH / "tcprtt.raw_tp.json").read_bytes()
    layer = c.put_blob(pkg)
    config = c.put_blob(b"{}")
    for title in ("../../escaped.json", "/tmp/escaped-abs.json"):
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": registry.MEDIA_MANIFEST,
            "config": {"mediaType": registry.MEDIA_CONFIG, "digest": config, "size": 2},
            "layers": [{"mediaType": registry.MEDIA_LAYER, "digest": layer, "size": len(pkg),
                        "annotations": {registry.TITLE: title}}]}).encode()
        c.put_manifest(manifest, registry.MEDIA_MANIFEST, "evil")
        cache = registry.Cache(tmp_path / "deep" / "cache")
        pulled = registry.pull(c, cache, ARCH)
        for path in pulled.packages.values():
            assert path.resolve().is_relative_to((tmp_path / "deep" / "cache").resolve())
    assert not (tmp_path / "escaped.json").exists()
    assert not os.path.exists("/tmp/escaped-abs.json")


def test_oversized_manifest_entries_are_refused_before_download(server, tmp_path):
    c = client(server.address, tag="big")
    pkg = (SHIPPED / ARCH / "tcprtt.raw_tp.json").read_bytes()
    layer = c.put_blob(pkg)
    config = c.put_blob(b"{}")
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": registry.MEDIA_MANIFEST,
        "config": {"mediaType": registry.MEDIA_CONFIG, "digest": config, "size": 2},
        "layers": [{"mediaType": registry.MEDIA_LAYER, "digest": layer, "size": 10 ** 10}]})
    c.put_manifest(manifest.encode(), registry.MEDIA_MANIFEST, "big")
    with pytest.raises(RegistryError, match="over the .*-byte limit"):
        registry.pull(c, registry.Cache(tmp_path / "cache"), ARCH)


def test_tls_with_basic_auth(tmp_path):
    with registry_server(tmp_path / "secure", tls=True, users={"ci": "s3cret"}) as s:
        ca = str(s.ca_file)
        packages = registry.release_packages(SHIPPED)
        with pytest.raises(RegistryError, match="asks for credentials"):
            client(s.address, ca_file=ca)
        wrong = client(s.address, ca_file=ca,
                       credentials=registry.Credentials("ci", "wrong"))
        with pytest.raises(RegistryError, match="401 unauthorized"):
            registry.push(wrong, packages)
        with pytest.raises(RegistryError, match="certificate"):
            client(s.address, credentials=registry.Credentials("ci", "s3cret"), retries=1)
        right = client(s.address, ca_file=ca, credentials=registry.Credentials("ci", "s3cret"))
        assert right.scheme == "https"
        digest = registry.push(right, packages)
        pulled = registry.pull(right, registry.Cache(tmp_path / "cache"), ARCH)
        assert pulled.digest == digest and "raw_tp" in pulled.packages


def test_docker_config_credentials_are_used(tmp_path):
    import base64
    with registry_server(tmp_path / "secure", tls=True, users={"ci": "s3cret"}) as s:
        home = tmp_path / "home"
        (home / ".docker").mkdir(parents=True)
        auth = base64.b64encode(b"ci:s3cret").decode()
        (home / ".docker" / "config.json").write_text(
            json.dumps({"auths": {s.address: {"auth": auth}}}))
        env = runner_env()
        env["HOME"] = str(home)
        env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
        env.pop("DOCKER_CONFIG", None)
        pushed = subprocess.run(runner_cmd("push", f"{s.address}/tools/tcprtt:1",
                                           "--ca-file", str(s.ca_file)),
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert pushed.returncode == 0, pushed.stderr
        assert pushed.stdout.startswith(f"{s.address}/tools/tcprtt@sha256:")


def test_plain_http_is_refused_off_loopback_without_insecure():
    ref = reference.parse("192.0.2.1:5000/tools/tcprtt:1")
    assert not ref.is_loopback
    with pytest.raises(RegistryError, match="cannot reach registry 192.0.2.1:5000"):
        # 192.0.2.0/24 is TEST-NET-1 and never routed; the attempt is HTTPS only.
        registry.Client(ref, timeout=0.5, retries=1)
