"""Histograms as Prometheus metric families. Pure: data in, families out.

The RTT histogram is exported in seconds. Its buckets are the probe's log2
slots: slot i holds whole microseconds 2^i .. 2^(i+1)-1 (slot 0: 0 and 1),
so its exact upper bound is (2^(i+1) - 1) us; the last slot also holds
everything larger and becomes +Inf.
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ..histogram import Hist

NAME = "tcp_srtt_seconds"


def bucket_bounds_seconds(slots: int) -> list[str]:
    bounds = [repr(((1 << (i + 1)) - 1) / 1e6) for i in range(slots - 1)]
    return bounds + ["+Inf"]


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
                  capacity: int) -> list:
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
    return [info, drops, used, cap]
