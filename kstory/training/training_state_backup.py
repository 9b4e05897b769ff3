"""Backs up the whole training state atomically, so a killed run resumes exactly."""

import json
import os
import shutil

import keras
import numpy as np

from kstory.training.non_finite_loss_error import NonFiniteLossError

STATE_FILE = "state.json"
WEIGHTS_FILE = "model.weights.h5"
ARRAYS_FILE = "arrays.npz"


def read_backup(backup_dir):
    """The newest complete backup in `backup_dir`: `(folder, state)`, or `(None, None)`.

    `state` holds `epoch` and `step` (where training resumes: `step` batches
    of `epoch` are done) and `history` (the logs of each finished epoch).
    """
    for name in ("latest", "previous"):
        folder = os.path.join(backup_dir, name)
        path = os.path.join(folder, STATE_FILE)
        if os.path.exists(path):
            with open(path) as file:
                return folder, json.load(file)
    return None, None


def _seed_global_generator(seed):
    """Reseeds the global generator that unseeded torch dropout draws from.

    TensorFlow and JAX dropout draw from the model's seed generators, which are
    backed up instead; reseeding TensorFlow's global seed would also make every
    traced step retrace.
    """
    if keras.config.backend() == "torch":
        import torch

        torch.manual_seed(seed)


def _global_generator_state():
    if keras.config.backend() == "torch":
        import torch

        return {"torch_rng": torch.get_rng_state().numpy()}
    return {}


def _restore_global_generator(arrays):
    if keras.config.backend() == "torch" and "torch_rng" in arrays:
        import torch

        torch.set_rng_state(torch.from_numpy(arrays["torch_rng"]))


