"""Build a test package from a BPF source in this directory, the way ecc
does (``ecc x.bpf.c x.h``), with the project's packer's own pieces: clang
and llvm-strip as ``runner.build`` runs them, the object encoded by
``runner.package``, and the metadata ecc writes: every program, every map
(a ``/// @sample {...}`` comment above a map makes it a sample map), the
``.rodata`` and ``.bss`` variables with their ``///`` descriptions, and the
first struct of the header as the export type.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import tempfile
from pathlib import Path

from runner import build
from runner.bpfobject import KIND_STRUCT, BpfObject
from runner.package import encode_object, parse

HERE = Path(__file__).resolve().parent
SAMPLE = re.compile(r"///\s*@sample\s*(\{.*?\})\s*\n\s*struct\s*\{.*?\}\s*(\w+)\s+SEC", re.S)
DESCRIBED = re.compile(r"///\s*([^@\n].*?)\s*\n\s*(?:const\s+volatile\s+)?[\w ]+?\b(\w+)"
                       r"(?:\[\w+\])?\s*=")


def export_struct(name: str, directory: Path = HERE) -> str | None:
    """The header's last struct: the record the package exports."""
    header = directory / f"{name}.h"
    if not header.exists():
        return None
    structs = re.findall(r"^struct\s+(\w+)\s*\{", header.read_text(), re.M)
    return structs[-1] if structs else None


def compile_object(name: str, workdir: Path, defines: tuple[str, ...] = (),
                   directory: Path = HERE) -> bytes:
    """As ecc compiles: with a dummy global pointer to the export struct, so
    that its BTF is in the object even when only local variables use it."""
    out = workdir / f"{name}.bpf.o"
    wrapper = workdir / f"{name}.eunomia.c"
    text = f'#include "{name}.bpf.c"\n'
    export = export_struct(name, directory)
    if export:
        text += f"struct {export} *__eunomia_dummy_{export}_ptr __attribute__((unused));\n"
    wrapper.write_text(text)
    include = f"/usr/include/{platform.machine()}-linux-gnu"
    subprocess.run([build._tool("clang"), "-g", "-O2", "-target", "bpf", "-mcpu=v3",
                    f"-fdebug-prefix-map={directory}={directory.name}",
                    f"-fdebug-prefix-map={workdir}={directory.name}", f"-I{include}",
                    f"-I{directory}",
                    *(f"-D{d}" for d in defines),
                    "-c", str(wrapper), "-o", str(out)], cwd=directory, check=True)
    subprocess.run([build._tool("llvm-strip"), "-g", str(out)], check=True)
    return out.read_bytes()


def describe(name: str, obj: bytes, directory: Path = HERE) -> dict:
    source = (directory / f"{name}.bpf.c").read_text()
    bpf = BpfObject(obj)
    obj_name = f"{name}_bpf"
    samples = {m.group(2): json.loads(m.group(1)) for m in SAMPLE.finditer(source)}
    descriptions = {m.group(2): m.group(1) for m in DESCRIBED.finditer(source)}
    maps = []
    for m in bpf.maps():
        entry: dict = {"name": m.name, "ident": m.name}
        if m.name in samples:
            entry["sample"] = samples[m.name]
        maps.append(entry)
    sections = []
    for section in (".rodata", ".bss"):
        variables = bpf.variables(section)
        if not variables:
            continue
        maps.append({"name": build._internal_map_name(obj_name, section),
                     "ident": section[1:], "mmaped": True})
        described = []
        for var in variables:
            entry = {"name": var.name, "type": var.type}
            if var.name in descriptions:
                entry["description"] = descriptions[var.name]
            described.append(entry)
        sections.append({"name": section, "variables": described})
    progs = [{"name": p.name, "attach": p.section, "link": True} for p in bpf.programs()]
    exports = []
    export = export_struct(name, directory)
    if export:
        found = bpf.btf.find(KIND_STRUCT, export)
        if found is not None:
            type_id, t = found
            exports.append({"name": t.name, "size": t.size, "type_id": type_id,
                            "members": [{"name": m.name, "type": bpf.btf.c_name(m.type_id)}
                                        for m in t.members]})
    return {"bpf_object": encode_object(obj), "bpf_object_size": len(obj),
            "meta": {"bpf_skel": {"obj_name": obj_name, "data_sections": sections,
                                  "maps": maps, "progs": progs,
                                  "doc": {"brief": f"test package {name}"}},
                     "export_types": exports, "eunomia_version": build.EUNOMIA_VERSION}}


def pack(name: str, out: Path, defines: tuple[str, ...] = (), as_name: str | None = None,
         meta: dict | None = None, directory: Path = HERE) -> Path:
    """``out``/NAME.json (or AS_NAME.json), built from NAME.bpf.c (and NAME.h)
    in ``directory`` with ``-D`` ``defines``; ``meta`` adds top-level
    metadata keys."""
    with tempfile.TemporaryDirectory(prefix="tcprtt-test-pack-") as tmp:
        doc = describe(name, compile_object(name, Path(tmp), defines, directory), directory)
    doc["meta"].update(meta or {})
    text = build.dumps(doc)
    parse(json.loads(text), f"{name}.json", any_output=True)
    path = out / f"{as_name or name}.json"
    path.write_text(text)
    return path
