"""The error for a workdir whose saved state cannot be read or written."""


class WorkdirStateError(RuntimeError):
    """A workdir file is unreadable (truncated, half-copied) or could not be written.

    The message names the file and says what to do. `kstory` prints it as
    one line and exits with code 1; nothing the run saved before is lost.
    """
