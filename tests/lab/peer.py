"""The lab's TCP peers, run inside namespaces with `ip netns exec`:

    python -m tests.lab.peer serve HOST PORT          # echo each message back
    python -m tests.lab.peer ping HOST PORT ROUNDS    # request/response rounds

Both are bounded in time; `ping` prints the rounds it completed.
"""

from __future__ import annotations

import socket
import sys
import time

SIZE = 64
MAX_SECONDS = 60.0


def serve(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + MAX_SECONDS
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(16)
        listener.settimeout(1.0)
        print("listening", flush=True)
        while time.monotonic() < deadline:
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.settimeout(MAX_SECONDS)
                while True:
                    data = conn.recv(SIZE)
                    if not data:
                        break
                    conn.sendall(data)


def ping(host: str, port: int, rounds: int) -> None:
    deadline = time.monotonic() + MAX_SECONDS
    done = 0
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        payload = b"p" * SIZE
        while done < rounds and time.monotonic() < deadline:
            conn.sendall(payload)
            got = 0
            while got < SIZE:
                chunk = conn.recv(SIZE - got)
                if not chunk:
                    raise SystemExit("peer closed")
                got += len(chunk)
            done += 1
    print(done, flush=True)


if __name__ == "__main__":
    cmd, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if cmd == "serve":
        serve(host, port)
    else:
        ping(host, port, int(sys.argv[4]))
