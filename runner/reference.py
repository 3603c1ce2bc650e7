"""OCI references: ``[REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST]``. Pure.

Everything the parser accepts is something the HTTP client can use: a
registry is a DNS name, an IPv4 address or a bracketed IPv6 address, with an
optional port from 1 to 65535; the repository is at most 255 characters;
nothing may end in a newline (``$`` is not used to anchor)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from .errors import UsageError

DEFAULT_REGISTRY = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
MAX_REPOSITORY = 255   # the distribution spec's limit on a name
MAX_HOST = 253         # a DNS name
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def host(self) -> str:
        """The registry's host without its port (an IPv6 address without brackets)."""
        return split_host(self.registry)[0]

    @property
    def target(self) -> str:
        """What the manifests endpoint is asked for: the digest if pinned."""
        return self.digest or self.tag or "latest"

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_host(registry: str) -> tuple[str, int | None]:
    """(host, port) of a registry name that ``check_registry`` accepted."""
    if registry.startswith("["):
        end = registry.index("]")
        host, rest = registry[1:end], registry[end + 1:]
        return host, int(rest[1:]) if rest else None
    host, _, port = registry.partition(":")
    return host, int(port) if port else None


def _quote(text: str, limit: int = 120) -> str:
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}..."


def check_registry(registry: str, text: str) -> None:
    """Raise UsageError unless ``registry`` is HOST[:PORT] that a URL can carry."""
    def bad(why: str) -> UsageError:
        return UsageError(f"image reference {_quote(text)}: registry {_quote(registry)}: {why}")
    if registry.startswith("["):
        end = registry.find("]")
        if end < 0:
            raise bad("an IPv6 address needs its closing ']'")
        host, rest = registry[1:end], registry[end + 1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"{host!r} is not an IPv6 address") from None
        if rest and not rest.startswith(":"):
            raise bad(f"{rest!r} after the address is not a :PORT")
        port = rest[1:] if rest else None
    else:
        host, colon, port_text = registry.partition(":")
        port = port_text if colon else None
        if not host:
            raise bad("no host")
        if len(host) > MAX_HOST:
            raise bad(f"the host name is over {MAX_HOST} characters")
        for label in host.split("."):
            if not label:
                raise bad("an empty label in the host name")
            if len(label) > 63:
                raise bad(f"a host name label of {len(label)} characters (at most 63)")
            if not _LABEL.fullmatch(label):
                raise bad(f"{label!r} is not a host name label")
    if port is not None:
        if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
            raise bad(f"port {port!r} is not a number from 1 to 65535")


def parse(text: str) -> Reference:
    """Parse a reference; raise UsageError naming what is wrong."""
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise UsageError(f"image reference {_quote(text)}: {_quote(digest)} is not a "
                             "sha256 digest")
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    bracket = rest.rfind("]")
    if colon > slash and colon > bracket:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise UsageError(f"image reference {_quote(text)}: {_quote(tag)} is not a valid tag")
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first.startswith("[")
                      or first == "localhost"):
        registry, repository = first, remainder
        check_registry(registry, text)
    else:
        registry, repository = DEFAULT_REGISTRY, rest
        if "/" not in repository:
            repository = f"library/{repository}"
    if len(repository) > MAX_REPOSITORY:
        raise UsageError(f"image reference {_quote(text)}: the repository is "
                         f"{len(repository)} characters, over {MAX_REPOSITORY}")
    if not _REPO.fullmatch(repository):
        raise UsageError(f"image reference {_quote(text)}: {_quote(repository)} is not a valid "
                         "repository")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, repository, tag, digest)
