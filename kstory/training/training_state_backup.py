"""Backs up the whole training state atomically, so a killed run resumes exactly."""

import json
import logging
import os
import shutil

import h5py
import keras
import numpy as np

from kstory.training.non_finite_loss_error import NonFiniteLossError
from kstory.workdir import sync_file
from kstory.workdir_state_error import WorkdirStateError
from kstory.workdir_state_error import error_summary

STATE_FILE = "state.json"
WEIGHTS_FILE = "model.weights.h5"
ARRAYS_FILE = "arrays.npz"


GENERATIONS = ("latest", "previous")

logger = logging.getLogger("kstory.train")


def _check_generation(folder):
    """A backup folder's state, after checking that each of its files reads whole.

    Raises `ValueError` naming the first file that does not: absent,
    truncated, not HDF5 or NumPy, JSON that does not parse or lacks a key.
    """
    path = os.path.join(folder, STATE_FILE)
    try:
        with open(path) as file:
            state = json.load(file)
        missing = {"epoch", "step", "history"} - set(state)
        if missing:
            raise ValueError(f"no {', '.join(sorted(missing))}")
        path = os.path.join(folder, WEIGHTS_FILE)
        with h5py.File(path, "r") as weights:
            weights.visititems(lambda _, item: item[()] if isinstance(item, h5py.Dataset) else None)
        path = os.path.join(folder, ARRAYS_FILE)
        with np.load(path) as arrays:
            for name in arrays.files:
                arrays[name]
    except Exception as error:  # json, h5py, zipfile and OS errors alike.
        raise ValueError(f"{path} cannot be read ({error_summary(error)})") from None
    return state


def backup_generations(backup_dir):
    """The complete backups in `backup_dir`, newest first: `[(folder, state), ...]`.

    A generation whose files do not read whole (see `_check_generation`) is
    left out with a log line naming the file. When generations exist but none
    reads, raises `WorkdirStateError` naming each file: a run never starts
    over silently.
    """
    generations, problems = [], []
    for name in GENERATIONS:
        folder = os.path.join(backup_dir, name)
        if not os.path.exists(folder):
            continue
        try:
            generations.append((folder, _check_generation(folder)))
        except ValueError as problem:
            fallback = "; trying the previous backup" if name == "latest" else ""
            logger.warning("Backup %s is damaged: %s%s.", folder, problem, fallback)
            problems.append(str(problem))
    if problems and not generations:
        raise WorkdirStateError(_unusable(backup_dir, problems))
    return generations


def _unusable(backup_dir, problems):
    return (
        f"No backup in {backup_dir} can be read: {'; '.join(problems)}. Copy the backup "
        "again, or move the folder aside to train from scratch."
    )


