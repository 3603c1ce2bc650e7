"""What ecli reads from a package, and how it lays each record out.

ecli (``skeleton/mod.rs``, ``wait_and_poll_with_old_single_export``) walks
the maps the metadata lists and keeps the last one that is a sample map, a
ring buffer or a perf event array; a package with none of them attaches and
waits. A ring buffer's or perf array's records are the first
``export_types`` struct, its members checked against BTF
(``export_event/checker.rs``); a sample map's keys and values are its BTF
key and value types, the value's members named as ``export_types`` names
them when it matches, the key's (and a mismatched value's) after their
types, as ecli does. Everything is checked here, when the package is
opened: a record that cannot be decoded is refused now, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..bpfobject import (
    KIND_ARRAY,
    KIND_CONST,
    KIND_FUNC_PROTO,
    KIND_PTR,
    KIND_RESTRICT,
    KIND_STRUCT,
    KIND_VOLATILE,
    Btf,
    Decode,
    ecli_decoder,
    ecli_size,
)
from ..errors import PackageError
from ..package import MAX_INTERVAL_MS, Package
from .format import Render, json_writer, object_writer, text_writer

RINGBUF, PERF_EVENT_ARRAY = 27, 4
# Maps whose keys ecli's sampler can walk and whose values are one copy.
SAMPLED_MAP_TYPES = {1: "hash", 2: "array", 9: "lru_hash"}
SAMPLE_TYPES = ("log2_hist", "linear_hist", "default_kv")


@dataclass(frozen=True)
class Field:
    """One member of a record: its name, its bytes and how to decode them."""

    name: str
    start: int
    end: int
    decode: Decode
    json: Render   # its decoded value as JSON text
    text: Render   # as ecli's plain text


@dataclass(frozen=True)
class Export:
    """The one thing ecli polls in a package."""

    kind: str                       # "ring buffer", "perf event array", "sample map", "none"
    map: str | None = None
    fields: tuple[Field, ...] = ()  # a record's members; a sample map's value members
    size: int = 0                   # bytes a record (a sample map's value) must hold
    key_fields: tuple[Field, ...] = ()
    key_size: int = 0
    sample_type: str = ""
    interval_ms: int = 0
    unit: str = "(unit)"
    clear_map: bool = False
    max_entries: int = 0
    slots: Field | None = None      # log2_hist: the value's u32 slots
    record: Decode | None = None    # a ring buffer's or perf array's whole record, at once


def describe(package: Package, json_output: bool) -> Export:
    """What ``ecli run`` (with ``-j`` when ``json_output``) would poll."""
    source = package.source
    try:
        return _describe(package, json_output)
    except PackageError as exc:
        if str(exc).startswith(f"{source}: "):
            raise
        raise PackageError(f"{source}: {exc}") from None


def _describe(package: Package, json_output: bool) -> Export:
    source = package.source
    meta = package.doc["meta"]
    if meta.get("enable_multiple_export_types"):
        raise PackageError(f"{source}: the package sets enable_multiple_export_types, which "
                           "the runner does not support (one exported map per package)")
    defs = {m.name: m for m in package.bpf.maps()}
    chosen = None
    for entry in meta["bpf_skel"].get("maps") or ():
        mapdef = defs.get(entry["name"])
        if mapdef is None:
            continue  # internal maps (.rodata, .bss) are not in .maps
        if entry.get("sample") is not None:
            chosen = (entry, "sample map")
        elif mapdef.map_type == RINGBUF:
            chosen = (entry, "ring buffer")
        elif mapdef.map_type == PERF_EVENT_ARRAY:
            chosen = (entry, "perf event array")
    if chosen is None:
        return Export(kind="none")
    entry, kind = chosen
    name = entry["name"]
    interpreter = entry.get("intepreter", "default_struct")
    if interpreter != "default_struct":
        raise PackageError(f"{source}: map {name!r} asks for the interpreter {interpreter!r}; "
                           "the runner decodes records as structs only")
    exports = meta.get("export_types") or []
    if not exports:
        raise PackageError(f"{source}: export map named {name!r} found, but no export type "
                           "is provided")
    btf = package.btf
    if kind != "sample map":
        fields, size = _event_fields(btf, exports[0])
        return Export(kind=kind, map=name, fields=fields, size=size,
                      record=ecli_decoder(btf, exports[0]["type_id"]))
    mapdef = defs[name]
    sample = entry["sample"]
    stype = sample.get("type", "default_kv")
    if stype not in SAMPLE_TYPES:
        raise PackageError(f"{source}: map {name!r} samples as {stype!r}, not one of "
                           f"{', '.join(SAMPLE_TYPES)}")
    if stype == "linear_hist" and not json_output:
        raise PackageError(f"{source}: map {name!r} samples as linear_hist, which ecli prints "
                           "only as JSON (-j)")
    if mapdef.map_type not in SAMPLED_MAP_TYPES:
        raise PackageError(f"{source}: sample map {name!r} has map type {mapdef.map_type}; "
                           f"the runner samples {', '.join(SAMPLED_MAP_TYPES.values())} maps")
    interval = sample.get("interval")
    if type(interval) is not int or not 0 <= interval <= MAX_INTERVAL_MS:
        raise PackageError(f"{source}: sample interval {interval!r} ms of map {name!r} is not "
                           f"an integer in 0..{MAX_INTERVAL_MS}")
    if not mapdef.key_type or not mapdef.value_type:
        raise PackageError(f"{source}: sample map {name!r} has no BTF key or value type")
    key_fields = _sample_fields(btf, mapdef.key_type, None)
    value_fields = _sample_fields(btf, mapdef.value_type, exports[0])
    slots = None
    if stype == "log2_hist" and not json_output:
        slots = next((f for f in value_fields if f.name == "slots"), None)
        if slots is None:
            raise PackageError(f"{source}: the values of log2_hist map {name!r} have no "
                               "member named slots")
    key_size, value_size = ecli_size(btf, mapdef.key_type), ecli_size(btf, mapdef.value_type)
    if (key_size, value_size) != (mapdef.key_size, mapdef.value_size):
        raise PackageError(f"{source}: map {name!r} holds {mapdef.key_size}-byte keys and "
                           f"{mapdef.value_size}-byte values, its BTF types "
                           f"{key_size} and {value_size}")
    return Export(kind=kind, map=name, fields=value_fields, size=value_size,
                  key_fields=key_fields, key_size=key_size, sample_type=stype,
                  interval_ms=interval, unit=str(sample.get("unit", "(unit)")),
                  clear_map=bool(sample.get("clear_map", False)),
                  max_entries=mapdef.max_entries, slots=slots)


def _event_fields(btf: Btf, export: dict) -> tuple[tuple[Field, ...], int]:
    """``check_export_types_btf``: the struct of ``export_types[0]``, checked
    against BTF; members whose names differ from the metadata's are skipped."""
    type_id = export.get("type_id")
    if type(type_id) is not int or not 0 <= type_id < len(btf.types):
        raise PackageError(f"export type id {type_id!r} is not a BTF type")
    t = btf.get(type_id)
    if t.kind != KIND_STRUCT:
        raise PackageError(f"export type id {type_id} is not a struct")
    if t.name != export.get("name"):
        raise PackageError(f"export type names don't match: {t.name!r} in BTF, "
                           f"{export.get('name')!r} in the metadata")
    listed = export.get("members") or []
    if len(listed) != len(t.members):
        raise PackageError(f"export type {t.name!r} has {len(t.members)} members in BTF, "
                           f"{len(listed)} in the metadata")
    fields = []
    for member, described in zip(t.members, listed):
        if member.name != described.get("name"):
            continue
        if member.bit_offset % 8 or member.bit_size % 8:
            raise PackageError(f"member {member.name!r} of {t.name!r} is a bitfield, "
                               "which ecli does not decode")
        fields.append(_field(btf, member.name, member.type_id, member.offset, t.size))
    return tuple(fields), ecli_size(btf, type_id)


