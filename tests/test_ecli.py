"""The ecli backend: records in ecli's documented JSON shape, flags as ecli
names them. ecli itself is not installable on the project's machines, so a
small stand-in prints the documented records."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import time

import pytest

from runner import options, package
from runner.build import host_arch
from runner.errors import TcprttError, UsageError
from runner.histogram import BtfKeys
from runner.loader.ecli import EcliTracer, package_file, parse_records, setting_flags
from runner.tcprtt.keys import make_key, unkeyed_key
from runner.tcprtt.settings import probe_settings

RECORDS = [
    '{"key": {"family": 2, "addr": [127,0,0,1,0,0,0,0,0,0,0,0,0,0,0,0]}, '
    '"value": {"latency": 120, "cnt": 4, "slots": [0,1,3,0]}}',
    'some message ecli prints',
    '{"value": {"slots": [1,0], "cnt": 1, "latency": 1}, '
    '"key": {"family": 65535, "addr": [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}}',
    '{"value": {"slots": [1,0], "cnt": 1, "latency": 1}, "key": 0}',  # not a hist_key
]


def _keys() -> BtfKeys:
    pkg = package.load(package.shipped("raw_tp", host_arch()))
    return BtfKeys(pkg.btf, pkg.hists[0].key_type)


def test_records_in_ecli_shape_parse_and_other_lines_are_skipped():
    hists = list(parse_records(RECORDS, _keys()))
    assert len(hists) == 2
    assert hists[0].key == make_key(2, bytes([127, 0, 0, 1])) and hists[0].slots == (0, 1, 3, 0)
    assert hists[0].latency == 120 and hists[0].cnt == 4
    assert hists[1].key == unkeyed_key()


def test_settings_become_ecli_flags():
    pkg = package.load(package.shipped("raw_tp", host_arch()))
    flags = setting_flags(pkg, {"targ_sport": 80, "targ_raddr_hist": True, "targ_ms": False})
    assert flags == ["--lport", "80", "--raddr-hist"]
    with pytest.raises(UsageError, match="cannot set targ_sport"):
        setting_flags(pkg, {"targ_sport": b"80"})


def test_ipv6_filters_become_ecli_flags():
    """The runner's -A/-a with an IPv6 address reach ecli as the two halves."""
    pkg = package.load(package.shipped("raw_tp", host_arch()))
    parser = options.Parser(prog="tcprtt")
    options.add_probe_flags(parser)
    options.add_runner_flags(parser)
    opts = options.from_namespace(parser.parse_args(["-A", "fe80::1", "-a", "2001:db8::"]))
    values = probe_settings(opts)
    assert setting_flags(pkg, values) == [
        "--laddr6-hi", str(0x20010DB8 << 32),
        "--raddr6-hi", str(0xFE80 << 48), "--raddr6-lo", "1"]


