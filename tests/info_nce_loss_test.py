import keras
import numpy as np

from kstory.losses.info_nce_loss import InfoNCELoss
from test_case import TestCase


def _reference(logits):
    def cross_entropy(rows):
        rows = rows - rows.max(axis=1, keepdims=True)
        log_softmax = rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
        return -np.diag(log_softmax)

    return np.mean((cross_entropy(logits) + cross_entropy(logits.T)) / 2)


class TestInfoNCELoss(TestCase):
    def test_matches_a_numpy_reference(self):
        logits = np.random.default_rng(0).normal(size=(6, 6)).astype("float32") * 3
        np.testing.assert_allclose(float(InfoNCELoss()(np.arange(6), logits)), _reference(logits), rtol=1e-5)

    def test_is_symmetric_in_images_and_texts(self):
        logits = np.random.default_rng(1).normal(size=(5, 5)).astype("float32")
        loss = InfoNCELoss()
        np.testing.assert_allclose(
            float(loss(np.arange(5), logits)), float(loss(np.arange(5), logits.T)), rtol=1e-6
        )

    def test_aligned_pairs_score_low_and_uniform_logits_log_n(self):
        loss = InfoNCELoss()
        assert float(loss(np.arange(4), 20.0 * np.eye(4, dtype="float32"))) < 1e-6
        np.testing.assert_allclose(float(loss(np.arange(8), np.zeros((8, 8), "float32"))), np.log(8), rtol=1e-6)

    def test_half_precision_logits_are_computed_in_float32(self):
        logits = (np.random.default_rng(2).normal(size=(4, 4)) * 30).astype("float16")
        value = InfoNCELoss()(np.arange(4), logits)
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
        np.testing.assert_allclose(float(value), _reference(logits.astype("float32")), rtol=1e-4)

    def test_serialization(self):
        restored = self.run_serialization_round_trip(InfoNCELoss(name="contrast"))
        assert restored.name == "contrast"
