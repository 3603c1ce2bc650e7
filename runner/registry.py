"""Publish tcprtt to, and fetch it from, OCI registries; keep a digest-keyed cache.

A release is one reference whose tag points at an OCI image index. For each
platform its first entry is the manifest of tcprtt.wasm, the wasm-bpf module
that ecli runs from the bare reference; then come the manifests of the
packages, one per attach variant and architecture. Every manifest is in the
layout ecli pulls (a `{}` wasm config and one wasm-typed layer).
docs/registry.md shows the layout.

Authentication and the HTTP exchanges go through the oras library
(anonymous bearer tokens, basic credentials, ~/.docker/config.json). What it
does not do is here: pushing an index, checking every manifest and blob
against its digest, size caps, timeouts and bounded retries, the cache.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from . import package as package_mod
from .errors import RegistryError
from .reference import Reference

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.wasm.config.v1+json"
MEDIA_LAYER = "application/vnd.wasm.content.layer.v1+wasm"
TITLE = "org.opencontainers.image.title"
VARIANT = "io.github.tcprtt.variant"
ARCH = "io.github.tcprtt.arch"
# The wasm-bpf module (every variant, both architectures) beside the packages.
MODULE_VARIANT = "wasm"
MODULE_TITLE = "tcprtt.wasm"
WASM_MAGIC = b"\0asm"
WASM_HEADER = WASM_MAGIC + b"\x01\0\0\0"  # the magic and binary format version 1

MAX_MANIFEST = 4 << 20
MAX_BLOB = package_mod.MAX_PACKAGE_SIZE
TIMEOUT = 10.0
RETRIES = 3
RETRY_DELAY = 0.3
# OCI platform architecture names, by the runner's architecture name.
OCI_ARCH = {"x86_64": "amd64", "arm64": "arm64"}

logging.getLogger("oras").setLevel(logging.CRITICAL)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    @classmethod
    def from_env(cls) -> Credentials | None:
        user = os.environ.get("TCPRTT_REGISTRY_USERNAME")
        password = os.environ.get("TCPRTT_REGISTRY_PASSWORD")
        return cls(user, password) if user and password is not None else None


class Client:
    """One registry, one repository; every call bounded in time and retries."""

    def __init__(self, ref: Reference, *, insecure: bool = False, ca_file: str | None = None,
                 credentials: Credentials | None = None, timeout: float = TIMEOUT,
                 retries: int = RETRIES):
        import oras.container
        import oras.provider

        self.ref = ref
        self.timeout = timeout
        self.retries = retries
        self._oras_provider = oras.provider
        self._container = oras.container.Container(f"{ref.api_host}/{ref.repository}:x")
        self._credentials = credentials or Credentials.from_env()
        self._verify: bool | str = ca_file or True
        if insecure and not ref.is_loopback:
            schemes = ["http"]
        elif insecure or ref.is_loopback:
            schemes = ["https", "http"]  # loopback: TLS if it answers, else plain HTTP
        else:
            schemes = ["https"]
        self._registry = None
        self.scheme = self._connect(schemes)

    # -- connection and authentication -------------------------------------------------

    def _make(self, scheme: str, backend: str):
        reg = self._oras_provider.Registry(hostname=self.ref.api_host, insecure=scheme == "http",
                                           tls_verify=self._verify, auth_backend=backend)
        original = reg.session.request

        def request(method, url, **kwargs):
            kwargs.setdefault("timeout", self.timeout)
            return original(method, url, **kwargs)
        reg.session.request = request  # oras sets no timeout of its own
        if self._credentials is not None:
            reg.auth.set_basic_auth(self._credentials.username, self._credentials.password)
        else:
            try:
                reg.auth.load_configs(self._container)  # ~/.docker/config.json
            except Exception:  # an unreadable docker config is not our error to report
                pass
        return reg

    def _connect(self, schemes: list[str]) -> str:
        last: Exception | None = None
        for scheme in schemes:
            try:
                probe = requests.get(f"{scheme}://{self.ref.api_host}/v2/", timeout=self.timeout,
                                     verify=self._verify)
            except requests.exceptions.SSLError as exc:
                last = exc
                if "certificate" in str(exc).lower():
                    break  # TLS works but is not trusted: never fall back to plain HTTP
                continue
            except requests.exceptions.ConnectionError as exc:
                last = exc
                if scheme == "https" and "http" in schemes and _is_tls_mismatch(exc):
                    continue
                break
            except requests.exceptions.Timeout as exc:
                last = exc
                break
            challenge = probe.headers.get("WWW-Authenticate", "")
            backend = "basic" if challenge.lower().startswith("basic") else "token"
            if backend == "basic" and self._registry is None and not self._has_credentials(scheme):
                raise RegistryError(f"{self.ref.registry}: the registry asks for credentials "
                                    "(--username/--password, TCPRTT_REGISTRY_USERNAME/"
                                    "TCPRTT_REGISTRY_PASSWORD, or ~/.docker/config.json)")
            self._registry = self._make(scheme, backend)
            # oras wraps do_request in a retry loop that sleeps 2 + 3**n seconds
            # for five attempts and turns a 500 into ValueError: call the exchange
            # itself (with its authentication) and keep the retries here, bounded.
            do_request = type(self._registry).do_request
            self._exchange = functools.partial(getattr(do_request, "__wrapped__", do_request),
                                               self._registry)
            return scheme
        raise RegistryError(f"cannot reach registry {self.ref.registry}: {_reason(last)}")

    def _has_credentials(self, scheme: str) -> bool:
        if self._credentials is not None:
            return True
        reg = self._make(scheme, "basic")
        return bool(getattr(reg.auth, "_basic_auth", None))

    # -- requests ----------------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.ref.api_host}/v2/{self.ref.repository}/{path}"

    def request(self, method: str, path: str, *, headers: dict | None = None,
                data: bytes | None = None, stream: bool = False,
                what: str = "") -> requests.Response:
        """One exchange with bounded retries on timeouts, refused connections and 5xx."""
        what = what or f"{method} {path}"
        url = path if path.startswith("http") else self.url(path)
        last = ""
        for attempt in range(self.retries):
            if attempt:
                time.sleep(RETRY_DELAY * (2 ** (attempt - 1)))
            try:
                resp = self._exchange(url, method, data=data, headers=dict(headers or {}),
                                      stream=stream)
            except ValueError:
                raise RegistryError(f"{self.ref.registry}: {what}: 401 unauthorized "
                                    "(credentials are needed)") from None
            except requests.exceptions.RequestException as exc:
                last = _reason(exc)
                continue
            if resp.status_code >= 500:
                last = f"{resp.status_code} {resp.reason}"
                resp.close()
                continue
            if resp.status_code in (401, 403):
                raise RegistryError(f"{self.ref.registry}: {what}: {resp.status_code} "
                                    f"{'unauthorized' if resp.status_code == 401 else 'forbidden'}"
                                    f"{_error_detail(resp)}")
            return resp
        raise RegistryError(f"{self.ref.registry}: {what}: failed after {self.retries} tries "
                            f"({last})")

    def get_manifest(self, target: str, expected: str | None = None) -> tuple[bytes, str, str]:
        """(body, media type, digest) of a manifest or index, digest checked."""
        resp = self.request("GET", f"manifests/{target}", stream=True,
                            headers={"Accept": f"{MEDIA_INDEX}, {MEDIA_MANIFEST}"},
                            what=f"manifest {target}")
        if resp.status_code == 404:
            raise RegistryError(f"{self.ref}: not found in {self.ref.registry}")
        if resp.status_code != 200:
            raise RegistryError(f"{self.ref}: manifest {target}: {resp.status_code}"
                                f"{_error_detail(resp)}")
        body = _read_capped(resp, MAX_MANIFEST, f"manifest {target}")
        digest = sha256(body)
        for claimed in (expected, resp.headers.get("Docker-Content-Digest"),
                        target if target.startswith("sha256:") else None):
            if claimed and claimed != digest:
                raise RegistryError(f"{self.ref}: manifest {target} does not match its digest "
                                    f"(got {digest}, expected {claimed})")
        try:
            media = json.loads(body).get("mediaType") or ""
        except (ValueError, UnicodeDecodeError, AttributeError):
            raise RegistryError(f"{self.ref}: manifest {target} is not a JSON object") from None
        media = media or resp.headers.get("Content-Type", "")
        return body, media.split(";")[0], digest

    def get_blob(self, digest: str, size: int, cache: Cache) -> Path:
        """Fetch a blob into the cache, checking size and digest; returns its path."""
        if size > MAX_BLOB:
            raise RegistryError(f"{self.ref}: blob {digest} is {size} bytes, over the "
                                f"{MAX_BLOB}-byte limit")
        if cache.has(digest):
            return cache.path(digest)
        resp = self.request("GET", f"blobs/{digest}", stream=True, what=f"blob {digest}")
        if resp.status_code != 200:
            raise RegistryError(f"{self.ref}: blob {digest}: {resp.status_code}"
                                f"{_error_detail(resp)}")
        return cache.put_stream(resp, digest, size, str(self.ref))

    def blob_exists(self, digest: str) -> bool:
        resp = self.request("HEAD", f"blobs/{digest}", what=f"blob {digest}")
        return resp.status_code == 200

    def put_blob(self, data: bytes) -> str:
        digest = sha256(data)
        if self.blob_exists(digest):
            return digest
        start = self.request("POST", "blobs/uploads/", what="blob upload",
                             headers={"Content-Type": "application/octet-stream"})
        location = start.headers.get("Location")
        if start.status_code != 202 or not location:
            raise RegistryError(f"{self.ref.registry}: cannot start a blob upload "
                                f"({start.status_code}{_error_detail(start)})")
        if location.startswith("/"):
            location = f"{self.scheme}://{self.ref.api_host}{location}"
        sep = "&" if "?" in location else "?"
        done = self.request("PUT", f"{location}{sep}digest={digest}", data=data,
                            headers={"Content-Type": "application/octet-stream",
                                     "Content-Length": str(len(data))},
                            what=f"blob upload {digest}")
        if done.status_code != 201:
            raise RegistryError(f"{self.ref.registry}: blob upload {digest}: "
                                f"{done.status_code}{_error_detail(done)}")
        return digest

    def put_manifest(self, body: bytes, media_type: str, target: str) -> str:
        resp = self.request("PUT", f"manifests/{target}", data=body,
                            headers={"Content-Type": media_type}, what=f"manifest {target}")
        if resp.status_code != 201:
            raise RegistryError(f"{self.ref.registry}: manifest {target}: "
                                f"{resp.status_code}{_error_detail(resp)}")
        return sha256(body)


def _is_tls_mismatch(exc: Exception) -> bool:
    text = str(exc).lower()
    return "ssl" in text or "wrong version" in text or "eof" in text or "reset" in text


def _reason(exc: Exception | None) -> str:
    text = str(exc) if exc else "unknown error"
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if "timed out" in lowered or "timeout" in lowered:
        return "timed out"
    if "certificate" in lowered:
        return "TLS certificate not trusted (--ca-file)"
    if "name or service not known" in lowered or "resolution" in lowered:
        return "unknown host"
    return text.splitlines()[0][:200]


def _error_detail(resp: requests.Response) -> str:
    try:
        errors = resp.json().get("errors") or []
        if errors:
            e = errors[0]
            return f" ({e.get('code', '')}: {e.get('message', '')})"
    except ValueError:
        pass
    return ""


def _read_capped(resp: requests.Response, cap: int, what: str) -> bytes:
    declared = resp.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > cap:
        resp.close()
        raise RegistryError(f"{what} is {declared} bytes, over the {cap}-byte limit")
    chunks, total = [], 0
    for chunk in resp.iter_content(65536):
        total += len(chunk)
        if total > cap:
            resp.close()
            raise RegistryError(f"{what} is over the {cap}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


class Cache:
    """Blobs by digest under ``$XDG_CACHE_HOME/tcprtt`` (else ``~/.cache/tcprtt``),
    and the digest each pulled reference last resolved to. Every write goes to a
    temporary file that is checked and then renamed into place."""

    def __init__(self, root: Path | None = None):
        if root is None:
            base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
            root = Path(base) / "tcprtt"
        self.root = root

    def path(self, digest: str) -> Path:
        algo, _, hexdigest = digest.partition(":")
        if algo != "sha256" or len(hexdigest) != 64 or not all(c in "0123456789abcdef"
                                                                 for c in hexdigest):
            raise RegistryError(f"not a sha256 digest: {digest!r}")
        return self.root / "blobs" / "sha256" / hexdigest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def read(self, digest: str) -> bytes:
        data = self.path(digest).read_bytes()
        if sha256(data) != digest:
            raise RegistryError(f"cached blob {digest} is corrupt: delete {self.path(digest)}")
        return data

    def _atomic(self, target: Path):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        return os.fdopen(fd, "wb"), Path(tmp)

    def put(self, data: bytes, digest: str) -> Path:
        if sha256(data) != digest:
            raise RegistryError(f"content does not match its digest {digest}")
        target = self.path(digest)
        f, tmp = self._atomic(target)
        try:
            with f:
                f.write(data)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def put_stream(self, resp: requests.Response, digest: str, size: int, what: str) -> Path:
        target = self.path(digest)
        f, tmp = self._atomic(target)
        h = hashlib.sha256()
        total = 0
        try:
            with f:
                for chunk in resp.iter_content(65536):
                    total += len(chunk)
                    if total > size or total > MAX_BLOB:
                        raise RegistryError(f"{what}: blob {digest} is larger than its "
                                            f"descriptor's {size} bytes")
                    h.update(chunk)
                    f.write(chunk)
            if total != size or "sha256:" + h.hexdigest() != digest:
                raise RegistryError(f"{what}: blob {digest} does not match its digest "
                                    f"(got sha256:{h.hexdigest()}, {total} bytes)")
            os.replace(tmp, target)
        except requests.exceptions.RequestException as exc:
            raise RegistryError(f"{what}: download of {digest} failed: {_reason(exc)}") from None
        finally:
            resp.close()
            tmp.unlink(missing_ok=True)
        return target

    def _ref_path(self, ref: Reference) -> Path:
        safe = [part for part in (ref.registry.replace(":", "_"), *ref.repository.split("/"))
                if part not in ("", ".", "..")]
        return self.root.joinpath("refs", *safe, ref.tag or "latest")

    def set_ref(self, ref: Reference, digest: str) -> None:
        target = self._ref_path(ref)
        f, tmp = self._atomic(target)
        try:
            with f:
                f.write(digest.encode())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def get_ref(self, ref: Reference) -> str | None:
        try:
            return self._ref_path(ref).read_text().strip() or None
        except OSError:
            return None


# -- the release layout ------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _oci_schema() -> dict:
    from importlib import resources
    return json.loads(resources.files(__package__).joinpath("schemas/oci.schema.json")
                      .read_text())


def parse_document(body: bytes, kind: str, what: str) -> dict:
    """An index or manifest from the registry, checked for the fields tcprtt
    reads (``kind`` is "index" or "manifest")."""
    import jsonschema
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RegistryError(f"{what}: not JSON") from None
    schema = dict(_oci_schema())
    schema["$ref"] = f"#/$defs/{kind}"
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise RegistryError(f"{what}: not an OCI {kind}: {where}: {error.message[:160]}")
    return doc


def _manifest(config_digest: str, layer_digest: str, layer_size: int, title: str,
              annotations: dict[str, str]) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": 2},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": layer_digest, "size": layer_size,
                    "annotations": {TITLE: title}}],
        "annotations": annotations,
    }
    return json.dumps(doc, indent=2, sort_keys=True).encode()


def is_module(data: bytes) -> bool:
    """WebAssembly bytes, by their magic."""
    return data[:4] == WASM_MAGIC


def _is_module_file(path: Path) -> bool:
    with open(path, "rb") as f:
        return is_module(f.read(4))


def _names_module(annotations: dict | None) -> bool:
    """Annotations that call a manifest (or its layer) the wasm module."""
    annotations = annotations or {}
    return annotations.get(VARIANT) == MODULE_VARIANT or \
        str(annotations.get(TITLE, "")).endswith(".wasm")


def release_packages(source: Path) -> dict[tuple[str, str], Path]:
    """(arch, variant) -> package path, from runner/packages-like directory trees."""
    found = {}
    for arch in OCI_ARCH:
        for path in sorted((source / arch).glob("*.json")):
            meta = json.loads(path.read_text())["meta"].get("tcprtt") or {}
            if meta.get("variant"):
                found[(arch, meta["variant"])] = path
    if not found:
        raise RegistryError(f"{source}: no built packages (expected {source}/<arch>/*.json; "
                            "run `make ship` or `make packages`)")
    return found


def release_module(path: Path) -> bytes:
    """The wasm module to publish beside the packages, checked to be one."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RegistryError(f"{path}: no wasm module (`make ship` builds it; or push with "
                            "--module FILE, or --no-module for the packages alone)") from None
    if data[:8] != WASM_HEADER:
        raise RegistryError(f"{path}: not a WebAssembly module (no \\0asm version 1 header)")
    if len(data) > MAX_BLOB:
        raise RegistryError(f"{path}: the module is over the {MAX_BLOB}-byte limit")
    return data


