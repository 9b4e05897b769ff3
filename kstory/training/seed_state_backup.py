"""Makes resumed training draw the same random numbers as an uninterrupted run."""

import os

import keras
import numpy as np


def _seed_global_generator(seed):
    """Reseeds the global generator that unseeded torch dropout draws from.

    TensorFlow and JAX dropout draw from the model's seed generators, which are
    backed up instead; reseeding TensorFlow's global seed would also make every
    traced step retrace.
    """
    if keras.config.backend() == "torch":
        import torch

        torch.manual_seed(seed)


class SeedStateBackup(keras.callbacks.Callback):
    """Keeps random draws of a resumed run equal to an uninterrupted run's.

    `BackupAndRestore` saves weights and optimizer state but not the random
    generators behind dropout: the model's `SeedGenerator` states, and the
    global generators that some backends' dropout draws from (torch, TF). This
    callback saves the seed-generator states beside the backup and restores
    them when training begins, and reseeds the global generators from
    `(seed, epoch)` at each epoch's start, so that epoch k draws the same
    numbers whether or not the run stopped before it.

    Args:
        backup_dir: str. The `BackupAndRestore` folder.
        seed: int. The run's seed.
        save_freq: `"epoch"` or an int number of batches, as `BackupAndRestore`.
    """

    def __init__(self, backup_dir, seed=0, save_freq="epoch"):
        super().__init__()
        self.path = os.path.join(backup_dir, "seed_states.npz")
        self.seed = seed
        self.save_freq = save_freq
        self._batches = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        # At the first batch, after anything the trainer draws while starting.
        if batch == 0:
            _seed_global_generator(self.seed * 100_003 + self._epoch)

    def _seed_states(self):
        return [v for v in self.model.variables if "seed_generator_state" in v.path]

    def on_train_begin(self, logs=None):
        if os.path.exists(self.path):
            saved = np.load(self.path)
            states = self._seed_states()
            if len(saved.files) != len(states):
                raise ValueError(
                    f"{self.path} holds {len(saved.files)} random states but the model has "
                    f"{len(states)}; the workdir belongs to another architecture."
                )
            # By position: variable paths carry per-process counters.
            for index, variable in enumerate(states):
                variable.assign(saved[f"state_{index}"])

    def _save(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        states = {
            f"state_{index}": keras.ops.convert_to_numpy(variable.value)
            for index, variable in enumerate(self._seed_states())
        }
        temporary = self.path + ".tmp.npz"
        np.savez(temporary, **states)
        os.replace(temporary, self.path)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save()

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq != "epoch":
            self._batches += 1
            if self._batches % self.save_freq == 0:
                self._save()
