import numpy as np
from test_case import TestCase
from test_case import to_numpy

from kstory.layers.temporal_transformer import TemporalTransformer


class TestTemporalTransformer(TestCase):
    def test_story_state_depends_on_every_step(self):
        layer = TemporalTransformer(units=16, num_layers=1, num_heads=2, max_steps=4)
        steps = np.random.default_rng(0).normal(size=(1, 4, 8)).astype("float32")
        base = to_numpy(layer(steps))
        assert base.shape == (1, 16)
        for index in range(4):
            changed = steps.copy()
            changed[0, index] += 1.0
            assert not np.allclose(to_numpy(layer(changed)), base)

    def test_sequences_are_causal(self):
        layer = TemporalTransformer(units=16, num_layers=2, num_heads=2, return_sequences=True)
        steps = np.random.default_rng(0).normal(size=(2, 4, 8)).astype("float32")
        base = to_numpy(layer(steps))
        assert base.shape == (2, 4, 16)
        changed = steps.copy()
        changed[:, 2] += 1.0
        states = to_numpy(layer(changed))
        np.testing.assert_allclose(states[:, :2], base[:, :2], atol=1e-6)
        assert not np.allclose(states[:, 2:], base[:, 2:])

    def test_config(self):
        restored = self.run_config_round_trip(
            TemporalTransformer(units=16, num_heads=2, return_sequences=True)
        )
        assert restored.units == 16 and restored.num_heads == 2 and restored.return_sequences
