import json
import os

import keras
import numpy as np
import pytest

from kstory import workdir
from kstory.workdir_state_error import WorkdirStateError


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


def test_an_atomic_write_that_fails_leaves_the_old_file(tmp_path):
    path = str(tmp_path / "history.csv")
    workdir.write_json(path, {"epoch": 1})
    with pytest.raises(OSError):
        with workdir.atomic_path(path) as incoming:
            with open(incoming, "w") as file:
                file.write('{"epo')  # Half written, then the disk fills.
            raise OSError(28, "No space left on device")
    assert json.loads(open(path).read()) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["history.csv"]


def _truncate(path):
    with open(path, "r+b") as file:
        file.truncate(os.path.getsize(path) // 2)


def test_a_truncated_model_file_is_named(tiny_preprocessor, tmp_path):
    from conftest import build_tiny_model

    path = str(tmp_path / workdir.MODEL_FILE)
    build_tiny_model(tiny_preprocessor).save(path)
    _truncate(path)
    with pytest.raises(WorkdirStateError, match=f"{path} cannot be read .*rerun `kstory train`"):
        workdir.load_workdir_model(str(tmp_path))


def test_a_damaged_config_is_named_by_every_command(tmp_path, capsys):
    from kstory.cli import main

    (tmp_path / workdir.CONFIG_FILE).write_text('{"data": {"batch_si')
    for argv in (["evaluate"], ["predict", "--story", "0"], ["export"]):
        capsys.readouterr()
        code = main([*argv, "--workdir", str(tmp_path)])
        lines = capsys.readouterr().err.strip().splitlines()
        if argv == ["export"]:  # Reads model.keras, not the config.
            assert code == 2 and "has no model.keras" in lines[0]
            continue
        assert code == 1 and len(lines) == 1, lines
        assert f"{tmp_path / workdir.CONFIG_FILE} cannot be read: not valid JSON" in lines[0]


def test_a_damaged_best_checkpoint_is_named(tmp_path):
    from kstory.training.train import _load_best_weights

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    path = str(tmp_path / "best.weights.h5")
    model.save_weights(path)
    _truncate(path)
    with pytest.raises(WorkdirStateError, match=f"{path}, the best checkpoint, cannot be read"):
        _load_best_weights(model, path)
