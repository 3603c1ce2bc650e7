"""The probe in the real kernel, through the runner's libbpf loader."""

from __future__ import annotations

import os
import re
import socket
import threading
import time

import pytest

from runner import features, package
from runner.build import host_arch
from runner.errors import KernelError
from runner.tcprtt import variants
from runner.tcprtt.keys import key_address
from runner.tcprtt.variants import choose
from runner.tracer import LibbpfTracer

from . import conftest
from .conftest import loaded_programs, programs_left, runqlat, shared_file
from .traffic import tcp_pair

VARIANTS = variants.names()
# The variants this kernel runs, by their checks (tracefs is not mounted for this).
RUNNABLE = tuple(v for v in VARIANTS if variants.check(v) is None)


def pkg(variant: str) -> package.Package:
    return package.load(package.shipped(variant, host_arch()))


def trace(variant: str, values: dict, host: str = "127.0.0.1", rounds: int = 200,
          server_port: int = 0):
    """Load, run traffic, return (hists, pair ports)."""
    with LibbpfTracer(pkg(variant), values, variant) as tracer:
        with tcp_pair(host, server_port) as pair:
            assert pair.exchange(rounds) == rounds
            ports = (pair.server_port, pair.client_port)
        return tracer.snapshot(), ports


def runnable(variant: str) -> bool:
    return features.check(variant) is None


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_counts_loopback_traffic_or_reports_why_not(root, variant):
    if not runnable(variant):
        # This kernel lacks it: loading must fail with the kernel's reason, cleanly.
        with pytest.raises(KernelError) as info:
            LibbpfTracer(pkg(variant), {}, variant).close()
        assert str(info.value), "the refusal must say why"
        return
    for host in ("127.0.0.1", "::1"):
        hists, _ = trace(variant, {"targ_show_ext": True}, host)
        assert len(hists) == 1
        h = hists[0]
        assert h.total >= 200, f"{variant} over {host}: {h.total} samples for 200 rounds"
        assert h.cnt == h.total, "slot total equals the count"
        assert 0 < h.latency / h.cnt < 1_000_000, "loopback RTT is well under a second"


def test_this_machine_runs_a_tracepoint_variant():
    # The project's machines have tracepoints; a variant must be usable here.
    assert runnable("raw_tp") or runnable("tracepoint")


def test_the_project_machines_run_the_btf_typed_tracepoint():
    """Linux 5.5 and newer with BTF: the socket is a typed argument."""
    assert runnable("tp_btf"), features.check("tp_btf")


def test_auto_falls_back_to_a_working_variant_and_reports_the_rest(root):
    packages = {v: pkg(v) for v in VARIANTS}
    choice = choose(packages, {}, "auto")
    try:
        assert choice.tracer.variant in VARIANTS
        order = VARIANTS
        skipped = [a.variant for a in choice.tried]
        assert skipped == list(order[:order.index(choice.tracer.variant)])
        assert all(a.reason for a in choice.tried)
    finally:
        choice.tracer.close()


def test_port_filters_keep_only_their_connection(root):
    variant = "raw_tp"
    with LibbpfTracer(pkg(variant), {"targ_sport": 1}, variant) as none:
        with tcp_pair() as pair:
            pair.exchange(100)
        assert sum(h.total for h in none.snapshot()) == 0, "no socket has local port 1"
    with tcp_pair() as other:
        with tcp_pair() as pair:
            with LibbpfTracer(pkg(variant), {"targ_sport": pair.server_port,
                                                      "targ_raddr_hist": True},
                                       variant) as tracer:
                pair.exchange(150)
                other.exchange(100)
                hists = tracer.snapshot()
    # Only the server side of one pair has that local port: 150 segments or so.
    total = sum(h.total for h in hists)
    assert 150 <= total < 250, total


def test_remote_port_filter(root):
    with tcp_pair() as pair:
        with LibbpfTracer(pkg("raw_tp"), {"targ_dport": pair.server_port},
                                   "raw_tp") as tracer:
            pair.exchange(120)
            total = sum(h.total for h in tracer.snapshot())
    assert 120 <= total < 200, "only the client side has the server as remote port"


@pytest.mark.parametrize("setting,host", [("targ_raddr_hist", "127.0.0.1"),
                                          ("targ_raddr_hist", "::1"),
                                          ("targ_laddr_hist", "127.0.0.1"),
                                          ("targ_laddr_hist", "::1")])
def test_address_keys_decode(root, setting, host):
    hists, _ = trace("raw_tp", {setting: True}, host)
    keyed = {key_address(h.key): h.total for h in hists if h.total}
    assert keyed.get(host, 0) >= 200, keyed


