"""Fuzzing the parsers that read untrusted input: packages (JSON, base64, zlib,
ELF, BTF), registry indexes and manifests, references. Each may refuse with
its own clear error, never with anything else. Bounded in examples and time."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner import package, reference, registry
from runner.build import host_arch
from runner.errors import PackageError, RegistryError, UsageError

BOUNDED = settings(max_examples=300, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow])
DOC = json.loads(package.shipped("raw_tp", host_arch()).read_text())
OBJ = package.decode_object(DOC["bpf_object"], DOC["bpf_object_size"])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)


@BOUNDED
@given(st.binary(max_size=2048))
def test_package_bytes(data):
    try:
        package.loads(data, "fuzz.json")
    except PackageError:
        pass


@BOUNDED
@given(st.data())
def test_package_meta_mutations(data):
    doc = json.loads(json.dumps(DOC))
    skel = doc["meta"]["bpf_skel"]
    target = data.draw(st.sampled_from(["maps", "progs", "data_sections", "obj_name",
                                        "export_types", "meta", "bpf_object_size"]))
    value = data.draw(json_values)
    if target in skel:
        skel[target] = value
    elif target == "export_types":
        doc["meta"]["export_types"] = value
    else:
        doc[target] = value
    try:
        package.parse(doc, "fuzz.json")
    except PackageError:
        pass


@BOUNDED
@given(st.lists(st.tuples(st.integers(0, len(OBJ) - 1), st.integers(0, 255)),
                min_size=1, max_size=16))
def test_object_byte_flips(flips):
    obj = bytearray(OBJ)
    for pos, val in flips:
        obj[pos] = val
    doc = dict(DOC, bpf_object=package.encode_object(bytes(obj)), bpf_object_size=len(obj))
    try:
        package.parse(doc, "fuzz.json")
    except PackageError:
        pass


@BOUNDED
@given(st.integers(64, len(OBJ)))
def test_truncated_objects(length):
    obj = OBJ[:length]
    doc = dict(DOC, bpf_object=package.encode_object(obj), bpf_object_size=len(obj))
    try:
        package.parse(doc, "fuzz.json")
    except PackageError:
        pass


@BOUNDED
@given(json_values, st.sampled_from(["index", "manifest"]))
def test_registry_documents(value, kind):
    try:
        doc = registry.parse_document(json.dumps(value).encode(), kind, "fuzz")
    except RegistryError:
        return
    assert isinstance(doc, dict)


@BOUNDED
@given(st.binary(max_size=512), st.sampled_from(["index", "manifest"]))
def test_registry_document_bytes(data, kind):
    try:
        registry.parse_document(data, kind, "fuzz")
    except RegistryError:
        pass


@BOUNDED
@given(st.text(max_size=80))
def test_references(text):
    try:
        ref = reference.parse(text)
    except UsageError:
        return
    assert ref.repository and (ref.tag or ref.digest)