def _sample_fields(btf: Btf, type_id: int, export: dict | None) -> tuple[Field, ...]:
    """``check_sample_types_btf``: a struct's members, else the type itself;
    named after the metadata's members when ``export`` matches the struct by
    name and member count, else after each member's type, as ecli names them."""
    t = btf.get(type_id)
    if t.kind != KIND_STRUCT:
        return (_field(btf, btf.get(type_id).name if _named(btf, type_id) else "",
                       type_id, 0),)
    names = None
    if export is not None and export.get("name") == t.name and \
            len(export.get("members") or []) == len(t.members):
        names = [m.get("name", "") for m in export["members"]]
    out = []
    for i, member in enumerate(t.members):
        if member.bit_offset % 8 or member.bit_size % 8:
            raise PackageError(f"member {member.name!r} of {t.name!r} is a bitfield, "
                               "which ecli does not decode")
        name = names[i] if names else (btf.get(member.type_id).name
                                       if _named(btf, member.type_id) else "")
        out.append(_field(btf, name, member.type_id, member.offset, t.size))
    return tuple(out)


def _named(btf: Btf, type_id: int) -> bool:
    """Whether ecli's BTF library gives the type a name: pointers, arrays
    and qualifiers have none."""
    return btf.get(type_id).kind not in (0, KIND_PTR, KIND_ARRAY, KIND_CONST, KIND_VOLATILE,
                                         KIND_RESTRICT, KIND_FUNC_PROTO)


def _field(btf: Btf, name: str, type_id: int, offset: int, within: int | None = None) -> Field:
    end = offset + ecli_size(btf, type_id)
    if within is not None and end > within:
        raise PackageError(f"member {name!r} runs past the end of its struct ({within} bytes)")
    return Field(name, offset, end, ecli_decoder(btf, type_id), json_writer(btf, type_id),
                 text_writer(btf, type_id))


def record_writer(fields: tuple[Field, ...]) -> Render:
    """A record's members as one JSON object, as ecli builds it (the last
    member of a name wins, members sorted)."""
    return object_writer([(f.name, f.json) for f in fields])
