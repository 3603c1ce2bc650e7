"""Hostile packages, each class built here from a real package: every one is
refused with one line (exit 1 or 2) before anything is loaded, and none can
take the runner down.

1. BTF that crashes libbpf's parser: libbpf opens objects in a child first.
2. Programs the metadata hides: libbpf would load and attach them all.
3. Map sizes that drive the runner's memory.
4. Malformed metadata that used to end in a traceback.
"""

from __future__ import annotations

import base64
import copy
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from runner import bpfobject, package, run
from runner.bpfobject import BpfObject
from runner.build import host_arch
from runner.errors import PackageError
from runner.loader import vet
from runner.tcprtt import variants

from .conftest import runner_cmd, runner_env, runqlat

EXIT_INSN = bytes.fromhex("b700000000000000" "9500000000000000")  # r0 = 0; exit
SHT_PROGBITS, SHT_SYMTAB = 1, 2
SHF_ALLOC_EXEC = 0x2 | 0x4
GLOBAL_FUNC = (1 << 4) | 2


def shipped_doc(variant: str = "raw_tp") -> dict:
    return json.loads(package.shipped(variant, host_arch()).read_text())


def obj_of(doc: dict) -> bytes:
    return package.decode_object(doc["bpf_object"], doc["bpf_object_size"])


def with_obj(doc: dict, obj: bytes) -> dict:
    doc = copy.deepcopy(doc)
    doc["bpf_object"] = package.encode_object(obj)
    doc["bpf_object_size"] = len(obj)
    return doc


class Elf:
    """Rewrites a BPF ELF object: changed or new sections go to the end of
    the file, with a new section header table after them."""

    def __init__(self, data: bytes):
        self.data = bytes(data)
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shnum, self.shstrndx = struct.unpack_from("<2H", data, 0x3C)
        self.headers = [list(struct.unpack_from("<IIQQQQIIQQ", data, shoff + 64 * i))
                        for i in range(shnum)]
        self.contents: dict[int, bytes] = {}

    def content(self, i: int) -> bytes:
        if i in self.contents:
            return self.contents[i]
        off, size = self.headers[i][4], self.headers[i][5]
        return self.data[off:off + size]

    def set_content(self, i: int, data: bytes) -> None:
        self.contents[i] = bytes(data)
        self.headers[i][5] = len(data)

    def add_string(self, strtab: int, text: str) -> int:
        old = self.content(strtab)
        self.set_content(strtab, old + text.encode() + b"\0")
        return len(old)

    def add_section(self, name: str, sh_type: int, flags: int, data: bytes) -> int:
        name_off = self.add_string(self.shstrndx, name)
        self.headers.append([name_off, sh_type, flags, 0, 0, len(data), 0, 0, 8, 0])
        self.contents[len(self.headers) - 1] = bytes(data)
        return len(self.headers) - 1

    def add_function(self, name: str, shndx: int, value: int, size: int) -> None:
        symtab = next(i for i, h in enumerate(self.headers) if h[1] == SHT_SYMTAB)
        name_off = self.add_string(self.headers[symtab][6], name)
        self.set_content(symtab, self.content(symtab) + struct.pack(
            "<IBBHQQ", name_off, GLOBAL_FUNC, 0, shndx, value, size))

    def build(self) -> bytes:
        out = bytearray(self.data)
        for i, data in sorted(self.contents.items()):
            out += bytes(-len(out) % 8)
            self.headers[i][4] = len(out)
            out += data
        out += bytes(-len(out) % 8)
        shoff = len(out)
        for h in self.headers:
            out += struct.pack("<IIQQQQIIQQ", *h)
        struct.pack_into("<Q", out, 0x28, shoff)
        struct.pack_into("<H", out, 0x3C, len(self.headers))
        return bytes(out)


def with_hidden_programs(doc: dict, section: str, count: int = 1) -> dict:
    """The package, with ``count`` programs in a new ``section`` that its
    metadata does not list."""
    elf = Elf(obj_of(doc))
    shndx = elf.add_section(section, SHT_PROGBITS, SHF_ALLOC_EXEC, EXIT_INSN * count)
    for i in range(count):
        elf.add_function(f"hidden{i}", shndx, i * len(EXIT_INSN), len(EXIT_INSN))
    return with_obj(doc, elf.build())


