"""The layout of a run's workdir, and loading its config and model.

A workdir holds one run (big_vision's `--workdir`): everything `kstory train`,
`evaluate`, `predict` and `export` write goes under it, at the paths named
here, so that every command agrees on them.

```
<workdir>/
  config.json            the resolved config (CONFIG_FILE)
  skipped_stories.json   every story the readers refused, by id (SKIPPED_FILE)
  data/                  the embedded shards, or caches of the data (DATA_DIR)
  backup/                the training state a killed run resumes from (BACKUP_DIR)
  cache/image_features/  a frozen image encoder's features (FEATURE_CACHE_DIR)
  cache/text_states/     the frozen text layers' states of each caption (TEXT_CACHE_DIR)
  checkpoints/best.weights.h5                        (BEST_WEIGHTS_PATH)
  history.csv, logs/, loss_curve.png                 (HISTORY_FILE, LOGS_DIR, LOSS_CURVE_FILE)
  model.keras            the trained model (MODEL_FILE)
  metrics.json, metrics.md, storyboards/             (kstory evaluate)
  predictions/           (kstory predict)
  export/                (kstory export)
```
"""

import contextlib
import json
import os

import keras

from kstory.config import config_from_dict
from kstory.models.story_model import StoryModel
from kstory.workdir_state_error import WorkdirStateError
from kstory.workdir_state_error import error_summary

CONFIG_FILE = "config.json"
SKIPPED_FILE = "skipped_stories.json"
TRAIN_PROVENANCE_FILE = "train_provenance.json"
DATA_DIR = "data"
BACKUP_DIR = "backup"
FEATURE_CACHE_DIR = os.path.join("cache", "image_features")
TEXT_CACHE_DIR = os.path.join("cache", "text_states")
BEST_WEIGHTS_PATH = os.path.join("checkpoints", "best.weights.h5")
HISTORY_FILE = "history.csv"
LOGS_DIR = "logs"
LOSS_CURVE_FILE = "loss_curve.png"
MODEL_FILE = "model.keras"
METRICS_JSON_FILE = "metrics.json"
METRICS_MD_FILE = "metrics.md"
STORYBOARDS_DIR = "storyboards"
PREDICTIONS_DIR = "predictions"
EXPORT_DIR = "export"

CONFIG_HINT = (
    " Copy it again, or delete it and rerun `kstory train` with the run's config, "
    "which writes it again."
)


def sync_file(path):
    """Flushes a written file to the disk, so a rename after it publishes whole data."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def incoming_path(path):
    """Where `path` is written before it is renamed into place (same folder and extension)."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".incoming-{name}")


@contextlib.contextmanager
def atomic_path(path):
    """A temporary path beside `path`, moved onto `path` if the block succeeds.

    A reader, or a writer killed mid-write, sees the old file or the new one,
    never half of one; a write that fails (a full disk) leaves the old file.
    The temporary name keeps the extension, which Keras's savers check.

    Example:
    >>> path = f"{tmp_dir}/notes.txt"
    >>> with atomic_path(path) as incoming:
    ...     _ = open(incoming, "w").write("whole")
    >>> open(path).read()
    'whole'
    """
    incoming = incoming_path(path)
    try:
        yield incoming
        sync_file(incoming)
        os.replace(incoming, path)
    finally:
        if os.path.exists(incoming):
            os.remove(incoming)


def write_json(path, value):
    """Writes `value` as JSON to `path`, atomically (see `atomic_path`)."""
    with atomic_path(path) as incoming:
        with open(incoming, "w") as file:
            json.dump(value, file, indent=2)


def read_json(path, hint=""):
    """The JSON in `path`; a `WorkdirStateError` naming the file if it is not JSON."""
    try:
        with open(path) as file:
            return json.load(file)
    except (ValueError, UnicodeDecodeError) as error:
        raise WorkdirStateError(
            f"{path} cannot be read: not valid JSON ({error}); it may be truncated or "
            f"half-copied.{hint}"
        ) from None


def load_workdir_config(workdir):
    """The `Config` a workdir's run was trained with.

    Example:
    >>> load_workdir_config("no/such/run")
    Traceback (most recent call last):
    ...
    ValueError: no/such/run has no config.json; is it a kstory workdir?
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise ValueError(f"{workdir} has no {CONFIG_FILE}; is it a kstory workdir?")
    return config_from_dict(read_json(path, CONFIG_HINT))


def load_workdir_model(workdir):
    """The trained `StoryModel` of a workdir (its `model.keras`).

    Importing this module registers kstory's classes, which the file names.
    """
    path = os.path.join(workdir, MODEL_FILE)
    if not os.path.exists(path):
        raise ValueError(f"{workdir} has no {MODEL_FILE}; train it first (kstory train).")
    return load_model_file(path)


def load_model_file(path, compile=True):
    """A `StoryModel` from a `.keras` file; an error naming the file if it
    holds something else or cannot be read."""
    try:
        model = keras.saving.load_model(path, compile=compile)
    except Exception as error:  # Keras raises many kinds for a damaged file.
        raise WorkdirStateError(
            f"{path} cannot be read ({error_summary(error, 300)}); it may be truncated or "
            "half-copied. Copy it again, or rerun `kstory train` on its workdir, which "
            "saves it again."
        ) from None
    if not isinstance(model, StoryModel):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a kstory StoryModel.")
    return model
