"""The runner's exceptions: one root, each subclass with its exit status."""


class TcprttError(Exception):
    """Something the user should be told in one line."""

    exit_code = 1


class UsageError(TcprttError):
    """A bad command-line value."""

    exit_code = 2


class PackageError(TcprttError):
    """A package or BPF object that is malformed or unsupported."""


class KernelError(TcprttError):
    """The kernel or libbpf refused an operation.

    ``log`` is everything libbpf and the verifier said about it (empty when
    nothing was said), ``log_path`` the file it was also written to, if any:
    the message is one line, the log is for ``-v`` and bug reports.
    """

    #: What went wrong, in a few words a variant chooser or doctor can show.
    kind = "failed"

    def __init__(self, message: str, errno: int = 0, *, log: str = "",
                 log_path: str | None = None):
        super().__init__(message)
        self.errno = errno
        self.log = log
        self.log_path = log_path


class KernelUnsupported(KernelError):
    """This kernel lacks what the program needs: its program type, its attach
    point, a helper or kfunc it calls, or BTF. Another variant may work."""

    kind = "not supported by this kernel"


class VerifierRefused(KernelError):
    """The kernel has what the program needs, but the verifier rejected it."""

    kind = "refused by the verifier"


class RegistryError(TcprttError):
    """An OCI registry fault."""
