"""The packer: compile the probe with clang into one eunomia package per
attach variant (what eunomia's ``ecc`` does, which cannot be installed here).

    python -m runner.build [--arch x86_64] [--out DIR]

Each package holds exactly one entry point, because ecli attaches every
program of a package and fails if one fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .bpfobject import BpfObject
from .config import CANONICAL_ARCH, REPO, host_arch, probe_config  # noqa: F401
from .errors import TcprttError
from .package import encode_object, parse

PROBE = REPO / "probe"
SOURCE = "tcprtt.bpf.c"
EUNOMIA_VERSION = "0.3.0"
# `uname -m` spelling -> clang's __TARGET_ARCH_ suffix
ARCHES = {"x86_64": "x86", "aarch64": "arm64", "arm64": "arm64"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise TcprttError(f"{name} not found: install clang and llvm to build the probe")
    return path


def compile_object(variant: str, arch: str, workdir: Path) -> bytes:
    """clang, then llvm-strip -g: the object exactly as it goes in the package."""
    define = probe_config()["variants"][variant]["define"]
    out = workdir / f"tcprtt.{variant}.bpf.o"
    # BTF line info names the source file: mapping the checkout's path away
    # keeps its location out of the object, so any checkout builds the same bytes.
    subprocess.run([_tool("clang"), "-g", "-O2", "-target", "bpf", "-mcpu=v3",
                    f"-fdebug-prefix-map={PROBE}=probe",
                    f"-D__TARGET_ARCH_{ARCHES[arch]}", f"-D{define}", "-I.",
                    "-c", SOURCE, "-o", str(out)], cwd=PROBE, check=True)
    subprocess.run([_tool("llvm-strip"), "-g", str(out)], check=True)
    return out.read_bytes()


def _doc_comments(source: str) -> dict[str, str]:
    """The `/// text` comment above each `const volatile` setting."""
    found = {}
    pattern = r"///\s*(.+?)\s*\n\s*const volatile [^=;]*?\b(\w+)(?:\[\w+\])?\s*="
    for m in re.finditer(pattern, source):
        found[m.group(2)] = m.group(1)
    return found


def check_settings(bpf: BpfObject) -> None:
    """The C globals, their `///` comments and config.json must agree."""
    variables = probe_config()["variables"]
    declared = {v.name: v for v in bpf.variables(".rodata")}
    comments = _doc_comments((PROBE / SOURCE).read_text())
    if set(declared) != set(variables):
        raise TcprttError(f"config.json variables {sorted(variables)} differ from the "
                          f"probe's .rodata {sorted(declared)}")
    for name, spec in variables.items():
        if declared[name].type != spec["type"]:
            raise TcprttError(f"{name}: config.json says {spec['type']!r}, "
                              f"the probe declares {declared[name].type!r}")
        if comments.get(name) != spec["description"]:
            raise TcprttError(f"{name}: the /// comment in {SOURCE} differs from "
                              "config.json's description")


def _internal_map_name(obj_name: str, section: str) -> str:
    # libbpf names internal maps with at most 15 characters: prefix + section
    return obj_name[:min(15 - len(section), len(obj_name))] + section


def describe(obj: bytes, variant: str, arch: str) -> dict:
    """The package.json document for one built object."""
    config = probe_config()
    bpf = BpfObject(obj)
    check_settings(bpf)
    obj_name = f"{config['name']}_bpf"
    section = config["variants"][variant]["attach"]
    progs = [{"name": name, "attach": section, "link": True}
             for name in bpf.functions(section)]
    if len(progs) != 1:
        raise TcprttError(f"variant {variant}: expected one program in {section}, "
                          f"found {len(progs)}")
    maps = []
    for m in bpf.maps():
        entry: dict = {"name": m.name, "ident": m.name}
        if m.name == config["map"]:
            entry["sample"] = {"interval": 1000, "type": "log2_hist"}
        maps.append(entry)
    maps.append({"name": _internal_map_name(obj_name, ".rodata"), "ident": "rodata",
                 "mmaped": True})
    variables = []
    for var in bpf.variables(".rodata"):
        spec = config["variables"][var.name]
        entry = {"name": var.name, "type": var.type, "description": spec["description"]}
        if spec["long"]:
            cmdarg: dict = {"long": spec["long"], "help": spec["description"]}
            if spec["type"] != "bool":  # a bool without default is a plain switch in ecli
                cmdarg["default"] = spec["default"]
            entry["cmdarg"] = cmdarg
        variables.append(entry)
    hist_map = next(m for m in bpf.maps() if m.name == config["map"])
    value_id = bpf.btf.resolve(hist_map.value_type)
    value = bpf.btf.get(value_id)
    export = {"name": value.name, "size": value.size, "type_id": value_id,
              "members": [{"name": m.name, "type": bpf.btf.c_name(m.type_id)}
                          for m in value.members]}
    return {
        "bpf_object": encode_object(obj),
        "bpf_object_size": len(obj),
        "meta": {
            "bpf_skel": {
                "obj_name": obj_name,
                "data_sections": [{"name": ".rodata", "variables": variables}],
                "maps": maps,
                "progs": progs,
                "doc": {"brief": config["description"]},
            },
            "export_types": [export],
            "eunomia_version": EUNOMIA_VERSION,
            "tcprtt": {"variant": variant, "arch": arch,
                       "arch_specific": config["variants"][variant]["arch_specific"]},
        },
    }


def settings_table() -> str:
    """The Markdown table of settings that probe/README.md carries."""
    config = probe_config()
    flags = {}
    for opt in config["options"]:
        sets = opt.get("sets", [])
        for name in [sets] if isinstance(sets, str) else sets:
            flags.setdefault(name, []).append("/".join(f"`{f}`" for f in opt["flags"]))
    rows = ["| variable | C type | default | ecli flag | runner flags | description |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name, spec in config["variables"].items():
        default = "all zero" if spec["default"] is None else json.dumps(spec["default"])
        ecli = f"`--{spec['long']}`" if spec["long"] else "(runner only)"
        rows.append(f"| `{name}` | `{spec['type']}` | {default} | {ecli} | "
                    f"{', '.join(flags.get(name, [])) or '-'} | {spec['description']} |")
    return "\n".join(rows) + "\n"


def package_name(variant: str) -> str:
    return f"{probe_config()['name']}.{variant}.json"


def dumps(doc: dict) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def build(out: Path, arch: str) -> list[Path]:
    """Build every variant into ``out``; returns the package paths."""
    if arch not in ARCHES:
        raise TcprttError(f"unknown architecture {arch!r} (one of {', '.join(sorted(ARCHES))})")
    arch = CANONICAL_ARCH[arch]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="tcprtt-build-") as tmp:
        for variant in probe_config()["variants"]:
            doc = describe(compile_object(variant, arch, Path(tmp)), variant, arch)
            text = dumps(doc)
            parse(json.loads(text), package_name(variant))  # the schema and our own checks
            path = out / package_name(variant)
            tmp_path = path.with_suffix(".json.tmp")
            tmp_path.write_text(text)
            os.replace(tmp_path, path)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.build",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default=host_arch(), help="target architecture (default: host)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: build/ARCH)")
    parser.add_argument("--settings-table", action="store_true",
                        help="print the settings table of probe/README.md and exit")
    args = parser.parse_args(argv)
    if args.settings_table:
        print(settings_table(), end="")
        return 0
    out = args.out or REPO / "build" / CANONICAL_ARCH.get(args.arch, args.arch)
    try:
        for path in build(out, args.arch):
            print(path)
    except (TcprttError, subprocess.CalledProcessError) as exc:
        print(f"tcprtt build: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
