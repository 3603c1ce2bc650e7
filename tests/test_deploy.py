"""The deployment files: the DaemonSet against Kubernetes' schema and a static
security check, the dashboard against the dashboard model, the Containerfile
against the tree."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from .conftest import REPO
from .test_options import parse

DEPLOY = REPO / "deploy"
MANIFEST = DEPLOY / "daemonset.yaml"
# What a node agent that traces with BPF cannot give up, each kept in the
# manifest with a comment that says why: checkov's ids for them.
KEPT = {
    "CKV_K8S_19": "hostNetwork",            # the node's address, one target per node
    "CKV_K8S_23": "runAsNonRoot",           # root: added capabilities reach root only
    "CKV_K8S_25": "capabilities.add",       # BPF and PERFMON
    "CKV_K8S_40": "runAsUser",              # root again, as a low UID
    "CKV_K8S_31": "seccompProfile",         # Localhost: the defaults refuse bpf() to CAP_BPF
}


def documents() -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text()) if d}


def daemonset() -> dict:
    return documents()["DaemonSet"]


def test_daemonset_validates_strictly_against_the_kubernetes_schema():
    proc = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict",
                           str(MANIFEST)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for kind in ("Namespace", "ServiceAccount", "DaemonSet", "NetworkPolicy"):
        assert f"passed for resource {kind.lower()}/" in proc.stdout + proc.stderr, kind


def test_kubernetes_validate_does_refuse_a_broken_daemonset(tmp_path):
    broken = daemonset()
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUsr"] = 0
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    proc = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "runAsUsr" in proc.stdout + proc.stderr


def security_findings(docs: dict[str, dict]) -> set[str]:
    """The checks that a cluster admin's scanner (checkov) makes of a node
    agent's manifest, written out: the ids of those that fail."""
    found = set()
    ds = docs["DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    container = pod["containers"][0]
    sc = container.get("securityContext", {})
    psc = pod.get("securityContext", {})
    account = docs.get("ServiceAccount", {})
    if pod.get("automountServiceAccountToken") is not False \
            and account.get("automountServiceAccountToken") is not False:
        found.add("CKV_K8S_38")                       # service-account token mounted
    if pod.get("serviceAccountName", "default") == "default":
        found.add("CKV_K8S_41")                       # the default service account
    if "livenessProbe" not in container:
        found.add("CKV_K8S_8")
    if "readinessProbe" not in container:
        found.add("CKV_K8S_9")
    if not psc:
        found.add("CKV_K8S_29")                       # pod-level securityContext
    if "NetworkPolicy" not in docs:
        found.add("CKV2_K8S_6")
    image = container["image"]
    if ":" not in image.rsplit("/", 1)[-1] or re.search(r":latest(@|$)", image):
        found.add("CKV_K8S_14")                       # :latest or no tag
    if "@sha256:" not in image:
        found.add("CKV_K8S_43")                       # not pinned by digest
    if container.get("imagePullPolicy") != "Always":
        found.add("CKV_K8S_15")
    if ds["metadata"].get("namespace", "default") == "default":
        found.add("CKV_K8S_21")
    if pod.get("hostNetwork"):
        found.add("CKV_K8S_19")
    if pod.get("hostPID") or pod.get("hostIPC"):
        found.add("CKV_K8S_17/18")
    if sc.get("privileged"):
        found.add("CKV_K8S_16")
    if sc.get("allowPrivilegeEscalation") is not False:
        found.add("CKV_K8S_20")
    if not sc.get("readOnlyRootFilesystem"):
        found.add("CKV_K8S_22")
    caps = sc.get("capabilities", {})
    if "ALL" not in caps.get("drop", []):
        found.add("CKV_K8S_28/37")
    if caps.get("add"):
        found.add("CKV_K8S_25")
    seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    if seccomp != "RuntimeDefault":
        found.add("CKV_K8S_31")
    user = sc.get("runAsUser", psc.get("runAsUser"))
    if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
        found.add("CKV_K8S_23")
    if user is None or user < 10000:
        found.add("CKV_K8S_40")
    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        for what in ("cpu", "memory"):
            if what not in resources.get(kind, {}):
                found.add(f"CKV_K8S_10-13 {kind}.{what}")
    for volume in pod.get("volumes", []):
        path = volume.get("hostPath", {}).get("path", "")
        if path in ("/", "/var/run/docker.sock", "/run/containerd/containerd.sock"):
            found.add("CKV_K8S_27")
    return found


def test_the_daemonset_fixes_every_finding_a_node_agent_can():
    assert security_findings(documents()) == set(KEPT)


def test_the_written_check_finds_the_old_manifests_faults():
    """The DaemonSet as it was: token mounted, no liveness probe, no pod-level
    securityContext, no NetworkPolicy, :latest."""
    docs = documents()
    del docs["NetworkPolicy"], docs["ServiceAccount"]
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    del pod["automountServiceAccountToken"], pod["serviceAccountName"], pod["securityContext"]
    container = pod["containers"][0]
    del container["livenessProbe"]
    container["image"] = "ghcr.io/tcprtt/tcprtt:latest"
    container["securityContext"]["runAsUser"] = 0
    found = security_findings(docs) - set(KEPT)
    assert found >= {"CKV_K8S_38", "CKV_K8S_8", "CKV_K8S_29", "CKV2_K8S_6", "CKV_K8S_14",
                     "CKV_K8S_43"}, found


def test_each_kept_finding_has_a_comment_saying_why():
    lines = MANIFEST.read_text().splitlines()

    def comment_before(pattern: str) -> str:
        at = next(i for i, line in enumerate(lines) if re.search(pattern, line))
        above = []
        for line in reversed(lines[:at]):
            if not line.strip().startswith("#"):
                break
            above.append(line.strip("# ").strip())
        return " ".join(reversed(above))

    for pattern in (r"^\s+hostNetwork: true", r"^\s+runAsUser: 0", r"^\s+add: \[\"BPF\"",
                    r"^\s+seccompProfile:"):
        why = comment_before(pattern)
        assert why.startswith("Kept:") and len(why) > 60, (pattern, why)


# scripts/setup.sh --test installs checkov in a venv of its own, here.
CHECKOV = Path(__file__).resolve().parent.parent / ".venv" / "checkov" / "bin" / "checkov"


def checkov() -> str | None:
    if os.environ.get("TCPRTT_CHECKOV"):
        return os.environ["TCPRTT_CHECKOV"]
    return str(CHECKOV) if CHECKOV.is_file() else shutil.which("checkov")


def test_checkov_fails_only_the_kept_findings():
    """checkov itself, which scripts/setup.sh --test installs in .venv/checkov
    (or TCPRTT_CHECKOV=its command); missing, the test skips, but not in CI."""
    exe = checkov()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("checkov is not installed: scripts/setup.sh --test installs it")
        pytest.skip("checkov is not installed: run scripts/setup.sh --test")
    proc = subprocess.run([exe, "--file", str(MANIFEST), "--framework", "kubernetes",
                           "--output", "json", "--quiet", "--skip-download"],
                          capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stdout)
    failed = {c["check_id"] for c in report["results"]["failed_checks"]}
    assert failed == set(KEPT), failed
    assert report["summary"]["passed"] > 50


def test_daemonset_runs_least_privilege_with_the_web_config_from_a_secret(tmp_path):
    docs = documents()
    assert docs["Namespace"]["metadata"]["labels"][
        "pod-security.kubernetes.io/enforce"] == "privileged"
    ds = docs["DaemonSet"]
    assert ds["metadata"]["namespace"] == docs["Namespace"]["metadata"]["name"]
    pod = ds["spec"]["template"]
    spec = pod["spec"]
    container = spec["containers"][0]
    sc = container["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["BPF", "PERFMON"]}
    assert not sc.get("privileged") and sc["readOnlyRootFilesystem"]
    assert spec["hostNetwork"] is True and spec["automountServiceAccountToken"] is False
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for path in ("/sys/kernel/btf", "/sys/kernel/tracing"):
        assert mounts[path]["readOnly"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    args = list(container["args"])
    config = args[args.index("--web-config") + 1]
    mount = next(m for m in container["volumeMounts"]
                 if config.startswith(m["mountPath"] + "/"))
    assert mount["readOnly"] is True
    assert volumes[mount["name"]]["secret"]["secretName"] == "tcprtt-web-config"
    # The image: its own name, a version, a digest to fill in.
    image = container["image"]
    assert re.fullmatch(r"ghcr\.io/OWNER/tcprtt-exporter:\d+\.\d+\.\d+@sha256:DIGEST", image)
    from runner.run import VERSION
    assert image.split(":")[1].split("@")[0] == VERSION
    # Probes on the exporter's own health path, over TLS.
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/-/healthy" and get["scheme"] == "HTTPS"
        assert get["port"] == container["ports"][0]["name"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/scheme"] == "https"
    assert annotations["prometheus.io/port"] == str(container["ports"][0]["containerPort"])
    # The arguments are the command's own, with a web config where the Secret is.
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  prometheus: $2y$10$" + "a" * 53 + "\n")
    args[args.index("--web-config") + 1] = str(web)
    opts = parse(*args)
    assert opts.prometheus == ("0.0.0.0", container["ports"][0]["containerPort"])
    assert opts.web_config.auth is not None
    policy = docs["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"] == ds["spec"]["selector"]["matchLabels"]
    assert policy["egress"] == [] and set(policy["policyTypes"]) == {"Ingress", "Egress"}


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
    assert re.search(r"^ARG BASE=\S+$", text, flags=re.M)
    assert re.search(r"^FROM \$\{BASE\}$", text, flags=re.M)
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, flags=re.M).group(1))
    assert parse(*cmd).prometheus == ("127.0.0.1", 9464)  # loopback unless told


def test_the_seccomp_profile_allows_bpf_and_refuses_what_changes_the_system():
    """What the profile says; tests/test_container.py runs the exporter under it."""
    pod = daemonset()["spec"]["template"]["spec"]
    for where in (pod, pod["containers"][0]):
        profile = where["securityContext"]["seccompProfile"]
        assert profile == {"type": "Localhost", "localhostProfile": "tcprtt.json"}
    profile = json.loads((DEPLOY / "seccomp-tcprtt.json").read_text())
    refused = {name for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ERRNO"
               and not rule.get("args") for name in rule["names"]}
    assert {"mount", "unshare", "setns", "init_module", "finit_module", "kexec_load",
            "ptrace", "reboot", "keyctl", "pivot_root", "userfaultfd"} <= refused
    assert not {"bpf", "perf_event_open"} & refused
    namespaces = [rule["args"][0]["value"] for rule in profile["syscalls"]
                  if rule["names"] == ["clone"]]
    assert sorted(namespaces) == sorted([0x20000, 0x2000000, 0x4000000, 0x8000000,
                                         0x10000000, 0x20000000, 0x40000000])


def test_the_workflow_builds_and_pushes_the_image_for_both_architectures_on_a_tag():
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "build.yml").read_text())
    jobs = [job for job in workflow["jobs"].values()
            if any(str(s.get("uses", "")).startswith("docker/build-push-action@")
                   for s in job["steps"])]
    assert len(jobs) == 1
    job = jobs[0]
    assert job["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert job["permissions"]["packages"] == "write"
    build = next(s for s in job["steps"]
                 if str(s.get("uses", "")).startswith("docker/build-push-action@"))["with"]
    assert build["file"] == "deploy/Containerfile" and build["push"] is True
    assert set(build["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    naming = " ".join(s.get("run", "") for s in job["steps"])
    assert "ghcr.io/${owner}/tcprtt-exporter:${GITHUB_REF_NAME#v}" in naming
    assert ":latest" not in naming + build["tags"]


def test_the_docs_state_the_series_per_node_that_the_exporter_serves():
    """docs/fleet.md: 29 series a key, fewer than 10 more for the probe, and
    the table's bounds; counted here in what the exporter serves for 1 and 7
    keys."""
    import requests

    from bench.exporter import FakeTracer
    from runner.exporter import Exporter
    text = (REPO / "docs" / "fleet.md").read_text()
    per_key = int(re.search(r"is \*\*(\d+)\s+series\*\*", text).group(1))
    probe = int(re.search(r"fewer than (\d+) in all", text).group(1))
    counted = {}
    for keys in (1, 7):
        exporter = Exporter(FakeTracer(keys), ("127.0.0.1", 0), "remote_address")
        try:
            body = requests.get(f"http://127.0.0.1:{exporter.address[1]}/metrics",
                                timeout=10).text
        finally:
            exporter.close()
        counted[keys] = sum(1 for line in body.splitlines() if line and line[0] != "#")
    assert counted[7] - counted[1] == 6 * per_key
    assert counted[1] - per_key < probe
    rows = re.findall(r"^\|[^|]*\| (\d+) \| ([\d,]+) \|$", text, flags=re.M)
    assert len(rows) == 3
    for capacity, bound in rows:
        assert int(bound.replace(",", "")) == per_key * int(capacity)
    ds = daemonset()["spec"]["template"]["spec"]["containers"][0]["args"]
    capacity = int(ds[ds.index("--max-keys") + 1])
    assert f"| {per_key * capacity:,} |" in text
