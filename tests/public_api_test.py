"""The short import paths, and what importing kstory needs."""

import subprocess
import sys

import kstory.data
import kstory.models


def test_short_paths_name_the_same_objects():
    from kstory.data.pipeline import make_dataset
    from kstory.data.pipeline import make_train_stream
    from kstory.data.story_text_preprocessor import StoryTextPreprocessor
    from kstory.models.story_model import StoryModel

    assert kstory.data.make_dataset is make_dataset
    assert kstory.data.make_train_stream is make_train_stream
    assert kstory.data.StoryTextPreprocessor is StoryTextPreprocessor
    assert kstory.models.StoryModel is StoryModel is kstory.StoryModel
    for name in kstory.data.__all__:
        assert getattr(kstory.data, name) is not None


def test_kstory_imports_where_tensorflow_is_not_installed():
    # A JAX or PyTorch machine loads a .keras file with `import kstory`;
    # only the tf.data pipeline and the SavedModel export need TensorFlow.
    script = (
        "import os, sys\n"
        "os.environ['KERAS_BACKEND'] = 'jax'\n"
        "sys.modules['tensorflow'] = None\n"
        "import kstory\n"
        "from kstory.data import Story, story_windows\n"
        "from kstory.models import StoryModel\n"
        "from kstory.workdir import load_workdir_model\n"
        "print(kstory.StoryModel is StoryModel)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("True")