def patch_btf(doc: dict, edits) -> dict:
    """Apply ``edits(btf, put)`` to the object's BTF; ``put(type_id, field
    offset, u32)`` overwrites one 32-bit field of a type."""
    obj = bytearray(obj_of(doc))
    bpf = BpfObject(bytes(obj))
    btf_at = next(s[2] for s in bpf.sections if s[0] == ".BTF")

    def put(type_id: int, field: int, value: int) -> None:
        struct.pack_into("<I", obj, btf_at + bpf.btf.offsets[type_id] + field, value)
    edits(bpf.btf, put)
    return with_obj(doc, bytes(obj))


def type_named(btf, kind: int, name: str) -> int:
    found = btf.find(kind, name)
    assert found is not None, f"no BTF {name!r} of kind {kind}"
    return found[0]


def map_member(btf, map_name: str, member: str) -> int:
    """The type id behind a map definition's ``__uint(member, n)``: the array of n."""
    var = btf.get(type_named(btf, bpfobject.KIND_VAR, map_name))
    spec = btf.get(btf.resolve(var.ref))
    field = next(m for m in spec.members if m.name == member)
    return btf.get(btf.resolve(field.type_id)).ref


def refused(doc: dict, match: str) -> str:
    with pytest.raises(PackageError, match=match) as info:
        package.parse(doc, "hostile.json")
    message = str(info.value)
    assert "\n" not in message and message.startswith("hostile.json: ")
    return message


def run_cli(tmp_path: Path, doc_or_text, *args: str,
            prelude: str = "") -> subprocess.CompletedProcess:
    """The runner on a hostile package file, in its own process."""
    path = tmp_path / "hostile.json"
    text = doc_or_text if isinstance(doc_or_text, (str, bytes)) else json.dumps(doc_or_text)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    argv = [a.replace("PKG", str(path)) for a in args]
    if prelude:
        cmd = [sys.executable, "-c", prelude + "\nimport sys\nfrom runner import run\n"
               "sys.exit(run.main(sys.argv[1:]))", *argv]
    else:
        cmd = runner_cmd(*argv)
    return subprocess.run(cmd, capture_output=True, text=True, env=runner_env(), timeout=60)


def assert_one_line(proc: subprocess.CompletedProcess, match: str, codes=(1,)) -> None:
    assert proc.returncode in codes, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tcprtt: "), proc.stderr
    assert match in lines[0], lines[0]
    assert proc.stdout == ""


# 1. libbpf crashes on mutated BTF -------------------------------------------------

def _map_var_type_out_of_range(doc: dict, name: str = "hists") -> dict:
    return patch_btf(doc, lambda btf, put: put(type_named(btf, bpfobject.KIND_VAR, name),
                                               8, 0xFFFFFFFF))


@pytest.mark.parametrize("source", ["runqlat", "shipped"])
def test_btf_that_crashes_libbpf_crashes_only_the_vetting_child(source):
    doc = json.loads(runqlat().read_text()) if source == "runqlat" else shipped_doc()
    hostile = _map_var_type_out_of_range(doc)
    obj = obj_of(hostile)
    # libbpf 1.1 really does crash on it, in the child ...
    with pytest.raises(PackageError, match=r"libbpf crashed opening the BPF object \(SIGSEGV\)"):
        vet.vet(obj, "hostile", "hostile.json")
    # ... and the package checks refuse it before any libbpf call.
    refused(hostile, "refers to type id 4294967295")


def test_a_crash_in_the_child_is_one_line(monkeypatch):
    import ctypes
    monkeypatch.setattr(vet, "_open_and_describe", lambda obj, name: ctypes.string_at(0))
    obj = obj_of(shipped_doc())
    with pytest.raises(PackageError, match=r"crashed .*\(SIGSEGV\); refusing the package"):
        vet.vet(obj, "x", "hostile.json")


def test_a_hang_in_the_child_is_cut_short(monkeypatch):
    import time
    monkeypatch.setattr(vet, "_open_and_describe", lambda obj, name: time.sleep(30))
    start = time.monotonic()
    with pytest.raises(PackageError, match="did not finish opening the BPF object within 0.5 s"):
        vet.vet(obj_of(shipped_doc()), "x", "hostile.json", timeout=0.5)
    assert time.monotonic() - start < 5


def test_a_refusal_by_libbpf_names_its_reason():
    junk = b"\x7fELF" + bytes(200)
    with pytest.raises(PackageError, match="libbpf cannot open the BPF object: .*format"):
        vet.vet(junk, "x", "hostile.json")