def test_tracer_reads_the_latest_record_per_key(tmp_path):
    stand_in = tmp_path / "ecli"
    stand_in.write_text(
        f"#!{sys.executable}\n"
        "import sys, time\n"
        "assert sys.argv[1:3] == ['run', '-j'], sys.argv\n"
        f"lines = {RECORDS!r}\n"
        "for line in lines: print(line, flush=True)\n"
        "time.sleep(30)\n")
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IXUSR)
    pkg = package.load(package.shipped("raw_tp", host_arch()))
    tracer = EcliTracer(pkg, {}, "raw_tp", ecli=str(stand_in))
    try:
        deadline = time.monotonic() + 5
        while len(tracer.snapshot()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(h.key for h in tracer.snapshot()) == sorted(
            h.key for h in parse_records(RECORDS, _keys()))
    finally:
        tracer.close()
    assert tracer._proc.poll() is not None, "the child is stopped by its own PID"
    assert not os.path.exists(f"/proc/{tracer._proc.pid}/status") or \
        tracer._proc.returncode is not None


def test_ecli_gets_a_package_file_named_json(tmp_path):
    """ecli tells a file's type by its suffix: a package read from a .json
    file goes as that file; one stored by its digest (the registry cache)
    goes as a link named .json, removed with the tracer."""
    shipped = package.shipped("raw_tp", host_arch())
    path, directory = package_file(package.load(shipped))
    assert (path, directory) == (str(shipped), None)
    blob = tmp_path / hashlib.sha256(shipped.read_bytes()).hexdigest()
    blob.write_bytes(shipped.read_bytes())
    cached = package.loads(blob.read_bytes(), "registry.example/tcprtt:1#raw_tp", path=blob)
    assert cached.source == "registry.example/tcprtt:1#raw_tp" and cached.path == str(blob)
    path, directory = package_file(cached)
    assert path.endswith(".json") and os.path.realpath(path) == str(blob)
    assert os.path.dirname(path) == directory
    os.unlink(path)
    os.rmdir(directory)
    with pytest.raises(TcprttError, match="not read from one"):
        package_file(package.loads(shipped.read_bytes(), "label"))


ECLI_STAND_IN = """#!{python}
import hashlib, json, os, sys, time
assert sys.argv[1:3] == ["run", "-j"], sys.argv
path = sys.argv[3]
with open(path, "rb") as f:
    data = f.read()
with open({report!r}, "w") as f:
    json.dump({{"path": path, "real": os.path.realpath(path),
               "sha256": hashlib.sha256(data).hexdigest(),
               "flags": sys.argv[4:]}}, f)
record = {{"key": {{"family": 65535, "addr": [0] * 16}},
          "value": {{"latency": 0, "cnt": 0, "slots": [0, 0, 0, 5] + [0] * 23}}}}
print(json.dumps(record), flush=True)
try:
    time.sleep(30)
except KeyboardInterrupt:
    pass
"""


def test_image_with_the_ecli_backend_hands_ecli_the_pulled_file(root, tmp_path):
    """--backend ecli --image REF: ecli gets a file that holds the pulled
    package (not the label REF#variant), named .json, gone afterwards."""
    from runner import reference, registry

    from .conftest import REPO, runner_cmd, runner_env
    from .registry_server import registry as registry_server
    report = tmp_path / "report.json"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "ecli"
    stand_in.write_text(ECLI_STAND_IN.format(python=sys.executable, report=str(report)))
    stand_in.chmod(0o755)
    shipped_dir = package.shipped("raw_tp", host_arch()).parent.parent
    with registry_server(tmp_path / "registry") as server:
        image = f"{server.address}/tools/tcprtt:0.1"
        registry.push(registry.Client(reference.parse(image)),
                      registry.release_packages(shipped_dir))
        env = dict(runner_env(), XDG_CACHE_HOME=str(tmp_path / "cache"),
                   PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
        proc = subprocess.run(runner_cmd("--backend", "ecli", "--image", image, "-v",
                                         "-p", "8080", "-d", "1"),
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    variant = proc.stderr.split("attached with the ")[1].split()[0]
    seen = json.loads(report.read_text())
    assert seen["path"].endswith(".json") and "#" not in seen["path"]
    # the file pulled into the cache, stored by its digest
    cache = os.path.realpath(tmp_path / "cache")
    assert seen["real"].startswith(cache + os.sep), seen
    assert os.path.basename(seen["real"]) == seen["sha256"], seen
    wanted = package.shipped(variant, host_arch()).read_bytes()
    assert seen["sha256"] == hashlib.sha256(wanted).hexdigest()
    assert seen["flags"] == ["--lport", "8080"]
    assert not os.path.exists(seen["path"]), "the link is removed when ecli is done"
    # what the stand-in printed is what tcprtt shows: 5 samples in 8..15 us
    assert re.search(r"^\s+8 -> 15\s+: 5\s", proc.stdout, re.M), proc.stdout
