import keras
import numpy as np
import pytest
from test_case import TestCase

from conftest import tiny_distilbert
from conftest import tiny_image_encoder
from kstory.models.story_backbone import StoryBackbone
from kstory.models.story_backbone import masked_mean


def _backbone(**overrides):
    settings = dict(
        image_encoder=tiny_image_encoder(32),
        text_backbone=tiny_distilbert(),
        vocabulary_size=50,
        image_size=32,
        target_image_size=16,
        sequence_length=8,
        image_preprocessing="tf",
        embedding_dim=16,
        fusion_dim=16,
        temporal_units=16,
        decoder_filters=16,
        text_decoder_embedding_dim=8,
        text_decoder_units=16,
        text_decoder_attention_heads=0,
        image_decoder_residual=False,
    )
    settings.update(overrides)
    return StoryBackbone(**settings)


INPUTS = {
    "images": np.random.default_rng(0).integers(0, 256, (2, 4, 32, 32, 3)).astype("uint8"),
    "token_ids": np.random.default_rng(1).integers(5, 50, (2, 4, 8)).astype("int32"),
    "padding_mask": np.ones((2, 4, 8), "int32"),
    "decoder_token_ids": np.ones((2, 5), "int32"),
}


class TestStoryBackbone(TestCase):
    @pytest.mark.parametrize("temporal_model", ["gru", "transformer"])
    def test_outputs(self, temporal_model):
        outputs = _backbone(temporal_model=temporal_model, temporal_num_heads=2)(INPUTS)
        shapes = {name: tuple(value.shape) for name, value in outputs.items()}
        assert shapes == {
            "image_embeddings": (2, 4, 16),
            "text_embeddings": (2, 4, 16),
            "story_state": (2, 16),
            "step_states": (2, 4, 16),
            "next_image": (2, 16, 16, 3),
            "next_token_logits": (2, 5, 50),
        }
        self.assert_allclose(outputs["step_states"][:, -1], outputs["story_state"], atol=0)

    @pytest.mark.parametrize("temporal_model", ["gru", "transformer"])
    def test_step_states_see_only_the_steps_so_far(self, temporal_model):
        # Step t's state is asked for caption t + 1 (the bag-of-words loss):
        # it must not have seen step t + 1.
        backbone = _backbone(temporal_model=temporal_model, temporal_num_heads=2)
        base = keras.ops.convert_to_numpy(backbone(INPUTS)["step_states"])
        changed = {**INPUTS, "token_ids": INPUTS["token_ids"].copy()}
        changed["token_ids"][:, 2] = 7
        states = keras.ops.convert_to_numpy(backbone(changed)["step_states"])
        np.testing.assert_allclose(states[:, :2], base[:, :2], atol=1e-6)
        assert not np.allclose(states[:, 2:], base[:, 2:], atol=1e-4)

    def test_encode_matches_the_functional_graph(self):
        backbone = _backbone()
        encoded = backbone.encode(
            {name: keras.ops.convert_to_tensor(value) for name, value in INPUTS.items()}
        )
        self.assert_allclose(encoded["story_state"], backbone(INPUTS)["story_state"], atol=1e-5)
        assert "memory" not in encoded

    def test_attending_decoder_and_residual_image(self):
        backbone = _backbone(
            text_decoder_attention_heads=2, image_decoder_residual=True, target_image_size=32
        )
        encoded = backbone.encode(
            {name: keras.ops.convert_to_tensor(value) for name, value in INPUTS.items()}
        )
        # Each step's caption tokens, then one slot per step's image.
        assert tuple(encoded["memory"].shape) == (2, 4 * 8 + 4, 16)
        assert tuple(encoded["memory_mask"].shape) == (2, 4 * 8 + 4)
        outputs = backbone(INPUTS)
        assert tuple(outputs["next_token_logits"].shape) == (2, 5, 50)
        # The untrained residual decoder copies the last context frame.
        self.assert_allclose(outputs["next_image"], INPUTS["images"][:, -1] / 255.0, atol=2e-3)
        restored = self.run_serialization_round_trip(backbone)
        assert restored.text_decoder.attention_heads == 2 and restored.image_decoder.residual

    def test_the_decoder_memory_holds_each_image(self):
        backbone = _backbone(text_decoder_attention_heads=2)
        changed = dict(INPUTS, images=INPUTS["images"].copy())
        changed["images"][:, -1] = 255 - changed["images"][:, -1]
        memories = [
            keras.ops.convert_to_numpy(
                backbone.encode(
                    {name: keras.ops.convert_to_tensor(value) for name, value in inputs.items()}
                )["memory"]
            )
            for inputs in (INPUTS, changed)
        ]
        # Only the last image's slot moves: the captions' tokens and the
        # other images are the same.
        assert not np.allclose(memories[0][:, -1], memories[1][:, -1])
        np.testing.assert_allclose(memories[0][:, :-1], memories[1][:, :-1], atol=1e-6)

    def test_the_next_image_reads_the_next_caption(self):
        # Seeded: how far two captions' frames lie apart depends on the
        # random initial weights (0.0008-0.002 over unseeded runs).
        keras.utils.set_random_seed(0)
        backbone = _backbone(image_decoder_residual=True)
        # An untrained residual decoder copies the last frame whatever it
        # reads (its output layer starts at zero); give it weights.
        to_rgb = backbone.image_decoder.to_rgb.kernel
        to_rgb.assign(np.random.default_rng(2).normal(0, 0.3, to_rgb.shape).astype("float32"))
        other = dict(INPUTS, decoder_token_ids=np.full((2, 5), 7, "int32"))
        first = keras.ops.convert_to_numpy(backbone(INPUTS)["next_image"])
        second = keras.ops.convert_to_numpy(backbone(other)["next_image"])
        assert np.abs(first - second).mean() > 1e-3
        # The same frame as `predict_next_image` given the caption's embedding.
        inputs = {name: keras.ops.convert_to_tensor(value) for name, value in INPUTS.items()}
        encoded = backbone.encode(inputs)
        direct = backbone.predict_next_image(
            inputs["images"],
            encoded["story_state"],
            backbone.embed_caption(inputs["decoder_token_ids"]),
        )
        self.assert_allclose(direct, first, atol=1e-5)

    def test_masked_mean_matches_numpy(self):
        states = np.random.default_rng(3).normal(size=(3, 5, 4)).astype("float32")
        mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
        expected = np.stack([states[0, :2].mean(0), states[1].mean(0), np.zeros(4, "float32")])
        pooled = masked_mean(keras.ops.convert_to_tensor(states), keras.ops.convert_to_tensor(mask))
        self.assert_allclose(pooled, expected, atol=1e-6)

    def test_the_caption_embedding_pools_every_word_and_no_padding(self):
        # What the image decoder reads of the next caption: the mean of its
        # token states, padding left out, not the [CLS] vector alone.
        backbone = _backbone()
        token_ids = np.array([[2, 11, 12, 13, 3, 0, 0, 0], [2, 21, 3, 0, 0, 0, 0, 0]], "int32")
        mask = token_ids != 0
        _, states = backbone.text_encoder(token_ids[:, None], mask[:, None].astype("int32"))
        states = keras.ops.convert_to_numpy(states)[:, 0]
        pooled = np.stack([states[i][mask[i]].mean(0) for i in range(2)])
        expected = keras.ops.convert_to_numpy(backbone.caption_projection(pooled))
        self.assert_allclose(backbone.embed_caption(token_ids), expected, atol=1e-5)
        # A word after [CLS]'s position changes it; longer padding does not.
        changed = token_ids.copy()
        changed[0, 3] = 30
        embed = lambda ids: keras.ops.convert_to_numpy(backbone.embed_caption(ids))  # noqa: E731
        assert not np.allclose(embed(changed)[0], embed(token_ids)[0], atol=1e-4)
        self.assert_allclose(
            backbone.embed_caption(np.pad(token_ids, ((0, 0), (0, 4)))),
            backbone.embed_caption(token_ids),
            atol=1e-5,
        )

    @pytest.mark.parametrize("pooling", ["cls", "mean"])
    def test_contrastive_text_pooling_matches_numpy(self, pooling):
        # The contrastive text embedding projects [CLS], or the mean of the
        # caption's token states without padding, in the forward pass and in
        # `embed_texts` alike.
        backbone = _backbone(contrastive_text_pooling=pooling)
        inputs = dict(INPUTS, padding_mask=INPUTS["padding_mask"].copy())
        inputs["padding_mask"][:, :, 5:] = 0
        _, states = backbone.text_encoder(inputs["token_ids"], inputs["padding_mask"])
        states = keras.ops.convert_to_numpy(states)
        if pooling == "cls":
            vectors = states[:, :, 0]
        else:
            vectors = states[:, :, :5].mean(axis=2)
        expected = keras.ops.convert_to_numpy(backbone.text_projection(vectors))
        self.assert_allclose(backbone(inputs)["text_embeddings"], expected, atol=1e-5)
        self.assert_allclose(
            backbone.embed_texts(inputs["token_ids"][:, 1], inputs["padding_mask"][:, 1]),
            expected[:, 1],
            atol=1e-5,
        )
        restored = self.run_serialization_round_trip(backbone)
        assert restored.contrastive_text_pooling == pooling

    def test_bad_contrastive_text_pooling(self):
        with pytest.raises(ValueError, match="contrastive_text_pooling must be"):
            _backbone(contrastive_text_pooling="max")

    def test_every_step_reaches_the_story_state(self):
        backbone = _backbone()
        base = keras.ops.convert_to_numpy(backbone(INPUTS)["story_state"])
        for step in range(4):
            changed = dict(INPUTS, images=INPUTS["images"].copy())
            changed["images"][:, step] = 255 - changed["images"][:, step]
            assert not np.allclose(
                keras.ops.convert_to_numpy(backbone(changed)["story_state"]), base
            )

    def test_config_round_trip_keeps_freezing(self):
        backbone = _backbone(num_frozen_text_layers=1)
        restored = self.run_serialization_round_trip(backbone)
        assert not restored.image_encoder.trainable
        assert len(restored.trainable_weights) == len(backbone.trainable_weights)

    def test_unfrozen_image_encoder(self):
        backbone = _backbone(freeze_image_encoder=False)
        assert backbone.image_encoder.trainable
        assert len(backbone.trainable_weights) > len(_backbone().trainable_weights)

    def test_bad_temporal_model(self):
        with pytest.raises(ValueError, match="temporal_model must be one of"):
            _backbone(temporal_model="lstm")
