"""Quiets TensorFlow's native start-up log for the `kstory` command line."""

import contextlib
import os
import sys


def _is_command_line(argv):
    """True in `kstory ...` and `python -m kstory.cli ...` processes, given
    the interpreter's own command line."""
    return os.path.basename(sys.argv[0]) == "kstory" or argv[1:3] == ["-m", "kstory.cli"]


@contextlib.contextmanager
def quiet_tensorflow_start():
    """In the `kstory` command line without `--verbose`, hides TensorFlow's
    C++ log: its start-up notices and, on a machine without a GPU, `failed
    call to cuInit`.

    TensorFlow writes its first lines while it is imported, before its log
    settings apply, so the process's native stderr is discarded for the
    duration of the block, which imports it; `TF_CPP_MIN_LOG_LEVEL` quiets
    what comes later. Python errors still show: they are printed after the
    block. A Python user's process is left as it is.
    """
    argv = getattr(sys, "orig_argv", sys.argv)
    if not _is_command_line(argv) or "--verbose" in argv:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
