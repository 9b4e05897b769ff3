"""The error for a workdir whose saved state cannot be read or written."""


class WorkdirStateError(RuntimeError):
    """A workdir file is unreadable (truncated, half-copied) or could not be written.

    The message names the file and says what to do. `kstory` prints it as
    one line and exits with code 1; nothing the run saved before is lost.
    """


def error_summary(error, limit=200):
    """`error` as one short line, `Type: message`, for a `WorkdirStateError`.

    Example:
    >>> error_summary(OSError("Unable to open file  (truncated file)"))
    'OSError: Unable to open file (truncated file)'
    """
    return " ".join(f"{type(error).__name__}: {error}".split())[:limit]
