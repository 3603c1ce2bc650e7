"""A package loaded into the kernel: open, configure, load, attach, read, close.

``LoadedProbe`` owns the libbpf object and its links and is the only thing
that closes them: links before the object, each once, on every way out.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import os
import platform
import re
import stat
from ctypes import c_size_t, c_uint32
from pathlib import Path

from .. import capabilities, features
from ..errors import KernelError, KernelUnsupported, VerifierRefused
from ..package import HistMap, Package
from . import libbpf

VERIFIER_LOG_SIZE = 1 << 20
# Entries fetched by one batched lookup; bounded so the buffers stay small.
BATCH = 4096
BATCH_BYTES = 1 << 20  # keys and values that one batched lookup fetches, at most
# Sections libbpf attaches through a perf event whose id it reads in tracefs.
TRACEPOINT_SECTIONS = ("tracepoint/", "tp/")

# -- diagnostics: what a failed load or attach says, in full and in one line

ENOTSUPP = libbpf.ENOTSUPP
LOG_DIR_NAME = "tcprtt"
LOG_PREFIXES = ("verifier-", "libbpf-")
LOG_FILES_KEPT = 20  # a directory keeps this user's newest logs, no more

# Verifier lines that say the kernel lacks something the program uses
# (a helper, a kfunc, an instruction, a type or field in its BTF), as
# opposed to the verifier refusing what the program does with what exists.
_LACKING = re.compile(
    r"unknown func |invalid func unknown#|program of this type cannot use helper"
    r"|calling kernel function .* is not allowed|kernel function .* is not (allowed|supported)"
    r"|cannot call kernel function|kfunc .* (is not|not) (allowed|supported|found)"
    r"|calling kernel functions are not allowed|JIT does not support|JIT doesn't support"
    r"|unknown opcode|failed to resolve CO-RE relocation|<invalid CO-RE relocation>"
    r"|<invalid kfunc call>|<invalid BPF map reference>|attach_btf_id .* is not"
    r"|is not supported|not supported by",
    re.IGNORECASE)
CAUSE_LINES = 3  # the verifier's last lines, where it says why it stopped
CAUSE_WORDS = 2  # of those, the lines that the one-line error quotes
# libbpf notes that say the same when the kernel never got to verify.
_LACKING_NOTES = re.compile(
    r"failed to find kernel BTF type ID|BTF is required, but is missing"
    r"|failed to find valid kernel BTF|kernel doesn't support|not supported by (the )?kernel"
    r"|failed to resolve CO-RE relocation|failed to find BTF for extern",
    re.IGNORECASE)
# A map libbpf could not create (its name is the group).
_MAP_FAILED = re.compile(r"map '([^']*)': failed to create")
# libbpf's remarks around a failure that name no cause.
_NOISE = ("Retrying without BTF", "failed to load object", "failed to load: -",
          "permission error while running as root")
# The verifier's closing statistics, which name no cause.
_STATS = ("processed ", "verification time", "stack depth", "max_states_per_insn",
          "peak_states", "mark_read")

# errnos that, with nothing in the verifier log, say the kernel lacks the
# program type, an attribute, or the attach target.
_LOAD_LACKING = {errno_mod.EINVAL, errno_mod.E2BIG, errno_mod.ESRCH, errno_mod.ENOENT,
                 errno_mod.EOPNOTSUPP, ENOTSUPP}
_ATTACH_LACKING = {errno_mod.ENOENT, errno_mod.EINVAL, errno_mod.ESRCH, errno_mod.ENODEV,
                   errno_mod.EOPNOTSUPP, ENOTSUPP, errno_mod.E2BIG}
LIBBPF_ERRNO_PROGTYPE = 4010
LIBBPF_ERRNO_VERIFY = 4007
LIBBPF_ERRNO_PROG2BIG = 4008


def _meaningful(log: str) -> list[str]:
    return [line.strip() for line in log.splitlines() if line.strip()
            and not line.startswith(_STATS)]


_INSTRUCTION = re.compile(r"\d+: |;")


def verifier_cause(log: str) -> str:
    """The verifier's last words, which say why (cilium/ebpf's VerifierError
    shows the last line): the lines after the last instruction it walked,
    two at most, without the closing statistics."""
    lines = _meaningful(log)
    cause: list[str] = []
    for line in reversed(lines):
        if _INSTRUCTION.match(line) or len(cause) == CAUSE_WORDS:
            break
        cause.insert(0, line)
    return "; ".join(cause) or (lines[-1] if lines else "")


def _lacking_line(text: str, pattern: re.Pattern) -> str | None:
    for line in reversed(text.splitlines()):
        if pattern.search(line):
            return line.strip()
    return None


def classify(stage: str, err: int, log: str, notes: list[str],
             missing: list[str] = ()) -> tuple[type[KernelError], str]:
    """(the error class, why in a few words, or "") of a failed ``stage``
    ("open", "load" or "attach") with errno ``err``, the verifier's ``log``,
    libbpf's ``notes`` and what the kernel was found to lack (``missing``,
    such as "tracing programs")."""
    if stage == "open":  # the object itself: a package's fault, not the kernel's
        return KernelError, ""
    if missing:
        return KernelUnsupported, f"no {' or '.join(missing)}"
    if err in (errno_mod.EOPNOTSUPP, ENOTSUPP):
        return KernelUnsupported, ""
    if stage == "attach":
        return (KernelUnsupported if err in _ATTACH_LACKING else KernelError), ""
    if err == LIBBPF_ERRNO_PROGTYPE:
        return KernelUnsupported, "no such program type"
    if log.strip():
        line = _lacking_line("\n".join(_meaningful(log)[-CAUSE_LINES:]), _LACKING)
        if line is not None:
            return KernelUnsupported, line
        return VerifierRefused, ""
    note = _lacking_line("\n".join(notes), _LACKING_NOTES)
    if note is not None:
        return KernelUnsupported, note.removeprefix("libbpf: ")
    if any(_MAP_FAILED.search(note) for note in notes):
        return KernelError, ""  # a map's size or flags, not a missing feature
    if err in (LIBBPF_ERRNO_VERIFY, LIBBPF_ERRNO_PROG2BIG):
        return VerifierRefused, ""
    if err in _LOAD_LACKING:
        return KernelUnsupported, ""
    return KernelError, ""


def main_note(notes: list[str]) -> str:
    """The libbpf message that says most: the first that is not one of its
    closing or retrying remarks."""
    for note in notes:
        if not any(noise in note for noise in _NOISE):
            return note.removeprefix("libbpf: ")
    return notes[0].removeprefix("libbpf: ") if notes else ""


def _log_dirs() -> list[Path]:
    dirs = []
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        dirs.append(Path(runtime) / LOG_DIR_NAME)
    dirs.append(Path("/run") / LOG_DIR_NAME)
    return dirs


def _own_dir(path: Path) -> bool:
    """``path`` made if missing (mode 0700); a directory of this user's, not
    a link, that no one else may write in."""
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
            and not st.st_mode & 0o022)


def _prune(directory: Path, prefix: str) -> None:
    """Keep this user's newest LOG_FILES_KEPT logs in ``directory``."""
    try:
        entries = []
        for entry in os.scandir(directory):
            name = entry.name
            if name.endswith(".log") and any(name.startswith(prefix + p) for p in LOG_PREFIXES):
                st = entry.stat(follow_symlinks=False)
                if st.st_uid == os.geteuid():
                    entries.append((st.st_mtime_ns, entry.path))
        entries.sort(reverse=True)
        for _, path in entries[LOG_FILES_KEPT:]:
            os.unlink(path)
    except OSError:
        pass


