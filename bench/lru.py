"""Keyed cost: the LRU key map against the per-CPU key cache it replaced.

    python -m bench.lru [--rounds N] [--seconds S] [--before REV]   (as root; needs iperf3)

Per run (kernel.bpf_stats_enabled), under loopback iperf3, as ``bench.run``
measures it: for raw_tp and the tracepoint, the empty program, tcprtt
unkeyed, tcprtt -B with the key cache in front of a hash map (the shipped
package of revision REV, before the LRU map), tcprtt -B on the LRU map, and
-B with /24 and /64 prefix keys. Each is loaded, measured and unloaded in
turn, rounds alternated; medians.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench import run
from runner import package
from runner.build import host_arch
from runner.tracer import LibbpfTracer

BEFORE = "3655b70~1"  # the last revision whose packages keep the key cache
PORT = 5399  # not bench.run's, so that the two can be told apart


def old_package(rev: str, variant: str, workdir: Path) -> package.Package:
    path = workdir / f"before.{variant}.json"
    text = subprocess.run(["git", "show", f"{rev}:runner/packages/{host_arch()}/"
                           f"tcprtt.{variant}.json"], cwd=run.REPO, capture_output=True,
                          text=True, check=True).stdout
    path.write_text(text)
    return package.load(path)


def loader(pkg: package.Package, values: dict, variant: str):
    """``load()`` for ``cost``: the tracer, attached."""
    return lambda: LibbpfTracer(pkg, values, variant)


def cost(load, seconds: float) -> float:
    """ns per run of the programs that ``load()`` attaches, under loopback
    iperf3: its own programs only, whatever else the machine loads meanwhile."""
    tracer = load()
    try:
        ids = tracer.probe.program_ids()
        before = {i: run.prog_stats(i) for i in ids}
        run.iperf(seconds)
        after = {i: run.prog_stats(i) for i in ids}
    finally:
        tracer.close()
    ns = sum(after[i][0] - before[i][0] for i in ids)
    count = sum(after[i][1] - before[i][1] for i in ids)
    return ns / count if count else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--before", default=BEFORE, help="the revision with the key cache")
    args = parser.parse_args(argv)
    run.IPERF_PORT = PORT
    keyed = {**run.RUNNER, **run.KEYED}
    with tempfile.TemporaryDirectory(prefix="tcprtt-lru-") as tmp:
        workdir = Path(tmp)
        configs = {}
        for attach in ("raw_tp", "tracepoint"):
            new = run.tcprtt_package(attach)
            configs[f"empty {attach}"] = loader(run.empty_package(attach, workdir), {}, attach)
            configs[f"unkeyed {attach}"] = loader(new, run.RUNNER, attach)
            configs[f"-B key cache {attach}"] = loader(
                old_package(args.before, attach, workdir), keyed, attach)
            configs[f"-B LRU {attach}"] = loader(new, keyed, attach)
            configs[f"-B LRU /24,/64 {attach}"] = loader(
                new, {**keyed, "targ_raddr4_clear": 8, "targ_raddr6_clear": 64}, attach)
        results: dict[str, list[float]] = {name: [] for name in configs}
        with run.bpf_stats(), run.iperf_server():
            for _ in range(args.rounds):
                for name, load in configs.items():
                    results[name].append(cost(load, args.seconds))
    for name, values in results.items():
        print(f"{name:28} {statistics.median(values):7.1f} ns/run   "
              f"({' '.join(f'{v:.1f}' for v in values)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