def read_backup(backup_dir):
    """The newest complete backup in `backup_dir`: `(folder, state)`, or `(None, None)`.

    `state` holds `epoch` and `step` (where training resumes: `step` batches
    of `epoch` are done) and `history` (the logs of each finished epoch).
    """
    generations = backup_generations(backup_dir)
    return generations[0] if generations else (None, None)


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
    finished epoch. It is written to a temporary folder, flushed to disk and
    renamed into place, so a process killed at any instant (SIGKILL,
    preemption) leaves the previous backup whole. A backup is refused when a
    weight is not finite: the last backup is always a good one.

    Two generations are kept, `latest/` and `previous/`. When `latest/` does
    not load (truncated, not HDF5, missing keys, bad JSON), a log line names
    the file and the run resumes from `previous/`; when neither loads, a
    `WorkdirStateError` names the files (never a silent fresh start). A
    backup whose write fails (a full disk) leaves both generations as they
    were and stops the run with a `WorkdirStateError`.

    Keras's `BackupAndRestore` restarts an interrupted epoch from its first
    batch on mid-epoch weights, and writes its files in place; this callback
    resumes mid-epoch at the next batch, with `train()` skipping the batches
    already seen (the batch stream depends only on the seed and the epoch).

    Args:
        backup_dir: str. Folder of the backups (`latest/`, `previous/`).
        steps_per_epoch: int. Batches in a full epoch.
        seed: int. The run's seed; torch's global generator is reseeded from
            `(seed, epoch)` at each epoch's first batch.
        every_batches: int. Also back up every this many batches; 0 backs up
            at epoch ends only.

    Example:
    >>> backup = TrainingStateBackup(f"{tmp_dir}/backup", 300, every_batches=50)
    >>> epoch, step = backup.epoch, backup.step  # where fit() must resume
    """

    def __init__(self, backup_dir, steps_per_epoch, seed=0, every_batches=0):
        super().__init__()
        self.backup_dir = backup_dir
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        self.every_batches = every_batches
        self._generations = backup_generations(backup_dir)
        self._use(*(self._generations[0] if self._generations else (None, None)))
        self.restored = False
        self._saved_metrics = None
        self._saved_generator = None

    def _use(self, folder, state):
        """Resumes from `folder`'s backup (`None`: from the start)."""
        self._folder = folder
        state = state or {"epoch": 0, "step": 0, "history": []}
        self.epoch, self.step = state["epoch"], state["step"]
        self.history = state["history"]
        self.stopped_early = state.get("stopped_early", False)

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
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        problems = []
        for index, (folder, state) in enumerate(self._generations):
            self._use(folder, state)
            try:
                self._load(folder)
            except WorkdirStateError as problem:
                logger.warning("%s.", problem)
                problems.append(str(problem))
                continue
            if index:
                logger.warning("Resuming from the previous backup, %s.", folder)
            return
        if problems:
            raise WorkdirStateError(_unusable(self.backup_dir, problems))

    def _load(self, folder):
        with np.load(os.path.join(folder, ARRAYS_FILE)) as arrays:
            arrays = dict(arrays)
        states = self._seed_states()
        saved_states = sorted(name for name in arrays if name.startswith("seed_"))
        if len(saved_states) != len(states):
            raise ValueError(
                f"The backup in {folder} holds {len(saved_states)} random states but the "
                f"model has {len(states)}; the workdir belongs to another architecture."
            )
        path = os.path.join(folder, WEIGHTS_FILE)
        try:
            self.model.load_weights(path)
        except Exception as error:  # Keras and h5py raise many kinds for missing keys.
            raise WorkdirStateError(f"{path} cannot be loaded ({error_summary(error)})") from None
        # By position: variable paths carry per-process counters.
        for index, variable in enumerate(states):
            variable.assign(arrays[f"seed_{index}"])
        self._saved_generator = self._saved_metrics = None
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
        try:
            self._write(incoming, epoch, step)
            self._publish(incoming)
        except OSError as error:  # A full disk (ENOSPC), an I/O error (EIO).
            shutil.rmtree(incoming, ignore_errors=True)
            raise WorkdirStateError(
                f"Training stopped: writing the backup in {incoming} failed "
                f"({error.strerror or error}); the previous backup in {self.backup_dir} "
                "is intact. Free space or fix the disk, then rerun the same command to "
                "resume."
            ) from None

    def _write(self, incoming, epoch, step):
        shutil.rmtree(incoming, ignore_errors=True)
        os.makedirs(incoming)
        self.model.save_weights(os.path.join(incoming, WEIGHTS_FILE))
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
        state = {
            "epoch": epoch,
            "step": step,
            "history": self.history,
            "stopped_early": self.stopped_early,
        }
        with open(os.path.join(incoming, STATE_FILE), "w") as file:
            json.dump(state, file, indent=1)
        for name in os.listdir(incoming):
            sync_file(os.path.join(incoming, name))

    def _publish(self, incoming):
        """`incoming` becomes `latest`, and `latest` becomes `previous`.

        A kill at any instant leaves `latest` or `previous` whole; `previous`
        is what a damaged `latest` falls back to.
        """
        latest, previous, discarded = (
            os.path.join(self.backup_dir, name) for name in ("latest", "previous", "discarded")
        )
        if os.path.exists(latest):
            if os.path.exists(previous):
                os.replace(previous, discarded)
            os.replace(latest, previous)
        os.replace(incoming, latest)
        shutil.rmtree(discarded, ignore_errors=True)
