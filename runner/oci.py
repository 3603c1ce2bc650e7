"""An OCI distribution client on requests's public API: one registry, one
repository, every exchange bounded in time, size and retries.

What it trusts is written down in docs/registry.md ("What the client
trusts"). In short:

- Credentials (``--username``, the environment, ``~/.docker/config.json``
  with its credential helpers) go only to the registry's own origin (the
  scheme, host and port it was reached at), and to a bearer-token realm
  over HTTPS or on a loopback address. A redirect, an upload ``Location`` or
  a realm elsewhere gets no credentials; one that asks for them is refused
  with a message saying why.
- A loopback host is reached directly, never through a proxy from the
  environment (``HTTP_PROXY``...), so that what loopback may be sent stays
  on the machine.
- Redirects are followed (at most five) to http and https URLs only, never
  from HTTPS down to plain HTTP.
- Every exchange has one deadline for all of it (connect, TLS, headers,
  body): ``timeout`` seconds plus the time the bytes that have moved would
  take at ``MIN_RATE``. A watchdog shuts the socket when it passes, so a
  registry that sends one byte a second is cut off as one that sends none.
  A request is tried at most ``RETRIES`` times. ``TCPRTT_REGISTRY_TIMEOUT``
  (seconds, more than 0 and at most ``MAX_TIMEOUT``) sets ``timeout`` for
  a slow link or a test; unset, it is ``TIMEOUT``.
- Whatever a server says (error messages, reasons, header values, URLs)
  reaches the user only through ``clean``, which escapes control characters.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

import requests
import requests.adapters
import requests.auth
import requests.structures
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from . import package as package_mod
from .errors import RegistryError, UsageError
from .reference import Reference, is_loopback_host

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

MAX_MANIFEST = 4 << 20
MAX_BLOB = package_mod.MAX_PACKAGE_SIZE
MAX_ERROR_BODY = 64 << 10    # what is read of an error answer
MAX_TOKEN = 1 << 20
MAX_JSON_DEPTH = 64          # nesting of any JSON a server (or a helper) gives
TIMEOUT = 10.0               # seconds of grace per exchange
TIMEOUT_ENV = "TCPRTT_REGISTRY_TIMEOUT"
MAX_TIMEOUT = 600.0
MIN_RATE = 256 << 10         # bytes a second an exchange must keep up beyond its grace
CHUNK = 16 << 10
RETRIES = 3
RETRY_DELAY = 0.3
MAX_REDIRECTS = 5
HELPER_TIMEOUT = 10.0        # a docker credential helper's whole run


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# C0 and C1 controls, DEL, and the Unicode formatting characters that reorder
# or hide text on a terminal (bidi overrides and isolates, zero widths, BOM).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def clean(text: object) -> str:
    """``text`` with every control character escaped (``\\x1b``, ``\\n``,
    ``\\u202e``): safe to print on a terminal in one line. Every message that
    carries a server's words goes through here."""
    def escape(m: re.Match) -> str:
        o = ord(m.group())
        return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"
    return _CONTROL.sub(escape, str(text))


def timeout_setting() -> float:
    """The grace per exchange: TCPRTT_REGISTRY_TIMEOUT if set, else TIMEOUT."""
    text = os.environ.get(TIMEOUT_ENV)
    if text is None or text == "":
        return TIMEOUT
    try:
        value = float(text) if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text) else -1.0
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_TIMEOUT:
        raise UsageError(f"{TIMEOUT_ENV}={clean(repr(text)[:80])}: not a number of seconds "
                         f"above 0 and at most {MAX_TIMEOUT:g}")
    return value


def parse_json(data: bytes | str):
    """JSON from a server, a helper or a file, nested at most MAX_JSON_DEPTH
    deep. Anything else is a ValueError, a document too deep for the parser
    included, so that what passes can be parsed again anywhere without
    running out of stack."""
    try:
        doc = json.loads(data)
    except RecursionError:
        raise ValueError(f"JSON nested over {MAX_JSON_DEPTH} levels deep") from None
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"JSON nested over {MAX_JSON_DEPTH} levels deep")
            items = value.values() if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)
    return doc


def fault(message: str) -> RegistryError:
    """A RegistryError whose text is safe to print (see ``clean``)."""
    return RegistryError(clean(message))


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    @classmethod
    def from_env(cls) -> Credentials | None:
        user = os.environ.get("TCPRTT_REGISTRY_USERNAME")
        password = os.environ.get("TCPRTT_REGISTRY_PASSWORD")
        return cls(user, password) if user and password is not None else None

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


