"""The wasm-bpf host on the real kernel: every host function through a real
wasm module, the ring and perf buffer readers, and ``runner run MODULE.wasm``
end to end (exit status, traps, signals, nothing left loaded).

The modules are WAT text in tests/wasm/; the BPF object they load is
tests/wasm/probe.bpf.c, compiled here with clang.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from runner.errors import KernelError, PackageError
from runner.loader import buffers, libbpf
from runner.package import load, shipped
from runner.tcprtt import variants
from tests.conftest import REPO, runner_cmd, runner_env

wasmtime = pytest.importorskip("wasmtime", reason="wasmtime is a dependency: pip install -e .")

from runner import wasm  # noqa: E402
from runner.wasm.host import Host  # noqa: E402
from runner.wasm.objects import GuestObject  # noqa: E402

HERE = Path(__file__).resolve().parent / "wasm"
PROG = "wh_sys_enter"
SYS_GETPPID = 110  # x86-64
RECORD = struct.Struct("<IIQ")  # struct event: pid, seq, syscall number
TCPRTT_WASM = REPO / "runner" / "packages" / "tcprtt.wasm"


def _need_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root; these tests must not be skipped there")
        pytest.skip("needs root to load BPF programs")


def _bpftool(kind: str) -> list[dict]:
    out = subprocess.run(["bpftool", "-j", kind, "show"], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out or "[]")


def prog_ids(name: str) -> set[int]:
    return {p["id"] for p in _bpftool("prog") if p.get("name") == name}


def held_by(pid: int) -> dict[str, set[int]]:
    """Ids of the BPF programs, maps and links whose fds process ``pid`` holds,
    from /proc/PID/fdinfo: what that process, and no other, has loaded."""
    held: dict[str, set[int]] = {"prog": set(), "map": set(), "link": set()}
    fdinfo = Path(f"/proc/{pid}/fdinfo")
    for entry in fdinfo.iterdir():
        try:
            text = entry.read_text()
        except OSError:  # closed meanwhile
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        for kind in ("link", "prog", "map"):
            if f"{kind}_id" in fields:
                held[kind].add(int(fields[f"{kind}_id"]))
                break
    return held


def gone(kind: str, ids: set[int], wait: float = 3.0) -> set[int]:
    """Those of ``ids`` still loaded after ``wait`` seconds (the kernel frees
    a closed program or map after an RCU grace period)."""
    deadline = time.monotonic() + wait
    while True:
        left = ids & {item["id"] for item in _bpftool(kind)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@pytest.fixture(scope="module")
def bpf_object(tmp_path_factory) -> bytes:
    """tests/wasm/probe.bpf.c compiled as the packer compiles the probe."""
    _need_root()
    out = tmp_path_factory.mktemp("bpf") / "probe.bpf.o"
    include = f"/usr/include/{platform.machine()}-linux-gnu"
    subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-mcpu=v3", f"-I{include}",
                    "-c", str(HERE / "probe.bpf.c"), "-o", str(out)], check=True)
    subprocess.run(["llvm-strip", "-g", str(out)], check=True)
    return out.read_bytes()


@pytest.fixture(scope="module")
def program(bpf_object, tmp_path_factory) -> Path:
    """tests/wasm/program.wat with the BPF object in it, as a .wasm file."""
    text = (HERE / "program.wat").read_text()
    text = text.replace("OBJECT_BYTES", "".join(f"\\{b:02x}" for b in bpf_object))
    text = text.replace("OBJECT_SIZE", str(len(bpf_object)))
    path = tmp_path_factory.mktemp("wasm") / "program.wasm"
    path.write_bytes(wasmtime.wat2wasm(text))
    return path


class Shim:
    """tests/wasm/shim.wat instantiated with a Host: each export calls one
    host function; the test reads and writes the module's memory."""

    OBJ = 0x10000     # where the BPF object goes
    SCRATCH = 0x100   # strings, keys and values
    LOG = 0x20000     # the sample log of table function 1

    def __init__(self, host: Host):
        self.host = host
        self.engine = wasmtime.Engine()
        self.store = wasmtime.Store(self.engine)
        linker = wasmtime.Linker(self.engine)
        host.define(linker)
        module = wasmtime.Module(self.engine, (HERE / "shim.wat").read_text())
        self.exports = linker.instantiate(self.store, module).exports(self.store)
        self.memory = self.exports["memory"]
        self._next = self.SCRATCH

    def __getattr__(self, name: str):
        func = self.exports[name]
        return lambda *args: func(self.store, *args)

    @property
    def size(self) -> int:
        return self.memory.data_len(self.store)

    def put(self, data: bytes) -> int:
        """``data`` in scratch memory; returns its address."""
        at = self._next
        self.memory.write(self.store, data, at)
        self._next = (at + len(data) + 15) // 16 * 16
        assert self._next < self.OBJ
        return at

    def cstr(self, text: str) -> int:
        return self.put(text.encode() + b"\0")

    def read(self, at: int, size: int) -> bytes:
        return bytes(self.memory.read(self.store, at, at + size))

    def load_object(self, obj: bytes) -> int:
        self.memory.write(self.store, obj, self.OBJ)
        return self.load(self.OBJ, len(obj))

    def samples(self) -> list[tuple[int, bytes]]:
        """(size, first bytes) of each sample table function 1 was given."""
        count = struct.unpack("<I", self.read(self.LOG, 4))[0]
        out = []
        for i in range(min(count, 1000)):
            size, = struct.unpack("<I", self.read(self.LOG + 4 + 36 * i, 4))
            out.append((size, self.read(self.LOG + 8 + 36 * i, min(size, 32))))
        return out

    def clear_samples(self) -> None:
        self.memory.write(self.store, bytes(4), self.LOG)


