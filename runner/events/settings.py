"""A package's ``.rodata`` and ``.bss`` variables as ecli's command-line flags.

ecli builds its argument parser from the package's metadata
(``meta/arg_builder.rs``), parses what the user gives by the variable's
declared C type name (``meta/arg_parser.rs``) and writes the value into the
section through the signed type of the variable's size, falling back to the
unsigned one for values above the signed range (``section_loader.rs``). This
module does the same, and refuses, with one line, every value that ecli
would refuse, at the parser or when writing. Pure: no kernel.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from ..bpfobject import KIND_ARRAY, KIND_FLOAT, KIND_INT, BpfObject
from ..errors import PackageError, UsageError
from ..package import FLAG_PATTERN, MAX_NAME

SECTIONS = (".rodata", ".bss")
# What ecli parses a value into, by the declared type's name; ranges of the
# Rust integer types ``str::parse`` reads into.
INTEGER_TYPES = {
    "pid_t": (-(1 << 31), (1 << 31) - 1),
    "int": (-(1 << 31), (1 << 31) - 1),
    "short": (-(1 << 15), (1 << 15) - 1),
    "long": (-(1 << 63), (1 << 63) - 1),
    "long long": (-(1 << 63), (1 << 63) - 1),
    "unsigned int": (0, (1 << 32) - 1),
    "unsigned short": (0, (1 << 16) - 1),
    "unsigned long long": (0, (1 << 64) - 1),
}
FLOAT_TYPES = ("float", "double")
# Rust's integer grammar: an optional sign, ASCII digits, nothing else.
RUST_INTEGER = re.compile(r"[+-]?[0-9]+")
RUST_FLOAT = re.compile(r"[+-]?(?:inf|infinity|nan|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?)",
                        re.IGNORECASE)
DEFAULT_HELP = "Set value of `{type}` variable {name}"
RUNNER_ONLY = "set by the runner"  # in a description: the runner sets it, no flag


@dataclass(frozen=True)
class Flag:
    """One variable of a data section, and the flag that sets it."""

    section: str
    name: str
    type: str            # the declared C type name, as the metadata gives it
    option: str          # "--name", "--enable-name" or "--disable-name"
    short: str | None    # "-x", non-bool variables only
    help: str
    default: object      # bool for a bool (what an absent flag means); str or None
    offset: int | None   # where the variable lies in the section; None: not in BTF
    size: int
    type_id: int

    @property
    def is_bool(self) -> bool:
        return self.type == "bool"

    @property
    def runner_only(self) -> bool:
        return RUNNER_ONLY in self.help


def flags(bpf: BpfObject, meta: dict, source: str) -> list[Flag]:
    """The flags ecli gives a package, in its order: sections, then
    variables, as the metadata lists them. Raises PackageError for metadata
    ecli's parser builder refuses."""
    out = []
    for section in meta["bpf_skel"].get("data_sections") or ():
        name = section.get("name")
        if name not in SECTIONS:
            raise PackageError(f"{source}: data section {name!r} is not one ecli loads "
                               "(only .rodata and .bss)")
        placed = {v.name: v for v in bpf.variables(name)}
        for var in section.get("variables") or ():
            vname, vtype = var["name"], var["type"]
            if vname.startswith("__eunomia_dummy"):
                continue
            cmdarg = var.get("cmdarg") or {}
            long = cmdarg.get("long") or vname
            if len(long) > MAX_NAME or not FLAG_PATTERN.match(long):
                raise PackageError(f"{source}: variable {vname!r} has the flag name {long!r}; "
                                   f"a flag name is 1 to {MAX_NAME} letters, digits, '_', '.' "
                                   "or '-', starting with a letter or digit")
            help_text = cmdarg.get("help") or var.get("description") or \
                DEFAULT_HELP.format(type=vtype, name=vname)
            default = cmdarg.get("default")
            if default is None:
                default = var.get("value")
            short = None
            if vtype == "bool":
                if default is not None and not isinstance(default, bool):
                    raise PackageError(f"{source}: bool variable {vname!r} has the default "
                                       f"{default!r}; only true or false will do")
                option = {None: f"--{long}", True: f"--disable-{long}",
                          False: f"--enable-{long}"}[default]
                default = bool(default)
            else:
                if isinstance(default, bool) or not isinstance(default, (int, float, str,
                                                                         type(None))):
                    raise PackageError(f"{source}: variable {vname!r} has the default "
                                       f"{default!r}; only numbers and strings will do")
                if isinstance(default, (int, float)):
                    default = str(default)
                option = f"--{long}"
                if cmdarg.get("short") is not None:
                    if len(cmdarg["short"]) != 1 or not cmdarg["short"].isalnum() or \
                            not cmdarg["short"].isascii():
                        raise PackageError(f"{source}: the short name of variable {vname!r} "
                                           "is not one ASCII letter or digit")
                    short = f"-{cmdarg['short']}"
            placed_var = placed.get(vname)
            out.append(Flag(section=name, name=vname, type=vtype, option=option, short=short,
                            help=help_text, default=default,
                            offset=placed_var.offset if placed_var else None,
                            size=placed_var.size if placed_var else 0,
                            type_id=placed_var.type_id if placed_var else 0))
    seen: set[str] = set()
    for f in out:
        for opt in (f.option, f.short):
            if opt is None:
                continue
            if opt in seen:
                raise PackageError(f"{source}: two variables would take the flag {opt}")
            seen.add(opt)
    return out


