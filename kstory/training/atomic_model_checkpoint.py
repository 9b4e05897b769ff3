"""Keras's `ModelCheckpoint`, writing each checkpoint whole or not at all."""

import os

import keras

from kstory.workdir import incoming_path
from kstory.workdir import sync_file


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """A `ModelCheckpoint` that saves to a temporary file and renames it into place.

    Keras's callback writes over the checkpoint in place, so a run killed
    during the write, or a full disk, leaves a truncated file where the best
    weights were. Here the previous checkpoint stays whole until the new one
    is complete. Takes `ModelCheckpoint`'s arguments; `filepath` must be a
    fixed path (no `{epoch}` fields).

    Example:
    >>> checkpoint = AtomicModelCheckpoint(
    ...     "runs/doc/best.weights.h5", save_best_only=True, save_weights_only=True
    ... )
    """

    def _save_model(self, epoch, batch, logs):
        final_path = self.filepath
        incoming = incoming_path(final_path)
        self.filepath = incoming  # Where the parent class saves, if it saves.
        try:
            super()._save_model(epoch, batch, logs)
            if os.path.exists(incoming):
                sync_file(incoming)
                os.replace(incoming, final_path)
        finally:
            self.filepath = final_path
            if os.path.exists(incoming):
                os.remove(incoming)
