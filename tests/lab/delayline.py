"""A delay line between pairs of TUN devices: every packet read from one side
is written to the other after a fixed one-way delay.

    python -m tests.lab.delayline NAME_A:NAME_B:DELAY_MS [...] --ready FILE

It creates the TUN devices (not persistent: they vanish when it exits), writes
FILE once they exist, and forwards until SIGTERM. The test that starts it moves
the devices into its namespaces and stops it by PID.
"""

from __future__ import annotations

import argparse
import fcntl
import heapq
import os
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_QUEUE = 10000  # packets in flight per run; beyond this the line drops, like a full queue


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pairs", nargs="+", metavar="A:B:DELAY_MS")
    parser.add_argument("--ready", required=True)
    args = parser.parse_args(argv)
    peer_of: dict[int, tuple[int, float]] = {}
    for spec in args.pairs:
        a, b, delay = spec.split(":")
        fa, fb = open_tun(a), open_tun(b)
        peer_of[fa] = (fb, float(delay) / 1000)
        peer_of[fb] = (fa, float(delay) / 1000)
    running = True

    def stop(signum, frame):
        nonlocal running
        running = False
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with open(args.ready, "w") as f:
        f.write(str(os.getpid()))
    queue: list[tuple[float, int, int, bytes]] = []
    seq = 0
    while running:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, packet = heapq.heappop(queue)
            try:
                os.write(out, packet)
            except OSError:
                pass  # the device is down or gone: the packet is lost, as on a wire
        timeout = max(0.0, queue[0][0] - now) if queue else 0.2
        try:
            readable, _, _ = select.select(list(peer_of), [], [], timeout)
        except InterruptedError:
            continue
        arrived = time.monotonic()
        for fd in readable:
            for _ in range(64):
                try:
                    packet = os.read(fd, 65536)
                except BlockingIOError:
                    break
                except OSError:
                    break
                out, delay = peer_of[fd]
                if len(queue) < MAX_QUEUE:
                    seq += 1
                    heapq.heappush(queue, (arrived + delay, seq, out, packet))
    return 0


if __name__ == "__main__":
    sys.exit(main())
