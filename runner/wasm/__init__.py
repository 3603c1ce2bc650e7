"""The wasm-bpf host: run a WebAssembly module that loads its own BPF
objects through the ``wasm_bpf`` imports, as eunomia's ``ecli`` does.

Importing this package is cheap; wasmtime is imported only when a module runs.
"""

from __future__ import annotations

from typing import TextIO

WASM_MAGIC = b"\0asm"


def looks_like_wasm(path: str) -> bool:
    """True for a ``.wasm`` name or a file that starts with the wasm magic."""
    if path.endswith(".wasm"):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(4) == WASM_MAGIC
    except OSError:
        return False


def run_module(data: bytes, argv: list[str], source: str, *, err: TextIO | None = None,
               verbose: bool = False) -> int:
    """Run the module ``data`` with ``argv`` (its arguments, without its own
    name) and return its exit status: its proc_exit code, 0 when it returns
    or a signal stopped it, 130 when a signal came before it started.
    A file that is not a valid module raises PackageError; a trap raises
    TcprttError; both carry one line naming ``source``."""
    from .runtime import run
    return run(data, argv, source, err=err, verbose=verbose)


def run_file(path: str, argv: list[str], *, err: TextIO | None = None,
             verbose: bool = False) -> int:
    """``run_module`` for a file on disk."""
    from ..errors import PackageError
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise PackageError(f"{path}: {exc.strerror}") from None
    return run_module(data, argv, path, err=err, verbose=verbose)