def test_ipv6_address_filter_and_family_filter(root):
    import ipaddress

    from runner.tcprtt.keys import ipv6_halves
    v6 = dict(zip(("targ_daddr_v6_hi", "targ_daddr_v6_lo"),
                  ipv6_halves(ipaddress.IPv6Address("::1"))))
    with LibbpfTracer(pkg("raw_tp"), v6, "raw_tp") as tracer:
        with tcp_pair("127.0.0.1") as p4:
            p4.exchange(100)
        assert sum(h.total for h in tracer.snapshot()) == 0, "IPv4 must not pass a v6 filter"
        with tcp_pair("::1") as p6:
            p6.exchange(100)
        assert sum(h.total for h in tracer.snapshot()) >= 200
    with LibbpfTracer(pkg("raw_tp"), {"targ_ipver": 4}, "raw_tp") as tracer:
        with tcp_pair("::1") as p6:
            p6.exchange(100)
        assert sum(h.total for h in tracer.snapshot()) == 0, "-4 must drop IPv6"


def test_v4_mapped_socket_matches_the_ipv4_filter_and_key(root):
    values = {"targ_daddr": int.from_bytes(socket.inet_aton("127.0.0.1"), "big"),
              "targ_raddr_hist": True}
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    client = server = None
    with LibbpfTracer(pkg("raw_tp"), values, "raw_tp") as tracer:
        try:
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            listener.bind(("::ffff:127.0.0.1", 0))
            listener.listen(1)
            client = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            client.settimeout(5)
            client.connect(listener.getsockname()[:2])
            server, _ = listener.accept()
            for _ in range(100):
                client.sendall(b"x")
                server.recv(1)
                server.sendall(b"y")
                client.recv(1)
        finally:
            for s in (client, server, listener):
                if s is not None:
                    s.close()
        hists = [h for h in tracer.snapshot() if h.total]
    assert [key_address(h.key) for h in hists] == ["127.0.0.1"]
    assert hists[0].key[:2] == (2).to_bytes(2, "little")  # AF_INET, struct hist_key
    assert hists[0].total >= 100


def test_milliseconds_put_loopback_rtt_in_slot_zero(root):
    hists, _ = trace("raw_tp", {"targ_ms": True, "targ_show_ext": True})
    assert hists[0].slots[0] == hists[0].total >= 200


def test_real_ecc_package_loads_and_counts_run_queue_latency(root):
    fixture = package.load(runqlat())
    stop = time.monotonic() + 1.5

    def spin():
        while time.monotonic() < stop:
            time.sleep(0.0005)
    with LibbpfTracer(fixture, {}, "package") as tracer:
        workers = [threading.Thread(target=spin) for _ in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        hists = tracer.snapshot()
    assert sum(h.total for h in hists) > 0
    assert all(len(h.slots) == 26 for h in hists)


def test_a_missing_shared_file_skips_with_its_path_or_fails_under_ci(tmp_path, monkeypatch):
    monkeypatch.setattr(conftest, "SHARED", tmp_path)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    missing = str(tmp_path / "fixtures" / "x.json")
    with pytest.raises(pytest.skip.Exception, match=re.escape(missing)):
        shared_file("fixtures/x.json")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=re.escape(missing)):
        shared_file("fixtures/x.json")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")  # the hosted runner has no ../shared
    with pytest.raises(pytest.skip.Exception, match=re.escape(missing)):
        shared_file("fixtures/x.json")
    (tmp_path / "fixtures").mkdir()
    (tmp_path / "fixtures" / "x.json").write_text("{}")
    assert shared_file("fixtures/x.json") == tmp_path / "fixtures" / "x.json"


BAD_PROGRAM = r"""
typedef unsigned int __u32;
typedef unsigned long long __u64;
#define SEC(n) __attribute__((section(n), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
struct hist { __u32 slots[4]; };
struct {
    __uint(type, 1);
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, struct hist);
} hists SEC(".maps");
static void *(*lookup)(void *map, const void *key) = (void *)1;
SEC("raw_tp/tcp_probe")
int bad_prog(void *ctx)
{
    __u32 key = 0;
    struct hist *h = lookup(&hists, &key);
    h->slots[0]++;   /* no NULL check: the verifier must refuse this */
    return 0;
}
char LICENSE[] SEC("license") = "GPL";
"""


def hand_made_package(tmp_path, source: str, prog: str, attach: str) -> package.Package:
    import subprocess
    src = tmp_path / "bad.bpf.c"
    src.write_text(source)
    obj = tmp_path / "bad.o"
    subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-c", str(src), "-o", str(obj)],
                   check=True)
    data = obj.read_bytes()
    doc = {"bpf_object": package.encode_object(data), "bpf_object_size": len(data),
           "meta": {"bpf_skel": {
               "obj_name": "bad_bpf",
               "maps": [{"name": "hists", "ident": "hists",
                         "sample": {"interval": 1000, "type": "log2_hist"}}],
               "progs": [{"name": prog, "attach": attach, "link": True}],
               "data_sections": []}},
           }
    return package.parse(doc, "bad.json")


