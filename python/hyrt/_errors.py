"""hyrt's exceptions: one class per hyrt::ErrorCode (include/hyrt/error.h).

Every error hyrt raises is a ``hyrt.Error``; the subclasses also derive from the builtin
exception a Python caller would catch for that kind of failure (a bad argument is a
``ValueError``, a missing file a ``FileNotFoundError``, ...).
"""


class Error(RuntimeError):
    """A hyrt failure; ``code`` names its hyrt::ErrorCode."""

    code = "error"


class InvalidArgument(Error, ValueError):
    """A bad value was passed (size, steps, sampler name, ...)."""

    code = "invalid argument"


class InvalidModel(Error, ValueError):
    """A model file or folder is malformed or inconsistent."""

    code = "invalid model"


class NotFound(Error, FileNotFoundError):
    """A file, component, tensor or key is missing."""

    code = "not found"


class Unsupported(Error, NotImplementedError):
    """Valid input hyrt does not handle (yet)."""

    code = "unsupported"


class OutOfMemory(Error, MemoryError):
    """An allocation failed; the model stays usable."""

    code = "out of memory"


class IoError(Error, OSError):
    """Reading or writing a file failed."""

    code = "i/o error"


class InternalError(Error):
    """A broken invariant inside hyrt: a bug."""

    code = "internal error"


class Cancelled(Error):
    """The call was stopped by its CancelToken."""

    code = "cancelled"


_ALL = (Error, InvalidArgument, InvalidModel, NotFound, Unsupported, OutOfMemory, IoError,
        InternalError, Cancelled)
for _c in _ALL:
    _c.__module__ = "hyrt"  # tracebacks say hyrt.InvalidArgument, where users catch it
_BY_CODE = {c.code: c for c in _ALL[1:]}


def class_for(code):
    """The class for hyrt::error_code_name(code); Error for a code this package predates."""
    return _BY_CODE.get(code, Error)
