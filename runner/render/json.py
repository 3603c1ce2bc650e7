"""Histograms as JSON lines. Pure.

A keyed interval may print 100,000 records: each is written from a template
whose constant parts the encoder made once per interval, so that the bytes
are those of ``json.JSONEncoder(separators=(",", ":"))`` on the record.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii

from ..histogram import Hist, percentiles

# One encoder for every record: json.dumps with separators builds a new one per call.
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
QUANTILES = (0.50, 0.90, 0.99)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _text(value: str | None) -> str:
    """A string member as the encoder writes it (ASCII, escaped), or null."""
    return "null" if value is None else encode_basestring_ascii(value)


def _number(value: float | None) -> str:
    """A finite number, rounded to one decimal, as the encoder writes it, or null."""
    return "null" if value is None else float.__repr__(round(value, 1))


def tcprtt_record(hist: Hist, *, time: str, label: str, address: str | None,
                  family: str | None, unit: str, with_sum: bool) -> str:
    """One key's interval as one compact JSON object."""
    total = hist.total
    p50, p90, p99 = percentiles(hist.slots, QUANTILES)
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


def interval(view) -> str:
    """One interval of tcprtt's output (a ``render.interval.View``): a line
    per row, each ``tcprtt_record``'s bytes. What depends on the slots alone
    (count, slots, percentiles) is written once per distinct histogram, what
    depends on the family once per family."""
    head = (f'{{"time":{_text(view.when.isoformat(timespec="seconds"))},'
            f'"label":{_text(view.label)},"address":')
    unit = f',"unit":{_text(view.unit)},"count":'
    middles = {family: f',"family":{_text(family)}{unit}' for family in (None, "ipv4", "ipv6")}
    with_sum = view.extension
    done: dict[tuple, tuple[str, str, str]] = {}  # slots -> _by_slots(slots)
    out = []
    append = out.append
    text = encode_basestring_ascii
    for address, family, hist in view.rows:
        slots = hist.slots
        parts = done.get(slots)
        if parts is None:
            parts = done[slots] = _by_slots(slots)
        middle = middles.get(family)
        if middle is None:
            middle = middles[family] = f',"family":{_text(family)}{unit}'
        named = text(address) if address is not None else "null"
        if with_sum:
            avg = _number(hist.latency / hist.cnt) if hist.cnt else "null"
            append(f'{head}{named}{middle}{parts[0]},"sum":{hist.latency},"avg":{avg},'
                   f'{parts[1]}')
        else:
            append(f"{head}{named}{middle}{parts[2]}")
    return "".join(out)


def _by_slots(slots: tuple[int, ...]) -> tuple[str, str, str]:
    """A record's count; its members from slots to the end of the line; and
    the two with no sum and average between them."""
    total = sum(slots)
    if total:
        p50, p90, p99 = [_number(p) for p in percentiles(slots, QUANTILES)]
    else:
        p50 = p90 = p99 = "null"
    listed = _INTEGERS.get(len(slots)) or ",".join(["%d"] * len(slots))
    tail = f'"slots":[{listed % slots}],"p50":{p50},"p90":{p90},"p99":{p99}}}\n'
    return f"{total}", tail, f'{total},"sum":null,"avg":null,{tail}'


# "%d,%d,...": a histogram's slots in one formatting (ints as the encoder writes them).
_INTEGERS = {n: ",".join(["%d"] * n) for n in range(1, 65)}
