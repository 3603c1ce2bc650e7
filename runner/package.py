"""The eunomia package: decode, check and describe it, without the kernel.

A package is the JSON that eunomia's ``ecc`` writes and ``ecli`` loads: a
base64, zlib-compressed BPF ELF object and a ``meta`` block describing its
maps, programs and settings. ``Package`` is the checked description that the
loader, the command line and the packer all share.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from . import bpfobject
from .bpfobject import BpfObject, Btf
from .errors import PackageError

# The runner's own files (the shipped packages, the schema) beside this module:
# a path, not importlib.resources, whose imports (tempfile, shutil, bz2, lzma,
# random) a plain trace would carry for nothing.
HERE = Path(__file__).resolve().parent

# No BPF object the runner handles comes near this; it caps inflation so that
# a small package cannot expand to gigabytes.
MAX_OBJECT_SIZE = 16 << 20
MAX_PACKAGE_SIZE = 64 << 20

# What no histogram needs, refused with the limit in the message: the runner
# sizes its read buffers and its memory from these numbers.
MAX_JSON_DEPTH = 32
MAX_PROGRAMS = 64
MAX_MAPS = 64
MAX_SETTINGS = 256
MAX_HIST_KEY_SIZE = 256
MAX_HIST_VALUE_SIZE = 4096
MAX_HIST_ENTRIES = 1 << 20
MAX_HIST_SLOTS = 64
MAX_MAP_KEY_SIZE = 1024
MAX_MAP_VALUE_SIZE = 1 << 20
MAX_MAP_BYTES = 1 << 28          # max_entries * (key_size + value_size), per map
MAX_INTERVAL_MS = 31536000 * 1000  # a year, as the run command's -i
MAX_NAME = 64
FLAG_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
# Long options the run command has itself; a setting may not take them.
RESERVED_FLAGS = ("--help", "--interval", "--duration", "--json", "--traceback")

SUPPORTED_ATTACH = ("fentry/", "fexit/", "kprobe/", "kretprobe/", "tp/", "tracepoint/",
                    "raw_tp/", "raw_tracepoint/", "tp_btf/")
UNSUPPORTED_MAPS = {4: "perf event arrays", 27: "ring buffers", 30: "user ring buffers"}
# What no loader of the runner reads, whatever the package's output (``any_output``).
NEVER_SUPPORTED_MAPS = {30: "user ring buffers"}
MAP_TYPES_WITH_KEYS = {1: "hash", 2: "array", 9: "lru_hash"}


@lru_cache(maxsize=1)
def schema() -> dict:
    text = (HERE / "schemas" / "eunomia-package.schema.json").read_text()
    return json.loads(text)


def validate(doc: object, source: str = "package") -> None:
    """Check ``doc`` against the eunomia package schema."""
    import jsonschema  # 4 MB of modules: only for a package from outside the runner
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
    if type(size) is not int:
        raise PackageError(f"{source}: bpf_object_size {size!r} is not an integer")
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
    if inflater.unused_data:
        raise PackageError(f"{source}: bpf_object has {len(inflater.unused_data)} bytes "
                           "after its zlib stream")
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

    @property
    def help_text(self) -> str:
        """The description as argparse help: its '%' would be taken for a format."""
        return (self.description or self.type).replace("%", "%%")

    @property
    def option(self) -> str:
        """The option string the run command gives this setting."""
        if self.type == "bool" and self.default is True:
            return f"--disable-{self.flag}"
        if self.type == "bool" and self.default is False:
            return f"--enable-{self.flag}"
        return f"--{self.flag}"


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
    path: str | None = None  # the file it was read from, when it was read from one

    @property
    def btf(self) -> Btf:
        return self.bpf.btf

    @property
    def variant(self) -> str | None:
        """Which of tcprtt's attach variants this package is, if it is one."""
        from .tcprtt.variants import of_document
        return of_document(self.doc)

    @property
    def digest(self) -> str:
        import hashlib  # OpenSSL's libcrypto, 3.6 MB: only when a digest is asked for
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
    interval = sample.get("interval", 1000)
    if type(interval) is not int or not 0 <= interval <= MAX_INTERVAL_MS:
        raise PackageError(f"{source}: sample interval {interval!r} ms of map {name!r} is not "
                           f"an integer in 0..{MAX_INTERVAL_MS}")
    unit = sample.get("unit", "(unit)")
    if len(unit) > MAX_NAME:
        raise PackageError(f"{source}: the unit of map {name!r} is longer than "
                           f"{MAX_NAME} characters")
    key_size, value_size = mapdef.key_size, mapdef.value_size
    _check_limit(source, name, "key size", key_size, 1, MAX_HIST_KEY_SIZE)
    _check_limit(source, name, "value size", value_size, 1, MAX_HIST_VALUE_SIZE)
    _check_limit(source, name, "max_entries", mapdef.max_entries, 1, MAX_HIST_ENTRIES)
    _check_limit(source, name, "number of slots", arr.nelems, 1, MAX_HIST_SLOTS)
    if slots.offset + 4 * arr.nelems > value_size:
        raise PackageError(f"{source}: 'slots' of map {name!r} runs past the end of its value")
    return HistMap(name=name, interval_ms=interval, unit=unit, key_type=mapdef.key_type,
                   value_type=mapdef.value_type, key_size=key_size, value_size=value_size,
                   slots_offset=slots.offset, slots_count=arr.nelems,
                   max_entries=mapdef.max_entries)


