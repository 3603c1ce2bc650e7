"""tcprtt.wasm, the tracer as a WASI module for wasm-bpf hosts.

- Built from its sources and the shipped packages, it is byte for byte the
  shipped module.
- Under a stub host (wasmtime, no kernel): its usage errors, the .rodata it
  loads and its text and JSON output are the runner's for the same input.
- Under eunomia's wasm-bpf runtime, as root on loopback traffic: its counts
  are the native runner's, run at the same time on the same traffic.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from runner import options
from runner.histogram import Hist
from runner.package import load, rodata_image, shipped
from runner.render.interval import render_interval
from runner.run import BANNER
from runner.tcprtt import variants
from runner.tcprtt.settings import probe_settings

from .conftest import REPO, runner_cmd, runner_env
from .traffic import Pair

MODULE = REPO / "runner" / "packages" / "tcprtt.wasm"
WASM_BPF = REPO.parent / "shared" / "tools" / "eunomia" / "wasm-bpf"
ARCHES = ("x86_64", "arm64")
KEY_SIZE, VALUE_SIZE, SLOTS = 18, 128, 27


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing, and CI must run these tests")
    pytest.skip(f"{what} is missing")


# -- the build ---------------------------------------------------------------

def test_rebuilding_gives_the_shipped_module(tmp_path):
    for tool in ("clang-14", "wasm-ld-14", "make"):
        if shutil.which(tool) is None:
            _missing(tool)
    for path in ("/usr/include/wasm32-wasi/stdio.h", "/usr/lib/wasm32-wasi/libc.a"):
        if not Path(path).exists():
            _missing(f"wasi-libc ({path})")
    for n in (1, 2):
        out = tmp_path / str(n)
        subprocess.run(["make", "-C", str(REPO), "wasm", f"WASM_BUILD={out}"], check=True,
                       capture_output=True)
        assert (out / "tcprtt.wasm").read_bytes() == MODULE.read_bytes(), \
            "runner/packages/tcprtt.wasm is stale: run `make ship`"


def test_module_imports_only_the_host_interface_and_wasi():
    wasmtime = _wasmtime()
    module = wasmtime.Module.from_file(wasmtime.Engine(), str(MODULE))
    assert {i.module for i in module.imports} == {"wasm_bpf", "wasi_snapshot_preview1"}
    assert {e.name for e in module.exports} >= {"memory", "__indirect_function_table", "_start"}


# -- a stub host ---------------------------------------------------------------

def _wasmtime():
    try:
        import wasmtime
    except ImportError:
        _missing("the wasmtime Python package")
    return wasmtime


class StubHost:
    """The wasm_bpf imports over a pretend kernel: objects load when
    ``loads`` says so, every program attaches, and the histogram map holds
    ``entries`` (raw key -> raw value)."""

    HISTS_FD, DROPPED_FD = 3, 4

    def __init__(self, loads=lambda index: False, entries=None, dropped: int = 0):
        self.loads = loads
        self.entries = dict(entries or {})
        self.dropped = dropped
        self.objects: list[bytes] = []

    def run(self, argv: list[str], tmp: Path) -> tuple[int, str, str]:
        wasmtime = _wasmtime()
        engine = wasmtime.Engine()
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
        imports = {
            "wasm_load_bpf_object": ([i32, i32], [i64], self._load),
            "wasm_attach_bpf_program": ([i64, i32, i32], [i32], lambda c, h, n, t: 0),
            "wasm_bpf_buffer_poll": ([i64, i32, i32, i32, i32, i32, i32], [i32],
                                     lambda c, *a: -22),
            "wasm_bpf_map_fd_by_name": ([i64, i32], [i32], self._map_fd),
            "wasm_bpf_map_operate": ([i32, i32, i32, i32, i32, i64], [i32], self._operate),
            "wasm_close_bpf_object": ([i64], [i32], lambda c, h: 0),
        }
        for name, (params, results, func) in imports.items():
            linker.define_func("wasm_bpf", name, wasmtime.FuncType(params, results), func,
                               access_caller=True)
        store = wasmtime.Store(engine)
        wasi = wasmtime.WasiConfig()
        wasi.argv = ["tcprtt.wasm", *argv]
        out, err = tmp / "stdout", tmp / "stderr"
        wasi.stdout_file, wasi.stderr_file = str(out), str(err)
        store.set_wasi(wasi)
        instance = linker.instantiate(store, wasmtime.Module.from_file(engine, str(MODULE)))
        code = 0
        try:
            instance.exports(store)["_start"](store)
        except wasmtime.ExitTrap as exc:
            code = exc.code
        return code, out.read_text(), err.read_text()

    def _load(self, caller, ptr, size):
        self.objects.append(bytes(caller["memory"].read(caller, ptr, ptr + size)))
        return len(self.objects) if self.loads(len(self.objects) - 1) else 0

    def _map_fd(self, caller, handle, name_ptr):
        memory = caller["memory"]
        name = bytes(memory.read(caller, name_ptr, name_ptr + 64)).split(b"\0")[0]
        return {b"hists": self.HISTS_FD, b"dropped": self.DROPPED_FD}.get(name, -2)

    def _operate(self, caller, fd, cmd, key_ptr, value_ptr, next_ptr, flags):
        memory = caller["memory"]
        if fd == self.DROPPED_FD and cmd == 1:
            memory.write(caller, struct.pack("<Q", self.dropped), value_ptr)
            return 0
        key = bytes(memory.read(caller, key_ptr, key_ptr + KEY_SIZE))
        if cmd == 1:
            if key not in self.entries:
                return -2
            memory.write(caller, self.entries[key], value_ptr)
            return 0
        if cmd == 4:
            keys = sorted(self.entries)
            after = keys.index(key) + 1 if key in keys else 0
            if after >= len(keys):
                return -2
            memory.write(caller, keys[after], next_ptr)
            return 0
        return -22


def _runner_usage(argv: list[str]) -> tuple[int, str]:
    proc = subprocess.run(runner_cmd(*argv), cwd=REPO, env=runner_env(), capture_output=True,
                          text=True, timeout=60)
    return proc.returncode, proc.stderr


BAD_FLAGS = [
    ["-i"], ["-i", "x"], ["-i", "0"], ["-i", "99999999999999999999"], ["-d", "-5"],
    ["--l", "5"], ["-T5"], ["-Tm", "-i", "-5"], ["foo", "bar"], ["-a", "1.2.3"],
    ["-a", "::"], ["-a", "::ffff:0.0.0.0"], ["-A", "0.0.0.0"], ["-4", "-6"], ["-b", "-B"],
    ["-4", "-a", "::1"], ["-6", "-a", "1.2.3.4"], ["-4", "-A", "::ffff:1.2.3.4"],
    ["--json=1"], ["-p", "0", "-P", "70000"], ["-i", "5_0", "-d", "+3", "-p", "x"],
    ["--attach", "x"], ["-a", "fe80::1%eth0"], ["-a", "01.2.3.4"], ["-a", "1:2:3:4:5:6:7"],
    ["-a", "1::2::3"], ["-a", ":1::2"], ["-a", "1:2:3:4:5:6:7:8:9"], ["-A", "::1.2.3"],
    ["-p", "a'b"], ["-P", "1\t2"], ["--lport=", "5"], ["-i", "1", "2"], ["--", "-i"],
    ["-vx"], ["--ipv", "4"], ["-p", "65536"], ["-d", "31536001"], ["-i", "+3"],
    ["-i", " 7"], ["-p", "0080", "-P", "-0"], ["-i", "٣"],
]


@pytest.mark.parametrize("argv", BAD_FLAGS, ids=" ".join)
def test_bad_flags_are_the_runners_one_line_and_exit_2(argv, tmp_path):
    code, out, err = StubHost().run(argv, tmp_path)
    want_code, want_err = _runner_usage(argv)
    assert (code, err) == (want_code, want_err)
    assert code == 2 and err.count("\n") == 1 and err.startswith("tcprtt: error: ")
    assert out == ""


def _objects_in_order() -> list[tuple[str, str]]:
    return [(v.name, arch) for v in variants.table()
            for arch in (ARCHES if v.arch_specific else ARCHES[:1])]


def _runner_options(argv: list[str]) -> options.Options:
    parser = options.Parser(prog="tcprtt")
    options.add_probe_flags(parser)
    options.add_runner_flags(parser)
    return options.from_namespace(parser.parse_args(argv))


SETTINGS = [
    [], ["-p", "8080", "-P", "443"], ["-a", "10.1.2.3", "-A", "192.168.0.9", "-4"],
    ["-6", "-a", "2001:db8::1", "-A", "fe80::1:2:3:4"], ["-A", "::ffff:1.2.3.4", "-b"],
    ["-B", "-e", "-m"], ["-6", "-A", "::1.2.3.4"], ["-A", "0:0::FFFF:7f00:1", "-T", "--json"],
]


@pytest.mark.parametrize("argv", SETTINGS, ids=lambda a: " ".join(a) or "none")
def test_each_object_is_loaded_with_the_runners_settings(argv, tmp_path):
    host = StubHost()
    code, _, err = host.run([*argv, "-d", "1"], tmp_path)
    assert code == 1 and "no attach variant works" in err
    order = _objects_in_order()
    assert len(host.objects) == len(order)
    values = probe_settings(_runner_options(argv))
    for (variant, arch), loaded in zip(order, host.objects):
        pkg = load(shipped(variant, arch))
        at, size = next((s[2], s[3]) for s in pkg.bpf.sections if s[0] == ".rodata")
        assert loaded == pkg.obj[:at] + rodata_image(pkg, values) + pkg.obj[at + size:], \
            f"{variant} ({arch})"


def _entry(family: int, addr: bytes, slots: list[int], latency: int = 0, cnt: int = 0):
    key = struct.pack("<H", family) + addr.ljust(16, b"\0")
    value = struct.pack(f"<QQ{SLOTS}I", latency, cnt, *slots).ljust(VALUE_SIZE, b"\0")
    return key, value


def _slots(**at: int) -> list[int]:
    slots = [0] * SLOTS
    for name, count in at.items():
        slots[int(name[1:])] = count
    return slots


KEYED = dict([
    _entry(2, socket.inet_aton("127.0.0.1"), _slots(s3=40, s1=3, s2=12, s4=7, s5=1), 1000, 63),
    _entry(2, socket.inet_aton("10.0.0.7"), _slots(s0=1), 1, 1),
    _entry(2, socket.inet_aton("10.0.0.8"), _slots(), 0, 0),  # counted nothing: not shown
    _entry(10, socket.inet_pton(socket.AF_INET6, "2001:db8::1:0:0:1"), _slots(s26=5), 99, 5),
    _entry(10, socket.inet_pton(socket.AF_INET6, "::1"), _slots(s2=5, s3=1), 30, 6),
    _entry(10, socket.inet_pton(socket.AF_INET6, "fe80:0:0:1::"), _slots(s10=2), 4000, 2),
])
UNKEYED = dict([_entry(0xFFFF, b"", _slots(s0=2, s9=1000, s11=7), 777777, 1009)])


def _hists(entries: dict) -> list[Hist]:
    out = []
    for key, value in entries.items():
        latency, cnt, *slots = struct.unpack_from(f"<QQ{SLOTS}I", value)
        out.append(Hist(key=key, slots=tuple(slots), latency=latency, cnt=cnt))
    return out


RENDERED = [
    (["-B", "-e"], KEYED), (["-b", "--json", "-e"], KEYED), (["-B", "--json", "-m"], KEYED),
    ([], UNKEYED), (["-e"], UNKEYED), (["--json", "-e"], UNKEYED), (["-m"], {}),
    (["--json"], {}),
]


@pytest.mark.parametrize("argv,entries", RENDERED, ids=lambda a: " ".join(a) if
                         isinstance(a, list) else str(len(a)))
def test_output_is_the_runners(argv, entries, tmp_path):
    host = StubHost(loads=lambda i: i == 1, entries=entries)
    code, out, err = host.run([*argv, "-d", "1"], tmp_path)
    assert code == 0, err
    opts = _runner_options(argv)
    want = render_interval(opts, _hists(entries), _now())
    if opts.json:
        got = [json.loads(line) for line in out.splitlines()]
        expected = [json.loads(line) for line in want.splitlines()]
        for record in got + expected:
            assert record.pop("time").endswith("+00:00")
        assert got == expected
    else:
        assert out == want
    assert err == BANNER + "\n"


def test_timestamps_and_drops(tmp_path):
    host = StubHost(loads=lambda i: True, entries=UNKEYED, dropped=5)
    code, out, err = host.run(["-T", "-d", "1"], tmp_path)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "" and len(lines[1]) == 8 and lines[1][2] == lines[1][5] == ":"
    assert "tcprtt: 5 samples dropped: the key map is full\n" in err


def test_help_and_fallback_report_under_the_stub(tmp_path):
    code, out, _ = StubHost().run(["-h"], tmp_path)
    assert code == 0 and "--raddr-hist" in out and "--attach" in out
    code, _, err = StubHost(loads=lambda i: i == 2).run(["-v", "-d", "1"], tmp_path)
    assert code == 0
    names = [f"{v} ({arch})" if variants.get(v).arch_specific else v
             for v, arch in _objects_in_order()]
    chosen = _objects_in_order()[2][0]
    assert err.splitlines() == [
        *(f"tcprtt: {name} not used: failed to load (the kernel or libbpf refused the "
          "object; the host gives no reason)" for name in names[:2]),
        *(f"tcprtt: {name} not used: not tried: {chosen} attached first"
          for name in names[3:]),
        f"tcprtt: attached with the {chosen} variant",
        BANNER,
    ]


def _now():
    import datetime
    return datetime.datetime.now(datetime.timezone.utc)


# -- under wasm-bpf, on the kernel --------------------------------------------

@pytest.fixture
def wasm_bpf(root):
    if not WASM_BPF.is_file():
        _missing(str(WASM_BPF))
    return WASM_BPF


class Traced:
    """A tracer process whose output lines are kept with the time each came."""

    def __init__(self, argv: list[str], env=None):
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, str]] = []
        self.err: list[str] = []
        self.attached = threading.Event()
        self._threads = [threading.Thread(target=self._out, daemon=True),
                         threading.Thread(target=self._err, daemon=True)]
        for t in self._threads:
            t.start()

    def _out(self):
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line))

    def _err(self):
        for line in self.proc.stderr:
            self.err.append(line)
            if line.strip() == BANNER:
                self.attached.set()

    def wait_attached(self, timeout: float = 30.0) -> None:
        if not self.attached.wait(timeout):
            raise AssertionError(f"did not attach: {''.join(self.err)}")

    def finish(self, timeout: float = 30.0) -> int:
        self.proc.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=timeout)
        return self.proc.returncode

    def records(self) -> list[tuple[float, dict]]:
        return [(at, json.loads(line)) for at, line in self.lines if line.strip()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for t in self._threads:
            t.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()


@contextmanager
def both(args: list[str], seconds: int) -> Iterator[tuple[Traced, Traced]]:
    """The module under wasm-bpf and the native runner, the same flags."""
    flags = ["--json", "-i", "1", "-d", str(seconds), *args]
    module = Traced([str(WASM_BPF), str(MODULE), *flags])
    native = Traced(runner_cmd(*flags), env=runner_env())
    try:
        module.wait_attached()
        native.wait_attached()
        yield module, native
        assert module.finish() == 0, "".join(module.err)
        assert native.finish() == 0, "".join(native.err)
    finally:
        module.stop()
        native.stop()


@contextmanager
def pair_between(server: str, client: str, port: int = 0) -> Iterator[Pair]:
    """A connected TCP pair between two loopback addresses of our own."""
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    conn = accepted = None
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((server, port))
        listener.listen(1)
        listener.settimeout(5)
        conn = socket.socket(family, socket.SOCK_STREAM)
        conn.bind((client, 0))
        conn.settimeout(5)
        conn.connect(listener.getsockname()[:2])
        accepted, _ = listener.accept()
        accepted.settimeout(5)
        for s in (conn, accepted):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        yield Pair(family, listener.getsockname()[1], conn.getsockname()[1], conn, accepted)
    finally:
        for s in (conn, accepted, listener):
            if s is not None:
                s.close()


def _our_addresses() -> tuple[str, str]:
    """Loopback addresses no other traffic uses (all of 127/8 is loopback),
    so that their keys count this test's samples alone."""
    net = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}"
    return f"{net}.1", f"{net}.2"


