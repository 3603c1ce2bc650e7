"""The digest-keyed cache of what was pulled from OCI registries.

``$XDG_CACHE_HOME/tcprtt`` (else ``~/.cache/tcprtt``)::

    blobs/sha256/<hex>                 indexes, manifests, packages and the module
    refs/<registry>/<repository>/<tag> the digest a tag last resolved to

Nothing in it is opened through a symbolic link: directories are walked one
at a time from the cache's parent with ``O_DIRECTORY|O_NOFOLLOW`` relative
to the directory before (``dir_fd``), files are opened with ``O_NOFOLLOW``
and must be regular files. A link anywhere from ``tcprtt`` down is an error
that names its path and never what it points to or holds.

Every file is written to a locked temporary file (``.tmp-*``) beside it and
renamed into place; a failed write (a full disk included) removes it. A
temporary left by a process that was killed is swept on a later run: one no
process holds locked, a few seconds old, or any an hour old.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import stat
import time
from pathlib import Path

from .errors import RegistryError
from .oci import MAX_BLOB, clean, fault, sha256
from .reference import Reference

TMP_PREFIX = ".tmp-"
TMP_GRACE = 5.0          # seconds before an unlocked temporary is taken as abandoned
TMP_STALE = 3600.0       # seconds after which any temporary is abandoned
_HEX = re.compile(r"[0-9a-f]{64}")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _hex(digest: str) -> str:
    algo, _, hexdigest = str(digest).partition(":")
    if algo != "sha256" or not _HEX.fullmatch(hexdigest):
        raise fault(f"not a sha256 digest: {str(digest)[:80]!r}")
    return hexdigest


class Cache:
    """Blobs by digest, and the digest each pulled reference last resolved to."""

    def __init__(self, root: Path | None = None):
        if root is None:
            base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
            root = Path(base) / "tcprtt"
        self.root = Path(root)
        self._swept: set[tuple[str, ...]] = set()

    # -- directories -------------------------------------------------------------------

    def _open_dir(self, parts: tuple[str, ...], create: bool) -> int | None:
        """A descriptor of root/parts, walked without following any link;
        None if it does not exist and ``create`` is not set."""
        parent = self.root.parent
        if create:
            try:
                os.makedirs(parent, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise self._os_error("create", parent, exc) from None
        try:
            fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._os_error("open", parent, exc) from None
        where = parent
        try:
            for name in (self.root.name, *parts):
                where = where / name
                if create:
                    try:
                        os.mkdir(name, 0o700, dir_fd=fd)
                    except FileExistsError:
                        pass
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if create:
                        raise
                    os.close(fd)
                    return None
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise fault(f"cache: {where} is a symbolic link or not a directory; "
                                    "the cache follows no links (remove it)") from None
                    raise
                os.close(fd)
                fd = child
        except RegistryError:
            os.close(fd)
            raise
        except OSError as exc:
            os.close(fd)
            raise self._os_error("open", where, exc) from None
        if parts not in self._swept:
            self._swept.add(parts)
            _sweep(fd)
        return fd

    def _os_error(self, doing: str, path: Path, exc: OSError) -> RegistryError:
        return fault(f"cache: cannot {doing} {path}: {exc.strerror or exc}")

    # -- files -------------------------------------------------------------------------

    def _read_file(self, parts: tuple[str, ...], name: str, limit: int) -> bytes | None:
        """A regular file's bytes (at most ``limit``), never through a link;
        None if absent. Errors name the path, never the contents."""
        dfd = self._open_dir(parts, create=False)
        if dfd is None:
            return None
        path = self.root.joinpath(*parts, name)
        try:
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=dfd)
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise fault(f"cache: {path} is a symbolic link; the cache follows "
                                "no links (remove it)") from None
                raise self._os_error("open", path, exc) from None
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise fault(f"cache: {path} is not a regular file (remove it)")
                if st.st_size > limit:
                    raise fault(f"cache: {path} is over {limit} bytes (remove it)")
                chunks, total = [], 0
                while True:
                    chunk = os.read(fd, 1 << 20)
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > limit:
                        raise fault(f"cache: {path} is over {limit} bytes (remove it)")
                    chunks.append(chunk)
                return b"".join(chunks)
            except OSError as exc:
                raise self._os_error("read", path, exc) from None
            finally:
                os.close(fd)
        finally:
            os.close(dfd)

    def _write_file(self, parts: tuple[str, ...], name: str, data: bytes) -> Path:
        """Write ``data`` as root/parts/name: a locked temporary beside it,
        renamed into place; nothing is left behind when anything fails."""
        path = self.root.joinpath(*parts, name)
        dfd = self._open_dir(parts, create=True)
        assert dfd is not None
        tmp = None
        try:
            tmp = f"{TMP_PREFIX}{secrets.token_hex(8)}"
            fd = os.open(tmp, _WRITE_FLAGS, 0o644, dir_fd=dfd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            tmp = None
            return path
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise fault(f"cache: no space left on the device for {path} "
                            f"({len(data)} bytes); nothing was kept") from None
            raise self._os_error("write", path, exc) from None
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp, dir_fd=dfd)
                except OSError:
                    pass
            os.close(dfd)

    # -- blobs -------------------------------------------------------------------------

    BLOBS = ("blobs", "sha256")

    def path(self, digest: str) -> Path:
        return self.root.joinpath(*self.BLOBS, _hex(digest))

    def has(self, digest: str) -> bool:
        name = _hex(digest)
        try:
            dfd = self._open_dir(self.BLOBS, create=False)
        except RegistryError:
            return False
        if dfd is None:
            return False
        try:
            return stat.S_ISREG(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode)
        except OSError:
            return False
        finally:
            os.close(dfd)

    def read(self, digest: str) -> bytes:
        data = self._read_file(self.BLOBS, _hex(digest), MAX_BLOB)
        if data is None:
            raise fault(f"cache: {self.path(digest)} is missing")
        if sha256(data) != digest:
            raise fault(f"cached blob {digest} is corrupt: delete {self.path(digest)}")
        return data

    def put(self, data: bytes, digest: str) -> Path:
        if sha256(data) != digest:
            raise fault(f"content does not match its digest {clean(digest)[:80]}")
        return self._write_file(self.BLOBS, _hex(digest), data)

    # -- references --------------------------------------------------------------------

    def _ref_parts(self, ref: Reference) -> tuple[tuple[str, ...], str]:
        safe = [part for part in (ref.registry.replace(":", "_"), *ref.repository.split("/"))
                if part not in ("", ".", "..")]
        return ("refs", *safe), ref.tag or "latest"

    def set_ref(self, ref: Reference, digest: str) -> None:
        _hex(digest)
        parts, name = self._ref_parts(ref)
        self._write_file(parts, name, digest.encode())

    def get_ref(self, ref: Reference) -> str | None:
        """The digest the tag last resolved to; None if there is none, or if
        what is there is not a file holding a digest (its contents are never
        repeated)."""
        parts, name = self._ref_parts(ref)
        try:
            data = self._read_file(parts, name, 256)
        except RegistryError:
            return None
        if data is None:
            return None
        text = data.decode("ascii", "replace").strip()
        try:
            _hex(text)
        except RegistryError:
            return None
        return text


def _sweep(dfd: int) -> None:
    """Remove the temporaries in a directory that no writer is working on."""
    try:
        names = [n for n in os.listdir(dfd) if n.startswith(TMP_PREFIX)]
    except OSError:
        return
    now = time.time()
    for name in names:
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            _unlink(name, dfd)  # a link or anything else under our prefix is not ours
            continue
        age = now - st.st_mtime
        if age > TMP_STALE:
            _unlink(name, dfd)
            continue
        if age < TMP_GRACE:
            continue
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dfd)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live writer holds it
        finally:
            os.close(fd)
        _unlink(name, dfd)


def _unlink(name: str, dfd: int) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except OSError:
        pass
