import dataclasses
import json
import os

import numpy as np
from PIL import Image

from kstory.data.data_config import DataConfig
from kstory.data.sources import load_splits

SMALL = DataConfig(num_stories=20, generated_image_size=16, validate_images=False)


def test_embedded_splits_are_disjoint_and_complete(tmp_path):
    splits, skip_logs = load_splits(SMALL, str(tmp_path))
    ids = {name: {story.story_id for story in stories} for name, stories in splits.items()}
    assert sum(len(part) for part in ids.values()) == 20
    assert not ids["train"] & ids["validation"] and not ids["train"] & ids["test"]
    assert not ids["validation"] & ids["test"]
    assert all(ids.values()) and all(len(log) == 0 for log in skip_logs)


def test_embedded_shards_are_written_once_and_rewritten_when_settings_change(tmp_path):
    load_splits(SMALL, str(tmp_path))
    shard = tmp_path / "embedded" / "data" / "train-00000-of-00001.parquet"
    first_mtime = os.stat(shard).st_mtime_ns
    load_splits(SMALL, str(tmp_path))
    assert os.stat(shard).st_mtime_ns == first_mtime
    bigger, _ = load_splits(dataclasses.replace(SMALL, num_stories=30), str(tmp_path))
    assert sum(len(part) for part in bigger.values()) == 30
    stamp = json.loads((tmp_path / "embedded" / "kstory_generator.json").read_text())
    assert stamp["num_stories"] == 30


def test_split_is_the_same_on_a_second_load(tmp_path):
    first, _ = load_splits(SMALL, str(tmp_path / "a"))
    second, _ = load_splits(SMALL, str(tmp_path / "b"))
    for name in first:
        assert [s.story_id for s in first[name]] == [s.story_id for s in second[name]]


def test_vist_uses_its_own_three_files(tmp_path):
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    for split in ("train", "val", "test"):
        annotations = []
        for order in range(5):
            photo = f"{split}{order}"
            Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(image_dir / f"{photo}.png")
            annotations.append(
                [
                    {
                        "story_id": f"{split}-1",
                        "photo_flickr_id": photo,
                        "worker_arranged_photo_order": order,
                        "text": f"{split} {order}",
                    }
                ]
            )
        (tmp_path / f"{split}.story-in-sequence.json").write_text(
            json.dumps({"annotations": annotations})
        )
    config = DataConfig(source="vist", path=str(tmp_path), image_dir=str(image_dir))
    splits, _ = load_splits(config, str(tmp_path / "unused"))
    assert [s.story_id for s in splits["validation"]] == ["val-1"]
    assert splits["test"][0].texts[4] == "test 4"