SETTLE = 1.3  # more than one interval: the interval that holds an attach is over


def _drive(traffic) -> tuple[float, float]:
    time.sleep(SETTLE)
    start = time.monotonic()
    traffic()
    end = time.monotonic()
    time.sleep(SETTLE)
    return start, end


def _quiet(records, start: float, end: float) -> int:
    """Samples counted in intervals that hold none of the test's traffic."""
    return sum(r["count"] for at, r in records if at < start or at - SETTLE > end)


def _total(records, address=None) -> int:
    return sum(r["count"] for _, r in records if address is None or r["address"] == address)


@pytest.mark.parametrize("args", [[], ["-m"]], ids=["unkeyed", "msecs"])
def test_unkeyed_counts_match_the_runner(wasm_bpf, args):
    """Each probe counts every sample between its attach and its last read.
    Samples that only one of them can count arrive while the other is not
    yet attached or already done, which is outside the test's traffic and
    inside intervals that hold none of it: the two totals may differ by at
    most what those quiet intervals counted (0 on an idle machine)."""
    server, client = _our_addresses()
    with both(args, 7) as (module, native):
        with pair_between(server, client) as pair:
            start, end = _drive(lambda: pair.exchange(400))
    m, n = module.records(), native.records()
    tolerance = _quiet(m, start, end) + _quiet(n, start, end)
    assert _total(m) >= 400
    assert abs(_total(m) - _total(n)) <= tolerance, (_total(m), _total(n), tolerance)
    for _, record in m:
        assert record["unit"] == ("msecs" if args else "usecs")
        assert record["address"] is None and record["family"] is None


