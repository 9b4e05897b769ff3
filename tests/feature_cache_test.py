import os

import keras
import numpy as np
import pytest

from conftest import build_tiny_model
from conftest import png_bytes
from kstory.data import feature_cache as feature_cache_lib
from kstory.data.feature_cache import build_feature_cache
from kstory.data.feature_cache import encoder_fingerprint
from kstory.data.pipeline import make_dataset
from kstory.data.story import Story
from kstory.training.cached_feature_trainer import CachedFeatureTrainer

# The decoder's output (16 px) is smaller than the context frames (32 px), so
# the residual path's resize is part of what the cache must reproduce.
DATA = dict(image_size=32, target_image_size=16, batch_size=2)


def _frozen_model(preprocessor, **overrides):
    return build_tiny_model(
        preprocessor,
        compile=False,
        data_overrides={"target_image_size": 16},
        freeze_image_encoder=True,
        image_decoder_residual=True,
        **overrides,
    )


def _weights(model):
    return [keras.ops.convert_to_numpy(v) for v in model.weights]


def _count_builds(monkeypatch):
    builds = []
    write_arrays = feature_cache_lib._write_arrays

    def counting_write_arrays(path, images, *args):
        builds.append(len(images))
        write_arrays(path, images, *args)

    monkeypatch.setattr(feature_cache_lib, "_write_arrays", counting_write_arrays)
    return builds


# Under SGD, and under AdamW as `kstory train` uses it (a larger rate, so the
# two runs move apart quickly if anything differs). Measured: the largest
# weight difference under AdamW is 5e-6 on TensorFlow, 0 on JAX and torch.
OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(0.1),
    "adamw": lambda: keras.optimizers.AdamW(1e-3, weight_decay=0.01),
}


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_training_from_the_cache_matches_training_from_images(
    optimizer, embedded_stories, tiny_preprocessor, tmp_path
):
    make_optimizer = OPTIMIZERS[optimizer]
    stories = embedded_stories[:4]
    from_images = _frozen_model(tiny_preprocessor)
    from_cache = _frozen_model(tiny_preprocessor)
    cache = build_feature_cache(stories, from_cache.backbone, str(tmp_path))
    trainer = CachedFeatureTrainer(from_cache)
    from_images.compile(optimizer=make_optimizer())
    trainer.compile(optimizer=make_optimizer())

    keras.utils.set_random_seed(1)
    expected = from_images.fit(
        make_dataset(stories, tiny_preprocessor, **DATA), epochs=2, verbose=0
    ).history
    keras.utils.set_random_seed(1)
    actual = trainer.fit(
        make_dataset(stories, tiny_preprocessor, feature_cache=cache, **DATA),
        epochs=2,
        verbose=0,
    ).history

    assert int(trainer.optimizer.iterations) == int(from_images.optimizer.iterations) > 10
    assert sorted(actual) == sorted(expected)
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-5, err_msg=name)
    for trained, reference in zip(_weights(from_cache), _weights(from_images)):
        np.testing.assert_allclose(trained, reference, atol=1e-5)


def test_the_trained_model_still_reads_images(embedded_stories, tiny_preprocessor, tmp_path):
    model = _frozen_model(tiny_preprocessor)
    cache = build_feature_cache(embedded_stories[:2], model.backbone, str(tmp_path))
    trainer = CachedFeatureTrainer(model)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    cached = make_dataset(embedded_stories[:2], tiny_preprocessor, feature_cache=cache, **DATA)
    trainer.fit(cached, epochs=1, verbose=0)
    inputs, targets = next(iter(make_dataset(embedded_stories[:2], tiny_preprocessor, **DATA)))
    cached_inputs, cached_targets = next(iter(cached))
    np.testing.assert_array_equal(targets["next_image"], cached_targets["next_image"])
    outputs = model(keras.tree.map_structure(np.asarray, inputs))
    trainer_outputs = trainer(keras.tree.map_structure(np.asarray, cached_inputs))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(outputs["next_image"]),
        keras.ops.convert_to_numpy(trainer_outputs["next_image"]),
        atol=1e-5,
    )


def test_each_unique_frame_is_encoded_once(tiny_preprocessor, tmp_path, monkeypatch):
    builds = _count_builds(monkeypatch)
    frames = [png_bytes(np.full((32, 32, 3), 40 * i, np.uint8)) for i in range(6)]
    # Two stories sharing three frames; six distinct frames in 10 slots.
    stories = [
        Story("a", tuple(frames[:5]), tuple("abcde")),
        Story("b", tuple(frames[2:5] + frames[5:] + frames[:1]), tuple("fghij")),
    ]
    cache = build_feature_cache(stories, _frozen_model(tiny_preprocessor).backbone, str(tmp_path))
    assert builds == [6]
    assert cache.info["num_frames"] == 6 and cache.info["num_story_frames"] == 10
    assert cache.features.shape == (6, 16)
    rows = cache.rows(stories)
    np.testing.assert_array_equal(rows, [0, 1, 2, 3, 4, 2, 3, 4, 5, 0])


def test_cache_is_reused_and_invalidated_by_encoder_changes(
    embedded_stories, tiny_preprocessor, tmp_path, monkeypatch
):
    builds = _count_builds(monkeypatch)
    stories = embedded_stories[:2]
    model = _frozen_model(tiny_preprocessor)
    first = build_feature_cache(stories, model.backbone, str(tmp_path))
    again = build_feature_cache(stories, _frozen_model(tiny_preprocessor).backbone, str(tmp_path))
    assert again.path == first.path and len(builds) == 1

    kernel = model.backbone.image_encoder.weights[0]
    kernel.assign(kernel * 2.0)
    changed_weights = build_feature_cache(stories, model.backbone, str(tmp_path))
    assert changed_weights.path != first.path and len(builds) == 2
    assert not os.path.exists(first.path)  # The stale cache is deleted.
    assert not np.allclose(changed_weights.features, again.features)

    other_sizes = _frozen_model(tiny_preprocessor, image_encoder="MobileNetV3Small")
    fingerprints = {
        encoder_fingerprint(model.backbone),
        encoder_fingerprint(other_sizes.backbone),
        encoder_fingerprint(
            build_tiny_model(
                tiny_preprocessor,
                compile=False,
                freeze_image_encoder=True,
                data_overrides={"target_image_size": 32},
            ).backbone
        ),
    }
    assert len(fingerprints) == 3


def test_new_frames_rebuild_the_cache_and_unknown_frames_are_named(
    embedded_stories, tiny_preprocessor, tmp_path, monkeypatch
):
    builds = _count_builds(monkeypatch)
    backbone = _frozen_model(tiny_preprocessor).backbone
    cache = build_feature_cache(embedded_stories[:1], backbone, str(tmp_path))
    with pytest.raises(ValueError, match=f"Frame 0 of story '{embedded_stories[1].story_id}'"):
        cache.rows(embedded_stories[:2])
    bigger = build_feature_cache(embedded_stories[:2], backbone, str(tmp_path))
    assert len(builds) == 2 and len(bigger.rows(embedded_stories[:2])) > len(cache.rows_by_key)


def test_the_cache_needs_a_frozen_encoder(tiny_preprocessor):
    with pytest.raises(ValueError, match="freeze_image_encoder"):
        CachedFeatureTrainer(
            build_tiny_model(tiny_preprocessor, compile=False, freeze_image_encoder=False)
        )
