"""The wheel that pip builds from the checkout carries everything an
installed tcprtt runs from: every runner package, the shipped probe
packages, tcprtt.wasm and the licence."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from .conftest import REPO


def test_the_wheel_carries_the_shipped_packages_the_module_and_every_runner_package(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "-q", "-w", str(tmp_path), str(REPO)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel, = tmp_path.glob("tcprtt-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {str(p.relative_to(REPO)) for p in (REPO / "runner" / "packages").rglob("*")
               if p.is_file() and p.suffix in (".json", ".wasm")}
    assert "runner/packages/tcprtt.wasm" in shipped
    assert shipped <= names, sorted(shipped - names)
    modules = {str(p.relative_to(REPO)) for p in (REPO / "runner").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    assert any(n.endswith("LICENSE") for n in names)
