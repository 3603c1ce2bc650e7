"""What ecli reads from a package, and how it lays each record out.

ecli (``skeleton/mod.rs``, ``wait_and_poll_with_old_single_export``) walks
the maps the metadata lists and keeps the last one that is a sample map, a
ring buffer or a perf event array; a package with none of them attaches and
waits. A ring buffer's or perf array's records are the first
``export_types`` struct, its members checked against BTF
(``export_event/checker.rs``); a sample map's keys and values are its BTF
key and value types, the value's members named as ``export_types`` names
them when it matches, the key's (and a mismatched value's) after their
types, as ecli does. With ``enable_multiple_export_types`` ecli polls every
map whose ``export_config`` says how to read it (``_describe_many``).
Everything is checked here, when the package is opened: a record that
cannot be decoded is refused now, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..bpfobject import (
    KIND_ARRAY,
    KIND_CONST,
    KIND_FLOAT,
    KIND_FUNC_PROTO,
    KIND_INT,
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


def describe(package: Package, json_output: bool) -> list[Export]:
    """What ``ecli run`` (with ``-j`` when ``json_output``) would poll: one
    map, or, with ``enable_multiple_export_types``, every map the metadata
    gives an ``export_config``; an empty list for a package that exports
    nothing."""
    source = package.source
    try:
        if package.doc["meta"].get("enable_multiple_export_types"):
            return _describe_many(package, json_output)
        return _describe(package, json_output)
    except PackageError as exc:
        if str(exc).startswith(f"{source}: "):
            raise
        raise PackageError(f"{source}: {exc}") from None


def _kind(entry: dict, mapdef) -> str | None:
    if entry.get("sample") is not None:
        return "sample map"
    if mapdef.map_type == RINGBUF:
        return "ring buffer"
    if mapdef.map_type == PERF_EVENT_ARRAY:
        return "perf event array"
    return None


def _check_interpreter(entry: dict) -> None:
    interpreter = entry.get("intepreter", "default_struct")
    if interpreter != "default_struct":
        raise PackageError(f"map {entry['name']!r} asks for the interpreter {interpreter!r}; "
                           "the runner decodes records as structs only")


def _describe(package: Package, json_output: bool) -> list[Export]:
    """ecli's one exported map: the last that is a sample map, a ring
    buffer or a perf event array, its record the first export type."""
    meta = package.doc["meta"]
    defs = {m.name: m for m in package.bpf.maps()}
    chosen = None
    for entry in meta["bpf_skel"].get("maps") or ():
        mapdef = defs.get(entry["name"])
        if mapdef is None:
            continue  # internal maps (.rodata, .bss) are not in .maps
        kind = _kind(entry, mapdef)
        if kind is not None:
            chosen = (entry, kind)
    if chosen is None:
        return []
    entry, kind = chosen
    name = entry["name"]
    _check_interpreter(entry)
    exports = meta.get("export_types") or []
    if not exports:
        raise PackageError(f"export map named {name!r} found, but no export type is provided")
    btf = package.btf
    if kind != "sample map":
        fields, size = _event_fields(btf, exports[0])
        return [Export(kind=kind, map=name, fields=fields, size=size,
                       record=ecli_decoder(btf, exports[0]["type_id"]))]
    mapdef = defs[name]
    return [_sample_export(btf, entry, mapdef, json_output,
                           _sample_fields(btf, mapdef.key_type, None) if mapdef.key_type else (),
                           _sample_fields(btf, mapdef.value_type, exports[0])
                           if mapdef.value_type else ())]


def _describe_many(package: Package, json_output: bool) -> list[Export]:
    """ecli's multiple export types: every map with an ``export_config``
    other than ``no_export``, its records as that config says."""
    defs = {m.name: m for m in package.bpf.maps()}
    btf = package.btf
    out = []
    for entry in package.doc["meta"]["bpf_skel"].get("maps") or ():
        config = entry.get("export_config", "no_export")
        if config == "no_export":
            continue
        name = entry["name"]
        mapdef = defs.get(name)
        if mapdef is None:
            raise PackageError(f"map {name!r} is not in the object's .maps")
        kind = _kind(entry, mapdef)
        if kind is None:
            continue  # ecli ignores it: neither sampled nor a buffer
        _check_interpreter(entry)
        if config == "default":
            if kind != "sample map":
                raise PackageError(f"map {name!r}: export_config \"default\" only applies to "
                                   "sample maps")
            fields = _type_fields(btf, mapdef.value_type)
        elif isinstance(config, dict) and "btf_type_id" in config:
            fields = _type_fields(btf, config["btf_type_id"])
        elif isinstance(config, dict) and "custom_members" in config:
            fields = _custom_fields(btf, config["custom_members"])
        else:
            raise PackageError(f"map {name!r} has the export_config {config!r}, which ecli "
                               "does not know")
        if kind == "sample map":
            out.append(_sample_export(btf, entry, mapdef, json_output,
                                      _type_fields(btf, mapdef.key_type), fields))
        else:
            out.append(Export(kind=kind, map=name, fields=fields,
                              size=max((f.end for f in fields), default=0)))
    return out


def _sample_export(btf: Btf, entry: dict, mapdef, json_output: bool,
                   key_fields: tuple[Field, ...], value_fields: tuple[Field, ...]) -> Export:
    name = entry["name"]
    sample = entry["sample"]
    stype = sample.get("type", "default_kv")
    if stype not in SAMPLE_TYPES:
        raise PackageError(f"map {name!r} samples as {stype!r}, not one of "
                           f"{', '.join(SAMPLE_TYPES)}")
    if stype == "linear_hist" and not json_output:
        raise PackageError(f"map {name!r} samples as linear_hist, which ecli prints only as "
                           "JSON (-j)")
    if mapdef.map_type not in SAMPLED_MAP_TYPES:
        raise PackageError(f"sample map {name!r} has map type {mapdef.map_type}; the runner "
                           f"samples {', '.join(SAMPLED_MAP_TYPES.values())} maps")
    interval = sample.get("interval")
    if type(interval) is not int or not 0 <= interval <= MAX_INTERVAL_MS:
        raise PackageError(f"sample interval {interval!r} ms of map {name!r} is not an "
                           f"integer in 0..{MAX_INTERVAL_MS}")
    if not mapdef.key_type or not mapdef.value_type:
        raise PackageError(f"sample map {name!r} has no BTF key or value type")
    slots = None
    if stype == "log2_hist" and not json_output:
        slots = next((f for f in value_fields if f.name == "slots"), None)
        if slots is None:
            raise PackageError(f"the values of log2_hist map {name!r} have no member named "
                               "slots")
    key_size, value_size = ecli_size(btf, mapdef.key_type), ecli_size(btf, mapdef.value_type)
    if (key_size, value_size) != (mapdef.key_size, mapdef.value_size):
        raise PackageError(f"map {name!r} holds {mapdef.key_size}-byte keys and "
                           f"{mapdef.value_size}-byte values, its BTF types "
                           f"{key_size} and {value_size}")
    for what, fields, size in (("key", key_fields, key_size), ("value", value_fields,
                                                                 value_size)):
        if any(f.end > size for f in fields):
            raise PackageError(f"a {what} member of map {name!r} runs past its {size} bytes")
    return Export(kind="sample map", map=name, fields=value_fields, size=value_size,
                  key_fields=key_fields, key_size=key_size, sample_type=stype,
                  interval_ms=interval, unit=str(sample.get("unit", "(unit)")),
                  clear_map=bool(sample.get("clear_map", False)),
                  max_entries=mapdef.max_entries, slots=slots)


def _type_fields(btf: Btf, type_id: object) -> tuple[Field, ...]:
    """ecli's ``TypeDescriptor::BtfType``: a struct's members by their own
    names, or one unnamed member for an array, integer, float or pointer."""
    if type(type_id) is not int or not 0 < type_id < len(btf.types):
        raise PackageError(f"BTF type id {type_id!r} is not a type of the object")
    t = btf.get(type_id)
    if t.kind == KIND_STRUCT:
        out = []
        for m in t.members:
            if m.bit_offset % 8:
                raise PackageError(f"member {m.name!r} of {t.name!r} is a bitfield, which "
                                   "ecli does not decode")
            out.append(_field(btf, m.name, m.type_id, m.offset, t.size))
        return tuple(out)
    if btf.get(btf.resolve(type_id)).kind in (KIND_ARRAY, KIND_INT, KIND_FLOAT, KIND_PTR):
        return (_field(btf, "", type_id, 0),)
    raise PackageError(f"BTF type {type_id} is neither a struct nor an array, integer, float "
                       "or pointer")


def _custom_fields(btf: Btf, members: object) -> tuple[Field, ...]:
    """ecli's ``custom_members``: named types at byte offsets, in order,
    none overlapping the one before."""
    if not isinstance(members, list):
        raise PackageError("custom_members is not a list")
    out = []
    end = 0
    for m in sorted(members, key=lambda m: m.get("offset", 0) if isinstance(m, dict) else 0):
        if not isinstance(m, dict) or type(m.get("offset")) is not int or \
                type(m.get("btf_type_id")) is not int or not isinstance(m.get("name"), str):
            raise PackageError(f"custom member {m!r} needs a name, an offset and a btf_type_id")
        if not 0 < m["btf_type_id"] < len(btf.types):
            raise PackageError(f"custom member {m['name']!r} has the type id "
                               f"{m['btf_type_id']}, which the object does not have")
        if m["offset"] < end:
            raise PackageError(f"custom member {m['name']!r} overlaps the member before it")
        field = _field(btf, m["name"], m["btf_type_id"], m["offset"])
        end = field.end
        out.append(field)
    return tuple(out)


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
