"""``tcprtt push`` and ``tcprtt pull``: a release to and from an OCI registry."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from .. import options, reference, registry
from ..config import host_arch
from ..errors import UsageError
from ..package import SHIPPED
from ..session import registry_client


def push_command(argv: list[str], out: TextIO, err: TextIO) -> int:
    """Publish the built packages and the wasm module under one reference."""
    parser = options.Parser(prog="tcprtt push",
                            description="Publish the built tcprtt packages to an OCI registry.")
    parser.add_argument("reference", help="REGISTRY/NAMESPACE/tcprtt:TAG")
    parser.add_argument("--from", dest="source", metavar="DIR", default=None,
                        help="directory with ARCH/*.json packages and tcprtt.wasm "
                             "(default: the shipped ones)")
    parser.add_argument("--module", metavar="FILE", default=None,
                        help="the wasm module to publish (default: tcprtt.wasm in that directory)")
    parser.add_argument("--no-module", dest="no_module", action="store_true",
                        help="publish the packages alone, without the wasm module")
    options.add_registry_flags(parser)
    parser.add_argument("--traceback", action="store_true", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    ref = reference.parse(ns.reference)
    source = Path(ns.source) if ns.source else SHIPPED
    if ns.module is not None and ns.no_module:
        raise UsageError("--module and --no-module cannot be used together")
    packages = registry.release_packages(source)
    module = None if ns.no_module else \
        registry.release_module(Path(ns.module) if ns.module else source / "tcprtt.wasm")
    digest = registry.push(registry_client(ref, options.registry_options(ns)), packages, module)
    print(f"{ref.registry}/{ref.repository}@{digest}", file=out)
    return 0


def pull_command(argv: list[str], out: TextIO, err: TextIO) -> int:
    """Fetch a reference into the cache and print its digest, packages and module."""
    parser = options.Parser(prog="tcprtt pull", description="Fetch tcprtt into the local cache.")
    parser.add_argument("reference", help="REGISTRY/NAMESPACE/tcprtt:TAG or @sha256:DIGEST")
    options.add_registry_flags(parser)
    parser.add_argument("--traceback", action="store_true", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    ref = reference.parse(ns.reference)
    pulled = registry.pull(registry_client(ref, options.registry_options(ns)), registry.Cache(),
                           host_arch(), module=True)
    print(f"{ref.registry}/{ref.repository}@{pulled.digest}", file=out)
    for variant, path in sorted(pulled.packages.items()):
        print(f"  {variant}: {path}", file=out)
    if pulled.module is not None:
        print(f"  {registry.MODULE_VARIANT}: {pulled.module}", file=out)
    return 0
