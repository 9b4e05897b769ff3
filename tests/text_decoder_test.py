import keras
import numpy as np
from test_case import TestCase
from test_case import to_numpy

from kstory.layers.text_decoder import TextDecoder


class TestTextDecoder(TestCase):
    def test_stepping_matches_the_teacher_forced_pass(self):
        keras.utils.set_random_seed(1)
        decoder = TextDecoder(vocabulary_size=30, embedding_dim=8, units=12)
        tokens = np.random.default_rng(0).integers(0, 30, (3, 6)).astype("int32")
        state = np.random.default_rng(1).normal(size=(3, 10)).astype("float32")
        full = to_numpy(decoder(tokens, state))
        cache = decoder.initial_cache(state)
        for position in range(6):
            logits, cache = decoder.step(tokens[:, position], cache)
            np.testing.assert_allclose(to_numpy(logits), full[:, position], atol=1e-5)

    def test_attending_steps_match_the_teacher_forced_pass(self):
        keras.utils.set_random_seed(2)
        decoder = TextDecoder(vocabulary_size=30, embedding_dim=8, units=12, attention_heads=2)
        rng = np.random.default_rng(0)
        tokens = rng.integers(0, 30, (3, 6)).astype("int32")
        state = rng.normal(size=(3, 10)).astype("float32")
        memory = rng.normal(size=(3, 7, 12)).astype("float32")
        mask = np.ones((3, 7), bool)
        mask[:, 5:] = False
        full = to_numpy(decoder(tokens, state, memory, mask))
        cache = decoder.initial_cache(state, memory, mask)
        for position in range(6):
            logits, cache = decoder.step(tokens[:, position], cache)
            np.testing.assert_allclose(to_numpy(logits), full[:, position], atol=1e-5)
        # Masked memory slots do not matter.
        memory[:, 5:] = 100.0
        np.testing.assert_allclose(to_numpy(decoder(tokens, state, memory, mask)), full, atol=1e-5)

    def test_story_state_conditions_the_output(self):
        decoder = TextDecoder(vocabulary_size=30, embedding_dim=8, units=12)
        tokens = np.ones((2, 4), "int32")
        state = np.random.default_rng(0).normal(size=(2, 10)).astype("float32")
        first = to_numpy(decoder(tokens, state))
        assert not np.allclose(first[0], first[1])

    def test_logits_are_in_the_compute_dtype_under_mixed_precision(self):
        # As keras-hub's language models' are; the loss and the samplers
        # cast them to float32 (tests/story_model_test.py's mixed-precision step).
        decoder = TextDecoder(vocabulary_size=30, embedding_dim=8, units=12, dtype="mixed_bfloat16")
        logits = decoder(np.ones((1, 3), "int32"), np.zeros((1, 4), "float32"))
        assert keras.backend.standardize_dtype(logits.dtype) == "bfloat16"
        assert decoder.gru.cell.recurrent_kernel.dtype == "float32"

    def test_config(self):
        restored = self.run_config_round_trip(TextDecoder(30, embedding_dim=8, units=12))
        assert (restored.vocabulary_size, restored.embedding_dim, restored.units) == (30, 8, 12)

    def test_steps_reuse_the_memory_projections_of_the_cache(self):
        # Generation projects the fixed memory once: a step must not project
        # keys or values again (that cost ~25x the rest of a step).
        decoder = TextDecoder(vocabulary_size=30, embedding_dim=8, units=12, attention_heads=2)
        rng = np.random.default_rng(0)
        state = rng.normal(size=(2, 10)).astype("float32")
        memory = rng.normal(size=(2, 7, 12)).astype("float32")
        decoder(np.ones((2, 3), "int32"), state, memory, np.ones((2, 7), bool))
        cache = decoder.initial_cache(state, memory, np.ones((2, 7), bool))
        assert tuple(keras.ops.shape(cache[2])) == (2, 2, 7, 2, 6)

        def fail(*args, **kwargs):
            raise AssertionError("a step projected the memory again")

        decoder.attention._key_dense.call = fail
        decoder.attention._value_dense.call = fail
        logits, _ = decoder.step(np.ones((2,), "int32"), cache)
        assert tuple(keras.ops.shape(logits)) == (2, 30)
