"""Publishing to and running from a real OCI registry (Debian's docker-registry)."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from runner import reference, registry
from runner.build import host_arch
from runner.errors import RegistryError, UsageError
from runner.options import RegistryOptions
from runner.package import shipped
from runner.tcprtt.variants import names as variant_names

from .conftest import REPO, runner_cmd, runner_env, shared_file
from .registry_server import registry as registry_server
from .traffic import tcp_pair

SHIPPED = shipped("raw_tp", host_arch()).parent.parent
ARCH = host_arch()
# The smallest valid WebAssembly module, with a custom section so that it is
# tcprtt's own; the tests publish it where a release carries tcprtt.wasm.
MODULE = b"\0asm\x01\0\0\0" + bytes([0, 12, 11]) + b"tcprtt-test"
VARIANTS = tuple(sorted(variant_names()))  # as the tests list what was pulled


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


def push_release(address: str, tag: str = "0.1", module: bytes | None = MODULE,
                 repository: str = "tools/tcprtt") -> str:
    """A whole release, as the release job pushes it: module and packages."""
    c = registry.Client(reference.parse(f"{address}/{repository}:{tag}"))
    return registry.push(c, registry.release_packages(SHIPPED), module)


def blob(c: registry.Client, digest: str) -> bytes:
    resp = c.request("GET", f"blobs/{digest}")
    assert resp.status_code == 200
    return resp.content


def ecli_resolve(c: registry.Client, target: str, oci_arch: str) -> bytes:
    """What ecli's OCI client (oci-distribution, default config) makes of a
    reference: an index resolves to its FIRST entry whose platform is this OS
    and architecture; every layer must be of the wasm layer type; the first
    layer is what runs."""
    body, media, _ = c.get_manifest(target)
    doc = json.loads(body)
    if media == registry.MEDIA_INDEX:
        entry = next(e for e in doc["manifests"]
                     if e.get("platform", {}).get("os") == "linux"
                     and e.get("platform", {}).get("architecture") == oci_arch)
        doc = json.loads(c.get_manifest(entry["digest"])[0])
    assert all(layer["mediaType"] == registry.MEDIA_LAYER for layer in doc["layers"])
    return blob(c, doc["layers"][0]["digest"])


def check_release_index(c: registry.Client, tag: str, module: bytes) -> dict:
    """The layout of a release, checked; returns the index."""
    body, media, _ = c.get_manifest(tag)
    assert media == registry.MEDIA_INDEX
    index = json.loads(body)
    module_digest = c.get_manifest(f"{tag}-wasm")[2]
    for oci_arch, arch in (("amd64", "x86_64"), ("arm64", "arm64")):
        entries = [e for e in index["manifests"]
                   if e["platform"] == {"architecture": oci_arch, "os": "linux"}]
        first, rest = entries[0], entries[1:]
        # The first entry for the platform is the module's manifest...
        assert first["digest"] == module_digest
        assert first["annotations"][registry.VARIANT] == "wasm"
        assert first["annotations"][registry.TITLE] == "tcprtt.wasm"
        manifest = json.loads(c.get_manifest(first["digest"])[0])
        assert manifest["config"]["mediaType"] == registry.MEDIA_CONFIG
        (layer,) = manifest["layers"]
        assert layer["mediaType"] == registry.MEDIA_LAYER
        assert layer["annotations"][registry.TITLE] == "tcprtt.wasm"
        data = blob(c, layer["digest"])
        assert data.startswith(b"\0asm") and data == module
        assert ecli_resolve(c, tag, oci_arch) == module
        # ...and the packages follow it, each still tagged on its own.
        assert sorted(e["annotations"][registry.VARIANT] for e in rest) == list(VARIANTS)
        for entry in rest:
            variant = entry["annotations"][registry.VARIANT]
            one = c.get_manifest(f"{tag}-{variant}-{oci_arch}")
            assert one[2] == entry["digest"]
            (layer,) = json.loads(one[0])["layers"]
            assert layer["annotations"][registry.TITLE] == f"tcprtt.{variant}.json"
            data = blob(c, layer["digest"])
            assert not data.startswith(b"\0asm")
            assert data == (SHIPPED / arch / f"tcprtt.{variant}.json").read_bytes()
    return index


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


def test_push_lays_out_the_module_first_then_per_variant_manifests(server):
    digest = push_release(server.address)
    c = client(server.address)
    body, media, got = c.get_manifest("0.1")
    assert media == registry.MEDIA_INDEX and got == digest
    index = check_release_index(c, "0.1", MODULE)
    assert len(index["manifests"]) == 2 + 2 * len(VARIANTS)
    # The module's manifest carries no architecture: it holds both.
    module_manifest = json.loads(c.get_manifest("0.1-wasm")[0])
    assert module_manifest["annotations"] == {registry.VARIANT: "wasm"}
    # `ecli run -p json REF:TAG-raw_tp-amd64` gets the raw_tp package.
    assert ecli_resolve(c, "0.1-raw_tp-amd64", "amd64") == \
        (SHIPPED / "x86_64" / "tcprtt.raw_tp.json").read_bytes()


def test_packages_alone_keep_the_old_layout(server):
    c = client(server.address)
    registry.push(c, registry.release_packages(SHIPPED))
    index = json.loads(c.get_manifest("0.1")[0])
    assert all(e["annotations"][registry.VARIANT] in VARIANTS for e in index["manifests"])
    assert len(index["manifests"]) == 2 * len(VARIANTS)


def test_push_refuses_a_module_that_is_not_webassembly(server, tmp_path):
    fake = tmp_path / "tcprtt.wasm"
    fake.write_bytes(b"#!/bin/sh\n")
    with pytest.raises(RegistryError, match="not a WebAssembly module"):
        registry.release_module(fake)
    with pytest.raises(RegistryError, match="no wasm module"):
        registry.release_module(tmp_path / "missing.wasm")
    with pytest.raises(RegistryError, match="not WebAssembly"):
        registry.push(client(server.address), {}, b"{}")


def test_pull_prefers_the_packages_and_skips_the_module(server, tmp_path):
    digest = push_release(server.address)
    c = client(server.address)
    module_layer = json.loads(c.get_manifest("0.1-wasm")[0])["layers"][0]["digest"]
    cache = registry.Cache(tmp_path / "cache")
    pulled = registry.pull(c, cache, ARCH)
    assert pulled.digest == digest
    assert sorted(pulled.packages) == list(VARIANTS) and pulled.module is None
    assert not cache.has(module_layer), "the module is not fetched to run the packages"
    for variant, path in pulled.packages.items():
        assert path.read_bytes() == (SHIPPED / ARCH / f"tcprtt.{variant}.json").read_bytes()
    assert registry.cached(c.ref, cache, ARCH) == pulled
    # Asked for, the module comes too, and the cache answers with both.
    both = registry.pull(c, cache, ARCH, module=True)
    assert both.packages == pulled.packages and both.module is not None
    assert both.module.read_bytes() == MODULE and cache.has(module_layer)
    assert registry.cached(c.ref, cache, ARCH) == both


def test_image_selects_the_packages_of_a_release(server, tmp_path, monkeypatch):
    from runner import run
    push_release(server.address)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    err = io.StringIO()
    packages = run.image_packages(f"{server.address}/tools/tcprtt:0.1", RegistryOptions(), err)
    assert sorted(packages) == list(VARIANTS) and err.getvalue() == ""


@pytest.mark.parametrize("tag", ["0.1-wasm", "only"])
def test_a_module_only_reference_pulls_the_module(server, tmp_path, monkeypatch, tag):
    from runner import run
    push_release(server.address)  # 0.1-wasm: the module's own manifest
    registry.push(client(server.address, tag="only"), {}, MODULE)  # an index of modules
    ref = f"{server.address}/tools/tcprtt:{tag}"
    c = client(server.address, tag=tag)
    cache = registry.Cache(tmp_path / "cache" / "tcprtt")
    pulled = registry.pull(c, cache, ARCH)
    assert pulled.packages == {} and pulled.module is not None
    assert pulled.module.read_bytes() == MODULE
    assert pulled.module.name == registry.sha256(MODULE).split(":")[1]  # keyed by digest
    assert registry.cached(c.ref, cache, ARCH) == pulled
    # --image hands it on, checked, instead of packages.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(registry.ModuleOnly) as raised:
        run.image_packages(ref, RegistryOptions(), io.StringIO())
    assert raised.value.data() == MODULE
    assert raised.value.source == f"{server.address}/tools/tcprtt@{pulled.digest}"
    # Pinned, it runs from the cache with the registry gone.
    server.stop()
    pinned = f"{server.address}/tools/tcprtt@{pulled.digest}"
    with pytest.raises(registry.ModuleOnly) as raised:
        run.image_packages(pinned, RegistryOptions(), io.StringIO())
    assert raised.value.data() == MODULE


# A WASI module that writes its arguments, NUL-separated, to stdout.
ECHO_ARGS = """
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $sizes (i32.const 0) (i32.const 4)))     ;; argc at 0, their bytes at 4
    (drop (call $args (i32.const 16) (i32.const 1024)))  ;; pointers at 16, strings at 1024
    (i32.store (i32.const 8) (i32.const 1024))            ;; one iovec at 8: the strings
    (i32.store (i32.const 12) (i32.load (i32.const 4)))
    (drop (call $write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 0)))))
