"""The attach variants side by side, in ways that a busy machine does not
swamp: what `--attach auto`'s order is decided by (docs/attach.md).

    python -m bench.variants [--rounds N] [--runs N]     (as root; about 3 minutes)

1. Per-run cost (bpf_stats): every variant this kernel runs, and each one's
   empty program, attached at once to the same loopback iperf3 traffic, so
   that each round measures all of them under the same load. The attach
   order is reversed every other round: a program that runs after another
   finds the socket's cache lines warm.
2. Whole path (CPU time): one-byte request/response round trips over
   loopback in one thread, timed by the thread's own CPU clock rather than
   the wall clock, so that time spent descheduled by other work does not
   count (loopback runs the receive path's softirq in the sender's context,
   and on a kernel without IRQ time accounting that is the sender's CPU
   time). Each configuration runs between two runs with nothing attached;
   the figure is the median of the differences.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench import run
from runner.tracer import LibbpfTracer


def per_run_costs(rounds: int, seconds: float, workdir: Path) -> dict[str, float]:
    """ns per run for tcprtt and the empty program on every attach point, all at once."""
    points = run.attach_points()
    empties = {a: run.empty_package(a, workdir) for a in points}
    packages = {a: run.tcprtt_package(a) for a in points}
    results: dict[str, list[float]] = {}
    with run.bpf_stats(), run.iperf_server():
        for r in range(rounds):
            order = points if r % 2 == 0 else tuple(reversed(points))
            for kind in ("empty", "tcprtt"):
                with ExitStack() as stack:
                    ids = {}
                    for a in order:
                        pkg, values = (empties[a], {}) if kind == "empty" else \
                            (packages[a], run.RUNNER)
                        tracer = stack.enter_context(LibbpfTracer(pkg, values, a))
                        ids[a] = tracer.probe.program_ids()
                    before = {a: [run.prog_stats(i) for i in ids[a]] for a in order}
                    run.iperf(seconds)
                    after = {a: [run.prog_stats(i) for i in ids[a]] for a in order}
                for a in order:
                    ns = sum(x[0] - y[0] for x, y in zip(after[a], before[a]))
                    cnt = sum(x[1] - y[1] for x, y in zip(after[a], before[a]))
                    results.setdefault(f"{kind} {a}", []).append(ns / cnt if cnt else float("nan"))
    return {name: statistics.median(v) for name, v in results.items()}


def round_trip_cpu_ns(rounds: int) -> float:
    """CPU ns of this thread per one-byte request and response over loopback TCP."""
    return run.round_trip_ns(rounds, time.thread_time_ns)


def whole_path(runs: int, rounds: int, workdir: Path) -> tuple[float, dict[str, float]]:
    """(CPU ns per round with nothing attached, added ns per round by each configuration)."""
    configs = {}
    for a in run.attach_points():
        configs[f"empty {a}"] = run.load_tracer(run.empty_package(a, workdir), {}, a)
        configs[f"tcprtt {a}"] = run.load_tracer(run.tcprtt_package(a), run.RUNNER, a)
    diffs: dict[str, list[float]] = {}
    bases: list[float] = []
    names = list(configs)
    for i in range(runs):
        for name in names[i % len(names):] + names[:i % len(names)]:
            before = round_trip_cpu_ns(rounds)
            stop = configs[name]()
            try:
                during = round_trip_cpu_ns(rounds)
            finally:
                stop()
            after = round_trip_cpu_ns(rounds)
            bases += [before, after]
            diffs.setdefault(name, []).append(during - (before + after) / 2)
    return statistics.median(bases), {name: statistics.median(v) for name, v in diffs.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8, help="per-run rounds (3 s each)")
    parser.add_argument("--runs", type=int, default=20, help="whole-path runs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cost = per_run_costs(args.rounds, 3.0, Path(tmp))
        base, path = whole_path(args.runs, 20_000, Path(tmp))
    print("| variant | tcprtt, ns/run | empty, ns/run | whole path, tcprtt, CPU ns/round "
          "| whole path, empty, CPU ns/round |")
    print("| --- | --- | --- | --- | --- |")
    for a in run.attach_points():
        print(f"| {a} | {cost[f'tcprtt {a}']:.1f} | {cost[f'empty {a}']:.1f} "
              f"| +{path[f'tcprtt {a}']:.0f} | +{path[f'empty {a}']:.0f} |")
    print(f"\nCPU ns per round with nothing attached: {base:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
