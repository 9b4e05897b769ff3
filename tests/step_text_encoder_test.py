import keras
import keras_hub
import numpy as np
import pytest
from test_case import TestCase
from test_case import to_numpy

from conftest import tiny_distilbert
from kstory.layers.step_text_encoder import StepTextEncoder


class TestStepTextEncoder(TestCase):
    def test_each_step_gets_its_own_cls_vector(self):
        backbone = tiny_distilbert()
        encoder = StepTextEncoder(backbone)
        token_ids = np.random.default_rng(0).integers(5, 50, (2, 4, 8)).astype("int32")
        mask = np.ones((2, 4, 8), "int32")
        cls_vectors, token_states = to_numpy(encoder(token_ids, mask))
        assert cls_vectors.shape == (2, 4, 16) and token_states.shape == (2, 4, 8, 16)
        direct = to_numpy(backbone({"token_ids": token_ids[1, 2:3], "padding_mask": mask[1, 2:3]}))
        np.testing.assert_allclose(cls_vectors[1, 2], direct[0, 0], atol=1e-5)
        np.testing.assert_allclose(token_states[1, 2], direct[0], atol=1e-5)

    def test_bert_backbones_get_segment_ids(self):
        bert = keras_hub.models.BertBackbone(
            vocabulary_size=50,
            num_layers=1,
            num_heads=2,
            hidden_dim=16,
            intermediate_dim=32,
            max_sequence_length=8,
        )
        cls_vectors, _ = StepTextEncoder(bert)(
            np.ones((1, 4, 8), "int32"), np.ones((1, 4, 8), "int32")
        )
        assert tuple(cls_vectors.shape) == (1, 4, 16)

    @pytest.mark.parametrize(
        "num_frozen, trainable_layers", [(-1, {0, 1}), (0, {0, 1}), (1, {1}), (2, set())]
    )
    def test_freezing(self, num_frozen, trainable_layers):
        encoder = StepTextEncoder(tiny_distilbert(), num_frozen_layers=num_frozen)
        layers = {layer.name: layer for layer in encoder.backbone.layers}
        assert layers["token_and_position_embedding"].trainable == (num_frozen < 0)
        for index in (0, 1):
            assert layers[f"transformer_layer_{index}"].trainable == (index in trainable_layers)

    def test_too_many_frozen_layers(self):
        with pytest.raises(ValueError, match="exceeds the backbone's 2"):
            StepTextEncoder(tiny_distilbert(), num_frozen_layers=3)

    def test_serialization_keeps_freezing(self):
        restored = self.run_serialization_round_trip(StepTextEncoder(tiny_distilbert(), 1))
        assert not restored.backbone.get_layer("transformer_layer_0").trainable
        assert restored.backbone.get_layer("transformer_layer_1").trainable
        assert isinstance(restored.backbone, keras_hub.models.DistilBertBackbone)
        assert keras.saving.get_registered_name(StepTextEncoder) == "kstory>StepTextEncoder"
