"""Reads StoryReasoning (HF parquet) into aligned `Story` records."""

import os

from kstory.data import parquet_shards
from kstory.data.skip_log import SkipLog
from kstory.data.story_admission import admit_stories
from kstory.data.story_parse_error import StoryParseError
from kstory.data.story_parser import parse_story_frames


def _candidate(location, row, skips):
    """Parses one row; returns a candidate dict or None after logging a skip."""
    story_id = row.get("story_id")
    if isinstance(story_id, bytes):  # Not UTF-8: named by its escaped bytes.
        story_id = story_id.decode("utf-8", "backslashreplace")
    story_id = str(story_id) if story_id not in (None, "") else location
    images = row.get("images") or []
    image_bytes = [(image or {}).get("bytes") for image in images]
    if not image_bytes:
        skips.skip(story_id, "no_images", f"row {location} has no images")
        return None
    frame_count = row.get("frame_count")
    if frame_count is not None and frame_count != len(image_bytes):
        skips.skip(
            story_id,
            "frame_count_mismatch",
            f"frame_count is {frame_count} but the row has {len(image_bytes)} images",
        )
        return None
    try:
        frames = parse_story_frames(row.get("story"))
    except StoryParseError as error:
        skips.skip(story_id, error.reason, str(error))
        return None
    if len(frames) != len(image_bytes):
        skips.skip(
            story_id,
            "text_image_mismatch",
            f"{len(frames)} <gdi> blocks for {len(image_bytes)} images",
        )
        return None
    return {
        "story_id": story_id,
        "images": image_bytes,
        "texts": [text for text, _ in frames],
        "entities": [entities for _, entities in frames],
    }


def _hub_rows(name, split):
    """Rows of a Hub dataset through HF `datasets`, images left undecoded."""
    try:
        import datasets
    except ImportError:
        raise ValueError(
            f"data.path {name!r} is not a local file or folder. Pass the folder of the "
            "downloaded parquet shards, or install `datasets` to read from the Hub."
        ) from None
    dataset = datasets.load_dataset(name, split=split)
    dataset = dataset.cast_column("images", datasets.Sequence(datasets.Image(decode=False)))
    for index, row in enumerate(dataset):
        yield f"{name}:{split}:{index}", row


def read_story_reasoning(path, split="train", min_frames=5, validate_images=True):
    """Reads the StoryReasoning dataset into `Story` records.

    Frame N's text is the `<gdi imageN>` block of the `story` column with the
    grounding tags stripped; the entity ids in those tags are kept. A story is
    skipped, with a log line naming it and a count, when its `frame_count`,
    its `<gdi>` blocks and its images disagree, when a block is malformed or
    empty, when an image does not decode, when it has fewer than `min_frames`
    frames, or when its id repeats. No frame is ever paired with another
    frame's text.

    Args:
        path: str. A downloaded dataset folder (`<path>/data/train-*.parquet`),
            a folder of shards, one parquet file, or, with HF `datasets`
            installed, a Hub name such as `"daniel3303/StoryReasoning"`.
        split: str. `"train"` or `"test"`.
        min_frames: int. Fewest frames a story needs.
        validate_images: bool. Decode each image once while reading.

    Returns:
        A tuple `(stories, skips)`: a list of `Story` and a `SkipLog`.

    Example:
    ```python
    stories, skips = read_story_reasoning("StoryReasoning/", split="test")
    ```
    """
    skips = SkipLog(f"StoryReasoning[{split}]")
    path = os.path.expanduser(os.fspath(path))
    if os.path.exists(path):
        rows = parquet_shards.iter_rows(parquet_shards.find_shards(path, split))
    else:
        rows = _hub_rows(path, split)
    candidates = []
    for location, row in rows:
        candidate = _candidate(location, row, skips)
        if candidate is not None:
            candidates.append(candidate)
    stories = admit_stories(candidates, skips, min_frames, validate_images)
    return stories, skips