@pytest.fixture
def shim():
    _need_root()
    host = Host("shim.wasm")
    shim = Shim(host)
    try:
        yield shim
    finally:
        host.close()


@pytest.fixture
def loaded(shim, bpf_object):
    """The shim with the test object loaded and wh_sys_enter attached, and
    the object's programs and maps unloaded afterwards."""
    before = held_by(os.getpid())
    handle = shim.load_object(bpf_object)
    assert handle > 0
    assert shim.attach(handle, shim.cstr(PROG), shim.cstr("")) == 0
    held = {kind: ids - before[kind] for kind, ids in held_by(os.getpid()).items()}
    assert len(held["prog"]) == 2 and len(held["link"]) == 1  # wh_sys_enter, wh_sockops
    shim.handle = handle
    yield shim
    shim.host.close()
    assert held_by(os.getpid()) == before, "fds left open"
    for kind in ("link", "prog", "map"):
        assert not gone(kind, held[kind]), f"{kind}s left loaded"


def watch_me(shim: Shim) -> None:
    """Point the probe at this process."""
    fd = shim.fd(shim.handle, shim.cstr("target"))
    assert fd >= 0
    key = shim.put(struct.pack("<I", 0))
    assert shim.operate(fd, 2, key, shim.put(struct.pack("<I", os.getpid())), 0, 0) == 0


# -- the host functions ----------------------------------------------------------


def test_load_and_attach_by_section_then_close(shim, bpf_object):
    before = prog_ids(PROG)
    handle = shim.load_object(bpf_object)
    assert handle > 0
    assert shim.attach(handle, shim.cstr(PROG), 0) == 0  # NULL target: by section
    ids = prog_ids(PROG) - before
    assert len(ids) == 1
    assert shim.close(handle) == 0
    assert not gone("prog", ids)
    assert shim.close(handle) == -errno.EINVAL
    assert shim.attach(handle, shim.cstr(PROG), 0) == -errno.EINVAL


@pytest.mark.parametrize("variant", [v for v in variants.names()
                                     if variants.check(v) is None])
