"""Print how close tcprtt comes to the RTTs the lab sets (for docs/accuracy.md).

    python -m tests.lab.accuracy      (as root)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from runner import package
from runner.build import host_arch
from runner.histogram import bucket_bounds, percentile
from runner.tcprtt.keys import key_address
from runner.tracer import LibbpfTracer

from ..test_lab import DELAYS, drive, slot_of
from .netns import Lab


def main() -> None:
    pkg = package.load(package.shipped("raw_tp", host_arch()))
    print("| family | lab RTT (us) | ss srtt (us) | bucket | share in bucket | avg (us) "
          "| p50 | p90 | p99 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with Lab(DELAYS, Path(tempfile.mkdtemp())) as lab:
        for family in (4, 6):
            for peer in lab.peers:
                with LibbpfTracer(pkg, {"targ_raddr_hist": True, "targ_show_ext": True},
                                  "raw_tp") as tracer:
                    seen = drive(lab, [(peer, family, 7100 + 10 * family + peer.index)],
                                 sample_ss=True)
                    hists = {key_address(h.key): h for h in tracer.snapshot()}
                h = hists[peer.addr(family)]
                slot = slot_of(peer.rtt_us)
                low, high = bucket_bounds(slot)
                srtt = seen.get((peer.index, family), 0)
                print(f"| IPv{family} | {peer.rtt_us:.0f} | {srtt:.0f} "
                      f"| {low}..{high} | {h.slots[slot]}/{h.total} | {h.latency / h.cnt:.0f} "
                      f"| {percentile(h.slots, .5):.0f} | {percentile(h.slots, .9):.0f} "
                      f"| {percentile(h.slots, .99):.0f} |")


if __name__ == "__main__":
    main()