"""


def test_a_module_only_reference_runs_under_the_wasm_host(server, tmp_path, monkeypatch,
                                                          capfd):
    import wasmtime

    from runner import run
    echo = wasmtime.wat2wasm(ECHO_ARGS)
    registry.push(client(server.address, tag="echo"), {}, bytes(echo))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(registry.ModuleOnly) as raised:
        run.image_packages(f"{server.address}/tools/tcprtt:echo", RegistryOptions(),
                           io.StringIO())
    capfd.readouterr()
    assert raised.value.run(["-B", "-d", "1"]) == 0
    out = capfd.readouterr().out
    assert out.split("\0")[1:] == ["-B", "-d", "1", ""]
    # The command itself: the module gets the tracing flags, not the registry's.
    ref = f"{server.address}/tools/tcprtt:echo"
    ran = subprocess.run(runner_cmd("-B", "--ima", ref, "--insecure", "-d", "1",
                                    f"--ca-file={REPO / 'LICENSE'}", "--traceback", "-T"),
                         cwd=REPO, env=env_with_cache(tmp_path / "cache"),
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split("\0")[1:] == ["-B", "-d", "1", "-T", ""]
    assert "holds only the wasm module" in ran.stderr
    refused = subprocess.run(runner_cmd("--image", ref, "--prometheus", "9999"), cwd=REPO,
                             env=env_with_cache(tmp_path / "cache"), capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1, refused.stderr
    assert ref in refused.stderr



def trace_loopback(cmd: list[str], env: dict) -> list[dict]:
    """Run a tracer that prints JSON lines, drive 200 exchanges on loopback
    once it says it is tracing, and return its records."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for _ in range(50):  # the banner comes before any output, after any notices
            line = proc.stderr.readline()
            seen.append(line)
            if not line or "Tracing TCP RTT" in line:
                break
        assert "Tracing TCP RTT" in seen[-1], "".join(seen)
        with tcp_pair() as pair:
            pair.exchange(200)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    return [json.loads(x) for x in out.splitlines()]