def test_loads_the_shipped_tcprtt_objects(shim, variant):
    package = load(shipped(variant, "x86_64" if platform.machine() == "x86_64" else "arm64"))
    before = held_by(os.getpid())
    handle = shim.load_object(package.obj)
    assert handle > 0
    name = package.progs[0]["name"]
    assert shim.attach(handle, shim.cstr(name), shim.cstr("")) == 0, shim.host.last_failure
    held = {kind: ids - before[kind] for kind, ids in held_by(os.getpid()).items()}
    assert len(held["prog"]) == 1 and len(held["link"]) == 1
    assert shim.fd(handle, shim.cstr(package.hists[0].name)) >= 0
    assert shim.fd(handle, shim.cstr(".rodata")) >= 0
    shim.host.close()
    for kind in ("link", "prog", "map"):
        assert not gone(kind, held[kind]), f"{kind}s left loaded"


def test_failures_come_back_as_results(shim, bpf_object, capfd):
    assert shim.load_object(b"not an ELF object" * 4) == 0
    assert "libbpf cannot open the object" in shim.host.last_failure
    assert capfd.readouterr().err == "", "quiet unless verbose"
    handle = shim.load_object(bpf_object)
    assert shim.attach(handle, shim.cstr("no_such_prog"), shim.cstr("")) == -errno.ENOENT
    # sockops attaches only to a cgroup, and a missing cgroup cannot be opened
    assert shim.attach(handle, shim.cstr("wh_sockops"), shim.cstr("")) < 0
    assert shim.attach(handle, shim.cstr("wh_sockops"), shim.cstr("/nonexistent")) \
        == -errno.ENOENT
    assert shim.fd(handle, shim.cstr("no_such_map")) == -errno.ENOENT
    assert shim.fd(handle + 100, shim.cstr("counts")) == -errno.EINVAL
    assert shim.host.last_failure.startswith("cannot open cgroup /nonexistent")


def test_verbose_says_each_failure(bpf_object, capfd):
    _need_root()
    host = Host("loud.wasm", verbose=True)
    try:
        shim = Shim(host)
        assert shim.load_object(b"not an ELF object" * 4) == 0
        handle = shim.load_object(bpf_object)
        assert shim.attach(handle, shim.cstr("wh_sockops"), shim.cstr("")) < 0
    finally:
        host.close()
    err = capfd.readouterr().err.splitlines()
    assert any("libbpf cannot open the object" in line for line in err), err
    assert any("cannot attach wh_sockops to sockops" in line for line in err), err
    assert all(line.startswith("tcprtt: ") for line in err)


def test_map_round_trips(loaded):
    shim, handle = loaded, loaded.handle
    counts = shim.fd(handle, shim.cstr("counts"))
    assert counts >= 0
    entries = {7: 70, 9: 90, 0: 1}
    for k, v in entries.items():
        key, value = shim.put(struct.pack("<I", k)), shim.put(struct.pack("<Q", v))
        assert shim.operate(counts, 2, key, value, 0, 0) == 0
    out = shim.put(bytes(8))
    for k, v in entries.items():
        assert shim.operate(counts, 1, shim.put(struct.pack("<I", k)), out, 0, 0) == 0
        assert struct.unpack("<Q", shim.read(out, 8))[0] == v
    # BPF_NOEXIST on a key that is there
    assert shim.operate(counts, 2, shim.put(struct.pack("<I", 7)), out, 0, 1) == -errno.EEXIST
    # the walk from a NULL key sees every key, the all-zero one too
    seen, cur, nxt = [], 0, shim.put(bytes(4))
    for _ in range(10):
        rc = shim.operate(counts, 4, cur, 0, nxt, 0)
        if rc == -errno.ENOENT:
            break
        assert rc == 0
        seen.append(struct.unpack("<I", shim.read(nxt, 4))[0])
        cur = shim.put(shim.read(nxt, 4))
    assert sorted(seen) == sorted(entries)
    key9 = shim.put(struct.pack("<I", 9))
    assert shim.operate(counts, 3, key9, 0, 0, 0) == 0
    assert shim.operate(counts, 1, key9, out, 0, 0) == -errno.ENOENT
    assert shim.operate(counts, 3, key9, 0, 0, 0) == -errno.ENOENT
    assert shim.operate(counts, 99, key9, out, 0, 0) == -errno.EINVAL


