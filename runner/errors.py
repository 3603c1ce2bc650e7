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
    """The kernel or libbpf refused an operation."""

    def __init__(self, message: str, errno: int = 0):
        super().__init__(message)
        self.errno = errno


class RegistryError(TcprttError):
    """An OCI registry fault."""
