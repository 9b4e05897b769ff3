import os

import keras
import numpy as np
import pytest

from conftest import tiny_data_config
from conftest import tiny_model_config
from kstory.models.builders import build_image_encoder
from kstory.models.builders import build_story_model
from kstory.models.builders import build_text_backbone


def test_image_encoder_from_a_local_weights_file(tmp_path):
    source = build_image_encoder("MobileNetV3Small", "none", 32)
    path = str(tmp_path / "encoder.weights.h5")
    source.save_weights(path)
    loaded = build_image_encoder("MobileNetV3Small", path, 32)
    for expected, actual in zip(source.weights, loaded.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(expected), keras.ops.convert_to_numpy(actual)
        )


@pytest.mark.parametrize(
    "name, weights, message",
    [
        ("ResNet51", "none", "not a keras.applications model"),
        ("MobileNetV3Small", "/no/such/file.h5", "neither 'imagenet', 'none' nor a file"),
    ],
)
def test_bad_image_encoder_settings(name, weights, message):
    with pytest.raises(ValueError, match=message):
        build_image_encoder(name, weights, 32)


def test_imagenet_weights_offline_say_what_to_do():
    cached = os.path.expanduser(
        "~/.keras/models/weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    )
    if os.path.exists(cached):  # A machine that has the weights builds the model.
        assert build_image_encoder("MobileNetV3Small", "imagenet", 32) is not None
    else:
        with pytest.raises(ValueError, match="set model.image_weights to a local weights file"):
            build_image_encoder("MobileNetV3Small", "imagenet", 32)


def test_tiny_text_backbone_sizes():
    backbone = build_text_backbone(tiny_model_config(), 77, sequence_length=24)
    assert backbone.vocabulary_size == 77
    assert (backbone.hidden_dim, backbone.intermediate_dim) == (16, 32)
    wide = build_text_backbone(tiny_model_config(tiny_text_intermediate_dim=48), 77, 24)
    assert wide.intermediate_dim == 48


def test_story_model_without_a_preprocessor_needs_a_vocabulary_size():
    with pytest.raises(ValueError, match="needs a preprocessor or a vocabulary_size"):
        build_story_model(tiny_model_config(), tiny_data_config(), None)
    model = build_story_model(tiny_model_config(), tiny_data_config(), None, vocabulary_size=40)
    assert model.backbone.vocabulary_size == 40 and model.pad_token_id == 0


def test_story_model_from_configs_uses_the_named_application(tiny_preprocessor):
    model = build_story_model(tiny_model_config(), tiny_data_config(), tiny_preprocessor)
    assert model.backbone.image_encoder.name == "MobileNetV3Small"
    assert model.backbone.image_preprocessing.mode == "none"
    assert model.backbone.vocabulary_size == tiny_preprocessor.tokenizer.vocabulary_size()
    assert model.pad_token_id == tiny_preprocessor.tokenizer.pad_token_id


def test_image_encoder_options_reach_the_application():
    full = build_image_encoder("MobileNetV3Small", "none", 32)
    options = {"minimalistic": True}
    minimalistic = build_image_encoder("MobileNetV3Small", "none", 32, options=options)
    # Minimalistic MobileNetV3 has no squeeze-and-excitation blocks (Multiply
    # layers), hence fewer weights.
    assert not any(type(layer).__name__ == "Multiply" for layer in minimalistic.layers)
    assert any(type(layer).__name__ == "Multiply" for layer in full.layers)
    assert minimalistic.count_params() < full.count_params()
    with pytest.raises(ValueError, match=r"model.image_encoder_options \{'width': 2\}"):
        build_image_encoder("MobileNetV3Small", "none", 32, options={"width": 2})


def test_story_model_from_configs_passes_the_encoder_options(tiny_preprocessor):
    config = tiny_model_config(image_encoder_options={"minimalistic": True})
    model = build_story_model(config, tiny_data_config(), tiny_preprocessor)
    names = [type(layer).__name__ for layer in model.backbone.image_encoder.layers]
    assert "Multiply" not in names
