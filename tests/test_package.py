"""The eunomia package format: schema, decoding, and what is refused."""

from __future__ import annotations

import base64
import copy
import json
import zlib

import pytest

from runner import package
from runner.build import host_arch
from runner.errors import PackageError
from runner.tcprtt import variants

from .conftest import runqlat

VARIANTS = variants.names()


def shipped_doc(variant: str = "raw_tp") -> dict:
    return json.loads(package.shipped(variant, host_arch()).read_text())


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_shipped_packages_validate(variant, arch):
    doc = json.loads(package.shipped(variant, arch).read_text())
    package.validate(doc)
    pkg = package.parse(doc)
    assert len(pkg.progs) == 1, "ecli attaches every program: one per package"
    assert pkg.hists[0].name == "hists" and pkg.hists[0].slots_count == 27
    assert doc["meta"]["export_types"][0]["members"][2] == {"name": "slots", "type": "__u32[27]"}


def test_real_ecc_package_passes_the_same_schema():
    doc = json.loads(runqlat().read_text())
    package.validate(doc)
    pkg = package.parse(doc, "runqlat.json")
    assert [p["attach"] for p in pkg.progs] == [
        "raw_tp/sched_wakeup", "raw_tp/sched_wakeup_new", "raw_tp/sched_switch"]
    assert {s.name: s.type for s in pkg.settings}["targ_tgid"] == "pid_t"
    assert pkg.hists[0].slots_count == 26


def test_schema_rejects_a_package_without_meta():
    doc = shipped_doc()
    del doc["meta"]
    with pytest.raises(PackageError, match="not a eunomia package.*meta"):
        package.parse(doc)


def test_size_that_lies_is_refused():
    doc = shipped_doc()
    doc["bpf_object_size"] += 1
    with pytest.raises(PackageError, match="inflates to .* bytes, but bpf_object_size says"):
        package.parse(doc)
    doc["bpf_object_size"] -= 2
    with pytest.raises(PackageError, match="inflates to more than"):
        package.parse(doc)


def test_broken_base64_is_refused():
    doc = shipped_doc()
    doc["bpf_object"] = doc["bpf_object"][:-3] + "!!="
    with pytest.raises(PackageError, match="not a eunomia package|not valid base64"):
        package.parse(doc)
    doc["bpf_object"] = shipped_doc()["bpf_object"][:-1]  # length no longer a multiple of 4
    with pytest.raises(PackageError, match="not valid base64"):
        package.parse(doc)


def test_broken_and_truncated_zlib_is_refused():
    doc = shipped_doc()
    raw = base64.b64decode(doc["bpf_object"])
    doc["bpf_object"] = base64.b64encode(raw[:2] + bytes(len(raw) - 2)).decode()
    with pytest.raises(PackageError, match="not valid zlib"):
        package.parse(doc)
    doc["bpf_object"] = base64.b64encode(raw[: len(raw) // 2]).decode()
    with pytest.raises(PackageError, match="truncated"):
        package.parse(doc)


def test_zlib_bomb_is_capped_before_inflating():
    bomb = zlib.compress(bytes(1 << 30), 9)  # 1 GiB of zeros in about 1 MB
    doc = shipped_doc()
    doc["bpf_object"] = base64.b64encode(bomb).decode()
    with pytest.raises(PackageError, match="inflates to more than"):
        package.parse(doc)
    doc["bpf_object_size"] = 1 << 30
    with pytest.raises(PackageError, match="out of range"):
        package.parse(doc)


def test_not_an_elf_is_refused():
    doc = shipped_doc()
    junk = b"this is not an ELF object" * 10
    doc["bpf_object"] = package.encode_object(junk)
    doc["bpf_object_size"] = len(junk)
    with pytest.raises(PackageError, match="not an ELF"):
        package.parse(doc)


def test_unsupported_attach_is_refused_before_loading():
    doc = shipped_doc()
    doc["meta"]["bpf_skel"]["progs"][0]["attach"] = "xdp"
    with pytest.raises(PackageError, match="'xdp', which the runner does not support"):
        package.parse(doc)


def test_sample_types_other_than_log2_are_refused():
    doc = shipped_doc()
    doc["meta"]["bpf_skel"]["maps"][0]["sample"]["type"] = "linear_hist"
    with pytest.raises(PackageError, match="only log2_hist"):
        package.parse(doc)
    del doc["meta"]["bpf_skel"]["maps"][0]["sample"]
    with pytest.raises(PackageError, match="no log2_hist sample map"):
        package.parse(doc)


def test_not_json_is_refused():
    with pytest.raises(PackageError, match="not JSON"):
        package.loads(b"{not json", "x.json")


def test_settings_carry_btf_offsets_and_config_descriptions():
    pkg = package.parse(shipped_doc())
    by_name = {s.name: s for s in pkg.settings}
    assert by_name["targ_sport"].type == "int" and by_name["targ_sport"].flag == "lport"
    assert by_name["targ_saddr"].size == 8
    assert by_name["targ_saddr_v6_hi"].size == by_name["targ_saddr_v6_lo"].size == 8
    offsets = sorted((s.offset, s.size) for s in pkg.settings)
    for (a, asize), (b, _) in zip(offsets, offsets[1:]):
        assert a + asize <= b, "settings must not overlap"
    assert offsets[-1][0] + offsets[-1][1] <= pkg.rodata_size


# The type names that ecli and eunomia's C++ loader parse a flag's value into.
ECLI_TYPES = {"bool", "pid_t", "int", "short", "long", "long long", "unsigned int",
              "unsigned short", "unsigned long long", "float", "double"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_setting_has_a_type_ecli_parses(variant):
    pkg = package.parse(shipped_doc(variant))
    for s in pkg.settings:
        assert s.type in ECLI_TYPES or s.type.startswith("char["), (s.name, s.type)


def test_encode_setting_checks_range_and_type():
    pkg = package.parse(shipped_doc())
    sport = pkg.setting("targ_sport")
    assert package.encode_setting(pkg, sport, 8080) == (8080).to_bytes(4, "little")
    with pytest.raises(PackageError, match="does not fit"):
        package.encode_setting(pkg, sport, 1 << 40)
    with pytest.raises(PackageError, match="expected true or false"):
        package.encode_setting(pkg, pkg.setting("targ_ms"), 1)
    image = package.rodata_image(pkg, {"targ_ms": True, "targ_dport": 443})
    ms = pkg.setting("targ_ms")
    assert image[ms.offset] == 1
    assert len(image) == pkg.rodata_size


def test_schema_is_a_valid_draft_2020_12_schema():
    import jsonschema
    jsonschema.Draft202012Validator.check_schema(package.schema())


def test_fixture_file_is_untouched_by_parsing():
    before = runqlat().read_bytes()
    doc = json.loads(before)
    snapshot = copy.deepcopy(doc)
    package.parse(doc)
    assert doc == snapshot
    assert runqlat().read_bytes() == before
