"""RTTs the tests control: namespaces joined by a delay line, and tcprtt must
put each connection's samples in the bucket of the RTT the lab sets, agree
with the kernel's own `ss -ti`, key and filter by the right addresses and
ports, for IPv4 and IPv6."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from contextlib import ExitStack, contextmanager

import pytest

from runner import features, package
from runner.build import host_arch
from runner.histogram import Hist, bucket_bounds, percentile
from runner.tcprtt import variants
from runner.tcprtt.keys import ipv6_halves, key_address
from runner.tracer import LibbpfTracer

from .conftest import REPO, runner_cmd, runner_env
from .lab.netns import Lab

# One-way delays (ms): RTTs of 6, 24 and 110 ms, each well inside one log2 bucket
# in microseconds (4096..8191, 16384..32767, 65536..131071) and in milliseconds
# (4..7, 16..31, 64..127).
DELAYS = [3.0, 12.0, 55.0]
ROUNDS = {3.0: 120, 12.0: 60, 55.0: 20}
MASS = 0.9  # share of a key's samples that must sit in the lab's bucket
# The variants this kernel runs, in the variant table's order: each is
# attached to the same traffic and checked on its own.
# As the runner does, the check mounts tracefs where it is not (a fresh machine).
RUNNABLE = tuple(v for v in variants.names() if variants.check(v) is None)


def slot_of(value: float) -> int:
    v = int(value)
    return 0 if v < 2 else v.bit_length() - 1


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    for variant in ("tp_btf", "raw_tp"):
        if features.check(variant) is not None:
            pytest.fail(f"the project's machines run the {variant} variant")
    with Lab(DELAYS, tmp_path_factory.mktemp("lab")) as lab:
        yield lab


def pkg(variant: str = "raw_tp") -> package.Package:
    return package.load(package.shipped(variant, host_arch()))


def drive(lab: Lab, plans, sample_ss: bool = False) -> dict:
    """Run ``plans`` [(peer, family, port)] at once; returns ss's srtt per plan."""
    servers = [lab.serve(peer, family, port) for peer, family, port in plans]
    pings = [lab.ping(peer, family, port, ROUNDS[peer.delay_ms]) for peer, family, port in plans]
    seen = {}
    deadline = time.monotonic() + 30
    while any(p.poll() is None for p in pings) and time.monotonic() < deadline:
        # Ask ss once per connection, a moment into its run: ss itself costs
        # CPU that would show up as jitter on the lab's delay line.
        if sample_ss and time.monotonic() > deadline - 29.5:
            for peer, family, _port in plans:
                if (peer.index, family) not in seen:
                    srtt = lab.ss_srtt_us(peer, family)
                    if srtt:
                        seen[(peer.index, family)] = srtt
        time.sleep(0.1)
    for p, (peer, family, _port) in zip(pings, plans):
        out, _ = p.communicate(timeout=30)
        assert int(out.strip()) == ROUNDS[peer.delay_ms], f"peer {peer.index} IPv{family}"
    for s in servers:
        s.terminate()
        s.wait(timeout=5)
    return seen


def drive_each(lab: Lab, plans) -> None:
    """One connection after another: on two cores, several at once put the
    lab's own scheduling delays into the fastest peer's RTT."""
    for plan in plans:
        drive(lab, [plan])


def mass_in(hist: Hist, slot: int) -> float:
    return hist.slots[slot] / hist.total if hist.total else 0.0