def test_the_released_module_traces_from_the_registry(root, server, tmp_path):
    """The real tcprtt.wasm, pushed and pulled back by reference, traces
    loopback traffic under eunomia's C++ wasm-bpf runtime and the runner's host."""
    shipped_module = SHIPPED / "tcprtt.wasm"
    assert shipped_module.is_file(), "make ship has not built runner/packages/tcprtt.wasm"
    wasm_bpf = shared_file("tools/eunomia/wasm-bpf")
    module = shipped_module.read_bytes()
    push_release(server.address, tag="e2e", module=module)
    env = env_with_cache(tmp_path / "cache")
    image = f"{server.address}/tools/tcprtt:e2e"
    pulled = subprocess.run(runner_cmd("pull", image), cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=60)
    assert pulled.returncode == 0, pulled.stderr
    cached = Path(next(line.split(": ", 1)[1] for line in pulled.stdout.splitlines()
                       if line.strip().startswith("wasm:")))
    assert cached.read_bytes() == module
    flags = ["-B", "--json", "-d", "3"]
    for cmd in ([str(wasm_bpf), str(cached), *flags],
                runner_cmd("--image", f"{image}-wasm", *flags)):
        records = trace_loopback(cmd, env)
        assert any(r["address"] == "127.0.0.1" and r["count"] >= 200 for r in records), \
            (cmd[0], records)


