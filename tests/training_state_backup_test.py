import csv
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from kstory.training.non_finite_loss_error import NonFiniteLossError
from kstory.training.training_state_backup import TrainingStateBackup
from kstory.training.training_state_backup import read_backup


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
    assert folder.endswith("latest") and not os.path.exists(os.path.join(backup_dir, "previous"))
    assert (state["epoch"], state["step"]) == (2, 0)
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
    assert sorted(os.listdir(backup_dir)) == ["latest"]
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
@pytest.mark.single_backend
def test_sigkill_mid_epoch_then_rerun_matches_an_uninterrupted_run(repo_root, tmp_path):
    command = [
        sys.executable,
        "-m",
        "kstory.cli",
        "train",
        "--config",
        f"{repo_root}/configs/tiny.py",
        "--smoke",
        "--set",
        "data.num_stories=14",
        "--set",
        "data.batch_size=2",
        "--set",
        "train.epochs=2",
        "--set",
        "train.early_stopping_patience=0",
        "--set",
        "train.backup_every_batches=1",
    ]
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    subprocess.run(command + ["--workdir", straight], check=True, capture_output=True, timeout=600)

    log = open(tmp_path / "killed.log", "w")
    process = subprocess.Popen(command + ["--workdir", killed], stdout=log, stderr=log)
    state_path = os.path.join(killed, "backup", "latest", "state.json")
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        try:
            with open(state_path) as file:
                if json.load(file)["step"] >= 2:
                    break
        except (OSError, ValueError):  # Not written yet.
            pass
        time.sleep(0.02)
    assert process.poll() is None, "training ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    _, state = read_backup(os.path.join(killed, "backup"))
    assert state["epoch"] == 0 and state["step"] >= 2, state  # Killed mid-epoch.
    assert not os.path.exists(os.path.join(killed, "model.keras"))

    resumed = subprocess.run(
        command + ["--workdir", killed], capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming" in resumed.stderr
    for actual, expected in zip(_final_weights(killed), _final_weights(straight)):
        np.testing.assert_allclose(actual, expected, atol=1e-5)
    # Every epoch logged once, with the interrupted epoch's means carried over.
    killed_history, straight_history = _history(killed), _history(straight)
    assert len(killed_history) == len(straight_history) == 2
    for actual, expected in zip(killed_history, straight_history):
        assert actual.keys() == expected.keys()
        np.testing.assert_allclose(list(actual.values()), list(expected.values()), rtol=1e-5)