def write_log(text: str, kind: str) -> str | None:
    """``text`` in a new file of mode 0600 named ``kind-PID-xxxx.log``, in
    $XDG_RUNTIME_DIR/tcprtt, /run/tcprtt, or else the temporary directory;
    its path, or None when nowhere could take it."""
    import tempfile  # only when something failed
    places = [(d, "") for d in _log_dirs() if _own_dir(d)]
    try:
        places.append((Path(tempfile.gettempdir()), "tcprtt-"))
    except OSError:  # no writable temporary directory (a read-only root): no file
        pass
    for directory, prefix in places:
        try:
            fd, path = tempfile.mkstemp(prefix=f"{prefix}{kind}-{os.getpid()}-",
                                        suffix=".log", dir=directory)
        except OSError:
            continue
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError:
            try:
                os.unlink(path)
            except OSError:
                pass
            continue
        _prune(directory, prefix)
        return path
    return None


def diagnose(message: str, exc: libbpf.LibbpfError, stage: str, notes: list[str],
             log: str = "", missing: list[str] = ()) -> KernelError:
    """The error for a failed load or attach: one line naming the cause and
    the file that holds the whole log; the log itself on the error too."""
    err = exc.errno
    cls, why = classify(stage, err, log, notes, missing)
    reason = exc.args[0].split(": ", 1)[-1]
    if log.strip():
        line = f"{message} (verifier: {verifier_cause(log)}): {reason}"
    else:
        line = f"{message}: {reason}"
        if notes and not why:  # libbpf's word, unless the cause is known
            line += f" (libbpf: {main_note(notes)})"
    if cls is not KernelError:
        line += f": {cls.kind}" + (f" ({why})" if why and why not in line else "")
    text = ""
    path = None
    if log.strip() or notes:
        parts = [f"tcprtt: {line}",
                 f"errno: {err} {errno_mod.errorcode.get(err, '')} ({libbpf.strerror(err)}); "
                 f"class: {cls.__name__}",
                 f"kernel: {platform.release()} {platform.machine()}; "
                 f"libbpf {libbpf.load_library().version}"]
        if notes:
            parts += ["-- libbpf messages --", *notes]
        if log.strip():
            parts += ["-- verifier log --", log.rstrip("\n")]
            if err == errno_mod.ENOSPC:
                parts.append(f"-- the verifier's log filled its {VERIFIER_LOG_SIZE} bytes "
                             "and was cut --")
        text = "\n".join(parts) + "\n"
        path = write_log(text, "verifier" if log.strip() else "libbpf")
        if path is not None:
            line += f" ({'verifier' if log.strip() else 'libbpf'} log: {path})"
    return cls(line, err, log=text, log_path=path)


