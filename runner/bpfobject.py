"""Read what a BPF ELF object says about itself: sections, symbols and BTF.

Pure Python and no kernel: the packer uses it to describe a freshly built
object, the runner to learn where each setting lives in ``.rodata`` and how
the histogram map's keys and values are laid out.
"""

from __future__ import annotations

import math
import operator
import struct
from dataclasses import dataclass, field
from typing import Callable

from .errors import PackageError

BTF_MAGIC = 0xEB9F

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 7, 8, 9, 10, 11
KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_FLOAT = 12, 13, 14, 15, 16
KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 17, 18, 19

# How deep arrays, pointers and nested structs may go before the type is
# taken for a cycle; real types nest a handful of levels.
MAX_DEPTH = 32

SHT_PROGBITS, SHT_SYMTAB, SHT_NOBITS = 1, 2, 8
SHF_EXECINSTR = 0x4
STT_FUNC = 2
# Sections that libbpf reads as something other than programs, whatever their flags.
_NOT_PROGRAMS = ("license", "version", "maps", ".maps", ".BTF", ".BTF.ext", ".text")

_MODIFIERS = (KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)
# Bytes that follow the common 12-byte header, per kind: fixed, and per vlen item.
_EXTRA = {KIND_INT: (4, 0), KIND_ARRAY: (12, 0), KIND_STRUCT: (0, 12), KIND_UNION: (0, 12),
          KIND_ENUM: (0, 8), KIND_FUNC_PROTO: (0, 8), KIND_VAR: (4, 0), KIND_DATASEC: (0, 12),
          KIND_DECL_TAG: (4, 0), KIND_ENUM64: (0, 12)}


@dataclass(frozen=True)
class Member:
    name: str
    type_id: int
    offset: int  # bytes
    bit_offset: int = 0  # from the start of the struct, in bits
    bit_size: int = 0    # a bitfield's width; 0 for a plain member


@dataclass
class BtfType:
    kind: int
    name: str
    size: int = 0          # INT, STRUCT, UNION, ENUM, DATASEC, FLOAT
    ref: int = 0           # PTR, TYPEDEF, modifiers, VAR, FUNC
    elem: int = 0          # ARRAY element type
    nelems: int = 0        # ARRAY
    encoding: int = 0      # INT: 1 signed, 2 char, 4 bool
    members: list[Member] = field(default_factory=list)  # STRUCT, UNION, DATASEC (offset, type)
    vsizes: list[int] = field(default_factory=list)       # DATASEC: size of each variable
    bits: int = 0          # INT: nr_bits
    enumerators: list[tuple[str, int]] = field(default_factory=list)  # ENUM, ENUM64: name, value