def parse_value(flag: Flag, raw: str) -> object:
    """What ecli's parser makes of ``raw`` for a non-bool variable; a
    UsageError naming the flag and the value for what it refuses."""
    where = flag.option
    if flag.type in INTEGER_TYPES:
        low, high = INTEGER_TYPES[flag.type]
        if not RUST_INTEGER.fullmatch(raw):
            raise UsageError(f"{where}: {raw!r} is not an integer")
        value = int(raw)
        if not low <= value <= high or (low == 0 and raw.startswith("-")):  # Rust: no "-0"
            raise UsageError(f"{where}: {raw} does not fit in {flag.type}")
        return value
    if flag.type in FLOAT_TYPES:
        if not RUST_FLOAT.fullmatch(raw):
            raise UsageError(f"{where}: {raw!r} is not a number")
        value = float(raw)
        try:  # ecli keeps a float as f32; JSON has no NaN or infinity: ecli fails on them
            if flag.type == "float":
                value = struct.unpack("<f", struct.pack("<f", value))[0]
        except OverflowError:
            value = float("inf")
        if value != value or value in (float("inf"), float("-inf")):
            raise UsageError(f"{where}: {raw} is not a finite {flag.type}")
        return value
    if flag.type.startswith("char["):
        return raw
    raise UsageError(f"{where}: ecli parses no value into type {flag.type!r} "
                     f"(variable {flag.name})")


def encode(bpf: BpfObject, flag: Flag, value: object) -> bytes:
    """The bytes ecli writes for ``value``, by the variable's BTF type; a
    UsageError for what it refuses there."""
    btf = bpf.btf
    t = btf.get(btf.resolve(flag.type_id))
    where = flag.option
    if isinstance(value, bool):
        if t.kind != KIND_INT or t.bits != 8:
            raise UsageError(f"{where}: {flag.name} is not a one-byte integer in BTF")
        return bytes([value])
    if isinstance(value, int):
        if t.kind != KIND_INT:
            raise UsageError(f"{where}: {flag.name} is not an integer in BTF")
        signed = value < (1 << 63)  # a JSON number that fits i64 goes through the signed type
        try:
            return value.to_bytes(flag.size, "little", signed=signed)
        except OverflowError:
            kind = "signed" if signed else "unsigned"
            raise UsageError(f"{where}: {value} does not fit in {flag.size} bytes as ecli "
                             f"writes it (a {kind} {8 * flag.size}-bit value)") from None
    if isinstance(value, float):
        if t.kind != KIND_FLOAT or t.size not in (4, 8):
            raise UsageError(f"{where}: {flag.name} is not a float in BTF")
        return struct.pack("<f" if t.size == 4 else "<d", value)
    if isinstance(value, str):
        elem = btf.get(btf.resolve(t.elem)) if t.kind == KIND_ARRAY else None
        if elem is None or elem.kind != KIND_INT or elem.size != 1:
            raise UsageError(f"{where}: {flag.name} is not a char array in BTF")
        data = value.encode() + b"\0"
        if len(data) > flag.size:
            raise UsageError(f"{where}: {value!r} is longer than {flag.size - 1} bytes")
        return data
    raise UsageError(f"{where}: cannot write {value!r}")


def images(bpf: BpfObject, all_flags: list[Flag], given: dict[str, object]) -> dict[str, bytes]:
    """Each data section's initial bytes, with the values ecli would write:
    every bool (the flag's value, given or not), every other variable that
    was given or has a default; the object's own bytes elsewhere.
    ``given`` maps variable names to what the command line said (bool, or
    the raw string)."""
    out: dict[str, bytearray] = {}
    for section in SECTIONS:
        size = bpf.section_size(section)
        data = bpf.section(section) if section == ".rodata" else None
        out[section] = bytearray(data if data is not None else bytes(size))
    for flag in all_flags:
        raw = given.get(flag.name, flag.default)
        if flag.is_bool:
            value: object = bool(raw)
        elif raw is None:
            continue
        else:
            value = parse_value(flag, str(raw)) if isinstance(raw, str) else raw
        if flag.offset is None:
            continue
        data = encode(bpf, flag, value)
        image = out[flag.section]
        if flag.offset + len(data) > len(image):
            raise PackageError(f"variable {flag.name} lies outside {flag.section}")
        image[flag.offset:flag.offset + len(data)] = data
    return {name: bytes(image) for name, image in out.items()}