def push(client: Client, packages: dict[tuple[str, str], Path],
         module: bytes | None = None) -> str:
    """Publish the module (if given) and every package under the client's tag;
    returns the index digest.

    ecli resolves an index to the first entry for its platform and runs that
    manifest's first layer as wasm, so the module's manifest comes first for
    each platform and the packages follow it."""
    ref = client.ref
    if ref.tag is None:
        raise RegistryError(f"{ref}: push needs a tag, not a digest")
    if not packages and module is None:
        raise RegistryError(f"{ref}: nothing to push")
    if module is not None and not is_module(module):
        raise RegistryError(f"{ref}: the module is not WebAssembly")
    config_digest = client.put_blob(b"{}")
    entries = []
    if module is not None:
        layer = client.put_blob(module)
        body = _manifest(config_digest, layer, len(module), MODULE_TITLE,
                         {VARIANT: MODULE_VARIANT})
        digest = client.put_manifest(body, MEDIA_MANIFEST, f"{ref.tag}-{MODULE_VARIANT}")
        for arch, oci_arch in OCI_ARCH.items():  # one module holds every architecture
            entries.append({"mediaType": MEDIA_MANIFEST, "digest": digest, "size": len(body),
                            "platform": {"architecture": oci_arch, "os": "linux"},
                            "annotations": {VARIANT: MODULE_VARIANT, ARCH: arch,
                                            TITLE: MODULE_TITLE}})
    for (arch, variant), path in sorted(packages.items()):
        data = path.read_bytes()
        package_mod.loads(data, str(path))  # publish only what the runner would accept
        layer = client.put_blob(data)
        body = _manifest(config_digest, layer, len(data), path.name,
                         {VARIANT: variant, ARCH: arch})
        # Each manifest also gets a tag of its own, for clients that read one manifest.
        digest = client.put_manifest(body, MEDIA_MANIFEST, f"{ref.tag}-{variant}-{OCI_ARCH[arch]}")
        entries.append({"mediaType": MEDIA_MANIFEST, "digest": digest, "size": len(body),
                        "platform": {"architecture": OCI_ARCH[arch], "os": "linux"},
                        "annotations": {VARIANT: variant, ARCH: arch, TITLE: path.name}})
    index = json.dumps({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": entries,
                        "annotations": {TITLE: "tcprtt"}}, indent=2, sort_keys=True).encode()
    return client.put_manifest(index, MEDIA_INDEX, ref.tag)


