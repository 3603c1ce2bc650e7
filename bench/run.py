"""tcprtt's benchmarks: every target of the cost issue, with its baselines
measured in the same run, printed as one table.

    python -m bench.run [--quick]     (as root; needs clang, iperf3, bpftool, bpftrace)
    python -m bench.run --scale       (the user-space scale measurement alone)

1. per-segment cost (kernel.bpf_stats_enabled): tcprtt's program against an
   empty program on the same attach point, and against bpftrace's one-liner
2. loopback iperf3 throughput with tcprtt tracing against without
3. start-up: process start to programs attached, tcprtt and bpftrace
4. memory: the runner's RSS while tracing (and its peak during loading)
5. user-space scale: reading and rendering 10,000 and 100,000 keyed histograms
6. no counts lost: per-interval counts summed against the program's run count

Every figure is a ratio or a median of runs alternated in one session; the
machine's speed cancels out of the ratios.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from runner import package
from runner.build import host_arch
from runner.loader import libbpf
from runner.render.interval import render_interval
from runner.tcprtt import variants
from runner.tcprtt.variants import choose
from runner.tracer import LibbpfTracer

REPO = Path(__file__).resolve().parent.parent
BPFTRACE_ONE_LINER = "tracepoint:tcp:tcp_probe { @ = hist(args->srtt); }"
# Unbuffered, so that "Attaching 1 probe..." reaches the pipe when printed.
BPFTRACE = ["bpftrace", "-B", "none", "-e", BPFTRACE_ONE_LINER]
IPERF_PORT = 5299


def wait_for(stream, marker: str, timeout: float = 30.0) -> list[str]:
    """Lines of ``stream`` up to the one holding ``marker``; RuntimeError
    when it does not come within ``timeout`` seconds or the stream ends."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    buffered = ""
    fd = stream.fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 65536).decode(errors="replace")
        if not chunk:
            break
        buffered += chunk
        *lines, buffered = buffered.split("\n")
        for line in lines:
            seen.append(line)
            if marker in line:
                return seen
    raise RuntimeError(f"{marker!r} not seen within {timeout:.0f} s: {' | '.join(seen[-5:])}")


def sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


@contextmanager
def bpf_stats():
    old = Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip()
    sh("sysctl", "-qw", "kernel.bpf_stats_enabled=1")
    try:
        yield
    finally:
        sh("sysctl", "-qw", f"kernel.bpf_stats_enabled={old}")


def prog_stats(prog_id: int) -> tuple[int, int]:
    info = json.loads(sh("bpftool", "prog", "show", "id", str(prog_id), "--json"))
    return info.get("run_time_ns", 0), info.get("run_cnt", 0)


def prog_ids() -> set[int]:
    return {p["id"] for p in json.loads(sh("bpftool", "prog", "show", "--json"))}


