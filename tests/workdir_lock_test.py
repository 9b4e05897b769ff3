import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from kstory.cli import main
from kstory.workdir_lock import HOLDER_FILE
from kstory.workdir_lock import WorkdirLock

# Holds a workdir's lock in another process until its stdin closes. It loads
# kstory/workdir_lock.py alone, without importing kstory (and Keras).
HOLDER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("workdir_lock", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
with module.WorkdirLock(sys.argv[2], "train"):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def holder(repo_root, tmp_path):
    """Starts a process holding the lock of `tmp_path / "run"`; returns it."""
    workdir = str(tmp_path / "run")
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, f"{repo_root}/kstory/workdir_lock.py", workdir],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "held"
    yield process
    if process.poll() is None:
        process.stdin.close()
        process.wait(timeout=30)


WRITERS = {
    "train": ["train", "--config", "configs/tiny.py", "--smoke"],
    "data": ["data", "--config", "configs/tiny.py", "--smoke"],
    "evaluate": ["evaluate"],
    "predict": ["predict", "--story", "0"],
    "export": ["export"],
    "seeds": ["seeds", "--config", "configs/tiny.py", "--smoke"],
    "ablate": ["ablate", "--config", "configs/tiny.py", "--smoke"],
}


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_a_second_writer_exits_at_once_naming_the_holder(command, holder, tmp_path, capsys):
    workdir = str(tmp_path / "run")
    capsys.readouterr()
    assert main([*WRITERS[command], "--workdir", workdir]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"kstory {command}: error: {workdir} is in use by kstory train")
    assert f"pid {holder.pid} on host {socket.gethostname()}" in lines[0]
    # Nothing of the holder's run was touched.
    assert sorted(os.listdir(workdir)) == ["workdir.lock", HOLDER_FILE]


def test_readers_run_beside_a_writer(holder, tmp_path):
    from kstory.workdir import load_workdir_config
    from kstory.workdir import write_json

    workdir = str(tmp_path / "run")
    with pytest.raises(ValueError, match="has no config.json"):
        load_workdir_config(workdir)  # Read, not refused for the lock.
    write_json(os.path.join(workdir, "note.json"), {"read": "beside"})


def test_a_lock_left_by_a_killed_process_is_taken_over(holder, tmp_path, caplog):
    workdir = str(tmp_path / "run")
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert os.path.exists(os.path.join(workdir, HOLDER_FILE))  # Left behind.
    with WorkdirLock(workdir, "train"):
        with open(os.path.join(workdir, HOLDER_FILE)) as file:
            assert json.load(file)["pid"] == os.getpid()
    taking_over = [message for message in caplog.messages if "Taking over" in message]
    assert len(taking_over) == 1 and f"pid {holder.pid} on host" in taking_over[0]
    assert not os.path.exists(os.path.join(workdir, HOLDER_FILE))


def test_a_lock_of_another_host_is_never_taken_over_silently(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / HOLDER_FILE).write_text(
        json.dumps({"command": "train", "pid": 7, "host": "node-17", "started": "yesterday"})
    )
    with pytest.raises(ValueError) as error:
        with WorkdirLock(str(workdir), "train"):
            pass
    message = str(error.value)
    assert "kstory train (pid 7 on host node-17" in message
    assert f"delete {workdir / HOLDER_FILE}" in message
    # Refused without taking the lock: the file is still there, and still refuses.
    assert (workdir / HOLDER_FILE).exists()
    with pytest.raises(ValueError, match="node-17"):
        with WorkdirLock(str(workdir), "evaluate"):
            pass


def test_holds_nest_within_a_process(tmp_path):
    workdir = str(tmp_path / "run")
    with WorkdirLock(workdir, "train"):
        with WorkdirLock(workdir, "evaluate"):
            pass
        # The outer hold still stands for other processes.
        assert os.path.exists(os.path.join(workdir, HOLDER_FILE))
    assert not os.path.exists(os.path.join(workdir, HOLDER_FILE))
