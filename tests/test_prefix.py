"""Prefix keys: --laddr-prefix/--raddr-prefix V4LEN[,V6LEN] key the
histograms by network, the mask applied in the kernel before the lookup.
On the lab's IPv4 and IPv6 traffic each network's histogram is exactly the
sum of its hosts' (counted at the same time with whole-address keys), and
labels and headings are in CIDR notation."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from collections import defaultdict
from contextlib import ExitStack

import pytest

from runner import options
from runner.errors import UsageError
from runner.histogram import Hist
from runner.tcprtt import variants
from runner.tcprtt.keys import key_address, make_key
from runner.tcprtt.settings import probe_settings
from runner.tracer import LibbpfTracer

from .conftest import REPO, runner_cmd, runner_env
from .lab.netns import Lab
from .test_lab import MASS, mass_in, pkg, slot_of

DELAYS = [3.0, 12.0]  # two peers: RTTs of 6 and 24 ms
ROUNDS = 60
LAB_V4 = ipaddress.ip_network("10.201.0.0/16")
LAB_V6 = ipaddress.ip_network("fd00:201::/32")


def parse(*argv: str) -> options.Options:
    parser = options.Parser(prog="tcprtt")
    options.add_probe_flags(parser)
    options.add_runner_flags(parser)
    return options.from_namespace(parser.parse_args(list(argv)))


# The flags ----------------------------------------------------------------------

def test_prefix_flags_become_the_bits_the_kernel_clears():
    assert probe_settings(parse("-B", "--raddr-prefix", "24,64")) == {
        "targ_raddr_hist": True, "targ_raddr4_clear": 8, "targ_raddr6_clear": 64}
    # One number: IPv6 keys stay whole; a whole length clears nothing.
    assert probe_settings(parse("-b", "--laddr-prefix", "16")) == {
        "targ_laddr_hist": True, "targ_laddr4_clear": 16}
    assert probe_settings(parse("-B", "--raddr-prefix", "32,128")) == {"targ_raddr_hist": True}
    assert probe_settings(parse("-B", "--raddr-prefix", "0,0")) == {
        "targ_raddr_hist": True, "targ_raddr4_clear": 32, "targ_raddr6_clear": 128}
    opts = parse("-B", "--raddr-prefix", "24,64")
    assert opts.prefixes == (24, 64) and parse("-B").prefixes == (None, None)
    assert parse("-b", "--laddr-prefix", "20").prefixes == (20, None)


@pytest.mark.parametrize("argv,message", [
    (["-B", "--raddr-prefix", "33"], "--raddr-prefix: IPv4 prefix length 33 is outside 0..32"),
    (["-B", "--raddr-prefix", "24,129"],
     "--raddr-prefix: IPv6 prefix length 129 is outside 0..128"),
    (["-B", "--raddr-prefix", "24,"], "--raddr-prefix: '24,' is not V4LEN[,V6LEN]"),
    (["-B", "--raddr-prefix=-1"], "--raddr-prefix: '-1' is not V4LEN[,V6LEN]"),
    (["-B", "--raddr-prefix", "24,64,8"], "--raddr-prefix: '24,64,8' is not V4LEN[,V6LEN]"),
    (["-B", "--raddr-prefix", "/24"], "--raddr-prefix: '/24' is not V4LEN[,V6LEN]"),
    (["-b", "--laddr-prefix", "٢٤"], "--laddr-prefix: '٢٤' is not V4LEN[,V6LEN]"),
    (["--raddr-prefix", "24"], "--raddr-prefix needs -B/--byraddr"),
    (["-b", "--raddr-prefix", "24"], "--raddr-prefix needs -B/--byraddr"),
    (["-B", "--laddr-prefix", "24"], "--laddr-prefix needs -b/--byladdr"),
])
def test_a_bad_prefix_is_one_line_naming_it(argv, message):
    with pytest.raises(UsageError) as err:
        parse(*argv)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_command_line_refuses_a_bad_prefix_with_exit_2():
    proc = subprocess.run(runner_cmd("-B", "--raddr-prefix", "24,200"), cwd=REPO,
                          env=runner_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "IPv6 prefix length 200 is outside 0..128" \
        in proc.stderr, proc.stderr


# Labels -------------------------------------------------------------------------

def test_labels_and_headings_are_cidr():
    from runner.render import prometheus, text
    from runner.render.interval import View, rows
    v4 = make_key(2, ipaddress.IPv4Address("10.1.2.0").packed)
    v6 = make_key(10, ipaddress.IPv6Address("fd00:1::").packed)
    assert key_address(v4, (24, 64)) == "10.1.2.0/24"
    assert key_address(v6, (24, 64)) == "fd00:1::/64"
    assert key_address(v6, (24, None)) == "fd00:1::"  # one number: IPv6 stays whole
    assert key_address(v4) == "10.1.2.0"
    hists = [Hist(v6, (0, 3)), Hist(v4, (1, 0))]
    shown = rows(hists, True, (24, 64))
    assert [(a, f) for a, f, _ in shown] == [("10.1.2.0/24", "ipv4"), ("fd00:1::/64", "ipv6")]
    import datetime
    out = text.interval(View(shown, datetime.datetime.now(), "Remote Address", "usecs",
                             False, False))
    assert "Remote Address = 10.1.2.0/24 \n" in out and "Remote Address = fd00:1::/64 \n" in out
    family = prometheus.rtt_histogram(hists, "remote_address",
                                      lambda k: key_address(k, (24, 64)))
    labels = {s.labels["remote_address"] for s in family.samples}
    assert labels == {"10.1.2.0/24", "fd00:1::/64"}


# In the kernel, on the lab's traffic --------------------------------------------

@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with Lab(DELAYS, tmp_path_factory.mktemp("lab")) as lab:
        yield lab


def _variant() -> str:
    for name in ("raw_tp", *variants.names()):
        if variants.check(name) is None:
            return name
    pytest.fail("no variant runs on this kernel")


def _drive(lab: Lab, family: int, port: int) -> None:
    """Each peer in turn: ROUNDS request/response rounds over ``family``."""
    for peer in lab.peers:
        server = lab.serve(peer, family, port)
        try:
            ping = lab.ping(peer, family, port, ROUNDS)
            out, _ = ping.communicate(timeout=60)
            assert int(out.strip()) == ROUNDS
        finally:
            server.terminate()
            server.wait(timeout=5)


def _in_lab(address: str) -> bool:
    net = ipaddress.ip_network(address, strict=False)
    return net.subnet_of(LAB_V4) if net.version == 4 else net.subnet_of(LAB_V6)


def _by_network(whole: dict[str, Hist], v4: int, v6: int) -> dict[str, tuple]:
    """The whole-address histograms summed by network, as Python cuts them."""
    out: dict[str, list[int]] = defaultdict(lambda: [0] * 27)
    for address, hist in whole.items():
        length = v4 if ":" not in address else v6
        net = ipaddress.ip_network(f"{address}/{length}", strict=False)
        out[str(net)] = [a + b for a, b in zip(out[str(net)], hist.slots)]
    return {k: tuple(v) for k, v in out.items()}


@pytest.mark.parametrize("side", ["raddr", "laddr"])
def test_networks_hold_the_sum_of_their_hosts_on_v4_and_v6(root, lab, side):
    """Tracers attached at once: whole addresses, /24 and /64 (a network per
    peer), and /20 and /36 (both peers in one network, cut inside a byte
    and inside a word)."""
    variant = _variant()
    keyed = {f"targ_{side}_hist": True}
    cuts = {(24, 64): (8, 64), (20, 36): (12, 92)}
    with ExitStack() as stack:
        whole = stack.enter_context(LibbpfTracer(pkg(variant), keyed, variant))
        cut = {lengths: stack.enter_context(LibbpfTracer(
                   pkg(variant), {**keyed, f"targ_{side}4_clear": c4,
                                  f"targ_{side}6_clear": c6}, variant))
               for lengths, (c4, c6) in cuts.items()}
        for family in (4, 6):
            _drive(lab, family, 7100 + family)
        time.sleep(0.3)  # the last segments through the delay line
        hosts = {key_address(h.key): h for h in whole.snapshot()}
        nets = {lengths: {key_address(h.key, lengths): h for h in t.snapshot()}
                for lengths, t in cut.items()}
    hosts = {a: h for a, h in hosts.items() if _in_lab(a)}
    peers = {p.addr(f) for p in lab.peers for f in (4, 6)}
    clients = {p.client_addr(f) for p in lab.peers for f in (4, 6)}
    assert (peers | clients) <= set(hosts), sorted(hosts)
    for lengths, got in nets.items():
        got = {a: h.slots for a, h in got.items() if _in_lab(a)}
        assert got == _by_network(hosts, *lengths), lengths
    per_peer = set(nets[(24, 64)]) & {f"10.201.{p.index}.0/24" for p in lab.peers}
    assert len(per_peer) == len(lab.peers)
    assert {"10.201.0.0/20", "fd00:201::/36"} <= set(nets[(20, 36)])
    # Each peer's network holds its connection's RTT, in the lab's bucket.
    for peer in lab.peers:
        for net in (f"10.201.{peer.index}.0/24", f"fd00:201:{peer.index}::/64"):
            hist = nets[(24, 64)][net]
            assert hist.total >= 2 * ROUNDS
            assert mass_in(hist, slot_of(peer.rtt_us)) >= MASS, (net, hist.slots)


def test_the_command_line_keys_by_network(root, lab):
    proc = subprocess.Popen(runner_cmd("-B", "--raddr-prefix", "24,64", "--json", "-d", "60"),
                            cwd=REPO, env=runner_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert "Tracing TCP RTT" in proc.stderr.readline()
        for family in (4, 6):
            _drive(lab, family, 7200 + family)
        proc.send_signal(2)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    records = {r["address"]: r for r in map(json.loads, out.splitlines())}
    for peer in lab.peers:
        for net in (f"10.201.{peer.index}.0/24", f"fd00:201:{peer.index}::/64"):
            assert records[net]["count"] >= 2 * ROUNDS, sorted(records)
    assert not any(a in records for p in lab.peers for a in (p.v4, p.v6))


def test_the_wasm_module_refuses_prefix_keys_in_one_line(tmp_path):
    """The module keys by whole addresses: it reads the flags as the runner
    does (so abbreviations are the runner's) and refuses them."""
    from .test_wasm_module import StubHost
    code, out, err = StubHost().run(["-B", "--raddr-prefix", "24,64"], tmp_path)
    assert code == 2 and out == ""
    assert err == "tcprtt: error: --raddr-prefix: the wasm module keys by whole addresses " \
        "(the runner takes it)\n"


def test_the_daemonset_keys_by_the_peers_slash_24():
    from .test_deploy import daemonset
    args = list(daemonset()["spec"]["template"]["spec"]["containers"][0]["args"])
    at = args.index("--web-config")
    del args[at:at + 2]  # the file is the Secret's, on the node
    opts = parse(*args)
    assert opts.byraddr and opts.prefixes == (24, 64)
    values = probe_settings(opts)
    assert values["targ_raddr4_clear"] == 8 and values["targ_raddr6_clear"] == 64
