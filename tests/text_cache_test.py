import os

import keras
import keras_hub
import numpy as np
import pytest

from conftest import build_tiny_model
from kstory.data import text_cache as text_cache_lib
from kstory.data.feature_cache import build_feature_cache
from kstory.data.pipeline import make_dataset
from kstory.data.story import Story
from kstory.data.text_cache import build_text_cache
from kstory.data.text_cache import text_fingerprint
from kstory.layers.step_text_encoder import StepTextEncoder
from kstory.training.cached_feature_trainer import CachedFeatureTrainer

DATA = dict(image_size=32, target_image_size=32, batch_size=2)
# Training from the cache matches training from tokens to this (relative).
TOLERANCE = 1e-5


def _frozen_model(preprocessor, **overrides):
    """Image encoder and the lower of two text layers frozen; dropout on,
    so that the trainable layer draws randomness in both runs."""
    settings = dict(freeze_image_encoder=True, num_frozen_text_layers=1, tiny_text_dropout=0.1)
    return build_tiny_model(preprocessor, compile=False, **{**settings, **overrides})


def _weights(model):
    return [keras.ops.convert_to_numpy(v) for v in model.weights]


def _count_builds(monkeypatch):
    builds = []
    write_states = text_cache_lib._write_states

    def counting_write_states(path, texts, *args):
        builds.append(len(texts))
        write_states(path, texts, *args)

    monkeypatch.setattr(text_cache_lib, "_write_states", counting_write_states)
    return builds


@pytest.mark.parametrize("num_frozen_layers", [0, 1, 2, 3])
def test_the_split_encoder_is_the_backbone_and_its_frozen_part_ignores_training(
    num_frozen_layers,
):
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.DistilBertBackbone(
        vocabulary_size=50,
        num_layers=3,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=8,
        dropout=0.5,
    )
    encoder = StepTextEncoder(backbone, num_frozen_layers)
    token_ids = np.random.default_rng(0).integers(1, 50, (2, 4, 8)).astype("int32")
    padding_mask = np.ones((2, 4, 8), "int32")
    padding_mask[:, :, 6:] = 0
    _, token_states = encoder(token_ids, padding_mask, training=False)
    whole = backbone(
        {"token_ids": token_ids.reshape(8, 8), "padding_mask": padding_mask.reshape(8, 8)}
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(token_states).reshape(8, 8, 16),
        keras.ops.convert_to_numpy(whole),
        atol=1e-6,
    )
    # The frozen part is the same in training (dropout 0.5 would change it).
    frozen = keras.ops.convert_to_numpy(encoder.frozen_states(token_ids, padding_mask))
    in_training = encoder.frozen_stack(
        {"token_ids": token_ids.reshape(8, 8), "padding_mask": padding_mask.reshape(8, 8)},
        training=False,
    )
    np.testing.assert_array_equal(frozen.reshape(8, 8, 16), keras.ops.convert_to_numpy(in_training))
    assert encoder.caches == (num_frozen_layers >= 1)
    if num_frozen_layers == 3:
        # All layers frozen: states from the cache are the output.
        _, from_cache = encoder(token_ids, padding_mask, frozen_states=frozen, training=True)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(from_cache), frozen)


def _misalign(cache):
    """A bug to catch: every caption reads the next caption's row."""
    keys = list(cache.rows_by_key)
    cache.rows_by_key = dict(zip(keys, np.roll(list(cache.rows_by_key.values()), 1)))


