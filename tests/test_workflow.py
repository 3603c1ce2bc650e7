"""The GitHub workflow file is valid against the workflow schema."""

from __future__ import annotations

import subprocess
import sys

from .conftest import REPO


def test_workflow_validates_against_the_github_workflow_schema():
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                           "vendor.github-workflows",
                           str(REPO / ".github" / "workflows" / "build.yml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflow_publishes_the_release_on_version_tags():
    text = (REPO / ".github" / "workflows" / "build.yml").read_text()
    assert "ghcr.io/${owner}/tcprtt:${version}" in text
    assert "ghcr.io/${owner}/tcprtt:latest" in text
    assert "ubuntu-24.04-arm" in text