def test_verifier_rejection_is_reported_with_its_reason(root, tmp_path):
    p = hand_made_package(tmp_path, BAD_PROGRAM, "bad_prog", "raw_tp/tcp_probe")
    before = loaded_programs()
    with pytest.raises(KernelError, match=r"bad.json: the kernel refused to load it "
                                          r"\(verifier: .*(null|invalid mem access)"):
        LibbpfTracer(p, {}, "package").close()
    assert not programs_left(before)


def test_bad_key_capacity_is_refused_by_the_kernel_cleanly(root):
    before = loaded_programs()
    with pytest.raises(KernelError):
        LibbpfTracer(pkg("raw_tp"), {}, "raw_tp", max_keys=0).close()
    assert not programs_left(before)


LRU_BATCH = 128  # the kernel's LOCAL_FREE_TARGET (kernel/bpf/bpf_lru_list.c)


@pytest.mark.parametrize("keys", [5_000, 40_000])
def test_every_key_is_read_whatever_the_key_capacity(root, keys):
    """The map is read to its size as loaded (--max-keys), not as built:
    fill it from user space beyond the built size and read every key back."""
    from bench.run import fill_keys

    # A port filter that matches nothing keeps the kernel's own keys out.
    with LibbpfTracer(pkg("raw_tp"), {"targ_raddr_hist": True, "targ_sport": 1}, "raw_tp",
                      max_keys=keys) as tracer:
        # The LRU map hands free entries to a CPU 128 at a time, and a CPU
        # that finds fewer left evicts to make up the batch: filled from one
        # CPU to 128 short of its size, it evicts nothing.
        cpus = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(cpus)})
        try:
            fill_keys(tracer, keys - LRU_BATCH)
        finally:
            os.sched_setaffinity(0, cpus)
        hists = tracer.snapshot()
    assert len(hists) == keys - LRU_BATCH
    assert len({key_address(x.key) for x in hists}) == keys - LRU_BATCH


@pytest.mark.parametrize("variant", RUNNABLE)
def test_per_cpu_storage_counts_what_the_shared_map_counts(root, variant):
    """The runner's unkeyed per-CPU histogram and the hists map that ecli
    reads, attached at once to the same connection, hold the same samples."""
    if not runnable(variant):
        pytest.skip(f"this kernel lacks {variant}: {features.check(variant)}")
    with tcp_pair() as pair:
        values = {"targ_sport": pair.server_port, "targ_show_ext": True}
        with LibbpfTracer(pkg(variant), values, variant) as shared, \
                LibbpfTracer(pkg(variant), dict(values, targ_percpu=True), variant) as percpu:
            pair.exchange(300)
            time.sleep(0.05)
            a, b = shared.snapshot(), percpu.snapshot()
    assert len(a) == len(b) == 1
    assert a[0].total >= 300
    assert (a[0].slots, a[0].cnt, a[0].latency) == (b[0].slots, b[0].cnt, b[0].latency)
    assert a[0].key == b[0].key


@pytest.mark.parametrize("variant", RUNNABLE)
@pytest.mark.parametrize("setting", ["targ_raddr_hist", "targ_laddr_hist"])
def test_per_cpu_key_cache_counts_what_the_shared_map_counts(root, variant, setting):
    """Keyed, the runner's per-CPU key cache plus hists hold, key by key,
    what hists alone holds for ecli: IPv4 and IPv6 peers at once."""
    if not runnable(variant):
        pytest.skip(f"this kernel lacks {variant}: {features.check(variant)}")
    with tcp_pair("127.0.0.1") as v4, tcp_pair("::1", v4.server_port) as v6:
        # Both servers on one port: the filter keeps other loopback traffic out.
        values = {setting: True, "targ_show_ext": True, "targ_sport": v4.server_port}
        with LibbpfTracer(pkg(variant), values, variant) as shared, \
                LibbpfTracer(pkg(variant), dict(values, targ_percpu=True), variant) as percpu:
            v4.exchange(200)
            v6.exchange(200)
            time.sleep(0.05)
            a, b = shared.snapshot(), percpu.snapshot()
    by_key = {key_address(h.key): (h.slots, h.cnt, h.latency) for h in a}
    assert by_key == {key_address(h.key): (h.slots, h.cnt, h.latency) for h in b}
    assert {"127.0.0.1", "::1"} <= set(by_key)
    assert len(b) == len({key_address(h.key) for h in b}), "one histogram per key"
