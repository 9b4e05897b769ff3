"""Names the docstring examples of `kstory/` use, as `pytest --doctest-modules` runs them."""

import keras
import keras_hub
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace, tmp_path):
    doctest_namespace.update(keras=keras, keras_hub=keras_hub, np=np, ops=keras.ops)
    # A fresh folder per example, so an example never depends on `runs/` existing.
    doctest_namespace["tmp_dir"] = str(tmp_path)
