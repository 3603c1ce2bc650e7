"""``tcprtt run PACKAGE.json`` as ``ecli run``: ring buffers, perf event
arrays, plain sample maps and packages that export nothing, each built here
from a test BPF source in tests/packages, driven by real events (exec, open,
TCP connections on loopback), every field of the output checked in text and
in JSON; stop signals leave nothing loaded; the decoder fuzzed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.bpfobject import Btf, ecli_decoder
from runner.errors import UsageError
from runner.events import format as fmt
from runner.events import settings as flags_mod

from .conftest import REPO, ours, runner_cmd, runner_env, runqlat
from .packages.pack import pack

OUR_PROGRAMS = ("handle_exec", "handle_openat", "count_exec", "handle_connect", "bench_event",
                "xdp_pass_all", "tc_pass_all", "uprobe_malloc", "bitfield_exec")
EXEC_HEADER = ("TIME     PID    OLD_PID COMM   FILENAME KIND   OWNER  TAG    FLAG   NEG    "
               "MARKER SEQ    ONE_AND_A_HALF ")
TIME = re.compile(r"\d\d:\d\d:\d\d ")


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    if shutil.which("clang") is None:
        pytest.skip("clang is needed to build the test packages")
    out = tmp_path_factory.mktemp("packages")
    built = {name: pack(name, out) for name in ("exec_ring", "open_perf", "silent", "connect_kv",
                                                 "xdp_pass", "tc_pass", "uprobe_nobin")}
    built["bitfield_ring"] = pack("bitfield_ring", out)
    built["small_ring"] = pack("exec_ring", out, ("RING_SIZE=4096",), "small_ring")
    built["small_perf"] = pack("open_perf", out, (), "small_perf", {"perf_buffer_pages": 1})
    return built


def loaded() -> set[str]:
    """"id name" of the test packages' programs loaded by anyone."""
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True,
                         check=True).stdout
    return {f"{p['id']} {p['name']}" for p in json.loads(out or "[]")
            if p.get("name") in OUR_PROGRAMS}


def left_loaded(before: set[str], wait: float = 3.0) -> set[str]:
    """Ours still loaded after ``wait`` (the kernel frees programs after a
    grace period); programs other processes hold are not ours."""
    deadline = time.monotonic() + wait
    while True:
        mine = ours(loaded() - before)
        if not mine or time.monotonic() > deadline:
            return mine
        time.sleep(0.05)


