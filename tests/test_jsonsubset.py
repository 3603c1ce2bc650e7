"""runner.jsonsubset against jsonschema itself, on config.json's schemas and
on instances made to cross every keyword's edges: the same verdicts, and the
same first error (keyword, path, value) where the command line reports one."""

from __future__ import annotations

import itertools
import random

import jsonschema
import pytest

from runner import jsonsubset
from runner.config import probe_config


def reference(schema):
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def option_schema() -> dict:
    options = probe_config()["options"]
    return {"type": "object",
            "properties": {o["dest"]: o.get("schema", {"type": "boolean"}) for o in options}}


def schemas() -> list[dict]:
    return [option_schema(), *(c["schema"] for c in probe_config()["constraints"])]


ADDRESSES = ["127.0.0.1", "10.1.2.3", "0.0.0.0", "256.1.1.1", "1.2.3", "01.2.3.4", "::1",
             "fe80::1", "fe80::1%eth0", "::ffff:127.0.0.1", "2001:db8::", "2001:db8:::1",
             "", " 127.0.0.1", "localhost", "1.2.3.4\n"]
NUMBERS = [0, 1, 2, -1, 65535, 65536, 86400, 86401, 31536000, 31536001, 1.0, 1.5, True, False]


def instances(count: int, seed: int = 5) -> list[dict]:
    rng = random.Random(seed)
    dests = [o["dest"] for o in probe_config()["options"]]
    out: list[dict] = [{}]
    for _ in range(count):
        given: dict = {}
        for dest in rng.sample(dests, rng.randint(1, 5)):
            kind = rng.random()
            if kind < 0.35:
                given[dest] = rng.choice(NUMBERS)
            elif kind < 0.7:
                given[dest] = rng.choice(ADDRESSES)
            elif kind < 0.95:
                given[dest] = True
            else:
                given[dest] = rng.choice([None, [], {}, "x"])
        out.append(given)
    return out


def first(errors):
    error = next(iter(errors), None)
    if error is None:
        return None
    return error.validator, list(error.absolute_path), error.validator_value


def test_config_schemas_are_evaluated_here():
    assert all(jsonsubset.supported(s) for s in schemas())
    assert all(isinstance(jsonsubset.validator(s), jsonsubset.Validator) for s in schemas())


def test_same_verdicts_and_first_errors_as_jsonschema():
    checked = failed = 0
    for schema in schemas():
        ours, theirs = jsonsubset.Validator(schema), reference(schema)
        for given in instances(1500):
            assert ours.is_valid(given) == theirs.is_valid(given), (schema, given)
            assert first(ours.iter_errors(given)) == first(theirs.iter_errors(given)), given
            checked += 1
            failed += not theirs.is_valid(given)
    assert failed > checked // 10 and failed < checked - checked // 10  # both verdicts met


@pytest.mark.parametrize("schema", [
    {"type": ["integer", "null"], "enum": [1, None, True]},
    {"const": [1, {"a": True}]},
    {"if": {"const": 1}, "then": False, "else": {"type": "string"}},
    {"not": {"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}},
    {"required": ["a"], "properties": {"a": {"minimum": 0.5, "maximum": 2}}},
])
def test_keyword_edges_agree(schema):
    values = [None, True, False, 0, 1, 1.0, 2, 2.5, -3, "", "1", "::1", "1.2.3.4", [], [1],
              [1, {"a": True}], [1, {"a": 1}], {}, {"a": 0}, {"a": 1}, {"a": 3}, {"b": 1}]
    ours, theirs = jsonsubset.Validator(schema), reference(schema)
    for value in values:
        assert ours.is_valid(value) == theirs.is_valid(value), value
        assert first(ours.iter_errors(value)) == first(theirs.iter_errors(value)), value


def test_other_keywords_go_to_jsonschema():
    for schema in ({"pattern": "^a"}, {"$ref": "#/$defs/x", "$defs": {"x": {}}},
                   {"properties": {"a": {"minLength": 1}}}, {"anyOf": [{"items": {}}]},
                   {"not": {"multipleOf": 2}}):
        assert not jsonsubset.supported(schema)
        assert isinstance(jsonsubset.validator(schema), jsonschema.Draft202012Validator)
        with pytest.raises(ValueError):
            jsonsubset.Validator(schema)


def test_every_pair_of_flags_is_judged_alike():
    dests = [o["dest"] for o in probe_config()["options"] if "schema" not in o]
    for schema in schemas():
        ours, theirs = jsonsubset.Validator(schema), reference(schema)
        for a, b in itertools.combinations(dests, 2):
            for extra in ({}, {"laddr": "::1"}, {"raddr": "127.0.0.1"}):
                given = {a: True, b: True, **extra}
                assert ours.is_valid(given) == theirs.is_valid(given), given