def _check_limit(source: str, name: str, what: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise PackageError(f"{source}: map {name!r} has a {what} of {value}, outside the "
                           f"{low}..{high} the runner allows")


def _check_map_sizes(source: str, name: str, key_size: int, value_size: int,
                     max_entries: int) -> None:
    """Limits for every map of the object, histogram or not."""
    _check_limit(source, name, "key size", key_size, 0, MAX_MAP_KEY_SIZE)
    _check_limit(source, name, "value size", value_size, 0, MAX_MAP_VALUE_SIZE)
    total = max_entries * (key_size + value_size)
    if total > MAX_MAP_BYTES:
        raise PackageError(f"{source}: map {name!r} asks for {max_entries} entries of "
                           f"{key_size + value_size} bytes ({total} bytes), more than the "
                           f"{MAX_MAP_BYTES} bytes the runner allows a map")


def _json_depth_ok(doc: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``doc`` nests no deeper than ``limit`` (walked without recursion)."""
    stack = [(doc, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth >= limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def parse(doc: object, source: str = "package", vet: bool = True,
          any_output: bool = False) -> Package:
    """Check a decoded package.json and describe it; raises PackageError.

    With ``vet`` (the default), libbpf also opens the object, in a child
    process (``loader.vet``), and what it finds there must agree with the
    metadata: this is what lets the runner open it in its own process later.
    Without it (the packages shipped inside the runner, which ``runner.build``
    checked in full when it made them) neither that child nor the JSON Schema
    check runs: jsonschema and its modules would be 4 MB of a plain trace's
    memory. Our own checks of the object and metadata run either way.

    With ``any_output`` the package may report as ecli packages do (ring
    buffers, perf event arrays, any sample map, or nothing) and attach
    anywhere: the run command (``runner.events``) checks those itself, and
    ``hists`` holds its log2_hist maps only, checked as ever."""
    if not _json_depth_ok(doc):
        raise PackageError(f"{source}: not a eunomia package: JSON nested deeper than "
                           f"{MAX_JSON_DEPTH} levels")
    if vet:
        validate(doc, source)
    if not isinstance(doc, dict):
        raise PackageError(f"{source}: not a eunomia package: not a JSON object")
    obj = decode_object(doc["bpf_object"], doc["bpf_object_size"], source)
    try:
        package = _describe(doc, obj, source, any_output)
    except PackageError as exc:
        if str(exc).startswith(f"{source}: "):
            raise
        raise PackageError(f"{source}: {exc}") from None  # bpfobject's, which names no file
    except (struct.error, IndexError, KeyError, TypeError, ValueError, RecursionError,
            OverflowError, MemoryError) as exc:
        # The schema admits it, but the object or meta inside is malformed.
        raise PackageError(f"{source}: malformed package ({type(exc).__name__}: "
                           f"{str(exc)[:120]})") from None
    if vet:
        _check_vetted(package, _vetted(obj, package.name, source), any_output)
    return package


def _vetted(obj: bytes, name: str, source: str):
    """libbpf's view of the object, from a child process; remembered per
    object so that the same bytes are opened once per process."""
    import hashlib

    from .loader import vet
    key = (hashlib.sha256(obj).digest(), name)
    if key not in _VETTED:
        if len(_VETTED) >= 64:
            _VETTED.clear()
        _VETTED[key] = vet.vet(obj, name, source)
    return _VETTED[key]


_VETTED: dict = {}


def _check_vetted(package: Package, vetted, any_output: bool = False) -> None:
    """What libbpf found must be what the metadata and our own ELF reading say."""
    if vetted is None:  # no libbpf here: nothing in this process opens the object
        return
    source = package.source
    listed = {p["name"]: p["attach"] for p in package.progs}
    if len(vetted.programs) > MAX_PROGRAMS:
        raise PackageError(f"{source}: libbpf finds {len(vetted.programs)} programs in the "
                           f"object, more than the {MAX_PROGRAMS} the runner allows")
    for prog in vetted.programs:
        _check_program(source, listed, prog.name, prog.section, any_output)
    found = {p.name for p in vetted.programs}
    for name in listed:
        if name not in found:
            raise PackageError(f"{source}: the metadata lists program {name!r}, "
                               "which libbpf does not find in the object")
    if len(vetted.maps) > MAX_MAPS:
        raise PackageError(f"{source}: the object has {len(vetted.maps)} maps, more than "
                           f"the {MAX_MAPS} the runner allows")
    hists = {h.name: h for h in package.hists}
    unsupported = NEVER_SUPPORTED_MAPS if any_output else UNSUPPORTED_MAPS
    for m in vetted.maps:
        if m.map_type in unsupported:
            raise PackageError(f"{source}: map {m.name!r} uses {UNSUPPORTED_MAPS[m.map_type]}, "
                               "which the runner does not support (only log2_hist sample maps)")
        _check_map_sizes(source, m.name, m.key_size, m.value_size, m.max_entries)
        hist = hists.get(m.name)
        if hist is not None and (m.key_size, m.value_size, m.max_entries) != \
                (hist.key_size, hist.value_size, hist.max_entries):
            raise PackageError(f"{source}: libbpf reads map {m.name!r} as "
                               f"{m.key_size}-byte keys, {m.value_size}-byte values and "
                               f"{m.max_entries} entries, its BTF says {hist.key_size}, "
                               f"{hist.value_size} and {hist.max_entries}")
    for name in hists:
        if name not in {m.name for m in vetted.maps}:
            raise PackageError(f"{source}: libbpf does not find sample map {name!r}")


def _check_program(source: str, listed: dict, name: str, section: str,
                   any_output: bool = False) -> None:
    """A program of the object must be in the metadata, attach where the
    metadata says, and attach to something the runner supports."""
    if any_output and name not in listed:
        raise PackageError(f"{source}: the object holds program {name!r}, attached to "
                           f"{section!r}, which the metadata does not list")
    if not any_output and not section.startswith(SUPPORTED_ATTACH):
        raise PackageError(f"{source}: program {name!r} attaches to {section!r}, which "
                           "the runner does not support (only fentry, kprobe, tracepoint "
                           "and raw tracepoint)")
    if name not in listed:
        raise PackageError(f"{source}: the object holds program {name!r} ({section}), "
                           "which the metadata does not list")
    if listed[name] != section:
        raise PackageError(f"{source}: program {name!r} attaches to {section!r}, but the "
                           f"metadata says {listed[name]!r}")


def _describe(doc: dict, obj: bytes, source: str, any_output: bool = False) -> Package:
    bpf = BpfObject(obj)
    skel = doc["meta"]["bpf_skel"]
    name = skel["obj_name"]
    if len(name) > MAX_NAME or "\0" in name:
        raise PackageError(f"{source}: obj_name is longer than {MAX_NAME} characters "
                           "or holds a NUL")
    progs = tuple(skel.get("progs") or ())
    if not progs:
        raise PackageError(f"{source}: the package has no programs")
    if len(progs) > MAX_PROGRAMS:
        raise PackageError(f"{source}: the package lists {len(progs)} programs, more than "
                           f"the {MAX_PROGRAMS} the runner allows")
    listed: dict[str, str] = {}
    for prog in progs:
        if not any_output and not prog["attach"].startswith(SUPPORTED_ATTACH):
            raise PackageError(f"{source}: program {prog['name']!r} attaches to "
                               f"{prog['attach']!r}, which the runner does not support "
                               "(only fentry, kprobe, tracepoint and raw tracepoint)")
        if prog["name"] in listed:
            raise PackageError(f"{source}: the metadata lists program {prog['name']!r} twice")
        listed[prog["name"]] = prog["attach"]
    # libbpf loads and attaches every program of the ELF, listed or not.
    in_elf = bpf.programs()
    if len(in_elf) > MAX_PROGRAMS:
        raise PackageError(f"{source}: the object holds {len(in_elf)} programs, more than "
                           f"the {MAX_PROGRAMS} the runner allows")
    for prog in in_elf:
        _check_program(source, listed, prog.name, prog.section, any_output)
    missing = set(listed) - {p.name for p in in_elf}
    if missing:
        raise PackageError(f"{source}: the metadata lists program {sorted(missing)[0]!r}, "
                           "which the object does not hold")
    maps = bpf.maps()
    if len(maps) > MAX_MAPS:
        raise PackageError(f"{source}: the object has {len(maps)} maps, more than the "
                           f"{MAX_MAPS} the runner allows")
    defs = {m.name: m for m in maps}
    unsupported = NEVER_SUPPORTED_MAPS if any_output else UNSUPPORTED_MAPS
    for m in defs.values():
        if m.map_type in unsupported:
            raise PackageError(f"{source}: map {m.name!r} uses {UNSUPPORTED_MAPS[m.map_type]}, "
                               "which the runner does not support (only log2_hist sample maps)")
    hists = []
    for entry in skel.get("maps") or ():
        sample = entry.get("sample")
        if sample is None:
            continue
        if any_output and sample.get("type", "default_kv") != "log2_hist":
            continue  # runner.events reads and checks the others
        if sample.get("type", "default_kv") != "log2_hist":
            raise PackageError(f"{source}: map {entry['name']!r} samples as "
                               f"{sample.get('type', 'default_kv')!r}; the runner renders "
                               "only log2_hist")
        hists.append(_hist_map(bpf, entry, defs, source))
    if not hists and not any_output:
        raise PackageError(f"{source}: the package has no log2_hist sample map")
    for m in defs.values():  # after the sample maps' own, narrower limits
        _check_map_sizes(source, m.name, m.key_size, m.value_size, m.max_entries)

    described = {}
    for section in skel.get("data_sections") or ():
        if section["name"] == ".rodata":
            described = {v["name"]: v for v in section["variables"]}
    rodata_size = bpf.section_size(".rodata")
    if rodata_size > MAX_MAP_VALUE_SIZE:
        raise PackageError(f"{source}: .rodata is {rodata_size} bytes, more than the "
                           f"{MAX_MAP_VALUE_SIZE} the runner allows")
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
    _check_settings(source, settings, rodata_size)
    return Package(name=name, source=source, doc=doc, obj=obj, bpf=bpf,
                   progs=progs, settings=tuple(settings),
                   rodata_size=rodata_size, hists=tuple(hists))


def _check_settings(source: str, settings: list[Setting], rodata_size: int) -> None:
    """Settings become command-line flags: each needs a name, a flag of its
    own that the run command does not have, and a place inside .rodata."""
    if len(settings) > MAX_SETTINGS:
        raise PackageError(f"{source}: the package has {len(settings)} settings, more than "
                           f"the {MAX_SETTINGS} the runner allows")
    names: set[str] = set()
    options: set[str] = set()
    for s in settings:
        if not s.name:
            raise PackageError(f"{source}: a .rodata variable has an empty name")
        if s.name in names:
            raise PackageError(f"{source}: two settings are named {s.name!r}")
        names.add(s.name)
        if len(s.flag) > MAX_NAME or not FLAG_PATTERN.match(s.flag):
            raise PackageError(f"{source}: setting {s.name!r} has the flag name {s.flag!r}; "
                               f"a flag name is 1 to {MAX_NAME} letters, digits, '_', '.' or "
                               "'-', starting with a letter or digit")
        if s.option in RESERVED_FLAGS:
            raise PackageError(f"{source}: setting {s.name!r} would take the flag "
                               f"{s.option}, which the run command uses itself")
        if s.option in options:
            raise PackageError(f"{source}: two settings would take the flag {s.option}")
        options.add(s.option)
        if s.size <= 0 or s.offset < 0 or s.offset + s.size > rodata_size:
            raise PackageError(f"{source}: setting {s.name!r} ({s.size} bytes at offset "
                               f"{s.offset}) is not inside .rodata ({rodata_size} bytes)")


# Where the shipped packages are: ARCH/tcprtt.VARIANT.json, and tcprtt.wasm.
SHIPPED = HERE / "packages"


def shipped(variant: str, arch: str) -> Path:
    """The package of ``variant`` that ships inside the runner."""
    return SHIPPED / arch / f"tcprtt.{variant}.json"


def is_shipped(path: str | Path) -> bool:
    """Whether ``path`` is one of the packages installed with the runner."""
    base = SHIPPED.resolve()
    try:
        return Path(path).resolve().parent.parent == base
    except OSError:
        return False


def loads(text: str | bytes, source: str = "package", vet: bool = True,
          path: str | Path | None = None) -> Package:
    """A package from its bytes; ``path`` is the file they were read from,
    for a loader that takes a file (ecli), where ``source`` is only a label."""
    if len(text) > MAX_PACKAGE_SIZE:
        raise PackageError(f"{source}: the package is larger than {MAX_PACKAGE_SIZE} bytes")
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PackageError(f"{source}: not JSON ({str(exc)[:200]})") from None
    except RecursionError:
        raise PackageError(f"{source}: not a eunomia package: JSON nested deeper than "
                           f"{MAX_JSON_DEPTH} levels") from None
    package = parse(doc, source, vet)
    return package if path is None else dataclasses.replace(package, path=str(path))


def load(path: str | Path) -> Package:
    """Read and check a package file. The packages installed with the runner
    are not opened by libbpf in a child (``parse``'s ``vet``): they are the
    runner's own, vetted when ``runner.build`` made them, and the few
    milliseconds per package count against the start-up time."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            text = f.read(MAX_PACKAGE_SIZE + 1)
    except OSError as exc:
        raise PackageError(f"{path}: cannot read the package ({exc.strerror})") from None
    return loads(text, str(path), vet=not is_shipped(path), path=path)


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
