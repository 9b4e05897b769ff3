"""Early stopping whose patience survives a resume."""

import keras


class ResumedEarlyStopping(keras.callbacks.EarlyStopping):
    """`keras.callbacks.EarlyStopping` that also counts the epochs before a resume.

    Keras's callback starts counting afresh at each `fit()`; a run that was
    killed and resumed would then wait `patience` more epochs than an
    uninterrupted one. This one replays the logged epochs first.

    Args:
        history: list of dicts. The logs of the epochs already trained, in
            order (`TrainingStateBackup.history`, which stays current).
        **kwargs: arguments of `keras.callbacks.EarlyStopping`, without
            `restore_best_weights` (the best weights of epochs before the
            resume are not in memory; `train()` reloads the best checkpoint).

    Example:
    ```python
    ResumedEarlyStopping(backup.history, monitor="val_loss", patience=3)
    ```
    """

    def __init__(self, history, **kwargs):
        if kwargs.get("restore_best_weights"):
            raise ValueError(
                "ResumedEarlyStopping cannot restore best weights; load the best checkpoint."
            )
        super().__init__(**kwargs)
        self.history = history

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for epoch, epoch_logs in enumerate(list(self.history)):
            self.on_epoch_end(epoch, epoch_logs)
