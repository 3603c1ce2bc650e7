"""Rendering is pure: fixed histograms in, the expected files out."""

from __future__ import annotations

import datetime
import json

import pytest

from runner.histogram import Hist
from runner.render import json as render_json
from runner.render import text
from runner.run import render_interval

from .conftest import REPO
from .test_options import parse

EXPECTED = REPO / "tests" / "fixtures" / "render"
WHEN = datetime.datetime(2026, 11, 24, 12, 34, 56, tzinfo=datetime.timezone.utc)
V4 = {"family": 2, "addr": [127, 0, 0, 1] + [0] * 12}
V6 = {"family": 10, "addr": [0] * 15 + [1]}
SLOTS = (0, 3, 12, 40, 7, 1) + (0,) * 21

CASES = {
    "all_ext_ts.txt": (("-e", "-T"), [Hist(key={"family": 0, "addr": [0] * 16}, slots=SLOTS,
                                           latency=434, cnt=63)]),
    "by_raddr.txt": (("-B",), [Hist(key=V6, slots=(0, 0, 5) + (0,) * 24),
                               Hist(key=V4, slots=SLOTS)]),
    "empty_all.txt": ((), []),
    "wide_msecs.txt": (("-m", "-b"), [Hist(key=V4, slots=(1,) + (0,) * 32 + (2,))]),
    "json_by_laddr_ext.jsonl": (("-b", "-e", "--json"),
                                [Hist(key=V4, slots=SLOTS, latency=1000, cnt=63),
                                 Hist(key=V6, slots=(0,) * 27)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_interval_matches_expected_file(name):
    argv, hists = CASES[name]
    assert render_interval(parse(*argv), hists, WHEN) == (EXPECTED / name).read_text()


def test_log2_table_stops_at_the_last_nonzero_slot_and_is_empty_for_nothing():
    table = text.log2_hist([0, 0, 4] + [0] * 24, "usecs")
    assert table.splitlines()[-1].startswith("         4 -> 7          : 4")
    assert text.log2_hist([0] * 27, "usecs") == ""


def test_json_record_fields():
    line = render_json.tcprtt_record(Hist(key=V4, slots=SLOTS, latency=630, cnt=63), time="t",
                                     label="Local Address", address="127.0.0.1",
                                     family="ipv4", unit="usecs", with_sum=True)
    record = json.loads(line)
    assert record["count"] == sum(SLOTS) == 63
    assert record["avg"] == 10.0
    assert 8 <= record["p50"] < 16  # the rank-32 sample is in the 8..15 slot
    assert record["p50"] <= record["p90"] <= record["p99"]


def test_ecli_shapes():
    hist = Hist.from_record({"key": 7, "value": {"slots": [1, 2], "comm": "sh"}})
    assert json.loads(render_json.ecli_record(hist)) == {"key": 7, "value": {"comm": "sh",
                                                                           "slots": [1, 2]}}
    section = text.ecli_section(hist.key, hist.members(), hist.slots, "(unit)")
    assert section.splitlines()[:2] == ["key = 7", "comm = sh"]
