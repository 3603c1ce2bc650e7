"""The Prometheus exporter: serve /metrics from the probe's cumulative maps.

One thread runs a small HTTP/1.0 server over non-blocking sockets; it holds
no thread per connection, so neither slow nor idle clients can tie it up:

- every request has a whole-request deadline (from accept to the end of its
  head), so a client dripping one byte at a time is cut as surely as an idle
  one, and every response a deadline to be sent in;
- the number of open connections is bounded below the file-descriptor limit;
  at the bound, the connection that has waited longest without sending a
  request is closed to admit a new one, and when every connection is being
  served, new ones wait in the kernel's listen backlog (a real one) instead
  of failing;
- a scrape that arrives while a snapshot is being rendered joins it: one
  snapshot is read and rendered (and gzipped, if asked) once per generation,
  and the same bytes are sent to every scraper of that generation.

The response is what prometheus_client's MetricsHandler serves: any path,
``Accept`` chooses the text or OpenMetrics format, ``name[]`` restricts the
series, ``Accept-Encoding: gzip`` compresses; one request per connection.
``GET /-/healthy`` is the exception: "OK", for liveness probes, which it
tells that the event loop answers.

With a web configuration (``--web-config``, runner.webconfig) accepted
connections are wrapped in TLS and handshaken in the same event loop, under
the same request deadline, and a request is served only with an
``Authorization`` that matches ``basic_auth_users``; otherwise it gets 401
and ``WWW-Authenticate: Basic``. bcrypt runs on a thread of its own, so a
slow hash never holds up the loop, and a (user, password) pair costs one
bcrypt however often it is sent.
"""

from __future__ import annotations

import errno
import gzip
import os
import queue
import resource
import selectors
import socket
import ssl
import sys
import threading
import time
from collections import deque
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from .errors import UsageError
from .render import prometheus as render
from .tcprtt.keys import key_address
from .tracer import LibbpfTracer

REQUEST_TIMEOUT = 5.0     # s from accept to the end of the request head
RESPONSE_TIMEOUT = 30.0   # s from the response being ready to its last byte sent
MAX_CONNECTIONS = 512     # open connections at most (fewer if the fd limit is low)
FD_RESERVE = 64           # descriptors left for the rest of the process
LISTEN_BACKLOG = 1024     # the kernel caps it at net.core.somaxconn
MAX_HEAD = 32 * 1024      # bytes of request line and headers
GZIP_LEVEL = 6
ACCEPTS_PER_TURN = 64     # connections accepted before other events are served
PAUSE_ON_EMFILE = 0.1     # s without accepting when out of descriptors
EVICT_AFTER = 0.25        # s a connection may send nothing before it can be evicted
HEALTH_PATH = "/-/healthy"  # answered by the event loop itself, without authentication
RELOAD_EVERY = 1.0        # s between looks at the web configuration's files

SERVER = f"{BaseHTTPRequestHandler.server_version} {BaseHTTPRequestHandler.sys_version}"