@dataclass(frozen=True)
class Pulled:
    digest: str                      # of the index (or single manifest)
    packages: dict[str, Path]        # variant -> cached package.json
    module: Path | None = None       # the cached wasm module, when it was fetched


class ModuleOnly(RegistryError):
    """The reference holds tcprtt's wasm module and no package for this machine."""

    def __init__(self, ref: Reference, pulled: Pulled, cache: Cache):
        super().__init__(f"{ref} holds the tcprtt wasm module ({pulled.digest}) and no "
                         "package for this machine: it runs under a wasm-bpf host "
                         f"(ecli run {ref})")
        self.ref = ref
        self.pulled = pulled
        self.cache = cache

    @property
    def source(self) -> str:
        return f"{self.ref.registry}/{self.ref.repository}@{self.pulled.digest}"

    def data(self) -> bytes:
        """The module's bytes, checked against their digest once more."""
        assert self.pulled.module is not None
        return self.cache.read("sha256:" + self.pulled.module.name)

    def run(self, flags: list[str]) -> int:
        """Run the module under the runner's wasm-bpf host with tcprtt's flags
        (the command line without the runner's own --image and registry flags)."""
        from .wasm import run_module  # the host (wasmtime) is loaded only for a module
        return run_module(self.data(), list(flags), self.source)


