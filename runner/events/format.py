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
from decimal import Decimal

_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode
_STRING = json.JSONEncoder(ensure_ascii=False).encode


def ryu(value: float) -> str:
    """An f64 as Rust's ryu (and so serde_json) writes it: the shortest
    digits that read back to the same value, in its layout."""
    if value == 0:
        return "-0.0" if str(value).startswith("-") else "0.0"
    sign = "-" if value < 0 else ""
    _, digits, exponent = Decimal(repr(abs(value))).as_tuple()
    text = "".join(map(str, digits)).rstrip("0")
    assert isinstance(exponent, int)
    k = exponent + (len(digits) - len(text))  # the power of ten of the last digit
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


def text(value: object) -> str:
    """One value in ecli's plain text: a string as it is, a number as JSON
    writes it, anything else (true, null, lists, objects) as compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return _ENCODE(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ryu(value)
    return dumps(value)


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