class LoadedProbe:
    """A package's BPF object in the kernel. Use as a context manager."""

    def __init__(self, package: Package, rodata: bytes | None = None,
                 max_entries: int | None = None):
        self.package = package
        self._lib = libbpf.load_library()
        self._obj: int | None = None
        self._links: list[int] = []
        self._batch_ok = True
        self._log = ctypes.create_string_buffer(VERIFIER_LOG_SIZE)
        name = package.name.encode()
        opts = libbpf.OpenOpts(sz=ctypes.sizeof(libbpf.OpenOpts), object_name=name,
                               kernel_log_buf=ctypes.cast(self._log, ctypes.c_void_p),
                               kernel_log_size=VERIFIER_LOG_SIZE)
        obj = package.obj
        libbpf.recent_messages()
        try:
            self._obj = self._lib.bpf_object__open_mem(obj, len(obj), ctypes.byref(opts))
        except libbpf.LibbpfError as exc:
            raise self._error(f"{package.source}: libbpf cannot open the object", exc,
                              "open") from None
        try:
            self._maps = self._collect_maps()
            if rodata:
                self._write_rodata(rodata)
            if max_entries is not None:
                for hist in package.hists:
                    self._lib.bpf_map__set_max_entries(self._maps[hist.name], max_entries)
            try:
                self._lib.bpf_object__load(self._obj)
            except libbpf.LibbpfError as exc:
                raise self._load_error(exc) from None
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _error(message: str, exc: libbpf.LibbpfError, stage: str = "attach") -> KernelError:
        """The error for a failed open or attach, with every libbpf message
        since the last ``libbpf.recent_messages()``."""
        notes = [m for m in libbpf.recent_messages() if m]
        return diagnose(message, exc, stage, notes)

    def _load_error(self, exc: libbpf.LibbpfError) -> KernelError:
        notes = [m for m in libbpf.recent_messages() if m]
        log = self._log.value.decode("utf-8", "replace")
        missing: list[str] = []
        if not log.strip() and not (exc.errno == errno_mod.EPERM and capabilities.missing()):
            # Nothing verified: ask the kernel whether it has the program and
            # map types at all (a refusal for want of capabilities is not that).
            missing = self._missing_types(notes)
        return diagnose(f"{self.package.source}: the kernel refused to load it", exc, "load",
                        notes, log, missing)

    def _missing_types(self, notes: list[str]) -> list[str]:
        """"<type> programs" and "<type> maps" of this object that the kernel
        lacks: of every program, and of each map that libbpf could not create."""
        lib = self._lib
        missing = []
        for handle, _, _ in self.programs():
            ptype = lib.bpf_program__type(handle)
            if lib.libbpf_probe_bpf_prog_type(ptype, None) == 0:
                name = lib.libbpf_bpf_prog_type_str(ptype)
                missing.append(f"{name.decode() if name else ptype} programs")
        for note in notes:
            found = _MAP_FAILED.search(note)
            handle = self._maps.get(found.group(1)) if found else None
            if handle:
                mtype = lib.bpf_map__type(handle)
                if lib.libbpf_probe_bpf_map_type(mtype, None) == 0:
                    name = lib.libbpf_bpf_map_type_str(mtype)
                    missing.append(f"{name.decode() if name else mtype} maps")
        libbpf.recent_messages()  # the probes' own messages are not the load's
        return list(dict.fromkeys(missing))

    def _collect_maps(self) -> dict[str, int]:
        maps = {}
        pos = None
        while True:
            pos = self._lib.bpf_object__next_map(self._obj, pos)
            if not pos:
                return maps
            maps[self._lib.bpf_map__name(pos).decode()] = pos

    def _write_rodata(self, data: bytes) -> None:
        rodata = [m for name, m in self._maps.items() if name.endswith(".rodata")]
        if len(rodata) != 1:
            raise KernelError(f"{self.package.source}: expected one .rodata map, "
                              f"found {len(rodata)}")
        size = c_size_t()
        ptr = self._lib.bpf_map__initial_value(rodata[0], ctypes.byref(size))
        if size.value != len(data):
            raise KernelError(f"{self.package.source}: .rodata is {size.value} bytes, "
                              f"settings are {len(data)}")
        ctypes.memmove(ptr, data, len(data))

    def programs(self) -> list[tuple[int, str, str]]:
        """(handle, name, section) of each program."""
        out = []
        pos = None
        while True:
            pos = self._lib.bpf_object__next_program(self._obj, pos)
            if not pos:
                return out
            out.append((pos, self._lib.bpf_program__name(pos).decode(),
                        self._lib.bpf_program__section_name(pos).decode()))

    def program_ids(self) -> list[int]:
        """Kernel ids of the loaded programs (for bpf_stats and bpftool)."""
        ids = []
        for handle, _, _ in self.programs():
            fd = self._lib.bpf_program__fd(handle)
            info = _ProgInfo()
            length = c_uint32(ctypes.sizeof(info))
            if self._lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(length)) == 0:
                ids.append(info.id)
        return ids

    def attach(self) -> None:
        """Attach every program; tracefs is mounted first if one needs it."""
        for handle, name, section in self.programs():
            if section.startswith(TRACEPOINT_SECTIONS):
                try:
                    features.ensure_tracefs()
                except KernelError as exc:
                    raise KernelError(f"cannot attach {name} to {section}: {exc}",
                                      exc.errno) from None
            libbpf.recent_messages()
            try:
                link = self._attach_program(handle, name)
            except libbpf.LibbpfError as exc:
                raise self._error(f"cannot attach {name} to {section}", exc) from None
            if link is not None:
                self._links.append(link)

    def _attach_program(self, handle, name: str):
        """Attach one program by its section; the link, or None where the
        program is held some other way (a subclass's targets)."""
        return self._lib.bpf_program__attach(handle)

    def max_entries(self, name: str) -> int:
        return self._lib.bpf_map__max_entries(self._maps[name])

    def has_map(self, name: str) -> bool:
        return name in self._maps

    def read_counter(self, name: str) -> int:
        """Entry 0 of a one-element array of u64, such as a drop counter."""
        key = ctypes.c_uint32(0)
        value = ctypes.c_uint64(0)
        self._lib.bpf_map_lookup_elem(self.map_fd(name), ctypes.byref(key), ctypes.byref(value))
        return value.value

    def read_percpu(self, name: str, value_size: int, index: int = 0) -> list[bytes]:
        """Entry ``index`` of a per-CPU array: one value per possible CPU."""
        stride = (value_size + 7) // 8 * 8
        cpus = self._lib.libbpf_num_possible_cpus()
        key = ctypes.c_uint32(index)
        buf = ctypes.create_string_buffer(stride * cpus)
        self._lib.bpf_map_lookup_elem(self.map_fd(name), ctypes.byref(key), buf)
        raw = buf.raw
        return [raw[i * stride:i * stride + value_size] for i in range(cpus)]

    def map_fd(self, name: str) -> int:
        return self._lib.bpf_map__fd(self._maps[name])

    def read(self, hist: HistMap) -> list[tuple[bytes, bytes]]:
        """Every (key, value) of a histogram map, as raw bytes."""
        keys, values = self.read_columns(hist)
        vs = hist.value_size
        return list(zip(keys, [values[i:i + vs] for i in range(0, len(values), vs)]))

    def read_columns(self, hist: HistMap) -> tuple[list[bytes], bytes]:
        """Every key of a histogram map, and every value in the same order
        as one string of bytes (value_size each): a reader that unpacks
        values with one struct.iter_unpack cuts nothing per key."""
        fd = self.map_fd(hist.name)
        if self._batch_ok:
            try:
                return self._read_batched(fd, hist)
            except KernelError as exc:
                if exc.errno not in (errno_mod.EINVAL, errno_mod.ENOTSUP, errno_mod.EOPNOTSUPP):
                    raise
                self._batch_ok = False  # an older kernel: walk the keys instead
        pairs = self._read_walk(fd, hist)
        return [k for k, _ in pairs], b"".join(v for _, v in pairs)

    def _read_walk(self, fd: int, hist: HistMap) -> list[tuple[bytes, bytes]]:
        key = ctypes.create_string_buffer(hist.key_size)
        nxt = ctypes.create_string_buffer(hist.key_size)
        value = ctypes.create_string_buffer(hist.value_size)
        out = []
        prev = None
        for _ in range(self.max_entries(hist.name) + 1):
            if self._lib.bpf_map_get_next_key(fd, prev, nxt) != 0:
                break
            try:
                self._lib.bpf_map_lookup_elem(fd, nxt, value)
            except libbpf.LibbpfError as exc:
                if exc.errno != errno_mod.ENOENT:  # deleted meanwhile
                    raise
            else:
                out.append((nxt.raw, value.raw))
            ctypes.memmove(key, nxt, hist.key_size)
            prev = key
        return out

    def _read_batched(self, fd: int, hist: HistMap) -> tuple[list[bytes], bytes]:
        # Bounded in bytes, not entries: a package's value size sets the cost.
        batch = max(1, min(BATCH, BATCH_BYTES // (hist.key_size + hist.value_size)))
        keys = ctypes.create_string_buffer(hist.key_size * batch)
        values = ctypes.create_string_buffer(hist.value_size * batch)
        token_in = ctypes.create_string_buffer(max(hist.key_size, 8))
        token_out = ctypes.create_string_buffer(max(hist.key_size, 8))
        opts = libbpf.BatchOpts(sz=ctypes.sizeof(libbpf.BatchOpts))
        out: list[bytes] = []
        blocks: list[bytes] = []
        first = True
        # The map's size as loaded (--max-keys), not as built; every call but
        # the last returns at least one entry.
        for _ in range(self.max_entries(hist.name) + 1):
            count = c_uint32(batch)
            rc = self._lib.bpf_map_lookup_batch(fd, None if first else token_in, token_out,
                                                keys, values, ctypes.byref(count),
                                                ctypes.byref(opts))
            n = count.value
            if n:
                ks = hist.key_size
                kraw = keys.raw[:n * ks]
                out += [kraw[i:i + ks] for i in range(0, n * ks, ks)]
                blocks.append(values.raw[:n * hist.value_size])
            if rc == -errno_mod.ENOENT:
                break
            if rc < 0:
                raise KernelError(f"bpf_map_lookup_batch: {os.strerror(-rc)}", -rc)
            ctypes.memmove(token_in, token_out, len(token_out))
            first = False
        return out, b"".join(blocks)

    def detach(self) -> None:
        """Destroy the links, keeping the programs and maps: no new run starts
        once it returns (runs already under way end within a grace period),
        and the maps keep what was counted. Harmless to call again."""
        links, self._links = self._links, []
        for link in reversed(links):
            self._lib.bpf_link__destroy(link)

    def close(self) -> None:
        """Detach and unload; harmless to call again."""
        self.detach()
        obj, self._obj = self._obj, None
        if obj:
            self._lib.bpf_object__close(obj)

    def __enter__(self) -> LoadedProbe:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # a safety net only; owners call close()
        if getattr(self, "_obj", None) or getattr(self, "_links", None):
            self.close()


class _ProgInfo(ctypes.Structure):
    """The head of struct bpf_prog_info: type, id."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("_rest", ctypes.c_uint8 * 224)]

