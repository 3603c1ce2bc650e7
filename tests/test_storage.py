"""tcprtt's storage readers, without a kernel: the struct decoder against the
package's BTF, the layout a set of settings means, the runner's choice."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runner import package
from runner.bpfobject import to_json
from runner.build import host_arch
from runner.histogram import Hist
from runner.tcprtt import storage
from runner.tracer import MapStorage, storage_of

from .conftest import runqlat

PKG = package.load(package.shipped("raw_tp", host_arch()))
HIST = PKG.hists[0]

u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
u32 = st.integers(min_value=0, max_value=(1 << 32) - 1)


def _value(latency: int, cnt: int, slots: list[int]) -> bytes:
    raw = latency.to_bytes(8, "little") + cnt.to_bytes(8, "little")
    raw += b"".join(s.to_bytes(4, "little") for s in slots)
    return raw.ljust(HIST.value_size, b"\0")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=HIST.key_size, max_size=HIST.key_size), u64, u64,
                          st.lists(u32, min_size=HIST.slots_count,
                                   max_size=HIST.slots_count)), max_size=20))
def test_the_struct_decoder_reads_what_btf_decodes(entries):
    pairs = [(key, _value(latency, cnt, slots)) for key, latency, cnt, slots in entries]
    by_btf = [Hist.from_value(key, to_json(PKG.btf, HIST.value_type, value))
              for key, value in pairs]
    decoder = storage.Decoder.of(PKG)
    assert decoder is not None
    assert decoder.many(pairs) == by_btf
    if pairs:
        key = pairs[0][0]
        summed = decoder.summed(key, [v for _, v in pairs])
        assert summed.key == key
        assert summed.slots == tuple(map(sum, zip(*(h.slots for h in by_btf))))
        assert (summed.latency, summed.cnt) == (sum(h.latency for h in by_btf),
                                                sum(h.cnt for h in by_btf))


def test_the_settings_choose_the_layout():
    percpu = storage.percpu_setting()
    assert storage.layout_of({}) == storage.SHARED
    assert storage.layout_of({"targ_raddr_hist": True}) == storage.SHARED
    assert storage.layout_of({percpu: True}) == storage.PERCPU
    # Keyed, every sample goes to hists, unless an older release's package
    # has a per-CPU key cache in front of it.
    keyed = storage.Storage(PKG, {percpu: True, "targ_laddr_hist": True}, storage.Decoder.of(PKG))
    has_cache = any(m.name == storage.KEY_CACHE_MAP for m in PKG.bpf.maps())
    assert keyed.layout == (storage.KEY_CACHE if has_cache else storage.SHARED)


def test_the_runner_chooses_per_cpu_storage_only_when_every_package_takes_it():
    values: dict[str, object] = {}
    storage.prefer_percpu({"raw_tp": PKG}, values)
    assert values == {storage.percpu_setting(): True}
    older = PKG.__class__(**{**PKG.__dict__, "settings": tuple(
        s for s in PKG.settings if s.name != storage.percpu_setting())})
    values = {}
    storage.prefer_percpu({"raw_tp": PKG, "kprobe": older}, values)
    assert values == {}


def test_a_package_of_another_layout_is_read_generically():
    other = package.load(runqlat())
    assert storage.Decoder.of(other) is None
    assert isinstance(storage_of(other, {}), MapStorage)
    assert isinstance(storage_of(PKG, {}), storage.Storage)
