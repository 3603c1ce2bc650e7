"""The eunomia package: decode, check and describe it, without the kernel.

A package is the JSON that eunomia's ``ecc`` writes and ``ecli`` loads: a
base64, zlib-compressed BPF ELF object and a ``meta`` block describing its
maps, programs and settings. ``Package`` is the checked description that the
loader, the command line and the packer all share.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import jsonschema

from . import bpfobject
from .bpfobject import BpfObject, Btf
from .errors import PackageError

# No BPF object the runner handles comes near this; it caps inflation so that
# a small package cannot expand to gigabytes.
MAX_OBJECT_SIZE = 16 << 20
MAX_PACKAGE_SIZE = 64 << 20

SUPPORTED_ATTACH = ("fentry/", "fexit/", "kprobe/", "kretprobe/", "tp/", "tracepoint/",
                    "raw_tp/", "raw_tracepoint/", "tp_btf/")
UNSUPPORTED_MAPS = {4: "perf event arrays", 27: "ring buffers", 30: "user ring buffers"}
MAP_TYPES_WITH_KEYS = {1: "hash", 2: "array", 9: "lru_hash"}


@lru_cache(maxsize=1)
def schema() -> dict:
    text = resources.files(__package__).joinpath("schemas/eunomia-package.schema.json").read_text()
    return json.loads(text)


def validate(doc: object, source: str = "package") -> None:
    """Check ``doc`` against the eunomia package schema."""
    validator = jsonschema.Draft202012Validator(schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise PackageError(f"{source}: not a eunomia package: {where}: {error.message[:200]}")


def encode_object(obj: bytes) -> str:
    """base64 of the zlib-compressed object, as ecc writes it."""
    return base64.b64encode(zlib.compress(obj, 9)).decode("ascii")


def decode_object(data: str, size: int, source: str = "package") -> bytes:
    """Inflate a package's object, refusing anything that is not exactly ``size`` bytes."""
    if not 0 < size <= MAX_OBJECT_SIZE:
        raise PackageError(f"{source}: bpf_object_size {size} is out of range "
                           f"(1..{MAX_OBJECT_SIZE})")
    try:
        compressed = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PackageError(f"{source}: bpf_object is not valid base64 ({exc})") from None
    inflater = zlib.decompressobj()
    try:
        obj = inflater.decompress(compressed, size + 1)
    except zlib.error as exc:
        raise PackageError(f"{source}: bpf_object is not valid zlib data ({exc})") from None
    if len(obj) > size or inflater.unconsumed_tail:
        raise PackageError(f"{source}: bpf_object inflates to more than its "
                           f"bpf_object_size of {size} bytes")
    if not inflater.eof:
        raise PackageError(f"{source}: bpf_object is truncated (zlib stream does not end)")
    if len(obj) != size:
        raise PackageError(f"{source}: bpf_object inflates to {len(obj)} bytes, "
                           f"but bpf_object_size says {size}")
    return obj


@dataclass(frozen=True)
class Setting:
    """A ``.rodata`` variable that the user may set."""

    name: str
    type: str
    type_id: int
    offset: int
    size: int
    description: str
    flag: str          # the long flag name, as ecli derives it
    default: object


@dataclass(frozen=True)
class HistMap:
    """A ``log2_hist`` sample map and where its slots are."""

    name: str
    interval_ms: int
    unit: str
    key_type: int
    value_type: int
    key_size: int
    value_size: int
    slots_offset: int
    slots_count: int
    max_entries: int


@dataclass(frozen=True)
class Package:
    name: str
    source: str
    doc: dict
    obj: bytes
    bpf: BpfObject
    progs: tuple[dict, ...]
    settings: tuple[Setting, ...]
    rodata_size: int
    hists: tuple[HistMap, ...]

    @property
    def btf(self) -> Btf:
        return self.bpf.btf

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.obj).hexdigest()

    def setting(self, name: str) -> Setting:
        for s in self.settings:
            if s.name == name:
                return s
        raise PackageError(f"{self.source}: the package has no setting {name!r}")


def _flag_name(var: dict) -> str:
    cmdarg = var.get("cmdarg") or {}
    return cmdarg.get("long") or var["name"]


def _hist_map(bpf: BpfObject, entry: dict, defs: dict, source: str) -> HistMap:
    name = entry["name"]
    mapdef = defs.get(name)
    if mapdef is None:
        raise PackageError(f"{source}: sample map {name!r} is not in the object's .maps")
    btf = bpf.btf
    value = btf.get(btf.resolve(mapdef.value_type))
    slots = next((m for m in value.members if m.name == "slots"), None)
    if value.kind != bpfobject.KIND_STRUCT or slots is None:
        raise PackageError(f"{source}: the value of map {name!r} has no 'slots' member")
    arr = btf.get(btf.resolve(slots.type_id))
    if arr.kind != bpfobject.KIND_ARRAY or btf.size_of(arr.elem) != 4:
        raise PackageError(f"{source}: 'slots' of map {name!r} is not an array of 32-bit counters")
    if mapdef.map_type not in MAP_TYPES_WITH_KEYS:
        raise PackageError(f"{source}: sample map {name!r} has map type {mapdef.map_type}, "
                           "which the runner does not read")
    sample = entry["sample"]
    return HistMap(name=name, interval_ms=sample.get("interval", 1000),
                   unit=sample.get("unit", "(unit)"), key_type=mapdef.key_type,
                   value_type=mapdef.value_type, key_size=btf.size_of(mapdef.key_type),
                   value_size=btf.size_of(mapdef.value_type), slots_offset=slots.offset,
                   slots_count=arr.nelems, max_entries=mapdef.max_entries)


