"""Publish tcprtt to, and fetch it from, OCI registries.

A release is one reference whose tag points at an OCI image index. For each
platform its first entry is the manifest of tcprtt.wasm, the wasm-bpf module
that ecli runs from the bare reference; then come the manifests of the
packages, one per attach variant and architecture. Every manifest is in the
layout ecli pulls (a `{}` wasm config and one wasm-typed layer).
docs/registry.md shows the layout.

The HTTP client (authentication, deadlines, retries, what credentials go
where) is runner/oci.py, on requests alone; the digest-keyed cache is
runner/cache.py. This module is the release layout: pushing an index of
manifests, pulling what this machine needs with every manifest and blob
checked against its digest, and reading a release back from the cache.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

from . import package as package_mod
from .cache import Cache
from .errors import RegistryError
from .oci import (
    MAX_BLOB,
    MAX_MANIFEST,
    MEDIA_INDEX,
    MEDIA_MANIFEST,
    Client,
    Credentials,
    clean,
    fault,
    parse_json,
    sha256,
)
from .reference import Reference

__all__ = ["Cache", "Client", "Credentials", "ModuleOnly", "Pulled", "cached", "clean",
           "parse_document", "pull", "push", "release_module", "release_packages", "sha256",
           "MAX_BLOB", "MAX_MANIFEST", "MEDIA_INDEX", "MEDIA_MANIFEST", "MEDIA_CONFIG",
           "MEDIA_LAYER", "TITLE", "VARIANT", "ARCH", "OCI_ARCH", "MODULE_VARIANT"]

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
# OCI platform architecture names, by the runner's architecture name.
OCI_ARCH = {"x86_64": "amd64", "arm64": "arm64"}


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
        raise fault(f"{what}: not JSON") from None
    schema = dict(_oci_schema())
    schema["$ref"] = f"#/$defs/{kind}"
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise fault(f"{what}: not an OCI {kind}: {where}: {error.message[:160]}")
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


def _names_module(annotations: dict | None) -> bool:
    """Annotations that call a manifest (or its layer) the wasm module."""
    annotations = annotations or {}
    return annotations.get(VARIANT) == MODULE_VARIANT or \
        str(annotations.get(TITLE, "")).endswith(".wasm")


def release_packages(source: Path) -> dict[tuple[str, str], Path]:
    """(arch, variant) -> package path, from runner/packages-like directory trees."""
    from .tcprtt.variants import of_document
    found = {}
    for arch in OCI_ARCH:
        for path in sorted((source / arch).glob("*.json")):
            variant = of_document(json.loads(path.read_text()))
            if variant:
                found[(arch, variant)] = path
    if not found:
        raise fault(f"{source}: no built packages (expected {source}/<arch>/*.json; "
                            "run `make ship` or `make packages`)")
    return found


def release_module(path: Path) -> bytes:
    """The wasm module to publish beside the packages, checked to be one."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise fault(f"{path}: no wasm module (`make ship` builds it; or push with "
                            "--module FILE, or --no-module for the packages alone)") from None
    if data[:8] != WASM_HEADER:
        raise fault(f"{path}: not a WebAssembly module (no \\0asm version 1 header)")
    if len(data) > MAX_BLOB:
        raise fault(f"{path}: the module is over the {MAX_BLOB}-byte limit")
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
        raise fault(f"{ref}: push needs a tag, not a digest")
    if not packages and module is None:
        raise fault(f"{ref}: nothing to push")
    if module is not None and not is_module(module):
        raise fault(f"{ref}: the module is not WebAssembly")
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
    cache: Cache | None = field(default=None, compare=False, repr=False)

    def package_bytes(self, variant: str) -> bytes:
        """A package's bytes, read from the cache (no link followed) and
        checked against their digest once more."""
        path = self.packages[variant]
        if self.cache is None:
            return path.read_bytes()
        return self.cache.read("sha256:" + path.name)


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
    try:
        doc = parse_json(body)  # a pinned digest may name any cached blob
    except ValueError:
        raise fault(f"{digest}: not an OCI index or manifest (not JSON)") from None
    if not isinstance(doc, dict):
        raise fault(f"{digest}: not an OCI index or manifest")
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
        data = cache.read(layer["digest"])  # present and intact
        path = cache.path(layer["digest"])
        if is_module(data):
            module = module or path
            continue
        variant = _variant(data, manifest, layer)
        packages[variant] = path
    if not packages and module is None:
        raise fault(f"{digest}: nothing for architecture {arch}")
    return Pulled(digest, packages, module, cache)


def _variant(data: bytes, manifest: dict, layer: dict) -> str:
    """A cached package's variant: what the package says it is, else what
    its manifest calls it (the annotation, else the layer's file name)."""
    from .tcprtt.variants import of_document
    try:
        own = of_document(json.loads(data))
    except (ValueError, UnicodeDecodeError, RecursionError):
        own = None
    return own or (manifest.get("annotations") or {}).get(VARIANT) or \
        Path(layer.get("annotations", {}).get(TITLE, "package.json")).stem.split(".")[-1]


def _fetch_layer(client: Client, cache: Cache, body: bytes, digest: str,
                 claims_module: bool) -> bool:
    """Fetch a manifest's layer into the cache; True if it is the module."""
    ref = client.ref
    manifest = parse_document(body, "manifest", f"{ref} manifest {digest}")
    layer = manifest["layers"][0]
    if layer["mediaType"] != MEDIA_LAYER:
        raise fault(f"{ref}: manifest {digest}: its first layer is not of the "
                            f"{MEDIA_LAYER} type")
    claims_module = claims_module or _names_module(manifest.get("annotations")) or \
        _names_module(layer.get("annotations"))
    client.get_blob(layer["digest"], layer.get("size", 0), cache)
    found = is_module(cache.read(layer["digest"]))
    if claims_module and not found:
        raise fault(f"{ref}: manifest {digest} names the wasm module, but its layer "
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
            raise fault(f"{ref}: no manifest for architecture {arch}")
        for entry in wanted:
            if entry.get("size", 0) > MAX_MANIFEST:
                raise fault(f"{ref}: manifest {entry['digest']} is over the "
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
        raise fault(f"{ref}: unsupported media type {media!r}")
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