@contextmanager
def every_variant(values: dict):
    """One tracer per variant this kernel runs, all attached at once."""
    with ExitStack() as stack:
        yield {v: stack.enter_context(LibbpfTracer(pkg(v), values, v)) for v in RUNNABLE}


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("ms", [False, True], ids=["usecs", "msecs"])
def test_each_peer_lands_in_its_bucket_and_agrees_with_ss(root, lab, family, ms):
    values = {"targ_raddr_hist": True, "targ_show_ext": True}
    if ms:
        values["targ_ms"] = True
    ports = {peer.index: 6000 + 10 * family + peer.index + (100 if ms else 0)
             for peer in lab.peers}
    seen = {}
    with every_variant(values) as tracers:
        # One peer after another, under one tracer each: three connections at
        # once on two cores put scheduling spikes into the lab's own RTT (the
        # test below runs two peers at once).
        for p in lab.peers:
            seen.update(drive(lab, [(p, family, ports[p.index])], sample_ss=True))
        by_variant = {v: {key_address(h.key): h for h in t.snapshot()}
                      for v, t in tracers.items()}
    scale = 1000 if ms else 1
    for peer in lab.peers:
        expected = slot_of(peer.rtt_us / scale)
        # The client's sockets see the peer as remote; the peer's sockets see the client.
        for variant, hists in by_variant.items():
            for addr in (peer.addr(family), peer.client_addr(family)):
                h = hists.get(addr)
                assert h is not None and h.total > 0, \
                    f"{variant}: no histogram for {addr}: {list(hists)}"
                assert mass_in(h, expected) >= MASS, (variant, addr, expected, h.slots)
                low, high = bucket_bounds(expected)
                assert low <= h.latency / h.cnt <= high, (variant, addr, h.latency / h.cnt)
                assert low <= percentile(h.slots, 0.5) <= high, (variant, addr)
        srtt = seen.get((peer.index, family))
        assert srtt is not None, "ss showed the connection while it ran"
        assert slot_of(srtt / scale) == expected, (peer.index, srtt)


@pytest.mark.parametrize("family", [4, 6])
def test_two_peers_at_once_each_get_their_own_histogram(root, lab, family):
    near, far = lab.peers[1], lab.peers[2]
    with LibbpfTracer(pkg(), {"targ_raddr_hist": True}, "raw_tp") as tracer:
        drive(lab, [(near, family, 6800 + family), (far, family, 6810 + family)])
        hists = {key_address(h.key): h for h in tracer.snapshot() if h.total}
    # Other TCP traffic on the machine has keys too; the lab's are its own.
    assert {a for a in hists if in_lab(a)} == {near.addr(family), near.client_addr(family),
                                               far.addr(family), far.client_addr(family)}
    for peer in (near, far):
        for addr in (peer.addr(family), peer.client_addr(family)):
            assert mass_in(hists[addr], slot_of(peer.rtt_us)) >= MASS, (addr, hists[addr].slots)


@pytest.mark.parametrize("family", [4, 6])
def test_average_and_percentiles_fall_in_the_lab_bucket(root, lab, family):
    # One connection at a time: with three at once on two cores, scheduling
    # spikes in the lab itself can put a few percent of samples one bucket up,
    # which p99 would see.
    for peer in lab.peers:
        with every_variant({"targ_raddr_hist": True, "targ_show_ext": True}) as tracers:
            drive(lab, [(peer, family, 6700 + 10 * family + peer.index)])
            by_variant = {v: {key_address(h.key): h for h in t.snapshot()}
                          for v, t in tracers.items()}
        expected = slot_of(peer.rtt_us)
        low, high = bucket_bounds(expected)
        for variant, hists in by_variant.items():
            h = hists[peer.addr(family)]
            assert low <= h.latency / h.cnt <= high, variant
            for q in (0.5, 0.9, 0.99):
                assert low <= percentile(h.slots, q) <= high, (variant, peer.index, q, h.slots)


LAB_NETWORKS = (ipaddress.ip_network("10.201.0.0/16"), ipaddress.ip_network("fd00:201::/32"))


def in_lab(addr: str) -> bool:
    """Whether an address is one of the lab's (tests/lab/netns.py numbers them)."""
    ip = ipaddress.ip_address(addr)
    return any(ip.version == net.version and ip in net for net in LAB_NETWORKS)


def address_filter(name: str, addr) -> dict[str, int]:
    """The probe's settings for an address filter: the IPv4 setting, or the
    IPv6 one's two halves."""
    if addr.version == 4:
        return {name: int(addr)}
    hi, lo = ipv6_halves(addr)
    return {f"{name}_v6_hi": hi, f"{name}_v6_lo": lo}