def attached(pid: int) -> bool:
    """Whether process ``pid`` holds a BPF link: its programs are attached."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:bpf_link":
                return True
        except OSError:
            continue
    return False


class Runner:
    """``tcprtt run`` in the background, its output lines collected."""

    def __init__(self, *args: str, netns: str | None = None):
        cmd = runner_cmd("run", *args)
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=runner_env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_attached(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not attached(self.proc.pid):
            if self.proc.poll() is not None:
                raise AssertionError(self.proc.stderr.read())  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the runner did not attach"
            time.sleep(0.05)

    def wait_for(self, test, timeout: float = 15.0, poke=None) -> str:
        """The first line for which ``test`` is true; ``poke`` runs between looks."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                if test(line):
                    return line
            seen = len(self.lines)
            if poke is not None:
                poke()
            time.sleep(0.1)
        raise AssertionError(f"no such line in {self.lines[-5:]}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> tuple[int, str]:
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        self._close()
        return self.proc.returncode, err

    def _close(self) -> None:
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        self._close()


@pytest.fixture
def program():
    """A copy of /bin/true under a short, unique name: its exec is ours."""
    where = tempfile.mkdtemp(prefix="tx", dir="/tmp")
    path = os.path.join(where, "tcprtt-exec-probe")
    shutil.copy("/bin/true", path)
    yield path
    shutil.rmtree(where)


def exec_once(path: str) -> int:
    proc = subprocess.Popen([path])
    proc.wait()
    return proc.pid


def _expected_exec(path: str, pid: int, seq_above: int) -> dict:
    return {"pid": pid, "old_pid": pid, "comm": os.path.basename(path)[:15], "filename": path,
            "kind": "EVENT_EXEC(1)",
            "owner": {"__EUNOMIA_TYPE": "struct", "__EUNOMIA_TYPE_NAME": "ids",
                      "uid": os.getuid(), "gid": os.getgid()},
            "tag": [1, 2, 3, 250], "flag": True, "neg": -5, "marker": 42,
            "one_and_a_half": {"__EUNOMIA_TYPE": "union", "__EUNOMIA_TYPE_NAME": "bits",
                               "raw": 0x3FC00000, "real": 1.5}}


def test_ring_buffer_records_as_ecli_json(root, packages, program):
    before = loaded()
    # -j before the package, as `ecli run -j PACKAGE` takes it
    runner = Runner("-j", str(packages["exec_ring"]), "--marker", "42", "--seq", "1000")
    try:
        runner.wait_attached()
        pids: list[int] = []
        line = runner.wait_for(lambda ln: any(f'"pid":{p},' in ln for p in pids),
                               poke=lambda: pids.append(exec_once(program)))
        code, err = runner.stop()
    finally:
        runner.kill()
    assert code == 0, err
    record = json.loads(line)
    assert list(record) == sorted(record), "ecli prints members sorted by name"
    seq = record.pop("seq")
    assert record == _expected_exec(program, record["pid"], 1000)
    assert record["pid"] in pids
    assert isinstance(seq, int) and seq > 1000  # .bss started at --seq
    assert line == fmt.dumps(json.loads(line))  # compact, no spaces
    assert not left_loaded(before)


def _ecli_line(header: str, values: list[str]) -> str:
    """ecli's plain-text record: each value where its column starts, or one
    space after the previous value when that one ran past (the time first)."""
    starts = [m.start() for m in re.finditer(r"(?<= )\S|^\S", header)][1:]
    line = "00:00:00 "
    for start, value in zip(starts, values):
        line += " " * (start - len(line)) if start > len(line) else " "
        line += value
    return line


def test_ring_buffer_records_as_ecli_text(root, packages, program):
    runner = Runner(str(packages["exec_ring"]), "--marker", "42")
    try:
        runner.wait_attached()
        pids: list[int] = []
        line = runner.wait_for(lambda ln: any(ln[9:].split()[:1] == [str(p)] for p in pids),
                               poke=lambda: pids.append(exec_once(program)))
        code, err = runner.stop(signal.SIGTERM)
    finally:
        runner.kill()
    assert code == 0, err
    assert runner.lines[0] == EXEC_HEADER
    assert TIME.match(line)
    pid = int(line[9:].split()[0])
    seq = line.split()[-2]
    owner = json.dumps({"__EUNOMIA_TYPE": "struct", "__EUNOMIA_TYPE_NAME": "ids",
                        "gid": os.getgid(), "uid": os.getuid()}, separators=(",", ":"))
    bits = '{"__EUNOMIA_TYPE":"union","__EUNOMIA_TYPE_NAME":"bits","raw":1069547520,"real":1.5}'
    values = [str(pid), str(pid), "tcprtt-exec-pro", program, "EVENT_EXEC(1)", owner,
              "[1,2,3,250]", "true", "-5", "42", seq, bits]
    assert "00:00:00 " + line[9:] == _ecli_line(EXEC_HEADER, values)
    assert int(seq) >= 1  # .bss starts at zero without --seq


def test_perf_event_array_records(root, packages, program):
    before = loaded()
    target = Path(program).parent / "opened-by-the-test"  # short: filename is a char[64]
    target.write_text("x")
    comm = Path("/proc/self/comm").read_text().strip()
    for json_output in (True, False):
        args = [str(packages["open_perf"]), "--target_tgid", str(os.getpid())]
        runner = Runner(*args, *(["-j"] if json_output else []))
        try:
            runner.wait_attached()

            def poke() -> None:
                os.close(os.open(target, os.O_RDONLY))
            line = runner.wait_for(lambda ln: str(target) in ln, poke=poke)
            code, err = runner.stop()
        finally:
            runner.kill()
        assert code == 0, err
        flags = os.O_RDONLY | os.O_CLOEXEC
        if json_output:
            assert json.loads(line) == {"pid": os.getpid(), "flags": flags, "comm": comm,
                                        "filename": str(target)}
        else:
            header = "TIME     PID    FLAGS  COMM   FILENAME "
            assert runner.lines[0] == header
            assert "00:00:00 " + line[9:] == _ecli_line(
                header, [str(os.getpid()), str(flags), comm, str(target)])
    assert not left_loaded(before)


def test_perf_records_lost_while_the_reader_stalls_are_counted(root, packages, program):
    target = Path(program).parent / "opened-while-stopped"
    target.write_text("x")
    runner = Runner(str(packages["small_perf"]), "-j", "--target_tgid", str(os.getpid()))
    # One CPU for every record: a perf buffer is per CPU, and the kernel
    # reports a CPU's loss with the next record stored on that same CPU.
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(affinity)})
    try:
        runner.wait_attached()
        runner.proc.send_signal(signal.SIGSTOP)  # the reader falls behind
        try:
            for _ in range(500):
                os.close(os.open(target, os.O_RDONLY))
        finally:
            runner.proc.send_signal(signal.SIGCONT)
        time.sleep(0.5)
        # The kernel reports a loss with the next record it stores: one more.
        os.close(os.open(target, os.O_RDONLY))
        time.sleep(0.5)
        code, err = runner.stop()
    finally:
        os.sched_setaffinity(0, affinity)
        runner.kill()
    assert code == 0, err
    delivered = sum(1 for line in runner.lines if str(target) in line) - 1
    lost = [int(m.group(1)) for m in re.finditer(r"^tcprtt: (\d+) events lost: the perf buffer "
                                                 r"was full \(the reader fell behind\)$", err,
                                                 re.M)]
    assert lost and delivered < 500, err
    assert delivered + sum(lost) >= 500
    assert re.search(rf"^tcprtt: {sum(lost)} events lost in all, of \d+", err, re.M), err


