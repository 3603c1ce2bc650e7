"""What this kernel offers, checked for real, for choosing an attach variant.

Each check answers None (usable, as far as can be told before loading) or
the reason it is not. config.json names each variant's check (``CHECKS``
here); the final word is the kernel's when the variant is loaded and
attached, and the runner reports that answer too.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from .errors import KernelError
from .loader import libbpf

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
TRACEFS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
KPROBE_PMU = Path("/sys/bus/event_source/devices/kprobe/type")
FUNCTION = "tcp_rcv_established"
TRACEPOINT = ("tcp", "tcp_probe")
RAW_TRACEPOINT_TYPE = f"btf_trace_{TRACEPOINT[1]}"


def btf_has_function(name: str, btf: Path | None = None) -> bool:
    """Whether the kernel's BTF names ``name``: fentry needs its prototype."""
    try:
        data = (btf or VMLINUX_BTF).read_bytes()
    except OSError:
        return False
    return b"\0" + name.encode() + b"\0" in data


def _find_tracefs() -> tuple[Path | None, Path | None]:
    """(where tracefs is, None), or (None, the first place this user may not
    look into): tracefs is root's alone by default (mode 0700), so a user
    with CAP_BPF and CAP_PERFMON but not root finds it closed."""
    denied = None
    for path in TRACEFS:
        try:
            if (path / "events").is_dir():
                return path, None
        except PermissionError:
            denied = denied or path
        except OSError:
            continue
    return None, denied


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def tracefs() -> Path | None:
    """Where tracefs is mounted, if this user can read it."""
    return _find_tracefs()[0]


def tracefs_denied() -> Path | None:
    """The tracefs this user may not read, when no readable one exists."""
    return _find_tracefs()[1]


def _denied_reason(path: Path) -> str:
    return (f"tracefs at {path} is not readable by this user (uid {os.geteuid()}); "
            "the tracepoint variant needs root")


def mount_tracefs() -> Path | None:
    """Mount tracefs where the kernel expects it, as perf and bpftool do."""
    try:
        return ensure_tracefs()
    except KernelError:
        return None


def ensure_tracefs() -> Path:
    """Where tracefs is, mounting it at /sys/kernel/tracing if it is nowhere:
    a tracepoint's perf event id is read there. Through mount(2), as a
    machine may have no mount binary; one line says why if it fails."""
    found, denied = _find_tracefs()
    if found is not None:
        return found
    if denied is not None:
        raise KernelError(_denied_reason(denied), errno.EACCES)
    path = TRACEFS[0]
    try:
        libbpf.mount("tracefs", str(path), "tracefs")
    except OSError as exc:
        raise KernelError(f"tracefs is not mounted and mounting it at {path} failed: "
                          f"{exc.strerror}", exc.errno) from None
    found = tracefs()
    if found is None:
        raise KernelError(f"tracefs is mounted at {path} but has no events directory")
    return found


def tracing_function(mount: bool = True) -> str | None:
    """fentry: BPF tracing programs, and the function's prototype in BTF."""
    if not VMLINUX_BTF.exists():
        return f"no kernel BTF at {VMLINUX_BTF}"
    if not btf_has_function(FUNCTION):
        return f"{FUNCTION} is not in the kernel's BTF"
    lib = libbpf.load_library()
    supported = lib.libbpf_probe_bpf_prog_type(libbpf.BPF_PROG_TYPE_TRACING, None)
    if supported == 0:
        return ("the kernel loads no fentry program "
                "(libbpf's probe of the tracing program type fails)")
    if supported < 0:
        return f"probing BPF tracing programs failed: {libbpf.strerror(-supported)}"
    return None


def kprobe(mount: bool = True) -> str | None:
    root = tracefs()
    if _exists(KPROBE_PMU) or (root is not None and _exists(root / "kprobe_events")):
        return None
    return "the kernel has neither the kprobe PMU nor kprobe_events"


def btf_tracepoint(mount: bool = True) -> str | None:
    """A BTF-typed tracepoint (tp_btf): the kernel's BTF has the
    tracepoint's prototype, the type btf_trace_<name> (Linux 5.5 and newer)."""
    if not VMLINUX_BTF.exists():
        return f"no kernel BTF at {VMLINUX_BTF}"
    if btf_has_function(RAW_TRACEPOINT_TYPE):
        return None
    return f"the kernel's BTF has no {RAW_TRACEPOINT_TYPE} (Linux 5.5 or newer has it)"


def raw_tracepoint(mount: bool = True) -> str | None:
    # A raw tracepoint needs no tracefs: the kernel's BTF names each one
    # as the type btf_trace_<name> (Linux 5.5 and newer).
    if btf_has_function(RAW_TRACEPOINT_TYPE):
        return None
    root = tracefs()
    if root is not None and _is_dir(root / "events" / TRACEPOINT[0] / TRACEPOINT[1]):
        return None
    return f"the kernel has no {TRACEPOINT[0]}:{TRACEPOINT[1]} tracepoint"


def tracefs_tracepoint(mount: bool = True) -> str | None:
    """A tracepoint through perf events: its id is read in tracefs, which is
    mounted when it is not (unless ``mount`` is false, as for a report)."""
    root, denied = _find_tracefs()
    if denied is not None:
        return _denied_reason(denied)
    if root is None:
        if not mount:
            return "tracefs is not mounted (tcprtt mounts it when it runs this variant)"
        root = mount_tracefs()
        if root is None:
            return "tracefs is not mounted and could not be mounted"
    if not _is_dir(root / "events" / TRACEPOINT[0] / TRACEPOINT[1]):
        return f"the kernel has no {TRACEPOINT[0]}:{TRACEPOINT[1]} tracepoint"
    return None


# The checks that config.json's variants name.
CHECKS = {"tracing_function": tracing_function, "kprobe": kprobe,
          "btf_tracepoint": btf_tracepoint, "raw_tracepoint": raw_tracepoint,
          "tracefs_tracepoint": tracefs_tracepoint}


def run_check(name: str, mount: bool = True) -> str | None:
    """The check called ``name`` (a key of CHECKS)."""
    if name not in CHECKS:
        return f"unknown feature check {name!r}"
    return CHECKS[name](mount)


def check(variant: str, mount: bool = True) -> str | None:
    """The check of an attach variant, by the variant's name."""
    from .tcprtt import variants
    return variants.check(variant, mount)