def parse_listen(text: str) -> tuple[str, int]:
    """``PORT`` (loopback) or ``ADDR:PORT``; IPv6 as ``[ADDR]:PORT``."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port, 10)
    except ValueError:
        raise UsageError(f"--prometheus: {text!r} is not [ADDR:]PORT") from None
    if not 1 <= number <= 65535:
        raise UsageError(f"--prometheus: port {number} is outside 1..65535")
    return host, number


class Collector:
    """Reads the kernel maps at each scrape; counters are cumulative."""

    def __init__(self, tracer: LibbpfTracer, label: str | None,
                 prefixes: tuple[int | None, int | None] = (None, None)):
        self.tracer = tracer
        self.label = label
        self.prefixes = prefixes  # keys cut to networks: (IPv4, IPv6) prefix lengths
        self.lock = threading.Lock()

    def address_of(self, key: object) -> str:
        return key_address(key, self.prefixes) or ""  # type: ignore[arg-type]

    def read(self) -> tuple[list, list]:
        """One snapshot: the histograms, and the probe's other families."""
        with self.lock:
            hists = self.tracer.snapshot()
            dropped = self.tracer.dropped()
            evictions = getattr(self.tracer, "evictions", lambda: 0)()
        hist_map = self.tracer.package.hists[0]
        capacity = self.tracer.probe.max_entries(hist_map.name)
        attach = self.tracer.package.progs[0]["attach"]
        return hists, render.probe_metrics(self.tracer.variant, attach, dropped, len(hists),
                                           capacity, evictions)

    def collect(self):
        hists, others = self.read()
        yield render.rtt_histogram(hists, self.label, self.address_of)
        yield from others

    def encode(self, snapshot: tuple[list, list], encoder, names: tuple | None) -> bytes:
        """What ``encoder`` writes for ``snapshot``; only the series ``names``
        when given, as prometheus_client's ``name[]`` parameter asks."""
        hists, others = snapshot
        if names is None:
            return render.exposition(hists, self.label, self.address_of, others, encoder)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families([render.rtt_histogram(hists, self.label, self.address_of),
                                     *others]))
        return encoder(registry.restricted_registry(names))


class _Families:
    """The metric families of one snapshot, collected again without reading."""

    def __init__(self, families: list):
        self.families = families

    def collect(self):
        return iter(self.families)


class _Response:
    __slots__ = ("head", "body")

    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes):
        lines = [f"HTTP/1.0 {status}", f"Server: {SERVER}",
                 f"Date: {formatdate(time.time(), usegmt=True)}"]
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append(f"Content-Length: {len(body)}")
        self.head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.body = body


def _plain(status: str, text: str) -> _Response:
    return _Response(status, [("Content-Type", "text/plain; charset=utf-8")],
                     text.encode())


class _Generation:
    """One snapshot and every encoding of it that its scrapers asked for.

    A unit is ``(content_type, names, gzipped)``. The event loop adds
    scrapers; the render thread makes each wanted unit once, then closes the
    generation: a scrape arriving after that starts the next one."""

    def __init__(self):
        self.lock = threading.Lock()
        self.wanted: list[tuple] = []
        self.encoders: dict[tuple, object] = {}
        self.results: dict[tuple, _Response] = {}
        self.waiters: dict[tuple, list] = {}
        self.closed = False

    def join(self, unit: tuple, encoder, conn):
        """The response if it is ready; None when ``conn`` now waits for it;
        False when this generation takes no more scrapers."""
        with self.lock:
            if self.closed:
                return False
            if unit in self.results:  # made while another encoding is being made
                return self.results[unit]
            if unit not in self.waiters:
                self.waiters[unit] = []
                self.wanted.append(unit)
                self.encoders[unit] = encoder
            self.waiters[unit].append(conn)
            return None

    def take_waiters(self, unit: tuple) -> list:
        with self.lock:
            return self.waiters.pop(unit, [])


class _Conn:
    __slots__ = ("sock", "state", "inbuf", "started", "deadline", "out", "progress", "events",
                 "handshaking", "authorized")

    READING, WAITING, WRITING, CLOSED = range(4)

    def __init__(self, sock: socket.socket, now: float, timeout: float):
        self.sock = sock
        self.state = _Conn.READING
        self.inbuf = b""
        self.started = now
        self.deadline = now + timeout
        self.out: deque = deque()
        self.progress = now
        self.events = 0  # what the selector watches this socket for
        self.handshaking = isinstance(sock, ssl.SSLSocket)  # TLS handshake not done yet
        self.authorized = False  # basic auth passed (or not asked for)


