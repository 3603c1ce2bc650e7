"""Loader diagnostics: the whole verifier log and every libbpf message of a
failed load or attach are kept, written to a file that the one-line error
names, and the failure is classed as "not supported by this kernel"
(KernelUnsupported) or "refused by the verifier" (VerifierRefused)."""

from __future__ import annotations

import ctypes
import json
import os
import re
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from runner import features, package
from runner.build import host_arch
from runner.errors import KernelError, KernelUnsupported, VerifierRefused
from runner.loader import libbpf, probe
from runner.loader.probe import LoadedProbe

from .conftest import REPO, loaded_programs, programs_left, runner_cmd, runner_env

SOURCE = Path(__file__).with_name("diagnostics.bpf.c")


@pytest.fixture
def logs(tmp_path, monkeypatch):
    """Logs go to a directory of this test's own ($XDG_RUNTIME_DIR/tcprtt)."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    return runtime / "tcprtt"


def diag_doc(tmp_path: Path, define: str) -> dict:
    """tests/diagnostics.bpf.c built with ``-D<define>``, as a package document."""
    obj = tmp_path / f"diag-{define}.o"
    subprocess.run(["clang", "-g", "-O2", "-target", "bpf", f"-D{define}", "-c", str(SOURCE),
                    "-o", str(obj)], check=True)
    data = obj.read_bytes()
    return {"bpf_object": package.encode_object(data), "bpf_object_size": len(data),
            "meta": {"bpf_skel": {
                "obj_name": "diag_bpf",
                "maps": [{"name": "hists", "ident": "hists",
                          "sample": {"interval": 1000, "type": "log2_hist"}}],
                "progs": [{"name": "diag_prog", "attach": "raw_tp/tcp_probe", "link": True}],
                "data_sections": []}}}


def diag_package(tmp_path: Path, define: str) -> package.Package:
    return package.parse(diag_doc(tmp_path, define), f"diag-{define}.json")


def shipped(variant: str) -> package.Package:
    return package.load(package.shipped(variant, host_arch()))


def logged_path(exc: KernelError) -> Path:
    """The file the one-line error names; it is the error's ``log_path``."""
    message = str(exc)
    assert "\n" not in message
    found = re.search(r"\((?:verifier|libbpf) log: (\S+)\)$", message)
    assert found, message
    assert found.group(1) == exc.log_path
    return Path(found.group(1))


def test_a_verifier_refusal_keeps_the_whole_log_in_the_named_file(root, tmp_path, logs):
    before = loaded_programs()
    with pytest.raises(VerifierRefused) as info:
        LoadedProbe(diag_package(tmp_path, "REFUSED")).close()
    exc = info.value
    assert not programs_left(before)
    assert isinstance(exc, KernelError) and exc.errno == 13  # EACCES
    assert exc.kind == "refused by the verifier"
    assert str(exc).startswith("diag-REFUSED.json: the kernel refused to load it (verifier: ")
    path = logged_path(exc)
    assert path.parent == logs
    assert path.name.startswith(f"verifier-{os.getpid()}-")
    mode = path.stat().st_mode
    assert stat.S_IMODE(mode) == 0o600 and stat.S_IMODE(logs.stat().st_mode) == 0o700
    text = path.read_text()
    assert text == exc.log
    # The verifier's whole log, not two lines of it: every instruction it
    # walked, down to its last word, which the one line quotes.
    verifier = text.split("-- verifier log --\n", 1)[1].splitlines()
    assert len(verifier) > 2
    cause = probe.verifier_cause("\n".join(verifier))
    assert cause and f"(verifier: {cause})" in str(exc)
    assert re.search(r"value_size=16|outside of the allowed memory range|invalid access", cause)
    assert any("r0 = " in line or "r1 = " in line for line in verifier), verifier
    assert any(line.startswith("processed ") for line in verifier)
    # Every libbpf message of the load, in full: not just the first one.
    messages = text.split("-- libbpf messages --\n", 1)[1].split("-- verifier log --")[0]
    notes = [line for line in messages.splitlines() if line.startswith("libbpf: ")]
    assert len(notes) >= 2, notes
    assert "prog 'diag_prog': BPF program load failed: Permission denied" in notes[0]
    assert any("failed to load object 'diag_bpf'" in note for note in notes)


def test_a_helper_the_kernel_lacks_is_not_supported(root, tmp_path, logs):
    with pytest.raises(KernelUnsupported) as info:
        LoadedProbe(diag_package(tmp_path, "UNKNOWN_HELPER")).close()
    exc = info.value
    assert "not supported by this kernel" in str(exc)
    assert "unknown#100000" in str(exc)
    assert "unknown#100000" in logged_path(exc).read_text()