def test_value_sizes_come_from_the_map(loaded):
    """A per-CPU lookup writes one 8-byte slot per possible CPU, and not a byte more."""
    shim = loaded
    fd = shim.fd(shim.handle, shim.cstr("percpu"))
    cpus = libbpf.load_library().libbpf_num_possible_cpus()
    key = shim.put(struct.pack("<I", 0))
    values = shim.put(b"".join(struct.pack("<Q", 0x1100 + i) for i in range(cpus)))
    assert shim.operate(fd, 2, key, values, 0, 0) == 0
    out = shim.put(b"\xaa" * (8 * cpus + 16))
    assert shim.operate(fd, 1, key, out, 0, 0) == 0
    got = shim.read(out, 8 * cpus + 16)
    assert [struct.unpack_from("<I", got, 8 * i)[0] for i in range(cpus)] == \
        [0x1100 + i for i in range(cpus)]
    assert got[8 * cpus:] == b"\xaa" * 16
    # a value that would run past the end of memory is refused before the call
    assert shim.operate(fd, 1, key, shim.size - 8 * cpus + 1, 0, 0) == -errno.EFAULT


def test_fds_not_from_map_fd_by_name_are_refused(loaded):
    shim = loaded
    target = shim.fd(shim.handle, shim.cstr("target"))
    key, out = shim.put(bytes(4)), shim.put(bytes(8))
    assert shim.operate(target, 1, key, out, 0, 0) == 0
    with open(os.devnull) as f:
        assert shim.operate(f.fileno(), 1, key, out, 0, 0) == -errno.EBADF
    for fd in (0, 1, 2, -1, target + 1, target - 1, 1 << 30):
        assert shim.operate(fd, 1, key, out, 0, 0) == -errno.EBADF, fd
    events = shim.fd(shim.handle, shim.cstr("events"))
    assert shim.poll(shim.handle + 1, events, 1, Shim.LOG, 0x30000, 64, 0) == -errno.EINVAL
    shim.host.close()
    assert shim.operate(target, 1, key, out, 0, 0) == -errno.EBADF  # closed with its object


def test_out_of_range_pointers_are_errors_not_crashes(loaded, capfd):
    shim, handle = loaded, loaded.handle
    size = shim.size
    assert shim.load(size - 10, 100) == 0
    assert shim.load(-16, 100) == 0
    assert shim.load(0, -1) == 0
    assert shim.attach(handle, size, 0) == -errno.EFAULT
    assert shim.attach(handle, -1, 0) == -errno.EFAULT
    assert shim.attach(handle, shim.cstr(PROG), size + 4096) == -errno.EFAULT
    # a name whose NUL would lie past the end of memory
    shim.memory.write(shim.store, b"x" * 8, size - 8)
    assert shim.fd(handle, size - 8) == -errno.EFAULT
    counts = shim.fd(handle, shim.cstr("counts"))
    key = shim.put(struct.pack("<I", 1))
    assert shim.operate(counts, 1, size - 2, shim.put(bytes(8)), 0, 0) == -errno.EFAULT
    assert shim.operate(counts, 2, key, size - 4, 0, 0) == -errno.EFAULT
    assert shim.operate(counts, 2, key, -8, 0, 0) == -errno.EFAULT
    assert shim.operate(counts, 4, key, 0, size - 3, 0) == -errno.EFAULT
    assert shim.operate(counts, 3, -4, 0, 0, 0) == -errno.EFAULT
    events = shim.fd(handle, shim.cstr("events"))
    assert shim.poll(handle, events, 1, Shim.LOG, size - 10, 64, 0) == -errno.EFAULT
    assert shim.poll(handle, events, 1, Shim.LOG, 0x30000, -1, 0) == -errno.EINVAL
    # and the host still works
    assert shim.operate(counts, 2, key, shim.put(struct.pack("<Q", 5)), 0, 0) == 0
    capfd.readouterr()


