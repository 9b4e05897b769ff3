"""Stops training at the first NaN or infinite loss, before anything is saved."""

import math

import keras

from kstory.training.non_finite_loss_error import NonFiniteLossError


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Raises `NonFiniteLossError` when a logged loss is NaN or infinite.

    Checks each batch's logs, and the epoch's logs (validation included)
    before later callbacks see them. Put it first among the callbacks: it then
    raises before a backup or checkpoint can store the broken state. Unlike
    `keras.callbacks.TerminateOnNaN`, which lets the epoch end (and its
    callbacks save), the error names the epoch, the batch and the values.

    Args:
        hint: str. Appended to the message, e.g. what to change in the config.

    Example:
    ```python
    model.fit(dataset, callbacks=[NonFiniteLossGuard(), *others])
    ```
    """

    def __init__(self, hint=""):
        super().__init__()
        self.hint = hint
        self._epoch = 0

    def _check(self, logs, where):
        broken = {
            name: value
            for name, value in (logs or {}).items()
            if isinstance(value, (int, float)) or hasattr(value, "dtype")
            if not math.isfinite(float(value))
        }
        if broken:
            values = ", ".join(f"{name}={value}" for name, value in sorted(broken.items()))
            raise NonFiniteLossError(f"Training stopped: {values} at {where}.{self.hint}")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, f"epoch {self._epoch + 1}, batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, f"the end of epoch {epoch + 1}")
