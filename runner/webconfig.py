"""``--web-config FILE``: TLS and basic authentication for the exporter.

The file has the format of the Prometheus exporter-toolkit's web
configuration (the ``--web.config.file`` of node_exporter and Prometheus
itself), so one file and one Secret serve every exporter of a node::

    tls_server_config:
      cert_file: server.crt          # relative paths: from the file's directory
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # optional: client certificates
      client_ca_file: clients.pem
    basic_auth_users:
      prometheus: $2y$10$...         # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':\\n')

What tcprtt does not implement is refused by name rather than ignored:
``cipher_suites`` and ``curve_preferences`` (Go's names; OpenSSL's defaults
apply), ``rate_limit``, and the client auth types that accept a client
certificate without verifying it (``RequestClientCert``,
``RequireAnyClientCert``). The file, the certificates and the hashes are read
at start, and again when one of them changes (a renewed certificate in a
Kubernetes Secret): the exporter looks at most once a second, when a
connection arrives, and keeps what it has if the new file is refused.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import os
import re
import ssl
import threading
from collections import OrderedDict
from pathlib import Path

from .errors import UsageError

FLAG = "--web-config"
TOP = ("tls_server_config", "basic_auth_users", "http_server_config")
TLS_KEYS = ("cert_file", "key_file", "cert", "key", "client_ca_file", "client_ca",
            "client_auth_type", "client_allowed_sans", "min_version", "max_version",
            "prefer_server_cipher_suites")
REFUSED = {
    "rate_limit": "rate_limit is not supported by tcprtt",
    "cipher_suites": "cipher_suites is not supported by tcprtt (OpenSSL's defaults apply)",
    "curve_preferences": "curve_preferences is not supported by tcprtt "
                         "(OpenSSL's defaults apply)",
}
CLIENT_AUTH = {
    "": ssl.CERT_NONE,
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
UNVERIFIED = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# The headers the exporter-toolkit lets a configuration add, with the values
# it accepts (None: any).
HEADERS = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
CACHE_SIZE = 256  # verdicts on (user, password) pairs kept, so bcrypt runs once per pair


class WebConfig:
    """A checked web configuration: an SSL context or None, the basic-auth
    users or None, and extra response headers."""

    def __init__(self, path: str, tls: ssl.SSLContext | None, allowed_sans: tuple | None,
                 auth: BasicAuth | None, headers: tuple[tuple[str, str], ...],
                 files: tuple[str, ...] = ()):
        self.path = path
        self.tls = tls
        self.allowed_sans = allowed_sans
        self.auth = auth
        self.headers = headers
        self.files = (path, *files)  # what it was read from
        self.stamp = _stamp(self.files)

    def changed(self) -> bool:
        """Whether a file it was read from changed since (or since the last
        call that said so)."""
        stamp = _stamp(self.files)
        if stamp == self.stamp:
            return False
        self.stamp = stamp
        return True

    def peer_allowed(self, sock: ssl.SSLSocket) -> bool:
        """Whether the client certificate carries one of ``client_allowed_sans``
        (always, when the list is not given)."""
        if self.allowed_sans is None:
            return True
        cert = sock.getpeercert() or {}
        for kind, value in cert.get("subjectAltName", ()):
            value = value.strip()
            if kind == "IP Address":
                try:
                    value = str(ipaddress.ip_address(value))
                except ValueError:
                    pass
            if value in self.allowed_sans:
                return True
        return False


def _stamp(files: tuple[str, ...]) -> tuple:
    """What tells that a file changed: its identity, size and time (through
    symbolic links, as a Secret's volume swaps them)."""
    stamps = []
    for name in files:
        try:
            st = os.stat(name)
            stamps.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


def _fail(path: str, what: str) -> UsageError:
    return UsageError(f"{FLAG} {path}: {what}")


def _mapping(path: str, where: str, value: object, known: tuple) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, f"{where} must be a mapping, not {type(value).__name__}")
    for key in value:
        name = f"{where}.{key}" if where else str(key)
        if key in REFUSED:
            raise _fail(path, REFUSED[key] if not where else f"{where}.{REFUSED[key]}")
        if key not in known:
            raise _fail(path, f"unknown key {name!r}")
    return value


def _string(path: str, where: str, value: object) -> str:
    if not isinstance(value, str):
        raise _fail(path, f"{where} must be a string, not {value!r}")
    return value


