"""tcprtt's attach variants, as config.json lists them, and the one chooser
that every backend uses.

config.json's ``variants`` are in ``--attach auto``'s order; each names its
attach section (and the section prefixes that mark a package as that
variant), the check in ``runner.features`` that tells whether this kernel
offers what it needs, and whether its object is specific to an architecture.
Nothing else in the runner lists the variants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Callable, Protocol

from ..config import probe_config
from ..errors import KernelError, TcprttError

if TYPE_CHECKING:
    from ..package import Package

AUTO = "auto"


@dataclass(frozen=True)
class Variant:
    name: str
    define: str            # the -D that builds the probe's entry point
    attach: str            # the program's section
    sections: tuple[str, ...]  # section prefixes that mark a package as this variant
    check: str             # the runner.features check for what it needs
    arch_specific: bool    # its object differs per architecture


@lru_cache(maxsize=1)
def table() -> tuple[Variant, ...]:
    """Every variant, in ``--attach auto``'s order."""
    out = []
    for name, spec in probe_config()["variants"].items():
        out.append(Variant(name=name, define=spec["define"], attach=spec["attach"],
                           sections=tuple(spec["sections"]), check=spec["check"],
                           arch_specific=bool(spec["arch_specific"])))
    return tuple(out)


def names() -> tuple[str, ...]:
    """The variants' names, in ``--attach auto``'s order."""
    return tuple(v.name for v in table())


def attach_choices() -> tuple[str, ...]:
    """What ``--attach`` takes."""
    return (AUTO, *names())


def get(name: str) -> Variant:
    for v in table():
        if v.name == name:
            return v
    raise KeyError(name)


def of_section(section: str) -> str | None:
    """The variant whose programs attach at ``section``, if any."""
    for v in table():
        if section.startswith(v.sections):
            return v.name
    return None


def of_document(doc: object) -> str | None:
    """The variant of a package document (package.json, decoded): what its
    packer wrote in ``meta.tcprtt``, else what its first program's section
    says; None for a package that is none of tcprtt's variants. The
    document may come from anywhere: nothing in it is trusted to have a
    shape."""
    meta = doc.get("meta") if isinstance(doc, dict) else None
    if not isinstance(meta, dict):
        return None
    own = meta.get("tcprtt")
    if isinstance(own, dict) and isinstance(own.get("variant"), str) and \
            own["variant"] in names():
        return own["variant"]
    skel = meta.get("bpf_skel")
    progs = skel.get("progs") if isinstance(skel, dict) else None
    if isinstance(progs, list) and progs and isinstance(progs[0], dict) and \
            isinstance(progs[0].get("attach"), str):
        return of_section(progs[0]["attach"])
    return None


def variant_of(package: Package) -> str:
    """The variant of a tcprtt package, or an error naming the package."""
    found = package.variant
    if found is None:
        raise TcprttError(f"{package.source}: cannot tell the attach variant of "
                          f"{package.progs[0]['attach']!r}")
    return found


def check(variant: str, mount: bool = True) -> str | None:
    """None when this kernel seems to offer what ``variant`` needs, else why not."""
    from .. import features
    try:
        name = get(variant).check
    except KeyError:
        return f"unknown attach variant {variant!r}"
    return features.run_check(name, mount)


class Tracer(Protocol):
    variant: str

    def close(self) -> None: ...


@dataclass
class Attempt:
    variant: str
    reason: str
    log: str = ""  # the whole verifier log and libbpf's messages, when there were any


@dataclass
class Choice:
    tracer: Tracer
    tried: list[Attempt] = field(default_factory=list)


# A feature check that fails is the kernel's lack, as a refused load of that kind is.
UNSUPPORTED = "not supported by this kernel"


def _reason(exc: KernelError) -> str:
    """One attempt's failure as -v and the final error show it: what kind
    of failure, and where the whole log went when it was written out."""
    text = str(exc)
    kind = getattr(exc, "kind", "failed")
    if kind != "failed" and kind not in text:  # the loader's message may say it already
        text = f"{kind}: {text}"
    log_path = getattr(exc, "log_path", None)
    if log_path and log_path not in text:
        text += f" (log in {log_path})"
    return text


def choose(packages: dict[str, Package], values: dict[str, object], wanted: str,
           max_keys: int | None = None, order: tuple[str, ...] | None = None, *,
           load: Callable[[Package, str], Tracer] | None = None) -> Choice:
    """Load the first variant that works; ``wanted`` is "auto" or one variant.

    ``load(package, variant)`` loads and attaches one package; by default
    through libbpf with ``values`` and ``max_keys``, and the ecli backend
    passes its own. A variant whose check fails is not loaded; one that the
    kernel refuses (a KernelError: not supported, or refused by the
    verifier) is reported and the next is tried."""
    if load is None:
        from ..tracer import LibbpfTracer

        def load(pkg: Package, variant: str) -> Tracer:
            return LibbpfTracer(pkg, values, variant, max_keys)
    candidates = (order or names()) if wanted == AUTO else (wanted,)
    tried: list[Attempt] = []
    for variant in candidates:
        if variant not in packages:
            given = ", ".join(sorted(packages)) or "none"
            tried.append(Attempt(variant, f"no package of this variant to load ({given} only)"))
            continue
        reason = check(variant)
        if reason is not None:
            tried.append(Attempt(variant, f"{UNSUPPORTED}: {reason}"))
            continue
        try:
            return Choice(load(packages[variant], variant), tried)
        except KernelError as exc:
            tried.append(Attempt(variant, _reason(exc), getattr(exc, "log", "") or ""))
    detail = "; ".join(f"{a.variant}: {a.reason}" for a in tried)
    if wanted == AUTO:
        failure = TcprttError(f"no attach variant works on this kernel ({detail})")
    else:
        failure = TcprttError(f"--attach {wanted} is not available ({detail})")
    failure.tried = tried  # type: ignore[attr-defined]  # -v shows each attempt's log
    raise failure
