"""The ecli backend: records in ecli's documented JSON shape, flags as ecli
names them. ecli itself is not installable on the project's machines, so a
small stand-in prints the documented records."""

from __future__ import annotations

import json
import os
import stat
import sys
import time

import pytest

from runner import options, package
from runner.build import host_arch
from runner.errors import UsageError
from runner.loader.ecli import EcliTracer, parse_records, setting_flags

RECORDS = [
    '{"key": {"family": 2, "addr": [127,0,0,1,0,0,0,0,0,0,0,0,0,0,0,0]}, '
    '"value": {"latency": 120, "cnt": 4, "slots": [0,1,3,0]}}',
    'some message ecli prints',
    '{"value": {"slots": [1,0], "cnt": 1, "latency": 1}, "key": 0}',
]


def test_records_in_ecli_shape_parse_and_other_lines_are_skipped():
    hists = list(parse_records(RECORDS))
    assert len(hists) == 2
    assert hists[0].key["family"] == 2 and hists[0].slots == (0, 1, 3, 0)
    assert hists[0].latency == 120 and hists[0].cnt == 4
    assert hists[1].key == 0


def test_settings_become_ecli_flags():
    pkg = package.load(package.shipped("raw_tp", host_arch()))
    flags = setting_flags(pkg, {"targ_sport": 80, "targ_raddr_hist": True, "targ_ms": False})
    assert flags == ["--lport", "80", "--raddr-hist"]
    with pytest.raises(UsageError, match="cannot set targ_sport"):
        setting_flags(pkg, {"targ_sport": b"80"})


def test_ipv6_filters_become_ecli_flags():
    """The runner's -A/-a with an IPv6 address reach ecli as the two halves."""
    pkg = package.load(package.shipped("raw_tp", host_arch()))
    parser = options.Parser(prog="tcprtt")
    options.add_probe_flags(parser)
    options.add_runner_flags(parser)
    opts = options.from_namespace(parser.parse_args(["-A", "fe80::1", "-a", "2001:db8::"]))
    values = options.probe_settings(opts)
    assert setting_flags(pkg, values) == [
        "--laddr6-hi", str(0x20010DB8 << 32),
        "--raddr6-hi", str(0xFE80 << 48), "--raddr6-lo", "1"]


def test_tracer_reads_the_latest_record_per_key(tmp_path):
    stand_in = tmp_path / "ecli"
    stand_in.write_text(
        f"#!{sys.executable}\n"
        "import sys, time\n"
        "assert sys.argv[1:3] == ['run', '-j'], sys.argv\n"
        f"lines = {RECORDS!r}\n"
        "for line in lines: print(line, flush=True)\n"
        "time.sleep(30)\n")
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IXUSR)
    pkg = package.load(package.shipped("raw_tp", host_arch()))
    tracer = EcliTracer(pkg, str(pkg.source), {}, "raw_tp", ecli=str(stand_in))
    try:
        deadline = time.monotonic() + 5
        while len(tracer.snapshot()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(json.dumps(h.key) for h in tracer.snapshot()) == sorted(
            json.dumps(h.key) for h in parse_records(RECORDS))
    finally:
        tracer.close()
    assert tracer._proc.poll() is not None, "the child is stopped by its own PID"
    assert not os.path.exists(f"/proc/{tracer._proc.pid}/status") or \
        tracer._proc.returncode is not None
