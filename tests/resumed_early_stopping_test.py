import keras
import pytest

from kstory.training.resumed_early_stopping import ResumedEarlyStopping


def _callback(history, patience=2):
    callback = ResumedEarlyStopping(history, monitor="val_loss", patience=patience)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    callback.set_model(model)
    return callback, model


def test_patience_counts_the_epochs_before_a_resume():
    callback, model = _callback([{"val_loss": 1.0}, {"val_loss": 0.5}, {"val_loss": 0.6}])
    model.stop_training = False
    callback.on_train_begin()
    assert (callback.best, callback.wait, callback.best_epoch) == (0.5, 1, 1)
    callback.on_epoch_end(3, {"val_loss": 0.7})
    # Two epochs without improvement, one of them before the resume: stop,
    # as an uninterrupted run would (Keras's callback would wait two more).
    assert model.stop_training


def test_an_improvement_after_the_resume_resets_the_wait():
    callback, model = _callback([{"val_loss": 1.0}, {"val_loss": 1.2}])
    model.stop_training = False
    callback.on_train_begin()
    callback.on_epoch_end(2, {"val_loss": 0.9})
    assert (callback.best, callback.wait) == (0.9, 0) and not model.stop_training


def test_restoring_best_weights_is_refused():
    with pytest.raises(ValueError, match="load the best checkpoint"):
        ResumedEarlyStopping([], monitor="val_loss", restore_best_weights=True)
