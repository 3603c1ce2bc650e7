"""Whether this process may load and attach BPF programs."""

from __future__ import annotations

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


def effective(status: str | None = None) -> int:
    if status is None:
        with open("/proc/self/status") as f:
            status = f.read()
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def missing(caps: int | None = None) -> list[str]:
    """The capabilities tcprtt lacks to trace: empty when it can."""
    caps = effective() if caps is None else caps
    if caps & (1 << CAP_SYS_ADMIN):
        return []
    return [name for bit, name in ((CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON"))
            if not caps & (1 << bit)]