def test_a_program_the_verifier_accepts_loads(root, tmp_path, logs):
    # The same source without the fault: what is refused above is the fault.
    with LoadedProbe(diag_package(tmp_path, "NONE")) as loaded:
        assert loaded.program_ids()
    assert not logs.exists() or not list(logs.iterdir())


def test_a_program_type_this_kernel_lacks_is_not_supported(root, logs):
    lib = libbpf.load_library()
    if lib.libbpf_probe_bpf_prog_type(libbpf.BPF_PROG_TYPE_TRACING, None) != 0:
        # This kernel has tracing programs: the fentry variant loads.
        with LoadedProbe(shipped("fentry")):
            return
    with pytest.raises(KernelUnsupported) as info:
        LoadedProbe(shipped("fentry")).close()
    exc = info.value
    assert exc.kind == "not supported by this kernel"
    assert "not supported by this kernel (no tracing programs)" in str(exc)
    text = logged_path(exc).read_text()
    notes = [line for line in text.splitlines() if line.startswith("libbpf: ")]
    assert len(notes) > 1, text  # every message of the load, not the first alone
    assert "class: KernelUnsupported" in text


def test_an_attach_point_this_kernel_lacks_is_not_supported(root, logs):
    with LoadedProbe(shipped("kprobe")) as loaded:
        if features.check("kprobe") is None:
            loaded.attach()  # this kernel has kprobes
            return
        with pytest.raises(KernelUnsupported) as info:
            loaded.attach()
    exc = info.value
    assert str(exc).startswith("cannot attach rtt_kprobe to kprobe/tcp_rcv_established: ")
    assert ": not supported by this kernel" in str(exc)
    assert "kprobe" in logged_path(exc).read_text()


def test_classes_from_errno_and_log():
    unsupported, refused = KernelUnsupported, VerifierRefused
    assert probe.classify("attach", 524, "", [])[0] is unsupported
    assert probe.classify("attach", 2, "", [])[0] is unsupported
    assert probe.classify("attach", 1, "", [])[0] is KernelError  # a permission, not the kernel
    assert probe.classify("load", 95, "", [])[0] is unsupported
    assert probe.classify("load", 22, "", [])[0] is unsupported  # no log: unknown type or attr
    assert probe.classify("load", 1, "", [], ["tracing programs"]) == (
        unsupported, "no tracing programs")
    assert probe.classify("load", 1, "", [])[0] is KernelError
    assert probe.classify("open", 22, "", ["libbpf: elf: bad"])[0] is KernelError
    log = "0: R1=ctx() R10=fp0\n0: (85) call bpf_xyz#212\nunknown func bpf_xyz#212\n" \
          "processed 1 insns (limit 1000000)\n"
    assert probe.classify("load", 22, log, []) == (unsupported, "unknown func bpf_xyz#212")
    log = "1: (61) r0 = *(u32 *)(r0 +32)\ninvalid access to map value, value_size=16 off=32" \
          " size=4\nprocessed 9 insns\n"
    assert probe.classify("load", 13, log, []) == (refused, "")
    assert probe.verifier_cause(log) == "invalid access to map value, value_size=16 off=32 size=4"
    note = "libbpf: prog 'p': failed to find kernel BTF type ID of 'gone': -3"
    assert probe.classify("load", 3, "", [note])[0] is unsupported
    note = "libbpf: map 'hists': failed to create: Invalid argument(-22)"
    assert probe.classify("load", 22, "", [note])[0] is KernelError  # sizes, not the kernel


def test_a_map_the_kernel_will_not_create_is_not_called_unsupported(root, logs):
    # A map of no entries: EINVAL with nothing verified, yet this kernel has
    # every type the object uses. libbpf's own word is in the line.
    with pytest.raises(KernelError) as info:
        LoadedProbe(shipped("raw_tp"), max_entries=0).close()
    exc = info.value
    assert type(exc) is KernelError and exc.errno == 22
    assert "(libbpf: map 'hists': failed to create: Invalid argument(-22))" in str(exc)
    assert "Retrying without BTF" in logged_path(exc).read_text()


