"""A small network lab: a client namespace joined to peer namespaces through
a delay line the test controls, each peer with its own delay, IPv4 and IPv6.

Everything it makes (namespaces, the delay line, peer processes) it tears
down on the way out, failure or not, and every process is stopped by the PID
it holds. Before any traffic, each route is checked to go through the lab's
own device: a missing route would send packets to the real network.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def sh(*argv: str, ns: str | None = None, check: bool = True) -> str:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc.stdout


@dataclass
class Peer:
    index: int
    ns: str
    delay_ms: float
    client_dev: str
    peer_dev: str

    @property
    def v4(self) -> str:
        return f"10.201.{self.index}.2"

    @property
    def v6(self) -> str:
        return f"fd00:201:{self.index}::2"

    @property
    def client_v4(self) -> str:
        return f"10.201.{self.index}.1"

    @property
    def client_v6(self) -> str:
        return f"fd00:201:{self.index}::1"

    def addr(self, family: int) -> str:
        return self.v4 if family == 4 else self.v6

    def client_addr(self, family: int) -> str:
        return self.client_v4 if family == 4 else self.client_v6

    @property
    def rtt_us(self) -> float:
        return 2 * self.delay_ms * 1000


@dataclass
class Lab:
    delays_ms: list[float]
    workdir: Path
    tag: str = field(default_factory=lambda: f"{os.getpid() % 100000}")
    client_ns: str = ""
    peers: list[Peer] = field(default_factory=list)
    _procs: list[subprocess.Popen] = field(default_factory=list)
    _namespaces: list[str] = field(default_factory=list)

    def __enter__(self) -> Lab:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _add_ns(self, name: str) -> str:
        sh("ip", "netns", "add", name)
        self._namespaces.append(name)
        sh("ip", "link", "set", "lo", "up", ns=name)
        return name

    def _setup(self) -> None:
        self.client_ns = self._add_ns(f"tcprtt-lab{self.tag}-c")
        pairs = []
        for i, delay in enumerate(self.delays_ms, start=1):
            peer = Peer(i, f"tcprtt-lab{self.tag}-p{i}", delay,
                        f"tl{self.tag}c{i}", f"tl{self.tag}p{i}")
            self.peers.append(peer)
            pairs.append(f"{peer.client_dev}:{peer.peer_dev}:{delay}")
        ready = self.workdir / "delayline.ready"
        self.delayline = self.spawn([sys.executable, "-m", "tests.lab.delayline", *pairs,
                                     "--ready", str(ready)])
        deadline = time.monotonic() + 10
        while not ready.exists():
            if self.delayline.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the delay line did not start")
            time.sleep(0.02)
        for peer in self.peers:
            self._add_ns(peer.ns)
            for dev, ns, mine in ((peer.client_dev, self.client_ns, "1"),
                                  (peer.peer_dev, peer.ns, "2")):
                sh("ip", "link", "set", dev, "netns", ns)
                sh("ip", "addr", "add", f"10.201.{peer.index}.{mine}/24", "dev", dev, ns=ns)
                sh("ip", "-6", "addr", "add", f"fd00:201:{peer.index}::{mine}/64", "dev", dev,
                   "nodad", ns=ns)
                sh("ip", "link", "set", dev, "up", ns=ns)
        for peer in self.peers:
            for family in (4, 6):
                self.check_route(self.client_ns, peer.addr(family), peer.client_dev)
                self.check_route(peer.ns, peer.client_addr(family), peer.peer_dev)

    @staticmethod
    def check_route(ns: str, dst: str, dev: str) -> None:
        """Refuse to go on unless ``dst`` is reached through the lab's ``dev``."""
        route = sh("ip", "route", "get", dst, ns=ns)
        if not re.search(rf"\bdev {re.escape(dev)}\b", route):
            raise RuntimeError(f"route to {dst} in {ns} is not through {dev}: {route.strip()}")

    def spawn(self, argv: list[str], ns: str | None = None, **kw) -> subprocess.Popen:
        # The delay line and the peers run at a real-time priority: their
        # scheduling delays would otherwise add to the RTT the lab sets (a late
        # reply carries its ACK late) on a busy two-core machine. They block in
        # select and recv, so they cannot starve the machine.
        cmd = (["ip", "netns", "exec", ns] if ns else []) + ["chrt", "-f", "10"] + argv
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, **kw)
        self._procs.append(proc)
        return proc

    def serve(self, peer: Peer, family: int, port: int) -> subprocess.Popen:
        proc = self.spawn([sys.executable, "-m", "tests.lab.peer", "serve", peer.addr(family),
                           str(port)], ns=peer.ns, stdout=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"peer server did not start: {line!r}")
        return proc

    def ping(self, peer: Peer, family: int, port: int, rounds: int) -> subprocess.Popen:
        """Start request/response rounds from the client namespace to ``peer``."""
        self.check_route(self.client_ns, peer.addr(family), peer.client_dev)
        return self.spawn([sys.executable, "-m", "tests.lab.peer", "ping", peer.addr(family),
                           str(port), str(rounds)], ns=self.client_ns, stdout=subprocess.PIPE,
                          text=True)

    def ss_srtt_us(self, peer: Peer, family: int) -> float | None:
        """The kernel's own smoothed RTT for the client's connection to ``peer``."""
        dst = peer.v4 if family == 4 else f"[{peer.v6}]"
        out = sh("ss", "-tin", "dst", dst, ns=self.client_ns)
        m = re.search(r"\brtt:([0-9.]+)/", out)
        return float(m.group(1)) * 1000 if m else None

    def close(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self._procs.clear()
        for ns in reversed(self._namespaces):
            sh("ip", "netns", "del", ns, check=False)
        self._namespaces.clear()
