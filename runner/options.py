"""tcprtt's command line: flags from probe/config.json, validated once
against its JSON Schemas (``runner.jsonsubset``) into a frozen Options
(``runner.tcprtt.settings`` turns them into the probe's settings)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
from dataclasses import dataclass
from typing import TextIO

from .config import probe_config
from .errors import UsageError
from .tcprtt.variants import attach_choices

BACKENDS = ("libbpf", "ecli")
FOREVER = 99999999  # bcc's "no interval": print once, at the end


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, exit 2) instead of exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


def _flags_of(dest: str) -> str:
    for opt in probe_config()["options"]:
        if opt["dest"] == dest:
            return "/".join(opt["flags"][:2])
    return dest


def add_probe_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of bcc's tcprtt, as config.json lists them."""
    for opt in probe_config()["options"]:
        if opt.get("action") == "store_true":
            parser.add_argument(*opt["flags"], dest=opt["dest"], action="store_true",
                                help=opt["help"])
        else:
            parser.add_argument(*opt["flags"], dest=opt["dest"], metavar=opt.get("metavar"),
                                help=opt["help"])


def add_runner_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per key per interval on stdout")
    parser.add_argument("--attach", default="auto", metavar="|".join(attach_choices()),
                        help="attach point (default: auto, the cheapest the kernel offers)")
    parser.add_argument("--backend", default="libbpf", metavar="|".join(BACKENDS),
                        help="load through the system libbpf (default) or hand the package to ecli")
    parser.add_argument("--package", metavar="FILE",
                        help="load this tcprtt package.json instead of the shipped one")
    add_registry_flags(parser)
    parser.add_argument("--prometheus", metavar="[ADDR:]PORT",
                        help="serve /metrics for Prometheus (loopback unless ADDR is given)")
    parser.add_argument("--web-config", dest="web_config", metavar="FILE",
                        help="TLS and basic auth for --prometheus: a web configuration file "
                             "in the Prometheus exporter-toolkit's format")
    parser.add_argument("--image", metavar="REFERENCE",
                        help="pull tcprtt from an OCI registry (or the cache) and run it")
    parser.add_argument("--max-keys", dest="max_keys", metavar="N",
                        help="capacity of the histogram key map (default: the probe's, "
                        f"10240; at most {MAX_KEYS}); each key costs about 220 bytes of "
                        "locked kernel memory (10240 keys: 2.3 MB, the most: 231 MB)")
    parser.add_argument("-v", "--verbose", action="store_true", help="say what is being done")
    parser.add_argument("--traceback", action="store_true", help="show the stack on errors")


def add_registry_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--insecure", action="store_true",
                        help="allow plain HTTP to a registry that is not on loopback")
    parser.add_argument("--ca-file", dest="ca_file", metavar="PEM",
                        help="CA bundle to trust for the registry's TLS certificate")
    parser.add_argument("--username", metavar="USER",
                        help="registry user (also TCPRTT_REGISTRY_USERNAME)")
    parser.add_argument("--password-stdin", dest="password_stdin", action="store_true",
                        help="read the registry password from the first line of standard "
                             "input (or set TCPRTT_REGISTRY_PASSWORD)")
    parser.add_argument("--password", metavar="PASSWORD",
                        help="registry password on the command line, where every user of "
                             "the machine sees it (ps): prefer --password-stdin")


# The most keys a histogram map may hold: more distinct peers than any host
# shows at once, and 231 MB of locked kernel memory (220 bytes a key, measured
# in the map's memlock on Linux 6.18); 16M keys would lock 3.7 GB.
MAX_KEYS = 1 << 20

# An integer on the command line: ASCII decimal digits, nothing else (int()
# also takes spaces around, underscores between, and other scripts' digits).
INTEGER = re.compile(r"-?[0-9]+")


def parse_integer(flag: str, raw: str) -> int:
    if not INTEGER.fullmatch(raw):
        raise UsageError(f"{flag}: {raw!r} is not an integer")
    return int(raw, 10)