def test_logs_go_to_the_temporary_directory_when_no_other_will_do(tmp_path, monkeypatch):
    monkeypatch.setattr(probe, "_log_dirs", lambda: [tmp_path / "missing" / "deeper"])
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = Path(probe.write_log("a\nb\n", "verifier"))
    assert path.parent == tmp_path and path.name.startswith(f"tcprtt-verifier-{os.getpid()}-")
    assert path.read_text() == "a\nb\n" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_no_writable_directory_at_all_gives_no_file_and_no_traceback(tmp_path, monkeypatch):
    def none_usable():
        raise FileNotFoundError("No usable temporary directory found")
    monkeypatch.setattr(probe, "_log_dirs", lambda: [tmp_path / "missing" / "deeper"])
    (tmp_path / "missing").write_text("")  # a file where the directory would go
    monkeypatch.setattr(tempfile, "gettempdir", none_usable)
    assert probe.write_log("a\n", "verifier") is None


def test_a_directory_others_may_write_in_is_not_used(tmp_path, monkeypatch):
    shared = tmp_path / "tcprtt"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setattr(probe, "_log_dirs", lambda: [shared])
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert Path(probe.write_log("x\n", "libbpf")).parent == tmp_path


def test_old_logs_are_pruned(tmp_path, monkeypatch):
    monkeypatch.setattr(probe, "_log_dirs", lambda: [tmp_path / "tcprtt"])
    paths = [probe.write_log(f"{i}\n", "libbpf") for i in range(probe.LOG_FILES_KEPT + 5)]
    left = sorted((tmp_path / "tcprtt").iterdir())
    assert len(left) == probe.LOG_FILES_KEPT
    assert Path(paths[-1]) in left


# -- libbpf's messages, formatted through the va_list a C caller hands over

SHIM = r"""
#include <stdarg.h>
typedef int (*print_fn)(int level, const char *fmt, va_list ap);
/* As libbpf_print() does: a variadic function hands its va_list on. */
static int say(print_fn fn, int level, const char *fmt, ...)
{
    va_list ap;
    int ret;
    va_start(ap, fmt);
    ret = fn(level, fmt, ap);
    va_end(ap);
    return ret;
}
int emit(print_fn fn, const char *text)
{
    say(fn, 0, "libbpf: %s|%d|%lld|%.3f|%c|%u|%s|%x\n", "alpha", -42, 1LL << 40, 2.5, 'z',
        7u, text, 255);
    say(fn, 2, "debug, not kept: %s\n", text);
    return say(fn, 1, "%s %d %s %.1f %.1f %.1f %.1f %.1f %.1f %.1f %.1f %.1f %d\n", "many", 1,
               "args", 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10);
}
"""


def _shim(tmp_path):
    """SHIM built here, and libbpf's print callback to hand it."""
    src = tmp_path / "shim.c"
    src.write_text(SHIM)
    lib = tmp_path / "shim.so"
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    shim = ctypes.CDLL(str(lib))
    shim.emit.argtypes = [libbpf.PRINT_FN, ctypes.c_char_p]
    callback = libbpf.PRINT_FN(libbpf._collect)
    return shim, callback


def test_messages_are_formatted_in_full_from_a_c_va_list(tmp_path):
    shim, callback = _shim(tmp_path)
    libbpf.recent_messages()
    long_text = "x" * 5000 + "end"  # beyond the first pass's buffer
    for text in ("short", long_text):
        shim.emit(callback, text.encode())
        assert libbpf.recent_messages() == [
            f"libbpf: alpha|-42|{1 << 40}|2.500|z|7|{text}|ff",
            "many 1 args 1.0 2.0 3.0 4.0 5.0 6.0 7.0 8.0 9.0 10"]


def test_each_thread_keeps_its_own_messages(tmp_path):
    import threading
    shim, callback = _shim(tmp_path)
    libbpf.recent_messages()
    seen: list[list[str]] = []

    def other() -> None:
        shim.emit(callback, b"other thread")
        seen.append(libbpf.recent_messages())

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(timeout=10)
    assert len(seen) == 1 and len(seen[0]) == 2 and "other thread" in seen[0][0]
    assert libbpf.recent_messages() == []  # none of them landed here


@pytest.mark.parametrize("arch", sorted(libbpf.VA_LIST_SIZES))
def test_the_va_list_layout_the_formatter_copies(tmp_path, arch):
    """What the C compiler says of each architecture's va_list: its size, and
    that a function taking one receives a pointer (x86_64: the array decays;
    aarch64: AAPCS64 passes a 32-byte composite by reference)."""
    src = tmp_path / "va.c"
    size = libbpf.VA_LIST_SIZES[arch]
    src.write_text("#include <stdarg.h>\n"
                   f"_Static_assert(sizeof(va_list) == {size}, \"va_list size\");\n"
                   "int cb(int level, const char *fmt, va_list ap) { return level; }\n")
    ir = subprocess.run(["clang", "-ffreestanding", "-target", f"{arch}-linux-gnu", "-S",
                         "-emit-llvm", "-o", "-", str(src)],
                        capture_output=True, text=True, check=True).stdout
    signature = next(line for line in ir.splitlines() if "@cb(" in line)
    third = signature.split("@cb(", 1)[1].split(",")[2]
    # A pointer in a register: not a struct copied onto the stack (byval),
    # which ctypes could not take as one c_void_p.
    assert "*" in third or " ptr " in f" {third.strip()} ", signature
    assert "byval" not in third, signature


