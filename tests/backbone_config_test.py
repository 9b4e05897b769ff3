"""Each backbone setting is defined once: `BackboneConfig`.

`StoryBackbone` takes exactly its fields (beside the encoders and the sizes
that the data gives) and returns them from `get_config`; `ModelConfig`
inherits them, defaults included; `build_story_model` passes every one.
"""

import dataclasses
import inspect

import pytest

from conftest import tiny_data_config
from conftest import tiny_distilbert
from conftest import tiny_image_encoder
from conftest import tiny_model_config
from kstory.models.backbone_config import BackboneConfig
from kstory.models.builders import build_story_model
from kstory.models.model_config import ModelConfig
from kstory.models.story_backbone import StoryBackbone

# What the data, the tokenizer and the caller give: not architecture settings.
GIVEN = {
    "image_encoder",
    "text_backbone",
    "vocabulary_size",
    "image_size",
    "target_image_size",
    "num_context_steps",
    "sequence_length",
    "image_preprocessing",
    "pad_token_id",
    "image_resize",
    "entity_slots",
}
KERAS_CONFIG = {"name", "trainable", "dtype"}

# A valid value other than the default for every setting.
CHANGED = {
    "freeze_image_encoder": False,
    "num_frozen_text_layers": 1,
    "embedding_dim": 12,
    "fusion_dim": 14,
    "temporal_model": "transformer",
    "temporal_units": 18,
    "temporal_num_layers": 1,
    "temporal_num_heads": 3,
    "decoder_filters": 10,
    "decoder_refinement_filters": 6,
    "image_decoder_residual": False,
    "text_decoder_embedding_dim": 9,
    "text_decoder_units": 20,
    "text_decoder_attention_heads": 2,
    "modalities": "images",
    "contrastive_head": False,
    "contrastive_text_pooling": "mean",
    "image_memory": False,
    "grounding_head": True,
}


def test_the_changed_values_cover_every_setting_and_differ_from_the_defaults():
    defaults = dataclasses.asdict(BackboneConfig())
    assert set(CHANGED) == set(defaults)
    assert all(CHANGED[name] != defaults[name] for name in defaults)


def test_the_constructor_and_get_config_take_exactly_the_settings():
    explicit = set(inspect.signature(StoryBackbone.__init__).parameters) - {"self", "kwargs"}
    assert explicit - {"dtype"} == GIVEN
    backbone = StoryBackbone(
        tiny_image_encoder(32),
        tiny_distilbert(),
        50,
        image_size=32,
        target_image_size=16,
        sequence_length=8,
        **CHANGED,
    )
    config = backbone.get_config()
    assert set(config) - KERAS_CONFIG == GIVEN | set(BackboneConfig.field_names())
    assert {name: config[name] for name in CHANGED} == CHANGED
    assert {name: getattr(backbone, name) for name in CHANGED} == CHANGED
    rebuilt = StoryBackbone.from_config(config).get_config()
    assert {name: rebuilt[name] for name in CHANGED} == CHANGED


def test_model_config_inherits_every_setting_and_its_default():
    assert ModelConfig().backbone_settings() == dataclasses.asdict(BackboneConfig())
    names = [field.name for field in dataclasses.fields(ModelConfig)]
    assert set(BackboneConfig.field_names()) <= set(names)


def test_build_story_model_passes_every_setting(tiny_preprocessor):
    model_config = tiny_model_config(**CHANGED)
    model = build_story_model(model_config, tiny_data_config(), tiny_preprocessor)
    config = model.backbone.get_config()
    assert {name: config[name] for name in CHANGED} == CHANGED


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"temporal_model": "lstm"}, r"temporal_model must be one of \('gru', 'transformer'\)"),
        ({"embedding_dim": 0}, "embedding_dim must be positive; got 0"),
        ({"embedding_dim": "8"}, r"embedding_dim must be an int; got '8' \(str\)"),
        (
            {"modalities": "captions", "image_decoder_residual": True},
            "cannot copy the last frame",
        ),
    ],
)
def test_bad_settings_name_the_setting(settings, message):
    with pytest.raises(ValueError, match=message):
        BackboneConfig(**settings)
    # As a config key, with its section.
    with pytest.raises(ValueError, match=r"model\.(temporal_model|embedding_dim|image_decoder)"):
        ModelConfig(**settings)