def test_a_ring_buffer_that_filled_up_is_reported(root, packages, program):
    runner = Runner(str(packages["small_ring"]), "-j")
    try:
        runner.wait_attached()
        runner.proc.send_signal(signal.SIGSTOP)
        try:
            for _ in range(60):  # 120-byte records: 34 fill the 4096-byte ring
                exec_once(program)
        finally:
            runner.proc.send_signal(signal.SIGCONT)
        time.sleep(1)
        code, err = runner.stop()
    finally:
        runner.kill()
    assert code == 0, err
    assert sum(1 for line in runner.lines if program in line) < 60
    assert re.search(r"^tcprtt: the ring buffer was full \(up to \d+ of its 4096 bytes "
                     r"waiting\): the kernel refuses records then and counts none", err, re.M), err


def test_plain_sample_map_counts_tcp_connections_on_loopback(root, packages):
    route = subprocess.run(["ip", "route", "get", "127.0.0.1"], capture_output=True,
                           text=True, check=True).stdout
    assert " dev lo " in route
    comm = Path("/proc/self/comm").read_text().strip()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        port = server.getsockname()[1]
        for json_output in (True, False):
            args = [str(packages["connect_kv"]), "--target_tgid", str(os.getpid()), "-i", "0.2"]
            runner = Runner(*args, *(["-j"] if json_output else []))
            try:
                runner.wait_attached()
                for _ in range(3):
                    socket.create_connection(("127.0.0.1", port)).close()
                    server.accept()[0].close()
                want = {"key": {"": comm, "__u16": port, "__u32": os.getpid()},
                        "value": {"connects": 3, "last_addr": 0x7F000001}}
                if json_output:
                    line = runner.wait_for(lambda ln, want=want: json.loads(ln) == want)
                    assert line == fmt.dumps(want)
                else:
                    text = f"{fmt.dumps(want['key'])} {fmt.dumps(want['value'])}"
                    line = runner.wait_for(lambda ln, text=text: ln[9:] == text)
                    assert TIME.match(line)
                    # ecli names a key's members after their types: __u32, __u16, "" (an array)
                    assert runner.lines[0] == "TIME     __U32  __U16         CONNECTS LAST_ADDR "
                code, err = runner.stop()
            finally:
                runner.kill()
            assert code == 0, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_nothing_stays_loaded_after_a_stop_signal(root, packages, sig):
    before = loaded()
    runner = Runner(str(packages["silent"]))
    try:
        runner.wait_attached()
        assert {p.split()[1] for p in loaded() - before} == {"count_exec"}
        code, err = runner.stop(sig)
    finally:
        runner.kill()
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 0), err
    assert runner.lines == [] and "Traceback" not in err
    assert not left_loaded(before)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_busy_ring_buffer_stops_cleanly(root, packages, program, sig):
    before = loaded()
    runner = Runner(str(packages["exec_ring"]), "-j")
    try:
        runner.wait_attached()
        for _ in range(20):
            exec_once(program)
        code, err = runner.stop(sig)
    finally:
        runner.kill()
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 0), err
    assert "Traceback" not in err
    assert not left_loaded(before)


