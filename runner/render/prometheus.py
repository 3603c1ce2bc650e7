"""Histograms as Prometheus metric families, and as the exposition's bytes.
Pure: data in, families or bytes out.

The RTT histogram is exported in seconds. Its buckets are the probe's log2
slots: slot i holds whole microseconds 2^i .. 2^(i+1)-1 (slot 0: 0 and 1),
so its exact upper bound is (2^(i+1) - 1) us; the last slot also holds
everything larger and becomes +Inf.
"""

from __future__ import annotations

from itertools import accumulate

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from ..histogram import Hist, bounds

NAME = "tcp_srtt_seconds"


def bucket_bounds_seconds(slots: int) -> list[str]:
    """Each slot's upper bound in seconds, as the label ``le`` shows it."""
    return [repr(high / 1e6) for _, high in bounds(slots - 1)] + ["+Inf"]


def rtt_histogram(hists: list[Hist], label: str | None,
                  address_of) -> HistogramMetricFamily:
    """One series per key; ``label`` is the address label name when keyed."""
    family = HistogramMetricFamily(
        NAME, "Smoothed RTT of established TCP connections, sampled per received segment.",
        labels=[label] if label else None, unit="")
    for hist in sorted(hists, key=lambda h: str(address_of(h.key))):
        bounds = bucket_bounds_seconds(len(hist.slots))
        running = 0
        buckets = []
        for bound, count in zip(bounds, hist.slots):
            running += count
            buckets.append((bound, running))
        labels = [str(address_of(hist.key))] if label else []
        family.add_metric(labels, buckets, sum_value=hist.latency / 1e6)
    return family


def probe_metrics(variant: str, attach: str, dropped: int, keys: int,
                  capacity: int, evictions: int = 0) -> list:
    info = GaugeMetricFamily("tcprtt_probe_info", "The attach variant that tcprtt runs.",
                             labels=["variant", "attach"])
    info.add_metric([variant, attach], 1)
    drops = CounterMetricFamily("tcprtt_dropped_samples",
                                "Samples not counted because the key map was full.")
    drops.add_metric([], dropped)
    used = GaugeMetricFamily("tcprtt_keys", "Histogram keys in the kernel map.")
    used.add_metric([], keys)
    cap = GaugeMetricFamily("tcprtt_key_capacity", "Capacity of the kernel's key map.")
    cap.add_metric([], capacity)
    evicted = CounterMetricFamily(
        "tcprtt_evictions",
        "Keys evicted from the full key map for new ones, least recently used first.")
    evicted.add_metric([], evictions)
    return [info, drops, used, cap, evicted]


# The whole exposition, the histogram's series written from a template -------

# A label value that every escaping leaves as it is.
_MARKER = "tcprttLabelValueMarker"


class _Families:
    """Metric families as the encoders read a registry."""

    def __init__(self, families: list):
        self.families = families

    def collect(self):
        return iter(self.families)


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _Template:
    """What an encoder writes for one key's series, cut around the label value
    and the sample values, so that 10,000 keys cost string joins, not 300,000
    sample objects. Made by the encoder itself from a one-key family and
    checked line by line; None when its output does not have that shape."""

    def __init__(self, head: str, lines: list[tuple[str, str, object]], tail: str):
        self.head, self.lines, self.tail = head, lines, tail

    @classmethod
    def make(cls, slots: int, label: str | None, others: list, encoder) -> _Template | None:
        proto = rtt_histogram([Hist(key=None, slots=(0,) * slots)], label, lambda k: _MARKER)
        full = encoder(_Families([proto, *others])).decode("utf-8")
        tail = encoder(_Families(others)).decode("utf-8")
        if not full.endswith(tail):
            return None
        text = full[:len(full) - len(tail)].splitlines(keepends=True)
        head = [line for line in text if line.startswith("#")]
        body = text[len(head):]
        if len(body) != len(proto.samples) or any(b.startswith("#") for b in body):
            return None
        bounds = bucket_bounds_seconds(slots)
        lines = []
        for line, sample in zip(body, proto.samples):
            prefix, _, value = line.rstrip("\n").rpartition(" ")
            if value != floatToGoString(sample.value) or sample.timestamp is not None \
                    or sample.exemplar is not None:
                return None
            if sample.name == NAME + "_bucket" and sample.labels.get("le") in bounds:
                source: object = bounds.index(sample.labels["le"])
            elif sample.name == NAME + "_count":
                source = "count"
            elif sample.name == NAME + "_sum":
                source = "sum"
            else:
                return None
            before, _, after = prefix.partition(_MARKER)
            if (_MARKER in after) or (bool(label) != (_MARKER in prefix)):
                return None
            lines.append((before, after + " ", source))
        return cls("".join(head), lines, tail)

    def series(self, address: str, hist: Hist, formatted: dict) -> str:
        value = _escape_label_value(address)
        running = list(accumulate(hist.slots))
        parts = []
        for before, after, source in self.lines:
            if source == "sum":
                text = floatToGoString(hist.latency / 1e6)
            else:
                count = running[-1] if source == "count" else running[source]
                text = formatted.get(count)
                if text is None:
                    text = formatted[count] = floatToGoString(count)
            parts += (before, value, after, text, "\n")
        return "".join(parts)


def exposition(hists: list[Hist], label: str | None, address_of, others: list,
               encoder) -> bytes:
    """What ``encoder`` (a prometheus_client encoder, registry in, bytes out)
    writes for the RTT histogram followed by ``others``: the same bytes, made
    from a template of one key's series when the encoder's output allows."""
    sizes = {len(h.slots) for h in hists}
    template = _Template.make(sizes.pop() if sizes else 1, label, others, encoder) \
        if len(sizes) <= 1 else None
    if template is None:
        return encoder(_Families([rtt_histogram(hists, label, address_of), *others]))
    keyed = sorted(((str(address_of(h.key)), h) for h in hists), key=lambda p: p[0])
    formatted: dict = {}
    chunks = [template.head.encode("utf-8")]
    chunks += [template.series(address, hist, formatted).encode("utf-8")
               for address, hist in keyed]
    chunks.append(template.tail.encode("utf-8"))
    return b"".join(chunks)
