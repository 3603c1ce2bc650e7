"""Histograms as JSON lines. Pure."""

from __future__ import annotations

import json

from ..histogram import Hist, percentiles

# One encoder for every record: json.dumps with separators builds a new one per call.
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def tcprtt_record(hist: Hist, *, time: str, label: str, address: str | None,
                  family: str | None, unit: str, with_sum: bool) -> str:
    """One key's interval as one compact JSON object."""
    total = hist.total
    p50, p90, p99 = percentiles(hist.slots, (0.50, 0.90, 0.99))
    record = {
        "time": time,
        "label": label,
        "address": address,
        "family": family,
        "unit": unit,
        "count": total,
        "sum": hist.latency if with_sum else None,
        "avg": _round(hist.latency / hist.cnt if hist.cnt else None) if with_sum else None,
        "slots": list(hist.slots),
        "p50": _round(p50),
        "p90": _round(p90),
        "p99": _round(p99),
    }
    return _ENCODE(record)


def ecli_record(hist: Hist) -> str:
    """The shape ``ecli run -j`` prints: key and the value's members."""
    value = {**dict(hist.members()), "slots": list(hist.slots)}
    return _ENCODE({"key": hist.key, "value": value})
