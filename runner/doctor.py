"""``tcprtt doctor``: what this machine offers tcprtt, for a bug report or before a run."""

from __future__ import annotations

import os
import platform
import shutil
import sys

from . import capabilities, features

CAPS = (("CAP_SYS_ADMIN", capabilities.CAP_SYS_ADMIN), ("CAP_BPF", capabilities.CAP_BPF),
        ("CAP_PERFMON", capabilities.CAP_PERFMON), ("CAP_NET_ADMIN", 12))


def report() -> dict:
    """Every fact as plain data; ``text()`` renders it."""
    btf = features.VMLINUX_BTF
    try:
        from .loader import libbpf
        lib: str | None = libbpf.load_library().version
        lib_error = None
    except Exception as exc:  # the report must come out whatever is broken
        lib, lib_error = None, str(exc)
    variants = {}
    kernel_says: dict[str, dict] = {}
    can_load = lib is not None and not capabilities.missing()
    from .tcprtt import variants as table
    for variant in table.names():
        if lib is None and table.get(variant).check == "tracing_function":  # asks libbpf
            variants[variant] = f"unknown: {lib_error}"
            continue
        reason = features.check(variant, mount=False)  # a report mounts nothing
        variants[variant] = "supported" if reason is None else f"not supported: {reason}"
        if can_load:
            kernel_says[variant] = _load(variant, reason)
            variants[variant] = kernel_says[variant].pop("status")
    caps = capabilities.effective()
    tracefs = features.tracefs()
    denied = None if tracefs else features.tracefs_denied()
    from .config import host_arch
    return {
        "kernel": platform.release(),
        "arch": host_arch(),
        "btf": {"path": str(btf), "present": btf.exists(),
                "size": btf.stat().st_size if btf.exists() else None},
        "libbpf": lib or f"missing: {lib_error}",
        "tracefs": str(tracefs) if tracefs else None,
        "tracefs_unreadable": str(denied) if denied else None,
        "variants": variants,
        "kernel_says": kernel_says,
        "capabilities": {name: bool(caps & (1 << bit)) for name, bit in CAPS},
        "can_trace": not capabilities.missing(caps),
        "ecli": shutil.which("ecli"),
        "python": sys.version.split()[0],
        "bpf_stats_enabled": _read("/proc/sys/kernel/bpf_stats_enabled"),
        "euid": os.geteuid(),
    }


def _load(variant: str, reason: str | None) -> dict:
    """The kernel's own word on a shipped variant: loaded, and attached for a
    moment (unless that would mount tracefs), then closed. ``class`` is what
    a failure was (KernelUnsupported, VerifierRefused or KernelError), as
    the variant chooser meets it; ``log`` the file with its whole log."""
    from .config import host_arch
    from .errors import KernelError, TcprttError
    from .loader.probe import TRACEPOINT_SECTIONS, LoadedProbe
    from .package import load, shipped
    try:
        pkg = load(shipped(variant, host_arch()))
    except (OSError, TcprttError) as exc:
        return {"status": "supported" if reason is None else f"not supported: {reason}",
                "class": None, "log": None, "checked": f"not loaded: {exc}"}
    checked = "load failed"
    try:
        with LoadedProbe(pkg) as loaded:
            checked = "loaded"
            if features.tracefs() is not None or not any(
                    section.startswith(TRACEPOINT_SECTIONS) for _, _, section in loaded.programs()):
                checked = "loaded, attach failed"
                loaded.attach()
                checked = "loaded and attached"
    except KernelError as exc:
        said = str(exc)
        for word in ("verifier", "libbpf"):  # the log is named on its own line
            said = said.removesuffix(f" ({word} log: {exc.log_path})")
        if type(exc) is KernelError:  # neither class: the check's word, if any, stands
            status = f"not supported: {reason}" if reason else f"failed: {said}"
        else:
            detail = reason or said
            status = f"{exc.kind}: {detail}" if exc.kind not in detail else detail
        return {"status": status, "class": type(exc).__name__, "log": exc.log_path,
                "checked": checked}
    if reason is None:
        return {"status": "supported", "class": "supported", "log": None, "checked": checked}
    if checked == "loaded":  # not attached: the check's word stands
        return {"status": f"not supported: {reason}", "class": None, "log": None,
                "checked": checked}
    return {"status": f"supported by the kernel (loaded and attached), but {reason}",
            "class": "supported", "log": None, "checked": checked}


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def text(facts: dict) -> str:
    held = [n for n, on in facts["capabilities"].items() if on]
    lines = [
        f"kernel:        {facts['kernel']} ({facts['arch']})",
        f"BTF:           {facts['btf']['path']} "
        + (f"({facts['btf']['size']} bytes)" if facts["btf"]["present"] else "MISSING"),
        f"libbpf:        {facts['libbpf']}",
        f"tracefs:       {_tracefs_line(facts)}",
        f"capabilities:  {', '.join(held) if held else 'none'}"
        + ("" if facts["can_trace"] else " (tracing needs CAP_BPF and CAP_PERFMON, or root)"),
        f"ecli:          {facts['ecli'] or 'not found'}",
        f"python:        {facts['python']}",
        "attach variants (in the order --attach auto tries them):",
    ]
    for variant, status in facts["variants"].items():
        lines.append(f"  {variant:<11} {status}")
        log = facts.get("kernel_says", {}).get(variant, {}).get("log")
        if log:
            lines.append(f"  {'':<11} (whole log: {log})")
    if facts["euid"] != 0:
        lines.append(f"user:          uid {facts['euid']}, not root:")
        lines += NON_ROOT
    return "\n".join(lines) + "\n"


# What a user other than root needs, for doctor (the README says the same).
NON_ROOT = (
    "  tracing needs CAP_BPF and CAP_PERFMON, e.g. through setpriv --inh-caps=+bpf,+perfmon",
    "  --ambient-caps=+bpf,+perfmon, or a file capability; with them the fentry and raw_tp",
    "  variants run. The tracepoint variant also reads tracefs, root's alone (mode 0700)",
    "  unless mounted otherwise. With both capabilities held, the sysctls",
    "  kernel.unprivileged_bpf_disabled and kernel.perf_event_paranoid do not matter.",
)


def _tracefs_line(facts: dict) -> str:
    if facts["tracefs"]:
        return facts["tracefs"]
    if facts.get("tracefs_unreadable"):
        return (f"{facts['tracefs_unreadable']} (not readable by this user: only the "
                "tracepoint variant needs it)")
    return "not mounted"
