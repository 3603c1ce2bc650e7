"""Where the tcprtt command used to live, kept for those who import it.

The command is ``runner.cli`` (one module per command, ``runner.cli.main``
dispatching) over ``runner.session``. The names below are looked up there
when first used, so importing this module for ``VERSION`` (pyproject.toml
does) loads nothing else.
"""

from __future__ import annotations

import importlib

VERSION = "0.1.0"  # pyproject.toml reads it from here; --version prints it

_MOVED = {
    "runner.cli.main": ("main", "COMMANDS", "SUBCOMMANDS", "OutputError"),
    "runner.cli.trace": ("trace", "BANNER"),
    "runner.render.interval": ("render_interval",),
    "runner.cli.run": ("run_package", "MIN_INTERVAL"),
    "runner.cli.registry": ("push_command", "pull_command"),
    "runner.cli.doctor": ("doctor_command",),
    "runner.session": ("Signals", "Interrupted", "INTERRUPTED", "STOP_SIGNALS", "trace_loop",
                       "require_capabilities", "image_packages", "load_as", "check_arch",
                       "tcprtt_packages", "module_flags", "REGISTRY_FLAGS"),
}
_WHERE = {name: module for module, names in _MOVED.items() for name in names}

__all__ = ["VERSION", *_WHERE]


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