# The variants this kernel runs (tracefs is not mounted for this), each forced
# on both: the module's object of a variant counts as the runner's package does.
RUNNABLE = [v for v in variants.names() if variants.check(v) is None]


@pytest.mark.parametrize("flag,label,attach",
                         [("-B", "Remote Address", v) for v in RUNNABLE] +
                         [("-b", "Local Address", "auto")])
def test_keyed_counts_match_the_runner_exactly(wasm_bpf, flag, label, attach):
    """Keys of loopback addresses of the test's own count its traffic alone,
    which both probes see whole: the counts are equal, key by key, slot by slot."""
    server, client = _our_addresses()
    with both([flag, "-e", "--attach", attach], 7) as (module, native):
        with pair_between(server, client) as pair:
            _drive(lambda: pair.exchange(400))
    m, n = module.records(), native.records()
    for address in (server, client):
        assert _total(m, address) >= 200
        assert _total(m, address) == _total(n, address)
        for key in ("slots",):
            sums = [[sum(x) for x in zip(*(r[key] for _, r in recs if r["address"] == address))]
                    for recs in (m, n)]
            assert sums[0] == sums[1]
    assert {r["label"] for _, r in m} == {label}
    assert {r["family"] for _, r in m if r["address"] in (server, client)} == {"ipv4"}


