"""Histograms as text, in the layout of bcc's and libbpf-tools' log2 tables. Pure."""

from __future__ import annotations

STARS = 40


def _slot_head(wide: bool, i: int) -> str:
    """The fixed start of slot i's line: its range and the colon."""
    width = 20 if wide else 10
    low, high = (1 << (i + 1)) >> 1, (1 << (i + 1)) - 1
    if low == high:
        low -= 1
    return f"{low:>{width}} -> {high:<{width}} : "


# Formatted once: a keyed interval may print thousands of tables.
_HEADS = {wide: tuple(_slot_head(wide, i) for i in range(64)) for wide in (False, True)}
_BARS = {n: tuple("*" * k + " " * (n - k) for k in range(n + 1)) for n in (STARS, STARS // 2)}
# Most rows of a table count nothing: those lines are the same every time.
_EMPTY = {wide: tuple(f"{head}{0:<8} |{_BARS[STARS // 2 if wide else STARS][0]}|"
                      for head in heads) for wide, heads in _HEADS.items()}


def log2_hist(slots: tuple[int, ...] | list[int], unit: str) -> str:
    """The table for one histogram; empty when every slot is zero."""
    idx_max = len(slots) - 1
    while idx_max >= 0 and slots[idx_max] <= 0:
        idx_max -= 1
    if idx_max < 0:
        return ""
    val_max = max(slots)
    wide = idx_max > 32
    stars = STARS // 2 if wide else STARS
    heads, bars, empty = _HEADS[wide], _BARS[stars], _EMPTY[wide]
    if idx_max >= len(heads):
        heads = tuple(_slot_head(wide, i) for i in range(idx_max + 1))
        empty = tuple(f"{head}{0:<8} |{bars[0]}|" for head in heads)
    lines = [f"{'':{15 if wide else 5}}{unit:<{29 if wide else 19}} : count    distribution"]
    lines += [empty[i] if val == 0 else
              f"{heads[i]}{val:<8} |{bars[max(val, 0) * stars // val_max]}|"
              for i, val in enumerate(slots[:idx_max + 1])]
    return "\n".join(lines) + "\n"


def tcprtt_section(label: str, address: str | None, average: int | None, slots, unit: str) -> str:
    """One key's histogram under bcc's tcprtt heading."""
    head = f"{label} = {address if address is not None else '******'} "
    if average is not None:
        head += f"[AVG {average}]"
    return head + "\n" + log2_hist(slots, unit)


def ecli_section(key: object, members: list[tuple[str, object]], slots, unit: str) -> str:
    """One key's histogram as ecli prints a log2_hist sample map."""
    import json

    lines = [f"key = {json.dumps(key, separators=(',', ':'))}"]
    lines += [f"{name} = {value}" for name, value in members]
    return "\n".join(lines) + "\n" + log2_hist(slots, unit)
