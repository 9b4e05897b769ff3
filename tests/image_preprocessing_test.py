import keras
import numpy as np
import pytest
from test_case import TestCase

from kstory.layers.image_preprocessing import ImagePreprocessing
from kstory.layers.image_preprocessing import preprocessing_mode


@pytest.mark.parametrize(
    "name, mode",
    [
        ("ResNet50", "caffe"),
        ("ResNet50V2", "tf"),
        ("MobileNetV2", "tf"),
        ("MobileNetV3Small", "none"),
        ("EfficientNetB0", "none"),
        ("DenseNet121", "torch"),
        ("VGG16", "caffe"),
        ("ConvNeXtTiny", "none"),
    ],
)
def test_modes_of_application_families(name, mode):
    assert preprocessing_mode(name) == mode


def test_unknown_application_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown keras.applications model 'ResNot50'"):
        preprocessing_mode("ResNot50")


class TestImagePreprocessing(TestCase):
    @pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
    def test_matches_keras_applications_preprocess_input(self, mode):
        images = np.random.default_rng(0).integers(0, 256, (2, 4, 8, 8, 3)).astype("uint8")
        expected = keras.applications.imagenet_utils.preprocess_input(
            images.astype("float32"), mode=mode
        )
        self.assert_allclose(ImagePreprocessing(mode)(images), expected, atol=1e-4)

    def test_none_passes_0_to_255_floats(self):
        images = np.full((1, 2, 2, 3), 200, "uint8")
        self.assert_allclose(ImagePreprocessing("none")(images), images.astype("float32"))

    def test_config(self):
        assert self.run_config_round_trip(ImagePreprocessing("torch")).mode == "torch"
        with pytest.raises(ValueError, match="mode must be"):
            ImagePreprocessing("bgr")