def test_port_filter_counts_match_the_runner_exactly(wasm_bpf):
    server, client = _our_addresses()
    with socket.socket() as probe_port:
        probe_port.bind((server, 0))
        port = probe_port.getsockname()[1]
    with both(["-p", str(port)], 7) as (module, native):
        with pair_between(server, client, port) as pair, \
                pair_between(client, server) as other:
            _drive(lambda: (pair.exchange(300), other.exchange(300)))
    m, n = module.records(), native.records()
    assert 150 <= _total(m) == _total(n), (_total(m), _total(n))


def test_ipv4_and_ipv6_keys_decode(wasm_bpf):
    server, client = _our_addresses()
    with both(["-B"], 7) as (module, native):
        with pair_between(server, client) as v4, pair_between("::1", "::1") as v6:
            start, end = _drive(lambda: (v4.exchange(200), v6.exchange(200)))
    m, n = module.records(), native.records()
    families = {r["address"]: r["family"] for _, r in m}
    assert families[server] == families[client] == "ipv4"
    assert families["::1"] == "ipv6"
    tolerance = _quiet(m, start, end) + _quiet(n, start, end)
    assert _total(m, "::1") >= 200
    assert abs(_total(m, "::1") - _total(n, "::1")) <= tolerance


def test_falls_back_to_the_variant_the_runner_uses(wasm_bpf):
    proc = subprocess.run([str(WASM_BPF), str(MODULE), "-v", "-d", "1"], capture_output=True,
                          text=True, timeout=60)
    native = subprocess.run(runner_cmd("-v", "-d", "1"), cwd=REPO, env=runner_env(),
                            capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and native.returncode == 0, proc.stderr + native.stderr
    variant = native.stderr.split("attached with the ")[1].split()[0]
    assert f"tcprtt: attached with the {variant} variant\n" in proc.stderr
    order = variants.names()
    for other in order[:order.index(variant)]:
        assert f"tcprtt: {other} not used: " in proc.stderr
    if variant == order[1]:  # this kernel: no fentry, no kprobes
        assert "tcprtt: fentry not used: failed to load" in proc.stderr
        assert f"tcprtt: kprobe (arm64) not used: not tried: {variant} attached first" \
            in proc.stderr


def test_kprobe_objects_fail_as_this_kernel_and_architecture_say(wasm_bpf):
    proc = subprocess.run([str(WASM_BPF), str(MODULE), "--attach", "kprobe", "-d", "1"],
                          capture_output=True, text=True, timeout=60)
    native = subprocess.run(runner_cmd("--attach", "kprobe", "-d", "1"), cwd=REPO,
                            env=runner_env(), capture_output=True, text=True, timeout=60)
    if native.returncode == 0:
        assert proc.returncode == 0 and BANNER in proc.stderr
        return
    assert proc.returncode == 1
    line, = proc.stderr.splitlines()
    assert line.startswith("tcprtt: --attach kprobe is not available (")
    # The arm64 object cannot load on x86_64 (its relocations are arm64's);
    # the x86_64 object loads, and attaching needs the kprobes this kernel lacks.
    assert "kprobe (x86_64): loaded, but failed to attach (" in line
    assert "kprobe (arm64): failed to load" in line


def test_bad_flags_under_wasm_bpf(wasm_bpf):
    proc = subprocess.run([str(WASM_BPF), str(MODULE), "-b", "-B"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == "tcprtt: error: -b/--byladdr and -B/--byraddr cannot be used together\n"


def test_duration_ends_with_exit_0_and_every_report_flushed(wasm_bpf):
    t = Traced([str(WASM_BPF), str(MODULE), "-i", "1", "-d", "3"])
    try:
        t.wait_attached()
        assert t.finish() == 0, "".join(t.err)
    finally:
        t.stop()
    heads = [at for at, line in t.lines if line.startswith("All Addresses = ")]
    assert len(heads) == 3
    # each report reached the pipe when it was printed, not at exit
    assert heads[1] - heads[0] > 0.5 and heads[2] - heads[1] > 0.5


def test_a_report_survives_the_host_being_killed(wasm_bpf):
    """Without -d the module never ends by itself; a signal ends the host
    at once, and the reports printed so far are already in the pipe."""
    t = Traced([str(WASM_BPF), str(MODULE), "-i", "1"])
    try:
        t.wait_attached()
        deadline = time.monotonic() + 10
        while not any(line.startswith("All Addresses") for _, line in t.lines):
            assert time.monotonic() < deadline, "no report within 10 s"
            time.sleep(0.05)
        t.proc.send_signal(signal.SIGTERM)
        t.finish()
    finally:
        t.stop()
    assert t.lines[0][1] == "\n" and t.lines[1][1].startswith("All Addresses = ")
