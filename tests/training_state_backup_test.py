import csv
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import h5py
import keras
import numpy as np
import pytest

from kstory.training.non_finite_loss_error import NonFiniteLossError
from kstory.training.training_state_backup import TrainingStateBackup
from kstory.training.training_state_backup import backup_generations
from kstory.training.training_state_backup import read_backup
from kstory.workdir_state_error import WorkdirStateError


def _small_model():
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4),
            keras.layers.Dropout(0.5, seed=1),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    return model


def _fit(model, backup, epochs, initial_epoch=0):
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    model.fit(
        x,
        x[:, :1],
        batch_size=2,
        epochs=epochs,
        initial_epoch=initial_epoch,
        callbacks=[backup],
        verbose=0,
        shuffle=False,
    )


def test_backs_up_every_n_batches_and_restores_weights_and_position(tmp_path):
    backup_dir = str(tmp_path / "backup")
    model = _small_model()
    backup = TrainingStateBackup(backup_dir, steps_per_epoch=4, every_batches=3)
    _fit(model, backup, epochs=2)
    folder, state = read_backup(backup_dir)
    assert folder.endswith("latest") and (state["epoch"], state["step"]) == (2, 0)
    # The generation before it is kept, for a damaged `latest` to fall back to.
    _, previous = backup_generations(backup_dir)[1]
    assert (previous["epoch"], previous["step"]) == (1, 3)
    assert [sorted(row) for row in state["history"]] == [["loss"], ["loss"]]

    restored = _small_model()
    resumed = TrainingStateBackup(backup_dir, steps_per_epoch=4)
    assert (resumed.epoch, resumed.step, len(resumed.history)) == (2, 0, 2)
    resumed.restore(restored)
    for actual, expected in zip(restored.weights, model.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(actual), keras.ops.convert_to_numpy(expected)
        )
    assert int(keras.ops.convert_to_numpy(restored.optimizer.iterations)) == 8


def test_a_kill_between_the_two_renames_keeps_the_previous_backup(tmp_path):
    backup_dir = str(tmp_path / "backup")
    _fit(_small_model(), TrainingStateBackup(backup_dir, steps_per_epoch=4), epochs=1)
    # The state a SIGKILL leaves between `latest -> previous` and `incoming -> latest`.
    os.replace(os.path.join(backup_dir, "latest"), os.path.join(backup_dir, "previous"))
    os.makedirs(os.path.join(backup_dir, "incoming"))  # Half-written, no state.json.
    folder, state = read_backup(backup_dir)
    assert folder.endswith("previous") and state["epoch"] == 1
    # The next backup recovers the layout.
    _fit(
        _small_model(),
        TrainingStateBackup(backup_dir, steps_per_epoch=4),
        epochs=2,
        initial_epoch=1,
    )
    assert sorted(os.listdir(backup_dir)) == ["latest", "previous"]
    assert [state["epoch"] for _, state in backup_generations(backup_dir)] == [2, 1]


def _two_generations(tmp_path):
    """A backup folder whose `latest` is epoch 2 and `previous` epoch 1, and
    the weights after epoch 1."""
    backup_dir = str(tmp_path / "backup")
    model = _small_model()
    _fit(model, TrainingStateBackup(backup_dir, steps_per_epoch=4), epochs=1)
    after_epoch_1 = [keras.ops.convert_to_numpy(v) for v in model.weights]
    _fit(model, TrainingStateBackup(backup_dir, steps_per_epoch=4), epochs=2, initial_epoch=1)
    return backup_dir, after_epoch_1