def _connection_bound(wanted: int) -> int:
    """``wanted``, or fewer so that connections never use the descriptors up."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        used = 32
    return max(1, min(wanted, soft - used - FD_RESERVE))


class Exporter:
    """An HTTP server on its own thread; ``close()`` stops it."""

    def __init__(self, tracer: LibbpfTracer, listen: tuple[str, int], label: str | None, *,
                 request_timeout: float = REQUEST_TIMEOUT,
                 response_timeout: float = RESPONSE_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS, backlog: int = LISTEN_BACKLOG,
                 web_config=None, prefixes: tuple[int | None, int | None] = (None, None)):
        self.collector = Collector(tracer, label, prefixes)
        self.web_config = web_config  # runner.webconfig.WebConfig or None
        self._tls = web_config.tls if web_config is not None else None
        self._auth = web_config.auth if web_config is not None else None
        self._extra_head = "".join(f"{name}: {value}\r\n" for name, value
                                   in (web_config.headers if web_config else ())).encode()
        self._auth_queue: queue.SimpleQueue = queue.SimpleQueue()
        self._authed: deque = deque()    # (conn, head, verdict) from the auth thread
        self._auth_thread: threading.Thread | None = None
        self._reload_at = time.monotonic() + RELOAD_EVERY
        self.request_timeout = request_timeout
        self.response_timeout = response_timeout
        self.max_connections = _connection_bound(max_connections)
        self.renders = 0        # encodings made (each one shared by its generation)
        self.generations = 0    # snapshots read
        family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(listen)
            self._listener.listen(backlog)
        except OSError as exc:
            self._listener.close()
            raise UsageError(f"--prometheus: cannot listen on {listen[0]}:{listen[1]} "
                             f"({exc.strerror})") from None
        self._listener.setblocking(False)
        self.address = self._listener.getsockname()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._done: deque = deque()      # (generation, unit) made by the render thread
        self._generation: _Generation | None = None
        self._conns: dict[int, _Conn] = {}
        self._selector = selectors.DefaultSelector()
        self._listening = False
        self._paused_until = 0.0
        self._stop = False
        self.thread = threading.Thread(target=self._serve, name="tcprtt-exporter",
                                       daemon=True)
        self.thread.start()

    @property
    def scheme(self) -> str:
        return "https" if self._tls is not None else "http"

    def close(self) -> None:
        self._stop = True
        self._wake()
        self.thread.join(timeout=5)
        if self._auth_thread is not None:
            self._auth_queue.put(None)
            self._auth_thread.join(timeout=5)
        if not self.thread.is_alive():
            for conn in list(self._conns.values()):
                self._drop(conn)
            self._selector.close()
            self._listener.close()
            self._wake_r.close()
            self._wake_w.close()

    # The event loop ---------------------------------------------------------

    def _serve(self) -> None:
        sel = self._selector
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._listen(True)
        next_sweep = time.monotonic()
        while not self._stop:
            now = time.monotonic()
            timeout = max(0.0, next_sweep - now) if self._conns else None
            if not self._listening and self._paused_until:
                wait = max(0.0, self._paused_until - now)
                timeout = wait if timeout is None else min(timeout, wait)
            accept = False
            for key, _ in sel.select(timeout):
                if key.data is None:
                    accept = True
                elif key.data == "wake":
                    self._drain_wake()
                else:
                    conn = key.data
                    if conn.state == _Conn.READING:
                        self._read(conn)
                    elif conn.state == _Conn.WRITING:
                        self._write(conn)
            self._finish_renders()
            self._finish_auth()
            now = time.monotonic()
            if self._paused_until and now >= self._paused_until:
                self._paused_until = 0.0
                accept = True
            if accept:
                self._accept()
            if now >= next_sweep:
                self._sweep(now)
                next_sweep = now + min(0.25, self.request_timeout / 4)

    def _listen(self, on: bool) -> None:
        if on and not self._listening:
            self._selector.register(self._listener, selectors.EVENT_READ, None)
        elif not on and self._listening:
            self._selector.unregister(self._listener)
        self._listening = on

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # already full: the loop wakes anyway
            pass

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _reload(self) -> None:
        """The web configuration again, if its files changed: new connections
        get it; one that tcprtt refuses leaves the one in use, with one line
        on stderr."""
        now = time.monotonic()
        if self.web_config is None or now < self._reload_at:
            return
        self._reload_at = now + RELOAD_EVERY
        if not self.web_config.changed():
            return
        from .webconfig import load
        try:
            fresh = load(self.web_config.path)
        except UsageError as exc:
            print(f"tcprtt: {exc}; the web configuration in use is kept", file=sys.stderr,
                  flush=True)
            return
        fresh.stamp = self.web_config.stamp
        self.web_config, self._tls, self._auth = fresh, fresh.tls, fresh.auth
        self._extra_head = "".join(f"{name}: {value}\r\n"
                                   for name, value in fresh.headers).encode()
        print(f"tcprtt: {fresh.path}: reloaded", file=sys.stderr, flush=True)

    def _accept(self) -> None:
        self._reload()
        for _ in range(ACCEPTS_PER_TURN):
            if len(self._conns) >= self.max_connections and not self._evict():
                self._listen(False)  # all busy: newcomers wait in the backlog
                return
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors all the same: fewer connections from
                    # now on, and a pause rather than a spin on the listener.
                    self.max_connections = max(1, len(self._conns) - 1)
                    if not self._evict():
                        self._paused_until = time.monotonic() + PAUSE_ON_EMFILE
                        self._listen(False)
                        return
                    continue
                if exc.errno in (errno.ECONNABORTED, errno.EPERM, errno.EPROTO):
                    continue
                raise
            sock.setblocking(False)
            if self._tls is not None:
                try:
                    sock = self._tls.wrap_socket(sock, server_side=True,
                                                 do_handshake_on_connect=False)
                except OSError:
                    sock.close()
                    continue
            conn = _Conn(sock, time.monotonic(), self.request_timeout)
            self._conns[sock.fileno()] = conn
            self._watch(conn, selectors.EVENT_READ)
            self._read(conn)  # the request is often here already
        self._listen(True)

    def _evict(self) -> bool:
        """Close the connection that has waited longest without sending its
        request (or, failing that, whose response has been stuck longest);
        False when every connection is making progress."""
        now = time.monotonic()
        reading = [c for c in self._conns.values() if c.state == _Conn.READING]
        if reading:
            oldest = min(reading, key=lambda c: c.started)
            if now - oldest.started >= EVICT_AFTER:
                self._drop(oldest)
                return True
            # Just accepted, its request may be on the way: try again when
            # it has had its time.
            self._paused_until = oldest.started + EVICT_AFTER
        stuck = [c for c in self._conns.values()
                 if c.state == _Conn.WRITING and now - c.progress > 1.0]
        if stuck:
            self._drop(min(stuck, key=lambda c: c.progress))
            return True
        return False

    def _sweep(self, now: float) -> None:
        for conn in [c for c in self._conns.values()
                     if c.state != _Conn.WAITING and now >= c.deadline]:
            self._drop(conn)

    def _watch(self, conn: _Conn, events: int) -> None:
        if events == conn.events:
            return
        if not events:
            self._selector.unregister(conn.sock)
        elif conn.events:
            self._selector.modify(conn.sock, events, conn)
        else:
            self._selector.register(conn.sock, events, conn)
        conn.events = events

    def _drop(self, conn: _Conn) -> None:
        if conn.state == _Conn.CLOSED:
            return
        del self._conns[conn.sock.fileno()]
        self._watch(conn, 0)
        conn.state = _Conn.CLOSED
        conn.out.clear()
        try:
            conn.sock.close()
        except OSError:
            pass
        if not self._listening and not self._stop \
                and len(self._conns) < self.max_connections:
            self._paused_until = 0.0
            self._listen(True)

    # One connection -----------------------------------------------------------

    def _handshake(self, conn: _Conn) -> bool:
        """Advance the TLS handshake; True once it is done and the client
        may send its request."""
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(conn, selectors.EVENT_READ)
            return False
        except ssl.SSLWantWriteError:
            self._watch(conn, selectors.EVENT_WRITE)
            return False
        except OSError:  # refused certificate, wrong protocol, reset: no response
            self._drop(conn)
            return False
        if not self.web_config.peer_allowed(conn.sock):
            self._drop(conn)
            return False
        conn.handshaking = False
        self._watch(conn, selectors.EVENT_READ)
        return True

    def _read(self, conn: _Conn) -> None:
        if conn.handshaking and not self._handshake(conn):
            return
        try:
            data = conn.sock.recv(8192)
            # TLS may hold decrypted bytes that the selector will not report.
            while isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending() \
                    and len(data) <= MAX_HEAD:
                data += conn.sock.recv(8192)
        except (BlockingIOError, ssl.SSLWantReadError):
            self._watch(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(conn, selectors.EVENT_WRITE)
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            self._drop(conn)
            return
        self._watch(conn, selectors.EVENT_READ)
        conn.inbuf += data
        end = conn.inbuf.find(b"\r\n\r\n")
        if end < 0:
            end = conn.inbuf.find(b"\n\n")
        if end < 0:
            if len(conn.inbuf) > MAX_HEAD:
                self._respond(conn, _plain("431 Request Header Fields Too Large",
                                           "request head too large\n"))
            return
        head, conn.inbuf = conn.inbuf[:end], b""
        self._request(conn, head)

    def _request(self, conn: _Conn, head: bytes) -> None:
        lines = head.decode("iso-8859-1").replace("\r\n", "\n").split("\n")
        words = lines[0].split()
        if len(words) != 3 or not words[2].startswith("HTTP/"):
            self._respond(conn, _plain("400 Bad Request", "bad request line\n"))
            return
        method, target, _ = words
        if method == "GET" and target == HEALTH_PATH:  # for probes; no metrics, no auth
            self._respond(conn, _plain("200 OK", "OK\n"))
            return
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers.setdefault(name.strip().lower(), value.strip())
        if self._auth is not None and not conn.authorized \
                and not self._authorize(conn, head, headers.get("authorization")):
            return
        if method != "GET":
            self._respond(conn, _plain("501 Not Implemented",
                                       f"unsupported method {method!r}\n"))
            return
        encoder, content_type = choose_encoder(headers.get("accept"))
        params = parse_qs(urlparse(target).query)
        names = tuple(sorted(set(params["name[]"]))) if "name[]" in params else None
        unit = (content_type, names, gzip_accepted(headers.get("accept-encoding")))
        conn.state = _Conn.WAITING
        self._watch(conn, 0)
        generation = self._generation
        joined = generation.join(unit, encoder, conn) if generation else False
        if joined is False:  # the first scrape of a new generation
            generation = self._generation = _Generation()
            self.generations += 1
            generation.join(unit, encoder, conn)
            threading.Thread(target=self._render, args=(generation,),
                             name="tcprtt-render", daemon=True).start()
        elif joined is not None:
            self._respond(conn, joined)

    # Basic authentication ---------------------------------------------------

    def _authorize(self, conn: _Conn, head: bytes, header: str | None) -> bool:
        """True when the request may be served now. Otherwise it has been
        answered with 401, or waits for the auth thread's bcrypt."""
        verdict = self._auth.cached(header)
        if verdict is None:
            conn.state = _Conn.WAITING
            self._watch(conn, 0)
            if self._auth_thread is None:
                self._auth_thread = threading.Thread(target=self._check_auth,
                                                     name="tcprtt-auth", daemon=True)
                self._auth_thread.start()
            self._auth_queue.put((conn, head, header))
            return False
        if not verdict:
            self._unauthorized(conn)
            return False
        conn.authorized = True
        return True

    def _unauthorized(self, conn: _Conn) -> None:
        self._respond(conn, _Response("401 Unauthorized",
                                      [("Content-Type", "text/plain; charset=utf-8"),
                                       ("WWW-Authenticate", "Basic")], b"Unauthorized\n"))

    def _check_auth(self) -> None:
        """The auth thread: bcrypt, one request at a time, off the event loop."""
        while True:
            item = self._auth_queue.get()
            if item is None or self._stop:
                return
            conn, head, header = item
            if conn.state != _Conn.WAITING:  # dropped meanwhile
                continue
            try:
                verdict = self._auth.check(header)
            except Exception:  # never serve on an error
                verdict = False
            self._authed.append((conn, head, verdict))
            self._wake()

    def _finish_auth(self) -> None:
        while self._authed:
            conn, head, verdict = self._authed.popleft()
            if conn.state != _Conn.WAITING:
                continue
            if verdict:
                conn.authorized = True
                self._request(conn, head)
            else:
                self._unauthorized(conn)

    def _respond(self, conn: _Conn, response: _Response) -> None:
        conn.state = _Conn.WRITING
        now = time.monotonic()
        conn.deadline = now + self.response_timeout
        conn.progress = now
        head = response.head
        if self._extra_head:  # the web configuration's headers
            head = head[:-2] + self._extra_head + b"\r\n"
        conn.out.extend((memoryview(head), memoryview(response.body)))
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        out = conn.out
        try:
            while out:
                buf = out[0]
                if not buf:
                    out.popleft()
                    continue
                sent = conn.sock.send(buf)
                conn.progress = time.monotonic()
                if sent < len(buf):
                    out[0] = buf[sent:]
                    break
                out.popleft()
        except (BlockingIOError, ssl.SSLWantWriteError):
            pass
        except ssl.SSLWantReadError:
            self._watch(conn, selectors.EVENT_READ)
            return
        except OSError:
            self._drop(conn)
            return
        if out:
            self._watch(conn, selectors.EVENT_WRITE)
            return
        if isinstance(conn.sock, ssl.SSLSocket):
            try:
                conn.sock.unwrap()  # close_notify; the peer's answer is not awaited
            except (OSError, ValueError):
                pass
        self._linger(conn.sock)
        self._drop(conn)

    @staticmethod
    def _linger(sock: socket.socket) -> None:
        """Read what the client sent beyond its request head, so closing sends
        FIN after the response, not a reset that could cut it short."""
        try:
            for _ in range(8):
                if not sock.recv(65536):
                    break
        except OSError:
            pass

    # Rendering ----------------------------------------------------------------

    def _finish_renders(self) -> None:
        while self._done:
            generation, unit = self._done.popleft()
            response = generation.results.get(unit)
            if unit is None:  # closed: its bytes go with its last sends
                if self._generation is generation:
                    self._generation = None
                continue
            for conn in generation.take_waiters(unit):
                if conn.state == _Conn.WAITING:
                    self._respond(conn, response)

    def _render(self, generation: _Generation) -> None:
        """The render thread of one generation: one snapshot, each wanted
        encoding once, each posted to the event loop as soon as it is made."""
        snapshot = error = None
        try:
            snapshot = self.collector.read()
        except Exception as exc:  # the tracer failed: every scraper is told
            error = exc
        plain: dict[tuple, bytes] = {}
        while True:
            with generation.lock:
                todo = [u for u in generation.wanted if u not in generation.results]
                if not todo:
                    generation.closed = True
                    break
            for unit in todo:
                response = self._encode(unit, generation.encoders[unit], snapshot, error,
                                        plain)
                with generation.lock:
                    generation.results[unit] = response
                    # Closed with its last result: a scrape arriving after
                    # that reads a new snapshot.
                    generation.closed = all(u in generation.results
                                            for u in generation.wanted)
                self._done.append((generation, unit))
                self._wake()
        snapshot = plain = None
        self._done.append((generation, None))
        self._wake()

    def _encode(self, unit: tuple, encoder, snapshot, error, plain: dict) -> _Response:
        content_type, names, gzipped = unit
        if error is not None:
            return _plain("500 Internal Server Error", f"cannot read the maps: {error}\n")
        try:
            body = plain.get((content_type, names))
            if body is None:
                body = self.collector.encode(snapshot, encoder, names)
                plain[(content_type, names)] = body
                self.renders += 1
            headers = [("Content-Type", content_type)]
            if gzipped:
                body = gzip.compress(body, compresslevel=GZIP_LEVEL)
                headers.append(("Content-Encoding", "gzip"))
            return _Response("200 OK", headers, body)
        except Exception as exc:
            print(f"tcprtt: cannot render the metrics: {exc}", file=sys.stderr)
            return _plain("500 Internal Server Error", "cannot render the metrics\n")
