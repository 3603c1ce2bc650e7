"""The GitHub workflow: valid, clean under actionlint, and free of the two
mistakes it once had (git installed after the checkout in a container job;
sudo dropping CI and GITHUB_ACTIONS)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

WORKFLOW = REPO / ".github" / "workflows" / "build.yml"
# scripts/setup.sh --test installs actionlint (built to WebAssembly) here.
RUN_LINT = (REPO / ".venv" / "actionlint" / "node_modules" / "@tktco" / "node-actionlint"
            / "build" / "run-lint.js")
# Through the package's own module, not its command: the command needs a newer
# Node than Debian 12's for its colours, the linter itself does not.
LINT = """
const { readFileSync } = require("fs");
const { runLintForFiles } = require(process.argv[2]);
const files = process.argv.slice(3).map((path) => ({ path, data: readFileSync(path, "utf8") }));
runLintForFiles(files).then((results) => {
  process.stdout.write(JSON.stringify(results.map(({ data, ...r }) => r)));
  process.exit(0);
}, (err) => { console.error(String(err)); process.exit(3); });
"""


def actionlint(*paths: Path) -> list[dict]:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None or not RUN_LINT.is_file():
        why = "actionlint is not installed: run scripts/setup.sh --test"
        if os.environ.get("CI") and not os.environ.get("GITHUB_ACTIONS"):
            pytest.fail(why)
        pytest.skip(why)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "lint.js"  # from a file: under `node -e` the Go runtime deadlocks
        script.write_text(LINT)
        proc = subprocess.run([node, str(script), str(RUN_LINT), *map(str, paths)],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def jobs() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]


def test_workflow_validates_against_the_github_workflow_schema():
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                           "vendor.github-workflows", str(WORKFLOW)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_finds_nothing_in_the_workflow():
    found = actionlint(WORKFLOW)
    assert found == [], "\n".join(f"{r['path']}:{r['line']}:{r['column']}: {r['message']}"
                                  for r in found)


def test_actionlint_does_find_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
                      "      - run: echo ${{ github.no_such_thing }}\n")
    found = actionlint(broken)
    assert [r["line"] for r in found] == [6], found
    assert "no_such_thing" in found[0]["message"]


def test_container_jobs_install_git_before_the_checkout():
    # Without git in the container, actions/checkout downloads a tarball:
    # no .git, and every git command after it fails.
    checked = 0
    for name, job in jobs().items():
        if "container" not in job:
            continue
        steps = job["steps"]
        at = next(i for i, s in enumerate(steps)
                  if str(s.get("uses", "")).startswith("actions/checkout@"))
        installs = " ".join(s.get("run", "") for s in steps[:at])
        assert re.search(r"apt-get install[^\n]*\bgit\b", installs), \
            f"job {name}: git is not installed before actions/checkout"
        checked += 1
    assert checked, "the build job runs in a container"


def _sudo_commands(script: str) -> list[list[str]]:
    found = []
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        found += [words[i + 1:] for i, w in enumerate(words) if w == "sudo"]
    return found


def test_sudo_keeps_ci_and_github_actions():
    # The tests fail rather than skip under CI and skip what hosted runners
    # lack under GITHUB_ACTIONS; sudo resets the environment without this.
    commands = [(name, c) for name, job in jobs().items() for step in job["steps"]
                for c in _sudo_commands(step.get("run", ""))]
    assert commands, "the kernel tests run under sudo"
    for name, args in commands:
        kept: set[str] = set()
        for arg in args:
            if not arg.startswith("-"):
                break
            if arg.startswith("--preserve-env="):
                kept |= set(arg.split("=", 1)[1].split(","))
            if arg in ("-E", "--preserve-env"):
                kept |= {"CI", "GITHUB_ACTIONS"}
        assert {"CI", "GITHUB_ACTIONS"} <= kept, f"job {name}: sudo {' '.join(args)}"


def test_workflow_publishes_the_release_on_version_tags():
    text = WORKFLOW.read_text()
    assert "ghcr.io/${owner}/tcprtt:${version}" in text
    assert "ghcr.io/${owner}/tcprtt:latest" in text
    assert "ubuntu-24.04-arm" in text
