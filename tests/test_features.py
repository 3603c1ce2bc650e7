"""Kernel feature checks, and tracefs mounted by whoever attaches a tracepoint."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from runner import features, package
from runner.build import host_arch
from runner.errors import KernelError
from runner.loader.probe import LoadedProbe

from .conftest import REPO, runner_env


def _trace_mounts() -> list[str]:
    """This mount namespace's tracefs and debugfs mounts, as mountinfo has them."""
    with open("/proc/self/mountinfo") as f:
        return sorted(line for line in f if " - tracefs " in line or " - debugfs " in line)


# Run in a private mount namespace: take every tracefs and debugfs mount away
# there (debugfs too: libbpf looks in debugfs's tracing when debugfs is
# mounted, and that directory mounts tracefs of itself), then attach.
CHILD = r"""
import ctypes, os, subprocess, sys

MNT_DETACH = 2
libc = ctypes.CDLL(None, use_errno=True)

def trace_mounts():
    with open("/proc/self/mountinfo") as f:
        rows = [line.split() for line in f]
    return [r[4] for r in rows if r[r.index("-") + 1] in ("tracefs", "debugfs")]

for _ in range(20):
    points = trace_mounts()
    if not points:
        break
    for point in sorted(points, key=len, reverse=True):
        if libc.umount2(point.encode(), MNT_DETACH) != 0:
            sys.exit(f"umount {point}: {os.strerror(ctypes.get_errno())}")
for path in ("/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"):
    if os.path.exists(path):
        sys.exit(f"{path} is still there")
print("unmounted", flush=True)

how = sys.argv[1]
if how == "loader":
    from runner import package
    from runner.build import host_arch
    from runner.tracer import LibbpfTracer
    pkg = package.load(package.shipped("tracepoint", host_arch()))
    with LibbpfTracer(pkg, {}, "tracepoint") as tracer:
        assert len(tracer.probe.program_ids()) == 1
else:
    proc = subprocess.run([sys.executable, "-m", "runner", "--attach", "tracepoint",
                           "-d", "1"], capture_output=True, text=True, timeout=60)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"tcprtt exited {proc.returncode}")
print("attached", flush=True)
print("tracefs" if any(p == "/sys/kernel/tracing" for p in trace_mounts()) else "none")
"""


@pytest.mark.parametrize("how", ["loader", "cli"])
def test_attaching_a_tracepoint_mounts_tracefs_where_none_is(root, how):
    """Whichever way it is reached (the loader directly, or --attach
    tracepoint), attaching the tracepoint variant mounts tracefs itself."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare(1) for a private mount namespace")
    host = _trace_mounts()
    try:
        proc = subprocess.run([unshare, "--mount", "--propagation", "private",
                               sys.executable, "-c", CHILD, how],
                              cwd=REPO, env=runner_env(), capture_output=True, text=True,
                              timeout=90)
    finally:
        assert _trace_mounts() == host, "the machine's own mounts are untouched"
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert proc.stdout.split() == ["unmounted", "attached", "tracefs"], proc.stdout


def test_a_tracefs_that_cannot_be_mounted_is_one_clear_line(root, tmp_path, monkeypatch):
    nowhere = (tmp_path / "no-tracing", tmp_path / "no-debug-tracing")
    monkeypatch.setattr(features, "TRACEFS", nowhere)
    pkg = package.load(package.shipped("tracepoint", host_arch()))
    with LoadedProbe(pkg) as probe:
        with pytest.raises(KernelError) as info:
            probe.attach()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cannot attach rtt_tp to tracepoint/tcp/tcp_probe: "
                              f"tracefs is not mounted and mounting it at {nowhere[0]} "
                              "failed: No such file or directory"), message
    assert features.check("tracepoint") == "tracefs is not mounted and could not be mounted"


def test_tracefs_is_found_where_it_is_mounted(tmp_path, monkeypatch):
    (tmp_path / "b" / "events").mkdir(parents=True)
    monkeypatch.setattr(features, "TRACEFS", (tmp_path / "a", tmp_path / "b"))
    assert features.tracefs() == tmp_path / "b"
    assert features.ensure_tracefs() == tmp_path / "b"


def test_every_variant_names_a_check_that_exists():
    from runner.tcprtt import variants
    for v in variants.table():
        assert v.check in features.CHECKS, v
    assert features.run_check("no_such_check") == "unknown feature check 'no_such_check'"
    assert features.check("no_such_variant") == "unknown attach variant 'no_such_variant'"


def test_the_btf_typed_tracepoint_is_checked_in_the_kernels_btf(tmp_path, monkeypatch):
    """tp_btf needs the tracepoint's prototype in BTF, btf_trace_tcp_probe,
    and no tracefs; the real BTF has it, a BTF without it or none fails."""
    assert features.check("tp_btf") is None
    monkeypatch.setattr(features, "TRACEFS", (tmp_path / "none",))
    assert features.check("tp_btf") is None
    btf = tmp_path / "vmlinux"
    btf.write_bytes(b"\0struct sock\0btf_trace_tcp_retransmit_skb\0")
    monkeypatch.setattr(features, "VMLINUX_BTF", btf)
    assert features.check("tp_btf") == ("the kernel's BTF has no btf_trace_tcp_probe "
                                        "(Linux 5.5 or newer has it)")
    monkeypatch.setattr(features, "VMLINUX_BTF", tmp_path / "absent")
    assert features.check("tp_btf") == f"no kernel BTF at {tmp_path / 'absent'}"
