"""Where a package's programs attach, checked before anything loads.

ecli attaches every program with libbpf's auto-attach and handles XDP, tc
and perf-event programs by hand (``skeleton/preload``), on interface 1 when
the package names none. The runner attaches what libbpf can attach by
itself; XDP programs through a link, which the kernel removes with the last
descriptor; and tc programs as filters that a guard process removes however
the runner ends (``tc``). It refuses, with the reason and before loading
anything, the programs it could only attach by guessing a target: XDP
without an ``ifindex``, tc without a ``tchook`` naming one, uprobes and USDT
probes whose section names no binary; and perf-event programs and whatever
else libbpf cannot attach on its own. Pure: no kernel.
"""

from __future__ import annotations

from ..errors import PackageError
from .tc import ATTACH_POINTS, Target

# Sections libbpf attaches by itself (bpf_program__attach), by prefix.
AUTO_ATTACH = ("fentry/", "fexit/", "fentry.s/", "fexit.s/", "fmod_ret/", "fmod_ret.s/",
               "kprobe/", "kretprobe/", "ksyscall/", "kretsyscall/", "kprobe.multi/",
               "kretprobe.multi/", "tp/", "tracepoint/", "raw_tp/", "raw_tracepoint/",
               "raw_tp.w/", "raw_tracepoint.w/", "tp_btf/", "lsm/", "lsm.s/")
UPROBES = ("uprobe/", "uretprobe/", "uprobe.s/", "uretprobe.s/", "usdt/")
XDP = ("xdp", "xdp.frags")
TC = ("tc", "classifier", "action")


def plan(package) -> dict[str, int | Target | None]:
    """Program name -> the interface index an XDP program attaches to, the
    Target of a tc program, or None for one libbpf attaches by itself;
    PackageError for the first program the runner refuses, naming it and why."""
    out: dict[str, int | Target | None] = {}
    for prog in package.progs:
        name, section = prog["name"], prog["attach"]
        out[name] = _check(package.source, prog, name, section)
    return out


def _check(source: str, prog: dict, name: str, section: str) -> int | Target | None:
    where = f"{source}: program {name!r} ({section})"
    base = section.split("/", 1)[0]
    if base in XDP:
        ifindex = prog.get("ifindex")
        if type(ifindex) is not int or ifindex <= 0:
            raise PackageError(f"{where} is an XDP program and the package names no "
                               "interface to attach it to (no \"ifindex\" in its metadata)")
        return ifindex
    if base in TC:
        return _tc_target(where, prog)
    if section.startswith(UPROBES) or base in ("uprobe", "uretprobe", "usdt", "uprobe.s",
                                               "uretprobe.s"):
        target = section.split("/", 1)[1] if "/" in section else ""
        binary = target.split(":", 1)[0] if ":" in target else ""
        if not binary:
            kind = "a USDT probe" if base == "usdt" else "a uprobe"
            raise PackageError(f"{where} is {kind} whose section names no binary "
                               "(libbpf needs SEC(\"uprobe/BINARY:FUNCTION\") to attach it)")
        return None
    if base == "perf_event":
        raise PackageError(f"{where} is a perf-event program, which the runner does not "
                           "attach (it needs an event and a CPU chosen for it)")
    if not section.startswith(AUTO_ATTACH):
        raise PackageError(f"{where}: the runner cannot attach programs of this kind "
                           "(only tracing programs that libbpf attaches by itself, XDP "
                           "with an interface, and uprobes with a binary)")
    return None


def _tc_target(where: str, prog: dict) -> Target:
    """ecli's ``tchook`` and ``tcopts``; the interface must be named."""
    hook = prog.get("tchook")
    ifindex = hook.get("ifindex") if isinstance(hook, dict) else None
    if type(ifindex) is not int or ifindex <= 0:
        raise PackageError(f"{where} is a tc program and the package names no interface "
                           "to attach it to (no \"tchook\": {\"ifindex\": N} in its metadata)")
    point = hook.get("attach_point", "BPF_TC_INGRESS")
    if point not in ATTACH_POINTS:
        raise PackageError(f"{where}: tc attach point {point!r} is not one the runner "
                           f"attaches to ({', '.join(ATTACH_POINTS)})")
    opts = prog.get("tcopts") if isinstance(prog.get("tcopts"), dict) else {}
    handle, priority = opts.get("handle", 1), opts.get("priority", 1)
    for what, value in (("handle", handle), ("priority", priority)):
        if type(value) is not int or not 0 < value < (1 << 16 if what == "priority" else 1 << 32):
            raise PackageError(f"{where}: tc {what} {value!r} is out of range")
    return Target(ifindex, ATTACH_POINTS[point], handle, priority)
