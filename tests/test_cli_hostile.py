"""The command under hostile conditions: closed or full output, closed
stderr, odd values; always one line and exit 1 or 2, never a traceback."""

from __future__ import annotations

import json
import subprocess

import pytest

from runner.build import host_arch
from runner.loader import libbpf
from runner.package import shipped

from .conftest import REPO, runner_cmd, runner_env

BANNER = "Tracing TCP RTT... Hit Ctrl-C to end."


def shell(redirect: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The runner with its stdout or stderr redirected by sh(1)."""
    return subprocess.run(["sh", "-c", f'exec "$@" {redirect}', "sh", *runner_cmd(*args)],
                          cwd=REPO, env=runner_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("redirect,words", [(">&-", "Bad file descriptor"),
                                            (">/dev/full", "No space left on device")])
def test_output_that_cannot_be_written_is_one_line_and_exit_1(root, redirect, words):
    proc = shell(redirect, "-d", "1")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == f"{BANNER}\ntcprtt: cannot write the output: {words}\n"
    for args in (["--version"], ["--help"], ["doctor"]):
        proc = shell(redirect, *args)
        assert (proc.returncode, proc.stderr) == (
            1, f"tcprtt: cannot write the output: {words}\n"), args


def test_a_reader_gone_is_141_and_quiet(root):
    proc = subprocess.Popen(runner_cmd("-i", "1", "-d", "3"), cwd=REPO, env=runner_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # before the first interval is written
    try:
        err = proc.stderr.read()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == 141
    assert err == BANNER + "\n"


def test_with_stderr_closed_stdout_has_only_the_json(root):
    proc = shell("2>&-", "--json", "-d", "1")
    assert proc.returncode == 0
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines and all(json.loads(line)["label"] == "All Addresses" for line in lines)


PACKAGE = str(shipped("raw_tp", host_arch()))


@pytest.mark.parametrize("argv,line", [
    (["-6", "-A", "::ffff:127.0.0.1"],
     "-6/--ipv6 cannot be used with an IPv4 address filter (-A/--raddr ::ffff:127.0.0.1 "
     "is v4-mapped, which tcprtt counts as IPv4)"),
    (["-6", "-a", "::ffff:10.0.0.1"],
     "-6/--ipv6 cannot be used with an IPv4 address filter (-a/--laddr ::ffff:10.0.0.1 "
     "is v4-mapped, which tcprtt counts as IPv4)"),
    (["-p", "\u0661"], "-p/--lport: '\u0661' is not an integer"),
    (["-P", " 1"], "-P/--rport: ' 1' is not an integer"),
    (["-d", "1_0"], "-d/--duration: '1_0' is not an integer"),
    (["-i", "\uff11"], "-i/--interval: '\uff11' is not an integer"),
    (["-d", "0x10"], "-d/--duration: '0x10' is not an integer"),
    (["--max-keys", "1_000"], "--max-keys: '1_000' is not an integer"),
    (["--package", ""], "--package: an empty path (give the package.json to load)"),
    (["run", PACKAGE, "-i", "1e-9"],
     "-i/--interval: 1e-09 is below the minimum of 0.1 seconds"),
    (["run", PACKAGE, "-i", "0.05"],
     "-i/--interval: 0.05 is below the minimum of 0.1 seconds"),
    (["run", PACKAGE, "--lport", "1_0"], "--lport: '1_0' is not an integer"),
    (["run", PACKAGE, "--lport", "\u0661"], "--lport: '\u0661' is not an integer"),
    (["run", PACKAGE, "--lport", " 1"], "--lport: ' 1' is not an integer"),
])
def test_values_once_accepted_are_refused_in_one_line(argv, line):
    proc = subprocess.run(runner_cmd(*argv), cwd=REPO, env=runner_env(), capture_output=True,
                          text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == f"tcprtt: error: {line}\n"


def test_libbpf_error_codes_are_named():
    assert libbpf.strerror(4007) == ("Kernel verifier blocks program loading "
                                     "(LIBBPF_ERRNO__VERIFY)")
    assert libbpf.strerror(4006).endswith("(LIBBPF_ERRNO__LOAD)")
    assert libbpf.strerror(4013).endswith("(LIBBPF_ERRNO__NLPARSE)")
    assert libbpf.strerror(2) == "No such file or directory"

    def bpf_object__load():
        return -4001

    with pytest.raises(libbpf.LibbpfError) as info:
        libbpf._check_int(-4001, bpf_object__load, ())
    assert str(info.value) == ("bpf_object__load: BPF object format invalid "
                               "(LIBBPF_ERRNO__FORMAT)")
    assert info.value.errno == 4001
