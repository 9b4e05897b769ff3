"""The bad-data fixture set (tests/bad_data.py), from the readers to `kstory train`."""

import json
import logging
import os
import re

import bad_data
import numpy as np
import pytest

from kstory.cli import main
from kstory.data.pipeline import load_frame
from kstory.data.story_reasoning_reader import read_story_reasoning
from kstory.data.vist_reader import read_vist

pytestmark = pytest.mark.xdist_group("bad_data")

_FRAME_TEXT = re.compile(r"frame (\d+) of story (\w+)")


@pytest.fixture(scope="module")
def story_reasoning_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("story_reasoning"))
    return directory, bad_data.write_story_reasoning(directory)


@pytest.fixture(scope="module")
def vist_dir(tmp_path_factory):
    return bad_data.write_vist(str(tmp_path_factory.mktemp("vist")))


def _frame_of_image(image):
    """The fixture frame number a decoded image shows (by its brightness)."""
    return int(round((load_frame(image, 16).mean() - 20) / 30))


def _assert_aligned(stories):
    for story in stories:
        for frame, (image, text) in enumerate(zip(story.images, story.texts), start=1):
            match = _FRAME_TEXT.match(text)
            assert match, (story.story_id, text[:80])
            assert (int(match.group(1)), match.group(2)) == (frame, story.story_id)
            assert _frame_of_image(image) == frame, (story.story_id, frame)


def _skips(log):
    return {story_id: reason for story_id, reason, _ in log.entries}


def test_story_reasoning_reader_skips_each_broken_story_and_aligns_the_rest(
    story_reasoning_dir,
):
    directory, expected = story_reasoning_dir
    for split in ("train", "test"):
        stories, skips = read_story_reasoning(directory, split)
        assert _skips(skips) == expected[split]
        _assert_aligned(stories)
    train, _ = read_story_reasoning(directory, "train")
    ids = [story.story_id for story in train]
    assert ids == [f"good{n}" for n in range(6)] + [
        "gray",
        "rgba",
        "deep",
        "palette",
        "long",
        "control",
    ]
    by_id = {story.story_id: story for story in train}
    assert len(by_id["long"].texts[0].split()) > 10_000  # Kept; the tokenizer truncates it.
    assert by_id["control"].texts[0] == "frame 1 of story control walks [0m on"
    # The duplicate's frames are all frame 1; the story kept is the first good0.
    assert _frame_of_image(by_id["good0"].images[5]) == 6


def test_vist_reader_skips_each_broken_story_and_aligns_the_rest(vist_dir):
    directory, image_dir, expected = vist_dir
    for split in ("train", "val", "test"):
        stories, skips = read_vist(
            os.path.join(directory, f"{split}.story-in-sequence.json"), image_dir
        )
        assert _skips(skips) == expected[split]
        _assert_aligned(stories)
        if split == "train":
            assert [story.story_id for story in stories] == [
                "v0",
                "v2",
                "v3",
                "v4",
                "v5",
                "vgray",
                "vrgba",
                "vdeep",
                "vlong",
                "vcontrol",
            ]


def test_windows_of_the_admitted_stories_stay_aligned_through_the_pipeline(
    story_reasoning_dir,
):
    from kstory.data.pipeline import make_dataset
    from kstory.data.story_text_preprocessor import StoryTextPreprocessor
    from kstory.data.tokenizer_loading import load_tokenizer

    directory, _ = story_reasoning_dir
    stories, _ = read_story_reasoning(directory, "train")
    tokenizer = load_tokenizer("learned", [t for s in stories for t in s.texts], 200)
    preprocessor = StoryTextPreprocessor(tokenizer, 24, 24)
    dataset = make_dataset(
        stories,
        preprocessor,
        image_size=16,
        target_image_size=16,
        batch_size=5,
        shuffle=True,
        seed=3,
    )
    num_windows = 0
    for inputs, targets in dataset.as_numpy_iterator():
        contexts = tokenizer.detokenize(inputs["token_ids"].reshape(-1, 24))
        nexts = tokenizer.detokenize(targets["next_token_ids"])
        contexts = np.asarray(contexts).reshape(inputs["token_ids"].shape[:2])
        for images, context_texts, next_image, next_text in zip(
            inputs["images"], contexts, targets["next_image"], nexts
        ):
            parsed = [_FRAME_TEXT.search(str(text)) for text in (*context_texts, next_text)]
            frames = [int(match.group(1)) for match in parsed]
            assert len({match.group(2) for match in parsed}) == 1  # One story.
            assert frames == list(range(frames[0], frames[0] + 5))  # Target follows context.
            shown = [_frame_of_image(image) for image in images]
            shown.append(int(round((next_image.mean() * 255 - 20) / 30)))
            assert shown == frames
            num_windows += 1
    assert num_windows == 2 * len(stories)  # n - 4 windows per 6-frame story.


def _train(tmp_path, repo_root, data_settings, capsys, caplog):
    """Trains; returns the skip report and what the run printed and logged."""
    caplog.set_level(logging.INFO, logger="kstory.train")
    workdir = str(tmp_path / "run")
    code = main(
        [
            "train",
            "--config",
            f"{repo_root}/configs/tiny.py",
            "--smoke",
            "--workdir",
            workdir,
            "--set",
            "train.epochs=1",
            "--set",
            "train.early_stopping_patience=0",
            *(f"--set={item}" for item in data_settings),
        ]
    )
    output = capsys.readouterr().out + caplog.text
    assert code == 0
    with open(os.path.join(workdir, "skipped_stories.json")) as file:
        report = json.load(file)
    assert os.path.exists(os.path.join(workdir, "model.keras"))
    return report, output


# The readers' skips are tested on every backend above, and the report that
# `kstory train` writes from them does not depend on the backend; training
# runs on every backend in train_test. So the whole run, once (torch pass).
@pytest.mark.single_backend
def test_kstory_train_completes_on_the_good_stories_and_reports_the_skipped(
    story_reasoning_dir, tmp_path, repo_root, capsys, caplog
):
    directory, expected = story_reasoning_dir
    report, output = _train(
        tmp_path,
        repo_root,
        ["data.source=story_reasoning", f"data.path={directory}", "data.validation_fraction=0.2"],
        capsys,
        caplog,
    )
    for split in ("train", "test"):
        skipped = report[f"StoryReasoning[{split}]"]["stories"]
        assert {entry["story_id"]: entry["reason"] for entry in skipped} == expected[split]
        assert all(entry["detail"] for entry in skipped)
    assert "StoryReasoning[train]: skipped 12 stories" in output
    assert "  corrupt: bad_image (frame 3: undecodable image" in output
    assert "  tiff: bad_image (frame 1: unsupported image format TIFF" in output


# The VIST reader differs from the parquet one only before `Story` records, which
# the readers' tests cover on every backend; the run itself, once, as above.
@pytest.mark.single_backend
def test_kstory_train_on_a_broken_vist_folder(vist_dir, tmp_path, repo_root, capsys, caplog):
    directory, image_dir, expected = vist_dir
    report, output = _train(
        tmp_path,
        repo_root,
        [
            "data.source=vist",
            f"data.path={directory}",
            f"data.image_dir={image_dir}",
            "data.batch_size=2",
        ],
        capsys,
        caplog,
    )
    for split in ("train", "val", "test"):
        skipped = report[f"VIST[{split}.story-in-sequence.json]"]["stories"]
        assert {entry["story_id"]: entry["reason"] for entry in skipped} == expected[split]
    assert "  vbytes: not_utf8 (frame(s) [1] hold bytes that are not UTF-8)" in output
