"""Output formats, one module each, behind one table.

A format module renders ``interval(view)``: one interval of tcprtt's
output, from a ``render.interval.View`` (its rows in order, each key's
address and family decoded by tcprtt's codec). Adding a format is one new
module here, its line in FORMATS, and its tests. The Prometheus exposition
(``render.prometheus``) is the exporter's, over the same Hists, not a format
of the printed output.
"""

from __future__ import annotations

from . import json, text

FORMATS = {"text": text, "json": json}

