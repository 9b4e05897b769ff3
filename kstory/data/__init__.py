"""The data layer: stories from generated storyboards, StoryReasoning or VIST,
their splits and 4 -> 1 windows, and the tf.data pipeline.

The short paths of what a notebook needs:

```python
from kstory.data import StoryTextPreprocessor, load_splits, make_dataset
```

They load on first use: `import kstory` works where TensorFlow is not
installed (a JAX or PyTorch machine serving a `.keras` file), and only the
tf.data pipeline needs it.
"""

import importlib

_EXPORTS = {
    "DataConfig": "kstory.data.data_config",
    "Story": "kstory.data.story",
    "StoryTextPreprocessor": "kstory.data.story_text_preprocessor",
    "StoryboardGenerator": "kstory.data.storyboard_generator",
    "load_splits": "kstory.data.sources",
    "load_tokenizer": "kstory.data.tokenizer_loading",
    "make_dataset": "kstory.data.pipeline",
    "make_train_stream": "kstory.data.pipeline",
    "read_story_reasoning": "kstory.data.story_reasoning_reader",
    "read_vist": "kstory.data.vist_reader",
    "split_stories": "kstory.data.splits",
    "story_windows": "kstory.data.windows",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kstory.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
