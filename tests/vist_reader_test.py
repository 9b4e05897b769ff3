import json

import numpy as np
import pytest
from PIL import Image

from kstory.data.vist_reader import read_vist


def _write_vist(tmp_path, stories, missing=(), corrupt=()):
    """Writes a VIST SIS file; each story lists (photo_id, order, text)."""
    image_dir = tmp_path / "images" / "train"
    image_dir.mkdir(parents=True)
    annotations = []
    for story_id, sentences in stories.items():
        for photo_id, order, text in sentences:
            annotations.append(
                [
                    {
                        "story_id": story_id,
                        "photo_flickr_id": photo_id,
                        "worker_arranged_photo_order": order,
                        "text": text.lower(),
                        "original_text": text,
                        "album_id": "a1",
                        "tier": "story-in-sequence",
                    }
                ]
            )
            if photo_id in missing:
                continue
            path = image_dir / f"{photo_id}.jpg"
            if photo_id in corrupt:
                path.write_bytes(b"\xff\xd8 not a jpeg")
            else:
                Image.fromarray(np.full((8, 8, 3), int(photo_id) % 250, np.uint8)).save(path)
    path = tmp_path / "train.story-in-sequence.json"
    path.write_text(json.dumps({"annotations": annotations, "images": [], "albums": []}))
    return str(path), str(tmp_path / "images")


def _sentences(first_photo, orders=range(5)):
    return [(str(first_photo + i), order, f"Sentence {order}.") for i, order in enumerate(orders)]


def test_orders_by_worker_arranged_photo_order(tmp_path):
    shuffled = _sentences(100, orders=[3, 0, 4, 1, 2])
    path, image_dir = _write_vist(tmp_path, {"s1": shuffled})
    (story,), skips = read_vist(path, image_dir)
    assert len(skips) == 0
    assert story.texts == tuple(f"sentence {i}." for i in range(5))
    photo_for_order = {order: photo for photo, order, _ in shuffled}
    assert [p.rsplit("/", 1)[1] for p in story.images] == [
        f"{photo_for_order[i]}.jpg" for i in range(5)
    ]


def test_original_text_field(tmp_path):
    path, image_dir = _write_vist(tmp_path, {"s1": _sentences(100)})
    (story,), _ = read_vist(path, image_dir, text_field="original_text")
    assert story.texts[0] == "Sentence 0."
    with pytest.raises(ValueError, match="text_field"):
        read_vist(path, image_dir, text_field="caption")


def test_broken_stories_are_skipped_with_reasons(tmp_path):
    stories = {
        "good": _sentences(100),
        "four": _sentences(200, orders=range(4)),
        "missing": _sentences(300),
        "corrupt": _sentences(400),
        "blank": [(p, o, " " if o == 2 else t) for p, o, t in _sentences(500)],
    }
    path, image_dir = _write_vist(tmp_path, stories, missing={"302"}, corrupt={"401"})
    read, skips = read_vist(path, image_dir)
    assert [story.story_id for story in read] == ["good"]
    assert skips.counts() == {
        "wrong_frame_count": 1,
        "missing_image": 1,
        "bad_image": 1,
        "empty_text": 1,
    }
    assert skips.story_ids("missing_image") == ["missing"]


def test_not_a_vist_file(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="annotations"):
        read_vist(str(path), str(tmp_path))


def test_a_file_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "train.story-in-sequence.json"
    path.write_bytes(b'{"annotations": [\xff')
    with pytest.raises(ValueError, match="train.story-in-sequence.json is not valid JSON"):
        read_vist(str(path), str(tmp_path))