def _for_arch(index: dict, arch: str) -> list[dict]:
    return [e for e in index["manifests"]
            if (e.get("platform") or {}).get("architecture") == OCI_ARCH.get(arch)]


def _from_cache(cache: Cache, digest: str, arch: str) -> Pulled:
    """What a cached index or manifest holds for ``arch``: every package
    present and checked, and the module if it was fetched. Layers are told
    apart by their bytes: WebAssembly is the module, anything else a package."""
    body = cache.read(digest)
    doc = json.loads(body)
    entries: list[tuple[str, dict]] = []
    if doc.get("mediaType") == MEDIA_INDEX or "manifests" in doc:
        doc = parse_document(body, "index", digest)
        entries = [(e["digest"], e.get("annotations") or {}) for e in _for_arch(doc, arch)]
    else:
        entries = [(digest, {})]
    packages: dict[str, Path] = {}
    module = None
    for m, notes in entries:
        optional = _names_module(notes)  # the module is fetched only when asked for
        if optional and not cache.has(m):
            continue
        manifest = parse_document(cache.read(m), "manifest", m)
        layer = manifest["layers"][0]
        if optional and not cache.has(layer["digest"]):
            continue
        cache.read(layer["digest"])  # present and intact
        path = cache.path(layer["digest"])
        if _is_module_file(path):
            module = module or path
            continue
        variant = (manifest.get("annotations") or {}).get(VARIANT) or \
            Path(layer.get("annotations", {}).get(TITLE, "package.json")).stem.split(".")[-1]
        packages[variant] = path
    if not packages and module is None:
        raise RegistryError(f"{digest}: nothing for architecture {arch}")
    return Pulled(digest, packages, module)