def test_fixture_runs_with_ecli_log2_layout(root):
    proc = subprocess.run(runner_cmd("run", str(runqlat()), "-d", "1.5", "-i", "0.5"), cwd=REPO,
                          env=runner_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    blocks = proc.stdout.split("key =  ")[1:]
    assert blocks, proc.stdout
    for block in blocks:
        lines = block.split("\n")
        assert lines[0].isdigit()  # runqlat's key: one u32, printed after a space
        assert lines[1].startswith("comm = ") and lines[2] == ""
        if lines[3]:
            assert lines[3] == "     (unit)              : count    distribution"


@pytest.mark.parametrize("name,reason", [
    ("xdp_pass", "is an XDP program and the package names no interface"),
    ("tc_pass", "is a tc program and the package names no interface"),
    ("uprobe_nobin", "is a uprobe whose section names no binary"),
    ("bitfield_ring", "member 'low' of 'flags_event' is a bitfield, which ecli does not decode"),
])
def test_what_the_runner_cannot_run_cleanly_is_refused_before_loading(root, packages, name,
                                                                       reason):
    before = loaded()
    proc = subprocess.run(runner_cmd("run", str(packages[name]), "-d", "1"), cwd=REPO,
                          env=runner_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and reason in proc.stderr
    assert not loaded() - before


@contextlib.contextmanager
def _netns(kind: str):
    """A network namespace of this test's own, its loopback up; deleted
    however the test ends."""
    netns = f"tcprtt-{kind}-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        yield netns
    finally:
        subprocess.run(["ip", "netns", "delete", netns], check=False)


def test_xdp_with_an_interface_attaches_by_link_and_leaves_nothing(root, packages, tmp_path):
    doc = json.loads(packages["xdp_pass"].read_text())
    doc["meta"]["bpf_skel"]["progs"][0]["ifindex"] = 1  # the namespace's loopback
    path = tmp_path / "xdp_lo.json"
    path.write_text(json.dumps(doc))
    before = loaded()
    with _netns("xdp") as netns:
        runner = Runner(str(path), netns=netns)
        try:
            runner.wait_attached()
            link = subprocess.run(["ip", "-n", netns, "link", "show", "lo"],
                                  capture_output=True, text=True, check=True).stdout
            assert "xdp" in link
            code, _ = runner.stop(signal.SIGKILL)
        finally:
            runner.kill()
        assert code == -signal.SIGKILL
        deadline = time.monotonic() + 5
        while "xdp" in subprocess.run(["ip", "-n", netns, "link", "show", "lo"],
                                      capture_output=True, text=True).stdout:
            assert time.monotonic() < deadline, "XDP stayed attached after SIGKILL"
            time.sleep(0.1)
        assert not left_loaded(before)


def _tc(netns: str, *args: str) -> str:
    return subprocess.run(["tc", "-n", netns, *args], capture_output=True, text=True).stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_tc_filter_is_removed_however_the_runner_ends(root, packages, tmp_path, sig):
    doc = json.loads(packages["tc_pass"].read_text())
    doc["meta"]["bpf_skel"]["progs"][0]["tchook"] = {"ifindex": 1,
                                                     "attach_point": "BPF_TC_INGRESS"}
    path = tmp_path / "tc_lo.json"
    path.write_text(json.dumps(doc))
    before = loaded()
    with _netns("tc") as netns:
        runner = Runner(str(path), netns=netns)
        try:
            deadline = time.monotonic() + 30
            while "tc_pass_all" not in _tc(netns, "filter", "show", "dev", "lo", "ingress"):
                assert runner.proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            assert "clsact" in _tc(netns, "qdisc", "show", "dev", "lo")
            code, err = runner.stop(sig)
        finally:
            runner.kill()
        assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 0), err
        deadline = time.monotonic() + 10
        while "tc_pass_all" in _tc(netns, "filter", "show", "dev", "lo", "ingress") or \
                "clsact" in _tc(netns, "qdisc", "show", "dev", "lo"):
            assert time.monotonic() < deadline, "the tc filter stayed after the runner ended"
            time.sleep(0.1)
        assert not left_loaded(before)
        guards = subprocess.run(["pgrep", "-f", "runner.events.tc"], capture_output=True,
                                text=True).stdout.split()
        assert not guards, "the guard did not exit"


@pytest.mark.parametrize("argv,line", [
    (["--marker", "many"], "--marker: 'many' is not an integer"),
    (["--marker", "0x10"], "--marker: '0x10' is not an integer"),
    (["--marker", " 5"], "--marker: ' 5' is not an integer"),
    (["--marker", "2147483648"], "--marker: 2147483648 does not fit in int"),
    (["--seq", "-1"], "--seq: -1 does not fit in unsigned long long"),
    (["--seq", "+7", "--marker", "1_0"], "--marker: '1_0' is not an integer"),
])
def test_values_ecli_refuses_are_one_line_and_exit_2(packages, argv, line):
    proc = subprocess.run(runner_cmd("run", str(packages["exec_ring"]), *argv, "-d", "1"),
                          cwd=REPO, env=runner_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"tcprtt: error: {line}\n"


def test_help_lists_settings_with_ecli_help_text(packages):
    proc = subprocess.run(runner_cmd("run", str(packages["exec_ring"]), "--help"), cwd=REPO,
                          env=runner_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "--marker INT Copied into every record's marker" in text
    assert "--seq UNSIGNED_LONG_LONG Set value of `unsigned long long` variable seq" in text
    assert "__eunomia_dummy" not in text


# The decoder, fuzzed against a model of ecli's dumper --------------------------

def _btf(types: list[bytes], strings: bytes) -> bytes:
    body = b"".join(types)
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body), len(strings))
    return header + body + strings


class _Builder:
    """Builds a BTF blob type by type; returns ids."""

    def __init__(self) -> None:
        self.types: list[bytes] = []
        self.strings = b"\0"

    def name(self, text: str) -> int:
        if not text:
            return 0
        off = len(self.strings)
        self.strings += text.encode() + b"\0"
        return off

    def add(self, data: bytes) -> int:
        self.types.append(data)
        return len(self.types)

    def blob(self) -> bytes:
        return _btf(self.types, self.strings)


def _int(size: int, signed: bool, name: str, boolean: bool = False) -> tuple:
    return ("int", size, signed, name, boolean)


LEAVES = st.one_of(
    st.builds(_int, st.sampled_from([1, 2, 4, 8, 16]), st.booleans(), st.just("some_int")),
    st.just(_int(1, True, "char")),
    st.just(_int(1, False, "_Bool", True)),
    st.tuples(st.just("enum"), st.sampled_from([1, 2, 4]),
              st.lists(st.integers(-128, 127), min_size=0, max_size=4, unique=True)),
    st.tuples(st.just("float"), st.sampled_from([4, 8])),
    st.just(("ptr",)),
)
TYPES = st.recursive(LEAVES, lambda inner: st.one_of(
    st.tuples(st.just("array"), inner, st.integers(0, 4)),
    st.tuples(st.just("struct"), st.lists(inner, min_size=1, max_size=5)),  # m0..m2: names repeat
    st.tuples(st.just("union"), st.lists(inner, min_size=1, max_size=3)),
    st.tuples(st.just("typedef"), inner),
), max_leaves=10)


def _size(spec) -> int:
    kind = spec[0]
    if kind == "int":
        return spec[1]
    if kind == "enum":
        return spec[1]
    if kind == "float":
        return spec[1]
    if kind == "ptr":
        return 8
    if kind == "array":
        return _size(spec[1]) * spec[2]
    if kind == "struct":
        return sum(_size(m) for m in spec[1])
    if kind == "union":
        return max(_size(m) for m in spec[1])
    return _size(spec[1])


def _emit(b: _Builder, spec) -> int:
    kind = spec[0]
    if kind == "int":
        _, size, signed, name, boolean = spec
        encoding = 4 if boolean else int(signed)
        return b.add(struct.pack("<III", b.name(name), 1 << 24, size) +
                     struct.pack("<I", encoding << 24 | size * 8))
    if kind == "enum":
        _, size, values = spec
        items = b"".join(struct.pack("<Ii", b.name(f"V{i}"), v) for i, v in enumerate(values))
        return b.add(struct.pack("<III", b.name("e"), 6 << 24 | len(values), size) + items)
    if kind == "float":
        return b.add(struct.pack("<III", b.name("double" if spec[1] == 8 else "float"),
                                 16 << 24, spec[1]))
    if kind == "ptr":
        return b.add(struct.pack("<III", 0, 2 << 24, 0))
    if kind == "array":
        elem = _emit(b, spec[1])
        index = _emit(b, _int(4, False, "unsigned int"))
        return b.add(struct.pack("<III", 0, 3 << 24, 0) + struct.pack("<III", elem, index,
                                                                       spec[2]))
    if kind in ("struct", "union"):
        members, offset = [], 0
        for i, m in enumerate(spec[1]):
            members.append((b.name(f"m{i % 3}"), _emit(b, m), offset * 8))
            if kind == "struct":
                offset += _size(m)
        data = b"".join(struct.pack("<III", *m) for m in members)
        code = 4 if kind == "struct" else 5
        return b.add(struct.pack("<III", b.name(kind[0]), code << 24 | len(members),
                                 _size(spec)) + data)
    inner = _emit(b, spec[1])
    return b.add(struct.pack("<III", b.name("t"), 8 << 24, inner))


def _model(spec, data: bytes):
    """What ecli's dumper makes of ``data``, written from its source."""
    kind = spec[0]
    if kind == "int":
        _, size, signed, name, boolean = spec
        if boolean:
            return data[0] != 0
        value = int.from_bytes(data[:size], "little", signed=signed)
        return str(value) if size == 16 else value
    if kind == "enum":
        value = int.from_bytes(data, "little", signed=True)
        for i, v in enumerate(spec[2]):
            if v == value:
                return f"V{i}({v})"
        return f"<UNKNOWN_VARIANT>({value})"
    if kind == "float":
        value = struct.unpack("<f" if spec[1] == 4 else "<d", data)[0]
        return value if value == value and abs(value) != float("inf") else None
    if kind == "ptr":
        return int.from_bytes(data, "little")
    if kind == "array":
        elem = spec[1]
        if elem[0] == "int" and elem[3] == "char":
            return data.split(b"\0", 1)[0].decode("utf-8", "replace")
        step = _size(elem)
        return [_model(elem, data[i * step:(i + 1) * step]) for i in range(spec[2])]
    if kind in ("struct", "union"):
        out = {"__EUNOMIA_TYPE": kind, "__EUNOMIA_TYPE_NAME": kind[0]}
        offset = 0
        for i, m in enumerate(spec[1]):
            out[f"m{i % 3}"] = _model(m, data[offset:offset + _size(m)])
            if kind == "struct":
                offset += _size(m)
        return out
    return _model(spec[1], data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=TYPES, seed=st.binary(min_size=0, max_size=64))
def test_decoder_agrees_with_a_model_of_ecli(spec, seed):
    b = _Builder()
    type_id = _emit(b, spec)
    btf = Btf(b.blob())
    size = _size(spec)
    data = (seed * (size // max(len(seed), 1) + 1))[:size] if seed else bytes(size)
    value = ecli_decoder(btf, type_id)(data)
    assert value == _model(spec, data)
    assert json.loads(fmt.dumps(value)) == json.loads(json.dumps(value))
    # The writers compiled per type write what the generic serializer does.
    assert fmt.json_writer(btf, type_id)(value) == fmt.dumps(value)
    text = fmt.text_writer(btf, type_id)(value)
    assert text == (value if isinstance(value, str) else fmt.dumps(value))


@settings(max_examples=300, deadline=None)
@given(blob=st.binary(min_size=24, max_size=400), data=st.binary(max_size=256))
def test_decoder_refuses_or_decodes_random_btf(blob, data):
    """Random BTF: refused while parsing or compiling (PackageError), or
    decoded without an exception when the data is as long as the type."""
    from runner.bpfobject import ecli_size
    from runner.errors import PackageError
    blob = struct.pack("<HBBI", 0xEB9F, 1, 0, 24) + blob[8:]
    try:
        btf = Btf(blob)
    except PackageError:
        return
    for type_id in range(1, min(len(btf.types), 16)):
        try:
            decode = ecli_decoder(btf, type_id)
            size = ecli_size(btf, type_id)
        except PackageError:
            continue
        if size <= len(data):
            fmt.dumps(decode(data[:size]))


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_are_written_as_serde_json_writes_them(value):
    text = fmt.ryu(value)
    assert float(text) == value
    assert "+" not in text and ("e" in text or "." in text)


def _rust_int(text: str, low: int, high: int) -> int | None:
    """What Rust's ``str::parse`` makes of ``text`` for an integer type."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    if text[:1] == "-" and low == 0:
        return None  # unsigned types take no minus, not even on zero
    if not digits or not all(c in "0123456789" for c in digits):
        return None
    value = int(text)
    return value if low <= value <= high else None


@settings(max_examples=400, deadline=None)
@given(text=st.text(alphabet="0123456789+-_ x.e\u0661", max_size=24),
       ctype=st.sampled_from(sorted(flags_mod.INTEGER_TYPES)))
def test_integer_settings_are_parsed_as_ecli_parses_them(text, ctype):
    flag = flags_mod.Flag(section=".rodata", name="v", type=ctype, option="--v", short=None,
                          help="", default=None, offset=0, size=8, type_id=0)
    expected = _rust_int(text, *flags_mod.INTEGER_TYPES[ctype])
    try:
        got = flags_mod.parse_value(flag, text)
    except UsageError:
        got = None
    assert got == expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(type_id=st.one_of(st.none(), st.integers(-5, 80)),
       name=st.sampled_from(["exec_event", "ids", "", "x"]),
       members=st.lists(st.fixed_dictionaries({"name": st.sampled_from(
           ["pid", "comm", "owner", "kind", "tag", "", "zz"]), "type": st.just("int")}),
           max_size=14),
       map_type=st.sampled_from(["sample", "plain"]), json_output=st.booleans())
def test_export_metadata_is_checked_not_trusted(packages, type_id, name, members, map_type,
                                                 json_output):
    """Whatever export_types and map metadata say, opening the package
    either describes what to read or refuses it with PackageError."""
    from runner import package as package_mod
    from runner.errors import PackageError
    from runner.events import exports
    doc = json.loads(packages["exec_ring"].read_text())
    real = doc["meta"]["export_types"][0]
    if type_id is None:  # the real struct, with members as drawn
        type_id = real["type_id"]
        members = members if members else real["members"]
    doc["meta"]["export_types"] = [{"name": name, "size": 112, "type_id": type_id,
                                    "members": members}]
    if map_type == "sample":
        doc["meta"]["bpf_skel"]["maps"][0]["sample"] = {"interval": 100, "type": "default_kv"}
    try:
        pkg = package_mod.parse(doc, "fuzzed.json", vet=False, any_output=True)
        described = exports.describe(pkg, json_output)
    except PackageError:
        return
    assert [e.kind for e in described] == ["ring buffer"]
    assert all(f.end <= described[0].size for f in described[0].fields)


def test_multiple_export_types_as_ecli_reads_them(root, packages, program, tmp_path):
    """enable_multiple_export_types: a map's export_config names the record,
    a BTF type or members at offsets."""
    from runner.bpfobject import BpfObject
    from runner.package import decode_object
    doc = json.loads(packages["exec_ring"].read_text())
    btf = BpfObject(decode_object(doc["bpf_object"], doc["bpf_object_size"])).btf
    event_id = doc["meta"]["export_types"][0]["type_id"]
    members = {m.name: m for m in btf.get(event_id).members}
    doc["meta"]["enable_multiple_export_types"] = True
    expected = {}
    for config in ({"btf_type_id": event_id},
                   {"custom_members": [
                       {"name": "who", "offset": members["pid"].offset,
                        "btf_type_id": members["pid"].type_id},
                       {"name": "cmd", "offset": members["comm"].offset,
                        "btf_type_id": members["comm"].type_id}]}):
        doc["meta"]["bpf_skel"]["maps"][0]["export_config"] = config
        path = tmp_path / "multiple.json"
        path.write_text(json.dumps(doc))
        runner = Runner(str(path), "-j")
        try:
            runner.wait_attached()
            pids: list[int] = []
            line = runner.wait_for(
                lambda ln, pids=pids: any(f'"pid":{p},' in ln or f'"who":{p}' in ln
                                          for p in pids),
                poke=lambda pids=pids: pids.append(exec_once(program)))
            code, err = runner.stop()
        finally:
            runner.kill()
        assert code == 0, err
        record = json.loads(line)
        if "btf_type_id" in config:
            record.pop("seq")
            expected = _expected_exec(program, record["pid"], 0)
            expected["marker"] = 7
            assert record == expected
        else:
            assert record == {"cmd": "tcprtt-exec-pro", "who": record["who"]}
            assert record["who"] in pids


def test_the_event_bench_measures_each_way_of_reading(root, tmp_path):
    """bench/events.py's parts: its package builds, loads and is fed, and
    each way of reading counts records (the figures are not checked)."""
    import subprocess as sp
    import sys

    from bench import events as bench
    from runner.events import exports, settings, tracers
    from runner.events.command import read_package
    spinner = sp.Popen([sys.executable, "-c", bench.SPIN])
    before = loaded()
    try:
        package = read_package(str(bench.build(tmp_path)))
        flags = settings.flags(package.bpf, package.doc["meta"], package.source)
        images = settings.images(package.bpf, flags, {"target_tgid": str(spinner.pid)})
        export = exports.describe(package, False)[0]
        probe = tracers.PackageProbe(package, images, {})
        try:
            probe.attach()
            with open(os.devnull, "w") as sink:
                for mode in ("read", "text", "json"):
                    rate, offered, refused = bench.measure(probe, export, mode, 0.5, sink)
                    assert rate > 0 and offered >= rate * 0.5 and 0 <= refused <= offered
        finally:
            probe.close()
    finally:
        spinner.kill()
        spinner.wait()
    assert not left_loaded(before)