def test_ring_buffer_samples_reach_the_guest_callback(loaded):
    if platform.machine() != "x86_64":
        pytest.skip("the syscall number checked is x86-64's")
    shim = loaded
    events = shim.fd(shim.handle, shim.cstr("events"))
    watch_me(shim)
    for _ in range(5):
        os.getppid()
    shim.clear_samples()
    data = 0x30000
    got: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + 5
    while sum(RECORD.unpack(s[1])[2] == SYS_GETPPID for s in got) < 5:
        assert time.monotonic() < deadline, f"only {got} arrived"
        assert shim.poll(shim.handle, events, 1, Shim.LOG, data, 64, 200) >= 0
        got = shim.samples()
    for size, raw in got:
        pid, _, _ = RECORD.unpack(raw)
        assert size == RECORD.size and pid == os.getpid()
    seqs = [RECORD.unpack(raw)[1] for _, raw in got]
    assert seqs == sorted(seqs), "samples in the order the kernel wrote them"
    # a max shorter than the sample cuts what is copied, and the size passed
    os.getppid()
    shim.clear_samples()
    shim.memory.write(shim.store, b"\xee" * 16, data)
    assert shim.poll(shim.handle, events, 1, Shim.LOG, data, 4, 1000) >= 1
    assert {size for size, _ in shim.samples()} == {4}
    assert shim.read(data + 4, 12) == b"\xee" * 12


def test_perf_buffer_samples_reach_the_guest_callback(loaded):
    shim = loaded
    perf = shim.fd(shim.handle, shim.cstr("perf_events"))
    shim.clear_samples()
    # the reader is made on the first poll; samples written before it are not kept
    assert shim.poll(shim.handle, perf, 1, Shim.LOG, 0x30000, 64, 0) >= 0
    watch_me(shim)
    for _ in range(5):
        os.getppid()
    deadline = time.monotonic() + 5
    while len(shim.samples()) < 5:
        assert time.monotonic() < deadline, f"only {shim.samples()} arrived"
        assert shim.poll(shim.handle, perf, 1, Shim.LOG, 0x30000, 64, 200) >= 0
    for size, raw in shim.samples():
        # perf pads a raw sample to 8 bytes with its 4-byte size header
        assert size in (RECORD.size, RECORD.size + 4)
        assert RECORD.unpack(raw[:RECORD.size])[0] == os.getpid()


def test_poll_refuses_bad_callbacks_and_non_buffer_maps(loaded):
    shim = loaded
    events = shim.fd(shim.handle, shim.cstr("events"))
    counts = shim.fd(shim.handle, shim.cstr("counts"))
    for index in (0, 3, 99, -1):  # null, wrong type, past the table
        assert shim.poll(shim.handle, events, index, Shim.LOG, 0x30000, 64, 0) == -errno.EINVAL
    assert shim.poll(shim.handle, counts, 1, Shim.LOG, 0x30000, 64, 0) == -errno.EINVAL


def test_a_trap_in_the_callback_ends_the_call(loaded):
    shim = loaded
    events = shim.fd(shim.handle, shim.cstr("events"))
    watch_me(shim)
    os.getppid()
    with pytest.raises(wasmtime.Trap, match="unreachable"):
        for _ in range(50):
            shim.poll(shim.handle, events, 2, Shim.LOG, 0x30000, 64, 100)


def test_buffer_readers_directly(bpf_object):
    _need_root()
    with GuestObject(bpf_object, "wh", "test object") as obj:
        found = obj.find_map("counts")
        assert found is not None
        with pytest.raises(KernelError) as info:
            buffers.open_reader(found.fd, found.type, lambda b: None)
        assert info.value.errno == errno.EINVAL
        events = obj.find_map("events")
        got: list[bytes] = []
        reader = buffers.open_reader(events.fd, events.type, got.append)
        assert isinstance(reader, buffers.RingBufferReader)
        assert reader.poll(0) == 0 and got == []
        reader.close()
        reader.close()
        with pytest.raises(KernelError):
            reader.poll(0)
        perf = obj.find_map("perf_events")
        with buffers.open_reader(perf.fd, perf.type, got.append) as preader:
            assert isinstance(preader, buffers.PerfBufferReader)
            assert preader.poll(0) == 0 and preader.lost == 0


