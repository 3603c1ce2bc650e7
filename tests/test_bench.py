"""The benchmark's own parts work (its figures are not checked here)."""

from __future__ import annotations

import pytest

from bench import run
from runner.tcprtt import variants
from runner.tracer import LibbpfTracer

from .conftest import loaded_programs, programs_left


@pytest.mark.parametrize("attach", [v for v in variants.names()
                                    if variants.check(v) is None])
def test_the_empty_floor_program_builds_loads_and_attaches(root, tmp_path, attach):
    before = loaded_programs()
    with LibbpfTracer(run.empty_package(attach, tmp_path), {}, attach) as tracer:
        assert len(tracer.probe.program_ids()) == 1
    assert not programs_left(before)


def test_round_trips_are_timed():
    assert run.round_trip_ns(200) > 0


def test_the_auto_variant_is_one_that_loads(root):
    assert run.auto_variant() in variants.names()


def test_round_trips_are_timed_in_cpu_time():
    from bench import variants as bench_variants
    assert bench_variants.round_trip_cpu_ns(200) > 0