def _convert(opt: dict, raw: str):
    """The typed value of one flag, before schema validation."""
    if opt.get("schema", {}).get("type") == "integer":
        return parse_integer(_flags_of(opt["dest"]), raw)
    return raw


def _explain(error, given: dict) -> str:
    """One line for the first error (jsonschema's or jsonsubset's) of ``given``."""
    dest = next((p for p in error.absolute_path), None)
    if dest is None:
        return error.message
    value = given.get(dest)
    if error.validator == "anyOf":
        return f"{_flags_of(dest)}: {value!r} is not an IPv4 or IPv6 address"
    if error.validator == "minimum":
        return f"{_flags_of(dest)}: {value} is below the minimum of {error.validator_value}"
    if error.validator == "maximum":
        return f"{_flags_of(dest)}: {value} is above the maximum of {error.validator_value}"
    return f"{_flags_of(dest)}: {value!r}: {error.message}"


def validate(given: dict) -> None:
    """Check the probe's options against config.json; raise UsageError naming the value."""
    from .jsonsubset import validator as schema_validator  # jsonschema only if needed
    config = probe_config()
    properties = {o["dest"]: o.get("schema", {"type": "boolean"}) for o in config["options"]}
    schema = {"type": "object", "properties": properties}
    for error in schema_validator(schema).iter_errors(given):
        raise UsageError(_explain(error, given))
    for constraint in config["constraints"]:
        validator = schema_validator(constraint["schema"])
        if not validator.is_valid(given):
            raise UsageError(constraint["message"])


@dataclass(frozen=True)
class RegistryOptions:
    insecure: bool = False
    ca_file: str | None = None
    username: str | None = None
    password: str | None = None


MAX_PASSWORD = 4096  # bytes of the line that --password-stdin reads


def read_password(stdin: TextIO) -> str:
    """The first line of ``stdin``, without its line ending."""
    line = stdin.readline(MAX_PASSWORD + 1)
    if len(line) > MAX_PASSWORD:
        raise UsageError(f"--password-stdin: the line is longer than {MAX_PASSWORD} characters")
    password = line.removesuffix("\n").removesuffix("\r")
    if not password:
        raise UsageError("--password-stdin: no password on the first line of standard input")
    return password


def registry_options(ns: argparse.Namespace, stdin: TextIO | None = None) -> RegistryOptions:
    """The registry flags, checked; with --password-stdin the password is
    read here, from ``stdin`` (the process's standard input by default)."""
    password = ns.password
    if getattr(ns, "password_stdin", False):
        if password is not None:
            raise UsageError("--password and --password-stdin cannot be used together")
        if ns.username is None:
            raise UsageError("--password-stdin needs --username")
        password = read_password(stdin if stdin is not None else sys.stdin)
    if (ns.username is None) != (password is None):
        raise UsageError("--username needs --password-stdin (or --password), and the "
                         "password needs --username")
    if ns.ca_file is not None and not os.path.isfile(ns.ca_file):
        raise UsageError(f"--ca-file: {ns.ca_file!r} is not a file")
    return RegistryOptions(ns.insecure, ns.ca_file, ns.username, password)


@dataclass(frozen=True)
class Options:
    """Everything the user asked for, validated."""

    interval: int
    duration: int | None
    timestamp: bool
    milliseconds: bool
    lport: int | None
    rport: int | None
    laddr: str | None
    raddr: str | None
    byladdr: bool
    byraddr: bool
    extension: bool
    ipv4: bool
    ipv6: bool
    json: bool = False
    attach: str = "auto"
    backend: str = "libbpf"
    package: str | None = None
    image: str | None = None
    prometheus: tuple[str, int] | None = None
    web_config: object | None = None  # runner.webconfig.WebConfig
    registry: RegistryOptions | None = None
    max_keys: int | None = None
    verbose: bool = False
    traceback: bool = False
    laddr_prefix: tuple[int, int | None] | None = None  # (V4LEN, V6LEN or None)
    raddr_prefix: tuple[int, int | None] | None = None

    @property
    def unit(self) -> str:
        return "msecs" if self.milliseconds else "usecs"

    @property
    def label(self) -> str:
        if self.byladdr:
            return "Local Address"
        if self.byraddr:
            return "Remote Address"
        return "All Addresses"

    @property
    def keyed(self) -> bool:
        return self.byladdr or self.byraddr

    @property
    def prefixes(self) -> tuple[int | None, int | None]:
        """The prefix lengths that the keys are cut to, IPv4 and IPv6 (None:
        whole addresses)."""
        prefix = self.laddr_prefix if self.byladdr else self.raddr_prefix if self.byraddr \
            else None
        return prefix if prefix is not None else (None, None)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    addr = ipaddress.ip_address(text)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # the probe treats v4-mapped sockets as IPv4
    return addr