# -- runner run MODULE.wasm -------------------------------------------------------


def end(proc: subprocess.Popen) -> None:
    """Kill ``proc`` if it still runs, and close its pipes."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(runner_cmd("run", *args), capture_output=True, text=True,
                          env=runner_env(), timeout=timeout)


@pytest.mark.parametrize(("mode", "status"), [("x", 7), ("r", 0), ("f", 3)])
def test_the_module_exit_status_is_the_command_status(program, mode, status):
    before = prog_ids(PROG)
    result = run(str(program), mode)
    assert result.returncode == status, result.stderr
    if mode == "f":
        assert len(result.stderr.splitlines()) == 1
        assert "libbpf cannot open the object" in result.stderr
    assert not gone("prog", prog_ids(PROG) - before)


def test_a_trap_is_one_line_and_exit_1(program):
    result = run(str(program), "t")
    assert result.returncode == 1
    assert result.stdout == "ready\n"
    assert result.stderr.splitlines() == [
        f"tcprtt: {program}: the module trapped: wasm trap: wasm `unreachable` instruction "
        "executed"]


def test_not_a_module_is_one_line_and_exit_1(program, tmp_path):
    text = tmp_path / "notes.wasm"
    text.write_text("hello\n")
    cut = tmp_path / "cut.bin"  # no .wasm suffix: known by its magic bytes
    cut.write_bytes(program.read_bytes()[:200])
    empty = tmp_path / "empty.wasm"
    empty.write_bytes(b"")
    for path, words in ((text, "not a WebAssembly module"), (cut, "not a valid WebAssembly"),
                        (empty, "not a WebAssembly module"),
                        (tmp_path / "missing.wasm", "No such file")):
        result = run(str(path))
        assert result.returncode == 1, (path, result.stderr)
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert words in result.stderr and str(path) in result.stderr
        assert "Traceback" not in result.stderr


def test_an_unknown_import_is_one_line(tmp_path):
    path = tmp_path / "odd.wasm"
    path.write_bytes(wasmtime.wat2wasm(
        '(module (import "wasm_bpf" "wasm_no_such_call" (func (param i32)))'
        ' (memory (export "memory") 1) (func (export "_start")))'))
    result = run(str(path))
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and "wasm_no_such_call" in result.stderr


def test_a_wasi_sleep_sleeps(program):
    started = time.monotonic()
    result = run(str(program), "z")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("mode", ["p", "w", "b", "s"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_module_and_unloads(program, mode, sig):
    """Polling with a limit, polling without one, spinning in wasm code and
    sleeping in WASI: each stops at once, exits 0 and leaves nothing loaded."""
    _need_root()
    proc = subprocess.Popen(runner_cmd("run", str(program), mode), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=runner_env(), text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        held = held_by(proc.pid)
        assert len(held["prog"]) == 2 and len(held["link"]) == 1  # wh_sockops is not attached
        sent = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
        assert time.monotonic() - sent < 2, "slow to stop"
    finally:
        end(proc)
    assert proc.returncode == 0, err
    assert err == ""
    for kind in ("link", "prog", "map"):
        assert not gone(kind, held[kind]), f"{kind}s left loaded"


def test_a_signal_before_the_module_starts_exits_130(tmp_path):
    """A module's start function runs before _start; a signal then is as
    early as Ctrl-C before tracing, and the signal handlers come back after."""
    spin = wasmtime.wat2wasm('(module (memory (export "memory") 1) (func $spin (loop (br 0)))'
                             ' (start $spin) (func (export "_start")))')
    previous = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        assert wasm.run_module(spin, [], "spin.wasm") == 130
    finally:
        timer.cancel()
    assert signal.getsignal(signal.SIGTERM) is previous


def test_run_module_in_process(program):
    _need_root()
    before = prog_ids(PROG)
    assert wasm.run_module(program.read_bytes(), ["x"], str(program)) == 7
    assert not gone("prog", prog_ids(PROG) - before)
    with pytest.raises(PackageError, match="not a WebAssembly module"):
        wasm.run_module(b"\x7fELF", [], "x.wasm")


def test_looks_like_wasm(program, tmp_path):
    assert wasm.looks_like_wasm(str(program))
    assert wasm.looks_like_wasm("nothing-here.wasm")
    other = tmp_path / "module"
    other.write_bytes(b"\0asm\1\0\0\0")
    assert wasm.looks_like_wasm(str(other))
    assert not wasm.looks_like_wasm(str(HERE / "shim.wat"))
    assert not wasm.looks_like_wasm("-d")


# -- the real module ----------------------------------------------------------------


def _loopback_traffic(stop: threading.Event) -> None:
    """Connections on loopback that carry data both ways, until ``stop``."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    server.settimeout(0.2)
    try:
        while not stop.is_set():
            client = socket.create_connection(("127.0.0.1", port), timeout=2)
            conn, _ = server.accept()
            for _ in range(20):
                client.sendall(b"x" * 100)
                conn.recv(100)
                conn.sendall(b"y" * 100)
                client.recv(100)
            client.close()
            conn.close()
            stop.wait(0.05)
    finally:
        server.close()


