"""Where a package's programs attach, checked before anything loads.

ecli attaches every program with libbpf's auto-attach and handles XDP, tc
and perf-event programs by hand (``skeleton/preload``). The runner attaches
what libbpf can attach by itself, and XDP programs through a link, which the
kernel removes with the last descriptor: no program stays attached after the
runner exits, however it ends. It refuses, with the reason and before
loading anything, the programs it could only attach by guessing a target or
by leaving something behind: XDP without an interface, tc programs (a tc
filter outlives a killed process), uprobes and USDT probes whose section
names no binary, perf-event programs, and whatever else libbpf cannot
attach on its own. Pure: no kernel.
"""

from __future__ import annotations

from ..errors import PackageError

# Sections libbpf attaches by itself (bpf_program__attach), by prefix.
AUTO_ATTACH = ("fentry/", "fexit/", "fentry.s/", "fexit.s/", "fmod_ret/", "fmod_ret.s/",
               "kprobe/", "kretprobe/", "ksyscall/", "kretsyscall/", "kprobe.multi/",
               "kretprobe.multi/", "tp/", "tracepoint/", "raw_tp/", "raw_tracepoint/",
               "raw_tp.w/", "raw_tracepoint.w/", "tp_btf/", "lsm/", "lsm.s/")
UPROBES = ("uprobe/", "uretprobe/", "uprobe.s/", "uretprobe.s/", "usdt/")
XDP = ("xdp", "xdp.frags")
TC = ("tc", "classifier", "action")


def plan(package) -> dict[str, int | None]:
    """Program name -> the interface index an XDP program attaches to (None
    for one libbpf attaches by itself); PackageError for the first program
    the runner refuses, naming it and why."""
    out: dict[str, int | None] = {}
    for prog in package.progs:
        name, section = prog["name"], prog["attach"]
        out[name] = _check(package.source, prog, name, section)
    return out


def _check(source: str, prog: dict, name: str, section: str) -> int | None:
    where = f"{source}: program {name!r} ({section})"
    base = section.split("/", 1)[0]
    if base in XDP:
        ifindex = prog.get("ifindex")
        if type(ifindex) is not int or ifindex <= 0:
            raise PackageError(f"{where} is an XDP program and the package names no "
                               "interface to attach it to (no \"ifindex\" in its metadata)")
        return ifindex
    if base in TC:
        raise PackageError(f"{where} is a tc program: the runner does not attach tc "
                           "filters, which stay attached when a process is killed")
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
