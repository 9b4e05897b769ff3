import keras
import numpy as np
from test_case import TestCase
from test_case import to_numpy

from kstory.losses.info_nce_loss import InfoNCELoss


def _reference(logits):
    def cross_entropy(rows):
        rows = rows - rows.max(axis=1, keepdims=True)
        log_softmax = rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
        return -np.diag(log_softmax)

    return np.mean((cross_entropy(logits) + cross_entropy(logits.T)) / 2)


class TestInfoNCELoss(TestCase):
    def test_matches_a_numpy_reference(self):
        logits = np.random.default_rng(0).normal(size=(6, 6)).astype("float32") * 3
        np.testing.assert_allclose(
            float(InfoNCELoss()(np.arange(6), logits)), _reference(logits), rtol=1e-5
        )

    def test_is_symmetric_in_images_and_texts(self):
        logits = np.random.default_rng(1).normal(size=(5, 5)).astype("float32")
        loss = InfoNCELoss()
        np.testing.assert_allclose(
            float(loss(np.arange(5), logits)), float(loss(np.arange(5), logits.T)), rtol=1e-6
        )

    def test_aligned_pairs_score_low_and_uniform_logits_log_n(self):
        loss = InfoNCELoss()
        assert float(loss(np.arange(4), 20.0 * np.eye(4, dtype="float32"))) < 1e-6
        np.testing.assert_allclose(
            float(loss(np.arange(8), np.zeros((8, 8), "float32"))), np.log(8), rtol=1e-6
        )

    def test_half_precision_logits_are_computed_in_float32(self):
        logits = (np.random.default_rng(2).normal(size=(4, 4)) * 30).astype("float16")
        value = InfoNCELoss()(np.arange(4), logits)
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
        np.testing.assert_allclose(float(value), _reference(logits.astype("float32")), rtol=1e-4)

    def test_serialization(self):
        restored = self.run_serialization_round_trip(InfoNCELoss(name="contrast"))
        assert restored.name == "contrast"


def _masked_reference(images, texts, scale, captions, frames):
    """Symmetric InfoNCE in NumPy, float64, copies of a pair left out of its softmax."""
    images = images / np.linalg.norm(images, axis=1, keepdims=True)
    texts = texts / np.linalg.norm(texts, axis=1, keepdims=True)
    count = len(images)
    losses = []
    for logits in (scale * images @ texts.T, scale * texts @ images.T):
        for row in range(count):
            keep = [
                column
                for column in range(count)
                if column == row
                or (captions[column] != captions[row] and frames[column] != frames[row])
            ]
            values = logits[row, keep]
            log_sum = values.max() + np.log(np.exp(values - values.max()).sum())
            losses.append(log_sum - logits[row, row])
    return np.mean(losses)


class TestStoryModelContrastiveLoss(TestCase):
    def test_copies_in_a_batch_are_not_negatives(self, tiny_preprocessor):
        from conftest import build_tiny_model

        model = build_tiny_model(tiny_preprocessor, compile=False)
        rng = np.random.default_rng(0)
        batch, steps, length, dim = 3, 4, 6, 8
        images = rng.normal(size=(batch, steps, dim)).astype("float32")
        texts = rng.normal(size=(batch, steps, dim)).astype("float32")
        token_ids = rng.integers(5, 50, size=(batch, steps, length)).astype("int32")
        frame_keys = rng.integers(0, 2**31 - 1, size=(batch, steps)).astype("int32")
        # A sliding window: the frames and captions of steps 1-3 of window 0
        # are steps 0-2 of window 1; a caption repeats in window 2 under
        # another frame; a frame repeats in window 2 under another caption.
        token_ids[1, :3] = token_ids[0, 1:]
        frame_keys[1, :3] = frame_keys[0, 1:]
        images[1, :3] = images[0, 1:]
        texts[1, :3] = texts[0, 1:]
        token_ids[2, 0] = token_ids[0, 0]
        frame_keys[2, 1] = frame_keys[0, 3]
        scale = float(to_numpy(model.logit_scale()))
        captions = [tuple(row) for row in token_ids.reshape(-1, length)]
        frames = frame_keys.reshape(-1).tolist()

        expected = _masked_reference(
            images.reshape(-1, dim).astype("float64"),
            texts.reshape(-1, dim).astype("float64"),
            scale,
            captions,
            frames,
        )
        masked = model.contrastive_loss(images, texts, token_ids=token_ids, frame_keys=frame_keys)
        np.testing.assert_allclose(float(to_numpy(masked)), expected, rtol=1e-5)

        # Without the keys, the copies count as negatives: a different value.
        unmasked = float(to_numpy(model.contrastive_loss(images, texts)))
        no_duplicates = _masked_reference(
            images.reshape(-1, dim).astype("float64"),
            texts.reshape(-1, dim).astype("float64"),
            scale,
            list(range(len(frames))),
            list(range(len(frames))),
        )
        np.testing.assert_allclose(unmasked, no_duplicates, rtol=1e-5)
        assert abs(unmasked - expected) > 1e-2

    def test_a_batch_of_one_pair_repeated_has_no_negatives(self, tiny_preprocessor):
        from conftest import build_tiny_model

        model = build_tiny_model(tiny_preprocessor, compile=False)
        images = np.ones((2, 4, 8), "float32")
        texts = np.random.default_rng(1).normal(size=(1, 1, 8)).repeat(2, 0).repeat(4, 1)
        token_ids = np.ones((2, 4, 5), "int32")
        frame_keys = np.full((2, 4), 7, "int32")
        loss = model.contrastive_loss(images, texts.astype("float32"), token_ids, frame_keys)
        np.testing.assert_allclose(float(to_numpy(loss)), 0.0, atol=1e-6)
