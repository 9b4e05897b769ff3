import io

import numpy as np
import pytest
from PIL import Image

from conftest import png_bytes
from conftest import story_row
from kstory.data.parquet_shards import write_shards
from kstory.data.story_parser import parse_story_frames
from kstory.data.story_reasoning_reader import read_story_reasoning


def _frame_value(image):
    return int(np.asarray(Image.open(io.BytesIO(image)))[0, 0, 0])


def test_reads_the_embedded_shards_with_text_aligned_to_images(tmp_path, embedded_rows):
    write_shards(embedded_rows[:8], str(tmp_path), "train", num_shards=3)
    write_shards(embedded_rows[8:], str(tmp_path), "test")
    train, skips = read_story_reasoning(str(tmp_path), "train")
    test, _ = read_story_reasoning(str(tmp_path), "test")
    assert len(skips) == 0
    assert sorted(s.story_id for s in train) == sorted(r["story_id"] for r in embedded_rows[:8])
    assert len(test) == len(embedded_rows) - 8
    rows = {row["story_id"]: row for row in embedded_rows}
    for story in train:
        row = rows[story.story_id]
        assert list(story.images) == [image["bytes"] for image in row["images"]]
        assert list(story.texts) == [text for text, _ in parse_story_frames(row["story"])]
        assert all("<gd" not in text for text in story.texts)
        assert "obj1" in story.entities[0] and "bg1" in story.entities[0]


def test_frame_n_text_belongs_to_frame_n_image(tmp_path):
    write_shards([story_row("7", 6)], str(tmp_path), "train")
    (story,), _ = read_story_reasoning(str(tmp_path), "train")
    for index, (image, text) in enumerate(zip(story.images, story.texts)):
        assert _frame_value(image) == 10 * index
        assert text == f"Ann waves {index + 1}."
    assert story.entities[0] == ("char1",)


def _broken_rows():
    good = story_row("good", 6)
    corrupt = story_row("corrupt", 5)
    corrupt["images"][2]["bytes"] = b"\x89PNG not really"
    truncated = story_row("truncated", 5)
    truncated["images"][1]["bytes"] = truncated["images"][1]["bytes"][:40]
    zero = story_row("zero", 5)
    zero["images"][0]["bytes"] = b""
    short = story_row("short", 4)
    mismatch = story_row("mismatch", 6)
    mismatch["story"] = mismatch["story"].split("<gdi image6>")[0]
    mismatch["frame_count"] = 6
    count = story_row("count", 5)
    count["frame_count"] = 7
    empty_text = story_row("empty_text", 5, texts=["a", "b", " ", "d", "e"])
    nested = story_row("nested", 5)
    nested["story"] = nested["story"].replace("</gdi>", "", 1)
    duplicate = story_row("good", 5)
    grey = story_row("grey", 5)
    grey["images"][0]["bytes"] = png_bytes(np.zeros((16, 16), np.uint8))
    return [
        good,
        corrupt,
        truncated,
        zero,
        short,
        mismatch,
        count,
        empty_text,
        nested,
        duplicate,
        grey,
    ]


def test_broken_stories_are_skipped_counted_and_named(tmp_path, caplog):
    write_shards(_broken_rows(), str(tmp_path), "train")
    stories, skips = read_story_reasoning(str(tmp_path), "train")
    assert [story.story_id for story in stories] == ["good", "grey"]
    assert skips.counts() == {
        "bad_image": 3,
        "too_few_frames": 1,
        "text_image_mismatch": 1,
        "frame_count_mismatch": 1,
        "empty_text": 1,
        "malformed_tags": 1,
        "duplicate_id": 1,
    }
    assert sorted(skips.story_ids("bad_image")) == ["corrupt", "truncated", "zero"]
    assert "'corrupt'" in caplog.text and "frame 3" in caplog.text
    assert "skipped 9 stories" in skips.summary()


def test_good_story_keeps_its_frames_when_neighbours_are_broken(tmp_path):
    write_shards(_broken_rows(), str(tmp_path), "train")
    stories, _ = read_story_reasoning(str(tmp_path), "train")
    good = stories[0]
    assert [_frame_value(image) for image in good.images] == [0, 10, 20, 30, 40, 50]
    assert good.texts[5] == "Ann waves 6."


def test_missing_folder_and_split_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="not a local file or folder|No StoryReasoning"):
        read_story_reasoning(str(tmp_path / "absent"), "train")
    write_shards([story_row("1", 5)], str(tmp_path), "train")
    with pytest.raises(ValueError, match="split 'test'"):
        read_story_reasoning(str(tmp_path), "test")


def test_shard_without_story_column_is_rejected(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"story_id": ["1"]}), str(tmp_path / "train-00000-of-00001.parquet"))
    with pytest.raises(ValueError, match="lacks the column"):
        read_story_reasoning(str(tmp_path), "train")
