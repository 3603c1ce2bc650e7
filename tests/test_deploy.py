"""The deployment files: the DaemonSet against Kubernetes' schema, the
dashboard against the dashboard model, the Containerfile against the tree."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import jsonschema
import yaml

from .conftest import REPO
from .test_options import parse

DEPLOY = REPO / "deploy"


def test_daemonset_validates_strictly_against_the_kubernetes_schema():
    proc = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict",
                           str(DEPLOY / "daemonset.yaml")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_daemonset_has_least_privilege_and_scrape_annotations():
    ds = yaml.safe_load((DEPLOY / "daemonset.yaml").read_text())
    pod = ds["spec"]["template"]
    container = pod["spec"]["containers"][0]
    sc = container["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["BPF", "PERFMON"]}
    assert not sc.get("privileged") and sc["readOnlyRootFilesystem"]
    assert pod["spec"]["hostNetwork"] is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/sys/kernel/btf"]["readOnly"] is True
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(container["ports"][0]["containerPort"])
    opts = parse(*container["args"])
    assert opts.prometheus == ("0.0.0.0", container["ports"][0]["containerPort"])


def test_dashboard_validates_and_queries_tcprtt_metrics():
    dash = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    schema = json.loads((REPO / "tests" / "fixtures" / "grafana-dashboard.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(dash)
    types = [p["type"] for p in dash["panels"]]
    assert "heatmap" in types
    titles = " ".join(p["title"] for p in dash["panels"])
    assert "p50" in titles and "p99" in titles
    for panel in dash["panels"]:
        for target in panel["targets"]:
            assert re.search(r"\b(tcp_srtt_seconds|tcprtt)_\w+", target["expr"])


def test_containerfile_copies_what_exists_and_runs_the_command():
    text = (DEPLOY / "Containerfile").read_text()
    for src in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):
        for path in src.split():
            assert (REPO / path).exists(), path
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, flags=re.M).group(1))
    assert parse(*cmd).prometheus == ("0.0.0.0", 9464)
