"""The ecli backend: hand a package to eunomia's ``ecli run -j`` and read
the JSON records it prints, in the same shape the libbpf backend produces."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterable
from typing import IO

from ..errors import TcprttError, UsageError
from ..histogram import Hist, key_id
from ..package import Package


def parse_records(lines: Iterable[str]) -> Iterable[Hist]:
    """The histograms in ecli's JSON output, one record per line; other
    lines (ecli's own messages) are skipped."""
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("value"), dict) \
                and "slots" in record["value"] and "key" in record:
            yield Hist.from_record(record)


def setting_flags(package: Package, values: dict[str, object]) -> list[str]:
    """ecli's flags for these settings, named as ecli names them. ecli
    parses numbers and strings only: tcprtt's settings are all numbers or
    switches (an IPv6 filter is two 64-bit halves), so every one passes."""
    flags = []
    for name, value in values.items():
        setting = package.setting(name)
        if setting.type == "bool":
            if value:
                flags.append(f"--{setting.flag}" if setting.default is None
                             else f"--enable-{setting.flag}")
            continue
        if not isinstance(value, int):
            raise UsageError(f"the ecli backend cannot set {name} ({setting.type}); "
                             "use the libbpf backend")
        flags += [f"--{setting.flag}", str(value)]
    return flags


class EcliTracer:
    """An ``ecli run -j`` child process and the latest record per key."""

    def __init__(self, package: Package, path: str, values: dict[str, object],
                 variant: str, ecli: str | None = None):
        self.variant = variant
        exe = ecli or shutil.which("ecli")
        if exe is None:
            raise TcprttError("ecli not found on PATH: install eunomia-bpf's ecli, "
                              "or use --backend libbpf")
        argv = [exe, "run", "-j", path, *setting_flags(package, values)]
        self._latest: dict[str, Hist] = {}
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, args=(self._proc.stdout,),
                                        daemon=True)
        self._reader.start()

    @classmethod
    def for_tcprtt(cls, opts, values: dict[str, object], packages: dict[str, Package]):
        from .. import features
        order = features.ORDER if opts.attach == "auto" else (opts.attach,)
        reasons = []
        for variant in order:
            if variant not in packages:
                continue
            reason = features.check(variant)
            if reason is None:
                pkg = packages[variant]
                return cls(pkg, pkg.source, values, variant)
            reasons.append(f"{variant}: {reason}")
        raise TcprttError(f"no attach variant for ecli ({'; '.join(reasons)})")

    def _read(self, stream: IO[str]) -> None:
        for hist in parse_records(stream):
            with self._lock:
                self._latest[key_id(hist.key)] = hist

    def snapshot(self) -> list[Hist]:
        if self._proc.poll() not in (None, 0):
            raise TcprttError(f"ecli exited with status {self._proc.returncode}")
        with self._lock:
            return list(self._latest.values())

    def dropped(self) -> int:
        return 0  # ecli does not show the drop counter

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)  # ecli detaches on SIGINT
            try:
                self._proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._reader.join(timeout=1)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