def from_namespace(ns: argparse.Namespace) -> Options:
    config = probe_config()
    given = {}
    for opt in config["options"]:
        value = getattr(ns, opt["dest"])
        if value is None or value is False:
            continue
        given[opt["dest"]] = value if value is True else _convert(opt, value)
    validate(given)
    for dest in ("laddr", "raddr"):
        if dest in given and _address(given[dest]).is_unspecified:
            raise UsageError(f"{_flags_of(dest)}: {given[dest]!r} is the unspecified address, "
                             "which no connection has")
        if dest in given and given.get("ipv6") and \
                isinstance(_address(given[dest]), ipaddress.IPv4Address):
            raise UsageError(f"-6/--ipv6 cannot be used with an IPv4 address filter "
                             f"({_flags_of(dest)} {given[dest]} is v4-mapped, which tcprtt "
                             "counts as IPv4)")
    if ns.attach not in attach_choices():
        raise UsageError(f"--attach: {ns.attach!r} is not one of {', '.join(attach_choices())}")
    if ns.package is not None and not ns.package.strip():
        raise UsageError("--package: an empty path (give the package.json to load)")
    if ns.image is not None and ns.package is not None:
        raise UsageError("--image and --package cannot be used together")
    if ns.image is not None:
        from .reference import parse as parse_reference
        parse_reference(ns.image)
    if ns.backend not in BACKENDS:
        raise UsageError(f"--backend: {ns.backend!r} is not one of {', '.join(BACKENDS)}")
    max_keys = None
    if ns.max_keys is not None:
        max_keys = parse_integer("--max-keys", ns.max_keys)
        if not 1 <= max_keys <= MAX_KEYS:
            raise UsageError(f"--max-keys: {max_keys} is outside 1..{MAX_KEYS} "
                             "(about 220 bytes of kernel memory a key)")
    from .tcprtt.settings import parse_prefix
    prefixes = {dest: parse_prefix(_flags_of(dest), given[dest])
                for dest in ("laddr_prefix", "raddr_prefix") if dest in given}
    duration = given.get("duration")
    interval = given.get("interval") or duration or FOREVER
    return Options(interval=interval, duration=duration,
                   timestamp=bool(given.get("timestamp")),
                   milliseconds=bool(given.get("milliseconds")),
                   lport=given.get("lport"), rport=given.get("rport"),
                   laddr=given.get("laddr"), raddr=given.get("raddr"),
                   byladdr=bool(given.get("byladdr")), byraddr=bool(given.get("byraddr")),
                   extension=bool(given.get("extension")),
                   ipv4=bool(given.get("ipv4")), ipv6=bool(given.get("ipv6")),
                   json=ns.json, attach=ns.attach, backend=ns.backend, package=ns.package,
                   image=ns.image, registry=registry_options(ns),
                   prometheus=_listen(ns.prometheus), web_config=_web_config(ns),
                   max_keys=max_keys, verbose=ns.verbose, traceback=ns.traceback,
                   **prefixes)


def _web_config(ns: argparse.Namespace):
    path = getattr(ns, "web_config", None)
    if path is None:
        return None
    if ns.prometheus is None:
        raise UsageError("--web-config needs --prometheus")
    from .webconfig import load
    return load(path)


def _listen(text: str | None) -> tuple[str, int] | None:
    if text is None:
        return None
    from .exporter import parse_listen
    return parse_listen(text)

