import numpy as np
import tensorflow as tf

from kstory.evaluation.image_metrics import image_scores
from kstory.evaluation.image_metrics import ssim


def test_ssim_matches_tensorflow():
    rng = np.random.default_rng(0)
    target = rng.random((3, 32, 32, 3)).astype("float32")
    predicted = np.clip(target + 0.1 * rng.normal(size=target.shape), 0, 1).astype("float32")
    expected = tf.image.ssim(predicted, target, max_val=1.0).numpy()
    np.testing.assert_allclose(ssim(predicted, target), expected, atol=1e-4)


def test_known_values():
    target = np.zeros((2, 16, 16, 3))
    predicted = np.full((2, 16, 16, 3), 0.1)
    scores = image_scores(predicted, target)
    np.testing.assert_allclose(scores["MSE"], 0.01)
    np.testing.assert_allclose(scores["PSNR"], 20.0)
    np.testing.assert_allclose(image_scores(target, target)["SSIM"], 1.0)


def test_shape_mismatch_is_an_error():
    import pytest

    with pytest.raises(ValueError, match="differ"):
        image_scores(np.zeros((1, 8, 8, 3)), np.zeros((1, 16, 16, 3)))
