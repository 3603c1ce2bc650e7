"""The packer: packages match the source, build reproducibly, agree with config.json."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from runner import build, package
from runner.config import probe_config

from .conftest import REPO


def _build(root, out, arch):
    subprocess.run([sys.executable, "-m", "runner.build", "--arch", arch, "--out", str(out)],
                   cwd=root, check=True, capture_output=True)


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_shipped_packages_match_the_probe_source(tmp_path, arch):
    _build(REPO, tmp_path, arch)
    for variant in probe_config()["variants"]:
        built = (tmp_path / f"tcprtt.{variant}.json").read_bytes()
        shipped = package.shipped(variant, arch).read_bytes()
        assert built == shipped, (f"runner/packages/{arch}/tcprtt.{variant}.json is stale: "
                                  "run `make ship`")
    assert (REPO / "runner/packages/config.json").read_bytes() == \
        (REPO / "probe/config.json").read_bytes(), "run `make ship`"


def test_build_is_reproducible_from_another_checkout(tmp_path):
    copy = tmp_path / "elsewhere" / "tcprtt"
    shutil.copytree(REPO / "probe", copy / "probe")
    shutil.copytree(REPO / "runner", copy / "runner",
                    ignore=shutil.ignore_patterns("__pycache__", "packages"))
    _build(copy, tmp_path / "a", "x86_64")
    _build(REPO, tmp_path / "b", "x86_64")
    for variant in probe_config()["variants"]:
        name = f"tcprtt.{variant}.json"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_only_kprobe_depends_on_the_architecture(tmp_path):
    _build(REPO, tmp_path / "x", "x86_64")
    _build(REPO, tmp_path / "a", "arm64")
    for variant, spec in probe_config()["variants"].items():
        x = json.loads((tmp_path / "x" / f"tcprtt.{variant}.json").read_text())
        a = json.loads((tmp_path / "a" / f"tcprtt.{variant}.json").read_text())
        assert (x["bpf_object"] != a["bpf_object"]) == spec["arch_specific"], variant


def test_make_builds_and_cleans(tmp_path):
    subprocess.run(["make", "-C", str(REPO), "packages"], check=True, capture_output=True)
    arch = build.host_arch()
    built = sorted(p.name for p in (REPO / "build" / arch).iterdir())
    assert built == sorted(f"tcprtt.{v}.json" for v in probe_config()["variants"])
    subprocess.run(["make", "-C", str(REPO), "clean"], check=True, capture_output=True)
    assert not (REPO / "build").exists()


def test_config_and_probe_agree():
    from runner.bpfobject import BpfObject
    obj = package.parse(json.loads(package.shipped("raw_tp", "x86_64").read_text())).obj
    build.check_settings(BpfObject(obj))  # raises on any difference
    declared = build._doc_comments((REPO / "probe" / "tcprtt.bpf.c").read_text())
    assert set(declared) == set(probe_config()["variables"])


def test_internal_map_name_matches_libbpf():
    assert build._internal_map_name("runqlat_bpf", ".rodata") == "runqlat_.rodata"
    assert build._internal_map_name("tcprtt_bpf", ".rodata") == "tcprtt_b.rodata"


def test_license_strings_agree():
    source = (REPO / "probe" / "tcprtt.bpf.c").read_text()
    assert source.startswith("// SPDX-License-Identifier: GPL-2.0\n")
    assert 'char LICENSE[] SEC("license") = "GPL";' in source


def test_probe_readme_carries_the_settings_table():
    assert build.settings_table() in (REPO / "probe" / "README.md").read_text()


def test_kprobe_for_another_architecture_fails_to_load_not_to_read(root):
    """The kprobe reads its argument by register name through CO-RE, so the
    package built for the other architecture is refused at load (libbpf
    poisons the unresolved relocation, the verifier refuses it) rather than
    reading a wrong register; this architecture's own package loads."""
    from runner import features
    from runner.errors import KernelError
    from runner.loader.probe import LoadedProbe

    host = build.host_arch()
    other = {"x86_64": "arm64", "arm64": "x86_64"}[host]
    foreign = package.load(package.shipped("kprobe", other))
    register = {"arm64": "pt_regs___aarch64.regs[0]", "x86_64": "pt_regs___x86_64.di"}[other]
    with pytest.raises(KernelError, match="refused to load.*CO-RE relocation") as info:
        LoadedProbe(foreign).close()
    assert register in str(info.value)

    own = package.load(package.shipped("kprobe", host))
    with LoadedProbe(own) as probe:  # loads: the verifier accepts the register read
        if features.check("kprobe") is None:
            probe.attach()
        else:  # no kprobes in this kernel: attaching is what fails, and says so
            with pytest.raises(KernelError, match="cannot attach rtt_kprobe"):
                probe.attach()


def test_the_probe_readme_lists_every_variant_of_config_json():
    readme = (REPO / "probe" / "README.md").read_text()
    for name, spec in probe_config()["variants"].items():
        assert f"| `{name}` | `{spec['attach']}` |" in readme, name
    attach_doc = (REPO / "docs" / "attach.md").read_text()
    for name in probe_config()["variants"]:
        assert f"**{name}**" in attach_doc, name
