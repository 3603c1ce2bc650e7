"""JSON Schema (draft 2020-12) for small schemas, without jsonschema.

probe/config.json says what each flag takes and which flags go together in
JSON Schema, and the command line checks every run against it. jsonschema,
with the modules it brings (referencing, attrs, rpds, the specifications),
is 4 MB of memory and 50 ms of start-up, for a handful of keywords. This
module evaluates those keywords as jsonschema does, with the same error
attributes (``validator``, ``validator_value``, ``absolute_path``,
``message``); ``validator()`` hands a schema with any other keyword to
jsonschema itself, so a schema is never checked halfway.
"""

from __future__ import annotations

import ipaddress
import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

# The keywords evaluated here; the annotations are allowed and ignored.
KEYWORDS = frozenset({"type", "minimum", "maximum", "const", "enum", "required",
                      "properties", "anyOf", "not", "if", "then", "else", "format"})
ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "default",
                         "examples"})
SCHEMA_VALUED = ("not", "if", "then", "else")


@dataclass
class Error:
    """One failed keyword, as jsonschema's ValidationError describes it."""

    message: str
    validator: str | None  # None for the schema false, as in jsonschema
    validator_value: object
    instance: object
    path: deque = field(default_factory=deque)

    @property
    def absolute_path(self) -> deque:
        return self.path


def supported(schema: object) -> bool:
    """Whether every keyword of ``schema``, at every depth, is evaluated here."""
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, dict):
        return False
    for key, value in schema.items():
        if key in ANNOTATIONS:
            continue
        if key not in KEYWORDS:
            return False
        if key in SCHEMA_VALUED and not supported(value):
            return False
        if key == "properties" and not (isinstance(value, dict)
                                        and all(supported(s) for s in value.values())):
            return False
        if key == "anyOf" and not (isinstance(value, list) and value
                                   and all(supported(s) for s in value)):
            return False
    return True


def _is_type(instance: object, name: str) -> bool:
    if name == "integer":
        if isinstance(instance, bool):
            return False
        return isinstance(instance, int) or (isinstance(instance, float)
                                             and math.isfinite(instance)
                                             and instance.is_integer())
    if name == "number":
        return isinstance(instance, (int, float)) and not isinstance(instance, bool)
    return {"string": str, "boolean": bool, "object": dict, "array": list,
            "null": type(None)}[name] is type(instance) or (
        name == "object" and isinstance(instance, dict))


def _equal(a: object, b: object) -> bool:
    """JSON equality: true is not 1, and 1 is 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b


def _format_ok(name: str, instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    try:
        if name == "ipv4":
            ipaddress.IPv4Address(instance)
        elif name == "ipv6":
            return not getattr(ipaddress.IPv6Address(instance), "scope_id", "")
    except ValueError:
        return False
    return True  # formats not named here are annotations, as jsonschema leaves them


class Validator:
    """``iter_errors`` and ``is_valid`` of jsonschema's Draft202012Validator,
    with its FormatChecker, for the keywords of ``KEYWORDS``."""

    def __init__(self, schema: object):
        if not supported(schema):
            raise ValueError("the schema uses keywords this validator does not evaluate")
        self.schema = schema

    def is_valid(self, instance: object) -> bool:
        return next(self.iter_errors(instance), None) is None

    def iter_errors(self, instance: object) -> Iterator[Error]:
        return self._errors(self.schema, instance)

    def _errors(self, schema: object, instance: object) -> Iterator[Error]:
        if schema is True:
            return
        if schema is False:
            yield Error(f"False schema does not allow {instance!r}", None, None, instance)
            return
        assert isinstance(schema, dict)
        for key, value in schema.items():
            if key in ANNOTATIONS or key in ("then", "else"):
                continue
            yield from self._keyword(schema, key, value, instance)

    def _keyword(self, schema: dict, key: str, value, instance: object) -> Iterator[Error]:
        if key == "type":
            names = value if isinstance(value, list) else [value]
            if not any(_is_type(instance, n) for n in names):
                yield Error(f"{instance!r} is not of type {', '.join(map(repr, names))}",
                            key, value, instance)
        elif key in ("minimum", "maximum"):
            if _is_type(instance, "number"):
                low = key == "minimum"
                if (instance < value) if low else (instance > value):  # type: ignore[operator]
                    word = "less than the minimum" if low else "greater than the maximum"
                    yield Error(f"{instance!r} is {word} of {value!r}", key, value, instance)
        elif key == "const":
            if not _equal(instance, value):
                yield Error(f"{value!r} was expected", key, value, instance)
        elif key == "enum":
            if not any(_equal(instance, v) for v in value):
                yield Error(f"{instance!r} is not one of {value!r}", key, value, instance)
        elif key == "required":
            if isinstance(instance, dict):
                for name in value:
                    if name not in instance:
                        yield Error(f"{name!r} is a required property", key, value, instance)
        elif key == "properties":
            if isinstance(instance, dict):
                for name, sub in value.items():
                    if name in instance:
                        for error in self._errors(sub, instance[name]):
                            error.path.appendleft(name)
                            yield error
        elif key == "anyOf":
            if not any(self._valid(sub, instance) for sub in value):
                yield Error(f"{instance!r} is not valid under any of the given schemas",
                            key, value, instance)
        elif key == "not":
            if self._valid(value, instance):
                yield Error(f"{value!r} should not be valid under {instance!r}",
                            key, value, instance)
        elif key == "if":
            branch = "then" if self._valid(value, instance) else "else"
            if branch in schema:
                yield from self._errors(schema[branch], instance)
        elif key == "format":
            if not _format_ok(value, instance):
                yield Error(f"{instance!r} is not a {value!r}", key, value, instance)

    def _valid(self, schema: object, instance: object) -> bool:
        return next(self._errors(schema, instance), None) is None


def validator(schema: object):
    """A validator of ``schema`` with format checks: this module's when it
    evaluates every keyword, else jsonschema's Draft202012Validator."""
    if supported(schema):
        return Validator(schema)
    import jsonschema
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