def test_tcprtt_wasm_end_to_end():
    _need_root()
    if not TCPRTT_WASM.exists():
        pytest.skip("runner/packages/tcprtt.wasm is not built (make)")
    stop = threading.Event()
    traffic = threading.Thread(target=_loopback_traffic, args=(stop,))
    traffic.start()
    proc = subprocess.Popen(runner_cmd("run", str(TCPRTT_WASM), "-d", "2", "-B"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=runner_env(),
                            text=True)
    try:
        assert "Tracing TCP RTT" in proc.stderr.readline()
        held = held_by(proc.pid)
        out, err = proc.communicate(timeout=60)
    finally:
        stop.set()
        traffic.join()
        end(proc)
    assert proc.returncode == 0, err
    assert "Remote Address = 127.0.0.1" in out, out
    assert "usecs" in out and "distribution" in out
    assert held["prog"] and held["link"], "nothing was attached"
    for kind in ("link", "prog", "map"):
        assert not gone(kind, held[kind]), f"{kind}s left loaded"


def test_tcprtt_wasm_stops_on_sigterm_and_unloads():
    _need_root()
    if not TCPRTT_WASM.exists():
        pytest.skip("runner/packages/tcprtt.wasm is not built (make)")
    proc = subprocess.Popen(runner_cmd("run", str(TCPRTT_WASM), "-i", "30"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=runner_env(),
                            text=True)
    try:
        assert "Tracing TCP RTT" in proc.stderr.readline()
        held = held_by(proc.pid)
        assert held["prog"], "no tcprtt program loaded"
        sent = time.monotonic()
        proc.terminate()
        proc.communicate(timeout=10)
        assert time.monotonic() - sent < 2, "slow to stop"
    finally:
        end(proc)
    assert proc.returncode == 0
    for kind in ("link", "prog", "map"):
        assert not gone(kind, held[kind]), f"{kind}s left loaded"


def test_run_module_off_the_main_thread(program):
    """Signal handlers can be set only on the main thread: elsewhere the
    module runs without them, and the caller's handlers stay."""
    _need_root()
    previous = signal.getsignal(signal.SIGTERM)
    result: list[int] = []
    worker = threading.Thread(
        target=lambda: result.append(wasm.run_module(program.read_bytes(), ["x"], "t.wasm")))
    worker.start()
    worker.join(timeout=60)
    assert result == [7]
    assert signal.getsignal(signal.SIGTERM) is previous