# -- ~/.docker/config.json ------------------------------------------------------------------

def _config_keys(ref: Reference) -> list[str]:
    if ref.registry == "docker.io":
        return ["https://index.docker.io/v1/", "index.docker.io", "docker.io",
                "registry-1.docker.io"]
    return [ref.registry, f"https://{ref.registry}", f"http://{ref.registry}",
            f"https://{ref.registry}/v1/"]


def docker_credentials(ref: Reference) -> Credentials | None:
    """Credentials for the reference's registry from the docker config
    (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``): an
    ``auths`` entry, then ``credHelpers`` for the registry, then ``credsStore``."""
    directory = os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
    try:
        config = parse_json((Path(directory) / "config.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(config, dict):
        return None
    keys = _config_keys(ref)
    auths = config.get("auths") if isinstance(config.get("auths"), dict) else {}
    for key in keys:
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                continue
            if sep and user:
                return Credentials(user, password)
        if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            return Credentials(entry["username"], entry["password"])
    helpers = config.get("credHelpers") if isinstance(config.get("credHelpers"), dict) else {}
    for key in keys:
        if isinstance(helpers.get(key), str):
            return _from_helper(helpers[key], key)
    if isinstance(config.get("credsStore"), str):
        return _from_helper(config["credsStore"], keys[0])
    return None


def _from_helper(name: str, server: str) -> Credentials | None:
    """``docker-credential-NAME get``, bounded in time; None if it has nothing."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        return None
    try:
        proc = subprocess.run([f"docker-credential-{name}", "get"], input=server.encode(),
                              capture_output=True, timeout=HELPER_TIMEOUT, check=False)
        if proc.returncode != 0:
            return None
        answer = parse_json(proc.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if not isinstance(answer, dict):
        return None
    user, secret = answer.get("Username"), answer.get("Secret")
    if isinstance(user, str) and isinstance(secret, str) and user and user != "<token>":
        return Credentials(user, secret)
    return None


# -- the deadline -----------------------------------------------------------------------------

_local = threading.local()


def _shutdown(fd: int) -> None:
    """Shut a socket down by its descriptor (a duplicate of it), waking any
    thread blocked on it; nothing if the descriptor is no longer a socket."""
    try:
        dup = os.dup(fd)
    except OSError:
        return
    try:
        sock = socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


class _Watch:
    """One exchange's deadline: ``grace`` seconds plus the time the bytes
    moved so far (and one chunk more) take at MIN_RATE. Past it, the
    exchange's sockets are shut down and ``fired`` is set."""

    def __init__(self, grace: float, sending: int):
        self.grace = grace
        self.moved = sending
        self.started = time.monotonic()
        self.fired = False
        self._fds: set[int] = set()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcprtt-deadline", daemon=True)

    def __enter__(self) -> _Watch:
        _local.watch = self
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        _local.watch = None
        self._done.set()
        self._thread.join()

    def progress(self, n: int) -> None:
        self.moved += n

    def limit(self) -> float:
        return self.grace + (self.moved + CHUNK) / MIN_RATE

    def watch(self, fd: int) -> None:
        with self._lock:
            self._fds.add(fd)
            if self.fired:
                _shutdown(fd)

    def _run(self) -> None:
        while not self._done.wait(0.05):
            if time.monotonic() - self.started > self.limit():
                with self._lock:
                    self.fired = True
                    for fd in self._fds:
                        _shutdown(fd)
                return


def _watch_socket(sock) -> None:
    watch = getattr(_local, "watch", None)
    if watch is not None and sock is not None:
        try:
            watch.watch(sock.fileno())
        except OSError:
            pass


class _Watched:
    """Connections that tell the running exchange's watchdog their socket."""

    def _new_conn(self):
        sock = super()._new_conn()  # type: ignore[misc]
        _watch_socket(sock)
        return sock

    def putrequest(self, *args, **kwargs):
        _watch_socket(getattr(self, "sock", None))  # a kept-alive connection, reused
        return super().putrequest(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _Adapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy, **kwargs):
        manager = super().proxy_manager_for(proxy, **kwargs)
        if type(manager) is urllib3.ProxyManager:
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


class _NoAuth(requests.auth.AuthBase):
    """Keeps requests from adding ~/.netrc credentials of its own."""

    def __call__(self, r):
        return r


class _Transport(Exception):
    """An exchange that got no answer: kind is timeout, refused, untrusted,
    tls, host or other."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason

    @property
    def retryable(self) -> bool:
        return self.kind in ("timeout", "refused", "other")


def _transport(exc: BaseException, fired: bool) -> _Transport:
    text = str(exc)
    lowered = text.lower()
    if fired or isinstance(exc, requests.exceptions.Timeout) or "timed out" in lowered:
        return _Transport("timeout", "timed out")
    if isinstance(exc, requests.exceptions.SSLError):
        if "certificate verify failed" in lowered or "certificate_verify_failed" in lowered:
            return _Transport("untrusted", "TLS certificate not trusted (--ca-file)")
        return _Transport("tls", "TLS failed: " + _first_line(text))
    if "refused" in lowered:
        return _Transport("refused", "connection refused")
    if "name or service not known" in lowered or "resolution" in lowered or \
            "nodename nor servname" in lowered:
        return _Transport("host", "unknown host")
    if isinstance(exc, (requests.exceptions.ConnectionError,
                        requests.exceptions.ChunkedEncodingError)):
        return _Transport("other", _first_line(text))
    return _Transport("bad", f"{type(exc).__name__}: {_first_line(text)}")


def _first_line(text: str) -> str:
    return clean((text.splitlines() or [""])[0][:200])


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        raise fault(f"{url}: not a usable URL (bad port)") from None
    return scheme, (parts.hostname or "").lower(), port or (443 if scheme == "https" else 80)


def _show(origin: tuple[str, str, int]) -> str:
    scheme, host, port = origin
    return f"{scheme}://{'[' + host + ']' if ':' in host else host}:{port}"


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    """(scheme, params) of a WWW-Authenticate header, the scheme lower-cased."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}
    for k, v in re.findall(r'(\w+)=([^",\s]+)', rest):
        params.setdefault(k.lower(), v)
    return scheme.lower(), params


_NO_PROXY = {"http": None, "https": None, "all": None}


def _proxies(url: str) -> dict | None:
    """No proxy for a loopback host: what goes there (plain HTTP, and the
    credentials loopback may have) stays on the machine, as in Go's clients;
    elsewhere the environment's proxies apply."""
    return dict(_NO_PROXY) if is_loopback_host(urlsplit(url).hostname or "") else None


@dataclass
class Reply:
    """An answer, its body read in full (within the exchange's deadline)."""
    status_code: int
    reason: str
    headers: requests.structures.CaseInsensitiveDict
    content: bytes
    url: str

    def json(self):
        return parse_json(self.content)


def _check_ca_file(path: str) -> str:
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError:
        raise UsageError(f"--ca-file {clean(path)}: the file holds no PEM certificate") from None
    except OSError as exc:
        raise UsageError(f"--ca-file {clean(path)}: {exc.strerror or exc}") from None
    return path


def error_detail(reply: Reply) -> str:
    """The registry's own reason for an error answer, cleaned, or ''."""
    try:
        errors = parse_json(reply.content).get("errors") or []
        first = errors[0]
        return clean(f" ({first.get('code', '')}: {str(first.get('message', ''))[:200]})")
    except (ValueError, AttributeError, IndexError, KeyError, TypeError):
        return ""


class Client:
    """One registry, one repository; every call bounded in time and retries."""

    def __init__(self, ref: Reference, *, insecure: bool = False, ca_file: str | None = None,
                 credentials: Credentials | None = None, timeout: float | None = None,
                 retries: int | None = None):
        self.ref = ref
        self.timeout = timeout_setting() if timeout is None else timeout
        self.retries = max(1, RETRIES if retries is None else retries)
        self._verify: bool | str = _check_ca_file(ca_file) if ca_file else True
        self._given = credentials or Credentials.from_env()
        self._looked_up = False
        self._docker: Credentials | None = None
        self._auth: str | None = None  # the Authorization the registry's origin gets
        self._session = requests.Session()
        adapter = _Adapter()
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        if insecure and not ref.is_loopback:
            schemes = ["http"]
        elif insecure or ref.is_loopback:
            schemes = ["https", "http"]  # loopback: TLS if it answers, else plain HTTP
        else:
            schemes = ["https"]
        self.scheme = self._connect(schemes)

    @property
    def origin(self) -> tuple[str, str, int]:
        return _origin(f"{self.scheme}://{self.ref.api_host}/")

    def close(self) -> None:
        self._session.close()

    # -- credentials -------------------------------------------------------------------

    def credentials(self) -> Credentials | None:
        if self._given is not None:
            return self._given
        if not self._looked_up:
            self._looked_up = True
            self._docker = docker_credentials(self.ref)
        return self._docker

    # -- one exchange ------------------------------------------------------------------

    def _once(self, method: str, url: str, *, headers: dict, data: bytes | None, cap: int,
              what: str) -> Reply:
        """One HTTP exchange, no redirects, no retries; its body read in full
        under the deadline. Transport failures raise _Transport."""
        with _Watch(self.timeout, len(data or b"")) as watch:
            try:
                resp = self._session.request(
                    method, url, headers=headers, data=data, stream=True,
                    allow_redirects=False, timeout=(self.timeout, self.timeout),
                    verify=self._verify, auth=_NoAuth(), proxies=_proxies(url))
                try:
                    body = self._body(resp, method, cap, what, watch)
                finally:
                    resp.close()
            except RegistryError:
                raise
            except Exception as exc:  # whatever requests, urllib3 or http.client raise
                raise _transport(exc, watch.fired) from None
        if watch.fired:  # the socket was shut: what came may be cut short
            raise _Transport("timeout", "timed out")
        return Reply(resp.status_code, resp.reason or "", resp.headers, body, url)

    def _body(self, resp: requests.Response, method: str, cap: int, what: str,
              watch: _Watch) -> bytes:
        if method == "HEAD" or resp.status_code in (204, 304):
            return b""
        ok = 200 <= resp.status_code < 300
        limit = cap if ok else MAX_ERROR_BODY
        declared = resp.headers.get("Content-Length", "")
        if ok and declared.isdigit() and int(declared) > cap:
            raise fault(f"{self.ref.registry}: {what} is {declared} bytes, over the "
                        f"{cap}-byte limit")
        chunks, total = [], 0
        for chunk in resp.iter_content(CHUNK):
            total += len(chunk)
            if total > limit:
                if ok:
                    raise fault(f"{self.ref.registry}: {what} is over the {cap}-byte limit")
                break
            chunks.append(chunk)
            watch.progress(len(chunk))
        return b"".join(chunks)

    # -- redirects and authentication --------------------------------------------------

    def _follow(self, method: str, url: str, *, headers: dict, data: bytes | None, cap: int,
                what: str) -> Reply:
        """An exchange with redirects followed (http and https only, no
        downgrade), credentials sent to the registry's origin alone, and
        one answer to an authentication challenge."""
        for _ in range(MAX_REDIRECTS + 1):
            reply = self._authorized(method, url, headers=headers, data=data, cap=cap,
                                     what=what)
            location = reply.headers.get("Location")
            if reply.status_code not in (301, 302, 303, 307, 308) or not location:
                return reply
            target = urljoin(url, location)
            scheme = urlsplit(target).scheme.lower()
            if scheme not in ("http", "https"):
                raise fault(f"{self.ref.registry}: {what}: the registry redirected to a "
                            f"{scheme or 'schemeless'}: URL; only http and https redirects "
                            "are followed")
            if scheme == "http" and urlsplit(url).scheme.lower() == "https":
                raise fault(f"{self.ref.registry}: {what}: the registry redirected from "
                            f"HTTPS to plain HTTP ({_show(_origin(target))}); refused")
            if reply.status_code == 303:
                method, data = "GET", None
            url = target
        raise fault(f"{self.ref.registry}: {what}: more than {MAX_REDIRECTS} redirects")

    def _authorized(self, method: str, url: str, *, headers: dict, data: bytes | None,
                    cap: int, what: str) -> Reply:
        mine = _origin(url) == self.origin
        for attempt in range(2):
            sent = dict(headers)
            if mine and self._auth:
                sent["Authorization"] = self._auth
            reply = self._once(method, url, headers=sent, data=data, cap=cap, what=what)
            if reply.status_code != 401 or attempt:
                return reply
            challenge = reply.headers.get("WWW-Authenticate", "")
            if not mine:
                raise fault(f"{self.ref.registry}: {what}: {_show(_origin(url))} asks for "
                            "credentials, but it is not the registry's origin "
                            f"({_show(self.origin)}); credentials go only to the registry, "
                            "so none were sent")
            if not self._answer(challenge, what):
                return reply
        return reply

    def _answer(self, header: str, what: str) -> bool:
        """Take up a challenge from the registry; True if there is something new to send."""
        scheme, params = _challenge(header)
        creds = self.credentials()
        if scheme == "basic":
            if creds is None or self._auth == creds.basic():
                return False
            self._auth = creds.basic()
            return True
        if scheme == "bearer":
            token = self._token(params, creds, what)
            if token is None or self._auth == f"Bearer {token}":
                return False
            self._auth = f"Bearer {token}"
            return True
        return False

    def _token(self, params: dict[str, str], creds: Credentials | None,
               what: str) -> str | None:
        """A bearer token from the challenge's realm: with the credentials if
        there are any and the realm may have them, else anonymous."""
        realm = params.get("realm", "")
        parts = urlsplit(realm)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise fault(f"{self.ref.registry}: {what}: the token realm {realm!r} is not an "
                        "http or https URL")
        headers = {"Accept": "application/json"}
        if creds is not None:
            trusted = _origin(realm) == self.origin or parts.scheme.lower() == "https" or \
                is_loopback_host(parts.hostname)
            if not trusted:
                raise fault(f"{self.ref.registry}: {what}: the token realm "
                            f"{_show(_origin(realm))} is plain HTTP, not on loopback and not the "
                            "registry's origin; "
                            "credentials go only to the registry or to a token service over "
                            "HTTPS, so none were sent")
            headers["Authorization"] = creds.basic()
        query = urlencode({k: params[k] for k in ("service", "scope") if params.get(k)})
        url = realm + ("&" if "?" in realm else "?") + query if query else realm
        reply = self._once("GET", url, headers=headers, data=None, cap=MAX_TOKEN,
                           what="token")
        if reply.status_code != 200:
            if creds is None:
                return None  # anonymous access refused: the 401 stands
            name = {401: "401 unauthorized", 403: "403 forbidden"}.get(
                reply.status_code, str(reply.status_code))
            raise fault(f"{self.ref.registry}: {what}: the token service "
                        f"{_show(_origin(realm))} answered {name}{error_detail(reply)}")
        try:
            doc = parse_json(reply.content)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token or not token.isprintable():
            raise fault(f"{self.ref.registry}: {what}: the token service gave no token")
        return token

    # -- connection --------------------------------------------------------------------

    def _connect(self, schemes: list[str]) -> str:
        last = "unknown error"
        for scheme in schemes:
            try:
                probe = self._once("GET", f"{scheme}://{self.ref.api_host}/v2/", headers={},
                                   data=None, cap=MAX_ERROR_BODY, what="API check")
            except _Transport as exc:
                last = exc.reason
                if exc.kind in ("tls", "other") and "http" in schemes[schemes.index(scheme) + 1:]:
                    continue  # loopback without TLS: plain HTTP next
                break  # an untrusted certificate is never a reason to fall back
            self.scheme = scheme
            challenge, _ = _challenge(probe.headers.get("WWW-Authenticate", ""))
            if probe.status_code == 401 and challenge == "basic":
                creds = self.credentials()
                if creds is None:
                    raise fault(f"{self.ref.registry}: the registry asks for credentials "
                                "(--username with --password-stdin, TCPRTT_REGISTRY_USERNAME/"
                                "TCPRTT_REGISTRY_PASSWORD, or ~/.docker/config.json)")
                self._auth = creds.basic()
            return scheme
        raise fault(f"cannot reach registry {self.ref.registry}: {last}")

    # -- requests ----------------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.ref.api_host}/v2/{self.ref.repository}/{path}"

    def request(self, method: str, path: str, *, headers: dict | None = None,
                data: bytes | None = None, what: str = "", cap: int = MAX_BLOB) -> Reply:
        """One exchange with bounded retries on time-outs, refused connections
        and 5xx; 401 and 403 are errors that say which."""
        what = what or f"{method} {path}"
        url = path if path.startswith(("http://", "https://")) else self.url(path)
        headers = {"Accept-Encoding": "identity", **(headers or {})}
        last = ""
        for attempt in range(self.retries):
            if attempt:
                time.sleep(RETRY_DELAY * (2 ** (attempt - 1)))
            try:
                reply = self._follow(method, url, headers=headers, data=data, cap=cap,
                                     what=what)
            except _Transport as exc:
                if not exc.retryable:
                    raise fault(f"{self.ref.registry}: {what}: {exc.reason}") from None
                last = exc.reason
                continue
            if reply.status_code >= 500:
                last = f"{reply.status_code} {reply.reason}"
                continue
            if reply.status_code == 401:
                hint = "" if self.credentials() is not None else " (credentials are needed)"
                raise fault(f"{self.ref.registry}: {what}: 401 unauthorized"
                            f"{error_detail(reply)}{hint}")
            if reply.status_code == 403:
                raise fault(f"{self.ref.registry}: {what}: 403 forbidden{error_detail(reply)}")
            return reply
        raise fault(f"{self.ref.registry}: {what}: failed after {self.retries} tries ({last})")

    def get_manifest(self, target: str, expected: str | None = None) -> tuple[bytes, str, str]:
        """(body, media type, digest) of a manifest or index, digest checked."""
        reply = self.request("GET", f"manifests/{target}", cap=MAX_MANIFEST,
                             headers={"Accept": f"{MEDIA_INDEX}, {MEDIA_MANIFEST}"},
                             what=f"manifest {target}")
        if reply.status_code == 404:
            raise fault(f"{self.ref}: not found in {self.ref.registry}")
        if reply.status_code != 200:
            raise fault(f"{self.ref}: manifest {target}: {reply.status_code}"
                        f"{error_detail(reply)}")
        body = reply.content
        digest = sha256(body)
        for claimed in (expected, reply.headers.get("Docker-Content-Digest"),
                        target if target.startswith("sha256:") else None):
            if claimed and claimed != digest:
                raise fault(f"{self.ref}: manifest {target} does not match its digest "
                            f"(got {digest}, expected {claimed[:80]})")
        try:
            doc = parse_json(body)
        except ValueError as exc:
            raise fault(f"{self.ref}: manifest {target} is not JSON ({_first_line(str(exc))})") \
                from None
        if not isinstance(doc, dict):
            raise fault(f"{self.ref}: manifest {target} is not a JSON object")
        media = doc.get("mediaType") or ""
        media = str(media) or reply.headers.get("Content-Type", "")
        return body, media.split(";")[0], digest

    def get_blob(self, digest: str, size: int, cache) -> Path:
        """Fetch a blob into the cache, checking size and digest; returns its path."""
        if not isinstance(size, int) or size < 0 or size > MAX_BLOB:
            raise fault(f"{self.ref}: blob {digest} is {size} bytes, over the "
                        f"{MAX_BLOB}-byte limit")
        cache.path(digest)  # a sha256 digest, or an error before any request
        if cache.has(digest):
            return cache.path(digest)
        reply = self.request("GET", f"blobs/{digest}", cap=size, what=f"blob {digest}")
        if reply.status_code != 200:
            raise fault(f"{self.ref}: blob {digest}: {reply.status_code}{error_detail(reply)}")
        got = sha256(reply.content)
        if len(reply.content) != size or got != digest:
            raise fault(f"{self.ref}: blob {digest} does not match its digest "
                        f"(got {got}, {len(reply.content)} bytes)")
        return cache.put(reply.content, digest)

    def blob_exists(self, digest: str) -> bool:
        return self.request("HEAD", f"blobs/{digest}", what=f"blob {digest}").status_code == 200

    def put_blob(self, data: bytes) -> str:
        digest = sha256(data)
        if self.blob_exists(digest):
            return digest
        start = self.request("POST", "blobs/uploads/", what="blob upload",
                             headers={"Content-Type": "application/octet-stream"})
        location = start.headers.get("Location")
        if start.status_code != 202 or not location:
            raise fault(f"{self.ref.registry}: cannot start a blob upload "
                        f"({start.status_code}{error_detail(start)})")
        location = urljoin(start.url, location)
        scheme = urlsplit(location).scheme.lower()
        if scheme not in ("http", "https"):
            raise fault(f"{self.ref.registry}: blob upload: the upload location is a "
                        f"{scheme or 'schemeless'}: URL; only http and https are used")
        if scheme == "http" and self.scheme == "https":
            raise fault(f"{self.ref.registry}: blob upload: the upload location "
                        f"{_show(_origin(location))} is plain HTTP; refused")
        sep = "&" if "?" in location else "?"
        done = self.request("PUT", f"{location}{sep}digest={digest}", data=data,
                            headers={"Content-Type": "application/octet-stream"},
                            what=f"blob upload {digest}")
        if done.status_code != 201:
            raise fault(f"{self.ref.registry}: blob upload {digest}: "
                        f"{done.status_code}{error_detail(done)}")
        return digest

    def put_manifest(self, body: bytes, media_type: str, target: str) -> str:
        reply = self.request("PUT", f"manifests/{target}", data=body,
                             headers={"Content-Type": media_type}, what=f"manifest {target}")
        if reply.status_code != 201:
            raise fault(f"{self.ref.registry}: manifest {target}: "
                        f"{reply.status_code}{error_detail(reply)}")
        return sha256(body)
