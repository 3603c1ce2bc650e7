"""One interval of tcprtt's output, in any format of ``render.FORMATS``.

The histograms' keys are decoded here, by tcprtt's address codec, and the
rows sorted by address; the format writes them.
"""

from __future__ import annotations

import datetime
from typing import NamedTuple

from ..histogram import Hist, collector_paused
from ..tcprtt.keys import addressed
from . import FORMATS

UNKEYED_SLOTS = 27  # the empty unkeyed histogram that an interval without samples shows

Row = tuple  # (address text or None, family text or None, Hist)


class View(NamedTuple):
    """What a format renders: the rows in order and how to show them."""

    rows: list[Row]
    when: datetime.datetime
    label: str
    unit: str
    extension: bool   # the average (text) or sum and average (JSON)
    timestamp: bool   # the time above each text interval


def rows(hists: list[Hist], keyed: bool,
         prefixes: tuple[int | None, int | None] = (None, None)) -> list[Row]:
    """The rows of an interval: keyed, each key with samples, by address
    (keys without an address last; networks in CIDR notation when the keys
    are cut to ``prefixes``); unkeyed, every histogram, or an empty one when
    there is none."""
    if not keyed:
        out = [(None, None, h) for h in hists]
        return out or [(None, None, Hist(None, (0,) * UNKEYED_SLOTS))]
    named, unnamed = addressed(hists, prefixes)
    return named + unnamed


def render_interval(opts, hists: list[Hist], when: datetime.datetime) -> str:
    """One interval of tcprtt output in the format ``opts`` asks for."""
    with collector_paused():
        prefixes = getattr(opts, "prefixes", (None, None))
        view = View(rows(hists, opts.keyed, prefixes), when, opts.label, opts.unit,
                    opts.extension, opts.timestamp)
        return FORMATS["json" if opts.json else "text"].interval(view)
