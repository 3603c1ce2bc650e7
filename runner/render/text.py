"""Histograms as text, in the layout of bcc's and libbpf-tools' log2 tables. Pure.

A keyed interval may print 100,000 tables, so the rows are made once: a
table is the header, slices of one precomputed run of empty rows, and a line
for each slot that counts something.
"""

from __future__ import annotations

from itertools import accumulate, compress

from ..histogram import bounds

STARS = 40
_SLOTS = 64  # rows made in advance; a longer table is made row by row


def _slot_head(wide: bool, low: int, high: int) -> str:
    """The fixed start of a slot's line: its range and the colon."""
    width = 20 if wide else 10
    return f"{low:>{width}} -> {high:<{width}} : "


def _heads(wide: bool, count: int) -> tuple[str, ...]:
    return tuple(_slot_head(wide, low, high) for low, high in bounds(count))


_HEADS = {wide: _heads(wide, _SLOTS) for wide in (False, True)}
_BARS = {n: tuple("*" * k + " " * (n - k) for k in range(n + 1)) for n in (STARS, STARS // 2)}
# Every row that counts nothing, one after the other, and where each starts.
_EMPTY_ROWS = {wide: [f"{head}{0:<8} |{_BARS[STARS // 2 if wide else STARS][0]}|\n"
                      for head in heads] for wide, heads in _HEADS.items()}
_EMPTY = {wide: "".join(rows) for wide, rows in _EMPTY_ROWS.items()}
_STARTS = {wide: (0, *accumulate(len(row) for row in rows)) for wide, rows in _EMPTY_ROWS.items()}
_ALL = range(_SLOTS)


def _header(wide: bool, unit: str) -> str:
    return f"{'':{15 if wide else 5}}{unit:<{29 if wide else 19}} : count    distribution\n"


def _table_slowly(slots, unit: str) -> str:
    """The table of any histogram: negative counts, more slots than made in
    advance."""
    idx_max = len(slots) - 1
    while idx_max >= 0 and slots[idx_max] <= 0:
        idx_max -= 1
    if idx_max < 0:
        return ""
    val_max = max(slots)
    wide = idx_max > 32
    stars = STARS // 2 if wide else STARS
    heads, bars = _heads(wide, idx_max + 1), _BARS[stars]
    lines = [_header(wide, unit)]
    lines += [f"{heads[i]}{val:<8} |{bars[max(val, 0) * stars // val_max if val else 0]}|\n"
              for i, val in enumerate(slots[:idx_max + 1])]
    return "".join(lines)


def log2_hist(slots: tuple[int, ...] | list[int], unit: str) -> str:
    """The table for one histogram; empty when every slot is zero."""
    used = list(compress(_ALL, slots))
    if not used:
        return "" if len(slots) <= _SLOTS else _table_slowly(slots, unit)
    last = used[-1]
    if len(slots) > _SLOTS or min(slots) < 0:
        return _table_slowly(slots, unit)
    val_max = max(slots)
    wide = last > 32
    stars = STARS // 2 if wide else STARS
    heads, bars, empty, starts = _HEADS[wide], _BARS[stars], _EMPTY[wide], _STARTS[wide]
    parts = [_header(wide, unit)]
    at = 0
    for i in used:
        if i > at:
            parts.append(empty[starts[at]:starts[i]])
        val = slots[i]
        parts.append(f"{heads[i]}{val:<8} |{bars[val * stars // val_max]}|\n")
        at = i + 1
    return "".join(parts)


def interval(view) -> str:
    """One interval of tcprtt's output (a ``render.interval.View``); each
    distinct histogram's table is made once."""
    out = ["\n"]
    if view.timestamp:
        out.append(view.when.strftime("%H:%M:%S") + "\n")
    label, unit = view.label, view.unit
    extension = view.extension
    tables: dict[tuple, str] = {}
    append = out.append
    for address, _, hist in view.rows:
        slots = hist.slots
        table = tables.get(slots)
        if table is None:
            table = tables[slots] = log2_hist(slots, unit)
        if extension:
            avg = hist.latency // hist.cnt if hist.cnt else 0
            append(f"{label} = {address if address is not None else '******'} [AVG {avg}]\n")
        else:
            append(f"{label} = {address if address is not None else '******'} \n")
        append(table)
    return "".join(out)
