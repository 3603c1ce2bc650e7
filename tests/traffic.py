"""Bounded loopback TCP traffic for the tests: a listener, a client, a
ping-pong exchange. Every socket is closed on the way out."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

MAX_ROUNDS = 100_000
MAX_SECONDS = 20.0


@dataclass
class Pair:
    family: int
    server_port: int
    client_port: int
    client: socket.socket
    server: socket.socket

    def exchange(self, rounds: int, size: int = 64) -> int:
        """Send ``rounds`` request/response pairs; returns the rounds done."""
        rounds = min(rounds, MAX_ROUNDS)
        deadline = time.monotonic() + MAX_SECONDS
        payload = b"x" * size
        done = 0
        while done < rounds and time.monotonic() < deadline:
            self.client.sendall(payload)
            got = 0
            while got < size:
                got += len(self.server.recv(size - got))
            self.server.sendall(b"y")
            self.client.recv(1)
            done += 1
        return done


@contextmanager
def tcp_pair(host: str = "127.0.0.1", server_port: int = 0) -> Iterator[Pair]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    assert host in ("127.0.0.1", "::1"), "test traffic stays on loopback"
    listener = socket.socket(family, socket.SOCK_STREAM)
    client = server = None
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, server_port))
        listener.listen(1)
        listener.settimeout(5)
        client = socket.create_connection(listener.getsockname()[:2], timeout=5)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server, _ = listener.accept()
        server.settimeout(5)
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        yield Pair(family, listener.getsockname()[1], client.getsockname()[1], client, server)
    finally:
        for s in (client, server, listener):
            if s is not None:
                s.close()


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