def load(path: str) -> WebConfig:
    """Read and check ``path``; every fault is one UsageError line that names
    the bad value."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise _fail(path, f"cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise _fail(path, "not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise _fail(path, f"not valid YAML{where}") from None
    if data is None:
        data = {}
    top = _mapping(path, "", data, TOP)
    base = Path(path).resolve().parent
    tls_conf = _mapping(path, "tls_server_config", top.get("tls_server_config"), TLS_KEYS)
    tls, sans = _tls(path, base, tls_conf) if tls_conf else (None, None)
    http_conf = _mapping(path, "http_server_config", top.get("http_server_config"),
                         ("http2", "headers"))
    if "http2" in http_conf and not isinstance(http_conf["http2"], bool):
        raise _fail(path, f"http_server_config.http2 must be true or false, "
                          f"not {http_conf['http2']!r}")
    headers = []
    for name, value in _mapping(path, "http_server_config.headers",
                                http_conf.get("headers"), tuple(HEADERS)).items():
        value = _string(path, f"http_server_config.headers.{name}", value)
        if HEADERS[name] is not None and value not in HEADERS[name]:
            raise _fail(path, f"http_server_config.headers.{name}: {value!r} is not one of "
                              f"{', '.join(HEADERS[name])}")
        if "\n" in value or "\r" in value:
            raise _fail(path, f"http_server_config.headers.{name}: a line break in {value!r}")
        if value:
            headers.append((name, value))
    users = top.get("basic_auth_users")
    auth = BasicAuth(_users(path, users)) if users else None
    files = tuple(str(base / tls_conf[key]) for key in ("cert_file", "key_file", "client_ca_file")
                  if isinstance(tls_conf.get(key), str))
    return WebConfig(path, tls, sans, auth, tuple(headers), files)


def _users(path: str, users: object) -> dict[bytes, bytes]:
    if not isinstance(users, dict):
        raise _fail(path, f"basic_auth_users must be a mapping, not {type(users).__name__}")
    checked = {}
    for name, hashed in users.items():
        if not isinstance(name, str) or not name or ":" in name:
            raise _fail(path, f"basic_auth_users: {name!r} is not a user name "
                              "(a non-empty string without ':')")
        if not isinstance(hashed, str) or not BCRYPT.fullmatch(hashed) \
                or not 4 <= int(hashed.split("$")[2]) <= 31:
            raise _fail(path, f"basic_auth_users.{name}: {hashed!r} is not a bcrypt hash")
        checked[name.encode()] = hashed.encode()
    return checked


def _file(path: str, base: Path, where: str, value: object) -> str:
    name = _string(path, f"tls_server_config.{where}", value)
    full = base / name
    try:
        with open(full, "rb"):
            pass
    except OSError as exc:
        raise _fail(path, f"tls_server_config.{where}: cannot read {str(full)!r} "
                          f"({exc.strerror or exc})") from None
    return str(full)


def _inline(text: str) -> str:
    """A path that reads as ``text``: an in-memory file, for the inline cert
    and key (OpenSSL loads those from paths only)."""
    fd = os.memfd_create("tcprtt-web-config", os.MFD_CLOEXEC)
    os.write(fd, text.encode())
    return f"/proc/self/fd/{fd}"


def _tls(path: str, base: Path, conf: dict) -> tuple[ssl.SSLContext, tuple | None]:
    for a, b in (("cert", "cert_file"), ("key", "key_file"), ("client_ca", "client_ca_file")):
        if conf.get(a) and conf.get(b):
            raise _fail(path, f"tls_server_config: both {a} and {b} are given; use one")
    for a, b in (("cert", "cert_file"), ("key", "key_file")):
        if not conf.get(a) and not conf.get(b):
            raise _fail(path, f"tls_server_config: missing one of {a} or {b}")
    auth_type = conf.get("client_auth_type", "")
    if auth_type in UNVERIFIED:
        raise _fail(path, f"tls_server_config.client_auth_type: {auth_type} accepts an "
                          "unverified client certificate, which tcprtt does not; use "
                          "RequireAndVerifyClientCert or VerifyClientCertIfGiven")
    if not isinstance(auth_type, str) or auth_type not in CLIENT_AUTH:
        raise _fail(path, f"tls_server_config.client_auth_type: {auth_type!r} is not one of "
                          f"{', '.join(k for k in CLIENT_AUTH if k)}")
    has_ca = bool(conf.get("client_ca") or conf.get("client_ca_file"))
    if has_ca and CLIENT_AUTH[auth_type] == ssl.CERT_NONE:
        raise _fail(path, "tls_server_config: a client CA is given but client_auth_type "
                          f"is {auth_type or 'NoClientCert'}")
    if not has_ca and CLIENT_AUTH[auth_type] != ssl.CERT_NONE:
        raise _fail(path, f"tls_server_config.client_auth_type: {auth_type} needs "
                          "client_ca_file or client_ca")
    versions = []
    for key, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        value = conf.get(key, default)
        if value not in VERSIONS:
            raise _fail(path, f"tls_server_config.{key}: {value!r} is not one of "
                              f"{', '.join(VERSIONS)}")
        versions.append(VERSIONS[value])
    if versions[0] > versions[1]:
        raise _fail(path, f"tls_server_config: min_version {conf.get('min_version')} is "
                          f"above max_version {conf.get('max_version', 'TLS13')}")
    prefer = conf.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        raise _fail(path, f"tls_server_config.prefer_server_cipher_suites must be true or "
                          f"false, not {prefer!r}")
    sans = conf.get("client_allowed_sans")
    if sans is not None:
        if not isinstance(sans, list) or not all(isinstance(s, str) for s in sans):
            raise _fail(path, f"tls_server_config.client_allowed_sans must be a list of "
                              f"strings, not {sans!r}")
        if CLIENT_AUTH[auth_type] != ssl.CERT_REQUIRED:
            raise _fail(path, "tls_server_config.client_allowed_sans needs client_auth_type "
                              "RequireAndVerifyClientCert")
        sans = tuple(_normal_san(s) for s in sans)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.minimum_version, ctx.maximum_version = versions
    except (ValueError, ssl.SSLError) as exc:
        raise _fail(path, f"tls_server_config: this OpenSSL refuses the TLS versions "
                          f"({exc})") from None
    if not prefer:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    opened = []
    try:
        if conf.get("cert_file"):
            cert = _file(path, base, "cert_file", conf["cert_file"])
        else:
            cert = _inline(_string(path, "tls_server_config.cert", conf["cert"]))
            opened.append(cert)
        if conf.get("key_file"):
            key = _file(path, base, "key_file", conf["key_file"])
        else:
            key = _inline(_string(path, "tls_server_config.key", conf["key"]))
            opened.append(key)
        try:
            ctx.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            shown = "the inline cert and key" if opened else f"{cert!r} and {key!r}"
            raise _fail(path, f"tls_server_config: {shown} are not a PEM certificate and "
                              f"its key ({getattr(exc, 'reason', None) or exc})") from None
    finally:
        for fd_path in opened:
            os.close(int(fd_path.rsplit("/", 1)[1]))
    if has_ca:
        try:
            if conf.get("client_ca_file"):
                ctx.load_verify_locations(
                    cafile=_file(path, base, "client_ca_file", conf["client_ca_file"]))
            else:
                ctx.load_verify_locations(
                    cadata=_string(path, "tls_server_config.client_ca", conf["client_ca"]))
        except (ssl.SSLError, ValueError) as exc:
            shown = conf.get("client_ca_file", "client_ca")
            raise _fail(path, f"tls_server_config: {shown!r} holds no PEM CA certificate "
                              f"({getattr(exc, 'reason', None) or exc})") from None
        ctx.verify_mode = CLIENT_AUTH[auth_type]
    return ctx, sans


def _normal_san(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


class BasicAuth:
    """``Authorization: Basic`` against bcrypt hashes.

    ``cached`` answers at once for a (user, password) pair seen before and
    for a malformed header; ``check`` runs bcrypt (tens of milliseconds, by
    design), so the exporter calls it off its event loop. An unknown user
    costs the same bcrypt as a known one, and names are compared in
    constant time, so timing tells neither names nor passwords."""

    def __init__(self, users: dict[bytes, bytes]):
        import bcrypt  # only with a web config that has users

        self._bcrypt = bcrypt
        self.users = users
        self._key = os.urandom(32)
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        self._lock = threading.Lock()
        self._decoy: bytes | None = None
        self.checks = 0  # bcrypt comparisons made

    @staticmethod
    def credentials(header: str | None) -> tuple[bytes, bytes] | None:
        """(user, password) from an Authorization header, or None."""
        if not header:
            return None
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except ValueError:
            return None
        user, sep, password = decoded.partition(b":")
        return (user, password) if sep else None

    def _slot(self, user: bytes, password: bytes) -> bytes:
        return hmac.new(self._key, len(user).to_bytes(4, "big") + user + password,
                        "sha256").digest()

    def cached(self, header: str | None) -> bool | None:
        """True or False when known without bcrypt; None when ``check`` must run."""
        pair = self.credentials(header)
        if pair is None:
            return False
        with self._lock:
            verdict = self._cache.get(self._slot(*pair))
            if verdict is not None:
                self._cache.move_to_end(self._slot(*pair))
        return verdict

    def _user(self, name: bytes) -> bytes | None:
        found = None
        for known, hashed in self.users.items():  # every name, compared in constant time
            if hmac.compare_digest(known, name):
                found = hashed
        return found

    def check(self, header: str | None) -> bool:
        pair = self.credentials(header)
        if pair is None:
            return False
        user, password = pair
        hashed = self._user(user)
        known = hashed is not None
        if not known:
            if self._decoy is None:
                cost = int(next(iter(self.users.values())).split(b"$")[2])
                self._decoy = self._bcrypt.hashpw(os.urandom(16).hex().encode(),
                                                  self._bcrypt.gensalt(cost))
            hashed = self._decoy
        try:
            ok = self._bcrypt.checkpw(password, hashed)
        except ValueError:  # longer than bcrypt's 72 bytes: never a match
            ok = False
        self.checks += 1
        verdict = known and ok
        with self._lock:
            self._cache[self._slot(user, password)] = verdict
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return verdict
