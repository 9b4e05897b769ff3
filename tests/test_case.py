"""Shared helpers for layer and model tests (after keras-hub's TestCase)."""

import keras
import numpy as np


def to_numpy(tree):
    return keras.tree.map_structure(keras.ops.convert_to_numpy, tree)


class TestCase:
    """Round trips and a fit step, shared by the layer and model tests."""

    def assert_allclose(self, actual, expected, atol=1e-6, rtol=1e-6):
        keras.tree.map_structure(
            lambda a, e: np.testing.assert_allclose(a, e, atol=atol, rtol=rtol),
            to_numpy(actual),
            to_numpy(expected),
        )

    def run_config_round_trip(self, instance):
        """`from_config(get_config())` rebuilds an equal config."""
        config = instance.get_config()
        restored = instance.__class__.from_config(config)
        assert restored.get_config() == config
        return restored

    def run_serialization_round_trip(self, instance):
        """Full Keras (de)serialisation, as a .keras file records it."""
        serialized = keras.saving.serialize_keras_object(instance)
        restored = keras.saving.deserialize_keras_object(serialized)
        assert restored.get_config() == instance.get_config()
        return restored

    def run_saved_model_round_trip(self, model, inputs, tmp_path):
        """Saves as .keras, reloads with no custom_objects, compares outputs."""
        path = str(tmp_path / "model.keras")
        model.save(path)
        restored = keras.saving.load_model(path)
        self.assert_allclose(restored.predict(inputs, verbose=0), model.predict(inputs, verbose=0))
        return restored

    def run_fit_step(self, model, dataset, epochs=1):
        history = model.fit(dataset, epochs=epochs, verbose=0)
        for name, values in history.history.items():
            assert np.isfinite(values).all(), f"{name} is not finite: {values}"
        return history
