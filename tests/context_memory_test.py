import numpy as np
from test_case import TestCase
from test_case import to_numpy

from kstory.layers.context_memory import ContextMemory


class TestContextMemory(TestCase):
    def test_flattens_steps_and_tags_each_with_its_step(self):
        layer = ContextMemory(units=6, num_steps=4)
        tokens = np.zeros((2, 4, 3, 5), "float32")  # Same token state at every step.
        mask = np.ones((2, 4, 3), bool)
        mask[:, 2, 1:] = False
        memory, flat_mask = to_numpy(layer(tokens, mask))
        assert memory.shape == (2, 12, 6) and flat_mask.shape == (2, 12)
        np.testing.assert_array_equal(flat_mask[0], mask[0].reshape(-1))
        # Identical tokens differ only by their step embedding.
        assert not np.allclose(memory[0, 0], memory[0, 3])
        np.testing.assert_allclose(memory[0, 0], memory[0, 1])

    def test_config(self):
        restored = self.run_config_round_trip(ContextMemory(units=6, num_steps=4))
        assert (restored.units, restored.num_steps) == (6, 4)
