"""Values as ecli prints them: serde_json's compact JSON, and its plain text.

ecli builds each event as a ``serde_json::Value`` and prints it with
``to_string``. Its maps are ordered by key (serde_json without
``preserve_order``), so object members come out sorted bytewise, which for
UTF-8 text is code point order: what ``sort_keys`` gives. Floats are written
the way Rust's ``ryu`` writes an f64 (``1e16``, ``0.0001``, ``1.5e-7``),
not the way Python's ``repr`` does (``1e+16``). Pure.
"""

from __future__ import annotations

import json
from typing import Callable

from ..bpfobject import (
    KIND_ARRAY,
    KIND_CONST,
    KIND_ENUM,
    KIND_FLOAT,
    KIND_INT,
    KIND_PTR,
    KIND_RESTRICT,
    KIND_STRUCT,
    KIND_TYPEDEF,
    KIND_UNION,
    KIND_VOLATILE,
    MAX_DEPTH,
    Btf,
)
from ..errors import PackageError

_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode
try:  # the C escaper that json.dumps(ensure_ascii=False) uses
    from _json import encode_basestring as _STRING
except ImportError:  # pragma: no cover
    from json.encoder import py_encode_basestring as _STRING

Render = Callable[[object], str]


def ryu(value: float) -> str:
    """An f64 as Rust's ryu (and so serde_json) writes it: the shortest
    digits that read back to the same value, in its layout."""
    if value == 0:
        return "-0.0" if str(value).startswith("-") else "0.0"
    sign = "-" if value < 0 else ""
    shortest = repr(abs(value))  # the same shortest digits ryu finds
    mantissa, _, exp = shortest.partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    text = digits.rstrip("0")
    k = (int(exp) if exp else 0) - len(fraction) + (len(digits) - len(text))
    length = len(text)
    kk = length + k  # where the decimal point goes
    if 0 <= k and kk <= 16:
        body = text + "0" * k + ".0"
    elif 0 < kk <= 16:
        body = text[:kk] + "." + text[kk:]
    elif -5 < kk <= 0:
        body = "0." + "0" * -kk + text
    elif length == 1:
        body = f"{text}e{kk - 1}"
    else:
        body = f"{text[0]}.{text[1:]}e{kk - 1}"
    return sign + body


def dumps(value: object) -> str:
    """Compact JSON, members sorted, as serde_json's ``to_string``."""
    if not _has_float(value):
        return _ENCODE(value)
    return "".join(_pieces(value))


def _has_float(value: object) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return False


def _pieces(value: object):
    if isinstance(value, float):
        yield ryu(value)
    elif isinstance(value, dict):
        yield "{"
        for i, key in enumerate(sorted(value)):
            if i:
                yield ","
            yield _STRING(key)
            yield ":"
            yield from _pieces(value[key])
        yield "}"
    elif isinstance(value, list):
        yield "["
        for i, item in enumerate(value):
            if i:
                yield ","
            yield from _pieces(item)
        yield "]"
    else:
        yield _ENCODE(value)


def header(names: list[str], start: str) -> tuple[str, list[int]]:
    """ecli's header line after ``start``: each name in ASCII capitals,
    padded to six characters, then a space; and where each column starts
    (in bytes, as ecli counts)."""
    line = start
    width = len(start.encode())
    offsets = []
    for name in names:
        offsets.append(width)
        upper = "".join(c.upper() if c.isascii() else c for c in name)
        piece = upper + " " * max(0, 6 - len(upper.encode())) + " "
        line += piece
        width += len(piece.encode())
    return line, offsets


# Writers compiled per BTF type, for the values ``bpfobject.ecli_decoder``
# makes of it: the same text as ``dumps`` and ``text``, without looking at
# each value's type again for every record.

_FOLLOWED = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT)


def _bool(value: object) -> str:
    return "true" if value else "false"


def _real(value: object) -> str:
    return "null" if value is None else ryu(value)  # type: ignore[arg-type]


def json_writer(btf: Btf, type_id: int, depth: int = 0) -> Render:
    """Compact JSON of a value of ``type_id`` as decoded by ecli_decoder."""
    if depth > MAX_DEPTH:
        raise PackageError("BTF types are nested too deeply to decode")
    t = btf.get(type_id)
    if t.kind in _FOLLOWED:
        return json_writer(btf, t.ref, depth + 1)
    if t.kind == KIND_INT:
        if t.encoding & 4:
            return _bool
        return _STRING if t.bits == 128 else str
    if t.kind == KIND_PTR:
        return str
    if t.kind == KIND_ENUM:
        return _STRING
    if t.kind == KIND_FLOAT:
        return _real
    if t.kind == KIND_ARRAY:
        if btf.get(t.elem).name == "char":
            return _STRING
        inner = json_writer(btf, t.elem, depth + 1)
        if inner is str:
            return lambda value: "[" + ",".join(map(str, value)) + "]"  # type: ignore[call-overload]
        return lambda value: "[" + ",".join(map(inner, value)) + "]"  # type: ignore[call-overload]
    if t.kind in (KIND_STRUCT, KIND_UNION):
        members: dict[str, Render] = {}
        for m in t.members:
            members[m.name] = json_writer(btf, m.type_id, depth + 1)  # the last of a name wins
        kind = "struct" if t.kind == KIND_STRUCT else "union"
        fixed = {key: text for key, text in (("__EUNOMIA_TYPE", _STRING(kind)),
                                              ("__EUNOMIA_TYPE_NAME", _STRING(t.name)))
                 if key not in members}  # a member of that name replaces it, as in ecli
        return object_writer([(name, members.get(name)) for name in {**fixed, **members}],
                             fixed)
    raise PackageError(f"BTF type {type_id} cannot be written as ecli writes events")


def object_writer(members: list[tuple[str, Render | None]],
                  fixed: dict[str, str] | None = None) -> Render:
    """A JSON object of ``members`` (name, writer), sorted by name as
    serde_json sorts them; ``fixed`` names members whose text never changes."""
    fixed = fixed or {}
    order = sorted({name for name, _ in members})
    writers = dict(members)
    parts: list[tuple[str, str | None, Render | None]] = []
    for i, name in enumerate(order):
        head = ("{" if i == 0 else ",") + _STRING(name) + ":"
        if name in fixed:
            parts.append((head + fixed[name], None, None))
        else:
            parts.append((head, name, writers[name]))
    if not parts:
        return lambda value: "{}"

    def write(value) -> str:
        out = []
        for head, name, writer in parts:
            out.append(head if name is None else head + writer(value[name]))  # type: ignore[misc]
        out.append("}")
        return "".join(out)
    return write


def text_writer(btf: Btf, type_id: int) -> Render:
    """One record member as ecli's plain text: strings as they are, the
    rest as JSON."""
    writer = json_writer(btf, type_id)
    return _as_is if writer is _STRING else writer


def _as_is(value: object) -> str:
    return value  # type: ignore[return-value]
