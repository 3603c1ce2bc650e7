"""The attach variants' table (config.json) and the one chooser that every
backend uses: which variant a package is, which is tried when, and what a
failed attempt says."""

from __future__ import annotations

import json

import pytest

from runner import package
from runner.config import host_arch, probe_config
from runner.errors import KernelError, KernelUnsupported, TcprttError, VerifierRefused
from runner.tcprtt import variants


def test_the_table_is_config_json_in_its_order():
    config = probe_config()["variants"]
    assert variants.names() == tuple(config)
    for v in variants.table():
        spec = config[v.name]
        assert (v.define, v.attach, list(v.sections), v.check, v.arch_specific) == \
            (spec["define"], spec["attach"], spec["sections"], spec["check"],
             spec["arch_specific"])
        assert v.attach.startswith(v.sections), v.name
        assert variants.of_section(v.attach) == v.name
    # No section prefix marks two variants.
    prefixes = [p for v in variants.table() for p in v.sections]
    assert len(prefixes) == len(set(prefixes))
    assert variants.attach_choices() == ("auto", *variants.names())


def test_the_btf_typed_tracepoint_is_a_variant_of_its_own():
    assert variants.of_section("tp_btf/tcp_probe") == "tp_btf"
    assert variants.of_section("tp/tcp/tcp_probe") == "tracepoint"
    assert variants.of_section("raw_tracepoint/tcp_probe") == "raw_tp"
    assert variants.of_section("uprobe/x") is None


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_every_shipped_package_says_its_own_variant(arch):
    for name in variants.names():
        path = package.shipped(name, arch)
        doc = json.loads(path.read_text())
        assert variants.of_document(doc) == name
        assert doc["meta"]["bpf_skel"]["progs"][0]["attach"] == variants.get(name).attach
        # Without the packer's note, the program's section tells the same.
        del doc["meta"]["tcprtt"]
        assert variants.of_document(doc) == name


def test_a_package_says_its_variant_and_the_file_it_came_from():
    path = package.shipped("tp_btf", host_arch())
    pkg = package.load(path)
    assert pkg.variant == "tp_btf" and pkg.path == str(path)
    assert variants.variant_of(pkg) == "tp_btf"


@pytest.mark.parametrize("doc", [None, [], {"meta": 1}, {"meta": {"tcprtt": {"variant": "x"}}},
                                 {"meta": {"bpf_skel": {"progs": [{"attach": 5}]}}},
                                 {"meta": {"bpf_skel": {"progs": "raw_tp/"}}}])
def test_a_document_of_any_shape_is_no_variant(doc):
    assert variants.of_document(doc) is None


class Loaded:
    def __init__(self, variant: str):
        self.variant = variant

    def close(self) -> None:
        pass


def _choose(failures: dict[str, BaseException], wanted: str = "auto", packages=None):
    """choose() over the real table and this kernel's checks, with a
    loader that fails as ``failures`` say (the chooser's own logic alone)."""
    def load(pkg, variant):
        if variant in failures:
            raise failures[variant]
        return Loaded(variant)
    if packages is None:
        packages = {v: object() for v in variants.names()}
    return variants.choose(packages, {}, wanted, load=load)  # type: ignore[arg-type]


def runnable() -> list[str]:
    return [v for v in variants.names() if variants.check(v) is None]


def test_auto_falls_back_on_unsupported_and_refused_and_says_which():
    first, second, third = runnable()[:3]
    choice = _choose({
        first: KernelUnsupported(f"cannot load rtt_{first}: the kfunc is missing", 22),
        second: VerifierRefused(f"cannot load rtt_{second}: the verifier refused it", 13,
                                log="0: (b7) r0 = 0\n", log_path="/tmp/tcprtt-verifier.log"),
    })
    assert choice.tracer.variant == third
    reasons = {a.variant: a.reason for a in choice.tried}
    assert reasons[first] == (f"not supported by this kernel: cannot load rtt_{first}: "
                              "the kfunc is missing")
    assert reasons[second] == (f"refused by the verifier: cannot load rtt_{second}: the "
                               "verifier refused it (log in /tmp/tcprtt-verifier.log)")
    order = variants.names()
    assert [a.variant for a in choice.tried] == list(order[:order.index(third)])


def test_a_message_that_says_its_kind_and_log_is_not_told_twice():
    first = runnable()[0]
    message = (f"cannot load rtt_{first}: refused by the verifier "
               "(verifier log: /run/tcprtt/verifier-1.log)")
    choice = _choose({first: VerifierRefused(message, log_path="/run/tcprtt/verifier-1.log")})
    assert choice.tried[-1].reason == message


def test_a_plain_kernel_error_is_shown_as_it_is():
    first = runnable()[0]
    choice = _choose({first: KernelError("cannot attach: busy", 16)})
    assert choice.tried[-1].reason == "cannot attach: busy"


def test_none_that_works_lists_every_reason_in_one_line():
    failures = {v: KernelUnsupported("no") for v in variants.names()}
    with pytest.raises(TcprttError) as info:
        _choose(failures)
    message = str(info.value)
    assert "\n" not in message and message.startswith("no attach variant works on this kernel (")
    for name in variants.names():
        assert f"{name}: " in message


def test_a_forced_variant_is_the_only_one_tried():
    first = runnable()[0]
    with pytest.raises(TcprttError, match=rf"^--attach {first} is not available \({first}: "
                                          "refused by the verifier: bad"):
        _choose({first: VerifierRefused("bad")}, wanted=first)
    assert _choose({}, wanted=first).tracer.variant == first


def test_a_variant_without_a_package_is_passed_over():
    first, second = runnable()[:2]
    choice = _choose({}, packages={second: object()})
    assert choice.tracer.variant == second
    reasons = {a.variant: a.reason for a in choice.tried}
    assert reasons[first] == f"no package of this variant to load ({second} only)"


def test_an_error_that_is_not_the_kernels_is_not_a_fallback():
    first = runnable()[0]
    with pytest.raises(TcprttError, match="ecli not found"):
        _choose({first: TcprttError("ecli not found on PATH")})


def test_verbose_shows_every_attempts_whole_log_and_checks_say_their_class(capsys):
    import io

    from runner import session
    first, second = runnable()[:2]
    log = "".join(f"{i}: (b7) r{i % 10} = 0\n" for i in range(40)) + "R0 !read_ok\n"
    failure = VerifierRefused(f"cannot load rtt_{first}: refused", 13, log=log,
                              log_path="/run/tcprtt/verifier-9.log")
    choice = _choose({first: failure})
    assert choice.tracer.variant == second and choice.tried[-1].log == log
    unsupported = [a for a in choice.tried if a.variant not in (first, second)]
    assert all(a.reason.startswith("not supported by this kernel: ") for a in unsupported)
    err = io.StringIO()
    session.show_attempts(choice.tried, err)
    shown = err.getvalue()
    assert log.rstrip("\n") in shown and f"tcprtt: {first} not used: " in shown
    # The same when no variant works: the error carries the attempts for -v.
    with pytest.raises(TcprttError) as info:
        _choose({v: failure for v in variants.names()})
    assert any(a.log == log for a in info.value.tried)