def _truncate(path):
    with open(path, "r+b") as file:
        file.truncate(os.path.getsize(path) // 2)


def _not_hdf5(path):
    with open(path, "wb") as file:
        file.write(b"<html>404 Not Found</html>")


def _bad_json(path):
    with open(path, "w") as file:
        file.write('{"epoch": 2, "st')


def _missing_state_key(path):
    with open(path, "w") as file:
        json.dump({"epoch": 2, "history": []}, file)


def _missing_weight_keys(path):
    with h5py.File(path, "r+") as weights:
        del weights["layers"]


# Each way a copy or a crash damages a file: the file, and how it is damaged.
DAMAGES = {
    "truncated weights": ("model.weights.h5", _truncate),
    "weights not HDF5": ("model.weights.h5", _not_hdf5),
    "weights missing keys": ("model.weights.h5", _missing_weight_keys),
    "truncated arrays": ("arrays.npz", _truncate),
    "bad JSON": ("state.json", _bad_json),
    "state missing a key": ("state.json", _missing_state_key),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_latest_backup_resumes_from_the_previous(damage, tmp_path, caplog):
    backup_dir, after_epoch_1 = _two_generations(tmp_path)
    name, damage_file = DAMAGES[damage]
    damaged = os.path.join(backup_dir, "latest", name)
    damage_file(damaged)

    model = _small_model()
    backup = TrainingStateBackup(backup_dir, steps_per_epoch=4)
    backup.restore(model)
    assert (backup.epoch, backup.step, len(backup.history)) == (1, 0, 1)
    assert any(damaged in message for message in caplog.messages), caplog.messages
    assert any("previous" in message for message in caplog.messages), caplog.messages
    for actual, expected in zip(model.weights, after_epoch_1):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(actual), expected)


def test_when_no_backup_loads_the_error_names_each_file(tmp_path):
    backup_dir, _ = _two_generations(tmp_path)
    _truncate(os.path.join(backup_dir, "latest", "model.weights.h5"))
    _bad_json(os.path.join(backup_dir, "previous", "state.json"))
    with pytest.raises(WorkdirStateError) as error:
        TrainingStateBackup(backup_dir, steps_per_epoch=4)
    for generation, name in (("latest", "model.weights.h5"), ("previous", "state.json")):
        assert os.path.join(backup_dir, generation, name) in str(error.value)
    assert "No backup" in str(error.value)


def _failing_write(error_number):
    def write(*args, **kwargs):
        raise OSError(error_number, os.strerror(error_number))

    return write


@pytest.mark.parametrize(
    "target, error_number",
    [("numpy_savez", errno.ENOSPC), ("save_weights", errno.EIO)],
)
def test_a_failed_backup_write_keeps_the_backups_and_stops_in_one_line(
    target, error_number, tmp_path, monkeypatch
):
    backup_dir, _ = _two_generations(tmp_path)
    before = {
        name: open(os.path.join(backup_dir, name, "state.json")).read()
        for name in ("latest", "previous")
    }
    model = _small_model()
    backup = TrainingStateBackup(backup_dir, steps_per_epoch=4)
    backup.restore(model)
    if target == "numpy_savez":
        monkeypatch.setattr(np, "savez", _failing_write(error_number))
    else:
        monkeypatch.setattr(model, "save_weights", _failing_write(error_number))
    with pytest.raises(WorkdirStateError) as error:
        _fit(model, backup, epochs=3, initial_epoch=2)
    message = str(error.value)
    assert os.strerror(error_number) in message and "previous backup" in message
    assert "\n" not in message
    assert sorted(os.listdir(backup_dir)) == ["latest", "previous"]
    for name, text in before.items():
        assert open(os.path.join(backup_dir, name, "state.json")).read() == text
    assert read_backup(backup_dir)[1]["epoch"] == 2


def test_refuses_to_back_up_non_finite_weights(tmp_path):
    backup_dir = str(tmp_path / "backup")
    model = _small_model()
    _fit(model, TrainingStateBackup(backup_dir, steps_per_epoch=4), epochs=1)
    kernel = model.layers[0].kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    backup = TrainingStateBackup(backup_dir, steps_per_epoch=4)
    backup.set_model(model)
    with pytest.raises(NonFiniteLossError, match="kernel is not finite"):
        backup._save(1, 2)
    assert read_backup(backup_dir)[1]["step"] == 0


def test_a_backup_of_another_architecture_is_refused(tmp_path):
    backup_dir = str(tmp_path / "backup")
    _fit(_small_model(), TrainingStateBackup(backup_dir, steps_per_epoch=4), epochs=1)
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    other.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="another architecture"):
        TrainingStateBackup(backup_dir, steps_per_epoch=4).restore(other)


def _history(workdir):
    with open(os.path.join(workdir, "history.csv")) as file:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(file)]


def _final_weights(workdir):
    model = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    return [keras.ops.convert_to_numpy(v) for v in model.weights]


