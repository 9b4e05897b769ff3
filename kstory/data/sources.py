"""Loads the train/validation/test stories named by a `DataConfig`."""

import json
import logging
import os

import numpy as np

from kstory.data import parquet_shards
from kstory.data.splits import split_stories
from kstory.data.story_reasoning_reader import read_story_reasoning
from kstory.data.storyboard_generator import StoryboardGenerator
from kstory.data.vist_reader import read_vist

logger = logging.getLogger("kstory.data")

_GENERATOR_FIELDS = (
    "num_stories",
    "min_frames",
    "max_frames",
    "generated_image_size",
    "max_objects",
    "generator_seed",
    "embedded_test_fraction",
)
_STAMP = "kstory_generator.json"


def write_embedded_dataset(config, directory):
    """Writes the embedded storyboards as StoryReasoning shards, once.

    The shards are regenerated only when the generator settings in `config`
    differ from those stamped beside them. Story i lands in the test split
    when a seeded draw for it falls under `embedded_test_fraction`.

    Args:
        config: `DataConfig`.
        directory: str. Folder that receives `data/{train,test}-*.parquet`.

    Returns:
        `directory`.
    """
    settings = {name: getattr(config, name) for name in _GENERATOR_FIELDS}
    stamp_path = os.path.join(directory, _STAMP)
    if os.path.exists(stamp_path):
        with open(stamp_path) as file:
            if json.load(file) == settings:
                return directory
    generator = StoryboardGenerator(
        num_stories=config.num_stories,
        min_frames=config.min_frames,
        max_frames=config.max_frames,
        image_size=config.generated_image_size,
        max_objects=config.max_objects,
        seed=config.generator_seed,
    )
    rows = generator.rows()
    draws = np.random.default_rng([config.generator_seed, 1]).random(len(rows))
    is_test = draws < config.embedded_test_fraction
    os.makedirs(directory, exist_ok=True)
    for split, chosen in (("train", ~is_test), ("test", is_test)):
        for old in parquet_shards.find_shards_or_none(directory, split):
            os.remove(old)
        parquet_shards.write_shards(
            [row for row, keep in zip(rows, chosen) if keep], directory, split
        )
    with open(stamp_path, "w") as file:
        json.dump(settings, file, indent=2)
    logger.info("Wrote %d embedded stories to %s", len(rows), directory)
    return directory


def load_splits(config, data_dir):
    """Reads the stories of a `DataConfig` and splits them by story.

    The source's own test split is kept as `test`; `validation` is a seeded
    share of the training stories (VIST ships its own `val` file, used as is).

    Args:
        config: `DataConfig`.
        data_dir: str. Where the embedded dataset is written (the run's
            workdir `data/` folder); unused for other sources.

    Returns:
        A tuple `(splits, skip_logs)`: a dict of `train`, `validation` and
        `test` lists of `Story`, and the `SkipLog` of each file read.
    """
    skip_logs = []
    if config.source == "vist":
        if not os.path.isdir(os.path.expanduser(config.image_dir)):
            raise ValueError(f"data.image_dir {config.image_dir!r} is not a folder.")
        splits = {}
        for split, file_split in (("train", "train"), ("validation", "val"), ("test", "test")):
            path = os.path.join(
                os.path.expanduser(config.path), f"{file_split}.story-in-sequence.json"
            )
            if not os.path.exists(path):
                raise ValueError(f"data.path {config.path!r} has no {os.path.basename(path)}.")
            splits[split], skips = read_vist(
                path, os.path.expanduser(config.image_dir), validate_images=config.validate_images
            )
            skip_logs.append(skips)
        return splits, skip_logs
    if config.source == "embedded":
        path = write_embedded_dataset(config, os.path.join(data_dir, "embedded"))
    else:
        path = config.path
    read = {}
    for split in ("train", "test"):
        read[split], skips = read_story_reasoning(
            path,
            split,
            min_frames=config.num_context_steps + 1,
            validate_images=config.validate_images,
        )
        skip_logs.append(skips)
    parts = split_stories(
        read["train"],
        {"train": 1 - config.validation_fraction, "validation": config.validation_fraction},
        seed=config.split_seed,
    )
    return {
        "train": parts["train"],
        "validation": parts["validation"],
        "test": read["test"],
    }, skip_logs
