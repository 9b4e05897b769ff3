import csv
import json
import os
import socket
import subprocess
import sys

import pytest

# Trains the smoke config on one device, then data-parallel over the
# machine's devices, in one process, and prints the relative difference of
# the trained weights. The optimizer is plain SGD: Adam divides each gradient
# by its own magnitude, so it turns float noise in gradients that are zero in
# exact arithmetic (attention key biases, and in this tiny model the image
# projection: the frozen random encoder's features barely differ) into steps
# of the full learning rate, and the two runs' text losses drifted 1e-3 apart
# in 24 steps. SGD keeps noise at float size, so the runs can be held to
# agree closely. Per-replica randomness and statistics are taken out: text
# dropout is off (each TensorFlow replica draws its own masks), and the image
# encoder is frozen, so its batch normalisation uses its moving statistics
# (TensorFlow replicas would normalise over their own slice of the batch).
# Frozen, the encoder's features come from the cache, which is thus tested
# under both engines too. A third run is interrupted after its first epoch
# and resumed.
SCRIPT = """
import json, os, sys

if os.environ["KERAS_BACKEND"] == "tensorflow":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * int(sys.argv[3])
    )

import logging
import keras
logging.basicConfig(level=logging.INFO)
import numpy as np

from kstory.config import apply_overrides, load_config
from kstory.training.train import train

keras.optimizers.AdamW = lambda learning_rate, weight_decay: keras.optimizers.SGD(learning_rate)
config = apply_overrides(load_config(sys.argv[1], smoke=True), [
    "data.num_stories=24", "data.batch_size=4", "train.epochs=2", "train.learning_rate=0.1",
    "train.early_stopping_patience=0", "model.tiny_text_dropout=0",
    "model.freeze_image_encoder=true",
])
parallel_config = apply_overrides(config, ["distribution=data_parallel"])
single = train(config, os.path.join(sys.argv[2], "single"), verbose=0)
parallel = train(parallel_config, os.path.join(sys.argv[2], "parallel"), verbose=0)


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


resumed_dir = os.path.join(sys.argv[2], "resumed")
try:
    train(parallel_config, resumed_dir, extra_callbacks=[Interrupt()], verbose=0)
except KeyboardInterrupt:
    pass
resumed = train(parallel_config, resumed_dir, verbose=0)


def relative_difference(model, reference):
    pairs = [(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
             for a, b in zip(reference.trainable_weights, model.trainable_weights)]
    difference = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in pairs))
    return float(difference / np.sqrt(sum(np.sum(a ** 2) for a, _ in pairs)))


print(json.dumps({"relative_weight_difference": relative_difference(parallel, single),
                  "resumed_weight_difference": relative_difference(resumed, parallel)}))
"""

# Validation differs: data-parallel runs validate in batches of one window per
# replica, dropping the last partial one.
LOSSES = ("loss", "image_loss", "text_loss", "contrastive_loss")


def _history(workdir):
    with open(os.path.join(workdir, "history.csv")) as file:
        return list(csv.DictReader(file))


def _run(backend, arguments, env=None, timeout=900):
    return subprocess.run(
        [sys.executable, *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, KERAS_BACKEND=backend, **(env or {})),
    )


# Subprocesses, whatever the pytest process's backend (devices must be set up
# before the backend starts); `make test` runs them once.
@pytest.mark.single_backend
@pytest.mark.parametrize("backend, replicas", [("jax", 4), ("tensorflow", 2)])
def test_data_parallel_reaches_the_single_device_loss(backend, replicas, repo_root, tmp_path):
    script = tmp_path / "data_parallel.py"
    script.write_text(SCRIPT)
    env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={replicas}"}
    result = _run(
        backend, [str(script), f"{repo_root}/configs/tiny.py", str(tmp_path), str(replicas)], env
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"{replicas} replicas of {4 // replicas} windows each" in result.stderr
    single, parallel = _history(tmp_path / "single"), _history(tmp_path / "parallel")
    assert len(single) == len(parallel) == 2
    # The runs learn, so agreeing is not agreeing on the initial loss.
    assert float(single[1]["text_loss"]) < 0.95 * float(single[0]["text_loss"]), single
    for expected, actual in zip(single, parallel):
        for name in LOSSES:
            assert float(actual[name]) == pytest.approx(float(expected[name]), rel=1e-4), name
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    # Measured 4e-4 (TensorFlow), mostly the noise-driven variables above;
    # replicas out of sync, or a gradient off by the replica count, would be
    # far off.
    assert measured["relative_weight_difference"] < 3e-3, measured
    # An interrupted data-parallel run resumes to the uninterrupted one.
    assert measured["resumed_weight_difference"] < 1e-5, measured
    assert len(_history(tmp_path / "resumed")) == 2


@pytest.mark.single_backend
def test_torch_data_parallel_is_a_clear_error(repo_root, tmp_path):
    result = _run(
        "torch",
        [
            "-m",
            "kstory.cli",
            "train",
            "--config",
            f"{repo_root}/configs/tiny.py",
            "--smoke",
            "--workdir",
            str(tmp_path),
            "--set",
            "distribution=data_parallel",
        ],
        timeout=300,
    )
    assert result.returncode == 2
    assert "not available on the torch backend" in result.stderr
    assert "KERAS_BACKEND=jax" in result.stderr


def _free_port():
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


# Two local processes as a two-host JAX cluster on loopback; a subprocess
# test, run once (in the torch pass of the large tests).
@pytest.mark.large
@pytest.mark.single_backend
def test_two_process_jax_cluster_trains(repo_root, tmp_path):
    address = f"localhost:{_free_port()}"
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kstory.cli",
                "train",
                "--config",
                f"{repo_root}/configs/tiny.py",
                "--smoke",
                "--workdir",
                str(tmp_path / f"host{i}"),
                "--set",
                "distribution=data_parallel",
                "--set",
                "data.num_stories=14",
                "--set",
                "train.epochs=1",
                "--coordinator-address",
                address,
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, KERAS_BACKEND="jax"),
        )
        for i in range(2)
    ]
    outputs = [process.communicate(timeout=900) for process in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-4000:]
        assert "2 replicas" in stderr and "2 processes" in stderr
    histories = [_history(tmp_path / f"host{i}") for i in range(2)]
    # One global model: both hosts log the same (globally reduced) loss.
    first, second = (float(history[0]["loss"]) for history in histories)
    assert first == pytest.approx(second, rel=1e-5)