# -- through the command line


@pytest.mark.parametrize(("define", "kind", "log"), [
    ("REFUSED", "refused by the verifier", "verifier"),
    ("UNKNOWN_HELPER", "not supported by this kernel", "verifier")])
def test_the_cli_names_the_class_and_the_log(root, tmp_path, logs, define, kind, log):
    env = runner_env()
    env["XDG_RUNTIME_DIR"] = str(logs.parent)
    doc = diag_doc(tmp_path, define)
    del doc["meta"]["bpf_skel"]["maps"][0]["sample"]  # `run` loads it, reporting nothing
    path = tmp_path / f"diag-{define}.json"
    path.write_text(json.dumps(doc))
    before = loaded_programs()
    proc = subprocess.run(runner_cmd("run", str(path), "-d", "1"), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert not programs_left(before)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert f": {kind}" in lines[0]
    found = re.search(rf"\({log} log: (\S+)\)$", lines[0])
    assert found and Path(found.group(1)).parent == logs, lines[0]
    text = Path(found.group(1)).read_text()
    assert "-- verifier log --" in text and "prog 'diag_prog'" in text


# -- doctor


def test_doctor_shows_the_class_each_variant_meets(root, logs):
    from runner import doctor
    facts = doctor.report()
    says = facts["kernel_says"]
    assert list(says) == list(facts["variants"])  # every variant was loaded here (root)
    lib = libbpf.load_library()
    tracing = lib.libbpf_probe_bpf_prog_type(libbpf.BPF_PROG_TYPE_TRACING, None) != 0
    assert says["fentry"]["class"] == ("supported" if tracing else "KernelUnsupported")
    assert says["raw_tp"] == {"class": "supported", "log": None,
                              "checked": "loaded and attached"}
    kprobes = features.check("kprobe") is None
    assert says["kprobe"]["class"] == ("supported" if kprobes else "KernelUnsupported")
    text = doctor.text(facts)
    for variant, said in says.items():
        status = facts["variants"][variant]
        if said["class"] == "KernelUnsupported":
            assert status.startswith("not supported by this kernel: "), status
            assert Path(said["log"]).parent == logs
            assert f"(whole log: {said['log']})" in text
        elif said["class"] == "supported":
            assert status.startswith("supported"), status


@pytest.fixture
def nobodys_runtime():
    """A runtime directory of uid 65534's, where that user can reach it."""
    import shutil
    runtime = Path(tempfile.mkdtemp(prefix="tcprtt-test-"))
    os.chown(runtime, 65534, 65534)
    os.chmod(runtime, 0o700)
    yield runtime
    shutil.rmtree(runtime)


def test_doctor_as_a_user_with_capabilities_loads_and_says_so(root, nobodys_runtime):
    """CAP_BPF and CAP_PERFMON: doctor loads each variant too; a failure that
    is neither class (a permission) leaves the feature check's word."""
    from .test_privileges import WITH_CAPS, as_nobody
    runtime = nobodys_runtime
    proc = as_nobody(WITH_CAPS, "doctor", "--json",
                     prefix=("env", f"XDG_RUNTIME_DIR={runtime}"))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    facts = json.loads(proc.stdout)
    says = facts["kernel_says"]
    assert list(says) == list(facts["variants"])
    assert says["raw_tp"]["class"] == "supported"
    for variant, said in says.items():
        status = facts["variants"][variant]
        assert said["class"] in ("supported", "KernelUnsupported", "VerifierRefused",
                                 "KernelError", None), said
        if said["class"] == "KernelError" or said["class"] is None:
            assert status.startswith(("not supported: ", "failed: ")), status
        if said["log"]:
            assert Path(said["log"]).parent == runtime / "tcprtt"
            assert Path(said["log"]).stat().st_uid == 65534
    if facts["tracefs_unreadable"]:  # tracefs is root's: loaded, never attached
        assert says["tracepoint"] == {"class": None, "log": None, "checked": "loaded"}
        assert "not readable by this user" in facts["variants"]["tracepoint"]
