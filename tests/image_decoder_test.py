import keras
import numpy as np
import pytest
from test_case import TestCase
from test_case import to_numpy

from kstory.layers.image_decoder import ImageDecoder


class TestImageDecoder(TestCase):
    @pytest.mark.parametrize("size", [8, 32, 64])
    def test_output_is_an_image_in_0_1(self, size):
        output = to_numpy(
            ImageDecoder(size, filters=32)(np.random.default_rng(0).normal(size=(2, 10)))
        )
        assert output.shape == (2, size, size, 3)
        assert 0 <= output.min() and output.max() <= 1

    @pytest.mark.parametrize("size", [2, 48, 100])
    def test_sizes_must_be_4_times_a_power_of_two(self, size):
        with pytest.raises(ValueError, match=f"got {size}"):
            ImageDecoder(size)

    def test_residual_decoder_starts_as_the_last_frame(self):
        last = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)).astype("uint8")
        decoder = ImageDecoder(8, filters=16, residual=True)
        output = to_numpy(decoder(np.ones((2, 10)), np.stack([255 - last, last], axis=1)))
        # The last frame at the output size, rounded to 8 bits: what a cache
        # of small frames holds.
        expected = np.round(to_numpy(keras.ops.image.resize(last.astype("float32"), (8, 8))))
        np.testing.assert_array_equal(to_numpy(decoder.resize_frames(last)), expected)
        np.testing.assert_allclose(output, np.clip(expected / 255, 1e-3, 1 - 1e-3), atol=1e-4)
        with pytest.raises(ValueError, match="last context frame"):
            decoder(np.ones((2, 10)))

    def test_config(self):
        restored = self.run_config_round_trip(ImageDecoder(16, filters=24))
        assert restored.image_size == 16 and restored.num_upsamplings == 2
        restored = self.run_config_round_trip(ImageDecoder(16, residual=True, refinement_filters=8))
        assert restored.refinement_filters == 8

    def test_refinement_filters_size_the_residual_convolutions(self):
        decoder = ImageDecoder(8, filters=16, residual=True, refinement_filters=8)
        decoder(np.ones((2, 10)), np.zeros((2, 1, 8, 8, 3), "uint8"))
        assert [layer.filters for layer in decoder.refinements] == [8, 8]
        # The story state scales and shifts each refinement channel.
        assert decoder.modulation.units == 2 * 8 * 2