def parse(doc: object, source: str = "package") -> Package:
    """Check a decoded package.json and describe it; raises PackageError."""
    validate(doc, source)
    assert isinstance(doc, dict)
    obj = decode_object(doc["bpf_object"], doc["bpf_object_size"], source)
    try:
        return _describe(doc, obj, source)
    except PackageError:
        raise
    except (struct.error, IndexError, KeyError, TypeError, ValueError, RecursionError) as exc:
        # The schema admits it, but the object or meta inside is malformed.
        raise PackageError(f"{source}: malformed package ({type(exc).__name__}: "
                           f"{str(exc)[:120]})") from None


def _describe(doc: dict, obj: bytes, source: str) -> Package:
    bpf = BpfObject(obj)
    skel = doc["meta"]["bpf_skel"]
    progs = tuple(skel.get("progs") or ())
    if not progs:
        raise PackageError(f"{source}: the package has no programs")
    for prog in progs:
        if not prog["attach"].startswith(SUPPORTED_ATTACH):
            raise PackageError(f"{source}: program {prog['name']!r} attaches to "
                               f"{prog['attach']!r}, which the runner does not support "
                               "(only fentry, kprobe, tracepoint and raw tracepoint)")
    defs = {m.name: m for m in bpf.maps()}
    for m in defs.values():
        if m.map_type in UNSUPPORTED_MAPS:
            raise PackageError(f"{source}: map {m.name!r} uses {UNSUPPORTED_MAPS[m.map_type]}, "
                               "which the runner does not support (only log2_hist sample maps)")
    hists = []
    for entry in skel.get("maps") or ():
        sample = entry.get("sample")
        if sample is None:
            continue
        if sample.get("type", "default_kv") != "log2_hist":
            raise PackageError(f"{source}: map {entry['name']!r} samples as "
                               f"{sample.get('type', 'default_kv')!r}; the runner renders "
                               "only log2_hist")
        hists.append(_hist_map(bpf, entry, defs, source))
    if not hists:
        raise PackageError(f"{source}: the package has no log2_hist sample map")

    described = {}
    for section in skel.get("data_sections") or ():
        if section["name"] == ".rodata":
            described = {v["name"]: v for v in section["variables"]}
    settings = []
    for var in bpf.variables(".rodata"):
        meta = described.get(var.name, {"name": var.name, "type": var.type})
        if var.name.startswith("__eunomia_dummy"):
            continue
        settings.append(Setting(name=var.name, type=var.type, type_id=var.type_id,
                                offset=var.offset, size=var.size,
                                description=meta.get("description", ""),
                                flag=_flag_name(meta),
                                default=(meta.get("cmdarg") or {}).get("default")))
    return Package(name=skel["obj_name"], source=source, doc=doc, obj=obj, bpf=bpf,
                   progs=progs, settings=tuple(settings),
                   rodata_size=bpf.section_size(".rodata"), hists=tuple(hists))


def shipped(variant: str, arch: str) -> Path:
    """The package of ``variant`` that ships inside the runner."""
    base = resources.files(__package__).joinpath("packages")
    return Path(str(base.joinpath(arch, f"tcprtt.{variant}.json")))


def loads(text: str | bytes, source: str = "package") -> Package:
    if len(text) > MAX_PACKAGE_SIZE:
        raise PackageError(f"{source}: the package is larger than {MAX_PACKAGE_SIZE} bytes")
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PackageError(f"{source}: not JSON ({exc})") from None
    return parse(doc, source)


def load(path: str | Path) -> Package:
    path = Path(path)
    try:
        with path.open("rb") as f:
            text = f.read(MAX_PACKAGE_SIZE + 1)
    except OSError as exc:
        raise PackageError(f"{path}: cannot read the package ({exc.strerror})") from None
    return loads(text, str(path))


def encode_setting(package: Package, setting: Setting, value: object) -> bytes:
    """The bytes of one setting's value, checked against its BTF type."""
    btf = package.btf
    t = btf.get(btf.resolve(setting.type_id))
    where = f"setting {setting.flag}"
    if t.kind == bpfobject.KIND_INT and t.encoding & 4 or setting.type == "bool":
        if not isinstance(value, bool):
            raise PackageError(f"{where}: expected true or false, got {value!r}")
        return bytes([value]).ljust(setting.size, b"\0")
    if t.kind in (bpfobject.KIND_INT, bpfobject.KIND_ENUM):
        if isinstance(value, bool) or not isinstance(value, int):
            raise PackageError(f"{where}: expected an integer, got {value!r}")
        signed = t.kind == bpfobject.KIND_INT and bool(t.encoding & 1)
        try:
            return value.to_bytes(setting.size, "little", signed=signed)
        except OverflowError:
            raise PackageError(f"{where}: {value} does not fit in {setting.type}") from None
    if t.kind == bpfobject.KIND_ARRAY:
        if isinstance(value, str):
            value = value.encode()
            if len(value) >= setting.size:
                raise PackageError(f"{where}: {value!r} is longer than {setting.size - 1} bytes")
        if not isinstance(value, (bytes, bytearray)) or len(value) > setting.size:
            raise PackageError(f"{where}: expected at most {setting.size} bytes")
        return bytes(value).ljust(setting.size, b"\0")
    raise PackageError(f"{where}: values of type {setting.type!r} cannot be set")


def rodata_image(package: Package, values: dict[str, object]) -> bytes:
    """The object's .rodata with ``values`` (by variable name) written in."""
    image = bytearray(package.bpf.section(".rodata") or bytes(package.rodata_size))
    for name, value in values.items():
        setting = package.setting(name)
        image[setting.offset:setting.offset + setting.size] = \
            encode_setting(package, setting, value)
    return bytes(image)