class Btf:
    """The types of one .BTF blob, indexed by id (id 0 is void)."""

    def __init__(self, data: bytes):
        if len(data) < 24:
            raise PackageError("BTF section is truncated")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != BTF_MAGIC:
            raise PackageError("BTF section has a bad magic number (not little-endian BTF)")
        type_off, type_len, str_off, str_len = struct.unpack_from("<4I", data, 8)
        types = data[hdr_len + type_off: hdr_len + type_off + type_len]
        self._strings = data[hdr_len + str_off: hdr_len + str_off + str_len]
        if len(types) != type_len or len(self._strings) != str_len:
            raise PackageError("BTF section is truncated")
        self.types: list[BtfType] = [BtfType(kind=0, name="void")]
        # Where each type's 12-byte header starts in ``data`` (id 0 has none).
        self.offsets: list[int] = [-1]
        refs: list[tuple[int, int]] = []  # (type id, id it refers to)
        pos = 0
        while pos < len(types):
            self.offsets.append(hdr_len + type_off + pos)
            if pos + 12 > len(types):
                raise PackageError("BTF type section is truncated")
            name_off, info, size_or_type = struct.unpack_from("<3I", types, pos)
            pos += 12
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            if not KIND_INT <= kind <= KIND_ENUM64:
                raise PackageError(f"BTF type {len(self.types)} has unknown kind {kind}")
            fixed, per_item = _EXTRA.get(kind, (0, 0))
            end = pos + fixed + per_item * vlen
            if end > len(types):
                raise PackageError("BTF type section is truncated")
            t = BtfType(kind=kind, name=self.string(name_off))
            tid = len(self.types)
            if kind in (KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64,
                        KIND_DATASEC, KIND_FLOAT):
                t.size = size_or_type
            else:
                t.ref = size_or_type
                if kind != KIND_FWD:
                    refs.append((tid, t.ref))
            # Every name and type id a type holds is checked here, as libbpf
            # (before 1.3) does not: it follows them blindly and crashes.
            if kind in (KIND_ENUM, KIND_ENUM64, KIND_FUNC_PROTO):
                signed = bool(info >> 31)  # kflag: a signed enum
                for i in range(vlen):
                    item_name, item_type = struct.unpack_from("<2I", types, pos + per_item * i)
                    name = self.string(item_name)
                    if kind == KIND_FUNC_PROTO:
                        refs.append((tid, item_type))
                    elif kind == KIND_ENUM:  # as ecli reads them: always a signed 32-bit value
                        t.enumerators.append((name, struct.unpack_from(
                            "<i", types, pos + per_item * i + 4)[0]))
                    else:
                        low, high = struct.unpack_from("<2I", types, pos + per_item * i + 4)
                        value = high << 32 | low
                        if signed and value >> 63:
                            value -= 1 << 64
                        t.enumerators.append((name, value))
            if kind == KIND_INT:
                word = struct.unpack_from("<I", types, pos)[0]
                t.encoding = (word >> 24) & 0xF
                t.bits = word & 0xFF
            elif kind == KIND_ARRAY:
                t.elem, index, t.nelems = struct.unpack_from("<3I", types, pos)
                refs += [(tid, t.elem), (tid, index)]
            elif kind in (KIND_STRUCT, KIND_UNION):
                bitfields = info >> 31
                for i in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<3I", types, pos + 12 * i)
                    bits = m_off & 0xFFFFFF if bitfields else m_off
                    width = m_off >> 24 if bitfields else 0
                    t.members.append(Member(self.string(m_name), m_type, bits // 8, bits, width))
                    refs.append((tid, m_type))
            elif kind == KIND_DATASEC:
                for i in range(vlen):
                    v_type, v_off, v_size = struct.unpack_from("<3I", types, pos + 12 * i)
                    t.members.append(Member("", v_type, v_off))
                    t.vsizes.append(v_size)
                    refs.append((tid, v_type))
            self.types.append(t)
            pos = end
        self._check_references(refs)
        # DATASEC members carry the VAR's name, known once every type is read.
        for t in self.types:
            if t.kind == KIND_DATASEC:
                t.members = [Member(self.get(m.type_id).name, m.type_id, m.offset)
                             for m in t.members]

    def _check_references(self, refs: list[tuple[int, int]]) -> None:
        """Every type id a type refers to exists; functions have prototypes;
        data sections hold variables and functions (libbpf 1.1 assumes all three)."""
        for tid, ref in refs:
            if ref >= len(self.types):
                raise PackageError(f"BTF type {tid} refers to type id {ref}, "
                                   f"beyond the {len(self.types) - 1} types there are")
        for tid, t in enumerate(self.types):
            if t.kind == KIND_FUNC and self.types[t.ref].kind != KIND_FUNC_PROTO:
                raise PackageError(f"BTF function {t.name!r} (type {tid}) does not refer "
                                   "to a function prototype")
            if t.kind == KIND_DATASEC and any(self.types[m.type_id].kind not in
                                              (KIND_VAR, KIND_FUNC) for m in t.members):
                raise PackageError(f"BTF data section {t.name!r} holds something other "
                                   "than variables and functions")

    def string(self, offset: int) -> str:
        end = self._strings.find(b"\0", offset)
        if offset >= len(self._strings) or end < 0:
            raise PackageError(f"BTF string offset {offset} is out of range")
        return self._strings[offset:end].decode("utf-8", "replace")

    def get(self, type_id: int) -> BtfType:
        if not 0 <= type_id < len(self.types):
            raise PackageError(f"BTF type id {type_id} is out of range")
        return self.types[type_id]

    def find(self, kind: int, name: str) -> tuple[int, BtfType] | None:
        for i, t in enumerate(self.types):
            if t.kind == kind and t.name == name:
                return i, t
        return None

    def strip(self, type_id: int) -> int:
        """Follow const, volatile and friends (not typedefs) to the type beneath."""
        for _ in range(64):
            t = self.get(type_id)
            if t.kind not in _MODIFIERS and t.kind != KIND_VAR:
                return type_id
            type_id = t.ref
        raise PackageError("BTF type chain is too deep")

    def resolve(self, type_id: int) -> int:
        """Follow modifiers and typedefs to the concrete type."""
        for _ in range(64):
            type_id = self.strip(type_id)
            t = self.get(type_id)
            if t.kind != KIND_TYPEDEF:
                return type_id
            type_id = t.ref
        raise PackageError("BTF type chain is too deep")

    def size_of(self, type_id: int, depth: int = 0) -> int:
        if depth > MAX_DEPTH:
            raise PackageError("BTF array types are nested too deeply")
        t = self.get(self.resolve(type_id))
        if t.kind == KIND_ARRAY:
            return t.nelems * self.size_of(t.elem, depth + 1)
        if t.kind == KIND_PTR:
            return 8
        return t.size

    def c_name(self, type_id: int, depth: int = 0) -> str:
        """The declared C type name as ecc writes it: typedefs kept, qualifiers
        dropped, arrays as ``elem[n]``."""
        if depth > MAX_DEPTH:
            raise PackageError("BTF types are nested too deeply")
        type_id = self.strip(type_id)
        t = self.get(type_id)
        if t.kind == KIND_ARRAY:
            return f"{self.c_name(t.elem, depth + 1)}[{t.nelems}]"
        if t.kind == KIND_PTR:
            return f"{self.c_name(t.ref, depth + 1)} *"
        if t.kind == KIND_STRUCT:
            return f"struct {t.name}"
        if t.kind == KIND_UNION:
            return f"union {t.name}"
        if t.kind in (KIND_ENUM, KIND_ENUM64):
            return f"enum {t.name}"
        if t.kind == 0:
            return "void"
        if t.name == "_Bool":
            return "bool"
        return t.name


@dataclass(frozen=True)
class Variable:
    name: str
    type_id: int
    type: str
    offset: int
    size: int


@dataclass(frozen=True)
class MapDef:
    name: str
    map_type: int
    max_entries: int
    key_type: int
    value_type: int
    key_size: int = 0     # from the key type, or __uint(key_size, n)
    value_size: int = 0   # from the value type, or __uint(value_size, n)


@dataclass(frozen=True)
class Program:
    """A function that libbpf loads as a program: where it is and what it is called."""

    name: str
    section: str


class BpfObject:
    """An ELF64 little-endian BPF object, read-only."""

    def __init__(self, data: bytes):
        if len(data) < 64 or data[:4] != b"\x7fELF":
            raise PackageError("the BPF object is not an ELF file")
        if data[4] != 2 or data[5] != 1:
            raise PackageError("the BPF object is not a 64-bit little-endian ELF")
        machine = struct.unpack_from("<H", data, 18)[0]
        if machine != 247:  # EM_BPF
            raise PackageError(f"the ELF object is for machine {machine}, not BPF")
        self.data = data
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<3H", data, 0x3A)
        if shentsize != 64 or shoff + shnum * 64 > len(data) or shstrndx >= shnum:
            raise PackageError("the ELF section table is truncated or malformed")
        raw = []
        for i in range(shnum):
            name, stype, flags, _addr, off, size, link, _info, _align, entsize = \
                struct.unpack_from("<IIQQQQIIQQ", data, shoff + 64 * i)
            if stype != SHT_NOBITS and off + size > len(data):
                raise PackageError(f"ELF section {i} runs past the end of the file")
            raw.append((name, stype, off, size, link, entsize, flags))
        names = self._bytes(raw[shstrndx])
        # (name, type, offset, size, link, entsize, flags)
        self.sections: list[tuple[str, int, int, int, int, int, int]] = []
        for name, stype, off, size, link, entsize, flags in raw:
            end = names.find(b"\0", name)
            self.sections.append((names[name:end].decode("utf-8", "replace"),
                                  stype, off, size, link, entsize, flags))
        btf = self.section(".BTF")
        if btf is None:
            raise PackageError("the BPF object has no .BTF section")
        self.btf = Btf(btf)
        self._symbols = self._read_symbols()

    def _bytes(self, sec) -> bytes:
        return self.data[sec[2]:sec[2] + sec[3]]

    def section(self, name: str) -> bytes | None:
        for sec in self.sections:
            if sec[0] == name:
                return self._bytes(sec)
        return None

    def _read_symbols(self) -> dict[tuple[str, str], tuple[int, int, int]]:
        """(section, symbol) -> (value, size, type) for every named symbol."""
        out: dict[tuple[str, str], tuple[int, int, int]] = {}
        self._all_symbols: list[tuple[int, str, int]] = []  # (section index, name, type)
        for sec in self.sections:
            if sec[1] != SHT_SYMTAB:
                continue
            if sec[4] >= len(self.sections):
                raise PackageError("the ELF symbol table names a string table that is not there")
            strtab = self._bytes(self.sections[sec[4]])
            table = self._bytes(sec)
            for pos in range(0, len(table) - 23, 24):
                st_name, info, _other, shndx, value, size = \
                    struct.unpack_from("<IBBHQQ", table, pos)
                if shndx == 0 or shndx >= len(self.sections):
                    continue
                end = strtab.find(b"\0", st_name)
                name = strtab[st_name:end].decode("utf-8", "replace") if end >= 0 else ""
                self._all_symbols.append((shndx, name, info & 0xF))
                if st_name:
                    out[(self.sections[shndx][0], name)] = (value, size, info & 0xF)
        return out

    def programs(self) -> list[Program]:
        """Every function that libbpf would load as a program: the function
        symbols of each executable section but ``.text`` (whose functions are
        subprograms), whatever any metadata says."""
        executable = {i for i, sec in enumerate(self.sections)
                      if sec[1] == SHT_PROGBITS and sec[6] & SHF_EXECINSTR and sec[3] > 0
                      and sec[0] not in _NOT_PROGRAMS}
        return [Program(name, self.sections[shndx][0])
                for shndx, name, kind in self._all_symbols
                if shndx in executable and kind == STT_FUNC]

    def variables(self, section: str) -> list[Variable]:
        """The variables of a data section, at the offsets the object places them.

        clang leaves DATASEC offsets at zero and libbpf fills them in from the
        symbol table when it opens the object; this does the same."""
        found = self.btf.find(KIND_DATASEC, section)
        if found is None:
            return []
        out = []
        for member, vsize in zip(found[1].members, found[1].vsizes):
            offset, size, _ = self._symbols.get((section, member.name), (member.offset, vsize, 0))
            var = self.btf.get(member.type_id)
            out.append(Variable(member.name, var.ref, self.btf.c_name(var.ref),
                                offset, size or vsize))
        return out

    def functions(self, section: str) -> list[str]:
        """Names of the function symbols (the programs) in a section."""
        return sorted(name for (sec, name), (_, _, kind) in self._symbols.items()
                      if sec == section and kind == 2)  # STT_FUNC

    def section_size(self, name: str) -> int:
        for sec in self.sections:
            if sec[0] == name:
                return sec[3]
        return 0

    def maps(self) -> list[MapDef]:
        """The BTF-defined maps of the ``.maps`` section."""
        found = self.btf.find(KIND_DATASEC, ".maps")
        if found is None:
            return []
        out = []
        for member in found[1].members:
            var = self.btf.get(member.type_id)
            spec = self.btf.get(self.btf.resolve(var.ref))
            fields: dict[str, int] = {}
            for m in spec.members:
                ptr = self.btf.get(self.btf.resolve(m.type_id))
                if ptr.kind != KIND_PTR:
                    continue
                target = self.btf.get(self.btf.resolve(ptr.ref))
                if m.name in ("type", "max_entries", "key_size", "value_size", "map_flags"):
                    fields[m.name] = target.nelems  # __uint(name, n) is int (*name)[n]
                elif m.name in ("key", "value"):
                    fields[m.name] = ptr.ref
            key, value = fields.get("key", 0), fields.get("value", 0)
            out.append(MapDef(member.name, fields.get("type", 0), fields.get("max_entries", 0),
                              key, value,
                              self.btf.size_of(key) if key else fields.get("key_size", 0),
                              self.btf.size_of(value) if value else fields.get("value_size", 0)))
        return out


def to_json(btf: Btf, type_id: int, data: bytes, depth: int = 0, *, ecli: bool = False):
    """Decode ``data`` of BTF type ``type_id`` into JSON values, as ecli shows
    them: integers as numbers, structs as objects, char arrays as strings.

    With ``ecli``, exactly as ecli's event dumper does (``ecli_decoder``):
    enums by name, structs tagged with their kind and name, 128-bit integers
    as strings; a type it cannot decode raises PackageError."""
    if ecli:
        return ecli_decoder(btf, type_id)(data)
    if depth > MAX_DEPTH:
        raise PackageError("BTF types are nested too deeply to decode")
    t = btf.get(btf.resolve(type_id))
    if t.kind == KIND_INT or t.kind in (KIND_ENUM, KIND_ENUM64):
        signed = t.kind == KIND_INT and bool(t.encoding & 1)
        if t.kind == KIND_INT and t.encoding & 4:
            return bool(int.from_bytes(data[:t.size], "little"))
        return int.from_bytes(data[:t.size], "little", signed=signed)
    if t.kind == KIND_PTR:
        return int.from_bytes(data[:8], "little")
    if t.kind == KIND_ARRAY:
        elem = btf.get(btf.resolve(t.elem))
        if elem.kind == KIND_INT and elem.size == 1 and (elem.encoding & 2 or elem.name == "char"):
            return data[:t.nelems].split(b"\0", 1)[0].decode("utf-8", "replace")
        step = btf.size_of(t.elem)
        # Never more elements than the bytes hold (a zero-sized element, or a
        # count that the data does not back, would loop without end).
        count = min(t.nelems, len(data) // step) if step > 0 else 0
        return [to_json(btf, t.elem, data[i * step:(i + 1) * step], depth + 1)
                for i in range(count)]
    if t.kind in (KIND_STRUCT, KIND_UNION):
        return {m.name: to_json(btf, m.type_id, data[m.offset:], depth + 1)
                for m in t.members if m.name}
    if t.kind == KIND_FLOAT:
        return struct.unpack_from("<d" if t.size == 8 else "<f", data)[0]
    raise PackageError(f"cannot decode a value of BTF type {btf.c_name(type_id)!r}")


# ecli's event dumper ---------------------------------------------------------

_BTF_KIND_NAMES = {0: "void", KIND_FWD: "forward declaration", KIND_FUNC: "function",
                   KIND_FUNC_PROTO: "function prototype", KIND_VAR: "variable",
                   KIND_DATASEC: "data section", KIND_DECL_TAG: "decl tag",
                   KIND_TYPE_TAG: "type tag", KIND_ENUM64: "64-bit enum"}
_INT_FORMATS = {(8, True): "<b", (8, False): "<B", (16, True): "<h", (16, False): "<H",
                (32, True): "<i", (32, False): "<I", (64, True): "<q", (64, False): "<Q"}
_ECLI_FOLLOWED = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT)
Decode = Callable[[bytes], object]


def ecli_size(btf: Btf, type_id: int, depth: int = 0) -> int:
    """A type's size as ecli's BTF library counts it: an integer by its bits,
    a pointer 8 bytes, an array its elements, and 0 for what has no size."""
    if depth > MAX_DEPTH:
        raise PackageError("BTF types are nested too deeply to decode")
    t = btf.get(type_id)
    if t.kind == KIND_INT:
        return (t.bits + 7) // 8
    if t.kind in (*_ECLI_FOLLOWED, KIND_TYPE_TAG, KIND_DECL_TAG):
        return ecli_size(btf, t.ref, depth + 1)
    if t.kind == KIND_PTR:
        return 8
    if t.kind == KIND_ARRAY:
        return t.nelems * ecli_size(btf, t.elem, depth + 1)
    if t.kind in (KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_DATASEC, KIND_FLOAT):
        return t.size
    return 0


def ecli_decoder(btf: Btf, type_id: int) -> Decode:
    """A function from the bytes of one value of ``type_id`` to the JSON value
    that ecli's dumper makes of them: integers as numbers (bool as true or
    false, 128-bit ones as decimal strings), pointers as numbers, ``char``
    arrays as strings up to the first NUL, other arrays as lists, structs and
    unions as objects with ``__EUNOMIA_TYPE`` ("struct" or "union") and
    ``__EUNOMIA_TYPE_NAME`` beside their members, enums as "NAME(value)"
    ("<UNKNOWN_VARIANT>(value)" for a value with no name), floats as numbers
    (None for NaN and infinities, as serde_json has no such number).

    Every type is checked here, once: a kind ecli cannot decode (void,
    functions, 64-bit enums, type tags, bitfields, integers of odd widths)
    raises PackageError now, never while decoding. A decoder takes bytes
    exactly as long as ``ecli_size`` says; a string that fills its array
    without a NUL is taken whole, and bytes that are not UTF-8 are replaced."""
    return _ecli_compile(btf, type_id, 0)


def _ecli_unsupported(btf: Btf, type_id: int, what: str) -> PackageError:
    t = btf.get(type_id)
    name = f" {t.name!r}" if t.name else ""
    return PackageError(f"BTF type {type_id}{name} ({what}) cannot be decoded as ecli "
                        "decodes events")


def _ecli_compile(btf: Btf, type_id: int, depth: int) -> Decode:
    if depth > MAX_DEPTH:
        raise PackageError("BTF types are nested too deeply to decode")
    t = btf.get(type_id)
    kind = t.kind
    if kind in _ECLI_FOLLOWED:
        return _ecli_compile(btf, t.ref, depth + 1)
    if kind == KIND_INT:
        if t.encoding & 4:
            return lambda data: data[0] != 0
        signed = bool(t.encoding & 1)
        fmt = _INT_FORMATS.get((t.bits, signed))
        if fmt is not None:
            unpack = struct.Struct(fmt).unpack_from
            return lambda data: unpack(data)[0]
        if t.bits == 128:
            return lambda data: str(int.from_bytes(data[:16], "little", signed=signed))
        raise _ecli_unsupported(btf, type_id, f"a {t.bits}-bit integer")
    if kind == KIND_PTR:
        unpack = struct.Struct("<Q").unpack_from
        return lambda data: unpack(data)[0]
    if kind == KIND_ARRAY:
        return _ecli_array(btf, type_id, t, depth)
    if kind in (KIND_STRUCT, KIND_UNION):
        return _ecli_struct(btf, type_id, t, depth)
    if kind == KIND_ENUM:
        if t.size not in (1, 2, 4):
            raise _ecli_unsupported(btf, type_id, f"a {t.size}-byte enum")
        unpack = struct.Struct({1: "<b", 2: "<h", 4: "<i"}[t.size]).unpack_from
        names = {}
        for name, value in t.enumerators:
            names.setdefault(value, f"{name}({value})")  # the first of equal values

        def enum(data: bytes) -> str:
            value = unpack(data)[0]
            return names.get(value) or f"<UNKNOWN_VARIANT>({value})"
        return enum
    if kind == KIND_FLOAT:
        if t.size not in (4, 8):
            raise _ecli_unsupported(btf, type_id, f"a {t.size}-byte float")
        unpack = struct.Struct("<f" if t.size == 4 else "<d").unpack_from

        def real(data: bytes) -> float | None:
            value = unpack(data)[0]
            return value if math.isfinite(value) else None
        return real
    raise _ecli_unsupported(btf, type_id, _BTF_KIND_NAMES.get(kind, f"kind {kind}"))


def _ecli_array(btf: Btf, type_id: int, t: BtfType, depth: int) -> Decode:
    elem = btf.get(t.elem)
    if elem.name == "char":  # the element type itself, as ecli checks: not through typedefs
        length = t.nelems * ecli_size(btf, t.elem, depth + 1)

        def string(data: bytes) -> str:
            end = data.find(b"\0", 0, length)
            return bytes(data[:length if end < 0 else end]).decode("utf-8", "replace")
        return string
    step = ecli_size(btf, t.elem, depth + 1)
    inner = _ecli_compile(btf, t.elem, depth + 1)
    scalar = _ecli_scalar(btf, t.elem, depth + 1)
    if scalar is not None and scalar[1] is None and t.nelems:  # plain numbers: one call
        unpack = struct.Struct(f"<{t.nelems}{scalar[0]}").unpack_from
        return lambda data: list(unpack(data))
    spans = [(i * step, (i + 1) * step) for i in range(t.nelems)]
    return lambda data: [inner(data[a:b]) for a, b in spans]


def _ecli_struct(btf: Btf, type_id: int, t: BtfType, depth: int) -> Decode:
    kind = "struct" if t.kind == KIND_STRUCT else "union"
    fields = []
    for m in t.members:
        if m.bit_offset % 8 or m.bit_size % 8:
            raise PackageError(f"BTF {kind} {t.name or type_id!r} member {m.name!r} is a "
                               "bitfield, which ecli does not decode")
        size = ecli_size(btf, m.type_id, depth + 1)
        if m.offset + size > t.size:
            raise PackageError(f"BTF {kind} {t.name or type_id!r} member {m.name!r} runs "
                               f"past the end of its {t.size} bytes")
        fields.append((m.name, m.offset, m.offset + size, _ecli_compile(btf, m.type_id,
                                                                        depth + 1)))
    head = (("__EUNOMIA_TYPE", kind), ("__EUNOMIA_TYPE_NAME", t.name))
    fast = _ecli_unpacker(btf, t, fields, depth) if kind == "struct" else None
    if fast is not None:
        return fast(dict(head))

    def composite(data: bytes) -> dict:
        out = dict(head)
        for name, start, end, inner in fields:
            out[name] = inner(data[start:end])
        return out
    return composite


def _ecli_scalar(btf: Btf, type_id: int, depth: int):
    """(struct format, what to make of the unpacked value) for a member one
    ``struct`` code decodes as ``_ecli_compile`` would; None otherwise."""
    if depth > MAX_DEPTH:
        return None
    t = btf.get(type_id)
    if t.kind in _ECLI_FOLLOWED:
        return _ecli_scalar(btf, t.ref, depth + 1)
    if t.kind == KIND_INT and t.encoding & 4:
        return ("?" if t.size == 1 else "B"), (None if t.size == 1 else bool)
    if t.kind == KIND_INT and (t.bits, bool(t.encoding & 1)) in _INT_FORMATS:
        return _INT_FORMATS[(t.bits, bool(t.encoding & 1))][1:], None
    if t.kind == KIND_PTR:
        return "Q", None
    if t.kind == KIND_ENUM and t.size in (1, 2, 4):
        names: dict[int, str] = {}
        for name, value in t.enumerators:
            names.setdefault(value, f"{name}({value})")
        return {1: "b", 2: "h", 4: "i"}[t.size], \
            lambda value: names.get(value) or f"<UNKNOWN_VARIANT>({value})"
    if t.kind == KIND_FLOAT and t.size in (4, 8):
        return ("f" if t.size == 4 else "d"), \
            lambda value: value if math.isfinite(value) else None
    if t.kind == KIND_ARRAY and btf.get(t.elem).name == "char":
        length = t.nelems * ecli_size(btf, t.elem, depth + 1)
        return f"{length}s", \
            lambda raw: raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    return None


def _ecli_unpacker(btf: Btf, t: BtfType, fields: list, depth: int):
    """For a struct whose members lie one after another: one ``unpack_from``
    for every scalar member, the decoders for the rest. Decodes exactly what
    the member-by-member decoder does, in one call instead of one each."""
    fmt = "<"
    pos = 0
    plan = []  # (name, index in the unpacked tuple or -1, post or inner, start, end)
    index = 0
    for (name, start, end, inner), member in zip(fields, t.members):
        if start < pos:
            return None  # overlapping members: decode one by one
        scalar = _ecli_scalar(btf, member.type_id, depth + 1)
        if scalar is None:
            plan.append((name, -1, inner, start, end))
            continue
        code, post = scalar
        fmt += "x" * (start - pos) + code
        pos = end
        plan.append((name, index, post, start, end))
        index += 1
    if index < 2:
        return None
    unpack = struct.Struct(fmt).unpack_from

    plain_names = [name for name, i, fn, _, _ in plan if i >= 0 and fn is None]
    plain = operator.itemgetter(*[i for _, i, fn, _, _ in plan if i >= 0 and fn is None] or [0])
    if len(plain_names) == 1:
        single = plain

        def plain(values):  # type: ignore[no-redef]
            return (single(values),)
    posts = [(name, i, fn) for name, i, fn, _, _ in plan if i >= 0 and fn is not None]
    inners = [(name, fn, start, end) for name, i, fn, start, end in plan if i < 0]
    # Members filled by kind, not in order: only when no two share a name,
    # where the one by one order decides which one stays.
    order = [name for name, _, _, _, _ in plan]
    in_order = len(set(order)) == len(order)

    def build(head: dict) -> Decode:
        if not in_order or not plain_names:
            def composite(data: bytes) -> dict:
                values = unpack(data)
                out = head.copy()
                for name, i, fn, start, end in plan:
                    if i < 0:
                        out[name] = fn(data[start:end])
                    elif fn is None:
                        out[name] = values[i]
                    else:
                        out[name] = fn(values[i])
                return out
            return composite

        def fast(data: bytes) -> dict:
            values = unpack(data)
            out = head.copy()
            out.update(zip(plain_names, plain(values)))
            for name, i, fn in posts:
                out[name] = fn(values[i])
            for name, fn, start, end in inners:
                out[name] = fn(data[start:end])
            return out
        return fast
    return build
