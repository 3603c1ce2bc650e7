"""A registry that misbehaves on purpose, on 127.0.0.1, for the hostile tests.

The test gives it a function from the request it got (``Seen``) to the answer
it sends (``Answer``); it records every request. An answer can be dripped a
byte at a time. A TLS ClientHello is closed at once, as a plain-HTTP
registry's port would refuse it, so clients fall back to HTTP without delay.
Every connection is closed after one answer; stopping the server ends any
drip in progress.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 64 << 20
MAX_DRIP_SECONDS = 120.0


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]   # names lower-cased
    body: bytes


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    reason: str | None = None
    drip: float = 0.0         # seconds between bytes, for the whole answer


def json_error(status: int, message: str, code: str = "DENIED") -> Answer:
    import json
    body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
    return Answer(status, {"Content-Type": "application/json"}, body)


@dataclass
class Server:
    port: int
    seen: list[Seen]
    stopping: threading.Event
    httpd: ThreadingHTTPServer

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]


def _handler(app: Callable[[Seen], Answer], seen: list[Seen], stopping: threading.Event):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def handle(self):
            try:
                first = self.connection.recv(1, socket.MSG_PEEK)
            except OSError:
                return
            if first[:1] == b"\x16":  # a TLS handshake: this port speaks plain HTTP
                return
            super().handle()

        def _any(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(min(length, MAX_BODY)) if length else b""
            request = Seen(self.command, self.path,
                           {k.lower(): v for k, v in self.headers.items()}, body)
            seen.append(request)
            answer = app(request)
            self.close_connection = True
            reason = answer.reason if answer.reason is not None else \
                self.responses.get(answer.status, ("",))[0]
            head = f"HTTP/1.1 {answer.status} {reason}\r\n"
            headers = {"Content-Length": str(len(answer.body)), "Connection": "close",
                       **answer.headers}
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            raw = head.encode("latin-1") + (b"" if self.command == "HEAD" else answer.body)
            try:
                if not answer.drip:
                    self.wfile.write(raw)
                    return
                deadline = time.monotonic() + MAX_DRIP_SECONDS
                for i in range(len(raw)):
                    if stopping.wait(answer.drip) or time.monotonic() > deadline:
                        return
                    self.wfile.write(raw[i:i + 1])
                    self.wfile.flush()
            except OSError:
                pass

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

    return Handler


@contextmanager
def serve(app: Callable[[Seen], Answer]) -> Iterator[Server]:
    seen: list[Seen] = []
    stopping = threading.Event()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(app, seen, stopping))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield Server(httpd.server_address[1], seen, stopping, httpd)
    finally:
        stopping.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
