"""Names the docstring examples of `kstory/` use, as `pytest --doctest-modules` runs them."""

import keras
import keras_hub
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update(keras=keras, keras_hub=keras_hub, np=np, ops=keras.ops)