@contextmanager
def iperf_server():
    server = subprocess.Popen(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(IPERF_PORT)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", IPERF_PORT), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.2)
        yield
    finally:
        server.terminate()
        server.wait(timeout=10)


def iperf(seconds: float) -> float:
    """Loopback throughput in Gbit/s (the server must be running)."""
    out = sh("iperf3", "-c", "127.0.0.1", "-p", str(IPERF_PORT), "-t", str(seconds), "-J")
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def attach_points() -> tuple[str, ...]:
    """The variants this kernel runs, each measured against its empty program."""
    return tuple(v for v in variants.names() if variants.check(v) is None)


def empty_package(attach: str, workdir: Path) -> package.Package:
    src = REPO / "bench" / "empty.bpf.c"
    obj = workdir / f"empty.{attach}.o"
    section = variants.get(attach).attach  # where the variant's own program attaches
    sh("clang", "-g", "-O2", "-target", "bpf", f'-DEMPTY_SECTION="{section}"', "-c", str(src),
       "-o", str(obj))
    data = obj.read_bytes()
    doc = {"bpf_object": package.encode_object(data), "bpf_object_size": len(data),
           "meta": {"bpf_skel": {
               "obj_name": "empty_bpf",
               "maps": [{"name": "hists", "ident": "hists",
                         "sample": {"interval": 1000, "type": "log2_hist"}}],
               "progs": [{"name": "empty", "attach": section, "link": True}]}}}
    return package.parse(doc, f"empty.{attach}")


def tcprtt_package(variant: str) -> package.Package:
    return package.load(package.shipped(variant, host_arch()))


def cost_of_loaded(load, seconds: float) -> float:
    """ns per run of what ``load()`` attaches, under loopback iperf3."""
    before = prog_ids()
    handle = load()
    try:
        new = sorted(prog_ids() - before)
        time_before = {i: prog_stats(i) for i in new}
        iperf(seconds)
        total_ns = total_cnt = 0
        for i in new:
            ns, cnt = prog_stats(i)
            total_ns += ns - time_before[i][0]
            total_cnt += cnt - time_before[i][1]
        return total_ns / total_cnt if total_cnt else float("nan")
    finally:
        handle()


def load_tracer(pkg, values, variant):
    def load():
        tracer = LibbpfTracer(pkg, values, variant)
        return tracer.close
    return load


def load_bpftrace():
    proc = subprocess.Popen(BPFTRACE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(proc.stdout, "Attaching")
    except RuntimeError:
        proc.kill()
        proc.communicate()
        raise
    time.sleep(0.2)  # "Attaching" comes just before the attach itself

    def stop():
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    return stop


RUNNER = {"targ_percpu": True}  # what the runner sets: per-CPU storage
KEYED = {"targ_raddr_hist": True}


def measure_cost(rounds: int, seconds: float, workdir: Path) -> dict:
    configs = {}
    for attach in attach_points():
        pkg = tcprtt_package(attach)
        configs[f"empty {attach}"] = load_tracer(empty_package(attach, workdir), {}, attach)
        configs[f"tcprtt {attach}"] = load_tracer(pkg, RUNNER, attach)
        configs[f"tcprtt {attach} -B"] = load_tracer(pkg, {**RUNNER, **KEYED}, attach)
        configs[f"ecli layout {attach}"] = load_tracer(pkg, {}, attach)
        configs[f"ecli layout {attach} -B"] = load_tracer(pkg, KEYED, attach)
    configs["bpftrace tracepoint"] = load_bpftrace
    results: dict[str, list[float]] = {name: [] for name in configs}
    with bpf_stats(), iperf_server():
        for _ in range(rounds):
            for name, load in configs.items():
                results[name].append(cost_of_loaded(load, seconds))
    return {name: statistics.median(v) for name, v in results.items()}


def auto_variant() -> str:
    packages = {v: tcprtt_package(v) for v in variants.names()
                if package.shipped(v, host_arch()).is_file()}
    choice = choose(packages, RUNNER, "auto")
    choice.tracer.close()
    return choice.tracer.variant


def measure_throughput(variant: str, values: dict, pairs: int,
                       seconds: float) -> tuple[float, list[float]]:
    ratios = []
    with iperf_server():
        pkg = tcprtt_package(variant)
        for _ in range(pairs):
            without = iperf(seconds)
            with LibbpfTracer(pkg, values, variant):
                traced = iperf(seconds)
            ratios.append(traced / without)
    return statistics.median(ratios), ratios


def start_tracer(argv: list[str], marker: str) -> tuple[subprocess.Popen, list[str]]:
    """Start a tracer and wait for the line that says it is attached: on
    stderr for tcprtt, on stdout for bpftrace (``argv[0]`` tells)."""
    bpftrace = argv[0] == "bpftrace"
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if bpftrace else subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        return proc, wait_for(proc.stdout if bpftrace else proc.stderr, marker)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise


def stop_tracer(proc: subprocess.Popen) -> bytes:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def round_trip_ns(rounds: int, clock=time.perf_counter_ns) -> float:
    """ns per one-byte request and response over loopback TCP, in one
    thread: each round is two segments through tcp_rcv_established. By
    ``clock``: wall time, or time.thread_time_ns for this thread's CPU."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        with client, server:
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            start = clock()
            for _ in range(rounds):
                client.send(b"x")
                server.recv(1)
                server.send(b"y")
                client.recv(1)
            return (clock() - start) / rounds


def measure_path(runs: int, rounds: int, workdir: Path) -> dict[str, list[float]]:
    """Whole-path cost per round with each tracer attached and with none,
    alternated: what bpf_stats cannot see (the tracepoint's record, the
    dispatch), with empty programs and bpftrace as baselines."""
    def nothing():
        return lambda: None
    configs = {"none": nothing}
    for attach in attach_points():
        configs[f"empty {attach}"] = load_tracer(empty_package(attach, workdir), {}, attach)
        configs[f"tcprtt {attach}"] = load_tracer(tcprtt_package(attach), RUNNER, attach)
        configs[f"tcprtt {attach} -B"] = load_tracer(tcprtt_package(attach),
                                                     {**RUNNER, **KEYED}, attach)
    configs["bpftrace tracepoint"] = load_bpftrace
    results: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(runs):
        for name, load in configs.items():
            stop = load()
            try:
                results[name].append(round_trip_ns(rounds))
            finally:
                stop()
    return results


def time_to_banner(argv: list[str], marker: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc, _ = start_tracer(argv, marker)
        times.append((time.perf_counter() - start) * 1000)
        stop_tracer(proc)
    return statistics.median(times)


def measure_startup(runs: int) -> dict:
    return {
        "tcprtt": time_to_banner([sys.executable, "-m", "runner"], "Tracing TCP RTT", runs),
        "bpftrace": time_to_banner(BPFTRACE, "Attaching", runs),
    }


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def rss_while_tracing(argv: list[str], marker: str, seconds: float) -> tuple[int, int]:
    """(max RSS sampled while tracing, VmHWM) in kB, under loopback traffic."""
    proc, _ = start_tracer(argv, marker)
    peak = 0
    try:
        with iperf_server():
            traffic = subprocess.Popen(["iperf3", "-c", "127.0.0.1", "-p", str(IPERF_PORT),
                                        "-t", str(seconds)], stdout=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    peak = max(peak, _status(proc.pid, "VmRSS"))
                    time.sleep(0.1)
                hwm = _status(proc.pid, "VmHWM")
            finally:
                traffic.wait(timeout=seconds + 30)
    finally:
        stop_tracer(proc)
    return peak, hwm


def measure_memory(seconds: float) -> dict:
    return {
        "tcprtt": rss_while_tracing([sys.executable, "-m", "runner", "-i", "1"],
                                    "Tracing TCP RTT", seconds),
        "tcprtt -B": rss_while_tracing([sys.executable, "-m", "runner", "-B", "-i", "1"],
                                       "Tracing TCP RTT", seconds),
        "bpftrace": rss_while_tracing(BPFTRACE, "Attaching", seconds),
    }


def fill_keys(tracer: LibbpfTracer, count: int, distinct: bool = False) -> None:
    """Put ``count`` IPv6 keys with a few samples each into the hists map:
    one of 140 shapes of histogram each, or with ``distinct`` (at most
    131,072 keys) a histogram that no other key has."""
    h = tracer.package.hists[0]
    fd = tracer.probe.map_fd(h.name)
    lib = libbpf.load_library()
    key = ctypes.create_string_buffer(h.key_size)
    value = ctypes.create_string_buffer(h.value_size)
    for i in range(count):
        raw_key = (10).to_bytes(2, "little") + b"\xfd" + bytes(11) + i.to_bytes(4, "big")
        ctypes.memmove(key, raw_key, h.key_size)
        slots = [0] * h.slots_count
        if distinct:  # i's bits in the first 17 slots
            slots[:17] = [(i >> bit) & 1 for bit in range(17)]
            slots[17 + i % 7] += 1 + i % 5
        else:
            slots[i % 20] = 1 + i % 7
        raw_value = (sum(slots) * 100).to_bytes(8, "little") + sum(slots).to_bytes(8, "little")
        raw_value += b"".join(s.to_bytes(4, "little") for s in slots)
        ctypes.memmove(value, raw_value.ljust(h.value_size, b"\0"), h.value_size)
        lib.bpf_map_update_elem(fd, key, value, 0)


def measure_scale(counts: list[int], runs: int, distinct: bool = False) -> dict:
    """Milliseconds (median of ``runs``) to read ``count`` keys once, with
    batched lookups, and render them, in text and in JSON lines."""
    from bench.bench_options import opts_for
    out = {}
    pkg = tcprtt_package("raw_tp")
    for count in counts:
        # A filter that matches nothing keeps the kernel from adding keys of
        # its own; room for twice the keys, as hists is an LRU hash, which
        # evicts before it is full when keys are added from one CPU.
        with LibbpfTracer(pkg, {**RUNNER, **KEYED, "targ_sport": 1}, "raw_tp",
                          max_keys=2 * count) as tracer:
            fill_keys(tracer, count, distinct)
            timings = {}
            for fmt in ("text", "json"):
                opts = opts_for(fmt)
                samples = []
                for _ in range(runs):
                    hists = text = None  # the last run's output is not held meanwhile
                    start = time.perf_counter()
                    hists = tracer.snapshot()
                    text = render_interval(opts, hists, datetime.datetime.now())
                    samples.append((time.perf_counter() - start) * 1000)
                    assert len(hists) == count and text
                timings[fmt] = statistics.median(samples)
            out[count] = timings
    return out


def scale_rows(runs: int, row, info) -> None:
    scale = measure_scale([10_000, 100_000], runs)
    for count, limit in ((10_000, 50), (100_000, 500)):
        for fmt in ("text", "json"):
            ms = scale[count][fmt]
            row("5 scale", f"read + render {count} keys ({fmt}), ms", f"{ms:.0f}", "-",
                f"<= {limit}", ms <= limit)
    # The renderers make each distinct histogram's table or record once: the
    # same with no two keys alike, where that saves nothing.
    distinct = measure_scale([100_000], runs, distinct=True)
    for fmt in ("text", "json"):
        info(f"read + render 100000 keys ({fmt}), no two histograms alike, ms",
             f"{distinct[100_000][fmt]:.0f}", "-", "the worst case of the row above")


def measure_lost(seconds: float) -> tuple[int, int]:
    """(sum of per-interval counts, the program's run count) over one run."""
    with bpf_stats(), iperf_server():
        proc, lines = start_tracer([sys.executable, "-m", "runner", "-v", "-i", "1", "--json"],
                                   "Tracing TCP RTT")
        try:
            prog_id = next(int(line.rsplit("program id", 1)[1].strip(" )"))
                           for line in lines if "program id" in line)
            iperf(seconds)
            time.sleep(1.5)
            _, run_cnt = prog_stats(prog_id)
        finally:
            out = stop_tracer(proc)
    counted = sum(json.loads(line)["count"] for line in out.decode().splitlines())
    return counted, run_cnt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter runs")
    parser.add_argument("--scale", action="store_true",
                        help="only the user-space scale measurement (5), about a minute")
    args = parser.parse_args(argv)
    rounds, secs = (1, 1.0) if args.quick else (3, 3.0)
    rows = []

    def row(item, what, value, baseline, target, ok):
        rows.append((item, what, value, baseline, target, "met" if ok else "NOT met"))

    def info(what, value, baseline, detail):
        rows.append(("1 cost", what, value, baseline, detail, "(for comparison)"))

    def note(text):
        print(f"bench: {text}", file=sys.stderr, flush=True)

    def scale_info(what, value, baseline, detail):
        rows.append(("5 scale", what, value, baseline, detail, "(for comparison)"))

    if args.scale:
        note("measuring read and render of many keys")
        scale_rows(1 if args.quick else 5, row, scale_info)
        print_table(rows)
        return 0

    auto = auto_variant()
    note(f"tcprtt --attach auto picks {auto} here; measuring the per-run cost")
    with tempfile.TemporaryDirectory() as tmp:
        cost = measure_cost(rounds, secs, Path(tmp))
    for attach in attach_points():
        empty = cost[f"empty {attach}"]
        picked = " (auto)" if attach == auto else ""
        for keyed, limit in (("", 1.3), (" -B", 1.6)):
            mine = cost[f"tcprtt {attach}{keyed}"]
            row("1 cost", f"tcprtt{keyed} on {attach}{picked}, ns/run", f"{mine:.1f}",
                f"empty {empty:.1f}", f"<= {limit}x empty (is {mine / empty:.2f}x)",
                mine <= limit * empty)
        for keyed in ("", " -B"):
            mine = cost[f"ecli layout {attach}{keyed}"]
            info(f"ecli's layout{keyed} on {attach}, ns/run", f"{mine:.1f}",
                 f"empty {empty:.1f}", f"{mine / empty:.2f}x empty")
    bt = cost["bpftrace tracepoint"]
    for attach in dict.fromkeys((auto, "tracepoint")):  # bpftrace's own attach point too
        mine = cost[f"tcprtt {attach}"]
        row("1 cost", f"tcprtt on {attach} vs bpftrace, ns/run", f"{mine:.1f}",
            f"bpftrace {bt:.1f}", f">= 2x cheaper (is {bt / mine:.2f}x)", bt >= 2 * mine)

    note("measuring the whole path: loopback round trips")
    with tempfile.TemporaryDirectory() as tmp:
        path = {k: statistics.median(v)
                for k, v in measure_path(5 if args.quick else 15, 20_000, Path(tmp)).items()}
    none = path["none"]
    bt_path = path["bpftrace tracepoint"] - none
    info("whole path: one-byte round trip, bpftrace, ns", f"{path['bpftrace tracepoint']:.0f}",
         f"none {none:.0f}", f"+{bt_path:.0f} ns per round")
    for attach in attach_points():
        floor = path[f"empty {attach}"] - none
        info(f"whole path: one-byte round trip, empty on {attach}, ns",
             f"{path[f'empty {attach}']:.0f}", f"none {none:.0f}", f"+{floor:.0f} ns per round")
        for keyed in ("", " -B"):
            extra = path[f"tcprtt {attach}{keyed}"] - none
            info(f"whole path: one-byte round trip, tcprtt{keyed} on {attach}, ns",
                 f"{path[f'tcprtt {attach}{keyed}']:.0f}", f"none {none:.0f}",
                 f"+{extra:.0f} ns per round: {extra / floor:.2f}x empty's, "
                 f"{bt_path / extra:.2f}x cheaper than bpftrace")

    note("measuring iperf3 throughput")
    for keyed, values in (("", RUNNER), (" -B", {**RUNNER, **KEYED})):
        median, ratios = measure_throughput(auto, values, 3 if args.quick else 7, secs)
        row("2 throughput", f"iperf3 with tcprtt{keyed} / without (median)", f"{median:.3f}",
            " ".join(f"{r:.3f}" for r in ratios), ">= 0.98", median >= 0.98)

    note("measuring start-up")
    start = measure_startup(3 if args.quick else 7)
    row("3 start-up", "process start to attached, ms (median)", f"{start['tcprtt']:.0f}",
        f"bpftrace {start['bpftrace']:.0f}", "<= 150", start["tcprtt"] <= 150)

    note("measuring memory")
    mem = measure_memory(2.0 if args.quick else 4.0)
    for name in ("tcprtt", "tcprtt -B"):
        rss, hwm = mem[name]
        row("4 memory", f"{name} RSS while tracing, MB", f"{rss / 1024:.1f}",
            f"bpftrace {mem['bpftrace'][0] / 1024:.1f}",
            f"<= 30 (peak while loading {hwm / 1024:.1f})", rss <= 30 * 1024)

    note("measuring read and render of many keys")
    scale_rows(1 if args.quick else 5, row, scale_info)

    note("checking that no count is lost between intervals")
    counted, run_cnt = measure_lost(2.0 if args.quick else 5.0)
    row("6 no loss", "sum of interval counts vs program runs", str(counted), str(run_cnt),
        "equal", counted == run_cnt)

    print_table(rows)
    return 0


def print_table(rows: list[tuple]) -> None:
    print("| target | measurement | tcprtt | baseline | goal | |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    sys.exit(main())