# Kill-and-resume runs real `kstory train` processes; once, in the torch pass
# (torch dropout draws from a global generator: the hardest state to resume).
TRAIN = [
    "train",
    "--smoke",
    "--set",
    "data.num_stories=14",
    "--set",
    "data.batch_size=2",
    "--set",
    "train.early_stopping_patience=0",
    "--set",
    "train.backup_every_batches=1",
]
KILLS = 5


def _position(workdir):
    try:
        with open(os.path.join(workdir, "backup", "latest", "state.json")) as file:
            state = json.load(file)
        return state["epoch"], state["step"]
    except (OSError, ValueError, KeyError):  # Not written yet, or between renames.
        return None


def _kill_at_a_random_moment(command, workdir, rng, log):
    """Starts `command`, waits for its first new backup, then SIGKILLs it
    after a random delay (mid-step, mid-backup or mid-validation)."""
    start = _position(workdir)
    process = subprocess.Popen(command, stdout=log, stderr=log)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        position = _position(workdir)
        if position is not None and position != start:
            break
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 1.0))
    assert process.poll() is None, "training ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return _position(workdir)


@pytest.mark.large
@pytest.mark.single_backend
def test_repeated_sigkills_then_rerun_match_an_uninterrupted_run(repo_root, tmp_path):
    config = ["--config", f"{repo_root}/configs/tiny.py"]
    command = [sys.executable, "-m", "kstory.cli", *TRAIN, *config, "--set", "train.epochs=3"]
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    subprocess.run(
        command + ["--workdir", straight],
        check=True,
        capture_output=True,
        timeout=600,
    )

    rng = random.Random(18)  # Seeded: the same kill moments on every run.
    positions = []
    with open(tmp_path / "killed.log", "w") as log:
        for _ in range(KILLS):
            positions.append(
                _kill_at_a_random_moment(command + ["--workdir", killed], killed, rng, log)
            )
    # Each kill fell later in the run, before its end (epoch 3 of 3).
    assert positions == sorted(positions) and len(set(positions)) == KILLS, positions
    assert positions[-1] < (3, 0), positions
    assert not os.path.exists(os.path.join(killed, "model.keras"))

    resumed = subprocess.run(
        command + ["--workdir", killed], capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming" in resumed.stderr
    # The killed run's lock was the kernel's: it is taken over, with a log line.
    assert "Taking over" in resumed.stderr and "ended without releasing it" in resumed.stderr
    for actual, expected in zip(_final_weights(killed), _final_weights(straight)):
        np.testing.assert_allclose(actual, expected, atol=1e-5)
    # Every epoch logged once, with the interrupted epochs' means carried over.
    killed_history, straight_history = _history(killed), _history(straight)
    assert len(killed_history) == len(straight_history) == 3
    for actual, expected in zip(killed_history, straight_history):
        assert actual.keys() == expected.keys()
        np.testing.assert_allclose(list(actual.values()), list(expected.values()), rtol=1e-5)


@pytest.mark.single_backend
def test_a_run_with_a_damaged_backup_resumes_or_stops_naming_the_files(
    repo_root, tmp_path, capsys, caplog
):
    from kstory.cli import main

    workdir = str(tmp_path / "run")
    argv = [*TRAIN, "--config", f"{repo_root}/configs/tiny.py", "--workdir", workdir]
    assert main([*argv, "--set", "train.epochs=1"]) == 0
    latest = os.path.join(workdir, "backup", "latest", "model.weights.h5")
    _truncate(latest)  # As a partial copy leaves it.
    assert main([*argv, "--set", "train.epochs=1"]) == 0
    assert any(latest in message and "previous" in message for message in caplog.messages)
    # Resumed from the backup one batch earlier, and finished the epoch again.
    assert read_backup(os.path.join(workdir, "backup"))[1]["epoch"] == 1
    assert len(_history(workdir)) == 1

    for name in ("latest", "previous"):
        _truncate(os.path.join(workdir, "backup", name, "model.weights.h5"))
    capsys.readouterr()
    assert main([*argv, "--set", "train.epochs=2"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("kstory train: failed: No backup in ")
    for name in ("latest", "previous"):
        assert os.path.join(workdir, "backup", name, "model.weights.h5") in lines[0]
