"""One writer per workdir: an OS-level lock held while a command writes into it."""

import datetime
import json
import logging
import os
import socket

import filelock

LOCK_FILE = "workdir.lock"
HOLDER_FILE = "workdir.lock.json"

logger = logging.getLogger("kstory.workdir")


def _read_holder(path):
    try:
        with open(path) as file:
            return json.load(file)
    except (OSError, ValueError):  # Absent, or being written.
        return None


def _describe(holder):
    return (
        f"kstory {holder.get('command')} (pid {holder.get('pid')} on host "
        f"{holder.get('host')}, started {holder.get('started')})"
    )


class WorkdirLock:
    """Holds a workdir's lock for as long as a command writes into it.

    The lock is the kernel's (`flock`, through the `filelock` package), so it
    is released when its holder exits however it exits, SIGKILL included.
    Beside it, `workdir.lock.json` names the holder (command, pid, host, start
    time) for the error a second writer gets; a holder that exits cleanly
    removes it.

    - A second writer raises a `ValueError` at once (`kstory` exits with code
      2), naming the holder.
    - A holder killed on this host leaves its `workdir.lock.json` behind but
      not the kernel lock: the next writer takes over, with a log line.
    - On a shared filesystem, a leftover `workdir.lock.json` of another host
      is never taken over: this host cannot tell whether that run still runs
      (the filesystem may not share kernel locks between hosts). The error
      says to delete the file once that run has ended.

    Holds nest within a process (`train()` inside `kstory train`).

    Args:
        workdir: str. The run's folder; created if missing.
        command: str. What holds it, for the message (e.g. `"train"`).

    Example:
    >>> with WorkdirLock(f"{tmp_dir}/run", "train"):
    ...     os.path.exists(f"{tmp_dir}/run/workdir.lock.json")
    True
    """

    def __init__(self, workdir, command):
        self.workdir = workdir
        self.command = command
        self._holder_path = os.path.join(workdir, HOLDER_FILE)
        os.makedirs(workdir, exist_ok=True)
        self._lock = filelock.FileLock(
            os.path.join(workdir, LOCK_FILE), timeout=0, is_singleton=True
        )

    def __enter__(self):
        if self._lock.is_locked:  # Nested in this process.
            self._lock.acquire()
            return self
        try:
            self._lock.acquire()
        except filelock.Timeout:
            holder = _read_holder(self._holder_path)
            who = _describe(holder) if holder else "another kstory process"
            raise ValueError(
                f"{self.workdir} is in use by {who}; wait for it to end, or use another "
                "--workdir. Only one command may write into a workdir at a time."
            ) from None
        try:
            self._take_over(_read_holder(self._holder_path))
        except BaseException:
            self._lock.release()
            raise
        self._write_holder()
        return self

    def _take_over(self, holder):
        """Checks a holder record left by a process that did not release the lock."""
        if holder is None:
            return
        host = socket.gethostname()
        if holder.get("host") != host:
            raise ValueError(
                f"{self.workdir} was locked by {_describe(holder)}, and host {host} cannot "
                f"tell whether that run still runs; once it has ended, delete "
                f"{self._holder_path} and rerun."
            )
        logger.warning(
            "Taking over %s from %s, which ended without releasing it.",
            self.workdir,
            _describe(holder),
        )

    def _write_holder(self):
        holder = {
            "command": self.command,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        incoming = f"{self._holder_path}.incoming"
        with open(incoming, "w") as file:
            json.dump(holder, file)
        os.replace(incoming, self._holder_path)

    def __exit__(self, *exc_info):
        if self._lock.lock_counter == 1:
            try:
                os.remove(self._holder_path)
            except FileNotFoundError:
                pass
        self._lock.release()
