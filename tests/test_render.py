"""Rendering is pure: fixed histograms in, the expected files out."""

from __future__ import annotations

import datetime
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.histogram import Hist
from runner.render import json as render_json
from runner.render import text
from runner.render.interval import render_interval
from runner.tcprtt.keys import KEY_FAMILY_ALL, make_key

from .conftest import REPO
from .test_options import parse

EXPECTED = REPO / "tests" / "fixtures" / "render"
WHEN = datetime.datetime(2026, 11, 24, 12, 34, 56, tzinfo=datetime.timezone.utc)
V4 = make_key(2, bytes([127, 0, 0, 1]))
V6 = make_key(10, bytes(15) + b"\x01")
SLOTS = (0, 3, 12, 40, 7, 1) + (0,) * 21

CASES = {
    "all_ext_ts.txt": (("-e", "-T"), [Hist(key=make_key(KEY_FAMILY_ALL, b""), slots=SLOTS,
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


def test_the_format_table_is_what_the_options_choose_from():
    from runner.render import FORMATS
    assert set(FORMATS) == {"text", "json"}
    for fmt in FORMATS.values():
        assert callable(fmt.interval)


# Tables and records as the renderers wrote them before their rows were
# made in advance: every line formatted, the record through the encoder.
def _table_line_by_line(slots, unit):
    idx_max = len(slots) - 1
    while idx_max >= 0 and slots[idx_max] <= 0:
        idx_max -= 1
    if idx_max < 0:
        return ""
    val_max = max(slots)
    wide = idx_max > 32
    stars = 20 if wide else 40
    width = 20 if wide else 10
    lines = [f"{'':{15 if wide else 5}}{unit:<{29 if wide else 19}} : count    distribution"]
    for i, val in enumerate(slots[:idx_max + 1]):
        low, high = (1 << (i + 1)) >> 1, (1 << (i + 1)) - 1
        if low == high:
            low -= 1
        bar = max(val, 0) * stars // val_max
        lines.append(f"{low:>{width}} -> {high:<{width}} : {val:<8} |{'*' * bar:<{stars}}|")
    return "\n".join(lines) + "\n"


slot_lists = st.lists(st.integers(min_value=0, max_value=1 << 40), min_size=1, max_size=64)


@settings(max_examples=400, deadline=None)
@given(st.one_of(slot_lists,
                 slot_lists.map(lambda s: [0] * 30 + s[:30]),
                 st.lists(st.integers(min_value=-5, max_value=5), min_size=1, max_size=70),
                 st.lists(st.integers(min_value=0, max_value=3), min_size=65, max_size=70)))
def test_tables_are_the_line_by_line_tables(slots):
    assert text.log2_hist(slots, "usecs") == _table_line_by_line(slots, "usecs")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=18, max_size=18).map(
                              lambda b: (b"\x02\x00", b"\x0a\x00", b"\xff\xff")[b[0] % 3] + b[2:]),
                          st.lists(st.integers(min_value=0, max_value=1 << 33), min_size=27,
                                   max_size=27),
                          st.integers(min_value=0, max_value=1 << 60),
                          st.integers(min_value=0, max_value=1 << 30)), max_size=8),
       st.sampled_from([(), ("-B",), ("-b", "-e"), ("-e",), ("-m", "-B", "-e")]))
def test_json_lines_are_the_encoders_records(entries, argv):
    from runner.tcprtt.keys import key_address, key_family
    opts = parse(*argv, "--json")
    hists = [Hist(key, tuple(slots), latency, cnt) for key, slots, latency, cnt in entries]
    lines = render_interval(opts, hists, WHEN).splitlines()
    rows = [h for h in hists if not opts.keyed or h.total]
    if opts.keyed:
        rows.sort(key=lambda h: (key_address(h.key) is None, key_address(h.key) or ""))
    elif not rows:
        rows = [Hist(None, (0,) * 27)]
    assert lines == [render_json.tcprtt_record(
        h, time=WHEN.isoformat(timespec="seconds"), label=opts.label,
        address=key_address(h.key) if opts.keyed else None,
        family=key_family(h.key) if opts.keyed else None, unit=opts.unit,
        with_sum=opts.extension) for h in rows]