@pytest.mark.parametrize("family", [4, 6])
def test_remote_address_filter_keeps_only_its_peer(root, lab, family):
    target = lab.peers[1]
    addr = ipaddress.ip_address(target.addr(family))
    values = {"targ_raddr_hist": True, **address_filter("targ_daddr", addr)}
    with LibbpfTracer(pkg(), values, "raw_tp") as tracer:
        drive_each(lab, [(p, family, 6100 + 10 * family + p.index) for p in lab.peers])
        hists = [h for h in tracer.snapshot() if h.total]
    assert [key_address(h.key) for h in hists] == [target.addr(family)]
    assert mass_in(hists[0], slot_of(target.rtt_us)) >= MASS


def test_port_filters_keep_only_their_connections(root, lab):
    peer = lab.peers[0]
    with LibbpfTracer(pkg(), {"targ_dport": 6201}, "raw_tp") as remote, \
            LibbpfTracer(pkg(), {"targ_sport": 6202}, "raw_tp") as local:
        drive_each(lab, [(peer, 4, 6201), (peer, 4, 6202), (lab.peers[2], 4, 6203)])
        by_remote_port = remote.snapshot()
        by_local_port = local.snapshot()
    rounds = ROUNDS[peer.delay_ms]
    # Client side of the 6201 connection only: one sample per reply, plus the handshake.
    (r,) = by_remote_port
    assert rounds <= r.total <= rounds + 5
    assert mass_in(r, slot_of(peer.rtt_us)) >= MASS
    # Server side of the 6202 connection only.
    (s,) = by_local_port
    assert rounds <= s.total <= rounds + 5
    assert mass_in(s, slot_of(peer.rtt_us)) >= MASS


@pytest.mark.parametrize("family", [4, 6])
def test_local_address_keys_and_filter(root, lab, family):
    with LibbpfTracer(pkg(), {"targ_laddr_hist": True}, "raw_tp") as tracer:
        drive_each(lab, [(p, family, 6300 + 10 * family + p.index) for p in lab.peers[:2]])
        keyed = {key_address(h.key): h for h in tracer.snapshot() if h.total}
    for peer in lab.peers[:2]:
        for addr in (peer.client_addr(family), peer.addr(family)):
            assert mass_in(keyed[addr], slot_of(peer.rtt_us)) >= MASS, addr
    mine = ipaddress.ip_address(lab.peers[1].client_addr(family))
    values = address_filter("targ_saddr", mine)
    with LibbpfTracer(pkg(), values, "raw_tp") as tracer:
        drive_each(lab, [(p, family, 6400 + 10 * family + p.index) for p in lab.peers[:2]])
        (only,) = [h for h in tracer.snapshot() if h.total]
    assert mass_in(only, slot_of(lab.peers[1].rtt_us)) >= MASS


def test_every_runnable_variant_gives_the_same_histograms(root, lab):
    assert {"tp_btf", "raw_tp", "tracepoint"} <= set(RUNNABLE), RUNNABLE
    with every_variant({"targ_dport": 6500}) as tracers:
        drive(lab, [(lab.peers[1], 4, 6500)])
        results = {v: t.snapshot()[0].slots for v, t in tracers.items()}
    first = results[RUNNABLE[0]]
    assert sum(first) >= ROUNDS[lab.peers[1].delay_ms]
    assert all(slots == first for slots in results.values()), results


def test_command_line_in_milliseconds_with_percentiles(root, lab):
    peer = lab.peers[2]
    proc = subprocess.Popen(runner_cmd("-m", "-e", "-B", "--json", "-A", peer.v6, "-d", "30"),
                            cwd=REPO, env=runner_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert "Tracing TCP RTT" in proc.stderr.readline()
        drive(lab, [(peer, 6, 6601)])
        proc.send_signal(2)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    (record,) = [json.loads(line) for line in out.splitlines()]
    expected = slot_of(peer.rtt_us / 1000)
    low, high = bucket_bounds(expected)
    assert record["address"] == peer.v6 and record["unit"] == "msecs"
    assert record["slots"][expected] / record["count"] >= MASS
    for field in ("avg", "p50", "p90", "p99"):
        assert low <= record[field] <= high, (field, record[field])
