"""The ecli backend: hand a package to eunomia's ``ecli run -j`` and read
the JSON records it prints, in the same shape the libbpf backend produces."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from typing import IO

from ..errors import PackageError, TcprttError, UsageError
from ..histogram import BtfKeys, Hist
from ..package import Package


def parse_records(lines: Iterable[str], keys: BtfKeys) -> Iterable[Hist]:
    """The histograms in ecli's JSON output, one record per line, their JSON
    keys encoded back to raw map keys by ``keys`` (the package's key codec);
    other lines (ecli's own messages) are skipped, and so are records whose
    key does not fit the package's key type."""
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
            try:
                key = keys.encode(record["key"])
            except PackageError:
                continue
            yield Hist.from_value(key, record["value"])


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


def package_file(package: Package) -> tuple[str, str | None]:
    """(the path to hand ecli, a directory to remove afterwards or None).

    ecli takes a file and tells its type by the suffix, so the package goes
    by the file it was read from; one without the .json suffix (a package
    from the registry cache is stored by its digest) goes by a link named
    with it, in a directory of its own."""
    if package.path is None:
        raise TcprttError(f"{package.source}: ecli runs a package file, and this package "
                          "was not read from one; use --backend libbpf")
    path = os.path.abspath(package.path)
    if path.endswith(".json"):
        return path, None
    directory = tempfile.mkdtemp(prefix="tcprtt-ecli-")
    link = os.path.join(directory, f"{package.name}.json")
    os.symlink(path, link)
    return link, directory


class EcliTracer:
    """An ``ecli run -j`` child process and the latest record per key."""

    def __init__(self, package: Package, values: dict[str, object], variant: str,
                 ecli: str | None = None):
        self.variant = variant
        self._keys = BtfKeys(package.btf, package.hists[0].key_type)
        exe = ecli or shutil.which("ecli")
        if exe is None:
            raise TcprttError("ecli not found on PATH: install eunomia-bpf's ecli, "
                              "or use --backend libbpf")
        flags = setting_flags(package, values)
        path, self._directory = package_file(package)
        self._latest: dict[bytes, Hist] = {}
        self._lock = threading.Lock()
        try:
            self._proc = subprocess.Popen([exe, "run", "-j", path, *flags],
                                          stdout=subprocess.PIPE, text=True)
        except BaseException:
            self._remove_directory()
            raise
        self._reader = threading.Thread(target=self._read, args=(self._proc.stdout,),
                                        daemon=True)
        self._reader.start()

    @classmethod
    def loader(cls, values: dict[str, object], ecli: str | None = None):
        """``load(package, variant)`` for the variant chooser."""
        def load(package: Package, variant: str) -> EcliTracer:
            return cls(package, values, variant, ecli)
        return load

    def _remove_directory(self) -> None:
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def _read(self, stream: IO[str]) -> None:
        for hist in parse_records(stream, self._keys):
            with self._lock:
                self._latest[hist.key] = hist

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
        self._remove_directory()
