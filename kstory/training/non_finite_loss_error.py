"""The error that stops training when the loss or a weight stops being finite."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss, metric or weight.

    Raised by `NonFiniteLossGuard` and `TrainingStateBackup` before the
    backup can be overwritten, so the last backup and the best checkpoint
    still hold finite weights.
    """