def test_vetting_sees_what_libbpf_sees():
    seen = vet.vet(obj_of(json.loads(runqlat().read_text())), "runqlat", "runqlat.json")
    assert [(p.name, p.section) for p in seen.programs] == [
        ("handle_sched_wakeup", "raw_tp/sched_wakeup"),
        ("handle_sched_wakeup_new", "raw_tp/sched_wakeup_new"),
        ("handle_sched_switch", "raw_tp/sched_switch")]
    hists = next(m for m in seen.maps if m.name == "hists")
    assert (hists.key_size, hists.value_size, hists.max_entries) == (4, 120, 10240)


def test_every_package_loaded_by_path_or_image_is_vetted(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(vet, "vet", lambda obj, name, source: calls.append(source))
    monkeypatch.setattr(package, "_VETTED", {})
    copy_path = tmp_path / "copy.json"
    copy_path.write_text(json.dumps(shipped_doc()))
    package.load(copy_path)
    run.load_as(copy_path, "registry.example/tcprtt:1#raw_tp")  # what --image runs
    package.load(package.shipped("raw_tp", host_arch()))  # vetted when built
    assert calls == [str(copy_path)]  # the same bytes are opened once per process
    monkeypatch.setattr(package, "_VETTED", {})
    run.load_as(copy_path, "registry.example/tcprtt:1#raw_tp")
    assert calls[-1] == "registry.example/tcprtt:1#raw_tp"


CRASH_PRELUDE = ("import ctypes\nfrom runner.loader import vet\n"
                 "vet._open_and_describe = lambda obj, name: ctypes.string_at(0)")


def test_cli_turns_a_libbpf_crash_into_one_line(tmp_path, root):
    """Whatever crashes libbpf (here: a forced SIGSEGV where libbpf runs),
    --package and run end with one line and exit 1, loading nothing."""
    doc = shipped_doc()
    for args in (("--package", "PKG", "-d", "1"), ("run", "PKG", "-d", "1")):
        proc = run_cli(tmp_path, doc, *args, prelude=CRASH_PRELUDE)
        assert_one_line(proc, "libbpf crashed opening the BPF object (SIGSEGV)")


def test_cli_refuses_mutated_btf(tmp_path, root):
    proc = run_cli(tmp_path, _map_var_type_out_of_range(shipped_doc()), "--package", "PKG")
    assert_one_line(proc, "refers to type id 4294967295")


# 2. programs hidden from the metadata ---------------------------------------------

def test_hidden_uprobe_is_refused():
    hostile = with_hidden_programs(shipped_doc(), "uprobe/bash:readline")
    # libbpf would load it: it sees the program the metadata does not list.
    seen = vet.vet(obj_of(hostile), "tcprtt_bpf", "hostile.json")
    assert ("hidden0", "uprobe/bash:readline") in [(p.name, p.section) for p in seen.programs]
    refused(hostile, "program 'hidden0' attaches to 'uprobe/bash:readline', which the "
                     "runner does not support")


def test_hidden_program_of_a_supported_type_is_refused():
    hostile = with_hidden_programs(shipped_doc(), "tp/sched/sched_switch")
    refused(hostile, r"holds program 'hidden0' \(tp/sched/sched_switch\), which the "
                     "metadata does not list")


def test_a_thousand_hidden_programs_are_refused():
    hostile = with_hidden_programs(shipped_doc(), "tp/sched/sched_switch", count=1000)
    refused(hostile, "holds 1001 programs, more than the 64")


def test_programs_listed_but_absent_or_elsewhere_are_refused():
    doc = shipped_doc()
    doc["meta"]["bpf_skel"]["progs"].append({"name": "ghost", "attach": "kprobe/x",
                                             "link": True})
    refused(doc, "lists program 'ghost', which the object does not hold")
    doc = shipped_doc()
    real = doc["meta"]["bpf_skel"]["progs"][0]
    real["attach"] = "kprobe/tcp_sendmsg"
    refused(doc, f"program '{real['name']}' attaches to .*, but the metadata says "
                 "'kprobe/tcp_sendmsg'")


def test_libbpfs_view_is_checked_too():
    """Should libbpf find a program our ELF reading missed, it is refused."""
    pkg = package.parse(shipped_doc(), "hostile.json", vet=False)
    seen = vet.vet(pkg.obj, pkg.name, pkg.source)
    extra = vet.Program("sneaky", "uprobe/bash:readline", 2)
    with pytest.raises(PackageError, match="'sneaky' attaches to 'uprobe/bash:readline'"):
        package._check_vetted(pkg, vet.Vetted(seen.programs + (extra,), seen.maps))
    big = vet.Map("big", 2, 4, 4 << 20, 1)
    with pytest.raises(PackageError, match="map 'big' has a value size of 4194304"):
        package._check_vetted(pkg, vet.Vetted(seen.programs, seen.maps + (big,)))


def test_cli_refuses_hidden_programs(tmp_path, root):
    hostile = with_hidden_programs(shipped_doc(), "uprobe/bash:readline")
    for args in (("--package", "PKG", "-d", "1"), ("run", "PKG", "-d", "1")):
        assert_one_line(run_cli(tmp_path, hostile, *args), "'uprobe/bash:readline'")


# 3. memory follows the package ------------------------------------------------------

def _hist_value_size(doc: dict, size: int) -> dict:
    def edit(btf, put):
        var = btf.get(type_named(btf, bpfobject.KIND_VAR, "hists"))
        spec = btf.get(btf.resolve(var.ref))
        value = next(m for m in spec.members if m.name == "value")
        put(btf.resolve(btf.get(btf.resolve(value.type_id)).ref), 8, size)
    return patch_btf(doc, edit)


@pytest.mark.parametrize("size", [256 << 10, 4 << 20])
def test_huge_histogram_values_are_refused(size):
    refused(_hist_value_size(shipped_doc(), size),
            f"map 'hists' has a value size of {size}, outside the 1..4096")


def test_huge_max_entries_are_refused():
    hostile = patch_btf(shipped_doc(), lambda btf, put: put(
        map_member(btf, "hists", "max_entries"), 12 + 8, 1 << 30))
    refused(hostile, "map 'hists' has a max_entries of 1073741824, outside the 1..1048576")


def test_huge_other_maps_are_refused():
    hostile = patch_btf(shipped_doc(), lambda btf, put: put(
        map_member(btf, "hist_cpu", "max_entries"), 12 + 8, 1 << 24))
    refused(hostile, "map 'hist_cpu' asks for 16777216 entries .* more than the 268435456")


def test_slots_past_the_value_are_refused():
    def edit(btf, put):
        hist = type_named(btf, bpfobject.KIND_STRUCT, "hist")
        slots = next(m for m in btf.get(hist).members if m.name == "slots")
        put(slots.type_id, 12 + 8, 60)
    refused(patch_btf(shipped_doc(), edit), "'slots' of map 'hists' runs past the end")


def test_cli_refuses_huge_values(tmp_path, root):
    proc = run_cli(tmp_path, _hist_value_size(shipped_doc(), 256 << 10), "run", "PKG", "-d", "1")
    assert_one_line(proc, "value size of 262144, outside the 1..4096")


def test_a_large_array_map_is_read_every_interval(tmp_path, root):
    """200,000 array entries (about 24 MB a read): every interval is read and
    printed, the last one after the end, and the run exits 0."""
    doc = json.loads(runqlat().read_text())

    def edit(btf, put):
        put(map_member(btf, "hists", "type"), 12 + 8, 2)  # BPF_MAP_TYPE_ARRAY
        put(map_member(btf, "hists", "max_entries"), 12 + 8, 200_000)
    proc = run_cli(tmp_path, patch_btf(doc, edit), "run", "PKG", "-i", "0.5", "-d", "2")
    assert proc.returncode == 0, proc.stderr
    reads = proc.stdout.count("key =  199999\n")
    assert reads >= 2 and proc.stdout.count("key =  0\n") == reads, reads


# 4. what used to end in a traceback ------------------------------------------------

def test_deeply_nested_json_is_refused(tmp_path):
    text = '{"meta": ' + "[" * 100000 + "]" * 100000 + "}"
    with pytest.raises(PackageError, match="nested deeper than 32 levels"):
        package.loads(text, "hostile.json")
    doc = shipped_doc()
    deep: list = []
    doc["meta"]["bpf_skel"]["doc"] = {"x": deep}
    for _ in range(5000):
        deep.append([])
        deep = deep[0]
    refused(doc, "nested deeper than 32 levels")
    assert_one_line(run_cli(tmp_path, text, "run", "PKG"), "nested deeper")


def test_object_size_that_is_not_an_integer_is_refused(tmp_path):
    doc = shipped_doc()
    doc["bpf_object_size"] = float(doc["bpf_object_size"])
    refused(doc, r"bpf_object_size \d+\.0 is not an integer")
    assert_one_line(run_cli(tmp_path, doc, "run", "PKG"), "is not an integer")


def _rodata_vars(doc: dict) -> dict:
    section = next(s for s in doc["meta"]["bpf_skel"]["data_sections"]
                   if s["name"] == ".rodata")
    return {v["name"]: v for v in section["variables"]}


def test_settings_that_would_break_the_command_line_are_refused(tmp_path):
    doc = shipped_doc()
    _rodata_vars(doc)["targ_sport"]["cmdarg"]["long"] = "help"
    refused(doc, "setting 'targ_sport' would take the flag --help, which the run command "
                 "uses itself")
    assert_one_line(run_cli(tmp_path, doc, "run", "PKG", "--help"), "--help")

    doc = shipped_doc()
    variables = _rodata_vars(doc)
    variables["targ_dport"]["cmdarg"]["long"] = variables["targ_sport"]["cmdarg"]["long"]
    refused(doc, "two settings would take the flag --lport")

    doc = shipped_doc()
    _rodata_vars(doc)["targ_sport"]["cmdarg"]["long"] = "-x y"
    refused(doc, "setting 'targ_sport' has the flag name '-x y'")


def test_bool_and_plain_flags_that_collide_are_refused():
    doc = shipped_doc()
    variables = _rodata_vars(doc)
    flag = variables["targ_ms"]["cmdarg"]["long"]
    variables["targ_sport"]["cmdarg"]["long"] = f"enable-{flag}"
    variables["targ_ms"]["cmdarg"]["default"] = False
    refused(doc, f"two settings would take the flag --enable-{flag}")


def test_setting_help_is_safe_for_argparse():
    import argparse
    doc = shipped_doc()
    _rodata_vars(doc)["targ_sport"]["description"] = "100%(x)s of %d ports"
    pkg = package.parse(doc, "hostile.json")
    parser = argparse.ArgumentParser()
    for s in pkg.settings:
        parser.add_argument(s.option, help=s.help_text)
    assert "100%(x)s of %d ports" in parser.format_help().replace("\n", " ")


def test_settings_with_empty_or_duplicate_names_are_refused():
    doc = shipped_doc()
    obj = obj_of(doc)
    bpf = BpfObject(obj)
    btf_at = next(s[2] for s in bpf.sections if s[0] == ".BTF")
    sport = type_named(bpf.btf, bpfobject.KIND_VAR, "targ_sport")
    sport_name = struct.unpack_from("<I", obj, btf_at + bpf.btf.offsets[sport])[0]

    def rename_dport(name_off: int):
        return lambda btf, put: put(type_named(btf, bpfobject.KIND_VAR, "targ_dport"),
                                    0, name_off)
    refused(patch_btf(doc, rename_dport(0)), "a .rodata variable has an empty name")
    refused(patch_btf(doc, rename_dport(sport_name)), "two settings are named 'targ_sport'")


@pytest.mark.parametrize("interval", [10 ** 30, 1e30, -1, 1.5])
def test_sample_intervals_are_bounded(tmp_path, interval):
    doc = shipped_doc()
    doc["meta"]["bpf_skel"]["maps"][0]["sample"]["interval"] = interval
    refused(doc, "not a eunomia package|sample interval .* is not an integer in 0..31536000000")
    if interval == 10 ** 30:
        assert_one_line(run_cli(tmp_path, doc, "run", "PKG", "-d", "1"), "sample interval")


def test_bytes_after_the_zlib_stream_are_refused(tmp_path):
    doc = shipped_doc()
    stream = zlib.compress(obj_of(doc), 9)
    for tail in (b"trailing junk", zlib.compress(b"a second object")):
        doc["bpf_object"] = base64.b64encode(stream + tail).decode()
        refused(doc, f"bpf_object has {len(tail)} bytes after its zlib stream")
    assert_one_line(run_cli(tmp_path, doc, "run", "PKG"), "after its zlib stream")


def test_shipped_and_real_packages_still_pass():
    for variant in variants.names():
        for arch in ("x86_64", "arm64"):
            path = package.shipped(variant, arch)
            package.parse(json.loads(path.read_text()), str(path))
    package.parse(json.loads(runqlat().read_text()), "runqlat.json")