def _fetch_layer(client: Client, cache: Cache, body: bytes, digest: str,
                 claims_module: bool) -> bool:
    """Fetch a manifest's layer into the cache; True if it is the module."""
    ref = client.ref
    manifest = parse_document(body, "manifest", f"{ref} manifest {digest}")
    layer = manifest["layers"][0]
    if layer["mediaType"] != MEDIA_LAYER:
        raise RegistryError(f"{ref}: manifest {digest}: its first layer is not of the "
                            f"{MEDIA_LAYER} type")
    claims_module = claims_module or _names_module(manifest.get("annotations")) or \
        _names_module(layer.get("annotations"))
    path = client.get_blob(layer["digest"], int(layer.get("size", 0)), cache)
    found = _is_module_file(path)
    if claims_module and not found:
        raise RegistryError(f"{ref}: manifest {digest} names the wasm module, but its layer "
                            "is not WebAssembly")
    return found


def pull(client: Client, cache: Cache, arch: str, *, module: bool = False) -> Pulled:
    """Fetch the reference's packages for ``arch`` into the cache, and its wasm
    module when ``module`` is set or when it holds no package; every manifest
    and blob is checked before it is stored, and the reference is recorded
    only once everything it needs is in place."""
    ref = client.ref
    body, media, digest = client.get_manifest(ref.target, expected=ref.digest)
    module_entries: list[dict] = []
    if media == MEDIA_INDEX:
        doc = parse_document(body, "index", f"{ref} index")
        wanted = _for_arch(doc, arch)
        if not wanted:
            raise RegistryError(f"{ref}: no manifest for architecture {arch}")
        for entry in wanted:
            if entry.get("size", 0) > MAX_MANIFEST:
                raise RegistryError(f"{ref}: manifest {entry['digest']} is over the "
                                    f"{MAX_MANIFEST}-byte limit")
        module_entries = [e for e in wanted if _names_module(e.get("annotations"))]
        staged = []
        for entry in wanted:
            if entry in module_entries:
                continue
            mbody, _, mdigest = client.get_manifest(entry["digest"], expected=entry["digest"])
            staged.append((mbody, mdigest))
        manifests = staged
    elif media == MEDIA_MANIFEST:
        manifests = [(body, digest)]
    else:
        raise RegistryError(f"{ref}: unsupported media type {media!r}")
    have_package = False
    for mbody, mdigest in manifests:
        if not _fetch_layer(client, cache, mbody, mdigest, False):
            have_package = True
        cache.put(mbody, mdigest)
    if module_entries and (module or not have_package):
        entry = module_entries[0]  # the first for the platform, as ecli takes it
        mbody, _, mdigest = client.get_manifest(entry["digest"], expected=entry["digest"])
        _fetch_layer(client, cache, mbody, mdigest, True)
        cache.put(mbody, mdigest)
    cache.put(body, digest)
    if ref.tag:
        cache.set_ref(ref, digest)
    return _from_cache(cache, digest, arch)


def cached(ref: Reference, cache: Cache, arch: str) -> Pulled | None:
    """What a pinned or already-pulled reference resolves to, from the cache alone."""
    digest = ref.digest or cache.get_ref(ref)
    if digest is None or not cache.has(digest):
        return None
    try:
        return _from_cache(cache, digest, arch)
    except (RegistryError, OSError, ValueError, KeyError):
        return None