class TrainingStateBackup(keras.callbacks.Callback):
    """Saves everything a run needs to continue exactly where it stopped.

    A backup holds the weights and optimizer state, the random state behind
    dropout (the model's `SeedGenerator`s; torch's global generator), the
    running epoch metrics, the position `(epoch, step)` and the logs of every
    finished epoch. It is written to a temporary folder and renamed into
    place, so a process killed at any instant (SIGKILL, preemption) leaves the
    previous backup whole. A backup is refused when a weight is not finite:
    the last backup is always a good one.

    Keras's `BackupAndRestore` restarts an interrupted epoch from its first
    batch on mid-epoch weights, and writes its files in place; this callback
    resumes mid-epoch at the next batch, with `train()` skipping the batches
    already seen (the batch stream depends only on the seed and the epoch).

    Args:
        backup_dir: str. Folder of the backups (`latest/`, briefly `previous/`).
        steps_per_epoch: int. Batches in a full epoch.
        seed: int. The run's seed; torch's global generator is reseeded from
            `(seed, epoch)` at each epoch's first batch.
        every_batches: int. Also back up every this many batches; 0 backs up
            at epoch ends only.

    Example:
    >>> backup = TrainingStateBackup("runs/tiny/backup", 300, every_batches=50)
    >>> epoch, step = backup.epoch, backup.step  # where fit() must resume
    """

    def __init__(self, backup_dir, steps_per_epoch, seed=0, every_batches=0):
        super().__init__()
        self.backup_dir = backup_dir
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        self.every_batches = every_batches
        self._folder, state = read_backup(backup_dir)
        state = state or {"epoch": 0, "step": 0, "history": []}
        self.epoch, self.step = state["epoch"], state["step"]
        self.history = state["history"]
        self.stopped_early = state.get("stopped_early", False)
        self.restored = False
        self._saved_metrics = None
        self._saved_generator = None

    def _seed_states(self):
        return [v for v in self.model.variables if "seed_generator_state" in v.path]

    def _metric_variables(self):
        return [v for metric in self.model.metrics for v in metric.variables]

    def restore(self, model):
        """Loads the backup into `model` now, instead of when `fit()` begins."""
        self.set_model(model)
        self.on_train_begin()

    def on_train_begin(self, logs=None):
        # Once per run: a resumed run calls fit() twice (the rest of the
        # interrupted epoch, then the later epochs).
        if self.restored:
            return
        self.restored = True
        folder = self._folder
        if folder is None:
            return
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(folder, WEIGHTS_FILE))
        with np.load(os.path.join(folder, ARRAYS_FILE)) as arrays:
            arrays = dict(arrays)
        states = self._seed_states()
        saved_states = sorted(name for name in arrays if name.startswith("seed_"))
        if len(saved_states) != len(states):
            raise ValueError(
                f"The backup in {folder} holds {len(saved_states)} random states but the "
                f"model has {len(states)}; the workdir belongs to another architecture."
            )
        # By position: variable paths carry per-process counters.
        for index, variable in enumerate(states):
            variable.assign(arrays[f"seed_{index}"])
        if self.step:
            # Applied at the next batch, after anything fit() draws while starting.
            self._saved_generator = arrays
            self._saved_metrics = [
                arrays[f"metric_{index}"] for index in range(len(self._metric_variables()))
            ]

    def on_epoch_begin(self, epoch, logs=None):
        if epoch != self.epoch:
            self.epoch, self.step = epoch, 0
        if self._saved_metrics is not None:
            # fit() reset the metrics; continue the interrupted epoch's means.
            for variable, value in zip(self._metric_variables(), self._saved_metrics):
                variable.assign(value)
            self._saved_metrics = None

    def on_train_batch_begin(self, batch, logs=None):
        # At the epoch's first batch, after anything the trainer draws while starting.
        if self.step == 0:
            _seed_global_generator(self.seed * 100_003 + self.epoch)
        elif self._saved_generator is not None:
            _restore_global_generator(self._saved_generator)
            self._saved_generator = None

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        # The epoch's last batch is backed up at the epoch's end, after validation.
        if (
            self.every_batches
            and self.step % self.every_batches == 0
            and self.step < self.steps_per_epoch
        ):
            self._save(self.epoch, self.step)

    def on_epoch_end(self, epoch, logs=None):
        self.history.append({name: float(value) for name, value in (logs or {}).items()})
        self._save(epoch + 1, 0)
        self.epoch, self.step = epoch + 1, 0

    def on_train_end(self, logs=None):
        if self.model.stop_training:  # Early stopping ended the run.
            self.stopped_early = True
            self._save(self.epoch, self.step)

    def _save(self, epoch, step):
        model = self.model
        for variable in model.weights:
            if not np.all(np.isfinite(keras.ops.convert_to_numpy(variable))):
                raise NonFiniteLossError(
                    f"Training stopped: weight {variable.path} is not finite after batch "
                    f"{self.step} of epoch {self.epoch + 1}; the last backup was kept."
                )
        incoming = os.path.join(self.backup_dir, "incoming")
        shutil.rmtree(incoming, ignore_errors=True)
        os.makedirs(incoming)
        model.save_weights(os.path.join(incoming, WEIGHTS_FILE))
        arrays = {
            **{
                f"seed_{i}": keras.ops.convert_to_numpy(v)
                for i, v in enumerate(self._seed_states())
            },
            **{
                f"metric_{i}": keras.ops.convert_to_numpy(v)
                for i, v in enumerate(self._metric_variables())
            },
            **_global_generator_state(),
        }
        np.savez(os.path.join(incoming, ARRAYS_FILE), **arrays)
        with open(os.path.join(incoming, STATE_FILE), "w") as file:
            state = {
                "epoch": epoch,
                "step": step,
                "history": self.history,
                "stopped_early": self.stopped_early,
            }
            json.dump(state, file, indent=1)
        latest = os.path.join(self.backup_dir, "latest")
        previous = os.path.join(self.backup_dir, "previous")
        if not os.path.exists(latest) and os.path.exists(previous):
            os.replace(previous, latest)  # A kill fell between the two renames below.
        shutil.rmtree(previous, ignore_errors=True)
        if os.path.exists(latest):
            os.replace(latest, previous)
        os.replace(incoming, latest)
        shutil.rmtree(previous, ignore_errors=True)
