import numpy as np
import tensorflow_datasets as tfds

import kstory.data.story_reasoning_builder  # noqa: F401  (registers the builder)
from conftest import png_bytes
from conftest import story_row
from kstory.data.parquet_shards import write_shards


def test_tfds_load_builds_offline_from_manual_dir(tmp_path, embedded_rows):
    manual_dir = tmp_path / "manual"
    grey = story_row("grey", 5)
    grey["images"][0]["bytes"] = png_bytes(np.zeros((16, 16), np.uint8))
    broken = story_row("broken", 3)
    write_shards(embedded_rows[:5] + [grey, broken], str(manual_dir), "train")
    write_shards(embedded_rows[5:7], str(manual_dir), "test")
    dataset = tfds.load(
        "story_reasoning",
        split="train",
        data_dir=str(tmp_path / "tfds"),
        download_and_prepare_kwargs={
            "download_config": tfds.download.DownloadConfig(manual_dir=str(manual_dir))
        },
    )
    examples = {ex["story_id"].numpy().decode(): ex for ex in dataset}
    assert set(examples) == {row["story_id"] for row in embedded_rows[:5]} | {"grey"}
    row = embedded_rows[0]
    example = examples[row["story_id"]]
    assert example["images"].shape == (row["frame_count"], 32, 32, 3)
    assert example["texts"].shape == (row["frame_count"],)
    assert b"<gd" not in example["texts"][0].numpy()
    assert b"obj1" in example["entities"][0].numpy()
    assert examples["grey"]["images"].shape[-1] == 3
    test = tfds.load("story_reasoning", split="test", data_dir=str(tmp_path / "tfds"))
    assert len(list(test)) == 2
