import keras
import numpy as np
from test_case import TestCase

from kstory.training.batch_norm_recalibration import recalibrate_batch_norm


def _encoder():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(5, name="dense")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.999, name="norm")(x)
    return keras.Model(inputs, x)


class TestRecalibrateBatchNorm(TestCase):
    def test_statistics_become_the_mean_of_the_batch_statistics(self):
        keras.utils.set_random_seed(0)
        encoder = _encoder()
        rng = np.random.default_rng(0)
        batches = [rng.normal(3.0, 2.0, size=(8, 6)).astype("float32") for _ in range(4)]
        kernel, bias = (keras.ops.convert_to_numpy(w) for w in encoder.get_layer("dense").weights)
        hidden = [batch @ kernel + bias for batch in batches]
        assert recalibrate_batch_norm(encoder, batches) == 4
        norm = encoder.get_layer("norm")
        self.assert_allclose(norm.moving_mean, np.mean([h.mean(0) for h in hidden], 0), atol=1e-5)
        self.assert_allclose(
            norm.moving_variance, np.mean([h.var(0) for h in hidden], 0), atol=1e-4
        )
        assert norm.momentum == 0.999  # restored
        # Inference now normalises as training did: outputs near zero mean, unit variance.
        outputs = keras.ops.convert_to_numpy(encoder(np.concatenate(batches), training=False))
        assert np.abs(outputs.mean(0)).max() < 0.2 and np.abs(outputs.std(0) - 1).max() < 0.2

    def test_weights_do_not_move_and_frozen_layers_are_left_alone(self):
        encoder = _encoder()
        before = [keras.ops.convert_to_numpy(w) for w in encoder.trainable_weights]
        encoder.get_layer("norm").trainable = False
        batches = [np.ones((4, 6), "float32")]
        assert recalibrate_batch_norm(encoder, batches) == 0
        self.assert_allclose(encoder.get_layer("norm").moving_mean, np.zeros(5))
        encoder.get_layer("norm").trainable = True
        recalibrate_batch_norm(encoder, batches)
        for old, new in zip(before, encoder.trainable_weights):
            self.assert_allclose(new, old)
