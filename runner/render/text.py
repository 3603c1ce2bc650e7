"""Histograms as text, in the layout of bcc's and libbpf-tools' log2 tables. Pure."""

from __future__ import annotations

STARS = 40


def _stars(val: int, val_max: int, width: int) -> str:
    if val_max <= 0:
        return " " * width
    n = min(val, val_max) * width // val_max
    text = "*" * n + " " * (width - n)
    if val > val_max:
        text = text[:-1] + "+"
    return text


def log2_hist(slots: tuple[int, ...] | list[int], unit: str) -> str:
    """The table for one histogram; empty when every slot is zero."""
    idx_max = max((i for i, v in enumerate(slots) if v > 0), default=-1)
    if idx_max < 0:
        return ""
    val_max = max(slots)
    wide = idx_max > 32
    stars = STARS // 2 if wide else STARS
    width = 20 if wide else 10
    lines = [f"{'':{15 if wide else 5}}{unit:<{29 if wide else 19}} : count    distribution"]
    for i in range(idx_max + 1):
        low, high = (1 << (i + 1)) >> 1, (1 << (i + 1)) - 1
        if low == high:
            low -= 1
        val = slots[i]
        bar = _stars(val, val_max, stars)
        lines.append(f"{low:>{width}} -> {high:<{width}} : {val:<8} |{bar}|")
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
