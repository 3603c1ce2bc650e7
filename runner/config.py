"""The probe's description, ``probe/config.json``: one source for every setting.

The packer reads it to describe the package; the command line reads it for
its flags, help and validation schema. In a checkout it is read from
``probe/``; an installed runner carries a copy inside the package.
"""

from __future__ import annotations

import json
import platform
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHECKOUT_CONFIG = REPO / "probe" / "config.json"
# `uname -m` spelling -> the architecture name of the packages' directories
CANONICAL_ARCH = {"x86_64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


def host_arch() -> str:
    return CANONICAL_ARCH.get(platform.machine(), platform.machine())


@lru_cache(maxsize=1)
def probe_config() -> dict:
    if CHECKOUT_CONFIG.is_file():
        return json.loads(CHECKOUT_CONFIG.read_text())
    from importlib import resources  # an installed runner only
    return json.loads(resources.files(__package__).joinpath("packages/config.json").read_text())