def test_pull_command_lists_the_module(server, tmp_path):
    push_release(server.address)
    env = env_with_cache(tmp_path / "cache")
    for tag, variants in (("0.1", {*VARIANTS, "wasm"}), ("0.1-wasm", {"wasm"})):
        pulled = subprocess.run(runner_cmd("pull", f"{server.address}/tools/tcprtt:{tag}"),
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert pulled.returncode == 0, pulled.stderr
        lines = pulled.stdout.splitlines()
        listed = dict(line.strip().split(": ", 1) for line in lines[1:])
        assert set(listed) == variants
        assert Path(listed["wasm"]).read_bytes() == MODULE


def test_push_command_takes_the_module_beside_the_packages(server, tmp_path):
    import shutil
    source = tmp_path / "release"
    for arch in ("x86_64", "arm64"):
        shutil.copytree(SHIPPED / arch, source / arch)
    env = env_with_cache(tmp_path / "cache")
    image = f"{server.address}/tools/tcprtt:cli"
    missing = subprocess.run(runner_cmd("push", image, "--from", str(source)), cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "tcprtt.wasm: no wasm module" in missing.stderr
    with pytest.raises(RegistryError, match="not found"):
        client(server.address, tag="cli").get_manifest("cli")  # nothing was published
    (source / "tcprtt.wasm").write_bytes(MODULE)
    pushed = subprocess.run(runner_cmd("push", image, "--from", str(source)), cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=60)
    assert pushed.returncode == 0, pushed.stderr
    c = client(server.address, tag="cli")
    assert pushed.stdout.strip().endswith(c.get_manifest("cli")[2])
    check_release_index(c, "cli", MODULE)


def test_layers_are_told_apart_by_their_bytes(server, tmp_path):
    c = client(server.address, tag="odd")
    pkg = (SHIPPED / ARCH / "tcprtt.raw_tp.json").read_bytes()
    config = c.put_blob(b"{}")
    layer = c.put_blob(pkg)
    # A manifest that calls itself the module but holds a package is refused.
    liar = json.dumps({
        "schemaVersion": 2, "mediaType": registry.MEDIA_MANIFEST,
        "config": {"mediaType": registry.MEDIA_CONFIG, "digest": config, "size": 2},
        "layers": [{"mediaType": registry.MEDIA_LAYER, "digest": layer, "size": len(pkg),
                    "annotations": {registry.TITLE: "tcprtt.wasm"}}]}).encode()
    c.put_manifest(liar, registry.MEDIA_MANIFEST, "odd")
    cache = registry.Cache(tmp_path / "cache")
    with pytest.raises(RegistryError, match="names the wasm module, but its layer is not"):
        registry.pull(c, cache, ARCH)
    assert cache.get_ref(c.ref) is None
    # A module under a package's name is still the module, not a package.
    mlayer = c.put_blob(MODULE)
    quiet = json.dumps({
        "schemaVersion": 2, "mediaType": registry.MEDIA_MANIFEST,
        "config": {"mediaType": registry.MEDIA_CONFIG, "digest": config, "size": 2},
        "layers": [{"mediaType": registry.MEDIA_LAYER, "digest": mlayer, "size": len(MODULE),
                    "annotations": {registry.TITLE: "tcprtt.raw_tp.json"}}]}).encode()
    c.put_manifest(quiet, registry.MEDIA_MANIFEST, "odd")
    pulled = registry.pull(c, cache, ARCH)
    assert pulled.packages == {} and pulled.module is not None


def test_skopeo_copy_keeps_the_release_whole(server, tmp_path):
    digest = push_release(server.address, tag="T", repository="a/tcprtt")
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    copied = subprocess.run(
        ["skopeo", "--policy", str(policy), "copy", "--all",
         f"docker://{server.address}/a/tcprtt:T", f"docker://{server.address}/b/tcprtt:T",
         "--src-tls-verify=false", "--dest-tls-verify=false"],
        capture_output=True, text=True, timeout=120)
    assert copied.returncode == 0, copied.stderr
    b = registry.Client(reference.parse(f"{server.address}/b/tcprtt:T"))
    assert b.get_manifest("T")[2] == digest
    # skopeo copies the index, not the per-manifest tags; the index is what ecli reads.
    body = b.get_manifest("T")[0]
    index = json.loads(body)
    for oci_arch in ("amd64", "arm64"):
        first = next(e for e in index["manifests"]
                     if e["platform"]["architecture"] == oci_arch)
        assert first["annotations"][registry.VARIANT] == "wasm"
        assert ecli_resolve(b, "T", oci_arch) == MODULE
    cache = registry.Cache(tmp_path / "cache")
    pulled = registry.pull(b, cache, ARCH, module=True)
    assert pulled.digest == digest and sorted(pulled.packages) == list(VARIANTS)
    assert pulled.module is not None and pulled.module.read_bytes() == MODULE


def test_pull_then_run_from_the_pulled_packages_on_real_traffic(root, server, tmp_path):
    push_release(server.address)  # the module comes first; --image runs the packages
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
        module = tmp_path / "tcprtt.wasm"
        module.write_bytes(MODULE)
        pushed = subprocess.run(runner_cmd("push", f"{s.address}/tools/tcprtt:1",
                                           "--ca-file", str(s.ca_file), "--module", str(module)),
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert pushed.returncode == 0, pushed.stderr
        assert pushed.stdout.startswith(f"{s.address}/tools/tcprtt@sha256:")


def test_plain_http_is_refused_off_loopback_without_insecure():
    ref = reference.parse("192.0.2.1:5000/tools/tcprtt:1")
    assert not ref.is_loopback
    with pytest.raises(RegistryError, match="cannot reach registry 192.0.2.1:5000"):
        # 192.0.2.0/24 is TEST-NET-1 and never routed; the attempt is HTTPS only.
        registry.Client(ref, timeout=0.5, retries=1)
