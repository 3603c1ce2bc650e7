"""The tcprtt command end to end, as a user runs it, on real loopback traffic."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from runner import features

from .conftest import REPO, loaded_programs, programs_left, runner_cmd, runner_env, runqlat
from .traffic import tcp_pair

BANNER = "Tracing TCP RTT... Hit Ctrl-C to end."


class Tracing:
    """``python -m runner ...`` started, attached, and always stopped by its PID."""

    def __init__(self, *args: str, preexec=None):
        self.proc = subprocess.Popen(runner_cmd(*args), cwd=REPO, env=runner_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.err_lines: list[str] = []
        self._attached = threading.Event()
        self._out: list[str] = []
        self._readers = [threading.Thread(target=self._read_stderr, daemon=True),
                         threading.Thread(target=self._read_stdout, daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        self._out.append(self.proc.stdout.read())

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.err_lines.append(line)
            if line.strip() == BANNER:
                self._attached.set()

    def wait_attached(self, timeout: float = 10.0) -> None:
        if not self._attached.wait(timeout):
            raise AssertionError(f"tracer did not attach: {''.join(self.err_lines)}")

    def finish(self, timeout: float = 20.0) -> tuple[int, str, str]:
        self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=timeout)
        return self.proc.returncode, "".join(self._out), "".join(self.err_lines)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if not stream.closed:
                stream.close()


def records(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_by_remote_address_json_on_ipv4_and_ipv6(root):
    with Tracing("-B", "-e", "--json", "-d", "3") as t:
        t.wait_attached()
        for host in ("127.0.0.1", "::1"):
            with tcp_pair(host) as pair:
                pair.exchange(300)
        code, out, err = t.finish()
    assert code == 0, err
    by_addr = {r["address"]: r for r in records(out)}
    assert set(by_addr) >= {"127.0.0.1", "::1"}, by_addr.keys()
    for addr, family in (("127.0.0.1", "ipv4"), ("::1", "ipv6")):
        r = by_addr[addr]
        assert r["family"] == family and r["label"] == "Remote Address" and r["unit"] == "usecs"
        assert r["count"] == sum(r["slots"]) >= 300
        assert r["avg"] is not None and r["p50"] <= r["p90"] <= r["p99"]


def test_text_histograms_per_address(root):
    with Tracing("-B", "-d", "3") as t:
        t.wait_attached()
        with tcp_pair("::1") as pair:
            pair.exchange(200)
        with tcp_pair("127.0.0.1") as pair:
            pair.exchange(200)
        code, out, err = t.finish()
    assert code == 0, err
    assert "Remote Address = 127.0.0.1 \n     usecs               : count    distribution\n" in out
    assert "Remote Address = ::1 \n" in out
    assert BANNER in err and BANNER not in out


def test_port_filter_that_matches_nothing_gives_an_empty_histogram(root):
    with Tracing("-p", "1", "-e", "--json", "-d", "2") as t:
        t.wait_attached()
        with tcp_pair() as pair:
            pair.exchange(200)
        code, out, err = t.finish()
    assert code == 0, err
    (record,) = records(out)
    assert record["count"] == 0 and sum(record["slots"]) == 0 and record["address"] is None


def test_intervals_print_each_intervals_counts(root):
    with Tracing("-i", "1", "-d", "3", "-T") as t:
        t.wait_attached()
        code, out, err = t.finish()
    assert code == 0, err
    assert out.count("All Addresses = ****** ") == 3
    stamps = [line for line in out.splitlines() if len(line) == 8 and line.count(":") == 2]
    assert len(stamps) == 3


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signals_print_what_was_gathered_and_exit_zero(root, sig):
    with Tracing("-e") as t:
        t.wait_attached()
        with tcp_pair() as pair:
            pair.exchange(200)
        t.proc.send_signal(sig)
        start = time.monotonic()
        code, out, err = t.finish(timeout=5)
        elapsed = time.monotonic() - start
    assert code == 0, err
    assert elapsed < 1.0
    assert "All Addresses = ****** [AVG" in out and "distribution" in out


@pytest.mark.parametrize("argv,fragment", [
    (["-p", "70000"], "-p/--lport: 70000 is above the maximum of 65535"),
    (["-A", "300.1.1.1"], "-A/--raddr: '300.1.1.1' is not an IPv4 or IPv6 address"),
    (["-b", "-B"], "cannot be used together"),
    (["-i", "0"], "-i/--interval: 0 is below the minimum of 1"),
    (["--package", "/nonexistent.json"], "/nonexistent.json: cannot read the package"),
])
def test_bad_input_is_one_line_and_exit_2_or_1(root, argv, fragment):
    before = loaded_programs()
    proc = subprocess.run(runner_cmd(*argv), cwd=REPO, env=runner_env(), capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode in (1, 2) and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    if "--package" not in argv:
        assert proc.returncode == 2
    assert not programs_left(before)


def test_without_capabilities_it_says_which_are_missing(root):
    # Root without any capability: files stay readable, BPF is out of reach.
    proc = subprocess.run(["setpriv", "--securebits", "+noroot,+noroot_locked",
                           "--inh-caps=-all", "--bounding-set=-all", *runner_cmd("-d", "1")],
                          cwd=REPO, env=runner_env(), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("tcprtt: missing capability CAP_BPF and CAP_PERFMON: run as "
                                   "root, or grant CAP_BPF and CAP_PERFMON")


def test_forced_variant_the_kernel_lacks_fails_clearly(root):
    lacking = [v for v in ("fentry", "kprobe") if features.check(v) is not None]
    if not lacking:
        pytest.skip("this kernel has both fentry and kprobes")
    proc = subprocess.run(runner_cmd("--attach", lacking[0], "-d", "1"), cwd=REPO,
                          env=runner_env(), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"tcprtt: --attach {lacking[0]} is not available ({lacking[0]}: ")


def test_verbose_names_the_variant_that_runs(root):
    proc = subprocess.run(runner_cmd("-v", "-d", "1"), cwd=REPO, env=runner_env(),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "tcprtt: attached with the " in proc.stderr


def test_closed_pipe_ends_quietly(root):
    proc = subprocess.run(f"{' '.join(runner_cmd('-i', '1', '-d', '3'))} | head -1",
                          shell=True, cwd=REPO, env=runner_env(), capture_output=True,
                          text=True, timeout=30)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_fixture_runs_through_the_generic_runner(root):
    busy = subprocess.Popen(["sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
    try:
        proc = subprocess.run(runner_cmd("run", str(runqlat()), "-d", "2", "--json"),
                              cwd=REPO, env=runner_env(), capture_output=True, text=True,
                              timeout=30)
    finally:
        busy.kill()
        busy.wait()
    assert proc.returncode == 0, proc.stderr
    recs = records(proc.stdout)
    assert recs and sum(sum(r["value"]["slots"]) for r in recs) > 0
    assert all(set(r["value"]) == {"slots", "comm"} for r in recs)


def test_generic_runner_text_and_setting_flags(root):
    proc = subprocess.run(runner_cmd("run", str(runqlat()), "-d", "1", "--targ_ms",
                                     "--targ_tgid", str(os.getpid())),
                          cwd=REPO, env=runner_env(), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    bad = subprocess.run(runner_cmd("run", str(runqlat()), "--targ_tgid", "many"),
                         cwd=REPO, env=runner_env(), capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "tcprtt: error: --targ_tgid: 'many' is not an integer"


def shipped_package(variant: str, arch: str | None = None) -> str:
    from runner.build import host_arch
    return str(REPO / "runner" / "packages" / (arch or host_arch()) / f"tcprtt.{variant}.json")


def tcprtt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(runner_cmd(*args), cwd=REPO, env=runner_env(), capture_output=True,
                          text=True, timeout=60)


def test_help_lists_every_command_and_version_prints_it():
    proc = tcprtt("--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("tcprtt run PACKAGE.json", "tcprtt push", "tcprtt pull", "tcprtt doctor"):
        assert command in proc.stdout
    version = tcprtt("--version")
    assert version.returncode == 0
    assert re.fullmatch(r"tcprtt \d+\.\d+\.\d+\n", version.stdout), version.stdout


def test_run_help_needs_no_package():
    proc = tcprtt("run", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: tcprtt run PACKAGE.json")
    assert "--interval" in proc.stdout and "--json" in proc.stdout
    bare = tcprtt("run")
    assert bare.returncode == 2
    assert bare.stderr == ("tcprtt: error: run: give the package.json to run first "
                           "(tcprtt run --help)\n")


def test_doctor_help_is_plain_text():
    proc = tcprtt("doctor", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "``" not in proc.stdout and "Report what this machine offers tcprtt" in proc.stdout


def test_runner_only_settings_are_hidden_and_refused():
    package = shipped_package("raw_tp")
    helped = tcprtt("run", package, "--help")
    assert helped.returncode == 0, helped.stderr
    assert "--lport" in helped.stdout
    assert "targ_percpu" not in helped.stdout and "set by the runner" not in helped.stdout
    refused = tcprtt("run", package, "--targ_percpu")
    assert refused.returncode == 2
    assert refused.stderr == ("tcprtt: error: --targ_percpu: set by the runner, "
                              "not on the command line\n")


@pytest.mark.parametrize("argv,line", [
    (["--laddr4", "-1"], "tcprtt: error: --laddr4: -1 does not fit in unsigned long long"),
    (["--lport", "99999999999"], "tcprtt: error: --lport: 99999999999 does not fit in int"),
    (["--ipver", "four"], "tcprtt: error: --ipver: 'four' is not an integer"),
])
def test_bad_setting_values_are_one_line_and_exit_2(argv, line):
    proc = tcprtt("run", shipped_package("raw_tp"), *argv, "-d", "1")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == line + "\n"


def test_ctrl_c_before_tracing_starts_exits_130_without_a_traceback(root):
    proc = subprocess.Popen(runner_cmd("-d", "5"), cwd=REPO, env=runner_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.05)  # still importing
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err == "" and out == ""


def test_json_lines_come_out_as_each_interval_ends(root):
    proc = subprocess.Popen(runner_cmd("--json", "-i", "1", "-d", "6"), cwd=REPO,
                            env=runner_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()), daemon=True)
    try:
        reader.start()
        reader.join(timeout=5)  # started, attached, one interval: well within 5 s of 6
        assert first and first[0], "no JSON line before the end of the run"
        assert proc.poll() is None, "the run ended before its first line was read"
        assert set(json.loads(first[0])) >= {"time", "count", "slots", "p99"}
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


def test_verbose_says_a_variant_is_absent_from_the_package(root):
    proc = tcprtt("--package", shipped_package("tracepoint"), "-v", "-d", "1")
    assert proc.returncode == 0, proc.stderr
    assert ("tcprtt: fentry not used: no package of this variant to load (tracepoint only)"
            in proc.stderr.splitlines())
    assert "architecture" not in proc.stderr
    assert "tcprtt: attached with the tracepoint variant" in proc.stderr


def test_package_built_for_another_architecture_is_refused(root):
    from runner.build import host_arch
    other = "arm64" if host_arch() == "x86_64" else "x86_64"
    package = shipped_package("raw_tp", other)
    before = loaded_programs()
    proc = tcprtt("--package", package, "-d", "1")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == (f"tcprtt: {package}: the package was built for {other}, "
                           f"this machine is {host_arch()}\n")
    assert not programs_left(before)


# -- registry credentials: --password-stdin ---------------------------------------------

def _registry_ns(*argv: str):
    import argparse

    from runner import options
    parser = argparse.ArgumentParser()
    options.add_registry_flags(parser)
    return parser.parse_args(list(argv))


def test_password_stdin_reads_the_first_line_only():
    import io

    from runner import options
    for given in ("s3cret\nnext line\n", "s3cret\r\n", "s3cret"):
        reg = options.registry_options(_registry_ns("--username", "ci", "--password-stdin"),
                                       stdin=io.StringIO(given))
        assert (reg.username, reg.password) == ("ci", "s3cret"), given
    spaced = options.registry_options(_registry_ns("--username", "ci", "--password-stdin"),
                                      stdin=io.StringIO(" two words \n"))
    assert spaced.password == " two words "  # kept as typed, only the line ending goes


@pytest.mark.parametrize("argv,stdin,message", [
    (("--username", "ci", "--password-stdin"), "", "no password on the first line"),
    (("--username", "ci", "--password-stdin"), "\n", "no password on the first line"),
    (("--username", "ci", "--password-stdin"), "x" * 5000, "longer than 4096"),
    (("--password-stdin",), "s3cret\n", "--password-stdin needs --username"),
    (("--username", "ci", "--password", "a", "--password-stdin"), "b\n", "cannot be used together"),
    (("--username", "ci"), "", "--username needs --password-stdin"),
    (("--password", "a"), "", "the password needs --username"),
])
def test_password_stdin_misuse_is_one_usage_error(argv, stdin, message):
    import io

    from runner import options
    from runner.errors import UsageError
    with pytest.raises(UsageError, match=re.escape(message)):
        options.registry_options(_registry_ns(*argv), stdin=io.StringIO(stdin))


def test_help_says_password_is_seen_in_ps_and_offers_password_stdin():
    env = dict(runner_env(), COLUMNS="400")  # no line broken inside a flag's name
    for command in ((), ("push",), ("pull",)):
        proc = subprocess.run(runner_cmd(*command, "--help"), cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        text = " ".join(proc.stdout.split())
        assert "--password-stdin" in text
        assert "sees it (ps): prefer --password-stdin" in text


def test_push_and_pull_with_the_password_on_stdin(tmp_path):
    """A registry behind TLS and basic auth: the password comes on stdin and
    never on the command line; a wrong one is refused in one line."""
    from .registry_server import registry as registry_server
    with registry_server(tmp_path / "secure", tls=True, users={"ci": "s3cret"}) as s:
        env = runner_env()
        env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
        env["HOME"] = str(tmp_path / "home")  # no ~/.docker/config.json to fall back on
        for name in ("TCPRTT_REGISTRY_USERNAME", "TCPRTT_REGISTRY_PASSWORD", "DOCKER_CONFIG"):
            env.pop(name, None)
        ref = f"{s.address}/tools/tcprtt:1"
        flags = ("--ca-file", str(s.ca_file), "--username", "ci", "--password-stdin")

        def tcprtt(*argv: str, stdin: str) -> subprocess.CompletedProcess:
            return subprocess.run(runner_cmd(*argv), cwd=REPO, env=env, input=stdin,
                                  capture_output=True, text=True, timeout=120)

        wrong = tcprtt("push", ref, "--no-module", *flags, stdin="not-it\n")
        assert wrong.returncode == 1, wrong.stderr
        assert len(wrong.stderr.splitlines()) == 1 and "401" in wrong.stderr, wrong.stderr
        assert "not-it" not in wrong.stderr
        pushed = tcprtt("push", ref, "--no-module", *flags, stdin="s3cret\n")
        assert pushed.returncode == 0, pushed.stderr
        assert pushed.stdout.startswith(f"{s.address}/tools/tcprtt@sha256:")
        pulled = tcprtt("pull", ref, *flags, stdin="s3cret\n")
        assert pulled.returncode == 0, pulled.stderr
        assert pulled.stdout.splitlines()[0] == pushed.stdout.strip()
        assert "  raw_tp: " in pulled.stdout
        none = tcprtt("pull", ref, "--ca-file", str(s.ca_file), stdin="")
        assert none.returncode == 1 and "asks for credentials" in none.stderr, none.stderr


def test_the_module_only_hand_over_keeps_the_registry_flags_back():
    from runner.cli.trace import parser
    from runner.session import module_flags
    known = [f for f in parser()._option_string_actions if f.startswith("--")]
    argv = ["-d", "1", "--image", "r.example/t:1", "--username", "ci", "--password-stdin",
            "--ca=ca.pem", "--insec", "--password", "pw", "-B", "--json"]
    assert module_flags(argv, known) == ["-d", "1", "-B", "--json"]


# -- what a plain trace imports -------------------------------------------------------------

def test_a_plain_trace_imports_no_registry_exporter_packer_or_wasm_runtime(root):
    """``tcprtt -d 1`` as the console script runs it, with sys.modules read
    once it returns: none of the modules that only other commands need."""
    from bench.footprint import HEAVY, measure
    assert {"requests", "wasmtime", "jsonschema", "runner.exporter", "runner.build"} <= set(HEAVY)
    hwm, rss, heavy = measure(["-d", "1"])
    assert heavy == [], f"a plain trace imported {heavy}"
    assert 0 < rss <= hwm  # read from the running process, at the banner
    # The control: the same report names what a --prometheus run imports.
    from .traffic import free_port
    _, _, with_exporter = measure(["-d", "1", "--prometheus", f"127.0.0.1:{free_port()}"])
    assert "runner.exporter" in with_exporter


def test_the_old_command_module_imports_nothing_until_a_name_is_used():
    """runner.run stays for those who import from it (pyproject.toml reads
    its VERSION); each name there is the one of the module that now has it."""
    code = ("import sys, runner.run as r\n"
            "assert 'runner.cli.main' not in sys.modules and 'runner.session' not in sys.modules\n"
            "from runner.cli.main import main\n"
            "from runner.render.interval import render_interval\n"
            "from runner.session import Signals, trace_loop\n"
            "assert (r.main, r.render_interval, r.Signals, r.trace_loop) == "
            "(main, render_interval, Signals, trace_loop)\n"
            "assert all(getattr(r, name) is not None for name in r.__all__)\n"
            "print(r.VERSION)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=runner_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    version = subprocess.run(runner_cmd("--version"), cwd=REPO, env=runner_env(),
                             capture_output=True, text=True, timeout=60)
    assert version.stdout == f"tcprtt {proc.stdout.strip()}\n"