# "misaligned" shows that the comparison has teeth: a cache whose rows are
# off by one caption must fail it by over 10x the tolerance. Measured, the
# largest weight difference: right 0 (TensorFlow, torch) and 8e-7 (JAX);
# misaligned 0.025 on each backend.
@pytest.mark.parametrize("rows", ["right", "misaligned"])
def test_training_from_the_text_cache_matches_training_from_tokens(
    rows, embedded_stories, tiny_preprocessor, tmp_path
):
    stories = embedded_stories[:4]
    from_tokens = _frozen_model(tiny_preprocessor)
    from_cache = _frozen_model(tiny_preprocessor)
    image_cache = build_feature_cache(stories, from_cache.backbone, str(tmp_path / "images"))
    cache = build_text_cache(
        stories, from_cache.backbone, tiny_preprocessor, str(tmp_path / "text")
    )
    assert cache.info["num_captions"] == len({text for story in stories for text in story.texts})
    if rows == "misaligned":
        _misalign(cache)
    trainers = [CachedFeatureTrainer(from_tokens), CachedFeatureTrainer(from_cache)]
    histories = []
    for trainer, text_cache in zip(trainers, (None, cache)):
        trainer.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.01))
        dataset = make_dataset(
            stories, tiny_preprocessor, feature_cache=image_cache, text_cache=text_cache, **DATA
        )
        keras.utils.set_random_seed(1)
        histories.append(trainer.fit(dataset, epochs=2, verbose=0).history)
    expected, actual = histories
    assert int(trainers[1].optimizer.iterations) == int(trainers[0].optimizer.iterations) > 10
    largest = max(
        np.abs(trained - reference).max()
        for trained, reference in zip(_weights(from_cache), _weights(from_tokens))
    )
    if rows == "misaligned":
        assert largest > 10 * TOLERANCE
        return
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=TOLERANCE, err_msg=name)
    assert largest <= TOLERANCE


def test_each_distinct_caption_is_encoded_once(tiny_preprocessor, tmp_path, monkeypatch):
    builds = _count_builds(monkeypatch)
    frames = (b"",) * 5
    stories = [Story("a", frames, tuple("abcde")), Story("b", frames, tuple("cdefa"))]
    model = _frozen_model(tiny_preprocessor)
    cache = build_text_cache(stories, model.backbone, tiny_preprocessor, str(tmp_path))
    assert builds == [6]
    assert cache.info == {**cache.info, "num_captions": 6, "num_story_captions": 10}
    assert cache.context_states.shape == cache.caption_states.shape == (6, 48, 16)
    np.testing.assert_array_equal(cache.rows(stories), [0, 1, 2, 3, 4, 2, 3, 4, 5, 0])
    tokens = tiny_preprocessor(np.array([["d"]]), np.array(["d"]))
    expected = model.backbone.text_encoder.frozen_states(
        tokens["token_ids"], tokens["padding_mask"]
    )
    np.testing.assert_allclose(
        cache.context_states[3], keras.ops.convert_to_numpy(expected)[0, 0], atol=1e-6
    )
    with pytest.raises(ValueError, match="frame 2 of story 'c'"):
        cache.rows([Story("c", frames, tuple("abzde"))])


def test_the_cache_survives_training_and_is_invalidated_by_frozen_weights(
    embedded_stories, tiny_preprocessor, tmp_path, monkeypatch
):
    builds = _count_builds(monkeypatch)
    stories = embedded_stories[:2]
    backbone = _frozen_model(tiny_preprocessor).backbone
    first = build_text_cache(stories, backbone, tiny_preprocessor, str(tmp_path))
    # Training moves the upper layer only: the cache stays.
    upper = backbone.text_encoder.backbone.get_layer("transformer_layer_1").weights[0]
    upper.assign(upper * 2.0)
    again = build_text_cache(stories, backbone, tiny_preprocessor, str(tmp_path))
    assert again.path == first.path and len(builds) == 1
    lower = backbone.text_encoder.backbone.get_layer("transformer_layer_0").weights[0]
    lower.assign(lower * 2.0)
    changed = build_text_cache(stories, backbone, tiny_preprocessor, str(tmp_path))
    assert changed.path != first.path and len(builds) == 2
    assert not os.path.exists(first.path)
    assert not np.allclose(changed.context_states, again.context_states)
    two_frozen = _frozen_model(tiny_preprocessor, num_frozen_text_layers=2).backbone
    assert text_fingerprint(two_frozen, tiny_preprocessor) != text_fingerprint(
        backbone, tiny_preprocessor
    )


def test_the_cache_needs_a_frozen_text_layer(tiny_preprocessor, tmp_path):
    backbone = _frozen_model(tiny_preprocessor, num_frozen_text_layers=0).backbone
    with pytest.raises(ValueError, match="num_frozen_text_layers >= 1"):
        build_text_cache([], backbone, tiny_preprocessor, str(tmp_path))
