"""Fuzzing the parsers that read untrusted input: packages (JSON, base64, zlib,
ELF, BTF), registry indexes and manifests, references. Each may refuse with
its own clear error, never with anything else. Bounded in examples and time."""

from __future__ import annotations

import collections
import ctypes
import json
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner import package, reference, registry
from runner.bpfobject import BpfObject
from runner.build import host_arch
from runner.errors import PackageError, RegistryError, UsageError
from runner.loader import libbpf, vet

from .conftest import runqlat

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


def _btf_span(obj: bytes) -> tuple[int, int]:
    sec = next(s for s in BpfObject(obj).sections if s[0] == ".BTF")
    return sec[2], sec[2] + sec[3]


def _sources() -> dict[str, tuple[dict, bytes]]:
    """tcprtt's package, and the ecc-built runqlat where ../shared has it
    (a clone from the project's home has no ../shared; CI has it and
    shared_file fails there when it is missing)."""
    sources = {"tcprtt": (DOC, OBJ)}
    try:
        path = runqlat()
    except pytest.skip.Exception:
        return sources
    doc = json.loads(path.read_text())
    sources["runqlat"] = (doc, package.decode_object(doc["bpf_object"], doc["bpf_object_size"]))
    return sources


SOURCES = _sources()
OUTCOMES: collections.Counter = collections.Counter()
VET_BUDGET = 60.0  # seconds for each of the two vetting fuzzers, whatever the examples
_vet_started: dict[str, float] = {}


def _out_of_time(test: str) -> bool:
    start = _vet_started.setdefault(test, time.monotonic())
    return time.monotonic() - start > VET_BUDGET


def _open_in_process(obj: bytes) -> None:
    """What the loader does first, here in the test process itself: it must
    not crash on anything the package checks let through."""
    lib = libbpf.load_library()
    opts = libbpf.OpenOpts(sz=ctypes.sizeof(libbpf.OpenOpts), object_name=b"fuzz")
    handle = lib.bpf_object__open_mem(obj, len(obj), ctypes.byref(opts))
    lib.bpf_object__close(handle)


def _vet_and_parse(name: str, obj: bytes) -> None:
    doc, _ = SOURCES[name]
    # libbpf in the child, on the raw bytes: a clean open, or one line.
    try:
        vet.vet(obj, "fuzz", "fuzz.json")
    except PackageError as exc:
        assert "\n" not in str(exc)
        OUTCOMES["crashed" if "crashed" in str(exc) else "refused by libbpf"] += 1
    else:
        OUTCOMES["opened by libbpf"] += 1
    # The whole package path: refused in one line, or safe to open in-process.
    fuzzed = dict(doc, bpf_object=package.encode_object(obj), bpf_object_size=len(obj))
    try:
        pkg = package.parse(fuzzed, "fuzz.json")
    except PackageError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("fuzz.json: ")
        return
    _open_in_process(pkg.obj)


VETTING = settings(max_examples=250, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow])


@VETTING
@given(st.sampled_from(sorted(SOURCES)), st.data())
def test_btf_byte_flips_never_crash_the_runner(name, data):
    """Flips in the BTF, where libbpf 1.1 crashes on what it does not check."""
    if _out_of_time("btf"):
        return
    obj = bytearray(SOURCES[name][1])
    lo, hi = _btf_span(bytes(obj))
    for pos, val in data.draw(st.lists(st.tuples(st.integers(lo, hi - 1), st.integers(0, 255)),
                                       min_size=0, max_size=8)):
        obj[pos] = val
    # and type ids that lead nowhere, in the field libbpf follows most (a
    # type's size_or_type), which is how libbpf 1.1 is made to crash
    btf = BpfObject(SOURCES[name][1]).btf
    for type_id in data.draw(st.lists(st.integers(1, len(btf.types) - 1), max_size=2)):
        bad = data.draw(st.sampled_from([len(btf.types), len(btf.types) + 7, 0xFFFFFFFF]))
        struct.pack_into("<I", obj, lo + btf.offsets[type_id] + 8, bad)
    _vet_and_parse(name, bytes(obj))


@VETTING
@given(st.sampled_from(sorted(SOURCES)), st.data())
def test_elf_byte_flips_never_crash_the_runner(name, data):
    if _out_of_time("elf"):
        return
    obj = bytearray(SOURCES[name][1])
    for pos, val in data.draw(st.lists(st.tuples(st.integers(0, len(obj) - 1),
                                                 st.integers(0, 255)),
                                       min_size=1, max_size=8)):
        obj[pos] = val
    _vet_and_parse(name, bytes(obj))


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
