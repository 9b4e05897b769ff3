import keras
import numpy as np
import pytest

from kstory import workdir


def test_a_workdir_without_a_model_says_to_train_it(tmp_path):
    with pytest.raises(ValueError, match="has no model.keras; train it first"):
        workdir.load_workdir_model(str(tmp_path))


def test_a_model_file_of_another_kind_is_named(tmp_path):
    inputs = keras.Input((3,))
    other = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    path = str(tmp_path / workdir.MODEL_FILE)
    other.save(path)
    with pytest.raises(ValueError, match=f"{path} holds a Functional, not a kstory StoryModel"):
        workdir.load_workdir_model(str(tmp_path))


def test_a_saved_story_model_loads_from_its_workdir(tiny_preprocessor, tiny_batch, tmp_path):
    from conftest import build_tiny_model

    model = build_tiny_model(tiny_preprocessor)
    model.save(str(tmp_path / workdir.MODEL_FILE))
    restored = workdir.load_workdir_model(str(tmp_path))
    inputs = {name: tiny_batch[0][name] for name in ("images", "token_ids", "padding_mask")}
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored.predict_next(inputs)["next_image"]),
        keras.ops.convert_to_numpy(model.predict_next(inputs)["next_image"]),
        atol=1e-6,
    )
