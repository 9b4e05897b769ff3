import numpy as np
import pytest

from kstory.training.non_finite_loss_error import NonFiniteLossError
from kstory.training.non_finite_loss_guard import NonFiniteLossGuard


def test_raises_at_the_first_non_finite_batch_loss_naming_where():
    guard = NonFiniteLossGuard(hint=" Lower the rate.")
    guard.on_epoch_begin(1)
    guard.on_train_batch_end(0, {"loss": 1.5, "text_loss": np.float32(1.0)})
    with pytest.raises(NonFiniteLossError, match=r"loss=nan at epoch 2, batch 3\. Lower the rate"):
        guard.on_train_batch_end(2, {"loss": float("nan"), "text_loss": 1.0})


def test_checks_the_epoch_logs_validation_included():
    guard = NonFiniteLossGuard()
    guard.on_epoch_end(0, {"loss": 1.0, "val_loss": 2.0})
    with pytest.raises(NonFiniteLossError, match="val_loss=inf at the end of epoch 1"):
        guard.on_epoch_end(0, {"loss": 1.0, "val_loss": float("inf")})
